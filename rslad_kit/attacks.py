"""L-infinity attacks: one PGD whose objective is an argument, and the paper's evaluation attacks.

An objective maps logits (B, C) to a per-example loss (B,) that the attack maximises. RSLAD's inner
maximisation is `pgd(student, x, kl_to(p_t), ...)`, SAT's is `pgd(model, x, ce(y), ...)`: one attack.
Attacks have no side effects: the model's train/eval mode is restored, parameter `.grad` is left
alone, and the result is detached, inside the eps-ball and in [0, 1].

Taught in notebooks/02_attacks.ipynb.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rslad_kit import runs
from rslad_kit.errors import UserError
from rslad_kit.losses import kl

Objective = Callable[[Tensor], Tensor]
RandomStart = Literal["uniform", "normal", "none"]
BNMode = Literal["eval", "train"]


# --- objectives ----------------------------------------------------------------------------------

def ce(y: Tensor) -> Objective:
    """Cross-entropy with the hard labels (SAT, MART, ARD, IAD; PGD evaluation)."""
    return lambda logits: F.cross_entropy(logits, y, reduction="none")


def kl_to(target_probs: Tensor) -> Objective:
    """KL(target || model): pushes the prediction away from given probabilities (TRADES, RSLAD)."""
    return lambda logits: kl(logits, target_probs, reduction="none")


def cw_margin(y: Tensor, kappa: float = 50.0) -> Objective:
    """Carlini-Wagner margin -max(z_y - max_{j != y} z_j + kappa, 0), the CW-inf of the PGD literature."""
    def objective(logits: Tensor) -> Tensor:
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
        return -(true - other + kappa).clamp(min=0)
    return objective


# --- PGD -----------------------------------------------------------------------------------------

def check_eps(eps: float) -> None:
    if not 0 < eps <= 1:
        raise UserError(f"eps must lie in (0, 1] on the [0,1] pixel scale (got {eps}); for 8/255 pass 0.0314")


def check_images(x: Tensor) -> None:
    lo, hi = torch.aminmax(x)   # one pass over x: this runs on every attack call
    lo, hi = lo.item(), hi.item()
    if not (math.isfinite(lo) and math.isfinite(hi)):   # NaN propagates into min/max; so does +-inf
        bad = (~torch.isfinite(x)).sum().item()
        raise UserError(f"inputs contain {bad} NaN or infinite values; check the data pipeline (e.g. a division "
                        "by a zero std) and pass finite images in [0,1]")
    if 2 < hi <= 255 and lo >= 0:
        raise UserError(f"inputs look like 0-255 pixel values (max {hi:.3g}); divide by 255 so images lie in [0,1]")
    if lo < 0 or hi > 1:
        raise UserError(
            f"inputs must lie in [0,1] (got min {lo:.3g}, max {hi:.3g}); "
            "feed raw images and put normalisation inside the model"
        )


def _project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Clip to the eps-ball around x, then to [0, 1] (the TRADES order; the result satisfies both)."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def _random_start(x: Tensor, eps: float, kind: RandomStart) -> Tensor:
    if kind == "uniform":   # Madry, ARD, IAD; every evaluation PGD
        return torch.empty_like(x).uniform_(-eps, eps)
    if kind == "normal":    # RSLAD, TRADES, MART training: 0.001 * N(0, 1)
        return 0.001 * torch.randn_like(x)
    if kind == "none":
        return torch.zeros_like(x)
    raise UserError(f"unknown random_start {kind!r}; use 'uniform', 'normal' or 'none'")


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Random draws from `seed` inside; the caller's random state (CPU, and `device` if CUDA) after."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def pgd(
    model: nn.Module,
    x: Tensor,
    objective: Objective,
    *,
    eps: float,
    step_size: float,
    steps: int,
    random_start: RandomStart = "uniform",
    bn_mode: BNMode = "eval",
    check: bool = True,
) -> Tensor:
    """L-infinity PGD: `steps` signed-gradient ascent steps on `objective(model(x_adv)).sum()`.

    `bn_mode="train"` runs the attack's forwards in train mode, as the official ARD and IAD code do
    (batch statistics, and BatchNorm running stats move); the default is eval mode (RSLAD, TRADES, MART).
    As in the official code the random start is not clipped before the first step. `check=False` skips
    the input check, which reads values back to the host: a CUDA graph cannot capture it
    (rslad_kit/graphs.py checks before each replay instead).
    """
    check_eps(eps)
    if check:
        check_images(x)
    was_training = model.training
    model.train(bn_mode == "train")
    try:
        x = x.detach()
        x_adv = x + _random_start(x, eps, random_start)
        with torch.enable_grad():
            for _ in range(steps):
                x_adv.requires_grad_(True)
                loss = objective(model(x_adv)).sum()
                (grad,) = torch.autograd.grad(loss, x_adv)
                x_adv = _project(x_adv.detach() + step_size * grad.sign(), x, eps)
        return _project(x_adv.detach(), x, eps)
    finally:
        model.train(was_training)


def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float) -> Tensor:
    """FGSM (Goodfellow et al.): one signed-gradient step of size eps on CE, from the clean x."""
    return pgd(model, x, ce(y), eps=eps, step_size=eps, steps=1, random_start="none")


# --- the paper's evaluation attacks ------------------------------------------------------------

@dataclass(frozen=True)
class WhiteBox:
    """A named gradient attack. `step` is a fraction of eps, so settings carry over to other eps."""

    objective: Literal["ce", "cw"]
    steps: int
    step: float
    random_start: RandomStart


# eps = 8/255 and 20 steps in the paper. Where it is silent (official_semantics.md §7.2):
# - fgsm: the standard single step of size eps from the clean image, no random start.
# - pgd_sat: Madry's configuration, step 2/255 (= eps/4), uniform random start.
# - pgd_trades: TRADES' `pgd_attack_cifar10.py` and RSLAD's `attack_pgd`: step 0.003, uniform start.
# - cw: the CW margin with kappa = 50 (Madry challenge, IAD), maximised by PGD, step eps/4, uniform start.
WHITE_BOX: dict[str, WhiteBox] = {
    "fgsm": WhiteBox("ce", steps=1, step=1.0, random_start="none"),
    "pgd_sat": WhiteBox("ce", steps=20, step=1 / 4, random_start="uniform"),
    "pgd_trades": WhiteBox("ce", steps=20, step=0.003 / (8 / 255), random_start="uniform"),
    "cw": WhiteBox("cw", steps=20, step=1 / 4, random_start="uniform"),
}


# A sanity attack, not one of the paper's: at eps 0.5 every image can be turned into the same mid-grey
# image, so an honest classifier falls to about 0 under a working gradient attack. No random start:
# only the gradient moves it, so where the gradient is masked accuracy stays at the clean level.
LARGE_EPS = 0.5


def large_eps(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """PGD on CE at eps `LARGE_EPS` (20 steps of eps/10, from the clean image): the large-eps check."""
    return pgd(model, x, ce(y), eps=LARGE_EPS, step_size=LARGE_EPS / 10, steps=20, random_start="none")


def white_box(name: str, model: nn.Module, x: Tensor, y: Tensor, *, eps: float) -> Tensor:
    """Run one of WHITE_BOX by name."""
    if name not in WHITE_BOX:
        raise UserError(f"unknown white-box attack {name!r}; choose from {', '.join(WHITE_BOX)}")
    spec = WHITE_BOX[name]
    objective = ce(y) if spec.objective == "ce" else cw_margin(y)
    return pgd(model, x, objective, eps=eps, step_size=spec.step * eps, steps=spec.steps,
               random_start=spec.random_start)


@dataclass(frozen=True)
class Perturbation:
    """What an attack did to a few images: the images, the perturbation, predictions before and after."""

    x: Tensor
    x_adv: Tensor
    y: Tensor
    pred: Tensor          # predicted class on x
    pred_adv: Tensor      # predicted class on x'
    confidence_adv: Tensor  # softmax probability of pred_adv

    @property
    def delta(self) -> Tensor:
        return self.x_adv - self.x

    @property
    def max_delta(self) -> float:
        """max |x' - x|: never above eps."""
        return self.delta.abs().max().item()


