"""Training: the `train` command (run.py), config checks, what each stage trains, the trainer and its
batches, torchrun (distributed.py), mid-stage resume, LR schedules, and the pretraining of mini experts."""
