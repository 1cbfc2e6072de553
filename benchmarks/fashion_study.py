"""The Fashion-MNIST regime study (issue 20): does RSLAD lead SAT and TRADES on Fashion-MNIST?

Pre-registered in docs/classroom_regime.md (the commit that added this script): the decision rule, the
cells, the seeds, the splits and the order of the phases were written down before any run.

* Splits. Checkpoints are selected on the 500-image validation split (inside `train`). Cells are
  compared and chosen on a second held-out split, the *choice* split: the last 1,000 images of the
  training set, which the 3,000 training images (the first 3,000) never include. The chosen cell is
  confirmed once on the first 1,000 official test images, with seeds 300-305, which neither this
  study (100-102) nor `reproduce` (0, 1, 2) uses.
* Phases, in this order: teachers; exploration of the first cell (w4) on the choice split, which is
  then the chosen cell (the budget pays for one cell before the confirmation); the controls and the
  confirmation, the controls first if RSLAD trails SAT or TRADES under PGD_TRADES on the choice split;
  then the other cells, as exploration. Whatever has not finished when the study is stopped is reported
  as not run.
* Every run is a kit `train` run under --out/runs/<name>, every evaluation a JSON file under
  --out/evals, so an interrupted study resumes where it stopped. One process, one thread.

Study 2 (`--study 2`, pre-registered in the same page before its runs) keeps the students and changes
the teacher: one trained on every training image but the choice split's, shipped with the kit. Study 3
(`--study 3`, exploration) runs study 1's w4 cell at eps 0.2 and at 28x28, each with its own teacher.

    python benchmarks/fashion_study.py              # every phase of study 1, resuming
    python benchmarks/fashion_study.py --study 2    # every phase of study 2, resuming
    python benchmarks/fashion_study.py --study 3    # study 3's two cells (--cells for one of them)
    python benchmarks/fashion_study.py --report     # the tables of all three from what is cached
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from rslad_kit import config, data, evaluate, loading, reproduce, runs, soft_labels, stats, train

STUDY_SEEDS = (100, 101, 102)
CONFIRM_SEEDS = tuple(range(300, 306))
CHOICE_N = 1000     # the choice split: the last CHOICE_N training images
TEST_N = 1000       # the confirmation: the first TEST_N official test images
AUTOATTACK = ("apgd-ce", "apgd-t")   # AutoAttack's two gradient attacks (pyautoattack's custom version)
ATTACKS = ("clean", "pgd_trades", "autoattack")
COLLAPSE = 50.0     # a SAT seed whose clean choice-split accuracy is below this has collapsed

# Everything a cell does not name: Fashion-MNIST at 14x14, 3,000 training images, eps 0.1, PGD-5 with
# step eps/2.5, 15 epochs with lr / 10 after 11 and 14, the rest the classroom preset (batch 128, SGD 0.1,
# weight decay 5e-4, batchmean KL, RSLAD alpha 5/6, TRADES beta 6).
BASE = dict(dataset="fashion", image_size=14, train_size=3000, val_size=500, epochs=15, milestones=(11, 14),
            attack=dict(eps=0.1, step_size=0.04, steps=5))

FULL_TEACHER, FULL_NATURAL = "fashion14-trades-w16-full", "fashion14-natural-w16-full"   # study 2
CONFIRM2_SEEDS = tuple(range(400, 406))
TEST2 = (1000, 2000)   # study 2 confirms on test images 1,000-1,999 (study 1 used 0-999)

TEACHERS = {
    "T": dict(method="trades", model="cnn-w16", epochs=20, milestones=(15, 18)),      # the robust teacher
    "Tsat": dict(method="sat", model="cnn-w16", epochs=20, milestones=(15, 18)),      # control: SAT-trained
    "Tnat": dict(method="natural", model="cnn-w16", epochs=10, milestones=(8, 9)),    # control: NSL
}
CELLS = {   # the student of each cell, in the order they are explored
    "w4": dict(model="cnn-w4"),
    "w2": dict(model="cnn-w2"),
    "w8": dict(model="cnn-w8"),
    # study 3 (exploration): study 1's w4 cell at a second eps, and at 28x28, each with its own teacher
    "w4-eps20": dict(model="cnn-w4", attack=dict(eps=0.2, step_size=0.08, steps=5)),
    "w4-px28": dict(model="cnn-w4", image_size=28),
}
STUDY1_CELLS, STUDY3_CELLS = ("w4", "w2", "w8"), ("w4-eps20", "w4-px28")
ARMS = {    # what each method row trains, over the cell's student
    "sat": dict(method="sat"),
    "trades": dict(method="trades"),
    "rslad": dict(method="rslad", teacher="runs/T"),
    "rslad-ls": dict(method="rslad", soft_labels="smooth"),   # smoothing matched to T's entropy
    "rslad-nsl": dict(method="rslad", teacher="runs/Tnat"),
    "rslad-tsat": dict(method="rslad", teacher="runs/Tsat"),
    "sat-fair": dict(method="sat", lr=0.05),                  # only if SAT collapses in the chosen cell
    # study 2: the teacher trained on the full training set, and its controls
    "rslad-F": dict(method="rslad", teacher=f"teachers/{FULL_TEACHER}"),
    "rslad-lsF": dict(method="rslad", soft_labels="smooth"),  # smoothing matched to the full teacher's entropy
    "rslad-nslF": dict(method="rslad", teacher=f"teachers/{FULL_NATURAL}"),
    # study 2, exploration: the paper's epoch ratios (RSLAD 300 : SAT 205 : TRADES 76), lr / 10 at 75%, 90%
    "rslad-F-e30": dict(method="rslad", teacher=f"teachers/{FULL_TEACHER}", epochs=30, milestones=(22, 27)),
    "sat-e20": dict(method="sat", epochs=20, milestones=(15, 18)),
    "trades-e8": dict(method="trades", epochs=8, milestones=(6, 7)),
    # study 3: RSLAD with the teacher trained in the cell's own setting (T's recipe there)
    "rslad-Tcell": dict(method="rslad"),
}
COMPARED = ("sat", "trades", "rslad")
CONTROLS = ("rslad-ls", "rslad-nsl", "rslad-tsat")


# --- data ------------------------------------------------------------------------------------------

def splits(root: str, test: tuple[int, int] = (0, TEST_N), image_size: int = BASE["image_size"]
           ) -> tuple[data.Dataset, data.Split, data.Split]:
    """The dataset every run trains on (its first 3,000 training images), the choice split and the
    confirmation's images `test` (first, last + 1) of the official test split."""
    full = data.load("fashion", root, val_size=BASE["val_size"], image_size=image_size)
    if BASE["train_size"] + CHOICE_N > len(full.train):
        sys.exit("the choice split would overlap the training images")
    ds = replace(full, train=full.train.take(BASE["train_size"]))   # what train_size=3000 loads
    choice = data.Split(full.train.x[-CHOICE_N:], full.train.y[-CHOICE_N:])
    return ds, choice, data.Split(full.test.x[slice(*test)], full.test.y[slice(*test)])


