"""The powered classroom regime study: where do robust soft labels beat SAT and TRADES on digits?

Each *cell* is one regime (student width, teacher, eps, epochs, input size, training attack). In a
cell, SAT, TRADES and RSLAD train from the same seeds (same initialisation and data order), so the
methods are compared paired by seed: RSLAD - SAT and RSLAD - TRADES, each with its 95% interval
(`rslad_kit.stats.paired`). SAT and TRADES do not read the teacher, so cells that differ only in the
teacher share their SAT and TRADES runs.

Decisions are made on the validation split with the study seeds (100-105); the chosen cell is then
confirmed once on the test split with seeds the study never used (`--confirm CELL`, seeds 200-205).
Every run and evaluation is cached as JSON under --out, so an interrupted study resumes.

    python benchmarks/regime_study.py                 # every cell, validation split
    python benchmarks/regime_study.py --cells base w8 # some cells
    python benchmarks/regime_study.py --confirm w8    # the chosen cell on the test split, fresh seeds
    python benchmarks/regime_study.py --report        # the tables from what is cached

The write-up is docs/classroom_regime.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

STUDY_SEEDS = tuple(range(100, 106))
CONFIRM_SEEDS = tuple(range(200, 206))
METHODS = ("sat", "trades", "rslad")
ATTACKS = ("clean", "pgd_trades", "cw")


def ep(n: int) -> dict:
    """n epochs, lr / 10 after 75% and 90% of them (the classroom schedule)."""
    return dict(epochs=n, milestones=(round(0.75 * n), round(0.9 * n)))


def at(eps: float, steps: int = 5) -> dict:
    """The classroom training attack at `eps`: `steps` steps of eps / 2.5 (PGD-5) or eps / 4 (PGD-10)."""
    return dict(attack=dict(eps=eps, step_size=eps / (2.5 if steps <= 5 else 4), steps=steps))


# Teachers: TRADES unless named; the classroom teacher is T16 (width 16, 40 epochs, eps 0.2, 8x8).
TEACHERS = {
    "T16": dict(method="trades", model="cnn-w16", **ep(40)),
    "T32x80": dict(method="trades", model="cnn-w32", **ep(80)),
    "T16sat": dict(method="sat", model="cnn-w16", **ep(40)),
    "T16eps15": dict(method="trades", model="cnn-w16", **ep(40), **at(0.15)),
    "T16px16": dict(method="trades", model="cnn-w16", image_size=16, **ep(40)),
}

# Cells: the student's settings (shared by its SAT/TRADES/RSLAD runs) and RSLAD's teacher.
CELLS = {
    "base": (dict(model="cnn-w4", **ep(40)), "T16"),                  # the classroom preset of issue 4
    "w8": (dict(model="cnn-w8", **ep(40)), "T16"),                     # a wider student
    "e80": (dict(model="cnn-w4", **ep(80)), "T16"),                    # twice the epochs
    "T32x80": (dict(model="cnn-w4", **ep(40)), "T32x80"),              # a stronger teacher
    "w8-T32x80": (dict(model="cnn-w8", **ep(40)), "T32x80"),
    "e80-T32x80": (dict(model="cnn-w4", **ep(80)), "T32x80"),
    "pgd10": (dict(model="cnn-w4", **ep(40), **at(0.2, 10)), "T16"),   # a stronger training attack
    "w2": (dict(model="cnn-w2", **ep(40)), "T16"),                     # a narrower student
    "T16sat": (dict(model="cnn-w4", **ep(40)), "T16sat"),              # a SAT-trained teacher
    "eps15": (dict(model="cnn-w4", **ep(40), **at(0.15)), "T16eps15"),  # a smaller threat
    "px16": (dict(model="cnn-w4", image_size=16, **ep(40)), "T16px16"),  # digits upsampled to 16x16
}


def _key(d: dict) -> str:
    return json.dumps(d, sort_keys=True)


def teacher_of(cell: str, method: str) -> str | None:
    """The teacher a method reads in `cell`: RSLAD's; SAT and TRADES read none (so cells share them)."""
    return CELLS[cell][1] if method == "rslad" else None


def run_name(method: str, student: dict, teacher: str | None, seed: int) -> str:
    """A stable name for a run: identical settings share one run (and its cache)."""
    tag = hashlib.sha1(_key({"m": method, "s": student, "t": teacher}).encode()).hexdigest()[:8]
    return f"{method}-{student['model']}-{tag}-s{seed}"


