"""Learning-rate schedules shared by expert pretraining and the training stages.

All start with a linear warm-up. `cosine` decays to 0 over the whole run; `wsd` (warm-up, stable, decay)
holds the peak and decays linearly to 0 over the last `decay_ratio` of the steps, so a longer run does not
stretch the whole trajectory; `constant` holds the peak.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from mmcompress.errors import ConfigError

SCHEDULES = ("cosine", "wsd", "constant")


def check_schedule(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule={schedule!r} is not one of {', '.join(SCHEDULES)}")


def lr_factor(
    schedule: str, steps: int, warmup_ratio: float, decay_ratio: float = 0.2
) -> Callable[[int], float]:
    """The multiplier of the peak learning rate after `s` optimizer steps."""
    check_schedule(schedule)
    warmup = max(1, int(warmup_ratio * steps))
    decay_start = steps - max(1, int(decay_ratio * steps))

    def factor(s: int) -> float:
        ramp = min(1.0, (s + 1) / warmup)
        if schedule == "cosine":
            return ramp * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
        if schedule == "wsd":
            return ramp * min(1.0, max(0.0, (steps - s) / (steps - decay_start)))
        return ramp

    return factor


def scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, steps: int, warmup_ratio: float, decay_ratio: float = 0.2
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(schedule, steps, warmup_ratio, decay_ratio))
