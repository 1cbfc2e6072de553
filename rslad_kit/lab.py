"""What the classroom notebooks share: one parameters convention for both scales, cached runs (one
folder per config), training with live curves, the widgets (the eps, attention-map, alpha, soft-label
and teacher explorers), the reduced teacher study, and a button for expensive steps that reveals its
exercise's answer after it runs (`solutions`).

Every notebook starts with a cell tagged `parameters`:

    SCALE = "classroom"       # "classroom": digits on a CPU; "cifar10": the paper's scale, on a GPU
    DATA_ROOT = "../data"     # cifar10: the folder holding cifar-10-batches-py/
    MODEL_DIR = "../models"   # cifar10: RobustBench's layout, models/cifar10/Linf/<name>.pt
    RUNS = "runs"             # trained models are cached here: a rerun does not retrain
    EPOCHS = None             # None: the preset's schedule

CI overrides it through nbmake's `mock` metadata (SCALE = "smoke": two epochs). `setup` turns these
values into a `Lab`. This module sits on the top floor beside `cli` and `report`: it calls the API
and draws (through `figures`); it adds no science. Taught from notebooks/00_setup_and_story.ipynb on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import ipywidgets as widgets
import matplotlib
import matplotlib.pyplot as plt
import sklearn
import torch
from IPython.display import Markdown, clear_output, display
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from rslad_kit import attacks as atk
from rslad_kit import config, data, evaluate, figures, gpu, loading, models, runs, saliency, solutions, teacher_study
from rslad_kit import train
from rslad_kit.errors import UserError, did_you_mean
from rslad_kit.losses import METHODS, entropy, loads_teacher, rslad_loss

# The presets a notebook's SCALE may name (config.PRESETS). smoke: what CI runs; two epochs of the
# classroom. A new classroom preset is one more name here and its entry in QUICK_STUDY.
SCALES = ("classroom", "cifar10", "smoke")
# The teacher study in a lab's minutes: the whole ladder, one seed. The classroom also trains 15 of its
# 40 epochs, decaying the lr at 12 and 14 (about 2 minutes on 2 cores, against 8-10 for the real study;
# 10 epochs left the students below 15% PGD accuracy, too undertrained to show anything); smoke is
# already one seed of two epochs.
QUICK_STUDY: dict[str, dict[str, Any]] = {"classroom": dict(seeds=1, epochs=15, milestones=(12, 14)),
                                          "smoke": {}, "cifar10": dict(seeds=1)}


# --- one parameters cell, both scales ------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def _dataset(name: str, root: str, val_size: int | None, image_size: int | None, train_size: int | None,
             device: torch.device) -> data.Dataset:
    """Loaded, and moved to `device`, once per kernel."""
    ds = data.load(name, root, val_size=val_size, image_size=image_size, train_size=train_size)
    return replace(ds, train=ds.train.to(device), val=ds.val.to(device), test=ds.test.to(device))


@dataclass(frozen=True)
class Lab:
    """A notebook's scale: its preset, where data and teachers live, and where runs are cached."""

    scale: str
    runs: Path                 # run folders are runs/<scale>/<name>; students find "teacher" beside them
    data_root: str = "data"
    model_dir: str = "models"
    epochs: int | None = None  # None: the preset's schedule

    def config(self, method: str, **overrides: Any) -> config.TrainConfig:
        """The preset's config of `method` at this scale (a student needing a teacher gets this scale's)."""
        if method not in METHODS:
            raise UserError(f"unknown method {method!r}; {did_you_mean(method, METHODS)}choose from "
                            f"{', '.join(METHODS)}")
        extra = {"epochs": self.epochs} if self.epochs else {}
        if METHODS[method].needs_teacher and "teacher" not in overrides:
            extra["teacher"] = self.teacher_spec
        return config.preset(self.scale, method, data_root=self.data_root, model_dir=self.model_dir,
                             **extra, **overrides)

    @property
    def eps(self) -> float:
        return self.config("sat").attack.eps

    @property
    def teacher_spec(self) -> str:
        """What a student's `teacher` field names: a RobustBench teacher, or the sibling run "teacher"."""
        recipe = config.PRESETS[self.scale].plan.teacher
        return recipe if isinstance(recipe, str) else "teacher"

    @property
    def autoattack_only(self) -> tuple[str, ...] | None:
        """None (the standard AutoAttack) except at smoke scale, which runs APGD-CE only."""
        return config.PRESETS[self.scale].plan.autoattack

    @property
    def device(self) -> torch.device:
        """Where this scale computes: CUDA when present (the preset's "auto"), else the CPU."""
        return gpu.resolve_device(self.config("sat").device)

    def dataset(self) -> data.Dataset:
        """This scale's dataset, its splits on `device` (so evaluations and maps run there too)."""
        cfg = self.config("sat")
        return _dataset(cfg.dataset, cfg.data_root, cfg.val_size, cfg.image_size, cfg.train_size, self.device)

    def teacher_config(self, kind: str = "teacher") -> config.TrainConfig | str:
        """The recipe of this scale's robust teacher ("teacher") or natural one ("teacher-natural")."""
        plan = config.PRESETS[self.scale].plan
        recipe = plan.teacher if kind == "teacher" else plan.natural_teacher
        if isinstance(recipe, str):
            return recipe
        return config.override(self.config(recipe["method"]), **recipe)

    def teacher(self, kind: str = "teacher") -> nn.Module:
        """This scale's teacher, frozen and in eval mode: trained once into runs/<scale>/<kind>, a file
        shipped with the kit, or a RobustBench file."""
        spec = self.teacher_config(kind)
        if isinstance(spec, str):   # a shipped or RobustBench teacher: a file
            teacher = loading.load_model(spec, dataset=self.config("sat").dataset, model_dir=self.model_dir)
            return teacher.to(self.device).requires_grad_(False)
        return self.train(spec, kind).requires_grad_(False)

    def arch(self, run: str) -> str:
        """The registry architecture of this scale's "teacher" / "teacher-natural", or of a method's
        run (Grad-CAM's target layer depends on it)."""
        spec = self.teacher_config(run) if run in ("teacher", "teacher-natural") else self.config(run)
        if not isinstance(spec, str):
            return spec.model
        kind, name = loading.parse_spec(spec)
        if kind == "shipped":
            return models.shipped_record(name)["config"]["model"]
        return saliency.ZOO_ARCHS[models.ZOO[(self.config("sat").dataset, name)].arch]   # its class's architecture

    def folder(self, cfg: config.TrainConfig, name: str) -> Path:
        """Where the run of `cfg` is cached: runs/<scale>/<name>, unless that folder holds a run of other
        settings (a notebook with another EPOCHS, say); then runs/<scale>/<name>-<its config's digest>.
        Each config gets its own run, so changing a parameter never breaks another notebook's cache."""
        out = self.runs / self.scale / name
        saved = _saved_config(out)
        return out if saved is None or saved == cfg else out.with_name(f"{name}-{_digest(cfg)}")

    def resolve(self, cfg: config.TrainConfig) -> config.TrainConfig:
        """`cfg` with its teacher "teacher" / "teacher-natural" naming the folder that holds this lab's
        teacher of that kind (a student of a 3-epoch teacher is another run than one of the full teacher)."""
        kind = cfg.teacher
        if kind not in ("teacher", "teacher-natural") or not loads_teacher(cfg):
            return cfg
        recipe = self.teacher_config(kind)
        if isinstance(recipe, str):   # a RobustBench teacher: a file, not a run folder
            return cfg
        return replace(cfg, teacher=self.folder(recipe, kind).name)

    def cached(self, cfg: config.TrainConfig, name: str) -> bool:
        """Whether the run of `cfg` called `name` has finished (an earlier notebook trained it)."""
        cfg = self.resolve(cfg)
        return runs.is_finished(self.folder(cfg, name))

    def soft_label_configs(self) -> dict[str, tuple[str, config.TrainConfig]]:
        """Table 7's RSLAD students by soft label, as (run name, config): RSL from the robust teacher
        (notebook 00's "rslad"), NSL from the natural one (04's button), SSL from label smoothing."""
        return {"RSL": ("rslad", self.config("rslad")),
                "NSL": ("rslad-nsl", self.config("rslad", teacher="teacher-natural")),
                "SSL": ("rslad-ssl", self.config("rslad", teacher=None, soft_labels="smooth"))}

    def quick_teacher_study(self, *, progress: bool = True) -> Path:
        """The teacher study cut to fit a lab (`QUICK_STUDY`: one seed, and 15 of the classroom's 40
        epochs), cached in runs/<scale>/teacher-study-quick; returns its folder."""
        extra = {"epochs": self.epochs} if self.epochs else {}
        out = self.runs / self.scale / ("teacher-study-quick" + (f"-epochs{self.epochs}" if self.epochs else ""))
        return teacher_study.run(self.scale, out=out, progress=progress, **(QUICK_STUDY.get(self.scale, {}) | extra))

    def train(self, cfg: config.TrainConfig, name: str, *, curves: bool = False) -> nn.Module:
        """`trained` in `folder(cfg, name)`; trains this scale's teacher first when `cfg` reads it."""
        if cfg.teacher in ("teacher", "teacher-natural") and loads_teacher(cfg):
            self.teacher(cfg.teacher)
        cfg = self.resolve(cfg)
        return trained(cfg, self.folder(cfg, name), dataset=self.dataset(), curves=curves).to(self.device)


