"""`rslad-kit reproduce`: the paper's tables from one command.

A plan is a set of training runs (teachers, surrogate, students, ablations, soft-label variants) and
evaluations, each a task with the tasks it needs. Tasks run on a few worker processes (one thread
each: on a small CPU that is the fastest way to train many small models) or in this process. Every
task leaves its result on disk under `results/<preset>/`, so a rerun skips finished work and resumes
interrupted runs. The plan itself (runs, rows, evaluations) is `plan.py`; `report.py` writes Tables 2-7
from it, beside the paper's numbers.

Run names: `teacher`, `teacher-natural`, `surrogate`, and `<student>-<row>-s<seed>` for students, where
a row is a method, a Table 6 variant or a Table 7 soft-label variant.
"""

from __future__ import annotations

import ctypes
import faulthandler
import functools
import json
import math
import multiprocessing
import os
import shutil
import signal
import sys
import time
import traceback
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from rslad_kit import data as data_lib
from rslad_kit import evaluate as evaluate_lib
from rslad_kit import gpu, loading, models, runs, train
from rslad_kit import report
from rslad_kit.config import PRESETS, SHIPPED_TEACHERS, TrainConfig, override, preset, to_dict
from rslad_kit.errors import UserError, did_you_mean, one_line_warning
from rslad_kit.losses import METHODS, attack_objective
from rslad_kit.plan import (ABLATIONS, BLACK_BOX, CHECKS, PAPER_ATTACKS, PAPER_METHODS, SLOW_ATTACKS,
                            SOFT_LABEL_ATTACKS, Plan, Schedule, Task, waves)

def _student_cfg(p: str, row: str, student: str, seed: int, teacher: str) -> TrainConfig:
    """The config of one Table 3/6/7 row."""
    if row in ABLATIONS:   # RSLAD's schedule, one method's loss and the other's attack
        outer, inner = ABLATIONS[row]
        cfg = replace(preset(p, "rslad"), method=outer, loss_params=preset(p, outer).loss_params,
                      attack=preset(p, inner).attack, objective=METHODS[inner].attack if outer != inner else None)
        return override(cfg, model=student, seed=seed, teacher=teacher)
    if row.endswith("-ssl"):
        return preset(p, row[:-4], model=student, seed=seed, teacher=None, soft_labels="smooth")
    if row.endswith("-nsl"):
        return preset(p, row[:-4], model=student, seed=seed, teacher="teacher-natural")
    return preset(p, row, model=student, seed=seed, teacher=teacher if METHODS[row].needs_teacher else None)