def matched_smoothing(teacher_dir: Path, ds: data.Dataset) -> tuple[float, float]:
    """The label smoothing s whose soft labels have the mean entropy of the teacher's on the training
    images (clean, eval mode), and that entropy. Entropy of (1-s)*onehot + s/C grows with s on [0, 1)."""
    teacher = loading.load_model(teacher_dir)
    with torch.no_grad():
        probs = torch.cat([torch.softmax(teacher(x), 1) for x in ds.train.x.split(500)])
    target = soft_labels.soft_label_stats(probs, ds.train.y)["entropy"]
    c = ds.num_classes

    def entropy(s: float) -> float:
        top, rest = 1 - s + s / c, s / c
        return -(top * math.log(top) + (c - 1) * rest * math.log(rest)) if s > 0 else 0.0

    low, high = 0.0, 1 - 1e-9
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if entropy(mid) < target else (low, mid)
    return round(low, 4), target


# --- runs and evaluations --------------------------------------------------------------------------

def cfg_of(name: str, overrides: dict, seed: int, out: Path) -> config.TrainConfig:
    overrides = dict(overrides)
    method = overrides.pop("method")
    teacher = overrides.pop("teacher", None)
    return config.preset("classroom", method, **{**BASE, **overrides}, seed=seed,
                         teacher=str(out / teacher) if teacher else None)


