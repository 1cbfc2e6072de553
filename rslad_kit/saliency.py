"""Where a model looks: Grad-CAM maps, SmoothGrad saliency, and how alike two models' maps are.

The paper (Figure 2) shows three images and says RSLAD's maps look more like the teacher's than ARD's
and IAD's. `map_similarity` turns that into a number: the mean Spearman rank correlation between two
models' maps over many images, with a 95% interval. Figure 2 sets it between a floor (a random model
and a naturally trained student) and a ceiling (a second teacher trained from another seed), and
compares RSLAD with the other students paired by seed (`paired_differences`).

Both maps explain the *true* class's logit, so every model is asked the same question about the same
image, even where an adversarial example makes the models predict different classes.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor, nn
from tqdm.auto import tqdm

from rslad_kit import attacks as atk
from rslad_kit import models
from rslad_kit.stats import mean_interval, paired

# Grad-CAM's target layer for every registry architecture, by its `get_submodule` path: the same point
# in every architecture, the last activation before global pooling (after the final BN and ReLU, or
# SiLU), as in the Grad-CAM paper. Its output is what the pooling reads (tests/test_saliency.py hooks
# each entry and checks), so student and teacher maps compare the same stage. On 32x32 CIFAR inputs
# that is a 4x4 map (ResNets, MobileNetV2) or 8x8 (WideResNets).
# - ResNets: `layer4`, whose last block ends in its ReLU.
# - MobileNetV2: `relu2`, after `conv2` and `bn2` (not `layers`, which is before them).
# - WideResNets: `relu`, after the final `bn1` / `batchnorm` (not `block3` / `layer`, before them).
# - SmallCNN: `features.2`, the third conv-BN-ReLU block. The only stage between it and the global
#   pooling is a 2x2 max-pool, which is no activation; taking the map before it keeps 4x4 on 8x8
#   digits (8x8 on 16x16) instead of 2x2, which shows nothing.
GRADCAM_LAYERS: dict[str, str] = {
    "resnet18": "layer4",
    "resnet34": "layer4",
    "resnet50": "layer4",
    "mobilenetv2": "relu2",
    "wrn-34-10": "relu",
    "wrn-34-20": "relu",
    "wrn-70-16": "relu",
    "cnn-w2": "features.2",
    "cnn-w4": "features.2",
    "cnn-w8": "features.2",
    "cnn-w16": "features.2",
    "cnn-w32": "features.2",
    "cnn-w64": "features.2",
    "cnn-w128": "features.2",
}

# RobustBench teachers are instances of these classes; WRN-34-20 shares WRN-34-10's layer names.
ZOO_ARCHS: dict[type, str] = {models.WideResNet: "wrn-34-10", models.DMWideResNet: "wrn-70-16"}


def target_layer(model: nn.Module, arch: str) -> nn.Module:
    """The Grad-CAM layer of `model`, an instance of registry architecture `arch`."""
    return models.unwrap(model).get_submodule(GRADCAM_LAYERS[arch])


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside; afterwards the caller's mode, whatever a library did to it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# --- maps ------------------------------------------------------------------------------------------

def gradcam(model: nn.Module, arch: str, x: Tensor, y: Tensor, batch_size: int = 100) -> Tensor:
    """Grad-CAM maps (N, H, W) in [0, 1] of the true-class logit, upsampled to the input size.

    Runs pytorch-grad-cam with gradients on even inside `torch.no_grad()` (it needs autograd). The
    input, not the weights, carries `requires_grad`, so a frozen teacher works and no flag changes.
    The model's mode is restored; its weights' `.grad`, which pytorch-grad-cam writes, is cleared.
    Raises if the library returns fewer maps than images.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    maps = []
    with _eval_mode(model), torch.enable_grad(), GradCAM(model, [target_layer(model, arch)]) as cam:
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].detach().clone().requires_grad_(True)
            targets = [ClassifierOutputTarget(int(k)) for k in y[i:i + batch_size]]
            maps.append(torch.from_numpy(cam(xb, targets=targets)))
    model.zero_grad(set_to_none=True)   # pytorch-grad-cam backpropagates into the weights' .grad
    got = sum(len(m) for m in maps)
    if got != len(x):   # pytorch-grad-cam's __exit__ swallows an IndexError and leaves the loop early
        raise RuntimeError(f"pytorch-grad-cam returned {got} maps for {len(x)} images of {arch} (it hides an "
                           f"IndexError it met; check that layer {GRADCAM_LAYERS[arch]!r} gives a 2-D map)")
    return torch.cat(maps)


def smoothgrad(model: nn.Module, x: Tensor, y: Tensor, *, sigma: float = 0.15, samples: int = 25,
               generator: torch.Generator | None = None) -> Tensor:
    """SmoothGrad (Smilkov et al. 2017): |mean over noisy copies of d logit_y / dx|, max over channels.

    The noise is N(0, (sigma * (max(x) - min(x)))^2) per image, sigma a fraction of the input range
    (the paper's 10-20%). Returns (N, H, W).
    """
    spread = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).view(-1, 1, 1, 1)
    noise = torch.randn((samples, *x.shape), generator=generator, device=x.device) * sigma * spread
    total = torch.zeros_like(x)
    with _eval_mode(model), torch.enable_grad():
        for eps in noise:
            xn = (x.detach() + eps).requires_grad_(True)
            logit = model(xn).gather(1, y.view(-1, 1)).sum()   # examples are independent in eval mode
            total += torch.autograd.grad(logit, xn)[0]
    return (total / samples).abs().amax(dim=1)


