"""Data-parallel training over several processes: `torchrun --nproc-per-node N -m rslad_kit train ...`.

torchrun starts N copies of the command and sets RANK, LOCAL_RANK and WORLD_SIZE; `train` then:
* joins the process group (NCCL on GPUs, one GPU per process; gloo on a CPU);
* cuts every batch of the ordinary loader into N contiguous shards, one per rank. The loader is
  deterministic in (seed, epoch), so the union of the shards is exactly the batch one process would
  see: `batch_size` stays the global batch, and resume stays exact;
* attacks each rank's own shard, with the unwrapped model (no gradient sync is needed for an attack);
* averages gradients (DistributedDataParallel), so every rank takes the same optimiser step;
* sums validation counts over ranks, so every rank selects the same best checkpoint;
* writes checkpoints, logs and progress on rank 0 only.

BatchNorm normalises each shard with its own statistics, as the paper's nn.DataParallel does on each
GPU; running statistics are rank 0's (DDP broadcasts them). So N processes match one process up to
that and to float summation order, not bitwise (tests/test_distributed.py states the tolerance).
SyncBatchNorm would remove the difference on GPUs but does not run on a CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

from rslad_kit import gpu
from rslad_kit.errors import UserError


@dataclass(frozen=True)
class Context:
    """This process's place in the group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    joined: bool = False   # `setup` started the process group (so `leave` ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun), before any setup."""
    return int(os.environ.get("RANK", "0"))


def check_gpus(device: torch.device) -> None:
    """Under torchrun on GPUs, each process on this machine needs a GPU of its own (NCCL cannot share
    one between ranks): refuse, before anything starts, more processes than GPUs."""
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    gpus = gpu.gpu_count()
    if device.type == "cuda" and processes > 1 and processes > gpus:
        raise UserError(f"torchrun started {processes} processes on this machine but it has {gpus} GPU(s), and each "
                        f"process needs its own; pass --nproc-per-node {max(gpus, 1)}, or --device cpu to train "
                        "on the CPU")


def setup(device: torch.device) -> tuple[Context, torch.device]:
    """Join torchrun's process group if launched by it; returns the context and this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(launched_rank(), world_size, local_rank, joined), device


def leave(ctx: Context) -> None:
    """End the process group `setup` started, once every rank has finished its work: a rank that
    exits while another still talks to it can make the other fail."""
    if ctx.joined:
        dist.barrier()
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: Context, device: torch.device) -> nn.Module:
    """The model whose backward averages gradients over ranks (the model itself when not distributed)."""
    if not ctx.active:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP: attacks and evaluation run on it, without gradient sync."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def shard(batches: Iterator[tuple[Tensor, Tensor]], ctx: Context) -> Iterator[tuple[Tensor, Tensor]]:
    """This rank's contiguous share of each global batch."""
    for x, y in batches:
        yield shard_split(x, ctx), shard_split(y, ctx)


def check_batches(n: int, batch_size: int, ctx: Context) -> None:
    """Every rank needs images in every batch, the epoch's last, smaller one included."""
    last = n % batch_size or batch_size
    if ctx.active and (batch_size < ctx.world_size or last < ctx.world_size):
        raise UserError(f"with {ctx.world_size} processes every batch needs at least {ctx.world_size} images, "
                        f"but the epoch's last batch has {last}; choose another batch_size")


def shard_split(x: Tensor, ctx: Context) -> Tensor:
    return x.tensor_split(ctx.world_size)[ctx.rank] if ctx.active else x


def sum_over_ranks(t: Tensor, ctx: Context) -> Tensor:
    """`t` summed over ranks (`t` itself when not distributed)."""
    if ctx.active:
        dist.all_reduce(t)
    return t


def total(values: dict[str, float], ctx: Context, device: torch.device) -> dict[str, float]:
    """`values` summed over ranks (per-key)."""
    if not ctx.active or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    return dict(zip(keys, sum_over_ranks(t, ctx).tolist()))


def seed_offset(ctx: Context) -> int:
    """Added to each epoch's seed, so ranks draw different random starts for their shards."""
    return 7_919 * ctx.rank


def pooled_accuracy(row: dict, names: list[str], n: int, ctx: Context, device: torch.device) -> dict[str, float]:
    """Accuracies (%) over every rank's shard, from each rank's accuracy on its own `n` examples."""
    if not ctx.active:
        return {name: row[name] for name in names}
    sums = total({name: row[name] * n for name in names} | {"n": n}, ctx, device)
    return {name: round(sums[name] / sums["n"], 2) for name in names}