def train_run(name: str, cfg: config.TrainConfig, ds: data.Dataset, out: Path) -> float:
    """Train (or resume, or reuse) run `name`; the seconds this call spent."""
    run_dir = out / "runs" / name
    began = time.perf_counter()
    if not runs.is_finished(run_dir):
        print(f"[{time.strftime('%H:%M:%S')}] training {name}", flush=True)
        train.train(cfg, run_dir, progress=False, dataset=ds, resume=(run_dir / "last.pt").is_file())
    return round(time.perf_counter() - began, 1)


def evaluated(name: str, split_name: str, split: data.Split, out: Path, seconds: float,
              attacks: tuple[str, ...] = ATTACKS, run_dir: Path | None = None, eps: float = BASE["attack"]["eps"]
              ) -> dict:
    """The cached evaluation of run `name` on `split_name`: best checkpoint under `attacks`, last under
    clean and PGD_TRADES."""
    path = out / "evals" / f"{name}.{split_name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    run_dir = run_dir or out / "runs" / name
    began = time.perf_counter()
    best = evaluate.evaluate(loading.load_model(run_dir / "best.pt"), split, attacks, eps=eps,
                             autoattack_only=AUTOATTACK)
    last = evaluate.evaluate(loading.load_model(run_dir / "last.pt"), split, ("clean", "pgd_trades"), eps=eps)
    result = {"name": name, "split": split_name, "n": len(split), "eps": eps, "train_seconds": seconds,
              "eval_seconds": round(time.perf_counter() - began, 1),
              "epoch": runs.checkpoint_info(run_dir / "best.pt")["epoch"],
              **{a: best[a] for a in attacks}, **{f"last_{a}": last[a] for a in ("clean", "pgd_trades")}}
    return saved(result, out)


def saved(result: dict, out: Path) -> dict:
    """`result`, written to its cache file (evals/<name>.<split>.json) and logged."""
    runs.write_text(out / "evals" / f"{result['name']}.{result['split']}.json", json.dumps(result))
    print(f"[{time.strftime('%H:%M:%S')}] {json.dumps(result)}", flush=True)
    return result


def run_arm(cell: str, arm: str, seed: int, split_name: str, split: data.Split, ds: data.Dataset, out: Path,
            extra: dict | None = None, autoattack: bool | None = None) -> dict:
    """Train and score one row's run; AutoAttack by default only where the decision rests (the
    confirmations: on the choice split it cost ~4 minutes a student on study 1's shared core)."""
    overrides = {**CELLS[cell], **ARMS[arm], **(extra or {})}
    name = f"{cell}-{arm}-s{seed}"
    check_deadline()
    seconds = train_run(name, cfg_of(name, overrides, seed, out), ds, out)
    if autoattack is None:
        autoattack = split_name.startswith("test")
    result = evaluated(name, split_name, split, out, seconds, attacks=("clean", "pgd_trades"),
                       eps=overrides.get("attack", BASE["attack"])["eps"])
    return with_autoattack(result, split, out) if autoattack else result


def with_autoattack(result: dict, split: data.Split, out: Path) -> dict:
    """`result` (a cached evaluation) with AutoAttack on its best checkpoint added, and cached."""
    if "autoattack" in result:
        return result
    check_deadline()
    began = time.perf_counter()
    model = loading.load_model(out / "runs" / result["name"] / "best.pt")
    eps = result.get("eps", BASE["attack"]["eps"])   # evaluations cached before "eps" was recorded used BASE's
    aa = evaluate.evaluate(model, split, ("autoattack",), eps=eps, autoattack_only=AUTOATTACK)
    return saved({**result, "autoattack": aa["autoattack"],
                  "autoattack_seconds": round(time.perf_counter() - began, 1)}, out)


