"""Architectures, the model registry, checkpoint reading, RobustBench's zoo files and the kit's shipped teachers.

Turning a name or spec into a model is rslad_kit/loading.py's job; this module holds what it reads.

Conventions (the whole kit relies on them):

* Inputs are images in [0, 1], NCHW. Any mean/std normalisation lives *inside* the model, so attacks,
  ε and clipping all work in pixel units. The official RSLAD/ARD/TRADES students and the TRADES teacher
  use no normalisation at all; `build(..., mean=, std=)` adds it when you want it.
* State-dict keys are identical to the official code, so official checkpoints load with strict=True:
  `ResNet`/`MobileNetV2` = zibojia/RSLAD `cifar10_models` (kuangliu/pytorch-cifar style),
  `WideResNet` = yaodongyu/TRADES `models/wideresnet.py` (with its unused `sub_block1`),
  `DMWideResNet` = RobustBench `model_zoo/architectures/dm_wide_resnet.py` (DeepMind, Gowal et al. 2020).
* Classifier heads use global average pooling. On 32x32 inputs this equals the official
  `avg_pool2d(4)` / `avg_pool2d(8)`; on other sizes it still gives one feature vector per image, where the
  official `view(-1, C)` would silently mix images of a batch.
* Grad-CAM target: the last activation before global pooling (rslad_kit/saliency.py, `GRADCAM_LAYERS`).
  Where that activation was a function call, it is a weightless module (`relu`, `relu2`), so state dicts
  are unchanged.

RobustBench teachers (`ZOO`; loaded by `loading.load_model("robustbench:<name>", ...)`). The kit does not
import `robustbench`: PyPI robustbench 1.1.1 cannot be imported as released (it imports `autoattack` but
depends on `pyautoattack`; it also pins timm and gdown and needs setuptools<81). Instead the kit's own
architectures read RobustBench's on-disk layout `{model_dir}/{dataset}/Linf/{name}.pt`, so one folder of
downloaded weights serves both tools.

The CIFAR-100 Gowal et al. WRN-70-16 normalises with CIFAR-100 statistics, as DeepMind's eval script and
RobustBench do. The official RSLAD script built it with CIFAR-10 statistics; pass
`load_model(..., rslad_official_stats=True)` (rslad_kit/loading.py) to reproduce that.

Shipped teachers (`shipped_file`): teachers that cost more than a live demo can pay are trained once by
`rslad-kit teacher NAME` (bit for bit on a CPU) and committed under `rslad_kit/teachers/` as
`NAME.pt`, with `NAME.json` beside it (SHA-256, config, command, provenance). A run names one as
`teacher="shipped:NAME"`; the file is checked against its SHA-256 every time it is read.
"""

import json
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from rslad_kit import runs
from rslad_kit.errors import UserError, did_you_mean

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def _pool_flatten(out: torch.Tensor) -> torch.Tensor:
    # A mean rather than adaptive_avg_pool2d: the same numbers, and its CUDA backward is deterministic
    # (adaptive_avg_pool2d's raises under torch.use_deterministic_algorithms).
    return out.mean(dim=(2, 3))


# ---------------------------------------------------------------- normalisation