def build_plan(p: str, out: str | Path = "results", *, seeds: int | None = None,
               tables: tuple[int, ...] | None = None, methods: tuple[str, ...] | None = None,
               full: bool = False, retrain_teachers: bool = False, **overrides: Any) -> Plan:
    """The runs and evaluations behind the tables of preset `p`.

    `methods` defaults to every entry of METHODS, so a method registered by the user appears in every
    table. `full` lifts the preset's CPU budget (every seed and checkpoint gets every attack).
    `retrain_teachers` trains a shipped teacher by its recipe instead of reading the shipped file.
    `overrides` apply to every run (e.g. data_root, device).
    """
    if p not in PRESETS or PRESETS[p].plan is None:
        known = [name for name, pr in PRESETS.items() if pr.plan is not None]
        raise UserError(f"unknown preset {p!r} for reproduce; {did_you_mean(p, known)}choose from {', '.join(known)}")
    pc = PRESETS[p].plan
    if tables:
        pc = replace(pc, tables=tuple(tables))
    if retrain_teachers and isinstance(pc.teacher, str) and pc.teacher.startswith("shipped:"):
        pc = replace(pc, teacher=shipped_recipe(pc.teacher.partition(":")[2])[1])
    if full:
        pc = replace(pc, ablation_seeds=None, soft_label_seeds=None, slow_attack_seeds=None,
                     slow_attack_checkpoints=("best", "last"))
    base = preset(p, "rslad", **overrides)
    plan = Plan(preset=p, out=Path(out) / p, plan=pc, dataset=base.dataset, eps=base.attack.eps,
                methods=tuple(methods or METHODS), seeds=tuple(range(seeds or pc.seeds)),
                teacher_spec=pc.teacher if isinstance(pc.teacher, str) else "teacher", base=base)
    unknown = [m for m in plan.methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method {unknown[0]!r}; {did_you_mean(unknown[0], METHODS)}choose from "
                        f"{', '.join(METHODS)}")

    # --- helper models: the robust teacher, the natural teacher (NSL) and the surrogate (Table 5)
    if not isinstance(pc.teacher, str):
        plan.runs["teacher"] = override(preset(p, pc.teacher["method"], **overrides), **pc.teacher)
        # Figure 2's ceiling: how alike two teachers' maps are when only the seed differs
        plan.runs["teacher-reseeded"] = replace(plan.runs["teacher"], seed=20_000)
    plan.need("teacher", "best", CHECKS)   # a zoo teacher is evaluated from its file
    if 7 in pc.tables:
        plan.runs["teacher-natural"] = override(preset(p, "natural", **overrides), **pc.natural_teacher)
        plan.need("teacher-natural", "best", PAPER_ATTACKS)
    if 5 in pc.tables:
        plan.runs["surrogate"] = override(preset(p, pc.surrogate["method"], **overrides), **pc.surrogate,
                                          seed=10_000)   # its own seed: a different model from any student
        plan.need("surrogate", "best", tuple(a for a in PAPER_ATTACKS if a not in SLOW_ATTACKS))

    def add_row(table: int, student: str, row: str, seed: int, ckpts: dict[str, tuple[str, ...]],
                new_runs: bool = True) -> None:
        cfg = override(_student_cfg(p, row, student, seed, plan.teacher_spec), **overrides)
        if not new_runs and cfg not in plan.runs.values():
            return   # outside the ablation budget, a variant row only reuses runs trained anyway
        run = plan.add_run(f"{student}-{row}-s{seed}", cfg)
        plan.rows.setdefault((table, student, row), []).append(run)
        for ckpt, attacks in ckpts.items():
            plan.need(run, ckpt, plan.attacks_for(attacks, seed, ckpt))

    white_box_table = 4 if plan.dataset == "cifar100" else 3
    # Table 7 swaps RSLAD's soft labels (and those of any added method that reads them).
    distilling = [m for m in plan.methods if m == "rslad"
                  or (m not in PAPER_METHODS and "t_nat" in METHODS[m].inputs)]
    for student in pc.students:
        for seed in plan.seeds:
            if white_box_table in pc.tables:
                for m in plan.methods:
                    add_row(white_box_table, student, m, seed, {"best": CHECKS, "last": PAPER_ATTACKS})
            if 5 in pc.tables:
                for m in plan.methods:
                    if METHODS[m].attack != "none":
                        add_row(5, student, m, seed, {"best": BLACK_BOX})
            if student != pc.students[0]:
                continue   # the paper ablates its first student only
            if 6 in pc.tables:
                extra = [m for m in plan.methods if m not in PAPER_METHODS]
                for row in (*ABLATIONS, *extra):
                    add_row(6, student, row, seed, {"best": PAPER_ATTACKS},
                            new_runs=seed < (pc.ablation_seeds or len(plan.seeds)))
            if 7 in pc.tables:
                for m in distilling:
                    for row in (f"{m}-ssl", f"{m}-nsl", m):
                        add_row(7, student, row, seed, {"best": SOFT_LABEL_ATTACKS, "last": SOFT_LABEL_ATTACKS},
                                new_runs=seed < (pc.soft_label_seeds or len(plan.seeds)))
    return plan


