"""Every figure: a function that draws data (or models' outputs) and returns a matplotlib `Figure`.

The paper's Figures 2-4 (attention maps, soft labels, which teacher) and the kit's own plots (training
curves, robustness against clean accuracy, adversarial examples, robustness against eps). No function
here loads, trains, saves or shows: the caller decides (`fig.savefig`, or a notebook displays it).
`rslad-kit figures` (rslad_kit/paper_figures.py) reads a finished `reproduce` folder, computes what
these functions draw, and writes every figure as PNG and PDF.

One style everywhere: seaborn's "talk" context (readable on a projector), white grid, and a fixed
colour per method (`COLORS`), the same in every figure and colour-blind safe.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, Callable, Mapping, Sequence

import matplotlib
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from torch import Tensor

from rslad_kit import attacks
from rslad_kit.evaluate import attack_label
from rslad_kit.plan import run_label

# seaborn's colour-blind palette, one colour per method, fixed so a method looks the same everywhere.
_PALETTE = sns.color_palette("colorblind", 10)
COLORS: dict[str, tuple[float, float, float]] = {
    "teacher": (0.15, 0.15, 0.15),
    "natural": _PALETTE[7],
    "sat": _PALETTE[0],
    "trades": _PALETTE[8],
    "mart": _PALETTE[4],
    "ard": _PALETTE[1],
    "iad": _PALETTE[2],
    "rslad": _PALETTE[3],
    # Figure 2's floor and ceiling: a random model, a teacher trained from another seed
    "random-init": (0.75, 0.75, 0.75),
    "teacher-reseeded": (0.45, 0.45, 0.45),
    # Figure 3's soft labels: RSL is RSLAD's own, NSL comes from the natural teacher
    "RSL": _PALETTE[3],
    "NSL": _PALETTE[7],
    "SSL": _PALETTE[9],
}
def color(name: str) -> tuple[float, float, float]:
    """The colour of a method (or soft-label type); other names get a stable colour of their own."""
    return COLORS.get(name) or _PALETTE[sum(map(ord, name)) % len(_PALETTE)]


def styled(draw: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw under the kit's one style."""
    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with sns.plotting_context("talk", font_scale=0.7), sns.axes_style("whitegrid"):
            return draw(*args, **kwargs)
    return wrapper


def _figure(rows: int, cols: int, width: float, height: float, **kwargs: Any) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False, **kwargs)


def _image(x: Tensor) -> np.ndarray:
    """(C, H, W) in [0,1] -> what imshow takes."""
    x = x.detach().cpu()
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def _count(n: int) -> str:
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k"


# --- Figure 2: attention and saliency maps ---------------------------------------------------------

@styled
def attention_maps(maps: Mapping[str, Mapping[str, Tensor]], *, images: int = 4, title: str | None = None) -> Figure:
    """Rows: models (e.g. teacher, ARD, IAD, RSLAD, SAT); for each of the first `images` examples, the
    Grad-CAM map and the SmoothGrad map, each over the adversarial image it explains, on one colour
    scale (0: no influence, 1: the map's strongest pixel). `maps[name]` is `saliency.adversarial_maps`'
    output."""
    names = list(maps)
    fig, axes = _figure(len(names), 2 * images, 1.3, 1.4)
    for r, name in enumerate(names):
        m = maps[name]
        for i in range(images):
            cam_ax, sal_ax = axes[r, 2 * i], axes[r, 2 * i + 1]
            sal = m["smoothgrad"][i].cpu()
            for ax, heat in ((cam_ax, m["gradcam"][i].cpu()), (sal_ax, sal / sal.max().clamp_min(1e-12))):
                ax.imshow(_image(m["x_adv"][i]), cmap="gray", vmin=0, vmax=1)
                shown = ax.imshow(heat.numpy(), cmap="jet", alpha=0.35, vmin=0, vmax=1)
            if r == 0:
                suffix = f" (image {i + 1})" if images > 1 else ""
                cam_ax.set_title("Grad-CAM" + suffix, fontsize="small")
                sal_ax.set_title("SmoothGrad" + suffix, fontsize="small")
        axes[r, 0].set_ylabel(run_label(name), color=color(name), fontweight="bold")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    fig.colorbar(shown, ax=axes, shrink=0.8, label="influence on the true class (relative)")
    fig.suptitle(title or "Attention (Grad-CAM) and saliency (SmoothGrad) over adversarial examples")
    return fig


