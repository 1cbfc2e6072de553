"""Loading a model from a name: the one place that turns a spec into a model.

A spec is one of

* `robustbench:<name>`: a RobustBench Linf model, read from RobustBench's layout
  `{model_dir}/{dataset}/Linf/<name>.pt` (downloaded when absent; models.ZOO lists the names),
* `shipped:<name>`: a teacher shipped with the kit, checked against its SHA-256 (models.shipped_file),
* a checkpoint file, or a run folder (its `best.pt`),
* a run name, looked up in the folder `beside` (a student trained into runs/student finds runs/teacher).

Every file is read once, with `weights_only=True` (models.read_checkpoint). This module sits below
`train` in the floors: evaluation, figures, the notebooks and the command line load models from here
without importing training. Taught in notebooks/01_data_models_teachers.ipynb.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from rslad_kit import models
from rslad_kit.config import TrainConfig
from rslad_kit.data import Dataset
from rslad_kit.errors import UserError

Kind = Literal["robustbench", "shipped", "path"]


def parse_spec(spec: str | os.PathLike) -> tuple[Kind, str]:
    """("robustbench", name), ("shipped", name), or ("path", spec) for a file, run folder or run name."""
    prefix, sep, name = str(spec).partition(":")
    if sep and prefix in ("robustbench", "shipped"):
        return prefix, name   # type: ignore[return-value]
    return "path", str(spec)


def checkpoint_path(spec: str | os.PathLike, *, dataset: str | None = None, model_dir: str | os.PathLike = "models",
                    beside: str | os.PathLike | None = None) -> Path:
    """The file `spec` names: RobustBench's zoo layout (needs `dataset`), a shipped teacher (checked by
    SHA-256), a checkpoint, or a run folder's best.pt. A bare run name is also looked up in `beside`."""
    kind, name = parse_spec(spec)
    if kind == "robustbench":
        return models.zoo_path(_needs_dataset(spec, dataset), name, model_dir)
    if kind == "shipped":
        return models.shipped_file(name)
    path = Path(name)
    if not path.exists() and beside is not None and (Path(beside) / name).exists():
        path = Path(beside) / name
    return path / "best.pt" if path.is_dir() else path


def load_model(spec: str | os.PathLike, *, dataset: str | None = None, model_dir: str | os.PathLike = "models",
               beside: str | os.PathLike | None = None, arch: str | None = None, num_classes: int | None = None,
               in_channels: int = 3, download: bool = True, rslad_official_stats: bool = False) -> nn.Module:
    """The model `spec` names (see the module docstring), on the CPU, in eval mode.

    A kit checkpoint records its architecture (and the memory layout it trained in); a bare state dict
    needs `arch` and `num_classes`. A RobustBench model comes frozen (requires_grad off) and needs the
    `dataset` it was trained on; `download=False` refuses to fetch a missing file, and
    `rslad_official_stats=True` normalises the CIFAR-100 Gowal teacher with CIFAR-10 statistics, as the
    official RSLAD script did (it changes nothing for the other teachers).
    """
    kind, name = parse_spec(spec)
    if kind == "robustbench":
        return _robustbench(name, _needs_dataset(spec, dataset), model_dir, download, rslad_official_stats)
    path = checkpoint_path(spec, model_dir=model_dir, beside=beside)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; check the path (a run folder needs a best.pt){_zoo_hint(name)}")
    checkpoint = models.read_checkpoint(path)   # read once: its metadata names the architecture
    meta = checkpoint.get("meta") if isinstance(checkpoint, dict) else None
    if meta is not None:
        model = models.build(meta["config"]["model"], meta["num_classes"], in_channels=meta["in_channels"])
        if meta["config"].get("channels_last"):   # the same numbers, faster on a CPU (docs/benchmarks.md)
            model = model.to(memory_format=torch.channels_last)
    elif arch is not None and num_classes is not None:
        model = models.build(arch, num_classes, in_channels=in_channels)
    else:
        raise UserError(f"{path} is a bare state dict; name its architecture (--teacher-model / --model)")
    return models.load_state(model, checkpoint, path).eval()


def teacher_path(cfg: TrainConfig, beside: str | os.PathLike | None = None) -> Path:
    """The file of `cfg.teacher` (whose SHA-256 a run records); a bare run name is looked up in `beside`."""
    return checkpoint_path(cfg.teacher, dataset=cfg.dataset, model_dir=cfg.model_dir, beside=beside)


def load_teacher(cfg: TrainConfig, ds: Dataset, beside: str | os.PathLike | None = None) -> nn.Module:
    """The frozen teacher `cfg.teacher` names, in eval mode, after checking that it reads `ds`'s images
    and predicts its classes. A bare run name is looked up in `beside`."""
    teacher = load_model(cfg.teacher, dataset=cfg.dataset, model_dir=cfg.model_dir, beside=beside,
                         arch=cfg.teacher_model, num_classes=ds.num_classes, in_channels=ds.in_channels)
    teacher.eval().requires_grad_(False)
    try:
        with torch.no_grad():
            classes = teacher(ds.val.x[:1]).shape[1]
    except RuntimeError as err:   # e.g. a first convolution built for other input channels
        reason = str(err).strip().splitlines()[0][:160]
        raise UserError(f"the teacher cannot read {cfg.dataset} images of shape {tuple(ds.val.x.shape[1:])} "
                        f"({reason}); use a teacher trained on {cfg.dataset}") from err
    if classes != ds.num_classes:
        raise UserError(f"the teacher predicts {classes} classes but {cfg.dataset} has {ds.num_classes}; "
                        f"use a teacher trained on {cfg.dataset}")
    return teacher


def _needs_dataset(spec: str | os.PathLike, dataset: str | None) -> str:
    if dataset is None:
        raise UserError(f"{spec} is a RobustBench model; name the dataset it was trained on (dataset=...)")
    return dataset


def _zoo_hint(name: str) -> str:
    """'; did you mean robustbench:NAME?' for a RobustBench name given without its prefix."""
    known = sorted({n for _, n in models.ZOO if n == name})
    return f"; did you mean 'robustbench:{known[0]}'?" if known else ""


def _robustbench(name: str, dataset: str, model_dir: str | os.PathLike, download: bool,
                 rslad_official_stats: bool) -> nn.Module:
    """A frozen RobustBench model from `{model_dir}/{dataset}/Linf/{name}.pt`, fetched with gdown when
    absent and `download` is set."""
    if (dataset, name) not in models.ZOO:
        raise UserError(f"no RobustBench teacher {name!r} for {dataset!r}; known: {models.known_zoo()}")
    entry = models.ZOO[(dataset, name)]
    kwargs = dict(entry.kwargs)
    if rslad_official_stats and kwargs.get("mean") == models.CIFAR100_MEAN:
        kwargs.update(mean=models.CIFAR10_MEAN, std=models.CIFAR10_STD)
    path = models.zoo_path(dataset, name, model_dir)
    if not path.is_file():
        if not download:
            raise UserError(f"teacher file {path} not found; pass download=True or place the RobustBench "
                            f"file there (https://drive.google.com/uc?id={entry.gdrive_id})")
        models.fetch(entry, path)
    model = models.load_checkpoint(entry.arch(**kwargs), path)
    model.eval()
    model.requires_grad_(False)
    return model