DEADLINE: str | None = None   # "HH:MM" UTC: no run or evaluation starts after it (--stop)


def check_deadline() -> None:
    if DEADLINE and time.strftime("%H:%M", time.gmtime()) >= DEADLINE:
        sys.exit(f"stopped at {DEADLINE} UTC as pre-registered; what finished is cached")


# --- the decision rule ------------------------------------------------------------------------------

def differences(rows: dict[str, dict[int, dict]], other: str, attack: str, ours: str = "rslad") -> stats.Paired:
    return stats.paired({s: r[attack] for s, r in rows[ours].items() if attack in r},
                        {s: r[attack] for s, r in rows[other].items() if attack in r})


def meets_rule(rows: dict[str, dict[int, dict]], ours: str = "rslad") -> bool:
    """Row `ours` (RSLAD) ahead of SAT and of TRADES by >= 2 points under PGD_TRADES and AutoAttack, each
    paired 95% interval above 0."""
    return all(p.mean is not None and p.mean >= 2 and p.low is not None and p.low > 0
               for p in (differences(rows, o, a, ours) for o in ("sat", "trades") for a in ("pgd_trades", "autoattack")))


def cached(cell: str, arms: tuple[str, ...], seeds: tuple[int, ...], split_name: str, out: Path
           ) -> dict[str, dict[int, dict]]:
    found: dict[str, dict[int, dict]] = {}
    for arm in arms:
        for seed in seeds:
            path = out / "evals" / f"{cell}-{arm}-s{seed}.{split_name}.json"
            if path.is_file():
                found.setdefault(arm, {})[seed] = json.loads(path.read_text())
    return found


# --- the study --------------------------------------------------------------------------------------

def study(out: Path, root: str, cells: list[str]) -> None:
    torch.set_num_threads(1)
    ds, choice, test = splits(root)
    (out / "evals").mkdir(parents=True, exist_ok=True)
    for name, recipe in TEACHERS.items():                                   # phase 1: teachers
        seconds = train_run(name, cfg_of(name, recipe, 0, out), ds, out)
        evaluated(name, "choice", choice, out, seconds, attacks=("clean", "pgd_trades"))   # no decision reads their AA
    chosen, later = cells[0], cells[1:]   # the budget pays for one cell before the confirmation
    for seed in STUDY_SEEDS:                                                # phase 2: exploration
        for arm in COMPARED:
            run_arm(chosen, arm, seed, "choice", choice, ds, out)
    print(f"[{time.strftime('%H:%M:%S')}] chosen cell: {chosen}", flush=True)

    def controls() -> None:                                                 # phase 3: controls
        smoothing, entropy = matched_smoothing(out / "runs" / "T", ds)
        runs.write_text(out / "smoothing.json", json.dumps({"smoothing": smoothing, "teacher_entropy": entropy}))
        for seed in STUDY_SEEDS:
            for arm in CONTROLS:
                run_arm(chosen, arm, seed, "choice", choice, ds, out,
                        extra={"smoothing": smoothing} if arm == "rslad-ls" else None)
        if any(r["clean"] < COLLAPSE for r in cached(chosen, ("sat",), STUDY_SEEDS, "choice", out)["sat"].values()):
            for seed in STUDY_SEEDS:
                run_arm(chosen, "sat-fair", seed, "choice", choice, ds, out)

    def confirmation() -> None:                                             # phase 4: confirmation
        for seed in CONFIRM_SEEDS:
            for arm in COMPARED:
                run_arm(chosen, arm, seed, "test", test, ds, out)

    explored = cached(chosen, COMPARED, STUDY_SEEDS, "choice", out)
    trails = any(differences(explored, other, "pgd_trades").mean < 0 for other in ("sat", "trades"))
    for phase in ((controls, confirmation) if trails else (confirmation, controls)):
        phase()
    for cell in later:                                                      # phase 5: more cells, exploration
        for seed in STUDY_SEEDS:
            for arm in COMPARED:
                run_arm(cell, arm, seed, "choice", choice, ds, out)


