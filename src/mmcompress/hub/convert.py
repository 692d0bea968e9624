"""Converters from a package's weights file to a `save_pretrained` directory that `from_pretrained` loads
like the hub checkpoint it stands in for, registered under the names the catalog's stand-ins use.

- `gguf-llama`: a GGUF causal LM (SmolLM2's Q4_1), dequantised by transformers, rebuilt from its config
  without the quantisation settings (`save_pretrained` refuses a GGUF-loaded model) and saved with its
  tokenizer and chat template.
- `onnx-dinov2`: the DINOv2 backbone of an ONNX graph exported from transformers' old `Dinov2Model`. Most
  initialisers keep their names; the q/k/v/o/fc1/fc2 matrices are anonymous, transposed MatMul weights,
  each named here by the bias of the Add that follows it. Saved with DINOv2's image processor settings.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
import transformers as hf

from mmcompress.errors import UserError
from mmcompress.registry import Registry

CONVERTERS: Registry = Registry("weights converter")
# DINOv2-S/14 (facebook/dinov2-small): its config and its image processor's settings.
DINOV2_SMALL = {
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "mlp_ratio": 4,
    "patch_size": 14,
    "image_size": 518,
    "layer_norm_eps": 1e-6,
}
DINOV2_PROCESSOR = {
    "size": {"shortest_edge": 256},
    "crop_size": {"height": 224, "width": 224},
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,  # bicubic
}
# The old Dinov2Model's attention names, as the ONNX graph keeps them, → today's.
_DINOV2_RENAMES = (
    ("attention.attention.query", "attention.q_proj"),
    ("attention.attention.key", "attention.k_proj"),
    ("attention.attention.value", "attention.v_proj"),
    ("attention.output.dense", "attention.o_proj"),
)


def _needs(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise UserError(
            f"converting these weights needs the `{module}` package: pip install 'mmcompress[weights]'"
        ) from None


@CONVERTERS.register("gguf-llama")
def gguf_llama(path: Path, out: Path) -> None:
    _needs("gguf")
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # transformers' own dequantisation progress bar
            tokenizer = hf.AutoTokenizer.from_pretrained(
                path.parent, gguf_file=path.name, trust_remote_code=False
            )
            loaded = hf.AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, trust_remote_code=False
            )
    except Exception as exc:  # gguf and transformers raise many kinds on a damaged file
        raise UserError(f"{path.name} is not a readable GGUF model ({type(exc).__name__}: {exc})") from None
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    model = type(loaded)(type(loaded.config).from_dict(settings))
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


@CONVERTERS.register("onnx-dinov2")
def onnx_dinov2(path: Path, out: Path) -> None:
    _needs("onnx")
    model = hf.Dinov2Model(hf.Dinov2Config(**DINOV2_SMALL))
    state = dinov2_state_from_onnx(path)
    state["embeddings.mask_token"] = torch.zeros_like(model.embeddings.mask_token)  # unused: no masking
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(
            f"{path.name} is not the DINOv2-S backbone expected ({len(missing)} weights missing, e.g. "
            f"{(missing or unexpected)[0]})"
        )
    model.save_pretrained(out)
    hf.BitImageProcessorPil(**DINOV2_PROCESSOR).save_pretrained(out)


def dinov2_state_from_onnx(path: Path) -> dict[str, torch.Tensor]:
    """The backbone's state dict in today's Dinov2Model names, from the ONNX graph's initialisers."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # protobuf's DecodeError and friends
        raise UserError(f"{path.name} is not a readable ONNX model ({type(exc).__name__})") from None
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    state = {
        _dinov2_name(k): torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith("backbone.")
    }
    for node in graph.node:  # x @ W then + bias: W (in, out) is nn.Linear's weight transposed
        if node.op_type != "MatMul" or not node.input[1].startswith("onnx::MatMul"):
            continue
        add = next((c for c in consumers.get(node.output[0], []) if c.op_type == "Add"), None)
        bias = next((i for i in (add.input if add else []) if i.startswith("backbone.")), None)
        if bias is not None:
            state[_dinov2_name(bias).removesuffix(".bias") + ".weight"] = torch.from_numpy(
                arrays[node.input[1]].T.copy()
            )
    tables = [v for k, v in arrays.items() if k.startswith("onnx::") and v.ndim == 3 and v.shape[-1] == 384]
    cls_slot = next((v for v in tables if v.shape[1] == 1), None)
    patches = next((v for v in tables if v.shape[1] > 1), None)
    if cls_slot is not None and patches is not None:  # the position table: [CLS] slot, then the patch grid
        state["embeddings.position_embeddings"] = torch.cat(
            [torch.from_numpy(cls_slot.copy()), torch.from_numpy(patches.copy())], 1
        )  # (1, 1 + 37·37, 384)
    return state


def _dinov2_name(name: str) -> str:
    name = name.removeprefix("backbone.")
    for old, new in _DINOV2_RENAMES:
        name = name.replace(old, new)
    return name
