"""The classroom regime study (issue: choose a digits regime where the teacher clearly beats SAT).

Trains teachers and students on digits under varied sizes, eps, schedules, KL scale and RSLAD alpha,
and reports validation accuracy (clean and PGD_TRADES-20, 180 images). Decisions are made on the
validation split, never on the test set. Runs go two at a time (one thread each) on a 2-core CPU;
results are cached as JSON, so an interrupted study resumes. Every setting not named here is the
classroom preset's (weight decay 5e-4, batch 128, lr 0.1 / 10 after 75% and 90% of the epochs).
The write-up with the numbers is docs/classroom_regime.md.

    python benchmarks/classroom_regime.py {teachers,students,batchmean,eps,eps-students,all}
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def run_one(args: tuple[str, dict, str]) -> dict:
    name, overrides, out = args
    import torch

    torch.set_num_threads(1)
    from rslad_kit import config, data, evaluate, loading, runs, train

    result_path = Path(out) / f"{name}.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    overrides = dict(overrides)
    method = overrides.pop("method")
    teacher = overrides.pop("teacher", None)
    if teacher:
        overrides["teacher"] = str(Path(out) / "runs" / teacher)
    cfg = config.preset("classroom", method, **overrides)
    ds = data.load("digits", image_size=cfg.image_size)
    run_dir = Path(out) / "runs" / name
    start = time.time()
    if not runs.is_finished(run_dir):
        train.train(cfg, run_dir, progress=False, dataset=ds, resume=(run_dir / "last.pt").exists())
    seconds = time.time() - start
    model = loading.load_model(run_dir)
    row = evaluate.evaluate(model, ds.val, ["clean", "pgd_trades"], eps=cfg.attack.eps)
    last = loading.load_model(run_dir / "last.pt")
    row_last = evaluate.evaluate(last, ds.val, ["clean", "pgd_trades"], eps=cfg.attack.eps)
    result = {"name": name, "method": method, "teacher": teacher, **{k: v for k, v in overrides.items() if k != "teacher"},
              "val_clean": row["clean"], "val_pgd": row["pgd_trades"],
              "last_clean": row_last["clean"], "last_pgd": row_last["pgd_trades"], "train_seconds": round(seconds, 1)}
    result_path.write_text(json.dumps(result, default=str))
    return result


def ep(n, **kw):
    """A schedule of n epochs with lr / 10 after 75% and 90% of them."""
    return dict(epochs=n, milestones=(round(0.75 * n), round(0.9 * n)), **kw)


KL1 = dict(loss_params={"kl_scale": 1.0})     # batchmean KL
KL01 = dict(loss_params={"kl_scale": 0.1})    # the official RSLAD / ARD (10 classes) scale

PHASES = {
    # Teachers at eps 0.2: which width / method gives the most robust teacher in a CPU budget?
    "teachers": {
        "T-trades-w32-e40": dict(method="trades", model="cnn-w32", channels_last=True, **ep(40)),
        "T-trades-w16-e40": dict(method="trades", model="cnn-w16", channels_last=True, **ep(40)),
        "T-sat-w32-e40": dict(method="sat", model="cnn-w32", channels_last=True, **ep(40)),
        "T-trades-w32-e80": dict(method="trades", model="cnn-w32", channels_last=True, **ep(80)),
    },
    # Width-4 students at eps 0.2, one shared 40-epoch schedule, the official KL scalings (x0.1).
    "students": {
        **{f"S-{m}-w4": dict(method=m, model="cnn-w4", **ep(40)) for m in ("natural", "sat", "trades", "mart")},
        "S-iad-w4-T16": dict(method="iad", model="cnn-w4", teacher="T-trades-w16-e40", **ep(40)),
        **{f"S-{m}-w4-T16": dict(method=m, model="cnn-w4", teacher="T-trades-w16-e40", **KL01, **ep(40))
           for m in ("ard", "rslad")},
        "S-rslad-w4-T32": dict(method="rslad", model="cnn-w4", teacher="T-trades-w32-e40", **KL01, **ep(40)),
        "S-ard-w4-T32": dict(method="ard", model="cnn-w4", teacher="T-trades-w32-e40", **KL01, **ep(40)),
        "S-rslad-w4-T16-a1": dict(method="rslad", model="cnn-w4", teacher="T-trades-w16-e40",
                                  loss_params={"kl_scale": 0.1, "alpha": 1.0}, **ep(40)),
        "S-rslad-w4-T16-a05": dict(method="rslad", model="cnn-w4", teacher="T-trades-w16-e40",
                                   loss_params={"kl_scale": 0.1, "alpha": 0.5}, **ep(40)),
        "S-rslad-w4-T16-kl1": dict(method="rslad", model="cnn-w4", teacher="T-trades-w16-e40",
                                   loss_params={"kl_scale": 1.0}, **ep(40)),
    },
    # Batchmean KL (kl_scale 1) for every distiller: epochs, alpha, teacher, student width, seeds, eps.
    "batchmean": {
        "S-ard-w4-T16-kl1": dict(method="ard", model="cnn-w4", teacher="T-trades-w16-e40", **KL1, **ep(40)),
        "S-rslad-w4-T16-kl1-e20": dict(method="rslad", model="cnn-w4", teacher="T-trades-w16-e40", **KL1, **ep(20)),
        "S-rslad-w4-T16-kl1-e60": dict(method="rslad", model="cnn-w4", teacher="T-trades-w16-e40", **KL1, **ep(60)),
        "S-sat-w4-e20": dict(method="sat", model="cnn-w4", **ep(20)),
        "S-trades-w4-e20": dict(method="trades", model="cnn-w4", **ep(20)),
        "S-rslad-w4-T32-kl1": dict(method="rslad", model="cnn-w4", teacher="T-trades-w32-e40", **KL1, **ep(40)),
        "S-rslad-w4-T16-kl1-a1": dict(method="rslad", model="cnn-w4", teacher="T-trades-w16-e40",
                                      loss_params={"kl_scale": 1.0, "alpha": 1.0}, **ep(40)),
        "S-rslad-w4-T16-kl1-a05": dict(method="rslad", model="cnn-w4", teacher="T-trades-w16-e40",
                                       loss_params={"kl_scale": 1.0, "alpha": 0.5}, **ep(40)),
        "S-sat-w4-s1": dict(method="sat", model="cnn-w4", seed=1, **ep(40)),
        "S-rslad-w4-T16-kl1-s1": dict(method="rslad", model="cnn-w4", teacher="T-trades-w16-e40", seed=1,
                                      **KL1, **ep(40)),
        "S-sat-w8": dict(method="sat", model="cnn-w8", **ep(40)),
        "S-rslad-w8-T16-kl1": dict(method="rslad", model="cnn-w8", teacher="T-trades-w16-e40", **KL1, **ep(40)),
    },
    # The time budget: 30 epochs, and PGD-5 training attacks (step eps/2.5), two seeds each.
    "budget": {
        f"S-{m}-w4-{tag}-s{seed}": dict(
            method=m, model="cnn-w4", seed=seed, **(KL1 if m == "rslad" else {}),
            **({"teacher": "T-trades-w16-e40"} if m == "rslad" else {}),
            **(ep(30) if tag.startswith("e30") else ep(40)),
            **({"attack": dict(steps=5, step_size=0.08)} if tag.endswith("pgd5") else {}))
        for m in ("sat", "trades", "rslad") for tag in ("e30", "e40-pgd5", "e30-pgd5") for seed in (0, 1)
    },
    # eps 0.1 and 0.3: teacher and the two key students.
    "eps": {
        **{f"T-trades-w16-e40-eps{e}": dict(method="trades", model="cnn-w16", channels_last=True,
                                            attack=dict(eps=e, step_size=e / 4), **ep(40)) for e in (0.1, 0.3)},
    },
    "eps-students": {
        **{f"S-sat-w4-eps{e}": dict(method="sat", model="cnn-w4", attack=dict(eps=e, step_size=e / 4), **ep(40))
           for e in (0.1, 0.3)},
        **{f"S-rslad-w4-T16-kl1-eps{e}": dict(method="rslad", model="cnn-w4", teacher=f"T-trades-w16-e40-eps{e}",
                                              attack=dict(eps=e, step_size=e / 4), **KL1, **ep(40))
           for e in (0.1, 0.3)},
    },
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=list(PHASES) + ["all"])
    parser.add_argument("--out", default="/tmp/regime")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    phases = list(PHASES) if args.phase == "all" else [args.phase]
    for phase in phases:
        jobs = [(name, overrides, args.out) for name, overrides in PHASES[phase].items()]
        with ProcessPoolExecutor(args.workers) as pool:
            for result in pool.map(run_one, jobs):
                print(json.dumps(result), flush=True)
        print_table(args.out)


def print_table(out: str) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(Path(out).glob("*.json"))]
    print(f"{'run':<24} {'val clean':>9} {'val PGD':>8} {'last clean':>10} {'last PGD':>9} {'train s':>8}")
    for r in rows:
        print(f"{r['name']:<24} {r['val_clean']:>9} {r['val_pgd']:>8} {r['last_clean']:>10} {r['last_pgd']:>9} "
              f"{r['train_seconds']:>8}")


if __name__ == "__main__":
    main()