# --- execution -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def _dataset(name: str, root: str, val_size: int | None, image_size: int | None,
             train_size: int | None) -> data_lib.Dataset:
    return data_lib.load(name, root, val_size=val_size, image_size=image_size, train_size=train_size)


def _dataset_for(cfg: TrainConfig) -> data_lib.Dataset:
    """The dataset `cfg` trains on (cached: the runs of a plan share one copy)."""
    return _dataset(cfg.dataset, cfg.data_root, cfg.val_size, cfg.image_size, cfg.train_size)


def _spec(plan: Plan, run: str, ckpt: str) -> str | Path:
    """What names a run's checkpoint `ckpt` ("best", "last") for loading.load_model."""
    if run == "teacher" and run not in plan.runs:   # a zoo or shipped teacher, read from its file
        return plan.teacher_spec
    if run in plan.zoo:   # a RobustBench teacher under another run name (the teacher study's ladder)
        return plan.zoo[run]
    return plan.run_dir(run) / f"{ckpt}.pt"


def load_for_eval(plan: Plan, run: str, ckpt: str, device: torch.device) -> torch.nn.Module:
    """A run's checkpoint `ckpt` ("best", "last"), or a zoo or shipped teacher from its file, in eval mode."""
    return loading.load_model(_spec(plan, run, ckpt), dataset=plan.dataset, model_dir=plan.base.model_dir).to(device)


def checkpoint_file(plan: Plan, run: str, ckpt: str) -> Path:
    """The file behind `load_for_eval(plan, run, ckpt)`."""
    return loading.checkpoint_path(_spec(plan, run, ckpt), dataset=plan.dataset, model_dir=plan.base.model_dir)


def _check_unchanged(recorded: str | None, path: Path, where: Path) -> str | None:
    """The file's SHA-256, after checking it against the one recorded in `where` (if any); None for a
    zoo file not downloaded yet."""
    if not path.is_file():
        if recorded:
            raise UserError(f"{path} is missing but {where} was computed from it; restore the file, or delete "
                            f"{where} to redo that work")
        return None
    current = runs.sha256(path)
    if recorded and recorded != current:
        raise UserError(f"{path} changed since {where} used it (sha256 {recorded[:12]}... then, {current[:12]}... "
                        f"now), so its results are not mixed into the tables; delete {where} to redo that work "
                        "with the new file, or restore the old file")
    return current


