"""Training batches: every step's global batch as a pure function of (seed, step), and the split's text
tokenised once, so a resumed stage needs no data-loader state, only its step."""

from __future__ import annotations

import torch

from mmcompress.data.llava import IGNORE_INDEX, Split, encode_for_training, pad


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
    """A training split's conversations tokenised once: ids and answer-only labels padded to the longest
    sample, and each sample's image."""

    def __init__(self, split: Split, tokenizer, max_tokens: int) -> None:
        encoded = encode_for_training(split.samples, tokenizer, max_tokens)
        self.lengths = torch.tensor([len(ids) for ids, _ in encoded])  # (S,)
        self.input_ids = pad([ids for ids, _ in encoded], tokenizer.pad_token_id)  # (S, L_max)
        self.labels = pad([labels for _, labels in encoded], IGNORE_INDEX)  # (S, L_max)
        self.image_of = torch.tensor([s.image for s in split.samples])  # (S,) sample → image index

    def __len__(self) -> int:
        return len(self.lengths)

    def text(self, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        """Samples `indices` as right-padded (B, L) ids, attention mask and labels, L their longest."""
        lengths = self.lengths[indices]  # (B,)
        width = int(lengths.max())
        return {
            "input_ids": self.input_ids[indices, :width].to(device),  # (B, L)
            "attention_mask": (torch.arange(width)[None] < lengths[:, None]).long().to(device),
            "labels": self.labels[indices, :width].to(device),
        }