def setup(scale: str = "classroom", *, runs: str = "runs", data_root: str = "data", model_dir: str = "models",
          epochs: int | None = None, threads: int | None = None) -> Lab:
    """Check the notebook's parameters and set torch's thread count (oversubscription slows attacks).

    `threads=None`: OMP_NUM_THREADS when set (`make lab` sets 2; `make test` runs notebooks side by
    side with 1 each), else 2, a laptop's cores.

    Smoke runs are CI's: their folder, runs/smoke, is emptied here, so a changed preset never meets
    a stale cache. Classroom and CIFAR-10 runs are kept and reused.
    """
    if scale not in SCALES:
        raise UserError(f"unknown SCALE {scale!r}; set it to one of {', '.join(SCALES)} in the parameters cell")
    if scale == "cifar10" and not torch.cuda.is_available():
        print("SCALE = 'cifar10' on a CPU: expect hours per run; the classroom scale is made for CPUs.")
    torch.set_num_threads(threads or int(os.environ.get("OMP_NUM_THREADS", 2)))
    # `figures` draws on bare Figure objects, which never load pyplot's backend; loading it is what
    # lets Jupyter's inline backend register the formatter that shows a Figure as an image.
    plt.switch_backend(matplotlib.get_backend())
    if scale == "smoke":
        shutil.rmtree(Path(runs) / "smoke", ignore_errors=True)
    return Lab(scale, Path(runs), data_root, model_dir, epochs)


