"""The linear probe: it reads a label a linear map can read, and not one that is noise."""

from __future__ import annotations

import torch

from mmcompress.analysis.probes import linear_probe_accuracy


def test_a_linearly_coded_label_is_read_and_noise_is_not():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (800,), generator=generator)
    codes = torch.randn(4, 16, generator=generator)
    features = codes[labels] + 0.3 * torch.randn(800, 16, generator=generator)  # (n, C)
    train, val = slice(0, 600), slice(600, 800)
    assert linear_probe_accuracy(features[train], labels[train], features[val], labels[val], 4) > 0.95
    noise = torch.randn(800, 16, generator=generator)
    assert linear_probe_accuracy(noise[train], labels[train], noise[val], labels[val], 4) < 0.4  # chance 0.25
