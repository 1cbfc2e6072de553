"""A reproduce plan as data: the runs and evaluations behind the paper's tables, and their tasks.

`reproduce.build_plan` fills a `Plan`; `reproduce.execute` runs its tasks; `report` reads it to write the
tables. Keeping the plan here lets both import it without importing each other.

Run names: `teacher`, `teacher-reseeded` (Figure 2's ceiling), `teacher-natural`, `surrogate`, and
`<student>-<row>-s<seed>` for students, where a row is a method, a Table 6 variant or a Table 7
soft-label variant.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rslad_kit import data, models, runs
from rslad_kit.config import PlanConfig, TrainConfig
from rslad_kit.errors import UserError
from rslad_kit.evaluate import PAPER_ATTACKS   # the paper's white-box attacks: Tables 2, 3, 4, 6
from rslad_kit.losses import attack_objective

PAPER_METHODS = ("natural", "sat", "trades", "mart", "ard", "iad", "rslad")
BLACK_BOX = ("transfer_pgd", "transfer_cw", "square")      # Table 5
SOFT_LABEL_ATTACKS = ("clean", "pgd_trades", "autoattack")  # Table 7
CHECKS = PAPER_ATTACKS + ("pgd_large_eps",)               # best checkpoints: the tables' attacks + the large-eps check
SLOW_ATTACKS = ("autoattack", "square")                     # query-bound: a fixed cost per model on a CPU

# How tables and figures name a method, a Table 6 row or a helper run (evaluate.attack_label names attacks).
LABELS = {"natural": "Natural", "sat": "SAT", "trades": "TRADES", "mart": "MART", "ard": "ARD", "iad": "IAD",
          "rslad": "RSLAD", "ard-300": "ARD-300", "ard_min+rslad_max": "ARD_min + RSLAD_max",
          "rslad_min+ard_max": "RSLAD_min + ARD_max", "teacher": "Teacher", "random-init": "Random init",
          "teacher-reseeded": "2nd teacher"}


def run_label(name: str) -> str:
    """How tables and figures name a method, row or run ("rslad" -> "RSLAD"); other names as given."""
    return LABELS.get(name, name)


# Table 6: (outer-minimisation method, inner-maximisation method), all under RSLAD's schedule.
ABLATIONS = {
    "ard-300": ("ard", "ard"),
    "ard_min+rslad_max": ("ard", "rslad"),
    "rslad_min+ard_max": ("rslad", "ard"),
    "rslad": ("rslad", "rslad"),
}


@dataclass(frozen=True)
class Task:
    """One unit of work: train a run, or evaluate its checkpoints."""

    name: str
    kind: str                              # "train" | "evaluate"
    needs: tuple[str, ...] = ()            # names of tasks that must finish first
    cfg: TrainConfig | None = None         # train: the run's config
    checkpoints: dict[str, tuple[str, ...]] = field(default_factory=dict)  # evaluate: ckpt -> attacks
    cost: float = 1.0                      # relative cost, for ordering and the dry-run estimate


@dataclass
class Plan:
    preset: str
    out: Path
    plan: PlanConfig
    dataset: str
    eps: float
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    teacher_spec: str                      # what students pass as `teacher`
    base: TrainConfig                      # the preset's RSLAD config with the caller's overrides
    runs: dict[str, TrainConfig] = field(default_factory=dict)
    rows: dict[tuple[int, str, str], list[str]] = field(default_factory=dict)  # (table, student, row) -> runs
    evaluations: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # run -> ckpt -> attacks
    zoo: dict[str, str] = field(default_factory=dict)  # evaluated from a zoo file: run -> robustbench:<name>

    # --- building ------------------------------------------------------------------------------------

    def add_run(self, name: str, cfg: TrainConfig) -> str:
        """Add a training run; a config identical to an existing run's reuses that run."""
        for existing, other in self.runs.items():
            if other == cfg:
                return existing
        self.runs[name] = cfg
        return name

    def need(self, run: str, checkpoint: str, attacks: tuple[str, ...]) -> None:
        self.evaluations.setdefault(run, {}).setdefault(checkpoint, set()).update(attacks)

    def attacks_for(self, attacks: tuple[str, ...], seed: int, checkpoint: str) -> tuple[str, ...]:
        """The attacks a checkpoint gets: the slow query attacks only within the preset's budget."""
        k, ckpts = self.plan.slow_attack_seeds, self.plan.slow_attack_checkpoints
        slow_ok = (k is None or seed < k) and checkpoint in ckpts
        return tuple(a for a in attacks if a not in SLOW_ATTACKS or slow_ok)

    # --- the results folder: runs/<run>/ (run folders) and evals/<run>.json ---------------------------

    def run_dir(self, run: str) -> Path:
        """The run folder of `run` (best.pt, last.pt, metrics.jsonl)."""
        return self.out / "runs" / run

    @property
    def evals_dir(self) -> Path:
        """The evaluations: one eval_file per run, and AutoAttack's progress while one runs."""
        return self.out / "evals"

    def eval_file(self, run: str) -> Path:
        """The evaluations of `run`'s checkpoints: checkpoint -> attack -> accuracy, and their provenance."""
        return self.evals_dir / f"{run}.json"

    def evals(self) -> dict[str, dict]:
        """The evaluations on disk: run name -> its eval_file (checkpoint -> attack -> accuracy)."""
        folder = self.evals_dir
        return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")} if folder.is_dir() else {}

    def is_done(self, task: Task) -> bool:
        """Whether the task's result is already on disk: a finished run, or every attack evaluated."""
        if task.kind == "train":
            return runs.is_finished(self.run_dir(task.name))
        path = self.eval_file(task.name.removeprefix("eval:"))
        done = json.loads(path.read_text()) if path.is_file() else {}
        return all(set(attacks) <= set(done.get(ckpt, {})) for ckpt, attacks in task.checkpoints.items())

    # --- tasks ---------------------------------------------------------------------------------------

    def tasks(self) -> list[Task]:
        train_tasks = [Task(name, "train", needs=self._needs(cfg), cfg=cfg, cost=estimate_cost(cfg))
                       for name, cfg in self.runs.items()]
        # On a CPU one slow query attack on one checkpoint costs about one student's training run.
        typical_run = statistics.median(t.cost for t in train_tasks) if train_tasks else 1.0
        eval_tasks = []
        for run, ckpts in self.evaluations.items():
            needs = (run,) if run in self.runs else ()
            if any(a.startswith("transfer") for attacks in ckpts.values() for a in attacks):
                needs += ("surrogate",)
            slow = sum(a in SLOW_ATTACKS for attacks in ckpts.values() for a in attacks)
            eval_tasks.append(Task(f"eval:{run}", "evaluate", needs=needs,
                                   checkpoints={k: tuple(sorted(v)) for k, v in ckpts.items()},
                                   cost=typical_run * (slow + 0.1 * len(ckpts))))
        return train_tasks + eval_tasks

    def _needs(self, cfg: TrainConfig) -> tuple[str, ...]:
        return (cfg.teacher,) if cfg.teacher in self.runs else ()