def perturbation(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, attack: str = "pgd_trades") -> Perturbation:
    """Run a WHITE_BOX attack on a few images and keep everything a picture of it needs.

    The model is used as given (put it in eval mode). Taught in notebooks/02_attacks.ipynb (the eps slider).
    """
    x_adv = white_box(attack, model, x, y, eps=eps)
    with torch.no_grad():
        pred = model(x).argmax(1)
        probs_adv = F.softmax(model(x_adv), dim=1)
    confidence_adv, pred_adv = probs_adv.max(1)
    return Perturbation(x, x_adv, y, pred, pred_adv, confidence_adv)


# --- AutoAttack and Square through pyautoattack ---------------------------------------------------

class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def autoattack_warnings() -> Iterator[list[str]]:
    """Collect AutoAttack's own sanity flags (randomness, softmax outputs, Square success, ...)."""
    logger, handler = logging.getLogger("auto-attack"), _Collect()
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _run_pyautoattack(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, seed: int, batch_size: int,
                      state_path: Path | None, square_queries: int = 5000, **version) -> Tensor:
    from pyautoattack import AutoAttack  # heavy import, only when asked for

    check_eps(eps)
    check_images(x)
    was_training = model.training
    model.eval()
    try:
        adversary = AutoAttack(model, norm="Linf", eps=eps, seed=seed, device=x.device, **version)
        adversary.square.n_queries = square_queries
        if state_path is None:
            x_adv, _predicted = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
        else:
            x_adv = _resumable(adversary, model, x, y, batch_size, Path(state_path))
    finally:
        model.train(was_training)
    return x_adv.detach()