def run_task(task: Task, plan: Plan, position: int = 0, progress: bool = True) -> None:
    """Do one task, unless its result is already on disk."""
    device = gpu.resolve_device(plan.base.device)
    if task.kind == "train":
        out = plan.run_dir(task.name)
        if runs.is_finished(out):
            recorded = runs.checkpoint_info(out / "last.pt")["meta"].get("teacher_sha256")
            if recorded:   # a finished student still matches its teacher's file
                _check_unchanged(recorded, loading.teacher_path(task.cfg, beside=out.parent), out / "last.pt")
            return
        cfg = task.cfg
        ds = _dataset_for(cfg)
        train.train(cfg, out, resume=(out / "last.pt").is_file(), dataset=ds, progress=progress, position=position)
        return

    run = task.name.removeprefix("eval:")
    path = plan.eval_file(run)
    done = json.loads(path.read_text()) if path.is_file() else {}
    sums = {ckpt: _check_unchanged(done.get(ckpt, {}).get("sha256"), checkpoint_file(plan, run, ckpt), path)
            for ckpt in task.checkpoints}
    if plan.is_done(task):
        return
    cfg = plan.runs.get(run) or plan.base
    ds = _dataset_for(cfg)
    surrogate = None
    if any(a.startswith("transfer") for attacks in task.checkpoints.values() for a in attacks):
        surrogate = load_for_eval(plan, "surrogate", "best", device)
    by_epoch: dict[int, dict] = {}
    for ckpt, attacks in task.checkpoints.items():
        model = load_for_eval(plan, run, ckpt, device)
        epoch = _epoch(plan, run, ckpt)
        missing = [a for a in attacks if a not in done.get(ckpt, {})]
        # best.pt and last.pt are often the same epoch: evaluate once.
        cached = {a: v for a, v in by_epoch.get(epoch, {}).items() if a in missing}
        todo = [a for a in missing if a not in cached]
        # AutoAttack keeps its progress in a state file, so an interrupted evaluation resumes.
        state = plan.evals_dir / f".{run}.{ckpt}.e{epoch}.autoattack-state.pt"
        state.parent.mkdir(parents=True, exist_ok=True)
        row = evaluate_lib.evaluate_checkpoint(
            model, checkpoint_file(plan, run, ckpt), ds.test, todo, eps=plan.eps, device=device, config=to_dict(cfg),
            seed=cfg.seed, surrogate=surrogate, autoattack_state=state, autoattack_only=plan.plan.autoattack,
            square_queries=plan.plan.square_queries) if todo else {}
        state.unlink(missing_ok=True)
        scores = cached | {a: row[a] for a in todo}
        by_epoch.setdefault(epoch, {}).update(scores)
        entry = done.setdefault(ckpt, {})
        entry.update(scores)
        entry["epoch"] = epoch
        entry["sha256"] = sums[ckpt] or runs.sha256(checkpoint_file(plan, run, ckpt))   # read above
        entry.setdefault("seconds", {}).update(row.get("seconds", {}))
        entry["warnings"] = sorted(set(entry.get("warnings", [])) | set(row.get("warnings", [])))
    done["provenance"] = ({"n": len(ds.test), "eps": plan.eps, "preset": plan.preset}
                          | evaluate_lib.computed_from(ds.test, device, to_dict(cfg), cfg.seed))
    runs.write_text(path, json.dumps(done, indent=1))


def _epoch(plan: Plan, run: str, ckpt: str) -> int | None:
    path = plan.run_dir(run) / f"{ckpt}.pt"
    return runs.checkpoint_info(path)["epoch"] if path.is_file() else None


_SLOT = 0  # this worker process's line for its progress bar (set once per worker)


def _worker_init(lock, counter, gpus: int = 0) -> None:
    global _SLOT
    if sys.platform == "linux":   # PR_SET_PDEATHSIG: die with the parent, so a killed plan leaves no writer
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
        if os.getppid() == 1:
            os._exit(1)
    torch.set_num_threads(1)
    tqdm.set_lock(lock)
    warnings.showwarning = one_line_warning   # as in the main process: one line above the bars
    with counter.get_lock():
        counter.value += 1
        _SLOT = counter.value
    gpu.pin_worker(_SLOT, gpus)   # several GPUs: workers spread over them, round robin


def _run_in_worker(task: Task, plan: Plan, progress: bool) -> str:
    with task_log(plan, task) as log:
        faulthandler.enable(log)   # a crash in C code (or a kill from a timeout) still leaves a trace
        run_task(task, plan, position=_SLOT, progress=progress)
    return task.name


def log_path(plan: Plan, task: Task) -> Path:
    return plan.out / "logs" / f"{task.name.replace(':', '-')}.log"


@contextmanager
def task_log(plan: Plan, task: Task):
    """Append when a task starts and ends, and any error's traceback, to the task's log file."""
    path = log_path(plan, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} start {task.name} (pid {os.getpid()})\n")
        try:
            yield log
        except BaseException:
            log.write(traceback.format_exc())
            raise
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} done {task.name}\n")


def _critical_path(tasks: list[Task]) -> dict[str, float]:
    """Each task's cost plus the longest chain of tasks waiting on it: run the long chains first."""
    waiting = {t.name: [u.name for u in tasks if t.name in u.needs] for t in tasks}
    length: dict[str, float] = {}
    for wave in reversed(waves(tasks)):   # a task's waiting tasks lie in later waves (a cycle raises)
        for t in wave:
            length[t.name] = t.cost + max((length[u] for u in waiting[t.name]), default=0.0)
    return length


