"""Soft labels: what a student is taught on each clean example, and what a set of them teaches.

RSLAD distils from the robust teacher's prediction (RSL); the paper's Table 7 compares it with a
natural teacher's (NSL) and with smoothed one-hot labels (SSL), and its Figure 3 with their entropy
and the probability they put on the true class. Training reads `soft_labels` once per batch;
Figure 3 and notebooks/05_soft_labels.ipynb read the rest.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rslad_kit.config import TrainConfig
from rslad_kit.losses import entropy


def soft_labels(cfg: TrainConfig, teacher: nn.Module | None, x: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """The soft label of each clean example, as logits (softmax gives the target distribution).

    RSL/NSL: the teacher's prediction on the clean batch. SSL: smoothed one-hot labels (Table 7).
    """
    if cfg.soft_labels == "smooth":
        target = (1 - cfg.smoothing) * F.one_hot(y, num_classes).float() + cfg.smoothing / num_classes
        return target.log()
    with torch.no_grad():
        return teacher(x).float()


def soft_label_sets(robust: nn.Module, natural: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig,
                    num_classes: int, batch_size: int = 500) -> dict[str, Tensor]:
    """Table 7's three soft labels of each example, as probabilities (N, C): RSL from the robust
    teacher, NSL from the natural one, SSL from label smoothing with `cfg.smoothing`. Teachers in eval
    mode. Batched: a whole CIFAR-10 test set through a WRN-34-10 at once does not fit in memory."""
    teacher_cfg, smooth_cfg = replace(cfg, soft_labels="teacher"), replace(cfg, soft_labels="smooth")

    def probs(c: TrainConfig, model: nn.Module | None) -> Tensor:
        return torch.cat([F.softmax(soft_labels(c, model, x[i:i + batch_size], y[i:i + batch_size], num_classes), 1)
                          for i in range(0, len(x), batch_size)])

    return {"RSL": probs(teacher_cfg, robust), "NSL": probs(teacher_cfg, natural), "SSL": probs(smooth_cfg, None)}


def soft_label_stats(probs: Tensor, y: Tensor) -> dict[str, float | int]:
    """What a set of soft labels (N, C probabilities) teaches: mean entropy (nats) and mean probability
    on the true class. Figure 3's "NSL is more concentrated around the ground truth" reads off these."""
    return {"entropy": entropy(probs).mean().item(), "true_prob": probs.gather(1, y.view(-1, 1)).mean().item(),
            "n": len(y)}


def soft_label_class_stats(probs: dict[str, Tensor], y: Tensor, classes: tuple[int, ...] | list[int]
                           ) -> dict[str, dict[int | str, dict[str, float | int]]]:
    """`soft_label_stats` of each soft-label type (`soft_label_sets`) on the images of each class in
    `classes`, and on all images ("all"): what Figure 3's panel titles and its table read."""
    return {kind: {k: soft_label_stats(p[y == k], y[y == k]) for k in classes} | {"all": soft_label_stats(p, y)}
            for kind, p in probs.items()}
