"""`rslad-kit teacher-study`: which teacher makes the most robust student? (the paper's Figure 4)

RSLAD students of one architecture are distilled from a ladder of robust teachers of growing
capacity; each student's robustness is plotted against its teacher's. The paper (CIFAR-10, ResNet-18
students) sees the student's robustness first rise and then fall: above its teacher while the
teacher is small ("robust underfitting"), and ever further below it past the best teacher ("robust
saturation").

The study is a plan of `reproduce` (tasks, cached results, resume): runs live under
`results/<preset>-teacher-study/`, and a rerun skips finished work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rslad_kit import models, reproduce, runs
from rslad_kit.config import PRESETS, preset
from rslad_kit.errors import UserError
from rslad_kit.plan import Plan
from rslad_kit.report import Cell
from rslad_kit.stats import paired
from rslad_kit.runs import write_text


@dataclass(frozen=True)
class Ladder:
    """The teachers of a study, smallest first, and how robustness is measured."""

    teachers: tuple[str, ...]   # a registry architecture (trained with TRADES here) or robustbench:<name>
    attack: str                 # "autoattack" where the budget allows, else "pgd_trades"
    seeds: int                  # students per teacher


# Classroom and smoke: TRADES teachers from the student's own width upwards (the same width is the
# paper's "robust underfitting" case), sized from the preset's student so the ladder follows it. The
# classroom's 4 teachers x 3 seeds + 3 SAT baselines fit in about 10 minutes on 2 cores; AutoAttack
# (~15-25 s a checkpoint on a CPU) would double that, so robustness is PGD_TRADES there.
WIDTH_STEPS = {"classroom": (1, 2, 4, 8), "smoke": (1, 2)}
_CLASSROOM_LIKE = {"classroom": ("pgd_trades", 3), "smoke": ("pgd_trades", 1)}
# CIFAR-10: the paper's six teachers, the first four trained with TRADES by the kit.
_CIFAR10_LADDER = Ladder(("resnet18", "resnet34", "resnet50", "wrn-34-10",
                          "robustbench:Gowal2020Uncovering_34_20", "robustbench:Gowal2020Uncovering_70_16"),
                         "autoattack", 1)


def ladder(p: str) -> Ladder:
    """The teacher ladder of preset `p`."""
    if p == "cifar10":
        return _CIFAR10_LADDER
    if p not in _CLASSROOM_LIKE:
        raise UserError(f"no teacher ladder for preset {p!r}; choose from cifar10, {', '.join(_CLASSROOM_LIKE)}")
    student = PRESETS[p].plan.students[0]
    if not student.startswith("cnn-w"):
        raise UserError(f"the {p} ladder widens the student's SmallCNN, but its student is {student!r}")
    width = int(student.removeprefix("cnn-w"))
    attack, seeds = _CLASSROOM_LIKE[p]
    return Ladder(tuple(f"cnn-w{width * k}" for k in WIDTH_STEPS[p]), attack, seeds)


def teacher_run(teacher: str) -> str:
    """The run name of a ladder teacher."""
    return "teacher-" + teacher.removeprefix("robustbench:")


def build_plan(p: str, out: str | Path = "results", *, seeds: int | None = None,
               **overrides: Any) -> tuple[Plan, Ladder]:
    """The study's runs and evaluations, as a `plan.Plan`."""
    lad = ladder(p)
    pc = PRESETS[p].plan
    seeds = seeds or lad.seeds
    base = preset(p, "rslad", **overrides)
    student = pc.students[0]
    plan = Plan(preset=p, out=Path(out) / f"{p}-teacher-study", plan=replace(pc, seeds=seeds, tables=()),
                          dataset=base.dataset, eps=base.attack.eps, methods=("trades", "sat", "rslad"),
                          seeds=tuple(range(seeds)), teacher_spec="", base=base)
    attacks = ("clean", lad.attack)
    for teacher in lad.teachers:
        name = teacher_run(teacher)
        if teacher.startswith("robustbench:"):
            plan.zoo[name] = teacher
        else:
            plan.runs[name] = preset(p, "trades", model=teacher, **overrides)
        plan.need(name, "best", attacks)
        for seed in plan.seeds:
            cfg = preset(p, "rslad", model=student, seed=seed, teacher=teacher if name in plan.zoo else name,
                         **overrides)
            plan.need(plan.add_run(f"{student}-rslad-{name}-s{seed}", cfg), "best", attacks)
    for seed in plan.seeds:
        plan.need(plan.add_run(f"{student}-sat-s{seed}", preset(p, "sat", model=student, seed=seed, **overrides)),
                  "best", attacks)
    return plan, lad


# --- results -----------------------------------------------------------------------------------------

def _params(teacher: str, plan: Plan) -> int:
    with torch.device("meta"):
        if teacher.startswith("robustbench:"):
            entry = models.ZOO[(plan.dataset, teacher.removeprefix("robustbench:"))]
            model = entry.arch(**entry.kwargs)
        else:
            model = models.build(teacher, 100 if plan.dataset == "cifar100" else 10,
                                 in_channels=1 if plan.dataset == "digits" else 3)
    return sum(p.numel() for p in model.parameters())