def environment() -> dict[str, Any]:
    """Versions, device and threads: what a run records, and what to check first when a lab misbehaves."""
    return {"python": platform.python_version(), **runs.provenance(gpu.resolve_device("auto")),
            "cores": gpu.available_cores(), "ipywidgets": widgets.__version__,
            "scikit-learn": sklearn.__version__}


# --- cached runs ----------------------------------------------------------------------------------

def _saved_config(out: Path) -> config.TrainConfig | None:
    """The config of the run in `out` (finished or interrupted), or None when it holds none."""
    last = out / "last.pt"
    return config.from_dict(runs.checkpoint_info(last)["meta"]["config"]) if last.is_file() else None


def _digest(cfg: config.TrainConfig) -> str:
    """Eight hex digits that name a config (its fields, as saved in every checkpoint)."""
    return hashlib.sha256(json.dumps(config.to_dict(cfg), sort_keys=True, default=str).encode()).hexdigest()[:8]


def trained(cfg: config.TrainConfig, out: str | Path, *, dataset: data.Dataset | None = None,
            curves: bool = False) -> nn.Module:
    """The best checkpoint of `cfg` in `out`, in eval mode: trained if missing, resumed if interrupted,
    loaded silently when finished. `Lab.folder` picks an `out` that holds `cfg`'s run or none; another
    config's run here is a UserError. `curves` draws the loss terms and validation accuracy, redrawn
    after every epoch while training.
    """
    out = Path(out)
    saved = _saved_config(out)
    if saved is not None and saved != cfg:
        raise UserError(f"{out} holds a run trained with other settings; call Lab.train, which picks a folder "
                        "of its own for each config")
    if runs.is_finished(out):
        if curves:
            _show(figures.training_curves({out.name: runs.history(out)}, title=out.name))
    else:
        live = LiveCurves(out.name) if curves else None
        train.train(cfg, out, resume=(out / "last.pt").is_file(), dataset=dataset, on_epoch=live)
    return loading.load_model(out)


