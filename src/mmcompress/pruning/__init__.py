"""Visual-token pruning: batched plans (plan.py), the methods behind `pruning=` (methods.py; PruMerge, ToMe,
VisionZip and DivPrune in prumerge.py, tome.py, visionzip.py and divprune.py), and how several experts'
signals are arranged to match their fused tokens (arrange.py)."""
