"""`rslad-kit teacher-study`: which teacher makes the most robust student? (the paper's Figure 4)

RSLAD students of one architecture are distilled from a ladder of robust teachers of growing
capacity; each student's robustness is plotted against its teacher's. The paper (CIFAR-10, ResNet-18
students) sees the student's robustness first rise and then fall: above its teacher while the
teacher is small ("robust underfitting"), and falling again past the best teacher ("robust
saturation"). `verdict` tests each reading against the seed noise; with one seed it reads signs only.

The study is a plan of `reproduce` (tasks, cached results, resume): runs live under
`results/<preset>-teacher-study/`, and a rerun skips finished work.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rslad_kit import data, loading, models, reproduce, runs
from rslad_kit.config import PRESETS, preset
from rslad_kit.errors import UserError
from rslad_kit.plan import Plan
from rslad_kit.report import Cell
from rslad_kit.stats import half_width, paired
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
WIDTH_STEPS = {"classroom": (1, 2, 4, 8), "fashion": (1, 2, 4, 8), "smoke": (1, 2)}
_CLASSROOM_LIKE = {"classroom": ("pgd_trades", 3), "fashion": ("pgd_trades", 3), "smoke": ("pgd_trades", 1)}
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
    return "teacher-" + loading.parse_spec(teacher)[1]


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
        if loading.parse_spec(teacher)[0] == "robustbench":
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
        kind, name = loading.parse_spec(teacher)
        if kind == "robustbench":
            entry = models.ZOO[(plan.dataset, name)]
            model = entry.arch(**entry.kwargs)
        else:
            model = models.build(teacher, 100 if plan.dataset == "cifar100" else 10,
                                 in_channels=data.channels(plan.dataset))
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


# --- verdicts --------------------------------------------------------------------------------------
#
# Each verdict is a family of comparisons, and each family together keeps a false alarm under 5%
# when teacher choice does nothing (Bonferroni over its comparisons; tests/test_teacher_study.py
# measures the rate on simulated ladders). With one seed there is no interval: every verdict reads
# "signs only" and none is claimed.

FAMILY_ERROR = 0.05   # the chance, per verdict, of a false alarm when teacher choice has no effect


@dataclass(frozen=True)
class Difference:
    """A difference in points with its two-sided interval at `level` (None with one seed)."""

    mean: float
    low: float | None
    high: float | None
    level: float
    seeds: int

    @property
    def above_zero(self) -> bool:
        return self.low is not None and self.low > 0

    @property
    def below_zero(self) -> bool:
        return self.high is not None and self.high < 0

    def __str__(self) -> str:
        if self.low is None:
            return f"{self.mean:+.2f} (one seed, no interval)"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}] ({self.level:.4g}% interval, {self.seeds} seeds)"


def _interval(mean: float, sd: float | None, n: int, comparisons: int) -> Difference:
    """`mean` with its t-interval from a spread `sd` over `n` seeds, widened for `comparisons` tests."""
    level = 1 - FAMILY_ERROR / comparisons
    if sd is None or n < 2:
        return Difference(mean, None, None, 100 * level, n)
    half = half_width(sd, n, level)
    return Difference(mean, mean - half, mean + half, 100 * level, n)


def _paired(a: Cell, b: Cell, comparisons: int) -> Difference:
    """`a - b` paired by seed (`stats.paired`), its interval widened for `comparisons` tests."""
    d = paired(a.by_seed, b.by_seed)
    return _interval(d.mean, d.sd, d.n, comparisons)


def _above_teacher(student: Cell, teacher: float, comparisons: int) -> Difference:
    """Students minus their teacher. The teacher is one training run, so it counts as one more draw
    with the students' spread: the interval of a new run, sd * sqrt(1 + 1/n), not of a fixed number."""
    sd = student.sd * math.sqrt(len(student.values) + 1) if student.sd is not None else None
    return _interval(student.mean - teacher, sd, len(student.values), comparisons)


