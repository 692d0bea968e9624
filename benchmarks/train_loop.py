"""The training loop's overhead against a bare PyTorch loop, and DDP with 1 vs 2 processes (JSON out).

1. In one process, on the default model (mini CLIP → MLP → tiny Llama) and cached features: the finetune
   stage as `mmcompress train` runs it (`Trainer.run_stage`: global-batch sharding, token-count loss
   normalisation, clipping, scheduler, logging, progress bar, trainer-state checkpoints every
   `--checkpoint-every` steps, the final save) against a bare loop (`loss.backward(); clip; step`) over
   the same batches from the same start. Alternated `--repeats` times; best of each.
2. `mmcompress train stages=[finetune]` with `distributed.nproc=1` (one process, every core) and `=2`
   (torchrun, DDP over gloo, one thread per process): median samples/s of the logged windows after the
   first, alternated `--repeats` times; best of each.

python benchmarks/train_loop.py [--steps 200] [--repeats 3] [--ddp-steps 200]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def in_process(steps: int, repeats: int, checkpoint_every: int) -> dict:
    from mmcompress.config import load_config
    from mmcompress.data import splits
    from mmcompress.model.features import split_features
    from mmcompress.training.batches import BatchOrder
    from mmcompress.training.run import new_model, run_directory
    from mmcompress.training.stages import set_trainable
    from mmcompress.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            [
                "logger=none",
                "stages=[finetune]",
                f"stage.finetune.steps={steps}",
                f"train.checkpoint_every={checkpoint_every}",
                f"paths.runs={tmp}",
            ]
        )
        run = run_directory(cfg)
        run.create(cfg, [])
        split = splits.load(cfg, "train")
        start = new_model(cfg, split, run)
        device = torch.device("cpu")
        features = split_features(dict(start.experts), split.images, cfg, device, "train images")
        batch_size = cfg.stage.finetune.batch_size

        def tool() -> float:
            trainer = Trainer(cfg, copy.deepcopy(start), split, None, device)
            trainer.features = features
            began = time.perf_counter()
            trainer.run_stage("finetune", run)
            return steps * batch_size / (time.perf_counter() - began)

        def bare() -> float:
            trainer = Trainer(cfg, copy.deepcopy(start), split, None, device)  # for its batch tensors only
            trainer.features = features
            model = trainer.model
            set_trainable(model, "finetune", ["projector", "llm"], cfg.lora)
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=cfg.stage.finetune.lr, fused=cfg.optim.fused)
            order = BatchOrder(len(trainer.text), batch_size, cfg.seed)
            model.train()
            began = time.perf_counter()
            for step in range(1, steps + 1):
                loss_sum, count = model(**trainer._batch(order.batch(step)))
                optimizer.zero_grad(set_to_none=True)
                (loss_sum / count).backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
                optimizer.step()
            return steps * batch_size / (time.perf_counter() - began)

        rates = {"bare": [], "tool": []}
        for _ in range(repeats):
            rates["bare"].append(bare())
            rates["tool"].append(tool())
            for stage_dir in (run.path / "checkpoints").glob("finetune*"):
                shutil.rmtree(stage_dir)
    best = {k: max(v) for k, v in rates.items()}
    return {
        "steps": steps,
        "batch_size": batch_size,
        "checkpoint_every": checkpoint_every,
        "samples_per_s": {k: round(v, 1) for k, v in best.items()},
        "all_samples_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "tool_over_bare": round(best["tool"] / best["bare"], 3),
    }


def ddp(steps: int, repeats: int) -> dict:
    """Finetune throughput of `mmcompress train` with 1 and 2 processes, alternated; best of each."""
    rates: dict[int, list[float]] = {1: [], 2: []}
    final_loss = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for nproc in (1, 2):
                command = [
                    str(Path(sys.executable).with_name("mmcompress")),
                    "train",
                    "logger=none",
                    "stages=[finetune]",
                    f"stage.finetune.steps={steps}",
                    f"distributed.nproc={nproc}",
                    f"paths.runs={tmp}/{nproc}-{repeat}",
                ]
                env = {**os.environ, "WANDB_MODE": "disabled"}
                env.pop("OMP_NUM_THREADS", None)
                out = subprocess.run(command, check=True, env=env, capture_output=True, text=True)
                run = Path(out.stdout.strip().splitlines()[-1])
                records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
                logged = [r for r in records if r.get("stage") == "finetune" and "loss" in r]
                rates[nproc].append(statistics.median(r["samples_per_s"] for r in logged[1:]))
                final_loss[nproc] = logged[-1]["loss"]
    results = {
        f"{n}_process": {
            "samples_per_s": round(max(rates[n]), 1),
            "all_samples_per_s": [round(x, 1) for x in rates[n]],
            "final_loss": final_loss[n],
        }
        for n in (1, 2)
    }
    results["two_over_one"] = round(max(rates[2]) / max(rates[1]), 3)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="steps per timed loop (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="alternated repeats, best kept (default 3)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="the tool's trainer-state saves")
    parser.add_argument("--ddp-steps", type=int, default=200, help="finetune steps of each DDP run")
    args = parser.parse_args()
    report = {
        "command": "python benchmarks/train_loop.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpu_cores": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "loop": in_process(args.steps, args.repeats, args.checkpoint_every),
        "ddp": ddp(args.ddp_steps, args.repeats),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
