"""Data-parallel training under torchrun: DDP (gloo on CPU, NCCL on GPU) or FSDP2 for large LLMs.

`mmcompress train distributed.nproc=2` relaunches itself under `torchrun --standalone`; inside, every
process builds the same model from the same seed, takes its slice of each global batch and all-reduces
gradients. The global batch size and the loss normalisation (by the global number of answer tokens) do
not depend on the number of processes, so neither do the results. Only rank 0 writes and logs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch import nn

from mmcompress.errors import ConfigError

STRATEGIES = ("ddp", "fsdp")
BACKENDS = ("auto", "gloo", "nccl")


def check(cfg: DictConfig) -> None:
    d = cfg.distributed
    if not isinstance(d.nproc, int) or isinstance(d.nproc, bool) or d.nproc < 1:
        raise ConfigError(
            f"distributed.nproc={d.nproc!r} must be a positive integer (processes on this machine)"
        )
    if d.strategy not in STRATEGIES:
        raise ConfigError(f"distributed.strategy={d.strategy!r} is not one of {', '.join(STRATEGIES)}")
    if isinstance(d.timeout_min, bool) or not isinstance(d.timeout_min, (int, float)) or d.timeout_min <= 0:
        raise ConfigError(f"distributed.timeout_min={d.timeout_min!r} must be a positive number of minutes")
    if d.backend not in BACKENDS:
        raise ConfigError(f"distributed.backend={d.backend!r} is not one of {', '.join(BACKENDS)}")


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def relaunch_command(nproc: int, argv: list[str]) -> list[str]:
    """The torchrun command line that reruns this `mmcompress` invocation on `nproc` processes."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    return [*launcher, "--standalone", f"--nproc_per_node={nproc}", "-m", "mmcompress", *argv]


@dataclass
class Context:
    """Who this process is. A single process is world 1, rank 0, with every collective a no-op."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # this process's device
    strategy: str = "ddp"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it fills caches: the world, mini experts, features), then the rest."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of `values` over every process (a copy; the input is left alone)."""
        values = values.detach().clone()
        if self.active:
            device = values.device
            moved = values.to(self.device)  # NCCL reduces on the GPU, gloo on the CPU
            dist.all_reduce(moved)
            values = moved.to(device)
        return values

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This process's contiguous slice of a global batch (sizes differ by at most one)."""
        return indices.tensor_split(self.world)[self.rank]

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model as this stage trains it: itself, DDP, or FSDP2-sharded (a copy; `model` stays whole)."""
        if not self.active:
            return model
        if self.strategy == "fsdp":
            return _fully_shard(model, self.device)
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None
        )

    def no_sync(self, wrapped: nn.Module, last: bool):
        """Skip the gradient all-reduce on every micro-batch but the last of an optimizer step."""
        if last or not self.active:
            return contextlib.nullcontext()
        if isinstance(wrapped, nn.parallel.DistributedDataParallel):
            return wrapped.no_sync()
        return _fsdp_no_sync(wrapped)

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def _fsdp_no_sync(module: nn.Module) -> Iterator[None]:
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def _fully_shard(model: nn.Module, device: torch.device) -> nn.Module:
    """FSDP2: each LLM decoder layer, the embeddings and the head are their own shard group; the rest
    (experts, fusion, projectors) is the root's. Shards a deep copy so the whole model stays for saving."""
    import copy

    from torch.distributed.fsdp import fully_shard

    sharded = copy.deepcopy(model)
    llm = sharded.llm
    for layer in llm.get_decoder().layers:
        fully_shard(layer)
    embeddings, head = llm.get_input_embeddings(), llm.get_output_embeddings()
    if embeddings.weight is not head.weight:  # tied ones (Qwen2-0.5B) stay one tensor, in the root's group
        fully_shard(embeddings)  # called directly when splicing, outside the decoder
        fully_shard(head)  # called directly on the supervised positions only
    fully_shard(sharded)
    return sharded.to(device)


def setup(cfg: DictConfig, device: torch.device) -> Context:
    """Join the process group when torchrun started this process; otherwise a single-process context.
    `device` is the resolved `device` setting: under torchrun a CUDA device becomes cuda:<local rank>."""
    strategy = cfg.distributed.strategy
    if not launched_by_torchrun():
        return Context(device=device, strategy=strategy)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    backend = cfg.distributed.backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("distributed.backend=nccl needs device=cuda; use distributed.backend=gloo on CPU")
    if not dist.is_initialized():
        # other processes wait while rank 0 alone fills caches, validates or saves: allow it time
        dist.init_process_group(backend, timeout=timedelta(minutes=cfg.distributed.timeout_min))
    return Context(rank=rank, world=world, device=device, strategy=strategy)