def execute(plan: Plan, workers: int, progress: bool = True, gpus: int = 0) -> None:
    """Run every task in dependency order on `workers` processes (1: in this process)."""
    tasks = plan.tasks()
    priority = _critical_path(tasks)
    tasks.sort(key=lambda t: -priority[t.name])
    bar = tqdm(total=len(tasks), desc=f"reproduce {plan.preset}", disable=not progress, position=0,
               dynamic_ncols=True)
    schedule = Schedule(tasks)
    if workers <= 1:
        while schedule.pending:
            task = schedule.ready()[0]
            schedule.start(task)
            bar.set_postfix_str(task.name)
            with task_log(plan, task):
                run_task(task, plan, position=1, progress=progress)
            schedule.finish(task)
            bar.update()
        bar.close()
        return

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                             initargs=(context.RLock(), context.Value("i", 0), gpus)) as pool:
        running: dict[Future, Task] = {}
        try:
            while schedule.pending or running:
                for task in schedule.ready()[: workers - len(running)]:
                    schedule.start(task)
                    running[pool.submit(_run_in_worker, task, plan, progress)] = task
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    task = running.pop(future)
                    try:
                        future.result()   # re-raises a worker's error here
                    except BrokenProcessPool:
                        lost = ", ".join(f"{t.name} (log: {log_path(plan, t)})" for t in (task, *running.values()))
                        raise UserError(f"a worker process died (killed, or out of memory) while running {lost}; "
                                        "rerun the same command to resume") from None
                    schedule.finish(task)
                    bar.update()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    bar.close()


def default_workers(plan: Plan) -> int:
    """One worker per core on a CPU; one on a GPU. Methods defined outside the package (in a
    notebook or test) exist only in this process, so such plans run here."""
    if gpu.resolve_device(plan.base.device).type == "cuda":
        return 1
    if any(not METHODS[m].loss.__module__.startswith("rslad_kit") for m in plan.methods):
        return 1
    return max(1, min(gpu.available_cores(), 8))


def gpu_workers(plan: Plan, workers_per_gpu: int) -> tuple[int, int]:
    """(workers, GPUs) for `workers_per_gpu` tasks at once on every visible GPU, each its own process;
    prints whether NVIDIA MPS is running."""
    if workers_per_gpu < 1:
        raise UserError(f"--workers-per-gpu {workers_per_gpu}; pass a whole number >= 1")
    gpus = gpu.gpu_count()
    if gpus == 0 or gpu.resolve_device(plan.base.device).type != "cuda":
        raise UserError("--workers-per-gpu needs CUDA devices; on a CPU, the plan runs one worker per core")
    print(gpu.mps_note(workers_per_gpu))
    return workers_per_gpu * gpus, gpus


def describe(plan: Plan) -> str:
    """The plan in words, with its estimated cost."""
    tasks = plan.tasks()
    n_train = sum(t.kind == "train" for t in tasks)
    lines = [f"plan '{plan.preset}': {n_train} training runs, {len(tasks) - n_train} evaluations, "
             f"tables {', '.join(map(str, plan.plan.tables))}, seeds {len(plan.seeds)}, eps {plan.eps:.4g}",
             f"results in {plan.out}"]
    for name, cfg in plan.runs.items():
        state = "done" if runs.is_finished(plan.run_dir(name)) else "to do"
        lines.append(f"  train {name:<34} {cfg.method:>8} {cfg.model:>12} {cfg.epochs:>4} epochs  [{state}]")
    return "\n".join(lines)