# --- figures ---------------------------------------------------------------------------------------

def _show(fig: Figure) -> None:
    display(fig)
    plt.close(fig)


class LiveCurves:
    """An `on_epoch` hook for `train.train` that redraws `figures.training_curves` in place after
    every epoch."""

    def __init__(self, title: str = "") -> None:
        self.title, self.handle, self.figure = title, None, None

    def __call__(self, history: list[dict[str, Any]]) -> None:
        self.figure = figures.training_curves({self.title: history}, title=self.title or None)
        if self.handle is None:
            self.handle = display(self.figure, display_id=True)
        else:
            self.handle.update(self.figure)
        plt.close(self.figure)


# --- widgets ---------------------------------------------------------------------------------------

class EpsExplorer:
    """An eps slider that reruns a white-box attack on a few images and redraws x, x' - x, x' and the
    predictions. Cheap enough for a slider: a PGD-20 on a handful of images."""

    def __init__(self, models_by_name: dict[str, nn.Module], x: Tensor, y: Tensor, *, eps: float,
                 attack: str = "pgd_trades") -> None:
        self.models, self.x, self.y = {k: m.eval() for k, m in models_by_name.items()}, x, y
        self.model = widgets.Dropdown(options=list(self.models), description="model")
        self.attack = widgets.Dropdown(options=list(atk.WHITE_BOX), value=attack, description="attack")
        self.slider = widgets.FloatSlider(value=eps, min=0.0, max=min(1.0, 2.5 * eps), step=eps / 20,
                                          description="ε", readout_format=".3f", continuous_update=False)
        self.output = widgets.Output()
        for control in (self.model, self.attack, self.slider):
            control.observe(lambda _change: self.draw(), names="value")
        self.summary: atk.Perturbation | None = None
        self.figure: Figure | None = None
        self.draw()

    def draw(self) -> None:
        if self.slider.value <= 0:   # eps = 0 is no attack: show the clean predictions
            self.summary = atk.Perturbation(self.x, self.x, self.y, *self._clean())
        else:
            self.summary = atk.perturbation(self.models[self.model.value], self.x, self.y,
                                            eps=self.slider.value, attack=self.attack.value)
        self.figure = figures.perturbation(self.summary)   # kept: what the output shows, for tests
        with self.output:
            clear_output(wait=True)
            _show(self.figure)

    def _clean(self) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            probs = torch.softmax(self.models[self.model.value](self.x), dim=1)
        confidence, pred = probs.max(1)
        return pred, pred, confidence

    def _ipython_display_(self) -> None:
        display(widgets.VBox([widgets.HBox([self.model, self.attack]), self.slider, self.output]))


