"""Visual-token pruning: batched plans (plan.py), the methods behind `pruning=` (methods.py; PruMerge and
ToMe in prumerge.py and tome.py), and how several experts' signals are arranged to match their fused
tokens (arrange.py)."""