def study2(out: Path, root: str) -> None:
    """Study 2: study 1's students, a teacher trained on the full training set (docs/classroom_regime.md)."""
    torch.set_num_threads(1)
    ds, choice, test = splits(root, TEST2)
    (out / "evals").mkdir(parents=True, exist_ok=True)
    for name in (FULL_TEACHER, FULL_NATURAL):                  # phase 1: teachers, by the kit's own command
        check_deadline()
        run_dir, began = out / "teachers" / name, time.perf_counter()
        if not runs.is_finished(run_dir):
            print(f"[{time.strftime('%H:%M:%S')}] training teacher {name}", flush=True)
            reproduce.retrain_teacher(name, out / "teachers", progress=False, data_root=root)
        evaluated(name, "choice", choice, out, round(time.perf_counter() - began, 1),
                  attacks=("clean", "pgd_trades"), run_dir=run_dir)
    rows = ("sat", "trades", "rslad-F")
    for seed in STUDY_SEEDS:                                   # phase 2: exploration
        run_arm("w4", "rslad-F", seed, "choice", choice, ds, out)
    for seed in STUDY_SEEDS:
        for arm in rows:
            run_arm("w8", arm, seed, "choice", choice, ds, out)

    def smaller(cell: str) -> float:                           # phase 3: the choice
        explored = cached(cell, rows, STUDY_SEEDS, "choice", out)
        return min(differences(explored, other, "pgd_trades", "rslad-F").mean for other in ("sat", "trades"))

    chosen = max(("w4", "w8"), key=smaller)
    runs.write_text(out / "study2.json", json.dumps({"chosen": chosen, "smaller_difference": {
        c: smaller(c) for c in ("w4", "w8")}}))
    print(f"[{time.strftime('%H:%M:%S')}] study 2 chose {chosen}", flush=True)

    def controls() -> None:                                    # phase 4a: controls, under AutoAttack too
        smoothing, entropy = matched_smoothing(out / "teachers" / FULL_TEACHER, ds)
        runs.write_text(out / "smoothing2.json", json.dumps({"smoothing": smoothing, "teacher_entropy": entropy}))
        for seed in STUDY_SEEDS:
            for arm in ("rslad-lsF", "rslad-nslF"):
                run_arm(chosen, arm, seed, "choice", choice, ds, out, autoattack=True,
                        extra={"smoothing": smoothing} if arm == "rslad-lsF" else None)
            for arm in ("sat", "rslad-F"):
                with_autoattack(cached(chosen, (arm,), (seed,), "choice", out)[arm][seed], choice, out)

    def confirmation() -> None:                                # phase 4b: fresh seeds, fresh test images
        for seed in CONFIRM2_SEEDS:
            for arm in rows:
                run_arm(chosen, arm, seed, "test2", test, ds, out)

    trails = smaller(chosen) < 0
    for phase in ((controls, confirmation) if trails else (confirmation, controls)):
        phase()
    for seed in STUDY_SEEDS:                                   # phase 5: study 1's open control
        for arm in ("rslad-ls", "rslad", "sat"):
            with_autoattack(cached("w4", (arm,), (seed,), "choice", out)[arm][seed], choice, out)
    for seed in STUDY_SEEDS:                                   # phase 6: the paper's epoch ratios
        for arm in ("sat-e20", "trades-e8", "rslad-F-e30"):
            run_arm(chosen, arm, seed, "choice", choice, ds, out)


