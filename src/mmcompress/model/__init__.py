"""The multimodal model: fusion, projector and LLM around the vision experts, the forward pass that joins
them (multimodal.py), building and loading it (build.py, checkpoints.py) and the frozen-feature store."""
