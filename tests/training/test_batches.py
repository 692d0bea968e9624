"""Training batches: the flat token store gives exactly the padded batches of a dense (samples × longest)
copy, and holds only the tokens there are."""

from __future__ import annotations

import torch

from mmcompress.data.llava import IGNORE_INDEX, IMAGE_TOKEN, Sample, Split, encode_for_training, pad
from mmcompress.model.llm import build_word_tokenizer
from mmcompress.training.batches import TokenizedSplit


def _split() -> Split:
    words = [
        "what",
        "colour",
        "is",
        "the",
        "big",
        "small",
        "red",
        "square",
        "circle",
        "and",
        "how",
        "many",
        "are",
        "there",
        "two",
        "three",
        "yes",
        "no",
    ]
    generator = torch.Generator().manual_seed(0)
    samples = []
    for i in range(40):  # 1–3 turns of 2–12 words each: lengths differ a lot
        messages = []
        for turn in range(1 + i % 3):
            n = int(torch.randint(2, 13, (1,), generator=generator))
            question = " ".join(
                words[int(k)] for k in torch.randint(0, len(words), (n,), generator=generator)
            )
            messages.append({"role": "user", "content": (f"{IMAGE_TOKEN} " if turn == 0 else "") + question})
            messages.append({"role": "assistant", "content": words[i % len(words)]})
        samples.append(Sample(f"s{i}", i % 7, "colour", tuple(messages)))
    return Split("train", samples, [])


def test_flat_store_batches_equal_the_dense_padded_ones():
    split = _split()
    tokenizer = build_word_tokenizer([" ".join(m["content"] for s in split.samples for m in s.messages)])
    text = TokenizedSplit(split, tokenizer, max_tokens=40)
    encoded = encode_for_training(split.samples, tokenizer, 40)
    dense_ids = pad([ids for ids, _ in encoded], tokenizer.pad_token_id)  # (S, L_max)
    dense_labels = pad([labels for _, labels in encoded], IGNORE_INDEX)
    lengths = torch.tensor([len(ids) for ids, _ in encoded])
    for indices in (torch.tensor([3, 0, 39, 17]), torch.randperm(40)[:16], torch.tensor([39])):
        batch = text.text(indices, torch.device("cpu"))
        width = int(lengths[indices].max())
        assert torch.equal(batch["input_ids"], dense_ids[indices, :width])
        assert torch.equal(batch["labels"], dense_labels[indices, :width])
        assert torch.equal(
            batch["attention_mask"], (torch.arange(width)[None] < lengths[indices, None]).long()
        )
    assert text.ids.numel() == lengths.sum() < dense_ids.numel()  # no padding stored
    assert text.ids.dtype == torch.int32 and text.image_of.tolist() == [i % 7 for i in range(40)]
