"""LLaVA-format data: `<split>.json` lists of {"id", "image", "conversations", optional "category"}.

One loader serves the embedded benchmark and real data. Conversations are rendered with the LLM's own
chat template; labels supervise assistant turns only, found by rendering each prefix and checking that
its tokens are a prefix of the whole (so a template/tokenizer mismatch is an error, never a zero loss).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.nn.utils.rnn import pad_sequence

from mmcompress.errors import UserError

IMAGE_TOKEN = "<image>"  # LLaVA's placeholder for the image; becomes a special token of every tokenizer
IGNORE_INDEX = -100
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
IMAGE_POSITIONS = ("keep", "before", "after")


@dataclass(frozen=True)
class Sample:
    id: str
    image: int  # index into the split's image table
    category: str
    messages: tuple[dict, ...]  # [{"role", "content"}], `<image>` placed in the first user turn

    @property
    def answer(self) -> str:
        """The first assistant turn: the reference answer when the sample is evaluated."""
        return next(m["content"] for m in self.messages if m["role"] == "assistant")


@dataclass
class Split:
    name: str
    samples: list[Sample]
    images: list[Path]  # unique image files; samples refer to them by index


def place_image(text: str, position: str) -> str:
    """Put the `<image>` placeholder before or after the question text, or keep it where the data has it."""
    if position == "keep" and IMAGE_TOKEN in text:
        return text
    question = text.replace(IMAGE_TOKEN, "").strip()
    return f"{question}\n{IMAGE_TOKEN}" if position == "after" else f"{IMAGE_TOKEN}\n{question}"


def load_split(
    json_path: Path, image_folder: Path, image_position: str, *, limit: int | None = None
) -> Split:
    """Read and validate one split file; every problem is reported with the file and the sample."""
    if image_position not in IMAGE_POSITIONS:
        raise UserError(f"data.image_position={image_position!r} is not one of {', '.join(IMAGE_POSITIONS)}")
    if not json_path.is_file():
        raise UserError(
            f"data file {json_path} does not exist; check data.path (a directory of <split>.json)"
        )
    try:
        records = json.loads(json_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{json_path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "fix or regenerate it (a JSON list of samples)"
        ) from None
    if not isinstance(records, list):
        raise UserError(f"{json_path} must hold a JSON list of samples, found {type(records).__name__}")
    if not records:
        raise UserError(f"{json_path} holds no samples; point data.path at a non-empty dataset")
    records = records[:limit] if limit else records
    image_index: dict[Path, int] = {}
    samples = []
    for i, record in enumerate(records):
        sample_id = str(record.get("id", i)) if isinstance(record, dict) else str(i)
        where = f"{json_path.name}, sample {sample_id}"
        if not isinstance(record, dict) or "image" not in record or "conversations" not in record:
            raise UserError(
                f"{where}: needs 'image' and 'conversations' (text-only samples are not supported)"
            )
        messages = _messages(record["conversations"], where, image_position)
        path = (image_folder / record["image"]).resolve()
        samples.append(
            Sample(
                sample_id,
                image_index.setdefault(path, len(image_index)),
                str(record.get("category", "all")),
                messages,
            )
        )
    missing = [p for p in image_index if not p.is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} image(s) of {json_path.name} are missing, e.g. {missing[0]}; check data.image_folder"
        )
    return Split(json_path.stem, samples, list(image_index))


def _messages(conversations: object, where: str, image_position: str) -> tuple[dict, ...]:
    if not isinstance(conversations, list) or not conversations:
        raise UserError(f"{where}: 'conversations' must be a non-empty list of {{'from', 'value'}} turns")
    messages = []
    for turn in conversations:
        role = ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
        if role is None or not isinstance(turn.get("value"), str):
            raise UserError(f"{where}: bad turn {turn!r}; 'from' must be one of {', '.join(ROLES)}")
        messages.append({"role": role, "content": turn["value"]})
    if not any(m["role"] == "assistant" for m in messages):
        raise UserError(f"{where}: no assistant ('gpt') turn to learn from")
    first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
    if first_user is None:
        raise UserError(f"{where}: no user ('human') turn")
    if sum(m["content"].count(IMAGE_TOKEN) for m in messages) > 1:
        raise UserError(f"{where}: more than one {IMAGE_TOKEN} placeholder (one image per sample)")
    for m in messages:  # the placeholder moves to the first user turn
        m["content"] = (
            m["content"].replace(IMAGE_TOKEN, "").strip() if m is not messages[first_user] else m["content"]
        )
    messages[first_user]["content"] = place_image(messages[first_user]["content"], image_position)
    return tuple(messages)


def encode_for_training(
    samples: Sequence[Sample], tokenizer, max_tokens: int
) -> list[tuple[list[int], list[int]]]:
    """Token ids and labels (assistant tokens only) for every sample, tokenised in one batched call."""
    texts, spans = [], []  # spans[i]: (first text index, number of assistant turns) of sample i
    for sample in samples:
        start = len(texts)
        for k, message in enumerate(sample.messages):
            if message["role"] == "assistant":
                texts.append(
                    tokenizer.apply_chat_template(
                        list(sample.messages[:k]), tokenize=False, add_generation_prompt=True
                    )
                )
                texts.append(tokenizer.apply_chat_template(list(sample.messages[: k + 1]), tokenize=False))
        spans.append((start, (len(texts) - start) // 2))
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    encoded = []
    for sample, (start, turns) in zip(samples, spans, strict=True):
        full: list[int] = []
        labels: list[int] = []
        for t in range(turns):
            prompt, answered = ids[start + 2 * t], ids[start + 2 * t + 1]
            if answered[: len(full)] != full or answered[: len(prompt)] != prompt or len(prompt) < len(full):
                raise UserError(
                    f"sample {sample.id}: the chat template does not tokenise consistently (a conversation "
                    "prefix is not a token prefix of the whole); fix llm.chat_template for this tokenizer"
                )
            labels += [IGNORE_INDEX] * (len(prompt) - len(full)) + answered[len(prompt) :]
            full = answered
        full, labels = full[:max_tokens], labels[:max_tokens]
        if all(label == IGNORE_INDEX for label in labels):
            raise UserError(
                f"sample {sample.id} has no answer tokens left after truncation to {max_tokens} tokens; "
                "raise data.max_text_tokens"
            )
        encoded.append((full, labels))
    return encoded


def encode_prompts(samples: Sequence, tokenizer) -> list[list[int]]:
    """Ids of each sample's (or question's) conversation up to its first answer, ending with the
    generation prompt."""
    texts = []
    for sample in samples:
        roles = [m["role"] for m in sample.messages]
        first_answer = roles.index("assistant") if "assistant" in roles else len(roles)
        texts.append(
            tokenizer.apply_chat_template(
                list(sample.messages[:first_answer]), tokenize=False, add_generation_prompt=True
            )
        )
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def pad(sequences: Sequence[Sequence[int]], value: int, side: str = "right") -> torch.Tensor:
    """(B, L) tensor of variable-length sequences padded with `value` on `side`."""
    tensors = [torch.as_tensor(seq, dtype=torch.long) for seq in sequences]
    return pad_sequence(tensors, batch_first=True, padding_value=value, padding_side=side)


def open_image(path: Path) -> Image.Image:
    """An RGB PIL image, or a one-line error naming the unreadable file."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist; check data.image_folder") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        if isinstance(exc, UnidentifiedImageError):
            reason = "not in an image format PIL knows: corrupt?"
        else:  # "image file is truncated (…)", "Is a directory", "Permission denied"
            reason = getattr(exc, "strerror", None) or str(exc).split("\n")[0] or type(exc).__name__
        raise UserError(f"image {path} cannot be read ({reason}); replace or remove it") from None
