"""The `rslad-kit` command: parses arguments and calls the API. No logic lives here."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from rslad_kit.errors import UserError


def _threads(value: str | None) -> int:
    """Torch's CPU thread count, set deliberately: oversubscription slows AutoAttack 20-50x."""
    if value:
        return int(value)
    from rslad_kit.train import available_cores

    return int(os.environ.get("OMP_NUM_THREADS") or available_cores())


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """`--set lr=0.05 --set attack.eps=0.1 --set loss_params.alpha=0.9` -> nested overrides."""
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"--set expects FIELD=VALUE (got {item!r}), e.g. --set lr=0.05")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if isinstance(value, list):
            value = tuple(value)
        head, _, sub = key.partition(".")
        if sub:
            changes.setdefault(head, {})[sub] = value
        else:
            changes[head] = value
    return changes


def _print_row(row: dict, names: Sequence[str]) -> None:
    print(" | ".join(f"{name:>10}" for name in names))
    print(" | ".join(f"{row[name]:>10.2f}" for name in names))
    print(f"n = {row['n']}, eps = {row['eps']:.4g}; seconds: "
          + ", ".join(f"{k} {v:.1f}" for k, v in row["seconds"].items()))


# --- commands ----------------------------------------------------------------------------------------

def cmd_evaluate(args: argparse.Namespace) -> None:
    from rslad_kit import data, evaluate, models, train

    attacks = evaluate.check_attacks(a for a in args.attacks.split(",") if a)
    device = train.resolve_device(args.device)
    ds = data.load(args.dataset, args.data_root, download=not args.offline)
    model = models.build(args.model, ds.num_classes, in_channels=ds.in_channels)
    model = models.load_checkpoint(model, args.checkpoint).to(device).eval()
    surrogate = None
    if args.surrogate:
        surrogate = train.load_model(args.surrogate, arch=args.surrogate_model, num_classes=ds.num_classes,
                                     in_channels=ds.in_channels).to(device)
    row = evaluate.evaluate(model, ds.test.to(device), attacks, eps=args.eps, n=args.n,
                            batch_size=args.batch_size, surrogate=surrogate)
    _print_row(row, attacks)
    row |= {"model": args.model, "checkpoint": str(args.checkpoint), "dataset": args.dataset}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        train.write_text(Path(args.json), json.dumps(row, indent=2))
        print(f"wrote {args.json}")


def cmd_train(args: argparse.Namespace) -> None:
    from rslad_kit import config, train

    overrides = _parse_set(args.set)
    for name in ("epochs", "seed", "teacher", "teacher_model", "device", "data_root"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    cfg = config.preset(args.preset, args.method, **overrides)
    history = train.train(cfg, args.out, resume=args.resume)
    if history:
        last = history[-1]
        print(f"{args.out}: epoch {last['epoch']}, val clean {last.get('val_clean')}, "
              f"val PGD_TRADES {last.get('val_pgd_trades')}")


def cmd_reproduce(args: argparse.Namespace) -> None:
    from rslad_kit import reproduce

    reproduce.run(args.preset, out=args.out, dry_run=args.dry_run, seeds=args.seeds, full=args.full,
                  data_root=args.data_root, device=args.device)


def cmd_figures(args: argparse.Namespace) -> None:
    from rslad_kit import figures

    written = figures.write_all(args.results, args.out, images=args.images, against=args.against,
                                data_root=args.data_root)
    print(f"wrote {len(written)} files in {args.out}")


def cmd_teacher_study(args: argparse.Namespace) -> None:
    from rslad_kit import figures, teacher_study

    folder = teacher_study.run(args.preset, out=args.out, seeds=args.seeds, dry_run=args.dry_run,
                               data_root=args.data_root, device=args.device)
    if not args.dry_run:
        figures.write_teacher_study(folder)
        print((folder / "summary.md").read_text().strip().splitlines()[-1])
        print(f"results and figure4_teacher_study.png/.pdf in {folder}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rslad-kit", description=__doc__)
    parser.add_argument("--threads", help="torch CPU threads (default: $OMP_NUM_THREADS, else all cores)")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="robust accuracy of a checkpoint under the paper's attacks")
    ev.add_argument("--model", required=True)
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--dataset", required=True)
    ev.add_argument("--data-root", default="data")
    ev.add_argument("--attacks", default="clean,fgsm,pgd_sat,pgd_trades,cw,autoattack")
    ev.add_argument("--eps", type=float, default=8 / 255)
    ev.add_argument("--n", type=int, help="evaluate the first N test images")
    ev.add_argument("--batch-size", type=int, default=500)
    ev.add_argument("--surrogate", help="checkpoint for transfer_pgd / transfer_cw")
    ev.add_argument("--surrogate-model", help="architecture of a bare surrogate state dict")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--offline", action="store_true", help="never download data")
    ev.add_argument("--json", help="write the results row here")
    ev.set_defaults(func=cmd_evaluate)

    tr = sub.add_parser("train", help="train one student (or teacher) with one method")
    tr.add_argument("--preset", required=True)
    tr.add_argument("--method", required=True)
    tr.add_argument("--out", required=True)
    tr.add_argument("--epochs", type=int)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--teacher", help="checkpoint, robustbench:<name>, or a run folder / run name")
    tr.add_argument("--teacher-model", help="architecture of a bare teacher state dict")
    tr.add_argument("--device")
    tr.add_argument("--data-root")
    tr.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override any config field, e.g. --set lr=0.05 --set attack.eps=0.1")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.set_defaults(func=cmd_train)

    rp = sub.add_parser("reproduce", help="build the paper's tables (default: the classroom preset)")
    rp.add_argument("--preset", default="classroom")
    rp.add_argument("--out", default="results")
    rp.add_argument("--seeds", type=int, help="number of seeds (default: the preset's)")
    rp.add_argument("--data-root", default="data")
    rp.add_argument("--device", default="auto")
    rp.add_argument("--full", action="store_true",
                    help="lift the preset's CPU budget: every seed and checkpoint gets every attack")
    rp.add_argument("--dry-run", action="store_true", help="print the plan and its estimated cost")
    rp.set_defaults(func=cmd_reproduce)

    fg = sub.add_parser("figures", help="every figure of a finished reproduce folder, as PNG and PDF")
    fg.add_argument("--results", default="results/classroom", help="a reproduce folder, results/<preset>")
    fg.add_argument("--out", default="figures")
    fg.add_argument("--data-root", default="data")
    fg.add_argument("--images", type=int, default=200, help="test images for Figure 2's maps and similarity")
    fg.add_argument("--against", choices=("teacher", "each"), default="teacher",
                    help="Figure 2's adversarial examples: against the teacher (the same images for every "
                         "model) or against each model itself")
    fg.set_defaults(func=cmd_figures)

    ts = sub.add_parser("teacher-study", help="Figure 4: RSLAD students from a ladder of teachers")
    ts.add_argument("--preset", default="classroom", help="classroom, cifar10 (or smoke)")
    ts.add_argument("--out", default="results", help="the study goes in OUT/<preset>-teacher-study")
    ts.add_argument("--seeds", type=int, help="students per teacher (default: the ladder's)")
    ts.add_argument("--data-root", default="data")
    ts.add_argument("--device", default="auto")
    ts.add_argument("--dry-run", action="store_true", help="print the plan and its estimated cost")
    ts.set_defaults(func=cmd_teacher_study)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import torch

        torch.set_num_threads(_threads(args.threads))
        args.func(args)
    except UserError as e:
        print(f"rslad-kit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rslad-kit: interrupted; finished epochs are kept: rerun the command (train: with --resume)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