def run(p: str = "classroom", *, out: str | Path = "results", dry_run: bool = False, seeds: int | None = None,
        workers: int | None = None, progress: bool = True, tables: tuple[int, ...] | None = None,
        full: bool = False, methods: tuple[str, ...] | None = None, allow_mixed: bool = False,
        workers_per_gpu: int | None = None, retrain_teachers: bool = False, **overrides: Any) -> Path:
    """Build, run and report the plan of preset `p`; returns the results folder.

    One `reproduce` at a time writes a results folder (a second one stops with a line saying so), and
    results computed on other data or at another eps are not added to a folder's tables unless
    `allow_mixed` (see check_results_folder). `workers_per_gpu` runs that many tasks at once on every
    GPU, each in its own process.
    """
    plan = build_plan(p, out, seeds=seeds, tables=tables, methods=methods, full=full,
                      retrain_teachers=retrain_teachers, **overrides)
    gpus = 0
    if workers_per_gpu is not None:
        workers, gpus = gpu_workers(plan, workers_per_gpu)
    workers = workers or default_workers(plan)
    if dry_run:
        print(describe(plan))
        print(estimate_seconds(plan, workers))
        return plan.out
    started = time.perf_counter()
    with runs.lock(plan.out, "reproduce"):
        check_results_folder(plan, allow_mixed)
        execute(plan, workers, progress, gpus)
        report.write(plan, seconds=time.perf_counter() - started)
    return plan.out


def check_results_folder(plan: Plan, allow_mixed: bool = False) -> None:
    """Record what the folder's results are computed on (plan.json), and refuse to add results for
    another preset, dataset, eps or data (a changed --data-root, an edited CIFAR copy) to them."""
    cfg = plan.base
    ds = _dataset_for(cfg)
    now = {"preset": plan.preset, "dataset": plan.dataset, "eps": plan.eps,
           "data_sha256": runs.data_checksum(ds.train, ds.val, ds.test)}
    path = plan.out / "plan.json"
    before = json.loads(path.read_text()) if path.is_file() else {}
    differ = [key for key in now if key in before and before[key] != now[key]]
    if differ and not allow_mixed:
        changes = ", ".join(f"{key} {str(before[key])[:12]} there, {str(now[key])[:12]} now" for key in differ)
        raise UserError(f"{plan.out} holds results for other settings ({changes}); choose another --out, or "
                        "pass --allow-mixed to add to them anyway")
    if differ:
        now["mixed_with"] = before.get("mixed_with", []) + [{k: v for k, v in before.items() if k != "mixed_with"}]
    runs.write_text(path, json.dumps(now, indent=1))


def estimate_seconds(plan: Plan, workers: int) -> str:
    """A rough estimate from one timed forward-backward pass of each architecture on this machine, on
    random images of the dataset's shape: it reads no data and downloads nothing."""
    base = plan.base
    n_train, n_val, channels, side, classes = data_lib.shape(base.dataset, val_size=base.val_size,
                                                             image_size=base.image_size, train_size=base.train_size)
    per_pass: dict[tuple[str, int], float] = {}
    core_seconds = 0.0
    for cfg in plan.runs.values():
        key = (cfg.model, cfg.batch_size)
        if key not in per_pass:
            per_pass[key] = _time_pass(cfg.model, cfg.batch_size, channels, side, classes)
        attack = cfg.attack.steps if attack_objective(cfg) != "none" else 0
        steps = math.ceil(n_train / cfg.batch_size) * (attack + 2)       # attack + outer forwards
        validation = math.ceil(n_val / cfg.batch_size) * 21              # clean + PGD-20
        core_seconds += cfg.epochs * (steps + validation) * per_pass[key]
    slow = {a: sum(a in attacks for ckpts in plan.evaluations.values() for attacks in ckpts.values())
            for a in SLOW_ATTACKS}
    return (f"estimated training: {core_seconds / 60:.1f} min of one core, so about "
            f"{core_seconds / 60 / workers:.1f} min on {workers} worker(s) if they do not slow each other "
            f"(two processes on a 2-core CPU each run about 1.4x slower). Evaluation adds {slow['autoattack']} "
            f"AutoAttack and {slow['square']} Square runs; on a CPU each costs about 15-25 s and 8-13 s for a "
            "small model (benchmarks/README.md), more for large ones.")