class MapExplorer:
    """Figure 2 one test image at a time: choose the image, the model the adversarial example is
    crafted against (the teacher, or each model itself) and the models shown; their Grad-CAM and
    SmoothGrad maps are recomputed and redrawn on every change (a PGD-20, PGD_TRADES, on one image per model).
    `models_by_name[name] = (model, registry architecture)`; the one named `teacher` is the source."""

    def __init__(self, models_by_name: dict[str, tuple[nn.Module, str]], x: Tensor, y: Tensor, *, eps: float,
                 class_names: list[str] | None = None, teacher: str = "teacher") -> None:
        if teacher not in models_by_name:
            raise UserError(f"MapExplorer needs the teacher {teacher!r} among its models ({', '.join(models_by_name)})")
        self.models, self.x, self.y, self.eps, self.teacher = models_by_name, x, y, eps, teacher
        self.class_names = class_names or [str(k) for k in range(int(y.max()) + 1)]
        self.image = widgets.IntSlider(value=0, min=0, max=len(x) - 1, description="image", continuous_update=False)
        self.against = widgets.Dropdown(options=[("the teacher", "teacher"), ("each model itself", "each")],
                                        description="attack vs")
        self.shown = widgets.SelectMultiple(options=list(models_by_name), value=tuple(models_by_name),
                                            description="models")
        self.output = widgets.Output()
        for control in (self.image, self.against, self.shown):
            control.observe(lambda _change: self.draw(), names="value")
        self.maps: dict[str, dict[str, Tensor]] = {}
        self.figure: Figure | None = None
        self.draw()

    def draw(self) -> None:
        i, against = self.image.value, self.against.value
        chosen = {name: self.models[name] for name in self.models if name in self.shown.value}   # in order
        source = self.models[self.teacher][0] if against == "teacher" else None
        self.maps = saliency.maps_of(chosen, self.x[i:i + 1], self.y[i:i + 1], eps=self.eps, source=source)
        self.figure = None if not chosen else figures.attention_maps(
            self.maps, images=1, title=f"image {i} (label {self.class_names[int(self.y[i])]})\n"
                                       f"attack vs {'teacher' if against == 'teacher' else 'itself'}")
        with self.output:
            clear_output(wait=True)
            if self.figure is None:
                print("choose at least one model")
            else:
                _show(self.figure)

    def _ipython_display_(self) -> None:
        hint = widgets.HTML("<small>Ctrl-click (⌘-click on a Mac) to choose several models</small>")
        display(widgets.HBox([widgets.VBox([self.image, self.against, self.shown, hint]), self.output]))


class AlphaExplorer:
    """RSLAD's weights on one batch: an α slider redraws the two weighted terms, (1 − α)·KL(S(x), T(x))
    and α·KL(S(x'), T(x)), and their sum, beside each term's curve over every α (the paper's 5/6 marked)."""

    def __init__(self, s_nat: Tensor, s_adv: Tensor, t_nat: Tensor, *, alpha: float = 5 / 6) -> None:
        self.s_nat, self.s_adv, self.t_nat = s_nat.detach(), s_adv.detach(), t_nat.detach()
        self.slider = widgets.FloatSlider(value=alpha, min=0.0, max=1.0, step=1 / 24, description="α",
                                          readout_format=".3f", continuous_update=False)
        self.output = widgets.Output()
        self.slider.observe(lambda _change: self.draw(), names="value")
        self.terms: dict[str, float] = {}
        self.figure: Figure | None = None
        self.draw()

    def draw(self) -> None:
        alphas = torch.linspace(0, 1, 25).tolist()
        curves = [rslad_loss(self.s_nat, self.s_adv, self.t_nat, alpha=a) for a in alphas]
        self.terms = {k: v.item() for k, v in rslad_loss(self.s_nat, self.s_adv, self.t_nat,
                                                          alpha=self.slider.value).items()}
        self.figure = figures.rslad_terms(alphas, curves, self.terms, self.slider.value)
        with self.output:
            clear_output(wait=True)
            _show(self.figure)

    def _ipython_display_(self) -> None:
        display(widgets.VBox([self.slider, self.output]))