@styled
def map_similarity(rows: Sequence[Mapping[str, Any]], differences: Sequence[Mapping[str, Any]] = (), *,
                   title: str | None = None) -> Figure:
    """The number beside Figure 2: each model's mean rank correlation with the teacher's maps, with its
    95% interval, one panel per map kind (`saliency.similarity_rows`; floor and ceiling rows, if any,
    are drawn hatched). With `differences` (`saliency.paired_differences`), a second row of panels
    shows them with their intervals."""
    kinds = ("gradcam", "smoothgrad")
    fig, axes = _figure(2 if differences else 1, 2, 4.2, 3.2, sharey="row")
    for ax, kind in zip(axes[0], kinds):
        sel = [r for r in rows if r["map"] == kind]
        names = [r["student"] for r in sel]
        means = np.array([r["mean"] for r in sel])
        err = np.array([[r["mean"] - r["low"], r["high"] - r["mean"]] for r in sel]).T.reshape(2, -1)
        bars = ax.bar(range(len(sel)), means, color=[color(n) for n in names], yerr=np.nan_to_num(err), capsize=4)
        for bar, r in zip(bars, sel):
            if r.get("role", "student") != "student":
                bar.set_hatch("//")
        ax.set_xticks(range(len(sel)), [run_label(n) for n in names], rotation=30 if len(sel) > 4 else 0)
        ax.set_title("Grad-CAM" if kind == "gradcam" else "SmoothGrad")
        ax.axhline(0, color="black", linewidth=0.8)
    axes[0, 0].set_ylabel("Spearman ρ with the teacher")
    axes[0, 0].set_ylim(-1.05, 1.05)   # a correlation; the interval of a few seeds can be wider
    for ax, kind in zip(axes[1] if differences else (), kinds):
        sel = [d for d in differences if d["map"] == kind]
        means = np.array([d["mean"] for d in sel])
        err = np.array([[d["mean"] - d["low"], d["high"] - d["mean"]] if d["low"] is not None else [0, 0]
                        for d in sel]).T.reshape(2, -1)
        ax.bar(range(len(sel)), means, color=color("rslad"), yerr=err, capsize=4)
        ax.set_xticks(range(len(sel)), [f"{run_label(d['of'])} − {run_label(d['minus'])}" for d in sel])
        ax.axhline(0, color="black", linewidth=0.8)
    if differences:
        axes[1, 0].set_ylabel("paired difference in ρ")
    seeds = max((r["seeds"] for r in rows), default=1)
    images = max((r["images"] for r in rows), default=0)
    fig.suptitle(title or f"Student-teacher map similarity\n(mean, 95% interval; {images} images, {seeds} seed(s))")
    return fig


# --- Figure 3: soft labels -------------------------------------------------------------------------

SoftLabelView = tuple[Mapping[str, Tensor], Tensor, Mapping[str, Mapping[int, Mapping[str, float]]]]


