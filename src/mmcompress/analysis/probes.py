"""Linear probes: what a representation encodes, as the val accuracy of a multinomial logistic regression
fitted on train features (experiments/expert-probes, experiments/position)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear_probe_accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, classes: int,
    steps: int = 300,
) -> float:  # fmt: skip
    """(n, C) features and (n,) labels per split → val accuracy; standardised on train, full batch with Adam,
    a small L2 penalty; deterministic."""
    torch.manual_seed(0)
    train_x, val_x = train_x.float(), val_x.float()
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    probe = torch.nn.Linear(train_x.shape[1], classes)
    optimizer = torch.optim.Adam(probe.parameters(), lr=0.05)
    for _ in range(steps):
        loss = F.cross_entropy(probe(train_x), train_y) + 1e-4 * probe.weight.square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (probe(val_x).argmax(-1) == val_y).float().mean().item()
