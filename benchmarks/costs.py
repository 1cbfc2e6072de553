"""What the classroom costs on this machine, measured side by side in one run (one thread).

    OMP_NUM_THREADS=1 python benchmarks/costs.py [--out /tmp/costs]

Prints Markdown: seconds per training epoch of the classroom student for every method (and the ratio
to SAT), PGD-5 against PGD-10, seconds per checkpoint for every evaluation attack (and the ratio to
PGD_TRADES), and the smoke plan's wall-clock. benchmarks/README.md keeps a measured copy.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import time
from pathlib import Path

import torch

from rslad_kit import config, data, evaluate, loading, reproduce, train
from rslad_kit.losses import METHODS


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/rslad-costs")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    ds = data.load("digits")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread\n")

    teacher = out / "teacher"
    train.train(config.preset("classroom", "trades", model="cnn-w16", epochs=1), teacher, dataset=ds, progress=False)

    def epoch_seconds(name: str, cfg: config.TrainConfig) -> float:
        start = time.perf_counter()
        train.train(cfg, out / name, dataset=ds, progress=False)
        return (time.perf_counter() - start) / cfg.epochs

    print("| training (cnn-w4 student, one epoch incl. validation) | seconds | ratio to SAT |\n|---|---|---|")
    runs = {m: config.preset("classroom", m, epochs=args.epochs, teacher=str(teacher) if METHODS[m].needs_teacher
                             else None) for m in METHODS}
    runs["rslad, PGD-10"] = config.override(runs["rslad"], attack={"steps": 10, "step_size": 0.05})
    runs["sat, PGD-10"] = config.override(runs["sat"], attack={"steps": 10, "step_size": 0.05})
    seconds = {name: epoch_seconds(name.replace(", ", "-"), cfg) for name, cfg in runs.items()}
    for name, s in seconds.items():
        print(f"| {name} | {s:.2f} | {s / seconds['sat']:.2f} |")

    # Evaluation costs depend on how many points stay robust, so time a fully trained student.
    train.train(config.preset("classroom", "sat"), out / "sat-full", dataset=ds, progress=False)
    model, surrogate = loading.load_model(out / "sat-full"), loading.load_model(out / "sat")
    print("\n| evaluation (one fully trained SAT checkpoint, 360 test images) | seconds | ratio to PGD_TRADES |"
          "\n|---|---|---|")
    row = evaluate.evaluate(model, ds.test, list(evaluate.ATTACKS), eps=0.2, surrogate=surrogate)
    for name, s in row["seconds"].items():
        print(f"| {name} | {s:.2f} | {s / row['seconds']['pgd_trades']:.1f} |")

    start = time.perf_counter()
    reproduce.run("smoke", out=out / "smoke", progress=False)
    print(f"\nsmoke plan (`reproduce --preset smoke`, 2 workers): {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