class SoftLabelExplorer:
    """One image's soft labels: the teacher's softmax at temperature τ (τ = 1 is RSL) and label
    smoothing with smoothing s (SSL). Sliders redraw both distributions and their entropies (nats)."""

    def __init__(self, t_logits: Tensor, y: Tensor, class_names: list[str]) -> None:
        self.t_logits, self.y, self.class_names = t_logits.detach().cpu(), y.cpu(), class_names
        self.image = widgets.IntSlider(value=0, min=0, max=len(y) - 1, description="image", continuous_update=False)
        self.tau = widgets.FloatLogSlider(value=1.0, base=10, min=-1, max=1.5, description="τ",
                                          readout_format=".2f", continuous_update=False)
        self.smoothing = widgets.FloatSlider(value=0.1, min=0.0, max=1.0, step=0.05, description="smoothing s",
                                             continuous_update=False)
        self.output = widgets.Output()
        for control in (self.image, self.tau, self.smoothing):
            control.observe(lambda _change: self.draw(), names="value")
        self.entropies: dict[str, float] = {}
        self.figure: Figure | None = None
        self.draw()

    def draw(self) -> None:
        i, num_classes = self.image.value, len(self.class_names)
        teacher = torch.softmax(self.t_logits[i] / self.tau.value, dim=0)
        one_hot = torch.nn.functional.one_hot(self.y[i], num_classes).float()
        smooth = (1 - self.smoothing.value) * one_hot + self.smoothing.value / num_classes
        labels = {f"teacher at τ = {self.tau.value:.2f}": teacher, f"smoothing s = {self.smoothing.value:.2f}": smooth}
        self.entropies = {k: entropy(p[None])[0].item() for k, p in labels.items()}
        self.figure = figures.one_soft_label(labels, self.entropies, int(self.y[i]), self.class_names, image=i)
        with self.output:
            clear_output(wait=True)
            _show(self.figure)

    def _ipython_display_(self) -> None:
        display(widgets.VBox([widgets.HBox([self.image, self.tau, self.smoothing]), self.output]))


class TeacherPicker:
    """Figure 4 one rung at a time: choose a teacher of the study's ladder and read its robustness
    beside its students', their gap, and which region of the paper's figure the rung falls in."""

    def __init__(self, study: dict[str, Any]) -> None:
        self.study = study
        self.teacher = widgets.Dropdown(options=[r["teacher"] for r in study["rows"]], description="teacher")
        self.output = widgets.Output()
        self.teacher.observe(lambda _change: self.draw(), names="value")
        self.text = ""
        self.draw()

    def draw(self) -> None:
        row = next(r for r in self.study["rows"] if r["teacher"] == self.teacher.value)
        students = [v for v in row["student_robust"] if v is not None]
        mean = sum(students) / len(students) if students else float("nan")
        region = ("robust underfitting: its students beat it" if row["teacher"] in self.study["underfitting"]
                  else "robust saturation: the gap is wider than at the best teacher"
                  if row["teacher"] in self.study["saturation"] else
                  "the best teacher of this run" if row["teacher"] == self.study["best"] else "neither region")
        attack = self.study["attack"]
        self.text = (f"| {row['teacher']} ({row['params']:,} parameters) | {attack} % |\n|---|---|\n"
                     f"| the teacher | {row['teacher_robust']:.1f} |\n"
                     f"| its RSLAD students ({len(students)} seed(s), mean) | {mean:.1f} |\n"
                     f"| teacher − student | {row['teacher_robust'] - mean:+.1f} |\n\n**Region:** {region}.")
        with self.output:
            clear_output(wait=True)
            display(Markdown(self.text))

    def _ipython_display_(self) -> None:
        display(widgets.VBox([self.teacher, self.output]))


class RunButton:
    """A button for an expensive step: nothing runs until it is clicked; what the step returns or
    prints appears below it, then how long it took. `result` keeps the step's return value. With
    `reveal`, the exercise's answer (`solutions.Prediction`) comes after the step's output, never before."""

    def __init__(self, description: str, step: Callable[[], Any], *,
                 reveal: solutions.Prediction | None = None) -> None:
        self.step, self.result, self.reveal = step, None, reveal
        self.button = widgets.Button(description=description, layout=widgets.Layout(width="auto"))
        self.output = widgets.Output()
        self.button.on_click(lambda _button: self.run())

    def run(self) -> Any:
        self.button.disabled = True
        start = time.perf_counter()
        try:
            with self.output:
                self.result = self.step()
                if self.result is not None:
                    display(self.result)
                print(f"done in {time.perf_counter() - start:.0f} s")
                if self.reveal is not None:
                    self.reveal.reveal(self.result)
        finally:
            self.button.disabled = False
        return self.result

    def _ipython_display_(self) -> None:
        display(widgets.VBox([self.button, self.output]))