# --- what runs next ---------------------------------------------------------------------------------

class Schedule:
    """What may run next over a list of tasks: `ready` lists the pending tasks whose needs are met (done,
    or not among these tasks: a finished task left out of the list). `reproduce.execute` and
    `sweep.dispatch` both schedule with it; `start` and `finish` move a task along."""

    def __init__(self, tasks: list[Task]):
        self.pending = list(tasks)
        self.names = {t.name for t in tasks}
        self.running: set[str] = set()
        self.done: set[str] = set()

    def ready(self) -> list[Task]:
        """The pending tasks that may start now, in the given order. Raises a UserError when none can
        ever start: nothing runs and each pending task waits on another (a cycle)."""
        ready = [t for t in self.pending if set(t.needs) & self.names <= self.done]
        if self.pending and not ready and not self.running:
            raise UserError(f"the plan's tasks wait on each other in a cycle: "
                            f"{', '.join(t.name for t in self.pending)}")
        return ready

    def start(self, task: Task) -> None:
        self.pending.remove(task)
        self.running.add(task.name)

    def finish(self, task: Task) -> None:
        self.running.discard(task.name)
        self.done.add(task.name)


def waves(tasks: list[Task]) -> list[list[Task]]:
    """The tasks in groups, each group needing only tasks of earlier groups."""
    schedule, groups = Schedule(tasks), []
    while schedule.pending:
        groups.append(schedule.ready())
        for task in groups[-1]:
            schedule.start(task)
        for task in groups[-1]:
            schedule.finish(task)
    return groups


# --- cost ------------------------------------------------------------------------------------------

def estimate_cost(cfg: TrainConfig) -> float:
    """Relative training cost: epochs x (attack steps + forwards) x model size (parameters)."""
    passes = 1 + (cfg.attack.steps if attack_objective(cfg) != "none" else 0)
    with torch.device("meta"):
        size = sum(p.numel() for p in models.build(cfg.model, 10, in_channels=data.channels(cfg.dataset))
                   .parameters())
    return cfg.epochs * passes * size