def _robust(model: nn.Module, x_adv: Tensor, y: Tensor, batch_size: int) -> Tensor:
    """Indices of the points `x_adv` has not broken."""
    with torch.no_grad():
        return (torch.cat([model(b).argmax(1) for b in x_adv.split(batch_size)]) == y).nonzero().flatten()


def _resumable(adversary, model: nn.Module, x: Tensor, y: Tensor, batch_size: int, state_path: Path) -> Tensor:
    """AutoAttack one sub-attack at a time, saving the adversarial images after each.

    pyautoattack's own state file keeps which points are broken but not their adversarial images, so
    a resumed run would score them on clean images. Each sub-attack here runs on the points still
    robust, in order, with AutoAttack's fixed seed: the same batches and random draws as one call.
    The robust accuracy after each sub-attack is kept too, so that AutoAttack's own check of Square
    (which needs them all, and so never runs inside a one-sub-attack call) runs at the end.
    """
    from pyautoattack import checks

    attacks = list(adversary.attacks_to_run)
    state = {"done": [], "x_adv": x.detach().cpu().clone(), "accuracy": {},
             "x_sha256": runs.data_checksum(SimpleNamespace(x=x, y=y))}
    if state_path.is_file():
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
        if saved.get("x_sha256") == state["x_sha256"] and set(saved["done"]) <= set(attacks) and "accuracy" in saved:
            state = saved   # else: the file belongs to other images (or predates "accuracy"); start over
    x_adv = state["x_adv"].to(x.device)
    robust = _robust(model, x_adv, y, batch_size)
    accuracy = {"clean": len(robust) / len(x)} | state["accuracy"]   # as pyautoattack's robust_accuracy_dict
    for attack in attacks:
        if attack in state["done"]:
            continue
        if len(robust):
            adversary.attacks_to_run = [attack]
            x_adv[robust], _predicted = adversary.run_standard_evaluation(x[robust], y[robust], batch_size=batch_size)
            robust = _robust(model, x_adv, y, batch_size)
        accuracy[attack] = len(robust) / len(x)
        state = {**state, "done": state["done"] + [attack], "x_adv": x_adv.detach().cpu(), "accuracy": dict(accuracy)}
        runs.save(state, state_path)
    adversary.attacks_to_run = attacks
    checks.check_square_sr(accuracy, logger=adversary.logger)
    return x_adv


def autoattack(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, seed: int = 0, batch_size: int = 500,
               state_path: Path | None = None, only: tuple[str, ...] | None = None) -> Tensor:
    """Standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square), per-point worst case, fixed seed.

    `state_path` (a file) makes a long run resumable: attacks already finished are skipped. `only`
    runs a subset (pyautoattack's custom version), for smoke tests; it is not the standard evaluation.
    """
    version = dict(version="custom", attacks=list(only)) if only else dict(version="standard")
    return _run_pyautoattack(model, x, y, eps=eps, seed=seed, batch_size=batch_size,
                             state_path=state_path, **version)


def square(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, seed: int = 0, batch_size: int = 500,
           n_queries: int = 5000) -> Tensor:
    """Black-box Square attack (p_init 0.8), as configured inside AutoAttack (5,000 queries)."""
    return _run_pyautoattack(model, x, y, eps=eps, seed=seed, batch_size=batch_size, state_path=None,
                             square_queries=n_queries, version="custom", attacks=["square"])


def transfer(surrogate: nn.Module, x: Tensor, y: Tensor, *, eps: float, attack: str = "pgd_sat") -> Tensor:
    """Transfer attack: adversarial examples crafted on `surrogate` with a WHITE_BOX attack.

    Evaluate the target model on the returned images. The paper crafts PGD-20 and CW-inf on an
    adversarially trained ResNet-50.
    """
    return white_box(attack, surrogate, x, y, eps=eps)
