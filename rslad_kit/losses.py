"""The outer-minimisation losses of the paper's Table 1, one pure function of logits per row.

Every loss returns a dict of its *weighted* terms; the training loss is their sum, and the terms are
logged separately, so loss-component curves come for free. A loss names the tensors it reads by its
parameter names: `s_nat`, `s_adv` (student logits on x and x'), `t_nat`, `t_adv` (teacher logits on x
and x'), `y` (hard labels) and `epoch` (1-indexed). Its keyword defaults are the paper's defaults.

Notation: the papers write KL(S, T) in PyTorch's argument order; what every official code computes is
KL(target || student), the teacher (or clean) distribution being the target. So does `kl` below.

KL scale. The official codes reduce KL three ways (official_semantics.md §11): RSLAD takes the mean
over B*C elements (x10 on CIFAR-100), i.e. batchmean/10 on both datasets; ARD takes the element mean
(batchmean/C) times tau^2; TRADES and IAD take batchmean. `kl` is always batchmean; each loss takes a
`kl_scale` that paper-faithful presets set (0.1 for RSLAD, 1/C for ARD), never a hidden constant.

Taught in notebooks/03_table1_losses.ipynb.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:   # for annotations only: configs sit a floor above the losses
    from rslad_kit.config import TrainConfig

Terms = dict[str, Tensor]

# Names a loss may read; everything else in its signature is a hyperparameter.
INPUTS = ("s_nat", "s_adv", "t_nat", "t_adv", "y", "epoch")


def kl(
    student_logits: Tensor,
    target_probs: Tensor,
    tau: float = 1.0,
    reduction: Literal["batchmean", "none"] = "batchmean",
) -> Tensor:
    """KL(target || softmax(student_logits / tau)), summed over classes.

    Averaged over the batch (`"batchmean"`), or one value per example (`"none"`). This is the only KL
    in the package; attacks maximise it per example, losses average it.
    """
    log_p_s = F.log_softmax(student_logits / tau, dim=1)
    per_example = (torch.xlogy(target_probs, target_probs) - target_probs * log_p_s).sum(dim=1)
    return per_example.mean() if reduction == "batchmean" else per_example


def entropy(probs: Tensor) -> Tensor:
    """The entropy in nats of each row of `probs` (N, C): -sum_k p_k log p_k, with 0 log 0 = 0.
    0 for a one-hot label, ln C for the uniform one (notebook 05 asks students to write it)."""
    return -torch.xlogy(probs, probs).sum(dim=1)


def natural_loss(s_nat: Tensor, y: Tensor) -> Terms:
    """Natural training: CE(f(x), y)."""
    return {"ce_nat": F.cross_entropy(s_nat, y)}


def sat_loss(s_adv: Tensor, y: Tensor) -> Terms:
    """SAT (Madry et al.): CE(f(x'), y)."""
    return {"ce_adv": F.cross_entropy(s_adv, y)}


def trades_loss(s_nat: Tensor, s_adv: Tensor, y: Tensor, beta: float = 6.0, kl_scale: float = 1.0) -> Terms:
    """TRADES: CE(f(x), y) + beta * KL(f(x'), f(x)).

    As in the official code, the target f(x) is not detached: gradient flows through both sides.
    """
    return {
        "ce_nat": F.cross_entropy(s_nat, y),
        "kl_adv": beta * kl_scale * kl(s_adv, F.softmax(s_nat, dim=1)),
    }


def mart_loss(s_nat: Tensor, s_adv: Tensor, y: Tensor, beta: float = 6.0, kl_scale: float = 1.0) -> Terms:
    """MART: BCE(f(x'), y) + beta * (1 - f_y(x)) * KL(f(x'), f(x)).

    BCE(p', y) = -log p'_y - log(1 - max_{k != y} p'_k), with the official 1.0001 and 1e-12 guards.
    beta is 6 in `mart.py` and the WRN recipe, 5 in the official ResNet-18 recipe.
    """
    p_adv = F.softmax(s_adv, dim=1)
    top2 = p_adv.argsort(dim=1)[:, -2:]
    hardest_wrong = torch.where(top2[:, 1] == y, top2[:, 0], top2[:, 1])
    bce = F.cross_entropy(s_adv, y) + F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), hardest_wrong)
    p_nat = F.softmax(s_nat, dim=1)
    kl_per_example = (torch.xlogy(p_nat, p_nat) - p_nat * torch.log(p_adv + 1e-12)).sum(dim=1)
    weight = 1.0000001 - p_nat.gather(1, y[:, None]).squeeze(1)
    return {"bce_adv": bce, "kl_adv": beta * kl_scale * (kl_per_example * weight).mean()}


def ard_loss(
    s_nat: Tensor, s_adv: Tensor, t_nat: Tensor, y: Tensor,
    alpha: float = 1.0, tau: float = 30.0, kl_scale: float = 1.0,
) -> Terms:
    """ARD: (1 - alpha) * CE(S(x), y) + alpha * tau^2 * KL(S^tau(x'), T^tau(x)).

    Defaults are the official code's (alpha 1, tau 30). Its `nn.KLDivLoss()` is the element mean,
    i.e. kl_scale = 1/C on top of batchmean.
    """
    return {
        "ce_nat": (1 - alpha) * F.cross_entropy(s_nat, y),
        "kl_adv": alpha * tau**2 * kl_scale * kl(s_adv, F.softmax(t_nat / tau, dim=1), tau),
    }