class Normalize(nn.Module):
    """`(x - mean) / std` per channel. Buffers are non-persistent: they never appear in a state dict."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Normalized(nn.Module):
    """A network that takes [0,1] images: `model(normalize(x))`. Its state-dict keys are `model.<key>`."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside `Normalized` / DataParallel wrappers (whose keys match official files)."""
    while isinstance(model, (Normalized, nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.model if isinstance(model, Normalized) else model.module
    return model


# ---------------------------------------------------------------- CIFAR ResNet (kuangliu / RSLAD)

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()  # empty = identity, and no state-dict keys, as in the official code
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem with stride 1 and no max-pool, four stages, linear head."""

    def __init__(self, block: type[BasicBlock | Bottleneck], num_blocks: Sequence[int],
                 num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.in_planes = 64
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, n: int, stride: int):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(_pool_flatten(out))


# ---------------------------------------------------------------- CIFAR MobileNetV2 (ARD / RSLAD)

class _InvertedResidual(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int):
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        # Unlike the MobileNetV2 paper, the residual is added whenever stride == 1, through a
        # projection when the width changes: this is what the official checkpoints were trained with.
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, bias=False),
                                          nn.BatchNorm2d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    """CIFAR MobileNetV2: stride-1 stem, second stage stride 1, ReLU (not ReLU6), no dropout."""

    # (expansion, out_planes, num_blocks, stride)
    cfg = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
           (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        layers, in_planes = [], 32
        for expansion, out_planes, n, stride in self.cfg:
            for s in [stride] + [1] * (n - 1):
                layers.append(_InvertedResidual(in_planes, out_planes, expansion, s))
                in_planes = out_planes
        self.layers = nn.Sequential(*layers)
        self.conv2 = nn.Conv2d(320, 1280, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.relu2 = nn.ReLU()   # a module (no weights) so Grad-CAM can hook what the pooling reads
        self.linear = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = self.relu2(self.bn2(self.conv2(out)))
        return self.linear(_pool_flatten(out))


# ---------------------------------------------------------------- TRADES WideResNet

class _WRNBlock(nn.Module):
    """Pre-activation block; when the width changes, the shortcut sees the activated input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (None if self.equalInOut
                             else nn.Conv2d(in_planes, out_planes, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + (x if self.equalInOut else self.convShortcut(act))


class _NetworkBlock(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(*[_WRNBlock(in_planes if i == 0 else out_planes, out_planes,
                                               stride if i == 0 else 1) for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """TRADES WideResNet (ReLU, no normalisation). WRN-34-10 is the RSLAD CIFAR-10 teacher."""

    def __init__(self, depth: int = 34, widen_factor: int = 10, num_classes: int = 10,
                 in_channels: int = 3, sub_block1: bool = True):
        super().__init__()
        if (depth - 4) % 6:
            raise UserError(f"WideResNet depth {depth} is invalid; use 6n+4, e.g. 28 or 34")
        n, widths = (depth - 4) // 6, (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.block1 = _NetworkBlock(n, widths[0], widths[1], 1)
        if sub_block1:
            # Never used in forward. TRADES defined it, so its checkpoint (and RobustBench's
            # Zhang2019Theoretically) carries these weights and only loads strictly if it exists.
            self.sub_block1 = _NetworkBlock(n, widths[0], widths[1], 1)
        self.block2 = _NetworkBlock(n, widths[1], widths[2], 2)
        self.block3 = _NetworkBlock(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()   # TRADES' name; a module so Grad-CAM can hook what the pooling reads
        self.fc = nn.Linear(widths[3], num_classes)
        # TRADES' initialisation, kept so a teacher trained from scratch matches the official recipe.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(_pool_flatten(self.relu(self.bn1(out))))


# ---------------------------------------------------------------- DeepMind WideResNet (Gowal et al. 2020)

class _DMBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, 1, padding=1, bias=False)
        self.has_shortcut = in_planes != out_planes
        self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride, bias=False) if self.has_shortcut else None
        self._stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.silu(self.batchnorm_0(x))
        # TensorFlow "SAME" padding: with stride 2 the extra row/column goes bottom/right only.
        v = F.pad(act, (1, 1, 1, 1) if self._stride == 1 else (0, 1, 0, 1))
        out = self.conv_1(F.silu(self.batchnorm_1(self.conv_0(v))))
        return out + (self.shortcut(act) if self.has_shortcut else x)


class _DMBlockGroup(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(*[_DMBlock(in_planes if i == 0 else out_planes, out_planes,
                                              stride if i == 0 else 1) for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DMWideResNet(nn.Module):
    """DeepMind/RobustBench WideResNet: Swish (= SiLU), "SAME" padding, `(x - mean) / std` inside forward.

    mean/std are non-persistent buffers because RobustBench's zoo files carry no such keys. With no
    mean/std given the model normalises nothing (`loading.load_model("robustbench:<name>")` builds the
    RobustBench configuration).
    """

    def __init__(self, depth: int = 70, width: int = 16, num_classes: int = 10, in_channels: int = 3,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        if (depth - 4) % 6:
            raise UserError(f"DMWideResNet depth {depth} is invalid; use 6n+4, e.g. 28, 34 or 70")
        self.normalize = Normalize((0.0,) * in_channels if mean is None else mean,
                                   (1.0,) * in_channels if std is None else std)
        n, widths = (depth - 4) // 6, (16, 16 * width, 32 * width, 64 * width)
        self.init_conv = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.layer = nn.Sequential(_DMBlockGroup(n, widths[0], widths[1], 1),
                                   _DMBlockGroup(n, widths[1], widths[2], 2),
                                   _DMBlockGroup(n, widths[2], widths[3], 2))
        self.batchnorm = nn.BatchNorm2d(widths[3])
        self.relu = nn.SiLU()   # RobustBench's name for its activation; a module so Grad-CAM can hook it
        self.logits = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(self.init_conv(self.normalize(x)))
        return self.logits(_pool_flatten(self.relu(self.batchnorm(out))))


# ---------------------------------------------------------------- classroom CNN

def _conv_bn_relu(in_planes: int, out_planes: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(out_planes), nn.ReLU())


class SmallCNN(nn.Module):
    """Three conv3x3-BN-ReLU blocks (widths w, 2w, 4w), 2x2 max-pool after blocks 2 and 3, GAP, linear.

    Sized for 8x8 or 16x16 digits; any input of at least 4x4 works. `features[-1]` is the last block,
    taken before its pooling, so Grad-CAM on it sees a 4x4 map for 8x8 inputs.
    """

    def __init__(self, width: int = 16, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(_conv_bn_relu(in_channels, width), _conv_bn_relu(width, 2 * width),
                                      _conv_bn_relu(2 * width, 4 * width))
        self.linear = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features[0](x)
        out = F.max_pool2d(self.features[1](out), 2)
        out = F.max_pool2d(self.features[2](out), 2)
        return self.linear(_pool_flatten(out))


# ---------------------------------------------------------------- registry

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": partial(ResNet, BasicBlock, (2, 2, 2, 2)),
    "resnet34": partial(ResNet, BasicBlock, (3, 4, 6, 3)),
    "resnet50": partial(ResNet, Bottleneck, (3, 4, 6, 3)),
    "mobilenetv2": MobileNetV2,
    "wrn-34-10": partial(WideResNet, depth=34, widen_factor=10),
    "wrn-34-20": partial(WideResNet, depth=34, widen_factor=20),
    "wrn-70-16": partial(DMWideResNet, depth=70, width=16),
    "cnn-w2": partial(SmallCNN, 2),
    "cnn-w4": partial(SmallCNN, 4),
    "cnn-w8": partial(SmallCNN, 8),
    "cnn-w16": partial(SmallCNN, 16),
    "cnn-w32": partial(SmallCNN, 32),
    "cnn-w64": partial(SmallCNN, 64),
    "cnn-w128": partial(SmallCNN, 128),
}


def check_name(name: str) -> None:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; {did_you_mean(name, MODELS)}choose one of: {', '.join(MODELS)}")


def build(name: str, num_classes: int, in_channels: int = 3,
          mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> nn.Module:
    """A fresh model from `MODELS`; with mean/std, wrapped in `Normalized` so it still takes [0,1] input."""
    check_name(name)
    model = MODELS[name](num_classes=num_classes, in_channels=in_channels)
    if mean is None and std is None:
        return model
    if mean is None or std is None or len(mean) != in_channels or len(std) != in_channels:
        raise UserError(f"model {name!r} needs both mean and std with {in_channels} values each "
                        f"(got mean={mean}, std={std})")
    return Normalized(model, mean, std)


# ---------------------------------------------------------------- checkpoints

# torch.save's pre-1.6 format starts with this pickled magic number; newer files are zip archives.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def _not_a_checkpoint(path: Path) -> str | None:
    """Why the file cannot be a torch.save file, judged from its first bytes; None if it may be one."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "is empty (an interrupted download or save)"
    if re.match(rb"\s*<(!doctype html|html|head|body)", head, re.IGNORECASE):
        return "is an HTML page, not a checkpoint (typically a failed Google Drive download)"
    if head[8:10] == b'{"':   # safetensors: an 8-byte header length, then a JSON header
        return ("is a safetensors file, not a torch.save checkpoint; read it with safetensors.torch.load_file "
                "and torch.save() the state dict")
    if head.startswith(b"PK\x03\x04"):
        try:
            names = zipfile.ZipFile(path).namelist()
        except zipfile.BadZipFile:
            return "is truncated or damaged (its zip directory is unreadable; typically an interrupted download or save)"
        if not any(name.endswith("data.pkl") for name in names):
            return f"is a zip archive but not a torch.save checkpoint (it holds {_short(names, 3)})"
    if not (head.startswith(b"PK\x03\x04") or head.startswith(_LEGACY_MAGIC)):
        return "is not a PyTorch checkpoint (neither torch.save's zip nor its legacy format)"
    return None


def _strip_prefixes(state: dict) -> dict:
    # DataParallel adds `module.`, wrappers such as `Normalized` add `model.`; they can be stacked.
    while True:
        prefix = next((p for p in ("module.", "model.")
                       if state and all(k.startswith(p) for k in state)), None)
        if prefix is None:
            return state
        state = {k[len(prefix):]: v for k, v in state.items()}


def _short(items: list[str], limit: int = 4) -> str:
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load weights into `model` (strictly) and return it: `load_state(model, read_checkpoint(path), path)`."""
    return load_state(model, read_checkpoint(path), path)


def read_checkpoint(path: str | os.PathLike):
    """The object saved in `path`, read with `weights_only=True`: a file that needs code to unpickle is
    refused, never run. Missing, HTML, damaged or code-carrying files raise one-line UserErrors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; check the path")
    problem = _not_a_checkpoint(path)
    if problem:
        raise UserError(f"{path} {problem}; delete it and download or save it again")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # the weights_only unpickler met something it will not run
        found = re.search(r"GLOBAL ([\w.]+)|Unsupported operand \d+", str(err))
        detail = (found.group(1) or found.group(0)) if found else "see torch.load's weights_only"
        raise UserError(f"{path} carries code or pickled objects beyond tensors ({detail}) and is refused; "
                        f"if you trust the file, open it once with weights_only disabled and "
                        f"torch.save() just its state dict to a new file") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path} is damaged ({reason[:200]}); delete it and download or save it "
                        f"again") from err
    return obj


def load_state(model: nn.Module, obj, path: str | os.PathLike) -> nn.Module:
    """Load a checkpoint object already read from `path` into `model` (strictly) and return it.

    Accepts a plain state dict or one under `state_dict` / `net` / `model`, with any `module.` / `model.`
    prefixes; a mismatch of keys or shapes raises a UserError that lists them.
    """
    if isinstance(obj, dict):
        for key in ("state_dict", "net", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not (isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise UserError(f"{path} holds no state dict (name -> tensor, possibly under 'state_dict', "
                        f"'net' or 'model'); save one with torch.save(model.state_dict(), path)")
    state = _strip_prefixes(obj)

    net = unwrap(model)
    expected = net.state_dict()
    # Files from PyTorch < 0.4.1 lack BatchNorm's counter; load_state_dict fills it in itself.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} in file vs {tuple(v.shape)} in model"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{label} {len(keys)} ({_short(keys)})" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if keys]
        raise UserError(f"{path} does not fit {type(net).__name__}: {'; '.join(parts)}; "
                        f"check the architecture name and num_classes")
    net.load_state_dict(state, strict=True)
    return model


# ---------------------------------------------------------------- RobustBench teachers

class ZooEntry(NamedTuple):
    """A RobustBench Linf entry: how to build it, where RobustBench downloads it, its leaderboard numbers."""
    arch: Callable[..., nn.Module]
    kwargs: dict
    gdrive_id: str
    clean: float       # RobustBench clean accuracy, %
    autoattack: float  # RobustBench AutoAttack accuracy, % at eps below
    eps: float


# Constructors, statistics and ids as in RobustBench `model_zoo/cifar10.py` and `cifar100.py`.
ZOO: dict[tuple[str, str], ZooEntry] = {
    # TRADES WRN-34-10, no normalisation. RobustBench evaluates it at eps 0.031, not 8/255.
    ("cifar10", "Zhang2019Theoretically"): ZooEntry(
        WideResNet, dict(depth=34, widen_factor=10, num_classes=10),
        "1hPz9QQwyM7QSuWu-ANG_uXR-29xtL8t_", 84.92, 53.08, 0.031),
    ("cifar10", "Gowal2020Uncovering_70_16"): ZooEntry(
        DMWideResNet, dict(depth=70, width=16, num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD),
        "1DVwKclibqzniE2Ss5_g6BY77ChG8QKzl", 85.29, 57.20, 8 / 255),
    ("cifar10", "Gowal2020Uncovering_34_20"): ZooEntry(
        DMWideResNet, dict(depth=34, width=20, num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD),
        "1YWvZO1u9_yNLFNC3JYd_TVkvrRSMER1O", 85.64, 56.86, 8 / 255),
    # CIFAR-100 statistics, as DeepMind and RobustBench; the official RSLAD script used CIFAR-10's
    # (loading.load_model's rslad_official_stats=True reproduces that).
    ("cifar100", "Gowal2020Uncovering"): ZooEntry(
        DMWideResNet, dict(depth=70, width=16, num_classes=100, mean=CIFAR100_MEAN, std=CIFAR100_STD),
        "16I86x2Vv_HCRKROC86G4dQKgO3Po5mT3", 60.86, 30.03, 8 / 255),
}


def known_zoo() -> str:
    """The RobustBench names the kit can build, by dataset (for error messages)."""
    datasets = sorted({d for d, _ in ZOO})
    return "; ".join(f"{d}: {', '.join(n for dd, n in ZOO if dd == d)}" for d in datasets)


def _download(file_id: str, dest: Path) -> None:
    """Fetch a Google Drive file with gdown (optional: `pip install 'rslad-kit[zoo]'`)."""
    import gdown

    gdown.download(id=file_id, output=str(dest), quiet=False)


def fetch(entry: ZooEntry, path: Path) -> None:
    """Download into a temporary file beside `path` and move it into place only if it looks right."""
    how = f"place the RobustBench file there by hand (https://drive.google.com/uc?id={entry.gdrive_id})"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    os.close(fd)
    tmp = Path(tmp)
    try:
        try:
            _download(entry.gdrive_id, tmp)
        except ImportError as err:
            raise UserError(f"teacher file {path} is missing and gdown is not installed; "
                            f"pip install 'rslad-kit[zoo]' or {how}") from err
        except Exception as err:  # gdown raises its own error types as well as OSError
            raise UserError(f"could not download teacher file {path} ({type(err).__name__}: "
                            f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no details'}); "
                            f"{how}") from err
        problem = _not_a_checkpoint(tmp) if tmp.stat().st_size else "is empty"
        if problem:
            raise UserError(f"the download for {path} {problem}; retry later or {how}")
        os.replace(tmp, path)  # atomic: an interrupted download never leaves a half file at `path`
    finally:
        for leftover in path.parent.glob(tmp.name + "*"):  # ours, and gdown's own partial file if any
            leftover.unlink()


def zoo_path(dataset: str, name: str, model_dir: str | Path = "models") -> Path:
    """Where RobustBench keeps (and the kit reads) a zoo model: `{model_dir}/{dataset}/Linf/{name}.pt`."""
    return Path(model_dir) / dataset / "Linf" / f"{name}.pt"


# ---------------------------------------------------------------- teachers shipped with the kit

SHIPPED = Path(__file__).parent / "teachers"   # NAME.pt and NAME.json (SHA-256, config, provenance)


def shipped_record(name: str) -> dict:
    """What `rslad_kit/teachers/NAME.json` records about shipped teacher `name`."""
    path = SHIPPED / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.json"))) or "none"
        raise UserError(f"no shipped teacher {name!r}; known: {known}")
    return json.loads(path.read_text())


def shipped_file(name: str) -> Path:
    """The file of shipped teacher `name`, after checking its SHA-256 against the record beside it."""
    record, path = shipped_record(name), SHIPPED / f"{name}.pt"
    how = f"restore it (git checkout -- {path}) or retrain it ({record['command']} --ship)"
    if not path.is_file():
        raise UserError(f"shipped teacher file {path} is missing; {how}")
    digest = runs.sha256(path)
    if digest != record["sha256"]:
        raise UserError(f"shipped teacher file {path} has SHA-256 {digest[:12]}... but {name}.json records "
                        f"{record['sha256'][:12]}...; {how}")
    return path