def summarise(plan: Plan, lad: Ladder) -> dict[str, Any]:
    """The study's numbers as JSON-ready data: one row per teacher, the SAT baseline and a verdict."""
    evals = plan.evals()

    def scores(run: str, attack: str) -> float | None:
        return evals.get(run, {}).get("best", {}).get(attack)

    student = plan.plan.students[0]
    rows = []
    for teacher in lad.teachers:
        name = teacher_run(teacher)
        runs = [f"{student}-rslad-{name}-s{s}" for s in plan.seeds]
        rows.append({"teacher": name.removeprefix("teacher-"), "params": _params(teacher, plan),
                     "teacher_clean": scores(name, "clean"), "teacher_robust": scores(name, lad.attack),
                     "student_clean": [scores(r, "clean") for r in runs],
                     "student_robust": [scores(r, lad.attack) for r in runs]})
    sat = [scores(f"{student}-sat-s{s}", lad.attack) for s in plan.seeds]
    data = {"preset": plan.preset, "dataset": plan.dataset, "student": student, "eps": plan.eps,
            "attack": lad.attack, "seeds": len(plan.seeds), "rows": rows, "sat_robust": sat}
    return data | verdict(data)


def verdict(data: dict[str, Any]) -> dict[str, Any]:
    """Robust underfitting (students above their teacher), robust saturation (past the best teacher,
    the teacher-student gap widens) and whether the students' robustness rises then falls: the best
    teacher is neither the smallest nor the largest and, with several seeds, the student it makes
    beats both ends beyond the seed noise (paired by seed, a 95% interval that excludes 0; one seed: the
    signs only)."""
    rows = data["rows"]
    cells = [Cell({seed: v for seed, v in enumerate(r["student_robust"]) if v is not None}) for r in rows]
    if any(c.mean is None for c in cells) or any(r["teacher_robust"] is None for r in rows):
        return {"underfitting": [], "saturation": [], "best": None, "rise_and_fall": None,
                "summary": "The study is unfinished: some runs have no result yet."}
    best = max(range(len(rows)), key=lambda i: cells[i].mean)
    gaps = [r["teacher_robust"] - c.mean for r, c in zip(rows, cells)]
    underfitting = [r["teacher"] for r, c in zip(rows, cells) if c.mean > r["teacher_robust"]]
    saturation = [rows[i]["teacher"] for i in range(best + 1, len(rows)) if gaps[i] > gaps[best]]
    tests = {end: paired(cells[best].by_seed, cells[i].by_seed)
             for end, i in (("rise", 0), ("fall", len(rows) - 1)) if i != best}
    beyond_noise = all(d.low is None or d.excludes_zero for d in tests.values())
    rise_and_fall = len(tests) == 2 and beyond_noise
    evidence = "; ".join(f"{end} {d}" for end, d in tests.items())
    if rise_and_fall:
        shape = "rises and then falls, as in the paper" + (" (one seed: signs only)" if data["seeds"] < 2 else "")
    elif len(tests) == 2:
        shape = "peaks inside the ladder, but not beyond the seed noise: no clear rise and fall as in the paper"
    else:
        shape = (f"does not rise and fall as in the paper: it peaks at the "
                 f"{'smallest' if best == 0 else 'largest'} teacher")
    sat = Cell({seed: v for seed, v in enumerate(data["sat_robust"]) if v is not None})
    name = "AutoAttack" if data["attack"] == "autoattack" else "PGD_TRADES"
    summary = (f"{data['student']} students ({data['seeds']} seed(s), {name} at eps {data['eps']:.4g}): "
               f"robustness {shape} ({evidence}). Best teacher: {rows[best]['teacher']} (student {cells[best]}; "
               f"SAT student {sat}). Robust underfitting (student above its teacher): "
               f"{', '.join(underfitting) or 'none'}. Robust saturation (gap wider than at the best teacher): "
               f"{', '.join(saturation) or 'none'}.")
    return {"underfitting": underfitting, "saturation": saturation, "best": rows[best]["teacher"],
            "rise_and_fall": rise_and_fall, "summary": summary}


def run(p: str = "classroom", *, out: str | Path = "results", seeds: int | None = None,
        workers: int | None = None, workers_per_gpu: int | None = None, progress: bool = True,
        dry_run: bool = False, **overrides: Any) -> Path:
    """Train and evaluate the study of preset `p` (cached, resumable); writes `teacher_study.json` and
    `summary.md` in its folder, which it returns. `figures.teacher_study` draws it. `workers_per_gpu`
    runs that many tasks at once on every GPU, as for `reproduce`."""
    plan, lad = build_plan(p, out, seeds=seeds, **overrides)
    gpus = 0
    if workers_per_gpu is not None:
        workers, gpus = reproduce.gpu_workers(plan, workers_per_gpu)
    workers = workers or reproduce.default_workers(plan)
    if dry_run:
        print(reproduce.describe(plan))
        print(reproduce.estimate_seconds(plan, workers))
        return plan.out
    with runs.lock(plan.out, "teacher study"):   # one writer per study folder, as for reproduce
        reproduce.check_results_folder(plan)
        reproduce.execute(plan, workers, progress, gpus)
        write(plan, lad)
    return plan.out


def write(plan: Plan, lad: Ladder) -> None:
    """`teacher_study.json` and `summary.md` in the study's folder, from the results on disk."""
    data = summarise(plan, lad)
    write_text(plan.out / "teacher_study.json", json.dumps(data, indent=1))
    write_text(plan.out / "summary.md", f"# Teacher study: `rslad-kit teacher-study --preset {plan.preset}`\n\n"
               f"{data['summary']}\n")


def load(folder: str | Path) -> dict[str, Any]:
    """The data of a finished study folder."""
    path = Path(folder) / "teacher_study.json"
    if not path.is_file():
        raise UserError(f"{path} not found; run `rslad-kit teacher-study` first (its --out is the folder's parent)")
    return json.loads(path.read_text())