@styled
def soft_labels(probs: Mapping[str, Tensor], y: Tensor, classes: Sequence[int], class_names: Sequence[str],
                stats: Mapping[str, Mapping[int, Mapping[str, float]]], *, training: SoftLabelView | None = None,
                title: str | None = None) -> Figure:
    """For each class in `classes` (rows) and soft-label type (columns: RSL, NSL, SSL), the spread over
    that class's test images of the probability given to every class (box plots); each panel's title
    gives the type's mean entropy and mean true-class probability (`stats[kind][class]`).

    `training = (probs, y, stats)` of augmented training views (what the student learns from) draws
    them beside the test images: hatched boxes on the left of each class, test images on the right."""
    kinds = list(probs)
    views = [("test images", probs, y, stats)] if training is None else [("training views", *training),
                                                                         ("test images", probs, y, stats)]
    width, offsets = (0.6, (0.0,)) if training is None else (0.35, (-0.2, 0.2))
    fig, axes = _figure(len(classes), len(kinds), 3.6 if training is None else 4.4, 2.8 + 0.4 * len(views),
                        sharey=True)
    for r, k in enumerate(classes):
        for c, kind in enumerate(kinds):
            ax, lines = axes[r, c], [f"{kind}, class {class_names[k]}"]
            for (view, view_probs, view_y, view_stats), offset in zip(views, offsets):
                p = view_probs[kind][view_y == k].cpu().numpy()
                at = np.arange(p.shape[1]) + offset
                boxes = ax.boxplot(p, positions=at, widths=width, patch_artist=True, showfliers=False,
                                   boxprops=dict(facecolor=color(kind), alpha=0.5), medianprops=dict(color="black"))
                if view == "training views":
                    for box in boxes["boxes"]:
                        box.set_hatch("///")
                ax.plot(at, p.mean(0), "o", color=color(kind), markersize=4)
                s = view_stats[kind][k]
                lines.append(("" if training is None else f"{view}: ")
                             + f"H = {s['entropy']:.2f} nats, p(true) = {s['true_prob']:.2f}")
            ax.set_xticks(range(len(class_names)), class_names, rotation=90 if len(class_names[0]) > 2 else 0,
                          fontsize="x-small")
            ax.set_title("\n".join(lines), fontsize="small")
        axes[r, 0].set_ylabel("probability")
    axes[-1, len(kinds) // 2].set_xlabel("class")
    shown = " (hatched) and ".join(view for view, *_ in views)
    fig.suptitle(title or f"Soft labels: robust (RSL), natural (NSL), smoothed (SSL)\non {shown}")
    return fig


# --- Figure 4: which teacher? ----------------------------------------------------------------------

@styled
def teacher_study(study: Mapping[str, Any]) -> Figure:
    """Students' robustness (mean, sd and each seed) against each teacher of the ladder, the teachers'
    own robustness and the SAT student as a line; robust underfitting and saturation shaded where they
    hold beyond the seed noise (never with one seed). `study` comes from `teacher_study.summarise`; its
    headline is the title's second line."""
    rows = study["rows"]
    x = np.arange(len(rows))
    fig, axes = _figure(1, 1, 7.5, 4.6)
    ax = axes[0, 0]
    regions = {"underfitting": _PALETTE[2], "saturation": _PALETTE[3]}
    for i, r in enumerate(rows):
        for region, colour in regions.items():
            if r["teacher"] in study[region]:
                ax.axvspan(i - 0.5, i + 0.5, color=colour, alpha=0.12, linewidth=0)
    teacher = [r["teacher_robust"] if r["teacher_robust"] is not None else np.nan for r in rows]
    ax.plot(x, teacher, "s-", color=color("teacher"), label="teacher")
    student = [[v for v in r["student_robust"] if v is not None] for r in rows]
    mean = [np.mean(v) if v else np.nan for v in student]
    sd = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in student]
    ax.errorbar(x, mean, yerr=sd, fmt="o-", color=color("rslad"), capsize=4, label="RSLAD student")
    for i, v in enumerate(student):
        ax.plot([i] * len(v), v, ".", color=color("rslad"), alpha=0.5)
    sat = [v for v in study["sat_robust"] if v is not None]
    if sat:
        ax.axhline(np.mean(sat), color=color("sat"), linestyle="--", label="SAT student")
    ax.set_xticks(x, [r["teacher"] + (f"\n{_count(r['params'])}" if r.get("params") else "") for r in rows])
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_xlabel("teacher (parameters)")
    ax.set_ylabel(f"{attack_label(study['attack'])} accuracy (%), eps {study['eps']:.3g}")
    handles, labels = ax.get_legend_handles_labels()
    patches = [matplotlib.patches.Patch(color=colour, alpha=0.25, label=f"robust {region}")
               for region, colour in regions.items() if study[region]]
    ax.legend(handles + patches, labels + [p.get_label() for p in patches], fontsize="small", loc="best")
    fig.suptitle(f"Which teacher? {study['student']} students on {study['dataset']}\n{study['headline']}")
    return fig


