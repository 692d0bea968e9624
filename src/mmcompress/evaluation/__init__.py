"""Evaluation: answering (batched greedy decoding), scoring by the community's metrics, what answering
costs, the eval stage with its lmms-eval layout, and `predict`."""