def study3(out: Path, root: str, cell: str) -> None:
    """Study 3 (exploration, choice split only): study 1's w4 cell at a second eps or at 28x28, with a
    teacher trained by T's recipe in that setting (docs/classroom_regime.md)."""
    torch.set_num_threads(1)
    setting = {k: v for k, v in CELLS[cell].items() if k != "model"}
    ds, choice, _ = splits(root, image_size=setting.get("image_size", BASE["image_size"]))
    (out / "evals").mkdir(parents=True, exist_ok=True)
    teacher = f"T-{cell}"   # the report lists it among the teachers
    check_deadline()
    seconds = train_run(teacher, cfg_of(teacher, {**TEACHERS["T"], **setting}, 0, out), ds, out)
    evaluated(teacher, "choice", choice, out, seconds, attacks=("clean", "pgd_trades"),
              eps=setting.get("attack", BASE["attack"])["eps"])
    for seed in STUDY_SEEDS:
        for arm in ("sat", "trades", "rslad-Tcell"):
            run_arm(cell, arm, seed, "choice", choice, ds, out,
                    extra={"teacher": f"runs/{teacher}"} if arm == "rslad-Tcell" else None)


# --- the report -------------------------------------------------------------------------------------

PAIRS = (   # (split, ours, theirs, what it asks): the comparisons the report lists beyond row - SAT / TRADES
    ("choice", "rslad-lsF", "rslad-F", "study 2 control: smoothing of the same entropy, no teacher"),
    ("choice", "rslad-nslF", "rslad-F", "study 2 control: a natural teacher trained on the same images"),
    ("choice", "rslad-ls", "rslad", "study 1 control: smoothing of the same entropy, no teacher"),
    ("choice", "rslad-F", "rslad", "study 2 teacher against study 1's, same students"),
    ("choice", "rslad-F-e30", "sat-e20", "the paper's epoch ratios: RSLAD 30 against SAT 20"),
    ("choice", "rslad-F-e30", "trades-e8", "the paper's epoch ratios: RSLAD 30 against TRADES 8"),
    ("choice", "rslad-F-e30", "rslad-F", "RSLAD 30 epochs against 15"),
)