# --- the kit's own plots ---------------------------------------------------------------------------

_NOT_LOSS = {"epoch", "lr", "seconds", "val_clean", "val_pgd_trades"}


@styled
def training_curves(runs: Mapping[str, Sequence[Mapping[str, float]]], *, title: str | None = None) -> Figure:
    """One panel per run with its loss terms per epoch, then every run's validation clean and
    PGD_TRADES accuracy overlaid. `runs[label]` is a run's `metrics.jsonl` as a list of dicts; a label
    that names a method (e.g. "cnn-w4-rslad-s0") gets that method's colour."""
    cols = min(len(runs), 4)
    rows = math.ceil(len(runs) / cols)
    fig = Figure(figsize=(3.4 * max(cols, 2), 2.4 * rows + 3.0), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.4 * rows, 3.0])
    loss_axes = list(top.subplots(rows, cols, squeeze=False).flat)
    clean_ax, robust_ax = bottom.subplots(1, 2)
    for ax, (label, records) in zip(loss_axes, runs.items()):
        c = color(next((part for part in re.split(r"[- ]", label) if part in COLORS), label))
        epochs = [r["epoch"] for r in records]
        terms = [k for k in records[0] if k not in _NOT_LOSS] if records else []
        if len(terms) == 2 and "loss" in terms:   # one term (SAT's ce_adv): the loss is that term, drawn once
            terms.remove("loss")
        for term, ls in zip(terms, ["-", "--", ":", "-."] * 3):
            ax.plot(epochs, [r.get(term, np.nan) for r in records], ls, color=c, label=term)
        ax.set(title=f"{label}: loss terms", xlabel="epoch", ylabel="loss")
        ax.legend(fontsize="xx-small")
        clean_ax.plot(epochs, [r.get("val_clean", np.nan) for r in records], color=c, label=label)
        robust_ax.plot(epochs, [r.get("val_pgd_trades", np.nan) for r in records], color=c, label=label)
    for ax in loss_axes[len(runs):]:
        ax.remove()
    clean_ax.set(title="validation: clean", xlabel="epoch", ylabel="accuracy (%)")
    robust_ax.set(title="validation: PGD_TRADES", xlabel="epoch", ylabel="accuracy (%)")
    bottom.legend(*robust_ax.get_legend_handles_labels(), loc="outside right upper", fontsize="x-small")
    fig.suptitle(title or "Training curves")
    return fig


@styled
def robust_vs_clean(points: Mapping[str, Mapping[str, Sequence[float]]], *, attack: str = "pgd_trades",
                    title: str | None = None) -> Figure:
    """Each method's robust accuracy against its clean accuracy: the mean over seeds with one standard
    deviation as error bars (the paper reports single runs). `points[method] = {"clean": [...],
    "robust": [...]}`, one value per seed."""
    fig, axes = _figure(1, 1, 5.5, 4.4)
    ax = axes[0, 0]
    for name, p in points.items():
        clean, robust = np.asarray(p["clean"], float), np.asarray(p["robust"], float)
        if not len(clean) or not len(robust):
            continue
        sd = (lambda v: v.std(ddof=1) if len(v) > 1 else 0.0)
        ax.errorbar(clean.mean(), robust.mean(), xerr=sd(clean), yerr=sd(robust), fmt="o", capsize=4,
                    color=color(name), label=f"{run_label(name)} (n={len(robust)})")
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel(f"{attack_label(attack)} accuracy (%)")
    ax.legend(fontsize="small")
    fig.suptitle(title or "Robustness against clean accuracy\n(mean ± sd over seeds)")
    return fig


