"""The official RSLAD training loop's structure, written here to time the kit against it.

What it keeps from zibojia/RSLAD's `*_rslad_*.py` (official_semantics.md §2): fp32; a torch DataLoader
over PIL images with torchvision's RandomCrop + RandomHorizontalFlip + ToTensor; student and teacher
wrapped in nn.DataParallel; a fresh teacher forward on every batch; the attack in eval mode, stepping
with `loss.backward()` into x_adv.grad (and the weights' .grad, cleared by `optimizer.zero_grad()`);
the outer loss as the mean over B x C elements; `cudnn.deterministic = True`, which the official script
sets at its top (`as_shipped`). It trains; it is not used by the kit.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision import transforms


class PILImages(torch.utils.data.Dataset):
    """uint8 images (N, H, W, C) served as PIL images through a torchvision transform, as CIFAR10 does."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, padding: int) -> None:
        self.images, self.labels = images, labels
        self.transform = transforms.Compose([
            transforms.RandomCrop(images.shape[1], padding=padding),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image = self.images[i]
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        return self.transform(pil), int(self.labels[i])


@contextmanager
def as_shipped() -> Iterator[None]:
    """cuDNN as the official script leaves it: deterministic kernels, no autotuner (torch's default,
    which the kit turns on when not deterministic); the caller's settings after."""
    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def loader(images: np.ndarray, labels: np.ndarray, batch_size: int, padding: int, workers: int):
    return torch.utils.data.DataLoader(PILImages(images, labels, padding), batch_size=batch_size, shuffle=True,
                                       num_workers=workers, pin_memory=torch.cuda.is_available())


def _kl_elementwise(log_p_s: Tensor, p_t: Tensor) -> Tensor:
    return -log_p_s * p_t + p_t * torch.log(p_t + 1e-5)


def rslad_inner(student: nn.Module, teacher_logits: Tensor, x: Tensor, optimizer, *, eps: float,
                step_size: float, steps: int) -> Tensor:
    student.eval()
    x_adv = x.detach() + 0.001 * torch.randn_like(x)
    for _ in range(steps):
        x_adv.requires_grad_()
        loss = nn.KLDivLoss(reduction="none")(F.log_softmax(student(x_adv), dim=1),
                                              F.softmax(teacher_logits, dim=1)).sum()
        loss.backward()
        x_adv = x_adv.detach() + step_size * torch.sign(x_adv.grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    student.train()
    optimizer.zero_grad()
    return x_adv.detach()


def train_epoch(student: nn.Module, teacher: nn.Module, optimizer, batches, device, *, eps: float,
                step_size: float, steps: int, max_batches: int | None = None,
                device_ids: list[int] | None = None) -> int:
    """One epoch (or `max_batches`) of official-structure RSLAD; returns the number of images seen.
    `device_ids`: the GPUs DataParallel splits each batch over (as shipped: every visible GPU)."""
    student, teacher = nn.DataParallel(student, device_ids), nn.DataParallel(teacher, device_ids)
    teacher.eval()
    seen = 0
    for i, (x, _) in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        x = x.to(device, non_blocking=True)
        with torch.no_grad():
            t_nat = teacher(x)
        x_adv = rslad_inner(student, t_nat, x, optimizer, eps=eps, step_size=step_size, steps=steps)
        s_adv, s_nat = student(x_adv), student(x)
        p_t = F.softmax(t_nat.detach(), dim=1)
        loss = (5 / 6 * _kl_elementwise(F.log_softmax(s_adv, dim=1), p_t).mean()
                + 1 / 6 * _kl_elementwise(F.log_softmax(s_nat, dim=1), p_t).mean())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(x)
    return seen
