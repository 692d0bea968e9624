"""Training batches: every step's global batch as a pure function of (seed, step), and the split's text
tokenised once, so a resumed stage needs no data-loader state, only its step."""

from __future__ import annotations

from itertools import chain

import numpy as np
import torch

from mmcompress.data.llava import IGNORE_INDEX, Split, encode_for_training


class BatchOrder:
    """The global batch of every step as a pure function of (seed, step): a fresh seeded permutation each
    epoch, no partial batches. A resumed stage needs no data-loader state, only its step."""

    def __init__(self, samples: int, batch_size: int, seed: int) -> None:
        self.samples, self.batch_size, self.seed = samples, min(batch_size, samples), seed
        self.per_epoch = samples // self.batch_size
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def batch(self, step: int) -> torch.Tensor:
        """Sample indices (B,) of optimizer step `step` (counted from 1)."""
        epoch, position = divmod(step - 1, self.per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.samples, generator=generator)
        return self._order[position * self.batch_size : (position + 1) * self.batch_size]


class TokenizedSplit:
    """A training split's conversations tokenised once and stored flat: every sample's ids one after another
    (int32) with a flag per token for the answer tokens the loss learns, so memory grows with the tokens
    there are (~5 bytes each), not with samples × the longest sample; and each sample's image."""

    def __init__(self, split: Split, tokenizer, max_tokens: int) -> None:
        encoded = encode_for_training(split.samples, tokenizer, max_tokens)
        self.lengths = torch.tensor([len(ids) for ids, _ in encoded])  # (S,)
        self.starts = torch.cumsum(self.lengths, 0) - self.lengths  # (S,) where each sample begins
        self.pad_id = tokenizer.pad_token_id
        total = int(self.lengths.sum())  # read straight into arrays: no list of every token
        ids = np.fromiter(chain.from_iterable(i for i, _ in encoded), dtype=np.int32, count=total)
        labels = np.fromiter(chain.from_iterable(lab for _, lab in encoded), dtype=np.int32, count=total)
        self.ids = torch.from_numpy(ids)  # (T,) all samples' tokens
        self.supervised = torch.from_numpy(labels != IGNORE_INDEX)  # (T,)
        self.image_of = torch.tensor([s.image for s in split.samples])  # (S,) sample → image index

    def __len__(self) -> int:
        return len(self.lengths)

    def text(self, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        """Samples `indices` as right-padded (B, L) ids, attention mask and labels, L their longest."""
        lengths = self.lengths[indices]  # (B,)
        width = int(lengths.max())
        inside = torch.arange(width)[None] < lengths[:, None]  # (B, L)
        flat = (self.starts[indices, None] + torch.arange(width)[None]).clamp(max=len(self.ids) - 1)  # (B, L)
        ids = torch.where(inside, self.ids[flat].long(), self.pad_id)  # (B, L)
        labels = torch.where(inside & self.supervised[flat], ids, IGNORE_INDEX)  # (B, L)
        return {
            "input_ids": ids.to(device),
            "attention_mask": inside.long().to(device),
            "labels": labels.to(device),
        }
