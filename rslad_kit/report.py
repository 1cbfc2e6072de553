"""The paper's Tables 2-7 from a finished plan, each measured row beside the paper's number.

Writes `results/<preset>/table<N>.md` and `.csv` and `summary.md`. Numbers are the mean +- standard
deviation over seeds. The summary checks each of the paper's claims on our numbers, paired by seed
(runs with one seed share their initialisation and data order): the mean difference, its 95% interval,
the number of seeds it rests on, and how many seeds a difference of that size would need to be
detected (`rslad_kit.stats`). With one seed only the sign can be read, and the wording says so.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from rslad_kit.evaluate import MASKING_CHECKS, attack_label, masking_checks
from rslad_kit.plan import BLACK_BOX, PAPER_ATTACKS, SOFT_LABEL_ATTACKS, Plan, run_label
from rslad_kit.stats import MAX_SEEDS, RESOLUTION, Paired, paired
from rslad_kit.runs import write_text

PAPER_MODELS = {"resnet18": "RN-18", "mobilenetv2": "MN-V2"}


# --- the paper's numbers ---------------------------------------------------------------------------

def paper_numbers() -> dict[tuple, float]:
    """(table, dataset, model, row, checkpoint, attack) -> the paper's accuracy in %."""
    text = resources.files("rslad_kit").joinpath("paper_results.csv").read_text()
    return {(int(r["table"]), r["dataset"], r["model"], r["row"], r["checkpoint"], r["attack"]): float(r["value"])
            for r in csv.DictReader(io.StringIO(text))}


def paper_reference(plan: Plan, student: str) -> tuple[str, str]:
    """The paper's dataset and model whose rows a student is compared with.

    A digits student stands in for the paper's main student, ResNet-18 on CIFAR-10."""
    dataset = "cifar100" if plan.dataset == "cifar100" else "cifar10"
    return dataset, student if student in PAPER_MODELS else "resnet18"


# --- our numbers -----------------------------------------------------------------------------------

@dataclass
class Cell:
    by_seed: dict[int, float]   # seed -> accuracy

    @property
    def values(self) -> list[float]:
        return list(self.by_seed.values())

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def __str__(self) -> str:
        if not self.values:
            return "—"
        return f"{self.mean:.2f}" + (f" ± {self.sd:.2f}" if self.sd is not None else "")


def cell(plan: Plan, evals: dict, runs: list[str], checkpoint: str, attack: str) -> Cell:
    """The accuracies of `runs` (one per seed) at `checkpoint` under `attack`, where evaluated."""
    return Cell({plan.runs[r].seed if r in plan.runs else 0: evals[r][checkpoint][attack] for r in runs
                 if attack in evals.get(r, {}).get(checkpoint, {})})


# --- tables ----------------------------------------------------------------------------------------