def report(out: Path) -> str:
    lines = []
    teachers = (*TEACHERS, FULL_TEACHER, FULL_NATURAL, *(f"T-{cell}" for cell in STUDY3_CELLS))
    teacher_rows = [json.loads((out / "evals" / f"{t}.choice.json").read_text())
                    for t in teachers if (out / "evals" / f"{t}.choice.json").is_file()]
    if teacher_rows:
        lines += ["| teacher (choice split, seed 0) | clean | PGD_TRADES | last clean | last PGD_TRADES "
                  "| train s |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['clean']:.1f} | {r['pgd_trades']:.1f} | "
                  f"{r['last_clean']:.1f} | {r['last_pgd_trades']:.1f} | {r['train_seconds']:.0f} |" for r in teacher_rows]
        lines.append("")
    for file, teacher in (("smoothing.json", "T"), ("smoothing2.json", FULL_TEACHER)):
        if (out / file).is_file():
            s = json.loads((out / file).read_text())
            lines += [f"Entropy-matched label smoothing: s = {s['smoothing']} ({teacher}'s mean entropy "
                      f"{s['teacher_entropy']:.3f} nats on the training images).", ""]
    lines += ["| split | cell | row | n | clean | PGD_TRADES | AutoAttack | last PGD_TRADES | row − SAT PGD_TRADES "
              "| row − SAT AA | row − TRADES PGD_TRADES | row − TRADES AA |", "|---" * 12 + "|"]
    compared = set()   # unordered pairs: SAT - TRADES and TRADES - SAT are one comparison
    for split_name, seeds in (("choice", STUDY_SEEDS), ("test", CONFIRM_SEEDS), ("test2", CONFIRM2_SEEDS)):
        for cell in CELLS:
            rows = cached(cell, tuple(ARMS), seeds, split_name, out)
            for arm, by_seed in rows.items():
                def ms(a: str) -> str:
                    v = [r[a] for r in by_seed.values() if a in r]
                    if not v:
                        return "–"
                    n = f" (n={len(v)})" if len(v) < len(by_seed) else ""
                    return (f"{statistics.fmean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}") + n

                diffs = []
                for other in ("sat", "trades"):
                    for a in ("pgd_trades", "autoattack"):
                        ours = {s: r[a] for s, r in by_seed.items() if a in r}
                        theirs = {s: r[a] for s, r in rows.get(other, {}).items() if a in r}
                        if arm == other or not ours or not theirs:
                            diffs.append("–")
                            continue
                        p = stats.paired(ours, theirs)
                        compared.add((split_name, cell, frozenset((arm, other)), a))
                        diffs.append(str(p).replace(" over", " /").replace(" seeds", ""))
                lines.append(f"| {split_name} | {cell} | {arm} | {len(by_seed)} | {ms('clean')} | {ms('pgd_trades')} "
                             f"| {ms('autoattack')} | {ms('last_pgd_trades')} | " + " | ".join(diffs) + " |")
    chosen = next(iter(CELLS))
    verdict = "no cell explored yet"
    if cached(chosen, COMPARED, STUDY_SEEDS, "choice", out):
        confirm = cached(chosen, COMPARED, CONFIRM_SEEDS, "test", out)
        done = min((len(confirm.get(m, {})) for m in COMPARED), default=0)
        held = meets_rule(confirm) if done == len(CONFIRM_SEEDS) else None
        verdict = (f"chosen cell {chosen} (rule met on the choice split: "
                   f"{meets_rule(cached(chosen, COMPARED, STUDY_SEEDS, 'choice', out))}); confirmation on "
                   f"{done} of {len(CONFIRM_SEEDS)} fresh seeds: rule met = {held}")
    pair_lines = []
    for split_name, ours, theirs, what in PAIRS:
        for cell in CELLS:
            rows = cached(cell, (ours, theirs), STUDY_SEEDS, split_name, out)
            if len(rows) < 2:
                continue
            cells = []
            for a in ("clean", "pgd_trades", "autoattack"):
                p = differences(rows, theirs, a, ours)
                if p.n:
                    compared.add((split_name, cell, frozenset((ours, theirs)), a))
                cells.append(str(p).replace(" over", " /").replace(" seeds", "") if p.n else "–")
            pair_lines.append(f"| {cell} | {ours} − {theirs} | {what} | " + " | ".join(cells) + " |")
    if pair_lines:
        lines += ["", "| cell | difference (choice split) | what it asks | clean | PGD_TRADES | AutoAttack |",
                  "|---|---|---|---|---|---|", *pair_lines]
    choice2 = out / "study2.json"
    if choice2.is_file():
        chosen2 = json.loads(choice2.read_text())["chosen"]
        confirm = cached(chosen2, ("sat", "trades", "rslad-F"), CONFIRM2_SEEDS, "test2", out)
        done = min((len(confirm.get(m, {})) for m in ("sat", "trades", "rslad-F")), default=0)
        held = meets_rule(confirm, "rslad-F") if done == len(CONFIRM2_SEEDS) else None
        verdict += (f". Study 2: chosen cell {chosen2}; confirmation on {done} of {len(CONFIRM2_SEEDS)} fresh seeds "
                    f"(test images {TEST2[0]:,}-{TEST2[1] - 1:,}): rule met = {held}")
    lines += ["", f"{len(compared)} distinct paired comparisons above (each a 95% interval, uncorrected). {verdict}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/fashion-study", type=Path)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--cells", nargs="*", choices=list(CELLS),
                        help="study 1: w4 w2 w8 (the default); study 3: w4-eps20 w4-px28 (the default)")
    parser.add_argument("--study", type=int, choices=(1, 2, 3), default=1, help="which pre-registered study to run")
    parser.add_argument("--stop", help="HH:MM UTC: start no run or evaluation after it (the pre-registered end)")
    parser.add_argument("--report", action="store_true", help="print the tables from the cache and stop")
    args = parser.parse_args()
    global DEADLINE
    DEADLINE = args.stop
    if args.cells is None:
        args.cells = list(STUDY3_CELLS if args.study == 3 else STUDY1_CELLS)
    if not args.report:
        if args.study == 3:
            for cell in args.cells:
                study3(args.out, args.data_root, cell)
        elif args.study == 2:
            study2(args.out, args.data_root)
        else:
            study(args.out, args.data_root, args.cells)
    print(report(args.out))


if __name__ == "__main__":
    main()