def job(args: tuple[str, dict, str | None, int, str, str]) -> dict:
    """Train one run (or reuse it) and evaluate its best checkpoint on `split`."""
    name, settings, teacher, seed, split, out = args
    import torch

    torch.set_num_threads(1)
    from rslad_kit import config, data, evaluate, loading, runs, train

    result_path = Path(out) / "evals" / f"{name}.{split}.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    settings = dict(settings)
    method = settings.pop("method")
    cfg = config.preset("classroom", method, seed=seed, **settings,
                        teacher=str(Path(out) / "runs" / teacher) if teacher else None)
    ds = data.load("digits", image_size=cfg.image_size)
    run_dir = Path(out) / "runs" / name
    began = time.perf_counter()
    if not runs.is_finished(run_dir):
        train.train(cfg, run_dir, progress=False, dataset=ds, resume=(run_dir / "last.pt").is_file())
    seconds = time.perf_counter() - began
    model = loading.load_model(run_dir)
    row = evaluate.evaluate(model, getattr(ds, split), ATTACKS, eps=cfg.attack.eps)
    result = {"name": name, "seed": seed, "split": split, "train_seconds": round(seconds, 1),
              "epoch": runs.checkpoint_info(run_dir / "best.pt")["epoch"], **{a: row[a] for a in ATTACKS}}
    runs.write_text(result_path, json.dumps(result))
    return result


def student_jobs(cells: list[str], seeds: tuple[int, ...], split: str, out: str) -> list[tuple]:
    jobs = {}
    for cell in cells:
        student = CELLS[cell][0]
        for seed in seeds:
            for method in METHODS:
                t = teacher_of(cell, method)
                name = run_name(method, student, t, seed)
                jobs[name] = (name, {"method": method, **student}, t, seed, split, out)
    return list(jobs.values())


def run(cells: list[str], seeds: tuple[int, ...], split: str, out: str, workers: int) -> None:
    Path(out, "evals").mkdir(parents=True, exist_ok=True)
    teachers = sorted({CELLS[c][1] for c in cells})
    teacher_jobs = [(t, TEACHERS[t], None, 0, "val", out) for t in teachers]
    jobs = student_jobs(cells, seeds, split, out)   # in the order of `cells`: partial results are useful
    with ProcessPoolExecutor(workers) as pool:
        for r in pool.map(job, teacher_jobs):
            print(json.dumps(r), flush=True)
        for r in pool.map(job, jobs):
            print(json.dumps(r), flush=True)


def results(cell: str, seeds: tuple[int, ...], split: str, out: str) -> dict[str, dict[int, dict]]:
    """method -> seed -> result row, for what is cached."""
    found: dict[str, dict[int, dict]] = {}
    for method in METHODS:
        for seed in seeds:
            name = run_name(method, CELLS[cell][0], teacher_of(cell, method), seed)
            path = Path(out) / "evals" / f"{name}.{split}.json"
            if path.is_file():
                found.setdefault(method, {})[seed] = json.loads(path.read_text())
    return found


def report(cells: list[str], seeds: tuple[int, ...], split: str, out: str) -> str:
    from rslad_kit.stats import paired

    lines = [f"Split: {split}; seeds {seeds[0]}-{seeds[-1]}. Means ± sd over seeds; paired differences "
             "with their 95% t-interval.", ""]
    teacher_rows = []
    for t in sorted({CELLS[c][1] for c in cells}):
        path = Path(out) / "evals" / f"{t}.val.json"
        if path.is_file():
            r = json.loads(path.read_text())
            teacher_rows.append(f"| {t} | {r['clean']:.2f} | {r['pgd_trades']:.2f} | {r['cw']:.2f} "
                                f"| {r['train_seconds']:.0f} |")
    if teacher_rows:
        lines += ["| teacher (validation, one seed) | clean | PGD_TRADES | CW∞ | train s |", "|---|---|---|---|---|",
                  *teacher_rows, ""]
    head = "| cell | n | " + " | ".join(f"{m.upper()} {a}" for m in METHODS for a in ("PGD", "CW")) + \
           " | RSLAD−SAT PGD | RSLAD−SAT CW | RSLAD−TRADES PGD | RSLAD−TRADES CW |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for cell in cells:
        r = results(cell, seeds, split, out)
        if len(r) < len(METHODS):
            continue
        def ms(m, a):
            v = [row[a] for row in r[m].values()]
            return f"{statistics.fmean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"
        def d(a, other):
            ours, theirs = ({s: x[a] for s, x in r[m].items()} for m in ("rslad", other))
            wins = sum(ours[s] > theirs[s] for s in set(ours) & set(theirs))
            return f"{paired(ours, theirs)}; ahead on {wins}"
        n = min(len(v) for v in r.values())
        lines.append(f"| {cell} | {n} | " + " | ".join(ms(m, a) for m in METHODS for a in ("pgd_trades", "cw"))
                     + " | " + " | ".join(d(a, o) for o in ("sat", "trades") for a in ("pgd_trades", "cw")) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="*", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--confirm", choices=list(CELLS), help="the chosen cell, on the test split, fresh seeds")
    parser.add_argument("--report", action="store_true", help="print the tables from the cache and stop")
    parser.add_argument("--out", default="results/regime-study")
    parser.add_argument("--seeds", type=int, default=len(STUDY_SEEDS),
                        help="the first N study seeds (3 to explore a cell, 6 for a cell a decision rests on)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    cells, seeds, split = args.cells, STUDY_SEEDS[:args.seeds], "val"
    if args.confirm:
        cells, seeds, split = [args.confirm], CONFIRM_SEEDS, "test"
    if not args.report:
        run(cells, seeds, split, args.out, args.workers)
    print(report(cells, seeds, split, args.out))


if __name__ == "__main__":
    main()