@dataclass
class Table:
    number: int
    title: str
    columns: list[tuple[str, str]]        # (checkpoint, attack)
    rows: list[tuple[str, str, str, list[str]]]  # (model, row label, source, cells)
    note: str = ""

    def markdown(self) -> str:
        head = ["Model", "Row", "Source"] + [f"{ckpt}: {attack_label(a)}" for ckpt, a in self.columns]
        lines = [f"# Table {self.number}: {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join([m, r, s, *cells]) + " |" for m, r, s, cells in self.rows]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["table", "model", "row", "source", "checkpoint", "attack", "value"])
        for model, row, source, cells in self.rows:
            for (ckpt, attack), value in zip(self.columns, cells):
                writer.writerow([self.number, model, row, source, ckpt, attack, value])
        return out.getvalue()


def _rows(plan, evals, paper, table, student, row, label, columns, paper_row=None):
    """Our row (mean +- sd over seeds) and, where the paper has it, the paper's row beneath."""
    runs = plan.rows.get((table, student, row), [])
    seeds_note = f"{len(runs)} seed" + ("s" if len(runs) != 1 else "")
    cells = [cell(plan, evals, runs, ckpt, a) for ckpt, a in columns]
    # † marks numbers from fewer seeds than the row's (the slow attacks on the first seeds only).
    ours = [str(c) + (" †" if 0 < len(c.values) < len(runs) else "") for c in cells]
    dataset, model = paper_reference(plan, student)
    theirs = [paper.get((table, dataset, model, paper_row or row, ckpt, a)) for ckpt, a in columns]
    lines = [(student, label, f"ours ({seeds_note})", ours)]
    if any(v is not None for v in theirs):
        lines.append(("", "", f"paper ({PAPER_MODELS.get(model, model)}, {dataset})",
                      ["—" if v is None else f"{v:.2f}" for v in theirs]))
    return lines


def build_tables(plan: Plan) -> list[Table]:
    evals, paper = plan.evals(), paper_numbers()
    both = [(c, a) for c in ("best", "last") for a in PAPER_ATTACKS]
    tables = []
    pc = plan.plan

    if 2 in pc.tables:
        cols = [("best", a) for a in PAPER_ATTACKS]
        dataset = "cifar100" if plan.dataset == "cifar100" else "cifar10"
        teacher_model = "wrn-70-16" if dataset == "cifar100" else "wrn-34-10"
        rows = []
        for run, label in (("teacher", "robust teacher"), ("teacher-natural", "natural teacher (NSL)"),
                           ("surrogate", "surrogate (Table 5)")):
            if run in plan.evaluations:
                rows.append((plan.runs[run].model if run in plan.runs else plan.teacher_spec, label, "ours",
                             [str(cell(plan, evals, [run], c, a)) for c, a in cols]))
            if run == "teacher":
                rows.append(("", "", f"paper ({teacher_model}, {dataset})",
                             [f"{paper[(2, dataset, teacher_model, 'teacher', c, a)]:.2f}" for c, a in cols]))
        tables.append(Table(2, "robustness of the teachers", cols, rows))

    for number in (3, 4):
        if number not in pc.tables:
            continue
        rows = [line for student in pc.students for m in plan.methods
                for line in _rows(plan, evals, paper, number, student, m, run_label(m), both)]
        tables.append(Table(number, f"white-box robustness on {plan.dataset}", both, rows,
                            "Best = the epoch with the best PGD_TRADES accuracy on the validation split "
                            "(clean accuracy for Natural); last = the final epoch."))

    if 5 in pc.tables:
        cols = [("best", a) for a in BLACK_BOX]
        rows = [line for student in pc.students for m in plan.methods if (5, student, m) in plan.rows
                for line in _rows(plan, evals, paper, 5, student, m, run_label(m), cols)]
        tables.append(Table(5, "black-box robustness (transfer from the surrogate; Square)", cols, rows))

    if 6 in pc.tables:
        cols = [("best", a) for a in PAPER_ATTACKS]
        student = pc.students[0]
        names = [r for (t, s, r) in plan.rows if t == 6 and s == student]
        rows = [line for r in names
                for line in _rows(plan, evals, paper, 6, student, r, run_label(r), cols)]
        tables.append(Table(6, "ablation: inner/outer losses of ARD and RSLAD, under RSLAD's schedule", cols, rows))

    if 7 in pc.tables:
        cols = [(c, a) for c in ("best", "last") for a in SOFT_LABEL_ATTACKS]
        student = pc.students[0]
        rows = []
        for (t, s, r) in plan.rows:
            if t == 7 and s == student:
                kind = "ssl" if r.endswith("-ssl") else "nsl" if r.endswith("-nsl") else "rsl"
                method = r.removesuffix("-ssl").removesuffix("-nsl")
                label = kind.upper() + ("" if method == "rslad" else f" ({method})")
                # The paper's Table 7 rows (ssl / nsl / rsl) are RSLAD's.
                paper_row = kind if method == "rslad" else "-"
                rows += _rows(plan, evals, paper, 7, student, r, label, cols, paper_row)
        tables.append(Table(7, "soft labels: smoothed (SSL), natural teacher (NSL), robust teacher (RSL)",
                            cols, rows))
    return tables


# --- summary ---------------------------------------------------------------------------------------

def verdict(d: Paired) -> str:
    """A claim's verdict in words, from the paired difference better - worse. Differences below
    `stats.RESOLUTION` are floating-point residue and count as none."""
    no_difference = abs(d.mean) < RESOLUTION
    if no_difference and (d.sd or 0) < RESOLUTION:
        return "tie"
    if d.low is None:
        return "holds on one seed only" if d.mean > 0 else "reversed on one seed only"
    if d.excludes_zero:
        return "holds" if d.mean > 0 else "reversed beyond the seed noise"
    direction = " (no difference on average)" if no_difference else " (same direction)" if d.mean > 0 else " (reversed)"
    return "not shown: within the seed noise" + direction


def describe(d: Paired) -> str:
    """The difference, its interval, its seeds, and roughly how many seeds a difference of this size needs."""
    text = f"difference {d}"
    if d.missing:
        text += f"; seeds {', '.join(map(str, d.missing))} missing on one side"
    needed = d.seeds_needed()
    if needed is not None and d.low is not None and not d.excludes_zero:
        count = f"more than {MAX_SEEDS:,}" if needed > MAX_SEEDS else f"about {needed}"
        text += (f"; a difference of this size needs {count} seeds to be detected (rough: sized post hoc "
                 f"from this difference and the spread of {d.n} seeds)")
    return text


def rankings(plan: Plan) -> list[str]:
    """The students of the white-box table ranked by PGD_TRADES and AutoAttack (best checkpoints)."""
    evals, out = plan.evals(), []
    table = 4 if plan.dataset == "cifar100" else 3
    student = plan.plan.students[0]
    for attack in ("pgd_trades", "autoattack"):
        cells = {m: cell(plan, evals, plan.rows.get((table, student, m), []), "best", attack) for m in plan.methods}
        ranked = sorted(((c.mean, m, c) for m, c in cells.items() if c.mean is not None), reverse=True)
        if ranked:
            seeds = max(len(c.values) for _, _, c in ranked)
            out.append(f"- {attack_label(attack)} ({seeds} seed{'s' if seeds > 1 else ''}): "
                       + " > ".join(f"{run_label(m)} {c}" for _, m, c in ranked))
    return out


def claims(plan: Plan) -> list[str]:
    """The paper's claims, checked on our numbers."""
    evals = plan.evals()
    pc, out = plan.plan, []
    table = 4 if plan.dataset == "cifar100" else 3
    student = pc.students[0]

    def c(t: int, row: str, attack: str, ckpt: str = "best") -> Cell:
        return cell(plan, evals, plan.rows.get((t, student, row), []), ckpt, attack)

    def claim(text: str, better: Cell, worse: Cell) -> None:
        if better.mean is None or worse.mean is None:
            return
        d = paired(better.by_seed, worse.by_seed)
        if d.n == 0:
            return
        out.append(f"- {text}: {verdict(d)} ({better} vs {worse}; {describe(d)})")

    if 2 in pc.tables and table in pc.tables:
        teacher = cell(plan, evals, ["teacher"], "best", "pgd_trades")
        sat = c(table, "sat", "pgd_trades")
        if teacher.mean is not None and sat.mean is not None:
            gap = teacher.mean - sat.mean
            out.append(f"- The teacher beats the SAT student by {gap:+.2f} points of PGD_TRADES accuracy "
                       f"(teacher {teacher}, SAT {sat}): RSLAD's regime {'holds' if gap >= 5 else 'is weak'} "
                       "(the issue asks for at least 5).")
    if table in pc.tables:
        for attack in ("pgd_trades", "autoattack"):
            for other in plan.methods:
                if other not in ("rslad", "natural"):
                    claim(f"RSLAD beats {run_label(other)} ({attack_label(attack)}, best checkpoint)",
                          c(table, "rslad", attack), c(table, other, attack))
        claim("TRADES beats SAT (PGD_TRADES)", c(table, "trades", "pgd_trades"), c(table, "sat", "pgd_trades"))
        claim("ARD beats TRADES (PGD_TRADES)", c(table, "ard", "pgd_trades"), c(table, "trades", "pgd_trades"))
    if 5 in pc.tables:
        for attack in BLACK_BOX:
            for other in ("sat", "trades", "ard", "iad"):
                claim(f"RSLAD beats {run_label(other)} under {attack_label(attack)}",
                      c(5, "rslad", attack), c(5, other, attack))
    if 6 in pc.tables:
        for variant in ("ard-300", "ard_min+rslad_max", "rslad_min+ard_max"):
            claim(f"RSLAD beats {run_label(variant)} (PGD_TRADES)", c(6, "rslad", "pgd_trades"),
                  c(6, variant, "pgd_trades"))
        claim("Either RSLAD half improves ARD-300: ARD_min + RSLAD_max (PGD_TRADES)",
              c(6, "ard_min+rslad_max", "pgd_trades"), c(6, "ard-300", "pgd_trades"))
        claim("Either RSLAD half improves ARD-300: RSLAD_min + ARD_max (PGD_TRADES)",
              c(6, "rslad_min+ard_max", "pgd_trades"), c(6, "ard-300", "pgd_trades"))
    if 7 in pc.tables:
        for kind in ("ssl", "nsl"):
            for attack in ("pgd_trades", "autoattack"):
                claim(f"Robust soft labels beat {kind.upper()} ({attack_label(attack)})",
                      c(7, "rslad", attack), c(7, f"rslad-{kind}", attack))
    return out


def masking(plan: Plan) -> list[str]:
    """The gradient-masking checks (`evaluate.masking_checks`) on every evaluated checkpoint on disk:
    how many checkpoints each check could read, how many it fired on, and each firing."""
    checked = dict.fromkeys(MASKING_CHECKS, 0)
    fired: dict[str, list[str]] = {name: [] for name in MASKING_CHECKS}
    for run, entry in sorted(plan.evals().items()):
        for ckpt in ("best", "last"):
            for c in masking_checks(entry.get(ckpt, {})):
                checked[c["check"]] += 1
                if c["fired"]:
                    fired[c["check"]].append(f"  - {run} ({ckpt}): {c['detail']}")
    return [line for name, when in MASKING_CHECKS.items() if checked[name]
            for line in [f"- {when}: fired on {len(fired[name])} of {checked[name]} checkpoint(s)", *fired[name]]]


def student_label(plan: Plan) -> str:
    return f"{plan.plan.students[0]} on {plan.dataset}"


def write(plan: Plan, seconds: float | None = None) -> list[Path]:
    """Write every table (Markdown and CSV) and the summary; returns the files written."""
    written = []
    for t in build_tables(plan):
        for suffix, text in ((".md", t.markdown()), (".csv", t.csv())):
            path = plan.out / f"table{t.number}{suffix}"
            write_text(path, text)
            written.append(path)
    missing = sorted({3, 4} - set(plan.plan.tables))
    warnings = sorted({f"{run}: {w}" for run, e in plan.evals().items() for k, v in e.items()
                       if isinstance(v, dict) for w in v.get("warnings", [])})
    lines = [f"# Summary: `rslad-kit reproduce --preset {plan.preset}`", "",
             f"{len(plan.seeds)} seed(s) per student; eps = {plan.eps:.4g}; dataset {plan.dataset}; "
             f"students {', '.join(plan.plan.students)}; teacher {plan.teacher_spec}.",
             f"Wall-clock time of this invocation: {seconds / 60:.1f} min." if seconds is not None else "",
             *(["", plan.plan.note] if plan.plan.note else []),
             "", f"## Students ranked (best checkpoints, {student_label(plan)})", "", *rankings(plan), "",
             "## The paper's claims on these numbers", "",
             "Each claim compares two methods paired by seed (the same seed gives both the same initialisation "
             "and data order): the mean difference in points, its 95% interval, and the seeds it rests on. "
             "'holds' needs an interval that excludes 0; with one seed only the sign can be read.", "",
             *claims(plan), ""]
    pc = plan.plan
    budget = []
    if pc.slow_attack_seeds is not None and len(plan.seeds) > pc.slow_attack_seeds:
        budget.append(f"AutoAttack and Square ran on the first {pc.slow_attack_seeds} seed(s) (marked †)")
    if set(pc.slow_attack_checkpoints) != {"best", "last"}:
        budget.append(f"on the {' and '.join(pc.slow_attack_checkpoints)} checkpoints only (— elsewhere)")
    if pc.ablation_seeds is not None and len(plan.seeds) > pc.ablation_seeds:
        budget.append(f"the Table 6 variants trained on the first {pc.ablation_seeds} seed(s)")
    if pc.soft_label_seeds is not None and len(plan.seeds) > pc.soft_label_seeds:
        budget.append(f"the Table 7 variants trained on the first {pc.soft_label_seeds} seed(s)")
    if budget:
        lines += ["CPU budget of this preset: " + "; ".join(budget) + ". On a CPU, AutoAttack and Square cost a "
                  "fixed ~15-25 s and ~8-13 s per checkpoint whatever the model. Every other number uses every seed. "
                  f"`rslad-kit reproduce --preset {plan.preset} --full` lifts these cuts.", ""]
    if plan.plan.autoattack or plan.plan.square_queries != 5000:
        lines += [f"Reduced query attacks (a smoke setting, not the standard evaluation): AutoAttack = "
                  f"{', '.join(plan.plan.autoattack or ['standard'])}, Square = {plan.plan.square_queries} queries.",
                  ""]
    for number in missing:
        lines += [f"Table {number} is not part of this preset (Table 3 is CIFAR-10's white-box table, "
                  f"Table 4 CIFAR-100's; this preset's white-box results are in the other).", ""]
    lines += ["## Gradient-masking checks", "",
              "Where a weaker attack beats the stronger ones, or a huge eps leaves the model accurate, the gradient "
              "attacks overestimate robustness (gradient masking, or simply a weak gradient attack on this input); "
              "AutoAttack, which includes Square, is then the number to trust. Each check compares accuracies on "
              "the same test images (`rslad_kit.evaluate.masking_checks`).", "",
              *(masking(plan) or ["- no checkpoint has the accuracies a check needs"]), ""]
    if warnings:
        lines += ["## Evaluation warnings", "", *[f"- {w}" for w in warnings], ""]
    path = plan.out / "summary.md"
    write_text(path, "\n".join(lines))
    return [*written, path]
