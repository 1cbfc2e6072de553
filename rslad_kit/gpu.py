"""Devices and process-wide GPU settings: naming a device, CPU cores, deterministic kernels, several
workers per GPU, and NVIDIA MPS.

What is exact without `deterministic`: on a CPU, everything (the loader and every epoch's randomness
are seeded from (seed, epoch), and CPU kernels do not race), so a resumed run is bitwise equal to an
uninterrupted one. On a GPU, the batches, augmentations and random starts are still the same, but
cuDNN picks convolution algorithms and some backward kernels add with atomics, so the weights drift
apart in the last bits after the first step and resume is equal only statistically. `deterministic`
makes the GPU path bitwise repeatable as well (measured cost: docs/benchmarks.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from rslad_kit.errors import UserError

CUBLAS_WORKSPACE = ":4096:8"   # cuBLAS needs a fixed workspace for deterministic GEMMs (or ":16:8")
MPS_PIPE_DIR = Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"))


def resolve_device(name: str) -> torch.device:
    """The device a config's `device` names; "auto" is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def available_cores() -> int:
    """CPU cores this process may use (macOS has no sched_getaffinity)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_deterministic(on: bool) -> None:
    """Deterministic kernels on, or off with cuDNN's autotuner on (the fastest kernels), for this whole process.

    cuBLAS reads CUBLAS_WORKSPACE_CONFIG when CUDA starts: it is set here if CUDA has not started yet,
    else it must already be in the environment (export it before launching Python).
    """
    if on and not os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
        if torch.cuda.is_initialized():
            raise UserError("deterministic=True needs CUBLAS_WORKSPACE_CONFIG set before CUDA starts; "
                            f"export CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE} and rerun")
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    # cuDNN's autotuner times several algorithms per input shape and keeps the fastest, which pays in
    # training (a few fixed shapes) but may pick differently from run to run: off only when deterministic.
    torch.backends.cudnn.benchmark = not on
    torch.backends.cudnn.deterministic = on
    # warn_only: an op without a deterministic CUDA kernel warns (naming itself) instead of stopping
    # a long run; the kit's models and losses use none (tests/test_gpu.py checks resume on a GPU).
    torch.use_deterministic_algorithms(on, warn_only=True)


# --- several workers per GPU ----------------------------------------------------------------------

def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def visible_gpus(count: int) -> list[str]:
    """The names of the first `count` GPUs this process sees, as CUDA_VISIBLE_DEVICES names them.

    A scheduler or a shared node may already have narrowed them down (Slurm's "3,5", a list of MIG
    UUIDs): a process given one of them must be given that name, since index 0 means the first
    *physical* GPU to a process that no longer inherits the list. Without the variable: "0".."count-1".
    """
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    if inherited is None:
        return [str(i) for i in range(count)]
    return [name.strip() for name in inherited.split(",")][:count]   # CUDA ignores names past the GPUs it found


def pin_worker(slot: int, gpus: int) -> None:
    """Give worker number `slot` (1-based) one of the `gpus` visible GPUs, round robin, before it starts CUDA."""
    if gpus > 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_gpus(gpus)[(slot - 1) % gpus]


def mps_running() -> bool:
    """Whether an NVIDIA MPS control daemon is up: its pipe folder holds a `control` pipe. (Process
    names cannot tell: Linux keeps 15 characters, too few for `nvidia-cuda-mps-control`.)"""
    return (MPS_PIPE_DIR / "control").exists()


def mps_note(workers_per_gpu: int) -> str:
    """One line on MPS for a run with `workers_per_gpu` processes on each GPU."""
    if mps_running():
        return f"NVIDIA MPS is running: the {workers_per_gpu} workers on each GPU share it concurrently"
    return (f"NVIDIA MPS is not running: {workers_per_gpu} workers per GPU time-slice; with 4 or more, start it "
            "with `nvidia-cuda-mps-control -d` (README: several runs per GPU)")
