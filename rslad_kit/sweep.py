"""`rslad-kit sweep`: a plan's tasks as submitit jobs, on this machine or on a Slurm cluster.

The plan is a `reproduce` preset's (`--study reproduce`, the tables) or a teacher ladder's
(`--study teacher`, Figure 4). Its tasks and how each runs and resumes are `reproduce`'s (Plan.tasks,
run_task); submitit only decides where a task runs. Tasks go out in waves: a wave holds the tasks
whose prerequisites (the teachers, the surrogate) are done, so students wait for their teacher.
Tasks whose results are on disk are not submitted again.

Each job is `Job()(task, plan)`, a `submitit.helpers.Checkpointable`: when Slurm preempts it or its
time limit comes, submitit requeues the same call, and `run_task` resumes the run from its last.pt
(and AutoAttack from its state file). Example, one GPU per job on partition `gpu`:

    rslad-kit sweep --preset cifar10 --executor slurm --partition gpu --timeout-min 1440 --parallel 16

`--executor local` runs the same jobs as processes here (at most `--parallel` at a time), each on one
of the visible GPUs, round robin (on the CPU where there is none, or with `--gpus-per-job 0`); logs of
every job are under `<out>/<preset>/submitit/`.
"""

from __future__ import annotations

import shlex
import shutil
import time
from pathlib import Path
from typing import Any

import submitit
import torch
from tqdm.auto import tqdm

from rslad_kit import gpu, report, runs, teacher_study
from rslad_kit.errors import UserError
from rslad_kit.plan import Plan, Task, waves
from rslad_kit.reproduce import build_plan, check_results_folder, run_task

EXECUTORS = ("local", "slurm", "debug")   # debug: in this process, for stepping through a job
STUDIES = ("reproduce", "teacher")


class Job(submitit.helpers.Checkpointable):
    """One plan task as a submitit job; `checkpoint` (inherited) requeues the same call on preemption."""

    def __call__(self, task: Task, plan: Plan, threads: int = 1) -> str:
        torch.set_num_threads(threads)
        run_task(task, plan, progress=False)
        return task.name


def executor(kind: str, folder: Path, *, timeout_min: int, partition: str | None = None, gpus: int = 0,
             cpus: int = 1, parallel: int = 4, **slurm: Any) -> submitit.AutoExecutor:
    """A submitit executor for `kind` (local, slurm, debug), writing its logs to `folder`."""
    if kind not in EXECUTORS:
        raise UserError(f"unknown executor {kind!r}; choose from {', '.join(EXECUTORS)}")
    if kind == "slurm" and shutil.which("srun") is None:
        raise UserError("--executor slurm: no Slurm here (srun not found); "
                        "run on the cluster's login node, or use --executor local")
    ex = submitit.AutoExecutor(folder=folder, cluster=kind)
    ex.update_parameters(timeout_min=timeout_min, gpus_per_node=gpus, cpus_per_task=cpus, name="rslad-kit")
    if kind == "slurm":
        ex.update_parameters(slurm_partition=partition, slurm_array_parallelism=parallel,
                             **{f"slurm_{k}": v for k, v in slurm.items()})
    return ex


def local_gpus(gpus_per_job: int | None) -> list[str]:
    """The GPUs the local executor spreads its jobs over, one GPU per job (a run trains on one): every
    visible GPU by default, none with `gpus_per_job=0` (the jobs then train on the CPU)."""
    visible = gpu.visible_gpus(gpu.gpu_count())
    if gpus_per_job is None:
        return visible
    if gpus_per_job > 1:
        raise UserError(f"--gpus-per-job {gpus_per_job}: a local job trains on one GPU; pass 1, or 0 for the CPU")
    if gpus_per_job == 1 and not visible:
        raise UserError("--gpus-per-job 1 but no GPU is visible here; drop it to train on the CPU")
    return visible if gpus_per_job == 1 else []


def start_on_gpu(ex: submitit.AutoExecutor, device: str) -> None:
    """Start the local executor's next job on GPU `device` (a name from gpu.visible_gpus). submitit's own
    `gpus_per_node` would give every job GPU 0 and ignore an inherited CUDA_VISIBLE_DEVICES."""
    ex.update_parameters(local_setup=[f"export CUDA_VISIBLE_DEVICES={shlex.quote(device)}"])


def dispatch(plan: Plan, ex: submitit.AutoExecutor, *, parallel: int = 4, threads: int = 1,
             progress: bool = True, devices: list[str] | None = None) -> list[str]:
    """Submit the plan's unfinished tasks wave by wave and wait for them; returns the submitted names.
    `devices`: the GPUs local jobs start on, round robin (`local_gpus`)."""
    submitted: list[str] = []
    todo = [t for t in plan.tasks() if not plan.is_done(t)]
    bar = tqdm(total=len(todo), desc=f"sweep {plan.preset}", disable=not progress, dynamic_ncols=True)
    for wave in waves(todo):
        # Slurm throttles an array itself; the local executor starts every job it is given at once.
        chunk = len(wave) if ex.cluster == "slurm" else max(1, parallel)
        for start in range(0, len(wave), chunk):
            part = wave[start:start + chunk]
            if devices:   # one job at a time: parameters cannot change inside a batch
                jobs = []
                for i, task in enumerate(part):
                    start_on_gpu(ex, devices[i % len(devices)])
                    jobs.append(ex.submit(Job(), task, plan, threads))
            else:
                with ex.batch():
                    jobs = [ex.submit(Job(), task, plan, threads) for task in part]
            for job, task in zip(jobs, part):
                job.result()   # re-raises the job's error, with its log path
                submitted.append(task.name)
                bar.update()
    bar.close()
    return submitted


def run(p: str, *, out: str | Path = "results", study: str = "reproduce", kind: str = "local",
        seeds: int | None = None, tables: tuple[int, ...] | None = None, full: bool = False,
        methods: tuple[str, ...] | None = None, timeout_min: int = 24 * 60, partition: str | None = None,
        gpus: int | None = None, parallel: int = 4, threads: int = 1, progress: bool = True,
        **overrides: Any) -> Path:
    """Build `study`'s plan for preset `p`, run its tasks through submitit, and write its report
    (the tables, or the teacher study's summary)."""
    if study not in STUDIES:
        raise UserError(f"unknown study {study!r}; choose from {', '.join(STUDIES)}")
    if study == "teacher":
        plan, lad = teacher_study.build_plan(p, out, seeds=seeds, **overrides)
    else:
        plan = build_plan(p, out, seeds=seeds, tables=tables, methods=methods, full=full, **overrides)
    devices = local_gpus(gpus) if kind == "local" else []
    gpus = (1 if kind == "slurm" else 0) if gpus is None else gpus
    ex = executor(kind, plan.out / "submitit", timeout_min=timeout_min, partition=partition,
                  gpus=0 if kind == "local" else gpus, cpus=threads, parallel=parallel)   # local: `devices`
    started = time.perf_counter()
    with runs.lock(plan.out, "sweep"):   # the folder's one writer, on its own results, as for reproduce
        check_results_folder(plan)
        dispatch(plan, ex, parallel=parallel, threads=threads, progress=progress, devices=devices)
        if study == "teacher":
            teacher_study.write(plan, lad)
        else:
            report.write(plan, seconds=time.perf_counter() - started)
    return plan.out
