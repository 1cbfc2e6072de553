"""Training: `train_step` (soft labels -> attack -> loss terms -> step) and `train` (epochs, schedule,
validation, best/last checkpoints, exact resume).

A run folder holds `config.json`, `last.pt` (everything needed to resume), `best.pt` (the weights
with the best validation score) and `metrics.jsonl` (one line per epoch). Checkpoints are written to
a temporary file and renamed (runs.py), so a kill at any moment leaves the previous checkpoint intact. Every
epoch's randomness is seeded from (seed, epoch), so a resumed run repeats exactly what an
uninterrupted one does: on a CPU the final weights are bitwise identical, and on a GPU too with
`deterministic=True` (rslad_kit/gpu.py says what differs without it). Under torchrun the same loop
trains data-parallel (rslad_kit/distributed.py); `cuda_graphs="attack"` or `"step"` replays the attack
or the whole step from CUDA graphs (rslad_kit/graphs.py).

Taught in notebooks/04_training.ipynb.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from rslad_kit import attacks as atk
from rslad_kit import data as data_lib
from rslad_kit import distributed as dist_lib
from rslad_kit import gpu, graphs, loading, models, runs
from rslad_kit.config import TrainConfig, from_dict, to_dict
from rslad_kit.errors import UserError, did_you_mean
from rslad_kit.evaluate import evaluate
from rslad_kit.losses import METHODS, OBJECTIVES, attack_objective, loads_teacher
from rslad_kit.runs import provenance, save, write_text
from rslad_kit.soft_labels import soft_labels

class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# --- one step --------------------------------------------------------------------------------------

def _eval_probs(model: nn.Module, x: Tensor) -> Tensor:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        probs = F.softmax(model(x), dim=1)
    model.train(was_training)
    return probs


def inner_objective(kind: str, student: nn.Module, x: Tensor, y: Tensor, t_nat: Tensor | None) -> atk.Objective:
    """The objective a method's attack maximises (losses.Objective)."""
    if kind == "ce":
        return atk.ce(y)
    if kind == "kl_self":      # TRADES: move away from the model's own clean prediction
        return atk.kl_to(_eval_probs(student, x))
    if kind == "kl_teacher":   # RSLAD: move away from the robust soft label; no y
        return atk.kl_to(F.softmax(t_nat, dim=1))
    raise ValueError(kind)


def loss_terms(
    student: nn.Module,
    teacher: nn.Module | None,
    x: Tensor,
    y: Tensor,
    cfg: TrainConfig,
    *,
    epoch: int = 1,
    num_classes: int | None = None,
    attack: graphs.Attack | None = None,
) -> dict[str, Tensor]:
    """The weighted loss terms of `cfg.method` on a batch (soft labels, attack, outer loss), not stepped.

    Leaves the student in train mode, as the outer minimisation runs. `student` may be wrapped in
    DistributedDataParallel: the attack runs on the module inside it. `attack(x, y, t_nat)` replaces
    the eager attack (graphs.GraphedPGD or graphs.capturable_attack, built by `make_graphs`). Taught
    in notebooks/03_table1_losses.ipynb, which prints these terms for every row of Table 1.
    """
    method = METHODS[cfg.method]
    objective = attack_objective(cfg)
    # inside a captured step, autocast's cache of bf16 weights must not outlive the capture
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.bf16,
                              cache_enabled=cfg.cuda_graphs != "step")

    # --- soft labels on the clean batch, computed once for the attack and the loss
    t_nat = None
    if "t_nat" in method.inputs or objective == "kl_teacher":
        with autocast:
            t_nat = soft_labels(cfg, teacher, x, y, num_classes or _num_classes(student, x))

    # --- inner maximisation
    x_adv = x
    if attack is not None and objective != "none":
        x_adv = attack(x, y, t_nat)
    elif objective != "none":
        a, core = cfg.attack, dist_lib.unwrap(student)
        with autocast:
            x_adv = atk.pgd(core, x, inner_objective(objective, core, x, y, t_nat), eps=a.eps,
                            step_size=a.step_size, steps=a.steps, random_start=a.random_start, bn_mode=a.bn_mode)

    # --- outer minimisation: the loss reads what its signature names
    student.train()
    with autocast:
        tensors: dict[str, Callable[[], Any]] = {
            "s_adv": lambda: student(x_adv),
            "s_nat": lambda: student(x),
            "t_nat": lambda: t_nat,
            "t_adv": lambda: _no_grad(teacher, x_adv),
            "y": lambda: y,
            "epoch": lambda: epoch,
        }
        inputs = {name: tensors[name]() for name in method.inputs}
        return method.loss(**inputs, **(method.defaults | dict(cfg.loss_params)))


