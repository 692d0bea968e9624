"""Data: LLaVA-format splits (llava.py, splits.py), the standard benchmarks' layouts (benchmarks.py) and
the embedded synthvqa benchmark with its cached world (synthvqa/, world.py)."""