def _time_pass(model_name: str, batch_size: int, channels: int, side: int, classes: int) -> float:
    """Seconds of one forward-backward pass at `batch_size`, timed on a few random images and scaled."""
    model = models.build(model_name, classes, in_channels=channels)
    n = min(batch_size, 16 if side > 8 else batch_size)   # big models: time a small batch
    x = torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(0))
    model(x).sum().backward()   # warm-up
    start = time.perf_counter()
    for _ in range(2):
        model(x).sum().backward()
    return (time.perf_counter() - start) / 2 * batch_size / n


# --- teachers shipped with the kit -----------------------------------------------------------------

def shipped_recipe(name: str) -> tuple[str, dict[str, Any]]:
    """(preset, recipe) of shipped teacher `name` (config.SHIPPED_TEACHERS)."""
    if name not in SHIPPED_TEACHERS:
        raise UserError(f"no shipped teacher {name!r}; choose from {', '.join(SHIPPED_TEACHERS)}")
    return SHIPPED_TEACHERS[name]


def teacher_file(name: str, run: Path, dest: Path) -> Path:
    """Write shipped teacher `name`'s file from its training run: the best checkpoint's weights and the
    recipe's config, nothing that depends on the machine or the time, so a retrained teacher has the
    same SHA-256 as the shipped one exactly when its weights are the same bits."""
    p, recipe = shipped_recipe(name)
    best = models.read_checkpoint(run / "best.pt")
    meta = {k: best["meta"][k] for k in ("num_classes", "in_channels", "data_sha256")}
    runs.save({"model": best["model"], "epoch": best["epoch"],
               "meta": meta | {"config": to_dict(preset(p, **recipe, seed=0, teacher=None))}}, dest)
    return dest


def retrain_teacher(name: str, out: str | Path = "results/teachers", *, ship: bool = False, progress: bool = True,
                    data_root: str = "data") -> tuple[Path, bool | None]:
    """Train shipped teacher `name` by its recipe into `out/name` (resuming), write its file `out/name.pt`,
    and say whether it is bit for bit the shipped file (None when none is shipped yet). `ship` copies
    it into rslad_kit/teachers/ with its record (SHA-256, config, command, provenance)."""
    p, recipe = shipped_recipe(name)
    cfg = preset(p, **recipe, seed=0, teacher=None, data_root=data_root)
    run = Path(out) / name
    train.train(cfg, run, resume=(run / "last.pt").is_file(), progress=progress)
    file = teacher_file(name, run, Path(out) / f"{name}.pt")
    digest = runs.sha256(file)
    shipped = models.SHIPPED / f"{name}.json"
    same = json.loads(shipped.read_text())["sha256"] == digest if shipped.is_file() else None
    if ship:
        ship_teacher(name, run, file)
    return file, same


def ship_teacher(name: str, run: Path, file: Path) -> None:
    """Copy teacher file `file` (trained in `run`) into rslad_kit/teachers/ with its record."""
    last = models.read_checkpoint(run / "last.pt")
    best = models.read_checkpoint(run / "best.pt")
    keep = ("kit_version", "git_commit", "torch_version", "device", "threads")
    record = {"name": name, "sha256": runs.sha256(file), "command": f"rslad-kit --threads 1 teacher {name}",
              "config": models.read_checkpoint(file)["meta"]["config"], "best_epoch": best["epoch"],
              "validation": {k: v for k, v in best["metrics"].items() if k.startswith("val_")},
              "train_seconds": round(sum(h["seconds"] for h in last["history"]), 1),
              "trained_with": {k: v for k, v in last["meta"].items() if k in keep}}
    models.SHIPPED.mkdir(exist_ok=True)
    runs.atomic_write(models.SHIPPED / file.name, lambda tmp: shutil.copyfile(file, tmp))
    runs.write_text(models.SHIPPED / f"{name}.json", json.dumps(record, indent=1) + "\n")