def train_step(
    student: nn.Module,
    teacher: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    cfg: TrainConfig,
    *,
    epoch: int = 1,
    num_classes: int | None = None,
    attack: graphs.Attack | None = None,
    graph: graphs.GraphedStep | None = None,
) -> dict[str, Tensor]:
    """One optimisation step of `cfg.method` on a batch; returns the loss and its terms (detached 0-dim
    tensors on the batch's device).

    Nothing here waits for the device: reading a value (`.item()`) makes the host wait for the step to
    finish, so read them only when needed (`train` reads the sums every SYNC_EVERY steps, and stops a
    run whose loss is NaN or infinite there). `graph` (built by `make_graphs` for
    `cuda_graphs="step"`) replays the forwards and the backward, which leave the gradients in `.grad`;
    only the optimiser's step then runs eagerly. The graph holds its own student, teacher and attack,
    so with it those arguments go unread.
    """
    if graph is not None:
        terms = graph(x, y, epoch)
    else:
        terms = loss_terms(student, teacher, x, y, cfg, epoch=epoch, num_classes=num_classes, attack=attack)
    loss = sum(terms.values())
    if graph is None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    optimizer.step()
    return {"loss": loss.detach(), **{name: value.detach() for name, value in terms.items()}}


def _no_grad(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).float()


def _num_classes(model: nn.Module, x: Tensor) -> int:
    return _no_grad(model, x[:1]).shape[1]


# --- checks ----------------------------------------------------------------------------

def check_config(cfg: TrainConfig) -> None:
    """Raise UserError for names and values that cannot work, before anything is written."""
    if cfg.method not in METHODS:
        raise UserError(f"unknown method {cfg.method!r}; {did_you_mean(cfg.method, METHODS)}choose from "
                        f"{', '.join(METHODS)}")
    data_lib.check_name(cfg.dataset)
    models.check_name(cfg.model)
    method = METHODS[cfg.method]
    objective = attack_objective(cfg)
    if objective not in OBJECTIVES:
        raise UserError(f"unknown inner objective {objective!r}; choose from {', '.join(OBJECTIVES)}")
    unknown = sorted(set(cfg.loss_params) - set(method.defaults))
    if unknown:
        raise UserError(f"{cfg.method} has no loss parameter {unknown[0]!r}; its parameters: "
                        f"{', '.join(method.defaults) or 'none'}")
    if cfg.soft_labels not in ("teacher", "smooth"):
        raise UserError(f"unknown soft_labels {cfg.soft_labels!r}; use 'teacher' (RSL/NSL) or 'smooth' (SSL)")
    if loads_teacher(cfg) and not cfg.teacher:
        raise UserError(f"{cfg.method} distils from a teacher but none was given; pass --teacher "
                        "(a checkpoint, robustbench:<name> or a run folder)")
    atk.check_eps(cfg.attack.eps)
    if cfg.attack.random_start not in ("uniform", "normal", "none") or cfg.attack.bn_mode not in ("eval", "train"):
        raise UserError("attack.random_start must be uniform/normal/none and attack.bn_mode eval/train")
    if cfg.cuda_graphs not in ("off", "attack", "step"):
        raise UserError(f"cuda_graphs={cfg.cuda_graphs!r}; use 'off', 'attack' (the PGD) or 'step' (the whole step)")
    if cfg.select_by not in ("pgd_trades", "clean"):
        raise UserError(f"select_by must be 'pgd_trades' or 'clean' (got {cfg.select_by!r})")
    for name, value, lowest in (("epochs", cfg.epochs, 1), ("batch_size", cfg.batch_size, 1),
                                ("val_every", cfg.val_every, 1), ("attack.steps", cfg.attack.steps, 0)):
        if value < lowest:
            raise UserError(f"{name}={value}; pass a whole number >= {lowest} (e.g. --set {name}={max(lowest, 1)})")
    if cfg.attack.steps == 0 and objective != "none":
        raise UserError(f"attack.steps=0 but {cfg.method} trains on adversarial examples; pass attack.steps >= 1 "
                        "(--set attack.steps=10), or use method 'natural' for clean training")
    for name, value, example in (("lr", cfg.lr, 0.1), ("attack.step_size", cfg.attack.step_size, 0.0078)):
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"{name}={value}; pass a positive number (e.g. --set {name}={example})")
    for name, value in (("weight_decay", cfg.weight_decay), ("momentum", cfg.momentum)):
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"{name}={value}; pass a number >= 0 (e.g. --set {name}=0)")


