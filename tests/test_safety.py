"""Safety (issue 8): weights only as safetensors, `torch.load` only with `weights_only=True` and no pickle,
`trust_remote_code` off unless the config sets it, and W&B keys never written into configs or logs."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from mmcompress.config import apply_overrides, load_config, looks_like_secret
from mmcompress.errors import ConfigError
from tests.conftest import cli, tiny_expert_checkpoint

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "mmcompress"
CONF = REPO / "conf"

# ---- (1) + (2) + (3), statically: every call in src/ -----------------------------------------------------

PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve"}


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _is_const(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _is_trust_key(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value == "trust_remote_code"


def scan(source: str, filename: str = "<source>") -> list[tuple[str, str]]:
    """(kind, 'file:line: what') for every unsafe load or save in `source`; kind is `pickle` (weights or
    state through pickle) or `remote-code` (a call that can run a checkpoint's own Python code)."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}  # local name → full dotted name (`np` → numpy, `load` → torch.load)
    found: list[tuple[str, str]] = []

    def report(kind: str, node: ast.AST, what: str) -> None:
        found.append((kind, f"{filename}:{node.lineno}: {what}"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    report("pickle", node, f"imports {alias.name}")
                top = alias.name.split(".")[0]
                aliases[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in PICKLE_MODULES:
                report("pickle", node, f"imports from {node.module}")
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def resolve(node: ast.AST) -> str:
        name = _dotted(node) or ""
        head, _, rest = name.partition(".")
        full = aliases.get(head, head)
        return f"{full}.{rest}" if rest else full

    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if _is_trust_key(key) and not _is_const(value, False):
                    report("remote-code", node, "a literal trust_remote_code other than False")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            named = [*args.posonlyargs, *args.args, *args.kwonlyargs]
            padding = [None] * (len(args.posonlyargs) + len(args.args) - len(args.defaults))
            for arg, default in zip(named, [*padding, *args.defaults, *args.kw_defaults], strict=True):
                if arg.arg == "trust_remote_code" and default is not None and not _is_const(default, False):
                    report(
                        "remote-code", node, f"{node.name}() defaults trust_remote_code to other than False"
                    )
        if not isinstance(node, ast.Call):
            continue
        name = resolve(node.func)
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        if name in ("torch.load", "torch.serialization.load") and "weights_only" not in keywords:
            report("pickle", node, "torch.load without weights_only=True")
        if name in ("torch.save", "torch.serialization.save"):
            report("pickle", node, "torch.save writes a pickle; save tensors with safetensors")
        allow_pickle = keywords.get("allow_pickle")
        if name == "numpy.load" and allow_pickle is not None and not _is_const(allow_pickle, False):
            report("pickle", node, "numpy.load with allow_pickle")
        if name.rsplit(".", 1)[-1] in ("read_pickle", "to_pickle"):
            report("pickle", node, f"{name}()")
        if "weights_only" in keywords and not _is_const(keywords["weights_only"], True):
            report("pickle", node, "weights_only other than True")  # e.g. from_pretrained(weights_only=False)
        if "use_safetensors" in keywords and not _is_const(keywords["use_safetensors"], True):
            report("pickle", node, "use_safetensors other than True")
        if "safe_serialization" in keywords and not _is_const(keywords["safe_serialization"], True):
            report("pickle", node, "safe_serialization other than True")
        trust = keywords.get("trust_remote_code")
        if isinstance(trust, ast.Constant) and trust.value is not False:
            report("remote-code", node, "a literal trust_remote_code other than False")
        receiver = name.rsplit(".", 1)[0].rsplit(".", 1)[-1]
        if (
            name.endswith(".from_pretrained")
            and receiver.startswith("Auto")
            and "trust_remote_code" not in keywords
        ):
            # Left out, it is None: transformers then asks on stdin whether to run the checkpoint's code.
            report("remote-code", node, f"{receiver}.from_pretrained without an explicit trust_remote_code")
    return found


def scan_src(kind: str) -> list[str]:
    return [
        what
        for path in sorted(SRC.rglob("*.py"))
        for k, what in scan(path.read_text(), str(path.relative_to(REPO)))
        if k == kind
    ]


UNSAFE_EXAMPLE = """
import pickle
import numpy as np
import torch as T
from torch import load as tload
from transformers import AutoTokenizer, AutoConfig

T.load("a.pt")
tload("b.pt", weights_only=False)
T.save(model.state_dict(), "c.pt")
np.load("d.npy", allow_pickle=True)
model.save_pretrained(out, safe_serialization=False)
AutoTokenizer.from_pretrained(path, trust_remote_code=True)
AutoConfig.from_pretrained(path)
OPTIONS = {"trust_remote_code": True}
def load(path, trust_remote_code=True): ...
AutoModel.from_pretrained(path, trust_remote_code=cfg.llm.trust_remote_code, weights_only=False)
"""
SAFE_EXAMPLE = """
import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, CLIPVisionModel

torch.load("a.pt", weights_only=True)
np.load("masks.npz")["masks"]
AutoModelForCausalLM.from_pretrained(path, trust_remote_code=cfg.llm.trust_remote_code)
CLIPVisionModel.from_pretrained(path)
def load(path, *, trust_remote_code: bool = False): ...
"""


def test_scanner_flags_every_unsafe_pattern():
    found = scan(UNSAFE_EXAMPLE, "example.py")
    lines = sorted(int(what.split(":")[1]) for _, what in found)
    assert lines == [2, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], found
    assert scan(SAFE_EXAMPLE, "example.py") == []


def test_src_loads_and_saves_no_pickles():
    """No pickle module, `torch.load` only with weights_only=True, no `torch.save` (trainer state is
    safetensors + JSON), no np.load with allow_pickle, no `safe_serialization`/`use_safetensors` switched off."""
    assert len(list(SRC.rglob("*.py"))) > 10
    assert scan_src("pickle") == []


def test_src_never_trusts_remote_code_by_itself():
    """trust_remote_code comes only from the config (`llm.trust_remote_code`): never a literal True, and
    every Auto*.from_pretrained passes it explicitly (left out, transformers prompts and may run the code)."""
    calls = sum(path.read_text().count(".from_pretrained(") for path in SRC.rglob("*.py"))
    assert calls >= 3  # the scan sees the loaders
    assert scan_src("remote-code") == []


@pytest.mark.parametrize("group", ["llm", "encoder"])
def test_conf_defaults_trust_remote_code_false(group):
    files = sorted((CONF / group).glob("*.yaml"))
    assert files
    found = {}
    for path in files:

        def walk(node, where=path.name):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "trust_remote_code":
                        found[where] = value
                    walk(value, f"{where}:{key}")

        walk(yaml.safe_load(path.read_text()))
    assert all(value is False for value in found.values()), found
    if group == "llm":  # every LLM config says so explicitly
        assert {where.split(":")[0] for where in found} == {p.name for p in files}


def test_shipped_weights_are_safetensors():
    assert list((SRC / "weights").glob("*/model.safetensors"))
    assert unsafe_tensor_files(SRC / "weights") == []


# ---- (3) behaviourally: a checkpoint whose own code would write a marker ---------------------------------

CUSTOM_CODE = """from pathlib import Path
Path({marker!r}).write_text("the checkpoint's own code ran")
from transformers import CLIPImageProcessorPil, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

class CustomConfig(LlamaConfig):
    model_type = {model_type!r}

class CustomForCausalLM(LlamaForCausalLM):
    config_class = CustomConfig

class CustomTokenizer(PreTrainedTokenizerFast):
    pass

class CustomImageProcessor(CLIPImageProcessorPil):
    pass
"""

# Loads each checkpoint in a fresh process (the code, if it runs, runs there); answers "y" to any prompt.
LOADER = """
import builtins, json, sys
from mmcompress.errors import UserError
prompts = []
builtins.input = lambda prompt="": prompts.append(prompt) or "y"
results = {}
for scenario in json.loads(sys.argv[1]):
    prompts.clear()
    try:
        if scenario["kind"] == "llm":
            from mmcompress.model.llm import load_llm
            extra = {"trust_remote_code": True} if scenario["trust"] else {}
            loaded = type(load_llm(scenario["path"], **extra)[0]).__name__
        else:
            from mmcompress.vision.families import EXPERTS
            loaded = type(EXPERTS["clip"].from_pretrained("clip", scenario["path"], {}).processor).__name__
        outcome = {"loaded": loaded}
    except UserError as exc:
        outcome = {"error": str(exc)}
    results[scenario["name"]] = {**outcome, "prompted": bool(prompts)}
print(json.dumps(results))
"""


def _custom_llm(directory: Path, model_type: str) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from mmcompress.model.llm import build_word_tokenizer

    tokenizer = build_word_tokenizer(["what colour is the square ? red"])
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    _edit_json(directory / "config.json", model_type=model_type,
               auto_map={"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomForCausalLM"})  # fmt: skip
    _edit_json(
        directory / "tokenizer_config.json", auto_map={"AutoTokenizer": [None, "custom.CustomTokenizer"]}
    )
    return directory


def _custom_expert(directory: Path) -> Path:
    tiny_expert_checkpoint("clip", directory)
    _edit_json(directory / "preprocessor_config.json", image_processor_type="CustomImageProcessor",
               auto_map={"AutoImageProcessor": "custom.CustomImageProcessor"})  # fmt: skip
    return directory


def _edit_json(path: Path, **fields) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


@pytest.fixture(scope="module")
def remote_code(tmp_path_factory) -> dict:
    """Each scenario's outcome (`loaded` class or one-line `error`, `prompted`) and whether its code ran."""
    root = tmp_path_factory.mktemp("remote-code")
    scenarios = {
        "llm-custom-type": ("llm", "custom_llama", False),
        "llm-known-type": ("llm", "llama", False),
        "expert": ("expert", "custom_llama", False),
        "llm-trusted": ("llm", "custom_llama", True),  # the control: the marker does catch code that runs
    }
    runs = []
    for name, (kind, model_type, trust) in scenarios.items():
        directory = root / name
        if kind == "llm":
            _custom_llm(directory, model_type)
        else:
            _custom_expert(directory)
        marker = root / f"{name}.ran"
        (directory / "custom.py").write_text(CUSTOM_CODE.format(marker=str(marker), model_type=model_type))
        runs.append({"name": name, "kind": kind, "path": str(directory), "trust": trust})
    env = {**os.environ, "HF_MODULES_CACHE": str(root / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(runs)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    return {name: {**outcome, "ran": (root / f"{name}.ran").exists()} for name, outcome in outcomes.items()}


def test_trusted_custom_code_runs_so_the_marker_works(remote_code):
    assert remote_code["llm-trusted"]["ran"]


@pytest.mark.parametrize("scenario", ["llm-custom-type", "llm-known-type", "expert"])
def test_checkpoint_code_never_runs_without_trust_remote_code(remote_code, scenario):
    """A checkpoint with `auto_map` code fails with one line or loads with transformers' own classes;
    its code never runs and nobody is asked (the answer to any prompt would have been "y")."""
    outcome = remote_code[scenario]
    assert not outcome["ran"], outcome
    assert not outcome["prompted"], outcome
    if scenario == "llm-known-type":
        assert outcome.get("loaded") == "LlamaForCausalLM", outcome
    elif "error" in outcome:
        assert len(outcome["error"].splitlines()) == 1 and scenario in outcome["error"]


def test_custom_code_error_names_the_switch(remote_code):
    assert "llm.trust_remote_code" in remote_code["llm-custom-type"]["error"]


# ---- (4) credentials never enter a config ------------------------------------------------------------------

FAKE_KEY = "5afe7e57" * 5  # a recognisable 40-character W&B key
FAKE_VALUE = "hunter2-not-a-real-credential"


@pytest.mark.parametrize(
    "override",
    [
        f"+logger.api_key={FAKE_VALUE}",
        f"logger.api_key={FAKE_VALUE}",
        f"++logger.token={FAKE_VALUE}",
        f"+hf_token={FAKE_VALUE}",
        f"+logger.wandb_password={FAKE_VALUE}",
        f"+secrets.wandb={FAKE_VALUE}",
        f"+logger.apiKey={FAKE_VALUE}",
        f"logger.api_key={FAKE_VALUE},other-{FAKE_VALUE}",  # a sweep
        f"+logger.api_key=[{FAKE_VALUE}",  # malformed: still refused, and Hydra never echoes it
    ],
)
def test_credential_overrides_are_refused_naming_the_environment(override):
    with pytest.raises(ConfigError) as excinfo:
        load_config([override])
    message = str(excinfo.value)
    assert len(message.splitlines()) == 1 and FAKE_VALUE not in message
    assert "looks like a credential" in message and "WANDB_API_KEY" in message and "wandb login" in message


def test_environment_credentials_are_refused_in_any_value(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    for override in (f"logger.group={FAKE_KEY}", "logger.group=${oc.env:WANDB_API_KEY}"):
        with pytest.raises(ConfigError, match=r"\$WANDB_API_KEY.*wandb login") as excinfo:
            load_config([override])
        assert FAKE_KEY not in str(excinfo.value)
    cfg = load_config(["logger=none"])
    with pytest.raises(ConfigError, match=r"\$WANDB_API_KEY"):
        apply_overrides(cfg, ["logger.name=${oc.env:WANDB_API_KEY}"])
    with pytest.raises(ConfigError, match="looks like a credential"):
        apply_overrides(cfg, [f"logger.api_key={FAKE_VALUE}"])


def test_credential_in_a_user_config_file_is_refused(tmp_path):
    (tmp_path / "logger").mkdir()
    (tmp_path / "logger" / "my-wandb.yaml").write_text(f"name: wandb\nproject: p\napi_key: {FAKE_VALUE}\n")
    with pytest.raises(ConfigError, match=r"config key 'logger\.api_key' looks like a credential") as excinfo:
        load_config(["logger=my-wandb"], [tmp_path])
    assert FAKE_VALUE not in str(excinfo.value)


@pytest.mark.parametrize(
    "override",
    ["benchmark.vqav2.max_new_tokens=8", "benchmark.textvqa.ocr_tokens=true", "llm.trust_remote_code=true"],
)
def test_ordinary_keys_are_not_credentials(override):
    key, _, value = override.partition("=")
    assert str(OmegaConf.select(load_config([override]), key)).lower() == value


def test_credential_names():
    for name in ("api_key", "WANDB_API_KEY", "apiKey", "HF_TOKEN", "auth_token", "password", "secret_key"):
        assert looks_like_secret(name), name
    for name in (
        "max_new_tokens",
        "pad_token",
        "image_token",
        "tokenizer",
        "HF_TOKEN_PATH",
        "trust_remote_code",
    ):
        assert not looks_like_secret(name), name


def test_credential_override_refused_before_anything_is_written(cache_dir, tmp_path):
    runs = tmp_path / "runs"
    for command in ("train", "config"):
        result = cli(
            command,
            "debug=fast",
            "logger=none",
            f"paths.runs={runs}",
            f"+logger.api_key={FAKE_VALUE}",
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "WANDB_API_KEY" in result.stderr
        assert FAKE_VALUE not in result.stdout + result.stderr
        assert not runs.exists()


def test_config_command_never_prints_the_key(cache_dir):
    env = {"WANDB_API_KEY": FAKE_KEY}
    shown = cli("config", "logger=wandb", env=env)
    assert "project: mmcompress" in shown.stdout and FAKE_KEY not in shown.stdout + shown.stderr
    refused = cli("config", "logger.group=${oc.env:WANDB_API_KEY}", env=env, check=False)
    assert refused.returncode == 2 and FAKE_KEY not in refused.stdout + refused.stderr


def test_environment_record_holds_no_environment_variables(monkeypatch):
    from mmcompress.rundir import environment

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    record = json.dumps(environment())
    assert (
        FAKE_KEY not in record
        and "WANDB" not in record
        and os.environ.get("HOME", "/nonexistent") not in record
    )


# ---- finished runs: what they write ----------------------------------------------------------------------

FORBIDDEN_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"}


def _files(root: Path):
    for folder, _, names in os.walk(root):  # symlinks (wandb's latest-run, debug.log) are not followed
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                yield path


def unsafe_tensor_files(root: Path) -> list[str]:
    """Files under `root` that hold (or may hold) pickled tensors: a pickle suffix, pickle's magic bytes, a
    zip with a pickle inside (torch.save), an .npz/.npy needing allow_pickle, or an unreadable .safetensors."""
    import numpy as np
    from safetensors import safe_open

    bad = []
    for path in _files(root):
        head = path.read_bytes()[:2]
        if path.suffix in FORBIDDEN_SUFFIXES:
            bad.append(f"{path}: pickle-format suffix")
        elif len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
            bad.append(f"{path}: a pickle")
        elif path.suffix in (".npz", ".npy"):
            try:
                arrays = np.load(path, allow_pickle=False)
                _ = [arrays[k] for k in arrays.files] if path.suffix == ".npz" else arrays
            except ValueError as exc:
                bad.append(f"{path}: {exc}")
        elif zipfile.is_zipfile(path) and any(n.endswith(".pkl") for n in zipfile.ZipFile(path).namelist()):
            bad.append(f"{path}: a zip holding a pickle (torch.save)")
        elif path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as f:
                _ = list(f.keys())
    return bad


def _hf_model_dirs(root: Path) -> list[Path]:
    """Directories written by save_pretrained: a config.json naming the model's architectures."""
    return [
        p.parent
        for p in _files(root)
        if p.name == "config.json" and "architectures" in json.loads(p.read_text())
    ]


def test_detector_flags_pickled_tensors(tmp_path):
    import numpy as np
    import torch
    from safetensors.torch import save_file

    torch.save({"w": torch.zeros(2)}, tmp_path / "state.dat")  # a zip holding data.pkl, whatever its name
    torch.save({"w": torch.zeros(2)}, tmp_path / "legacy.dat", _use_new_zipfile_serialization=False)
    np.savez(tmp_path / "objects.npz", a=np.array([{"x": 1}], dtype=object))
    (tmp_path / "weights.bin").write_bytes(b"")
    save_file({"w": torch.zeros(2)}, tmp_path / "good.safetensors")
    np.savez(tmp_path / "good.npz", a=np.zeros(2))
    flagged = {Path(line.split(":")[0]).name for line in unsafe_tensor_files(tmp_path)}
    assert flagged == {"state.dat", "legacy.dat", "objects.npz", "weights.bin"}


@pytest.mark.slow
def test_run_writes_tensors_only_as_safetensors(fast_run):
    assert list(fast_run.rglob("*.safetensors"))
    assert unsafe_tensor_files(fast_run) == []
    model_dirs = _hf_model_dirs(fast_run)
    assert {d.name for d in model_dirs} >= {"llm", "clip"}, model_dirs  # the LLM and the expert
    for directory in model_dirs:
        assert (directory / "model.safetensors").is_file(), sorted(p.name for p in directory.iterdir())


@pytest.mark.slow
def test_caches_hold_tensors_only_as_safetensors(fast_run, cache_dir):
    """The feature cache and the mini-expert cache (debug=fast pretrains its own expert) of the same run."""
    assert list((cache_dir / "features").rglob("*.safetensors"))
    experts = _hf_model_dirs(cache_dir / "experts")
    assert experts and all((d / "model.safetensors").is_file() for d in experts)
    assert unsafe_tensor_files(cache_dir) == []


@pytest.mark.slow
def test_wandb_key_is_never_written(cache_dir, tmp_path):
    """A debug=fast run mirrored to W&B offline, with the key in the environment only: the key is in no file
    of the run directory (config.yaml, overrides.txt, summary.json, metrics.jsonl, wandb/ and its debug logs),
    in none of W&B's own folders, and in neither output stream."""
    wandb_home = tmp_path / "wandb-home"
    env = {
        "WANDB_MODE": "offline",
        "WANDB_API_KEY": FAKE_KEY,
        "WANDB_CONFIG_DIR": str(wandb_home / "config"),
        "WANDB_CACHE_DIR": str(wandb_home / "cache"),
        "WANDB_DATA_DIR": str(wandb_home / "data"),
    }
    result = cli("train", "debug=fast", "logger=wandb", f"paths.runs={tmp_path / 'runs'}", env=env)
    run = Path(result.stdout.strip().splitlines()[-1])
    assert json.loads((run / "summary.json").read_text())["status"] == "complete"
    logs = list(run.glob("wandb/offline-run-*/logs/debug*.log"))
    assert logs and list(run.glob("wandb/offline-run-*/*.wandb"))  # W&B did run, and logged
    assert FAKE_KEY not in result.stdout + result.stderr
    needle = FAKE_KEY[:20].encode()  # also a truncated key
    leaked = [
        str(p)
        for root in (run, wandb_home)
        if root.exists()
        for p in _files(root)
        if needle in p.read_bytes()
    ]
    assert leaked == []
    assert {"config.yaml", "overrides.txt", "summary.json", "metrics.jsonl"} <= {
        p.name for p in run.iterdir()
    }
