"""`rslad-kit figures`: every figure of a finished `reproduce` folder, written as PNG and PDF.

The pipeline behind the drawings of figures.py: it reads the plan's checkpoints and evaluations,
crafts the adversarial examples, computes the maps, soft labels and eps curves, and saves what
figures.py draws. Trains nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor
from tqdm.auto import tqdm

from rslad_kit import attacks, data, evaluate, gpu, models, reproduce, runs, saliency
from rslad_kit import soft_labels as labels_lib
from rslad_kit import teacher_study as study_lib
from rslad_kit.config import PRESETS
from rslad_kit.errors import UserError
from rslad_kit.figures import (SALIENCY_METHODS, SOFT_LABEL_CLASSES, adversarial_examples, attention_maps,
                               eps_curves, map_similarity, robust_vs_clean, similarity_markdown, soft_labels,
                               teacher_study, training_curves)


def save(fig: Figure, path: str | Path) -> list[Path]:
    """Write `fig` as `path`.png and `path`.pdf (each atomically); returns both paths."""
    written = []
    for fmt in ("png", "pdf"):
        target = Path(path).with_suffix(f".{fmt}")
        target.parent.mkdir(parents=True, exist_ok=True)
        runs.atomic_write(target, lambda tmp: fig.savefig(tmp, format=fmt, dpi=200))
        written.append(target)
    return written


def _results_plan(folder: Path, **overrides: Any):
    presets = [name for name, p in PRESETS.items() if p.plan is not None]
    if folder.name not in presets:
        raise UserError(f"{folder} is not a `reproduce` results folder: its name must be a preset "
                        f"({', '.join(presets)}), e.g. results/classroom")
    return reproduce.build_plan(folder.name, folder.parent, **overrides)


def _arch(plan, run: str, model: torch.nn.Module) -> str:
    """The registry architecture of a run (a zoo teacher: the registry entry of its class)."""
    if run in plan.runs:
        return plan.runs[run].model
    return saliency.ZOO_ARCHS[type(models.unwrap(model))]


def write_all(results: str | Path, out: str | Path, *, images: int = 200, against: str = "teacher",
              sigma: float = 0.15, samples: int = 25, data_root: str = "data", progress: bool = True) -> list[Path]:
    """Every figure of the finished `reproduce` folder `results` (e.g. results/classroom), as PNG and
    PDF in `out`, with Figure 2's similarity table (JSON and Markdown) and Figure 3's statistics;
    returns the files written. Trains nothing: reads the checkpoints and evaluations on disk, and
    checks that every checkpoint it needs is there before writing anything. Figure 4 is drawn when the
    teacher study's folder (`<preset>-teacher-study` beside `results`) holds a finished study.

    `images`: test images for the maps and their similarity (at least 200 for the paper's claim);
    `against`: Figure 2's adversarial examples are crafted against the "teacher" (every model's maps
    on the same images, as the paper compares them) or against "each" model itself.
    """
    if against not in ("teacher", "each"):
        raise UserError(f"against must be 'teacher' or 'each' (got {against!r})")
    if images < 2:
        raise UserError(f"--images must be at least 2 (got {images}); the paper's claim wants 200 or more")
    folder, out = Path(results), Path(out)
    plan = _results_plan(folder, data_root=data_root)
    table = 4 if plan.dataset == "cifar100" else 3
    by_method = {m: plan.rows.get((table, plan.plan.students[0], m), []) for m in plan.methods}  # method -> by seed
    seeds = [s for s, run in enumerate(by_method.get("rslad", [])) if (plan.run_dir(run) / "best.pt").is_file()]
    soft = 7 in plan.plan.tables
    ceiling = "teacher-reseeded" in plan.runs   # Figure 2's second teacher (a kit-trained teacher only)
    needed = ["teacher", *(["teacher-natural"] if soft else []), *(["teacher-reseeded"] if ceiling else []),
              *[by_seed[s] for by_seed in by_method.values() for s in (seeds or [0]) if s < len(by_seed)]]
    missing = [p for r in needed if not (p := reproduce.checkpoint_file(plan, r, "best")).is_file()]
    if missing:
        raise UserError(f"{missing[0]} is missing ({len(missing)} checkpoint(s) in all); run "
                        f"`rslad-kit reproduce --preset {plan.preset} --out {folder.parent}` first")

    device = gpu.resolve_device(plan.base.device)
    ds = data.load(plan.dataset, plan.base.data_root, val_size=plan.base.val_size, image_size=plan.base.image_size,
                   train_size=plan.base.train_size)
    test = ds.test.to(device)
    teacher = reproduce.load_for_eval(plan, "teacher", "best", device)
    written: list[Path] = []
    with tqdm(total=4, desc="figures", disable=not progress) as bar:
        written += _figure2(plan, teacher, by_method, seeds, test.take(images), ds.num_classes, out, against=against,
                            sigma=sigma, samples=samples)
        bar.update()
        if soft:
            natural = reproduce.load_for_eval(plan, "teacher-natural", "best", device)
            written += _figure3(plan, teacher, natural, test, ds, out)
        bar.update()
        written += _kit_plots(plan, teacher, by_method, test.take(images), ds.classes, out)
        bar.update()
        study = folder.parent / f"{plan.preset}-teacher-study"
        if (study / "teacher_study.json").is_file():
            written += write_teacher_study(study, out)
        else:
            print(f"figures: no Figure 4 ({study} holds no finished study; run `rslad-kit teacher-study "
                  f"--preset {plan.preset} --out {folder.parent}`)")
        bar.update()
    return written


def _figure2(plan, teacher, by_method, seeds, test, num_classes: int, out: Path, *, against: str, sigma: float,
             samples: int) -> list[Path]:
    """Maps of the teacher and of every seed's ARD, IAD, RSLAD and SAT students; their similarity to the
    teacher's between a floor (a random model and a natural student, of the student's architecture) and
    a ceiling (a second teacher, another seed); RSLAD minus each other student, paired by seed."""
    kw = dict(eps=plan.eps, sigma=sigma, samples=samples)
    teacher_maps = saliency.adversarial_maps(teacher, _arch(plan, "teacher", teacher), test.x, test.y, **kw)
    shared = teacher_maps["x_adv"].to(test.x.device) if against == "teacher" else None   # crafted once

    def maps(model: torch.nn.Module, arch: str) -> dict[str, Tensor]:
        return saliency.adversarial_maps(model, arch, test.x, test.y, x_adv=shared, **kw)

    def run_maps(run: str) -> dict[str, Tensor]:
        return maps(reproduce.load_for_eval(plan, run, "best", test.x.device), plan.runs[run].model)

    student = plan.plan.students[0]
    roles: dict[str, str] = {"random-init": "floor"}
    models_maps: dict[str, list[dict[str, Tensor]]] = {"random-init": []}
    for s in seeds:
        with attacks.seeded(s, test.x.device):   # a fresh model of the student's architecture, per seed
            random_model = models.build(student, num_classes, in_channels=test.x.shape[1])
        models_maps["random-init"].append(maps(random_model.to(test.x.device).eval(), student))
    for m in ("natural", *SALIENCY_METHODS):
        if by_method.get(m):
            roles[m] = "floor" if m == "natural" else "student"
            models_maps[m] = [run_maps(by_method[m][s]) for s in seeds]
    if "teacher-reseeded" in plan.runs:
        roles["teacher-reseeded"] = "ceiling"
        models_maps["teacher-reseeded"] = [run_maps("teacher-reseeded")]
    shown = {"teacher": teacher_maps} | {m: models_maps[m][0] for m in SALIENCY_METHODS if m in models_maps}
    rows = [r | {"role": roles[r["student"]]} for r in saliency.similarity_rows(models_maps, teacher_maps)]
    differences = saliency.paired_differences(rows, "rslad", ("ard", "iad", "sat"))
    meta = {"results": str(plan.out), "against": against, "attack": "pgd_trades", "eps": plan.eps,
            "sigma": sigma, "samples": samples, "images": len(test), "seeds": seeds, "target": "true-class logit"}
    return [*save(attention_maps(shown, images=min(4, len(test))), out / "figure2_attention"),
            *save(map_similarity(rows, differences), out / "figure2_similarity"),
            *_write_json(out / "figure2_similarity.json", meta | {"rows": rows, "differences": differences}),
            *_write_text(out / "figure2_similarity.md", similarity_markdown(rows, meta, differences))]


def _figure3(plan, teacher, natural, test, ds, out: Path) -> list[Path]:
    """The three soft labels of the whole test set and of as many augmented training views (random
    crop and flip as in training, seed 0: what the student learns from); two classes drawn, statistics
    for all."""
    train_x = ds.train.x[:len(test)].to(test.x.device)
    views = {"test": (test.x, test.y),
             "train": (data.augment(train_x, padding=ds.crop_padding, flip=ds.flip,
                                    generator=torch.Generator(test.x.device).manual_seed(0)),
                       ds.train.y[:len(test)].to(test.x.device))}
    classes = SOFT_LABEL_CLASSES[plan.dataset]
    probs = {view: labels_lib.soft_label_sets(teacher, natural, x, y, plan.base, ds.num_classes)
             for view, (x, y) in views.items()}
    stats = {view: labels_lib.soft_label_class_stats(probs[view], y, classes) for view, (_, y) in views.items()}
    fig = soft_labels(probs["test"], test.y, classes, ds.classes, stats["test"],
                      training=(probs["train"], views["train"][1], stats["train"]))
    return [*save(fig, out / "figure3_soft_labels"),
            *_write_json(out / "figure3_soft_labels.json",
                         {"smoothing": plan.base.smoothing, "classes": [ds.classes[k] for k in classes],
                          "images": {"test": f"the first {len(test)} test images",
                                     "train": f"the first {len(test)} training images, one augmented view each "
                                              f"(random crop, padding {ds.crop_padding}, flip {ds.flip}; seed 0)"},
                          "stats": {kind: {str(k): v for k, v in s.items()} for kind, s in stats["test"].items()},
                          "stats_train_views": {kind: {str(k): v for k, v in s.items()}
                                                for kind, s in stats["train"].items()}})]


def _kit_plots(plan, teacher, by_method, test, class_names, out: Path) -> list[Path]:
    """Training curves and adversarial examples of seed 0; robust vs clean over seeds; eps curves."""
    first = {"teacher": teacher} | {m: reproduce.load_for_eval(plan, by_seed[0], "best", test.x.device)
                                    for m, by_seed in by_method.items() if by_seed}
    metrics = {m: runs.history(plan.run_dir(by_seed[0])) for m, by_seed in by_method.items() if by_seed}
    evals = plan.evals()

    def best(run_names: list[str], attack: str) -> list[float]:
        return [evals[r]["best"][attack] for r in run_names if attack in evals.get(r, {}).get("best", {})]

    points = {m: {"clean": best(names, "clean"), "robust": best(names, "pgd_trades")}
              for m, names in {"teacher": ["teacher"], **by_method}.items()}

    k = min(6, len(test))
    with attacks.seeded(0, test.x.device):
        x_adv = attacks.white_box("pgd_trades", first.get("rslad", teacher), test.x[:k], test.y[:k], eps=plan.eps)
    predictions = {name: evaluate.predict(model, x_adv) for name, model in first.items()}
    grid = [round(plan.eps * f, 6) for f in (0, 0.25, 0.5, 0.75, 1, 1.5, 2) if plan.eps * f <= 1]
    curves = {name: evaluate.eps_curve(model, test, grid) for name, model in first.items()}
    student = plan.plan.students[0]
    return [*save(training_curves(metrics, title=f"Training curves ({student}, seed 0)"), out / "training_curves"),
            *save(robust_vs_clean(points), out / "robust_vs_clean"),
            *save(adversarial_examples(test.x[:k], x_adv, test.y[:k], predictions, class_names, eps=plan.eps,
                                       title=f"Adversarial examples\n(PGD_TRADES against RSLAD, eps {plan.eps:.3g})"),
                  out / "adversarial_examples"),
            *save(eps_curves(grid, curves, train_eps=plan.eps), out / "eps_curves"),
            *_write_json(out / "eps_curves.json", {"eps": grid, "attack": "pgd_trades", "n": len(test),
                                                   "curves": curves})]


def write_teacher_study(folder: str | Path, out: str | Path | None = None) -> list[Path]:
    """Figure 4 of a finished teacher-study folder, as PNG and PDF in `out` (default: the folder)."""
    return save(teacher_study(study_lib.load(folder)), Path(out or folder) / "figure4_teacher_study")


def _write_json(path: Path, obj: Any) -> list[Path]:
    return _write_text(path, json.dumps(obj, indent=1, allow_nan=True))


def _write_text(path: Path, text: str) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.write_text(path, text)
    return [path]