def verdict(data: dict[str, Any]) -> dict[str, Any]:
    """The paper's three readings of Figure 4, each tested against the seed noise:

    - robust underfitting: a teacher's students beat it (interval above 0, the teacher counted as one
      more run);
    - robust saturation: past the best teacher (the highest student mean), a teacher's students fall
      below the best teacher's, paired by seed (interval below 0);
    - rise and fall: the best teacher is inside the ladder and its students beat those of both ends,
      paired by seed (both intervals above 0).

    `underfitting` and `saturation` list the teachers beyond the noise; `status` gives each verdict as
    "holds", "not beyond the noise", "not seen", "signs only" (one seed) or "unfinished"; `evidence`
    holds every difference tested; `headline` is the figure's title line."""
    rows = data["rows"]
    cells = [Cell({seed: v for seed, v in enumerate(r["student_robust"]) if v is not None}) for r in rows]
    if any(c.mean is None for c in cells) or any(r["teacher_robust"] is None for r in rows):
        return {"underfitting": [], "saturation": [], "best": None, "rise_and_fall": None,
                "status": dict.fromkeys(("underfitting", "saturation", "rise_and_fall"), "unfinished"),
                "evidence": {}, "headline": "unfinished",
                "summary": "The study is unfinished: some runs have no result yet."}
    k, names = len(rows), [r["teacher"] for r in rows]
    best = max(range(k), key=lambda i: cells[i].mean)
    signs_only = min(len(c.values) for c in cells) < 2
    under = {names[i]: _above_teacher(cells[i], rows[i]["teacher_robust"], k) for i in range(k)}
    past = {names[i]: _paired(cells[i], cells[best], max(k - 1, 1)) for i in range(best + 1, k)}
    ends = {end: _paired(cells[best], cells[i], 1) for end, i in (("rise", 0), ("fall", k - 1)) if i != best}

    def status(beyond: bool, seen: bool) -> str:
        return "signs only" if signs_only else "holds" if beyond else "not beyond the noise" if seen else "not seen"

    underfitting = [t for t, d in under.items() if d.above_zero]
    saturation = [t for t, d in past.items() if d.below_zero]
    rise_and_fall = len(ends) == 2 and all(d.above_zero for d in ends.values())
    statuses = {"underfitting": status(bool(underfitting), any(d.mean > 0 for d in under.values())),
                "saturation": status(bool(saturation), any(d.mean < 0 for d in past.values())),
                "rise_and_fall": status(rise_and_fall, len(ends) == 2 and all(d.mean > 0 for d in ends.values()))}
    peak = f"peaks at {names[best]}"
    if len(ends) < 2:
        peak += f", the {'smallest' if best == 0 else 'largest'} teacher"
    headline = {"signs only": f"signs only (one seed): {peak}; nothing is claimed",
                "holds": "rise and fall beyond the seed noise, as in the paper",
                "not beyond the noise": f"{peak}, but not beyond the seed noise: no clear rise and fall",
                "not seen": f"{peak}: no rise and fall (unlike the paper)"}[statuses["rise_and_fall"]]
    sat = Cell({seed: v for seed, v in enumerate(data["sat_robust"]) if v is not None})
    attack = "AutoAttack" if data["attack"] == "autoattack" else "PGD_TRADES"

    def region(diffs: dict[str, Difference], found: list[str], sign: int) -> str:
        """The teachers beyond the noise, else those with the sign (and their intervals)."""
        shown = found or [t for t, d in diffs.items() if sign * d.mean > 0]
        return "; ".join(f"{t} {diffs[t]}" for t in shown) or "none"

    summary = (f"{data['student']} students ({data['seeds']} seed(s), {attack} at eps {data['eps']:.4g}): "
               f"{headline}"
               + (f" (rise {ends['rise']}; fall {ends['fall']})" if len(ends) == 2 else "")
               + f". Best teacher: {names[best]} (student {cells[best]}; SAT student {sat}). "
               f"Robust underfitting (students above their teacher), {statuses['underfitting']}: "
               f"{region(under, underfitting, +1)}. "
               f"Robust saturation (past the best teacher, students below its students), {statuses['saturation']}: "
               f"{region(past, saturation, -1)}.")
    evidence = {"underfitting": {t: str(d) for t, d in under.items()},
                "saturation": {t: str(d) for t, d in past.items()},
                **{end: str(d) for end, d in ends.items()}}
    return {"underfitting": underfitting, "saturation": saturation, "best": names[best],
            "rise_and_fall": None if signs_only else rise_and_fall, "status": statuses, "evidence": evidence,
            "headline": headline, "summary": summary}


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