# --- the loop ----------------------------------------------------------------------------------------

def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Step schedule: lr * gamma for every milestone already passed (milestones are 1-indexed epochs)."""
    return cfg.lr * cfg.lr_gamma ** sum(epoch > m for m in cfg.milestones)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


# Steps between reads of the loss sums on the host. A read makes the host wait for the device, so the
# GPU would idle between steps if it came every step; every 50 steps still stops a diverged run within
# seconds. Under torchrun the read is an all-reduce, so every rank sees a NaN on any rank at once.
SYNC_EVERY = 50


def _read_window(window: dict[str, Tensor], ctx: dist_lib.Context) -> dict[str, float]:
    """The sums of a window of steps, over all ranks, on the host (the window's one host sync)."""
    names = sorted(window)
    summed = dist_lib.sum_over_ranks(torch.stack([window[name] for name in names]), ctx)
    window.clear()
    return dict(zip(names, summed.tolist()))


def _check_finite(value: float, cfg: TrainConfig, epoch: int, last_saved: int, out: Path) -> None:
    if not math.isfinite(value):
        kept = f"the last good checkpoint (epoch {last_saved}) is kept in {out}" if last_saved else "nothing was saved"
        raise TrainingDiverged(f"the {cfg.method} loss became {value} at epoch {epoch}; {kept}; "
                               "lower --lr or check the teacher")


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True,
          dataset: data_lib.Dataset | None = None, position: int = 0,
          on_epoch: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Train `cfg` into the run folder `out`; returns the per-epoch metrics.

    `resume=True` continues the run in `out` from its last completed epoch. `dataset` lets callers
    that train many runs load the data once; `position` is the progress bar's line. `on_epoch` gets
    the metrics so far after each epoch is saved (the notebooks redraw live curves with it).
    """
    out = Path(out)
    # --- cheap checks first: names, values, the folder, the resume state; then data and models
    check_config(cfg)
    dist_lib.check_gpus(gpu.resolve_device(cfg.device))
    last_path = out / "last.pt"
    if resume and not last_path.is_file():
        raise UserError(f"--resume: no checkpoint in {out}; drop --resume to start a new run there")
    if not resume and last_path.is_file():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    runs.check_writable(out)
    state = None
    if resume:
        state = models.read_checkpoint(last_path)
        _check_same_config(state["meta"]["config"], cfg, out)
    # One writer per run folder; under torchrun, rank 0 is the writer.
    with runs.lock(out, "training run") if dist_lib.launched_rank() == 0 else contextlib.nullcontext():
        if not resume and last_path.is_file():   # another process started this run meanwhile
            raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        return _train(cfg, out, state, dataset, progress=progress, position=position, on_epoch=on_epoch)


def _train(cfg: TrainConfig, out: Path, state: dict | None, dataset: data_lib.Dataset | None, *,
           progress: bool, position: int,
           on_epoch: Callable[[list[dict[str, Any]]], None] | None) -> list[dict[str, Any]]:
    """The body of `train`, in the locked run folder `out`; `state` is the checkpoint to resume from."""
    last_path = out / "last.pt"
    gpu.set_deterministic(cfg.deterministic)
    ctx, device = dist_lib.setup(gpu.resolve_device(cfg.device))
    if cfg.cuda_graphs == "step" and ctx.active:
        raise UserError("cuda_graphs=step cannot record DistributedDataParallel's gradient all-reduce; "
                        "under torchrun use --set cuda_graphs=attack")
    if cfg.cuda_graphs != "off" and device.type != "cuda":
        raise UserError(f"cuda_graphs={cfg.cuda_graphs} needs a CUDA device (this run uses {device}); "
                        "drop --set cuda_graphs")
    ds = dataset or data_lib.for_config(cfg)
    if cfg.batch_size > len(ds.train):
        raise UserError(f"batch_size={cfg.batch_size} but {cfg.dataset} has {len(ds.train)} training examples; "
                        f"pass a smaller batch size (e.g. --set batch_size={min(128, len(ds.train))})")
    dist_lib.check_batches(len(ds.train), cfg.batch_size, ctx)
    atk.check_images(ds.train.x)   # once, not per step: crops and flips keep each batch inside its range
    meta = {"config": to_dict(cfg), "seed": cfg.seed, "num_classes": ds.num_classes,
            "in_channels": ds.in_channels, "data_sha256": runs.data_checksum(ds.train, ds.val)}
    teacher = None
    if loads_teacher(cfg):
        teacher = loading.load_teacher(cfg, ds, beside=out.parent).to(device)
        meta["teacher_sha256"] = runs.sha256(loading.teacher_path(cfg, beside=out.parent))
    if state is not None:
        _check_same_inputs(state["meta"], meta, out)
    meta |= provenance(device)
    torch.manual_seed(cfg.seed)
    student = models.build(cfg.model, ds.num_classes, in_channels=ds.in_channels).to(device)
    if cfg.channels_last:   # the teacher too: +10% images/s in bf16 on an H100 (docs/benchmarks.md)
        student = student.to(memory_format=torch.channels_last)
        teacher = teacher.to(memory_format=torch.channels_last) if teacher is not None else None
    optimizer = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)

    start, history, best = 0, [], {"epoch": 0, "score": -math.inf}
    if state is not None:
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history, best = state["epoch"], state["history"], state["best"]

    if ctx.is_main:
        write_text(out / "config.json", json.dumps(meta, indent=2))
        write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))

    model = dist_lib.wrap(student, ctx, device)   # `student` itself is what attacks, evaluation and files see
    attack, graph = make_graphs(cfg, student, teacher, ds.num_classes)
    train_split, val_split = ds.train.to(device), ds.val.to(device)
    val_shard = data_lib.Split(dist_lib.shard_split(val_split.x, ctx), dist_lib.shard_split(val_split.y, ctx))
    loader = data_lib.TensorLoader(train_split, cfg.batch_size, shuffle=True, augment=cfg.augment,
                                   padding=ds.crop_padding, flip=ds.flip, seed=cfg.seed)
    # closed on an error too, so the error's line starts on a clean line
    with tqdm(total=(cfg.epochs - start) * len(loader), desc=f"{cfg.method} {out.name}",
              disable=not (progress and ctx.is_main), leave=False, dynamic_ncols=True, position=position) as bar:
        for epoch in range(start + 1, cfg.epochs + 1):
            began = time.perf_counter()
            torch.manual_seed(_epoch_seed(cfg.seed, epoch) + dist_lib.seed_offset(ctx))
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, epoch)
            sums: dict[str, float] = defaultdict(float)   # the epoch's, over all ranks, on the host
            window: dict[str, Tensor] = {}                 # this rank's since the last read, on the device
            for i, (x, y) in enumerate(dist_lib.shard(loader.epoch(epoch), ctx), start=1):
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                terms = train_step(model, teacher, optimizer, x, y, cfg, epoch=epoch, num_classes=ds.num_classes,
                                   attack=attack, graph=graph)
                for name, value in terms.items():
                    window[name] = window.get(name, 0) + value.float() * len(y)
                if i % SYNC_EVERY == 0 or i == len(loader):
                    for name, value in _read_window(window, ctx).items():
                        _check_finite(value, cfg, epoch, start, out)
                        sums[name] += value
                bar.update()

            # --- validation on the held-out split; the paper selects checkpoints by PGD_TRADES
            record: dict[str, Any] = {"epoch": epoch, "lr": lr_at(cfg, epoch),
                                      **{k: v / len(train_split) for k, v in sums.items()}}
            if epoch % cfg.val_every == 0 or epoch == cfg.epochs:
                student.eval()
                row = evaluate(student, val_shard, ["clean", "pgd_trades"], eps=cfg.attack.eps, seed=cfg.seed)
                row = dist_lib.pooled_accuracy(row, ["clean", "pgd_trades"], len(val_shard), ctx, device)
                student.train()
                record |= {"val_clean": row["clean"], "val_pgd_trades": row["pgd_trades"]}
                score = row[cfg.select_by]
                if score > best["score"]:
                    best = {"epoch": epoch, "score": score}
                    if ctx.is_main:
                        save({"model": student.state_dict(), "epoch": epoch, "metrics": record, "meta": meta},
                             out / "best.pt")
            record["seconds"] = round(time.perf_counter() - began, 3)
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", val=f"{record.get('val_pgd_trades', float('nan')):.1f}")

            # --- checkpoint, then the log line (on resume the log is rewritten from the checkpoint)
            if ctx.is_main:
                save({"model": student.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                      "history": history, "best": best, "meta": meta}, last_path)
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            start = epoch
            if on_epoch is not None:
                on_epoch(history)
    dist_lib.leave(ctx)
    return history


def make_graphs(cfg: TrainConfig, student: nn.Module, teacher: nn.Module | None, num_classes: int
                ) -> tuple[graphs.GraphedPGD | None, graphs.GraphedStep | None]:
    """The CUDA-graph replays `cfg.cuda_graphs` asks for, as (attack, step); None where eager. They do
    not check that each batch lies in [0,1] (a wait for the device): check the images beforehand."""
    if cfg.cuda_graphs == "off":
        return None, None
    objective = partial(inner_objective, attack_objective(cfg), student)
    if cfg.cuda_graphs == "attack":
        return graphs.GraphedPGD(student, cfg.attack, objective, bf16=cfg.bf16, check=False), None
    attack = graphs.capturable_attack(student, cfg.attack, objective, bf16=cfg.bf16)

    def terms(x: Tensor, y: Tensor, epoch: int) -> dict[str, Tensor]:
        return loss_terms(student, teacher, x, y, cfg, epoch=epoch, num_classes=num_classes, attack=attack)

    return None, graphs.GraphedStep(student, terms, reads_epoch="epoch" in METHODS[cfg.method].inputs, check=False)


def _check_same_inputs(saved: dict, meta: dict, out: Path) -> None:
    """A resumed run must read the same data and teacher file as before (runs from before the
    checksums were recorded have none to compare)."""
    for key, what in (("data_sha256", "the data"), ("teacher_sha256", "the teacher file")):
        if saved.get(key) and saved[key] != meta.get(key):
            raise UserError(f"--resume: {what} changed since the run in {out} started (sha256 "
                            f"{saved[key][:12]}... then, {str(meta.get(key))[:12]}... now); restore it or "
                            "start a new run in another --out")


def _check_same_config(saved: dict, cfg: TrainConfig, out: Path) -> None:
    saved_cfg = to_dict(from_dict(saved))
    differ = [k for k, v in to_dict(cfg).items() if saved_cfg.get(k) != v]
    if differ:
        raise UserError(f"--resume: the run in {out} was started with different settings ({', '.join(differ)}); "
                        "resume with the same arguments or choose another --out")