def iad_loss(
    s_nat: Tensor, s_adv: Tensor, t_nat: Tensor, t_adv: Tensor, y: Tensor, epoch: int,
    beta: float = 0.1, tau: float = 1.0, warmup: int = 60, kl_scale: float = 1.0,
) -> Terms:
    """IAD, as RSLAD's Table 1 writes it:

        T_y(x')^beta * KL(S^tau(x'), T^tau(x)) + (1 - T_y(x')^beta) * KL(S^tau(x'), S^tau(x)).

    The reliability weight T_y(x')^beta carries no gradient, and is 1 during the first `warmup` epochs
    (pure distillation, as in the official `--begin 60`). The official IAD-I leaves the teacher term
    unweighted and IAD-II takes the teacher on x'; Table 1 mixes the two, and this follows Table 1.
    As in IAD-I, the introspection target S(x) is not detached.
    """
    if epoch > warmup:
        weight = F.softmax(t_adv, dim=1).gather(1, y[:, None]).squeeze(1).detach() ** beta
    else:
        weight = torch.ones_like(y, dtype=s_adv.dtype)
    scale = tau**2 * kl_scale
    kl_teacher = kl(s_adv, F.softmax(t_nat / tau, dim=1), tau, reduction="none")
    kl_self = kl(s_adv, F.softmax(s_nat / tau, dim=1), tau, reduction="none")
    return {
        "kl_teacher": scale * (weight * kl_teacher).mean(),
        "kl_self": scale * ((1 - weight) * kl_self).mean(),
    }


def rslad_loss(s_nat: Tensor, s_adv: Tensor, t_nat: Tensor, alpha: float = 5 / 6, kl_scale: float = 1.0) -> Terms:
    """RSLAD: (1 - alpha) * KL(S(x), T(x)) + alpha * KL(S(x'), T(x)).

    No hard label anywhere: the robust soft label T(x) supervises both terms (and the attack).
    The official code's scale is kl_scale = 0.1 (mean over B*C elements on CIFAR-10, x10 on CIFAR-100).
    """
    p_t = F.softmax(t_nat, dim=1)
    return {
        "kl_nat": (1 - alpha) * kl_scale * kl(s_nat, p_t),
        "kl_adv": alpha * kl_scale * kl(s_adv, p_t),
    }


# Inner-maximisation objectives a method's attack may use (built in train.py):
#   "none": no attack (x' = x);   "ce": CE(S(x'), y);
#   "kl_self": KL(S(x'), S(x)) (TRADES);   "kl_teacher": KL(S(x'), T(x)) (RSLAD).
Objective = Literal["none", "ce", "kl_self", "kl_teacher"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)


@dataclass(frozen=True)
class Method:
    """One row of Table 1: the outer loss and the objective its inner maximisation uses."""

    loss: Callable[..., Terms]
    attack: Objective

    @property
    def inputs(self) -> tuple[str, ...]:
        """The tensors the loss reads, by parameter name."""
        return tuple(p for p in inspect.signature(self.loss).parameters if p in INPUTS)

    @property
    def defaults(self) -> dict[str, float]:
        """The loss' hyperparameters with their paper defaults (its keyword defaults)."""
        params = inspect.signature(self.loss).parameters.values()
        return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}

    @property
    def needs_teacher(self) -> bool:
        """Whether the method distils from a teacher, at its own objective and with teacher soft labels
        (a run's config can change both: `loads_teacher(cfg)` answers for a run)."""
        return self.attack == "kl_teacher" or any(name.startswith("t_") for name in self.inputs)


# Table 1, in its order (plus natural training). Tests and notebooks iterate over this dict; a new
# method is one loss function plus one entry here.
METHODS: dict[str, Method] = {
    "natural": Method(natural_loss, attack="none"),
    "sat": Method(sat_loss, attack="ce"),
    "trades": Method(trades_loss, attack="kl_self"),
    "mart": Method(mart_loss, attack="ce"),
    "ard": Method(ard_loss, attack="ce"),
    "iad": Method(iad_loss, attack="ce"),
    "rslad": Method(rslad_loss, attack="kl_teacher"),
}


# --- what a run of a config reads: its method, as its config overrides it ----------------------------

def attack_objective(cfg: TrainConfig) -> Objective:
    """The objective a run's attack maximises: the config's `objective` where it sets one (Table 6 pairs
    one method's loss with another's attack), else its method's."""
    return cfg.objective or METHODS[cfg.method].attack


def loads_teacher(cfg: TrainConfig) -> bool:
    """Whether a run of `cfg` reads a teacher: its loss reads the teacher's logits on adversarial
    examples, or it reads soft labels (in its loss or its attack) and they are the teacher's (SSL,
    `soft_labels="smooth"`, builds them from y instead)."""
    method = METHODS[cfg.method]
    reads_soft_labels = "t_nat" in method.inputs or attack_objective(cfg) == "kl_teacher"
    return "t_adv" in method.inputs or (reads_soft_labels and cfg.soft_labels == "teacher")
