"""The `rslad-kit` command: parses arguments and calls the API. No logic lives here."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from rslad_kit.errors import UserError, one_line_warning

# What `rslad-kit --help` says the tool is for.
DESCRIPTION = """Adversarial robustness distillation (RSLAD, ICCV'21): train students and teachers with every
method of the paper's Table 1, evaluate them under the paper's attacks, and rebuild its tables and
figures, on a laptop CPU (the classroom preset) or on GPUs (cifar10 / cifar100)."""


def _threads(value: str | None) -> int:
    """Torch's CPU thread count, set deliberately: oversubscription slows AutoAttack 20-50x."""
    if value:
        return int(value)
    from rslad_kit.gpu import available_cores

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
    from rslad_kit import attacks as atk
    from rslad_kit import data, evaluate, gpu, loading, models, runs

    # --- cheap checks first (names, values, files), then data, downloads and models
    attacks = evaluate.check_attacks(a for a in args.attacks.split(",") if a)
    atk.check_eps(args.eps)
    data.check_name(args.dataset)
    models.check_name(args.model)
    for flag, value in (("--n", args.n), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}; pass a positive number")
    checkpoint = models.read_checkpoint(args.checkpoint)

    device = gpu.resolve_device(args.device)
    ds = data.load(args.dataset, args.data_root, download=not args.offline)
    model = models.build(args.model, ds.num_classes, in_channels=ds.in_channels)
    model = models.load_state(model, checkpoint, args.checkpoint).to(device).eval()
    surrogate = None
    if args.surrogate:
        surrogate = loading.load_model(args.surrogate, arch=args.surrogate_model, num_classes=ds.num_classes,
                                       in_channels=ds.in_channels).to(device)
    state = None
    if args.json and "autoattack" in attacks:   # AutoAttack's progress, beside the results: a rerun resumes
        state = Path(args.json).with_name(f".{Path(args.json).name}.autoattack-"
                                          f"{runs.sha256(args.checkpoint)[:12]}-eps{args.eps:.6g}.pt")
        state.parent.mkdir(parents=True, exist_ok=True)
    row = evaluate.evaluate_checkpoint(model, args.checkpoint, ds.test, attacks, eps=args.eps, device=device,
                                       config={k: v for k, v in vars(args).items() if k != "func"}, n=args.n,
                                       batch_size=args.batch_size, surrogate=surrogate, autoattack_state=state)
    _print_row(row, attacks)
    row |= {"model": args.model, "checkpoint": str(args.checkpoint), "dataset": args.dataset}
    if args.surrogate:
        row["surrogate_sha256"] = runs.sha256(loading.checkpoint_path(args.surrogate))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        runs.write_text(Path(args.json), json.dumps(row, indent=2))
        if state is not None:
            state.unlink(missing_ok=True)
        print(f"wrote {args.json}")


def cmd_train(args: argparse.Namespace) -> None:
    from rslad_kit import config, train

    overrides = _parse_set(args.set)
    for name in ("epochs", "seed", "teacher", "teacher_model", "device", "data_root"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    cfg = config.preset(args.preset, args.method, **overrides)
    history = train.train(cfg, args.out, resume=args.resume)
    if history and os.environ.get("RANK", "0") == "0":   # under torchrun, rank 0 speaks for all
        last = history[-1]
        print(f"{args.out}: epoch {last['epoch']}, val clean {last.get('val_clean')}, "
              f"val PGD_TRADES {last.get('val_pgd_trades')}")


def cmd_reproduce(args: argparse.Namespace) -> None:
    from rslad_kit import reproduce

    reproduce.run(args.preset, out=args.out, dry_run=args.dry_run, seeds=args.seeds, full=args.full,
                  data_root=args.data_root, device=args.device, allow_mixed=args.allow_mixed,
                  workers_per_gpu=args.workers_per_gpu, retrain_teachers=args.retrain_teachers)


def cmd_teacher(args: argparse.Namespace) -> None:
    from rslad_kit import reproduce

    file, same = reproduce.retrain_teacher(args.name, args.out, ship=args.ship, data_root=args.data_root)
    verdict = {True: "bit for bit the shipped file", False: "NOT the shipped file (its SHA-256 differs)",
               None: "no shipped file to compare with"}[same]
    print(f"{file}: {verdict}" + ("; shipped into rslad_kit/teachers/" if args.ship else ""))


def cmd_sweep(args: argparse.Namespace) -> None:
    from rslad_kit import sweep

    folder = sweep.run(args.preset, out=args.out, study=args.study, kind=args.executor, seeds=args.seeds,
                       full=args.full, timeout_min=args.timeout_min, partition=args.partition, gpus=args.gpus_per_job,
                       parallel=args.parallel, threads=args.threads_per_job, data_root=args.data_root,
                       device=args.device)
    print(f"results in {folder}")


def cmd_figures(args: argparse.Namespace) -> None:
    from rslad_kit import paper_figures

    written = paper_figures.write_all(args.results, args.out, images=args.images, against=args.against,
                                      data_root=args.data_root)
    print(f"wrote {len(written)} files in {args.out}")


def cmd_teacher_study(args: argparse.Namespace) -> None:
    from rslad_kit import paper_figures, teacher_study

    folder = teacher_study.run(args.preset, out=args.out, seeds=args.seeds, dry_run=args.dry_run,
                               workers_per_gpu=args.workers_per_gpu, data_root=args.data_root, device=args.device)
    if not args.dry_run:
        paper_figures.write_teacher_study(folder)
        print((folder / "summary.md").read_text().strip().splitlines()[-1])
        print(f"results and figure4_teacher_study.png/.pdf in {folder}")


def _one_of(names) -> str:
    return "one of: " + ", ".join(names)


def build_parser() -> argparse.ArgumentParser:
    from rslad_kit import __version__, config, data, evaluate, losses, models

    presets, methods = _one_of(config.PRESETS), _one_of(losses.METHODS)
    parser = argparse.ArgumentParser(prog="rslad-kit", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"rslad-kit {__version__}")
    parser.add_argument("--threads", help="torch CPU threads (default: $OMP_NUM_THREADS, else all cores)")
    sub = parser.add_subparsers(dest="command", required=True)

    attacks = "\n".join(f"  {name:<14} {attack.about}" for name, attack in evaluate.ATTACKS.items())
    ev = sub.add_parser("evaluate", help="robust accuracy of a checkpoint under the paper's attacks",
                        epilog=f"attacks:\n{attacks}", formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("--model", required=True, help=f"the checkpoint's architecture, {_one_of(models.MODELS)}")
    ev.add_argument("--checkpoint", required=True, help="a .pt file (read with weights_only=True)")
    ev.add_argument("--dataset", required=True, help=_one_of(data.DATASETS))
    ev.add_argument("--data-root", default="data", help="where CIFAR is (or is downloaded to); default: data")
    ev.add_argument("--attacks", default="clean,fgsm,pgd_sat,pgd_trades,cw,autoattack,pgd_large_eps",
                    help=f"comma-separated, {_one_of(evaluate.ATTACKS)}; default: the paper's six and "
                         "pgd_large_eps (PGD at eps 0.5), which feeds the gradient-masking checks that the "
                         "--json row lists under masking_checks")
    ev.add_argument("--eps", type=float, default=8 / 255, help="L-inf budget on the [0,1] pixel scale (default 8/255)")
    ev.add_argument("--n", type=int, help="evaluate the first N test images")
    ev.add_argument("--batch-size", type=int, default=500, help="images per attack batch (default 500)")
    ev.add_argument("--surrogate", help="checkpoint for transfer_pgd / transfer_cw")
    ev.add_argument("--surrogate-model", help="architecture of a bare surrogate state dict")
    ev.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:N or mps")
    ev.add_argument("--offline", action="store_true", help="never download data")
    ev.add_argument("--json", help="write the results row here (AutoAttack then keeps its progress beside it, "
                                   "so an interrupted evaluation resumes when rerun)")
    ev.set_defaults(func=cmd_evaluate)

    tr = sub.add_parser("train", help="train one student (or teacher) with one method")
    tr.add_argument("--preset", required=True, help=presets)
    tr.add_argument("--method", required=True, help=f"a row of Table 1, {methods}")
    tr.add_argument("--out", required=True, help="the run folder (best.pt, last.pt, metrics.jsonl)")
    tr.add_argument("--epochs", type=int, help="default: the preset's")
    tr.add_argument("--seed", type=int, help="initialisation and data order (default: the preset's)")
    tr.add_argument("--teacher", help="checkpoint, robustbench:<name>, shipped:<name>, or a run folder / run name")
    tr.add_argument("--teacher-model", help="architecture of a bare teacher state dict")
    tr.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    tr.add_argument("--data-root", help="where CIFAR is (or is downloaded to)")
    tr.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override any config field, e.g. --set lr=0.05 --set attack.eps=0.1")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.set_defaults(func=cmd_train)

    rp = sub.add_parser("reproduce", help="build the paper's tables (default: the classroom preset)")
    rp.add_argument("--preset", default="classroom", help=f"{presets} (default: classroom)")
    rp.add_argument("--out", default="results", help="results go in OUT/<preset> (default: results)")
    rp.add_argument("--seeds", type=int, help="number of seeds (default: the preset's)")
    rp.add_argument("--data-root", default="data", help="where CIFAR is (or is downloaded to); default: data")
    rp.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda or mps")
    rp.add_argument("--full", action="store_true",
                    help="lift the preset's CPU budget: every seed and checkpoint gets every attack")
    rp.add_argument("--dry-run", action="store_true", help="print the plan and its estimated cost")
    rp.add_argument("--allow-mixed", action="store_true",
                    help="add to a results folder built on other data or at another eps (refused otherwise)")
    rp.add_argument("--workers-per-gpu", type=int, metavar="N",
                    help="N runs at once on every GPU, each its own process (README: several runs per GPU)")
    rp.add_argument("--retrain-teachers", action="store_true",
                    help="train a shipped teacher by its recipe instead of reading rslad_kit/teachers/")
    rp.set_defaults(func=cmd_reproduce)

    te = sub.add_parser("teacher", help="retrain a shipped teacher by its recipe and compare it, bit for bit, "
                                        "with the shipped file")
    te.add_argument("name", help="a key of config.SHIPPED_TEACHERS, e.g. fashion14-trades-w16")
    te.add_argument("--out", default="results/teachers", help="the run goes in OUT/<name> (default: results/teachers)")
    te.add_argument("--data-root", default="data", help="where the dataset is (or is downloaded to); default: data")
    te.add_argument("--ship", action="store_true", help="also copy it, with its record, into rslad_kit/teachers/")
    te.set_defaults(func=cmd_teacher)

    sw = sub.add_parser("sweep", help="run a reproduce plan's or a teacher ladder's tasks as submitit jobs "
                                      "(local or Slurm)")
    sw.add_argument("--preset", default="classroom", help=f"{presets} (default: classroom)")
    sw.add_argument("--study", default="reproduce", help="reproduce (the tables) or teacher (the teacher ladder)")
    sw.add_argument("--out", default="results", help="results go in OUT/<preset> (default: results)")
    sw.add_argument("--executor", default="local", help="local (processes here), slurm, or debug (this process)")
    sw.add_argument("--seeds", type=int, help="number of seeds (default: the preset's)")
    sw.add_argument("--full", action="store_true", help="lift the preset's CPU budget")
    sw.add_argument("--partition", help="Slurm partition")
    sw.add_argument("--timeout-min", type=int, default=24 * 60,
                    help="a job's time limit; a job that reaches it is requeued and resumes")
    sw.add_argument("--gpus-per-job", type=int,
                    help="default: 1 on Slurm; locally, each job on one visible GPU, round robin (0: the CPU)")
    sw.add_argument("--parallel", type=int, default=4, help="jobs running at once")
    sw.add_argument("--threads-per-job", type=int, default=1, help="torch CPU threads in each job")
    sw.add_argument("--data-root", default="data", help="where CIFAR is (or is downloaded to); default: data")
    sw.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda or mps")
    sw.set_defaults(func=cmd_sweep)

    fg = sub.add_parser("figures", help="every figure of a finished reproduce folder, as PNG and PDF")
    fg.add_argument("--results", default="results/classroom", help="a reproduce folder, results/<preset>")
    fg.add_argument("--out", default="figures", help="where the PNG and PDF files go (default: figures)")
    fg.add_argument("--data-root", default="data", help="where CIFAR is; default: data")
    fg.add_argument("--images", type=int, default=200, help="test images for Figure 2's maps and similarity")
    fg.add_argument("--against", choices=("teacher", "each"), default="teacher",
                    help="Figure 2's adversarial examples: against the teacher (the same images for every "
                         "model) or against each model itself")
    fg.set_defaults(func=cmd_figures)

    ts = sub.add_parser("teacher-study", help="Figure 4: RSLAD students from a ladder of teachers")
    ts.add_argument("--preset", default="classroom", help="classroom, fashion, cifar10 (or smoke)")
    ts.add_argument("--out", default="results", help="the study goes in OUT/<preset>-teacher-study")
    ts.add_argument("--seeds", type=int, help="students per teacher (default: the ladder's)")
    ts.add_argument("--data-root", default="data", help="where CIFAR is (or is downloaded to); default: data")
    ts.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda or mps")
    ts.add_argument("--dry-run", action="store_true", help="print the plan and its estimated cost")
    ts.add_argument("--workers-per-gpu", type=int, metavar="N", help="N runs at once on every GPU (as for reproduce)")
    ts.set_defaults(func=cmd_teacher_study)
    return parser


def _output_folders(args: argparse.Namespace) -> list[Path]:
    """Where a command will write: `--out` for every command that has one, and evaluate's `--json`."""
    folders = [Path(args.out)] if getattr(args, "out", None) else []
    if getattr(args, "json", None):
        folders.append(Path(args.json).parent)
    return folders


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = one_line_warning   # a warning is one line too, without source excerpts
    try:
        import torch

        from rslad_kit import runs

        for folder in _output_folders(args):   # one line now, before any lock, data or work
            runs.check_writable(folder)
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