@styled
def adversarial_examples(x: Tensor, x_adv: Tensor, y: Tensor, predictions: Mapping[str, Tensor],
                         class_names: Sequence[str], *, eps: float, title: str | None = None) -> Figure:
    """One row per image: the clean image x, the perturbation amplified to the full grey range, the
    adversarial image x' and what each model predicts on x' (green: all right, red: all wrong)."""
    fig, axes = _figure(len(x), 4, 1.8, 1.8)
    for i in range(len(x)):
        delta = (x_adv[i] - x[i]) / (2 * eps) + 0.5
        for ax, img, name in zip(axes[i], (x[i], delta, x_adv[i]), ("x", "x' - x (amplified)", "x'")):
            ax.imshow(_image(img.clamp(0, 1)), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if i == 0:
                ax.set_title(name, fontsize="small")
        axes[i, 0].set_ylabel(f"label {class_names[int(y[i])]}", fontsize="small")
        text = "\n".join(f"{run_label(m)}: {class_names[int(p[i])]}" for m, p in predictions.items())
        ok = [int(p[i]) == int(y[i]) for p in predictions.values()]
        axes[i, 3].axis("off")
        axes[i, 3].text(0.0, 0.5, text, transform=axes[i, 3].transAxes, va="center", fontsize="x-small",
                        color="darkgreen" if all(ok) else "darkred" if not any(ok) else "black")
    axes[0, 3].set_title("prediction on x'", fontsize="small")
    fig.suptitle(title or f"Adversarial examples\n(PGD_TRADES, eps {eps:.3g})")
    return fig


def perturbation(p: attacks.Perturbation) -> Figure:
    """What an attack did to a few images (`attacks.perturbation`), one column each: x with its
    prediction, the perturbation scaled to its largest value (grey = 0), and x' with its prediction and
    confidence (green: right, red: wrong). What the eps slider (lab.EpsExplorer) redraws."""
    n = len(p.x)
    fig, axes = _figure(3, n, 1.6, 5 / 3)
    scale = max(p.max_delta, 1e-12)
    rows = (("x", p.x, p.pred, None), ("x' - x", 0.5 + p.delta / (2 * scale), None, None),
            ("x'", p.x_adv, p.pred_adv, p.confidence_adv))
    for r, (name, images, pred, conf) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            ax.imshow(_image(images[i].clamp(0, 1)), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if pred is not None:
                text = f"{pred[i].item()}" + (f" ({conf[i].item():.0%})" if conf is not None else "")
                ax.set_title(text, color="green" if pred[i] == p.y[i] else "red", fontsize=9)
        axes[r, 0].set_ylabel(name)
    fig.suptitle(f"max |x' - x| = {p.max_delta:.3f}")
    return fig


def rslad_terms(alphas: Sequence[float], curves: Sequence[Mapping[str, Tensor]], terms: Mapping[str, float],
                alpha: float) -> Figure:
    """RSLAD's two loss terms (`losses.rslad_loss`): their values at `alpha` as bars, and `curves` (the
    terms at each of `alphas`) with the paper's alpha = 5/6 marked. What lab.AlphaExplorer redraws."""
    fig, axes = _figure(1, 2, 4.25, 3)
    bars, lines = axes[0]
    labels = ["(1−α)·KL(S(x), T(x))", "α·KL(S(x'), T(x))", "sum"]
    bars.bar(labels, [terms["kl_nat"], terms["kl_adv"], sum(terms.values())], color=["tab:blue", "tab:red", "grey"])
    bars.set_title(f"the loss at α = {alpha:.3f}")
    bars.tick_params(axis="x", labelsize=7)
    for key, label, colour in (("kl_nat", labels[0], "tab:blue"), ("kl_adv", labels[1], "tab:red")):
        lines.plot(alphas, [c[key].item() for c in curves], label=label, color=colour)
    lines.plot(alphas, [sum(c.values()).item() for c in curves], label="sum", color="grey")
    lines.axvline(alpha, color="black", linewidth=0.8)
    lines.axvline(5 / 6, color="black", linestyle=":", linewidth=0.8, label="paper's α = 5/6")
    lines.set_xlabel("α"), lines.legend(fontsize=7)
    return fig


def one_soft_label(labels: Mapping[str, Tensor], entropies: Mapping[str, float], y: int,
                   class_names: Sequence[str], *, image: int) -> Figure:
    """One image's soft labels side by side (name -> probabilities over the classes), each titled with
    its entropy in nats; the true class `y` in green. What lab.SoftLabelExplorer redraws."""
    num_classes = len(class_names)
    fig, axes = _figure(1, len(labels), 4.25, 2.8, sharey=True)
    for ax, (name, probs) in zip(axes[0], labels.items()):
        colours = ["tab:green" if k == y else "tab:grey" for k in range(num_classes)]
        ax.bar(class_names, probs.numpy(), color=colours)
        ax.set_title(f"{name}\nentropy {entropies[name]:.2f} nats (max ln {num_classes} = "
                     f"{math.log(num_classes):.2f})", fontsize=9)
        ax.set_ylim(0, 1)
    axes[0, 0].set_ylabel(f"image {image}: P(class); true class in green")
    return fig


@styled
def eps_curves(eps: Sequence[float], curves: Mapping[str, Sequence[float]], *, attack: str = "pgd_trades",
               train_eps: float | None = None, title: str | None = None) -> Figure:
    """Robust accuracy against the attack's eps for a set of models (`evaluate.eps_curve`)."""
    fig, axes = _figure(1, 1, 5.5, 4.0)
    ax = axes[0, 0]
    for name, acc in curves.items():
        ax.plot(eps, acc, "o-", color=color(name), label=run_label(name))
    if train_eps is not None:
        ax.axvline(train_eps, color="gray", linestyle=":", label="training eps")
    ax.set_xlabel("eps (pixel scale [0, 1])")
    ax.set_ylabel(f"{attack_label(attack)} accuracy (%)")
    ax.legend(fontsize="small")
    fig.suptitle(title or f"Robustness against eps ({attack_label(attack)})")
    return fig


# --- what the paper's figures show (rslad_kit/paper_figures.py draws them from a results folder) -----

# Figure 3's two classes: the paper's Airplane and Cat; on digits 3 and 8, which look alike.
SOFT_LABEL_CLASSES = {"cifar10": (0, 3), "cifar100": (0, 3), "digits": (3, 8)}
SALIENCY_METHODS = ("ard", "iad", "rslad", "sat")   # Figure 2's students


def similarity_markdown(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any],
                        differences: Sequence[Mapping[str, Any]] = ()) -> str:
    """Figure 2's numbers as Markdown tables: each model's similarity, then the paired differences."""
    lines = ["# How alike are the students' and the teacher's maps?", "",
             f"Mean Spearman rank correlation between each model's map and the teacher's, over "
             f"{meta['images']} test images; adversarial examples by PGD_TRADES (eps {meta['eps']:.4g}) against "
             f"{'the teacher' if meta['against'] == 'teacher' else 'each model'}; maps of the true-class logit; "
             f"SmoothGrad sigma {meta['sigma']} of the input range, {meta['samples']} samples. The 95% interval "
             "is across images for one seed, across seeds' means for several. The floor is what a model of the "
             "student's architecture shares with the teacher without learning from it (randomly initialised, or "
             "trained naturally); the ceiling is a second teacher trained from another seed.", "",
             "| model | role | map | mean | 95% interval | images | seeds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        interval = "—" if math.isnan(r["low"]) else f"[{r['low']:.3f}, {r['high']:.3f}]"
        lines.append(f"| {run_label(r['student'])} | {r.get('role', 'student')} | "
                     f"{'Grad-CAM' if r['map'] == 'gradcam' else 'SmoothGrad'} | "
                     f"{r['mean']:.3f} | {interval} | {r['images']} | {r['seeds']} |")
    if differences:
        lines += ["", "Paired by seed (the same seed's students share initialisation and data order): the mean "
                  "difference in ρ, its 95% interval and the seeds it rests on.", "",
                  "| difference | map | mean | 95% interval | seeds |", "|---|---|---|---|---|"]
        for d in differences:
            interval = "—" if d["low"] is None else f"[{d['low']:+.3f}, {d['high']:+.3f}]"
            lines.append(f"| {run_label(d['of'])} − {run_label(d['minus'])} | "
                         f"{'Grad-CAM' if d['map'] == 'gradcam' else 'SmoothGrad'} | {d['mean']:+.3f} | {interval} | "
                         f"{d['seeds']} |")
    return "\n".join(lines) + "\n"