def one_by_one(names: list[str], what: str = "training") -> Iterator[str]:
    """Yield `names` in turn under a status line "training 2 of 4: mart" that updates in place, so a
    step that runs several things says how far it is (one thing needs no count: no line)."""
    if len(names) < 2:
        yield from names
        return
    handle = display(Markdown(""), display_id=True)
    for k, name in enumerate(names, 1):
        handle.update(Markdown(f"*{what} {k} of {len(names)}: {name}*"))
        yield name
    handle.update(Markdown(f"*{what}: {len(names)} of {len(names)} done*"))


def evaluate_in_parts(model: nn.Module, split: data.Split, attacks: list[str], *, eps: float, n: int,
                      parts: int = 4, **kwargs: Any) -> dict[str, Any]:
    """`evaluate.evaluate` on the first `n` images, `parts` slices in turn under a progress bar (an
    attack's accuracy is a mean over images, so the slices' accuracies average to the whole's). For
    slow attacks (AutoAttack: minutes on a CPU) that would otherwise run without feedback."""
    bounds = [round(n * k / parts) for k in range(parts + 1)]
    rows = []
    for lo, hi in tqdm(list(zip(bounds, bounds[1:])), desc="images", unit="part"):
        rows.append(evaluate.evaluate(model, (split.x[lo:hi], split.y[lo:hi]), attacks, eps=eps, **kwargs))
    merged = {a: round(sum(r[a] * r["n"] for r in rows) / n, 2) for a in attacks}
    return merged | {"n": n, "seconds": {a: round(sum(r["seconds"][a] for r in rows), 1) for a in attacks},
                     "warnings": sorted({w for r in rows for w in r["warnings"]})}


# --- teaching helpers ------------------------------------------------------------------------------

@contextmanager
def expect_error() -> Iterator[None]:
    """Show the one-line UserError the block raises (the kit's answer to bad input); fail if none."""
    try:
        yield
    except UserError as e:
        print(f"UserError: {e}")
    else:
        raise AssertionError("expected a UserError, and the block ran without one")


def has_results(preset: str, results: str | Path) -> bool:
    """Whether `rslad-kit reproduce --preset <preset>` has written its tables under `results`."""
    return (Path(results) / preset / "summary.md").is_file()


def describe(cfg: config.TrainConfig | str) -> str:
    """One line: what a run trains, on what, for how long, against which attack (or a teacher's spec)."""
    if isinstance(cfg, str):   # a RobustBench teacher: nothing to train
        return f"{cfg} (a pretrained file, not trained here)"
    a = cfg.attack
    teacher = f", distilled from {cfg.teacher}" if cfg.teacher and loads_teacher(cfg) else ""
    return (f"{cfg.method} · {cfg.model} on {cfg.dataset} · {cfg.epochs} epochs · eps {a.eps:.4g}, "
            f"PGD-{a.steps} step {a.step_size:.3g}{teacher}")


def accuracy_table(rows: dict[str, dict[str, Any]], attacks: list[str]) -> Markdown:
    """Evaluation rows (`evaluate.evaluate`) as a Markdown table: one line per model, accuracy in %."""
    return table(rows, attacks)


def table(rows: dict[str, dict[str, Any]], columns: list[str], *, fmt: str = ".1f", first: str = "model") -> Markdown:
    """Rows of numbers as a Markdown table: one line per key of `rows`, one column per entry of `columns`."""
    lines = [f"| {first} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(format(row[c], fmt) for c in columns) + " |" for name, row in rows.items()]
    return Markdown("\n".join(lines))