# --- how alike two models' maps are ----------------------------------------------------------------

def rank_correlations(a: Tensor, b: Tensor) -> np.ndarray:
    """Spearman's rank correlation of each pair of maps a[i], b[i]; NaN where a map is constant."""
    ra = rankdata(np.asarray(a, dtype=np.float64).reshape(len(a), -1), axis=1)
    rb = rankdata(np.asarray(b, dtype=np.float64).reshape(len(b), -1), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    denom = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(1) / denom, np.nan)


def map_similarity(a: Tensor, b: Tensor) -> dict[str, float | int]:
    """How alike maps `a` and `b` (N, H, W) are: the mean Spearman correlation over images, with a
    95% interval across images. Images where either map is constant (no ranking) are left out."""
    return mean_interval(rank_correlations(a, b))


# --- Figure 2's data -------------------------------------------------------------------------------

def adversarial_maps(model: nn.Module, arch: str, x: Tensor, y: Tensor, *, eps: float,
                     source: nn.Module | None = None, x_adv: Tensor | None = None, sigma: float = 0.15,
                     samples: int = 25, seed: int = 0) -> dict[str, Tensor]:
    """Adversarial examples by PGD_TRADES against `source` (default: `model` itself), and `model`'s
    Grad-CAM and SmoothGrad maps on them: {"x_adv", "gradcam", "smoothgrad"}. Seeded, so every model
    sees the same random start and noise. `x_adv` passes examples already crafted (against a shared
    source, once for all models). The results are on the CPU, ready to draw."""
    if x_adv is None:
        with atk.seeded(seed, x.device):
            x_adv = atk.white_box("pgd_trades", source or model, x, y, eps=eps)
    noise = torch.Generator(device=x.device).manual_seed(seed)
    return {"x_adv": x_adv.cpu(), "gradcam": gradcam(model, arch, x_adv, y),
            "smoothgrad": smoothgrad(model, x_adv, y, sigma=sigma, samples=samples, generator=noise).cpu()}


def maps_of(models_by_name: Mapping[str, tuple[nn.Module, str]], x: Tensor, y: Tensor, *, eps: float,
            source: nn.Module | None = None, sigma: float = 0.15, samples: int = 25,
            progress: bool = False) -> dict[str, dict[str, Tensor]]:
    """`adversarial_maps` of several models on the same images: `models_by_name[name] = (model,
    registry architecture)`; the examples are crafted against `source` (None: each model itself)."""
    shared = None   # examples against one source are crafted once, for every model
    if source is not None:
        with atk.seeded(0, x.device):
            shared = atk.white_box("pgd_trades", source, x, y, eps=eps)
    items = tqdm(models_by_name.items(), desc="maps", unit="model", disable=not progress)
    return {name: adversarial_maps(model, arch, x, y, eps=eps, x_adv=shared, sigma=sigma, samples=samples)
            for name, (model, arch) in items}


def similarity_rows(students: dict[str, list[dict[str, Tensor]]], teacher: dict[str, Tensor]) -> list[dict]:
    """For each student (a list of map dicts, one per seed) and map kind, the similarity of its maps
    to the teacher's: one seed's interval is across images; with several seeds it is across the seeds'
    means (each seed's own result is kept in "per_seed")."""
    rows = []
    for name, per_seed in students.items():
        for kind in ("gradcam", "smoothgrad"):
            seeds = [map_similarity(m[kind], teacher[kind]) for m in per_seed]
            overall = seeds[0] if len(seeds) == 1 else mean_interval([s["mean"] for s in seeds])
            rows.append({"student": name, "map": kind, "mean": overall["mean"], "low": overall["low"],
                         "high": overall["high"], "images": seeds[0]["n"], "seeds": len(seeds),
                         "per_seed": seeds})
    return rows


def paired_differences(rows: list[dict], of: str, others: tuple[str, ...]) -> list[dict]:
    """`of`'s similarity to the teacher minus each of `others`', per map kind, paired by seed
    (`stats.paired` over the rows' per-seed means; the rows share their seeds, in order)."""
    by_seed = {(r["student"], r["map"]): dict(enumerate(s["mean"] for s in r["per_seed"])) for r in rows}
    out = []
    for kind in ("gradcam", "smoothgrad"):
        for other in others:
            if (of, kind) in by_seed and (other, kind) in by_seed:
                d = paired(by_seed[of, kind], by_seed[other, kind])
                out.append({"map": kind, "of": of, "minus": other, "mean": d.mean, "low": d.low, "high": d.high,
                            "seeds": d.n, "p": d.p, "text": str(d)})
    return out
