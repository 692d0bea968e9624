"""The multimodal LM, one forward pass read top to bottom as the data flows:

    pixels → each expert's native patch map → onto the common grid → pruning signals
           → prune (each expert's tokens, or the fused ones) → fuse → project → spliced into the LLM at <image>

The model owns this order: experts, fusion and pruning are separate rooms that never call each other.
Image features may come precomputed (frozen experts, cached once per machine: features.py, which encodes
with `encode_expert`) or from pixels; everything after them is identical. Visual tokens carry a keep-mask,
so methods that keep a different number of tokens per image batch cleanly: masked slots are never attended
and position ids count only real tokens.

Pre-alignment (EAGLE's stage 1) takes a side path: each expert alone through its own projector, so every
expert learns to speak to the frozen LLM before the experts are fused.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from mmcompress.data.llava import IGNORE_INDEX, IMAGE_TOKEN
from mmcompress.errors import UserError
from mmcompress.model.fusion import Fusion
from mmcompress.model.projector import cell_positions
from mmcompress.pruning.arrange import fused_signals, prune_experts
from mmcompress.pruning.methods import Pruner
from mmcompress.vision.expert import VisionExpert
from mmcompress.vision.grid import to_grid
from mmcompress.vision.signals import ExpertTokens, SignalSpec, grid_signals


def encode_expert(expert: VisionExpert, inputs: torch.Tensor, signals: SignalSpec | None) -> ExpertTokens:
    """One expert's preprocessed input → its (B, N, C) tokens on the common grid and, when `signals` asks,
    their (B, N) importance and (B, N, K) keys, all from one forward pass of the expert."""
    kind = signals.kind_for(expert) if signals is not None else None
    form = signals.attention if kind == "cls" else None
    native = expert.patch_map(inputs, form)  # (B, C, h, w) on the expert's own grid
    tokens = to_grid(native, expert.grid, expert.to_grid_method)  # (B, N, C) on the common grid
    if kind is None:
        return ExpertTokens(tokens)
    importance, keys = grid_signals(native, tokens, kind, expert.grid)  # (B, N), (B, N, K)
    return ExpertTokens(tokens, importance, keys)


class MultimodalLM(nn.Module):
    def __init__(
        self,
        experts: dict[str, VisionExpert],
        fusion: Fusion,
        pruner: Pruner,
        projector: nn.Module,
        prealign_projectors: dict[str, nn.Module],
        llm: PreTrainedModel,
        tokenizer,
        signals: SignalSpec | None = None,
        position_frequencies: int = 0,
        position_at: str = "input",
    ) -> None:
        super().__init__()
        self.experts = nn.ModuleDict(experts)
        self.fusion = fusion
        self.pruner = pruner
        self.projector = projector
        self.prealign_projectors = nn.ModuleDict(prealign_projectors)  # expert → its own projector
        self.llm = llm
        self.tokenizer = tokenizer
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.signal_spec = signals  # the pruning signals experts compute (None: the pruner reads none)
        # projector.positions / position_at: each token's grid-cell code (4F sin/cos values), appended to the
        # experts' channels before the projector (input) or added to the LLM-space tokens after it (output)
        self.position_frequencies, self.position_at = position_frequencies, position_at
        # train.compile: the trainer sets a torch.compile'd decoder forward for the training loss only
        # (generation stays eager: its shapes change with every token)
        self.training_decoder: Callable | None = None

    # ---- the data flow ------------------------------------------------------------------------------
    def encode_images(self, pixels: dict[str, torch.Tensor]) -> dict[str, ExpertTokens]:
        """Each expert on its own preprocessed pixels → {name: (B, N, C_e) grid tokens (+ signals)}."""
        return {
            name: encode_expert(expert, pixels[name], self.signal_spec)
            for name, expert in self.experts.items()
        }

    def visual_tokens(
        self, encoded: dict[str, ExpertTokens], expert: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Expert tokens → (B, M, D) LLM-space visual tokens and their (B, M) keep-mask.

        With `expert`, pre-alignment's path: that expert's tokens alone through its own projector."""
        encoded = self.with_cell_positions(encoded)
        cells = self.cell_codes(encoded) if self.position_at == "output" else None  # (B, N, 4F) | None
        if expert is not None:
            visual = self.prealign_projectors[expert](encoded[expert].tokens)  # (B, N, D)
            ones = torch.ones(visual.shape[:2], dtype=torch.bool, device=visual.device)
            return self.placed(visual, cells), ones
        if self.pruner.where == "experts":  # prune each expert's tokens, then fuse what is kept
            tokens, keep_mask, cells = prune_experts(
                self.pruner, encoded, shared=self.fusion.aligned, grid=self.fusion.grid, cells=cells
            )  # {e: (B, M_e, C_e)}, (B, M), (B, M, 4F) | None
            fused = self.fusion(tokens)  # (B, M, ΣC)
        else:  # fuse every token, then prune the fused sequence by the experts' arranged signals
            fused = self.fusion({name: e.tokens for name, e in encoded.items()})  # (B, N', ΣC)
            importance, keys = fused_signals(encoded, shared=self.fusion.aligned)  # (B, N'), (B, N', K)
            if cells is None:
                fused, keep_mask = self.pruner(fused, importance, keys, self.fusion.token_grid)  # (B, M, ΣC)
            else:  # the plan's selection and merges also carry each token's cell code
                plan = self.pruner.plan(fused, importance, keys, self.fusion.token_grid)
                copies = fused.shape[1] // cells.shape[1]  # appended experts (sequence) repeat the grid
                cells = plan.apply(cells.repeat(1, copies, 1))  # (B, M, 4F)
                fused, keep_mask = plan.apply(fused), plan.mask  # (B, M, ΣC), (B, M)
        return self.placed(self.projector(fused), cells), keep_mask  # (B, M, D)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        features: dict[str, ExpertTokens] | None = None,
        pixels: dict[str, torch.Tensor] | None = None,
        prealign: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed cross-entropy over supervised (answer) tokens and their count; the trainer divides by the
        count over the whole global batch, so micro-batches and processes do not change the loss.

        `prealign`: each expert alone through its own projector (EAGLE's stage 1), its losses summed."""
        features = features if features is not None else self.encode_images(pixels)
        paths = list(self.experts) if prealign else [None]
        total, count = 0.0, 0
        for expert in paths:  # one path per expert in pre-alignment, else the fused one
            visual, visual_mask = self.visual_tokens(features, expert)
            loss_sum, targets = self._answer_loss(input_ids, attention_mask, visual, visual_mask, labels)
            total, count = total + loss_sum, count + targets
        return total, count

    def with_cell_positions(self, encoded: dict[str, ExpertTokens]) -> dict[str, ExpertTokens]:
        """`projector.positions`: every expert's (B, N, C) tokens gain their grid cell's (N, 4F) sin/cos
        channels, before pruning, so a merged token carries the mean place of what it merged."""
        cells = self.cell_codes(encoded) if self.position_at == "input" else None  # (B, N, 4F) | None
        if cells is None:
            return encoded
        return {
            name: dataclasses.replace(e, tokens=torch.cat([e.tokens, cells.to(e.tokens.dtype)], -1))
            for name, e in encoded.items()
        }

    def cell_codes(self, encoded: dict[str, ExpertTokens]) -> torch.Tensor | None:
        """(B, N, 4F) each common-grid cell's code (None without `projector.positions`)."""
        if not self.position_frequencies:
            return None
        first = next(iter(encoded.values())).tokens  # (B, N, C)
        cells = cell_positions(self.fusion.grid, self.position_frequencies, first.device)  # (N, 4F)
        return cells.expand(first.shape[0], -1, -1)

    @staticmethod
    def placed(visual: torch.Tensor, cells: torch.Tensor | None) -> torch.Tensor:
        """(B, M, D) visual tokens with their (B, M, 4F) cell codes added to the first 4F dimensions, at the
        tokens' own RMS: the LLM reads the place directly, whatever the projector kept."""
        if cells is None:
            return visual
        scale = visual.detach().float().pow(2).mean().sqrt()
        code = F.pad(cells * scale, (0, visual.shape[-1] - cells.shape[-1]))  # (B, M, D)
        return visual + code.to(visual.dtype)

    def _answer_loss(self, input_ids, attention_mask, visual, visual_mask, labels):
        embeds, mask, positions, labels = self.splice(input_ids, attention_mask, visual, visual_mask, labels)
        targets = labels[:, 1:]  # (B, T-1): token t+1 is predicted at position t
        supervised = targets != IGNORE_INDEX
        if not supervised.any():
            raise UserError(
                "a training batch has no supervised (answer) tokens: the chat template hides every answer; "
                "check llm.chat_template and data.max_text_tokens"
            )
        decoder = self.training_decoder or self.llm.get_decoder()
        hidden = decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False)
        hidden = hidden.last_hidden_state[:, :-1][supervised]  # (S, D): only positions with a target
        logits = self.llm.get_output_embeddings()(hidden)  # (S, V)
        loss_sum = F.cross_entropy(logits.float(), targets[supervised], reduction="sum")
        return loss_sum, supervised.sum()

    # ---- splicing visual tokens into the text ----------------------------------------------------------
    def splice(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        visual: torch.Tensor,
        visual_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Replace each row's single `<image>` token by its M visual tokens, without a loop.

        Output position t takes visual token t − p inside [p, p + M) (p = the row's placeholder), text
        token t before it and text token t − M + 1 after it. Position ids count attended tokens only.
        """
        batch, length = input_ids.shape
        tokens = visual.shape[1]
        is_image = input_ids == self.image_token_id  # (B, L)
        if not torch.equal(is_image.sum(1), torch.ones(batch, dtype=torch.long, device=input_ids.device)):
            raise UserError(f"every sample needs exactly one {IMAGE_TOKEN} token after tokenisation")
        place = is_image.float().argmax(1)[:, None]  # (B, 1)
        out_pos = torch.arange(length - 1 + tokens, device=input_ids.device)[None]  # (1, T)
        in_visual = (out_pos >= place) & (out_pos < place + tokens)  # (B, T)
        text_idx = torch.where(out_pos < place, out_pos, out_pos - tokens + 1).clamp(0, length - 1)  # (B, T)
        visual_idx = (out_pos - place).clamp(0, tokens - 1)  # (B, T)

        text_embeds = self.llm.get_input_embeddings()(input_ids)  # (B, L, D)
        dim = text_embeds.shape[-1]
        embeds = torch.where(
            in_visual[..., None],
            visual.to(text_embeds.dtype).gather(1, visual_idx[..., None].expand(-1, -1, dim)),
            text_embeds.gather(1, text_idx[..., None].expand(-1, -1, dim)),
        )  # (B, T, D)
        mask = torch.where(
            in_visual, visual_mask.long().gather(1, visual_idx), attention_mask.gather(1, text_idx)
        )
        positions = (mask.cumsum(1) - 1).clamp(min=0)  # (B, T)
        if labels is not None:
            labels = torch.where(in_visual, IGNORE_INDEX, labels.gather(1, text_idx))
        return embeds, mask, positions, labels

    # ---- evaluation --------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        features: dict[str, ExpertTokens],
        max_new_tokens: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched greedy decoding of left-padded prompts.

        Returns (B, ≤max_new_tokens) generated ids (pad after EOS) and (B,) visual tokens fed per image.
        """
        visual, visual_mask = self.visual_tokens(features)
        embeds, mask, positions, _ = self.splice(input_ids, attention_mask, visual, visual_mask)
        out = self.llm(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        cache = "cache" if "cache" in inspect.signature(self.llm.forward).parameters else "past_key_values"
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        generated = []
        for _ in range(max_new_tokens):  # one step per generated token, the whole batch at once
            next_ids = out.logits[:, -1].argmax(-1)  # (B,)
            generated.append(torch.where(finished, pad, next_ids))
            finished |= next_ids == eos
            if finished.all():
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            positions = positions[:, -1:] + 1
            out = self.llm(
                inputs_embeds=self.llm.get_input_embeddings()(next_ids[:, None]),
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{cache: getattr(out, cache)},  # transformers ≥ 5.2x names the KV cache `cache`
            )
        return torch.stack(generated, 1), visual_mask.sum(1)
