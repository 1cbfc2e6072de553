"""Datasets as tensors, and a loader that batches and augments them on one device.

Every split is held as `x` (N, C, H, W) float32 in [0, 1] and `y` (N,) int64; models normalise
inside, so nothing here does. Four datasets, picked by name with `load()`:

* `digits`: scikit-learn's 8x8 handwritten digits, shipped with scikit-learn, so the classroom
  default runs offline in seconds;
* `fashion`: Fashion-MNIST (28x28 grayscale garments), read in torchvision's on-disk format from
  `root`, else from Debian's `dataset-fashion-mnist` package, else downloaded;
* `cifar10` / `cifar100`: read from torchvision's on-disk format under `root`, downloaded if absent.

The validation split always comes out of the training set (checkpoint selection must never see the
test set), with a fixed seed that does not depend on the training seed.
"""

from __future__ import annotations

import gzip
import math
import pickle
import shutil
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rslad_kit.errors import UserError, did_you_mean

if TYPE_CHECKING:  # torchvision takes seconds to import and only CIFAR needs it, so it is imported there
    from torchvision.datasets import CIFAR10

__all__ = ["DATASETS", "Dataset", "Split", "TensorLoader", "augment", "load", "read_idx"]

VAL_SEED = 0  # fixed, so the validation split is the same whatever seed trains the model


# ---------------------------------------------------------------- containers


@dataclass(frozen=True)
class Split:
    """One split held as tensors: `x` (N, C, H, W) float32 in [0, 1], `y` (N,) int64."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise UserError(
                f"Split needs x of shape (N, C, H, W) and y of shape (N,) with the same N; "
                f"got {tuple(self.x.shape)} and {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:  # the default would print every pixel
        return f"Split(n={len(self)}, x={tuple(self.x.shape[1:])} {self.x.dtype}, device={self.x.device})"

    def to(self, device: torch.device | str) -> Split:
        """The same split on `device`."""
        return Split(self.x.to(device), self.y.to(device))

    def take(self, n: int | None) -> Split:
        """The first `n` examples (all of them if `n` is None or larger than the split)."""
        if n is None:
            return self
        if n < 0:
            raise UserError(f"cannot take {n} examples; pass a count >= 0 or None for all")
        return Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class Dataset:
    """A named dataset: train / val / test splits plus what the augmentation may do to them."""

    name: str
    num_classes: int
    classes: tuple[str, ...]
    train: Split
    val: Split  # held out of the training set, for checkpoint selection; never from test
    test: Split
    crop_padding: int  # zero padding (pixels) for the random-crop augmentation
    flip: bool  # whether a horizontal flip keeps the label

    @property
    def in_channels(self) -> int:
        return self.train.x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.x.shape[-1]


# ---------------------------------------------------------------- digits

DIGITS_TEST = 360  # 20% of 1797, stratified, so every class has ~36 test images


def _digits(root: Path, *, val_size: int | None, image_size: int | None, download: bool) -> Dataset:
    """scikit-learn's 8x8 digits (1797 images); `root` and `download` are unused (no files)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    val_size = 180 if val_size is None else val_size
    image_size = 8 if image_size is None else image_size
    if image_size < 1:
        raise UserError(f"image_size={image_size} for digits; pass a positive size: 8 (native), 16 or 32")

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().div(16).unsqueeze(1)  # pixel values are 0..16
    if image_size != 8:
        x = F.interpolate(x, size=image_size, mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.from_numpy(digits.target).long()

    # Stratified, so every split sees every digit in the same proportions.
    labels = digits.target
    rest, test = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST, stratify=labels, random_state=VAL_SEED
    )
    _check_val_size(val_size, len(rest), min_val=10)
    if val_size == 0:
        train, val = rest, rest[:0]
    else:
        train, val = train_test_split(rest, test_size=val_size, stratify=labels[rest], random_state=VAL_SEED)

    def split(idx: np.ndarray) -> Split:
        idx = torch.from_numpy(idx)
        return Split(x[idx], y[idx])

    return Dataset(
        name="digits",
        num_classes=10,
        classes=tuple(str(c) for c in range(10)),
        train=split(train),
        val=split(val),
        test=split(test),
        crop_padding=max(1, image_size // 8),  # 1/8 of the image (1 px at 8x8); more crops strokes away
        flip=False,  # a mirrored 2 or 7 is no longer a 2 or 7
    )


# ---------------------------------------------------------------- Fashion-MNIST

FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")  # `apt-get install dataset-fashion-mnist`
FASHION_FOLDER = "FashionMNIST/raw"  # torchvision's layout under `root`
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")
_FASHION_FIX = ("install Debian's package (apt-get install dataset-fashion-mnist), or pass --data-root "
                "to a writable folder with network access so torchvision downloads it there")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte idx file (LeCun's MNIST format, plain or .gz) with `ndim` dimensions.

    A missing, truncated or foreign file raises a one-line UserError naming it.
    """
    how = "delete it and install or download Fashion-MNIST again"
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:   # BadGzipFile is an OSError; a cut-off .gz is an EOFError
        raise UserError(f"{path}: cannot read ({type(e).__name__}: {e}); {how}") from e
    # The magic number: two zero bytes, 0x08 (unsigned byte), then the number of dimensions.
    if raw[:3] != b"\0\0\x08" or len(raw) < 4 or raw[3] != ndim:
        raise UserError(f"{path} is not an idx file of {ndim}-d unsigned bytes (magic {raw[:4].hex() or 'none'}, "
                        f"expected 0000080{ndim}); {how}")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    body = 4 + 4 * ndim
    if len(raw) != body + math.prod(shape):
        raise UserError(f"{path} is truncated or padded: its header says {shape} ({math.prod(shape)} bytes) but it "
                        f"holds {len(raw) - body}; {how}")
    return np.frombuffer(raw, np.uint8, offset=body).reshape(shape)


def _fashion_file(folder: Path, name: str) -> Path | None:
    """`name` in `folder`, plain (as torchvision extracts it) or gzipped (as Debian ships it)."""
    return next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)


def _fashion_folder(root: Path, download: bool) -> Path:
    """Where the four idx files are: `root/FashionMNIST/raw`, then Debian's folder, then a download."""
    if root.exists() and not root.is_dir():
        raise UserError(f"data root {root} is a file, not a folder; pass --data-root a folder")
    names = [n for pair in FASHION_FILES.values() for n in pair]
    ours = root / FASHION_FOLDER
    if ours.is_dir():   # the user's own copy: a broken one is an error, never silently replaced
        missing = [n for n in names if _fashion_file(ours, n) is None]
        if missing:
            raise UserError(f"{ours} lacks {', '.join(missing)}; delete the folder and {_FASHION_FIX}")
        return ours
    if all(_fashion_file(FASHION_DEBIAN, n) for n in names):
        return FASHION_DEBIAN
    where = f"no copy in {ours} or {FASHION_DEBIAN}"
    if not download:
        raise UserError(f"Fashion-MNIST not found ({where}); {_FASHION_FIX}")
    from torchvision.datasets import FashionMNIST

    # Download into a temporary folder under `root` and move it into place only when complete, so a
    # failed download leaves nothing behind (not even `root`, if it made it).
    made_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".fashion-download-"))
    try:
        FashionMNIST(tmp, train=False, download=True)   # fetches all four files; parses only the test set
        ours.parent.mkdir(parents=True, exist_ok=True)
        (tmp / FASHION_FOLDER).rename(ours)
    except (OSError, RuntimeError) as e:   # URLError is an OSError
        if made_root:
            shutil.rmtree(root, ignore_errors=True)
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise UserError(f"Fashion-MNIST not found ({where}) and the download failed ({reason}); "
                        f"{_FASHION_FIX}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ours


def _fashion(root: Path, *, val_size: int | None, image_size: int | None, download: bool) -> Dataset:
    """Fashion-MNIST: 60,000 training and 10,000 test images, 28x28; `image_size` 14 area-downsamples."""
    if image_size not in (None, 28, 14):
        raise UserError(f"image_size={image_size} for fashion; pass None or 28 (native), or 14 (2x2 averages)")
    folder = _fashion_folder(root, download)

    def split(which: str) -> tuple[Tensor, Tensor]:
        images, labels = FASHION_FILES[which]
        x = read_idx(_fashion_file(folder, images), ndim=3)
        y = read_idx(_fashion_file(folder, labels), ndim=1)
        if len(x) != len(y) or y.max(initial=0) >= len(FASHION_CLASSES):
            raise UserError(f"{folder}: {which} has {len(x)} images but {len(y)} labels (largest {y.max(initial=0)}); "
                            f"delete the damaged files and {_FASHION_FIX}")
        x = torch.from_numpy(x.copy()).unsqueeze(1).float().div_(255)
        if image_size == 14:
            x = F.avg_pool2d(x, 2)   # area downsampling: each pixel the mean of a 2x2 block
        return x, torch.from_numpy(y.astype(np.int64))

    (x, y), (x_test, y_test) = split("train"), split("test")
    val_size = 1000 if val_size is None else val_size
    _check_val_size(val_size, len(y))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(VAL_SEED))
    val, train = perm[:val_size], perm[val_size:]   # train stays shuffled: its first n are a random subset
    return Dataset(
        name="fashion",
        num_classes=len(FASHION_CLASSES),
        classes=FASHION_CLASSES,
        train=Split(x[train], y[train]),
        val=Split(x[val], y[val]),
        test=Split(x_test, y_test),
        crop_padding=x.shape[-1] // 14,   # 2 px at 28x28, 1 at 14x14: a garment keeps its outline
        flip=True,   # a mirrored shirt is still a shirt
    )


# ---------------------------------------------------------------- CIFAR


def _cifar10(root: Path, *, val_size: int | None, image_size: int | None, download: bool) -> Dataset:
    """CIFAR-10 from `root/cifar-10-batches-py` (torchvision's layout)."""
    from torchvision.datasets import CIFAR10

    return _cifar("cifar10", CIFAR10, root, val_size=val_size, image_size=image_size, download=download)


def _cifar100(root: Path, *, val_size: int | None, image_size: int | None, download: bool) -> Dataset:
    """CIFAR-100 (fine labels) from `root/cifar-100-python` (torchvision's layout)."""
    from torchvision.datasets import CIFAR100

    return _cifar("cifar100", CIFAR100, root, val_size=val_size, image_size=image_size, download=download)


def _relaxed(cls: type[CIFAR10]) -> type[CIFAR10]:
    """`cls` whose integrity check only asks that the files exist (torchvision rejects any MD5 mismatch)."""
    return type(
        cls.__name__,
        (cls,),
        {
            "train_list": [[f, None] for f, _ in cls.train_list],
            "test_list": [[f, None] for f, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


def _cifar(
    name: str, cls: type[CIFAR10], root: Path, *, val_size: int | None, image_size: int | None, download: bool
) -> Dataset:
    from torchvision.datasets.utils import check_integrity

    if image_size not in (None, 32):
        raise UserError(f"image_size={image_size} for {name}; CIFAR images are 32x32, so pass None or 32")
    folder = (root / cls.base_folder).resolve()
    how = f"download {cls.url} and extract it into {root.resolve()}"

    if not folder.is_dir():
        if not download:
            raise UserError(f"{name} not found: expected folder {folder}; {how}, or pass download=True")
        try:
            # The stock class verifies the archive's MD5; train=False parses only the small test batch.
            cls(root, train=False, download=True)
        except (OSError, RuntimeError) as e:  # URLError is an OSError
            reason = " ".join(f"{type(e).__name__}: {e}".split())
            raise UserError(f"could not download {name} into {folder} ({reason}); {how} by hand") from e

    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise UserError(f"{folder} lacks {', '.join(missing)}; delete the folder and {how}")
    # Compare checksums ourselves, so a tiny or edited copy (tests, subsets) loads with a warning.
    official = cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]]
    differ = [f for f, md5 in official if not check_integrity(str(folder / f), md5)]
    if differ:
        msg = f"{folder}: files differ from the official release ({', '.join(differ)}); loading anyway"
        warnings.warn(msg, stacklevel=4)  # points at the caller of load()

    relaxed = _relaxed(cls)
    try:
        train_set, test_set = relaxed(root, train=True), relaxed(root, train=False)
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError) as e:   # a truncated or foreign batch file
        damaged = ", ".join(f for f in files if not _unpickles(folder / f)) or "a batch file"
        raise UserError(f"{folder}: cannot read {damaged} ({type(e).__name__}); delete the folder and {how}") from e
    n_train = len(train_set.targets)
    val_size = 1000 if val_size is None else val_size
    _check_val_size(val_size, n_train)
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(VAL_SEED)).numpy()

    return Dataset(
        name=name,
        num_classes=len(train_set.classes),
        classes=tuple(train_set.classes),
        train=_to_split(train_set, perm[val_size:]),
        val=_to_split(train_set, perm[:val_size]),
        test=_to_split(test_set, np.arange(len(test_set.targets))),
        crop_padding=4,  # RandomCrop(32, padding=4), as in RSLAD and most CIFAR robustness work
        flip=True,
    )


def _unpickles(path: Path) -> bool:
    """Whether a CIFAR batch file reads back (used only to name the damaged one)."""
    try:
        with open(path, "rb") as f:
            pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError):
        return False
    return True


def _to_split(ds: CIFAR10, idx: np.ndarray) -> Split:
    """Examples `idx` of torchvision's uint8 NHWC `.data` and `.targets` (no per-image PIL round trip)."""
    # Index while still uint8: a float copy of all 50k CIFAR images is 600 MB.
    x = torch.from_numpy(ds.data[idx]).permute(0, 3, 1, 2).contiguous().float().div_(255)
    return Split(x, torch.from_numpy(np.asarray(ds.targets, dtype=np.int64)[idx]))


def _check_val_size(val_size: int, n_train: int, min_val: int = 1) -> None:
    # A stratified split needs at least one example per class on each side (min_val = number of classes).
    if val_size != 0 and not (min_val <= val_size <= n_train - min_val):
        raise UserError(
            f"val_size={val_size} but the training set has {n_train} examples; "
            f"pass 0 or a value from {min_val} to {n_train - min_val}"
        )


# ---------------------------------------------------------------- registry

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": _digits,
    "fashion": _fashion,
    "cifar10": _cifar10,
    "cifar100": _cifar100,
}


def check_name(name: str) -> None:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; {did_you_mean(name, DATASETS)}choose one of {', '.join(DATASETS)}")


# What a plan's cost estimate needs to know of a dataset without reading or downloading it: training
# images before the validation split, channels, native side, classes. Digits ships with scikit-learn
# and is simply read.
SIZES = {"fashion": (60_000, 1, 28, 10), "cifar10": (50_000, 3, 32, 10), "cifar100": (50_000, 3, 32, 100)}


def channels(name: str) -> int:
    """The number of colour channels of dataset `name`, known without its files."""
    check_name(name)
    return SIZES[name][1] if name in SIZES else 1   # digits: grayscale


def shape(name: str, *, val_size: int | None = None, image_size: int | None = None,
          train_size: int | None = None) -> tuple[int, int, int, int, int]:
    """(training images, validation images, channels, side, classes) of `load(name, ...)` with these
    settings, known without the dataset's files (a dry run touches neither the network nor the data)."""
    check_name(name)
    if name not in SIZES:
        ds = load(name, val_size=val_size, image_size=image_size, train_size=train_size, download=False)
        return len(ds.train), len(ds.val), ds.in_channels, ds.image_size, ds.num_classes
    total, channels, side, classes = SIZES[name]
    val = 1000 if val_size is None else val_size
    train = total - val if train_size is None else min(train_size, total - val)
    return train, val, channels, image_size or side, classes


def load(
    name: str,
    root: str | Path = "data",
    *,
    val_size: int | None = None,
    image_size: int | None = None,
    train_size: int | None = None,
    download: bool = True,
) -> Dataset:
    """Load dataset `name` ("digits", "fashion", "cifar10" or "cifar100") as tensors on the CPU.

    `val_size` examples are held out of the training set (default 180 for digits, 1000 otherwise);
    `train_size` keeps the first n of the rest (a fixed random subset; None: all of them).
    `image_size` upsamples digits (default 8, native), downsamples Fashion-MNIST to 14, and must be
    None or 32 for CIFAR. Fashion-MNIST and CIFAR are read from `root` and downloaded there if absent
    and `download` is true (Fashion-MNIST is first looked for in Debian's package).
    """
    check_name(name)
    root = Path(root).expanduser()
    ds = DATASETS[name](root, val_size=val_size, image_size=image_size, download=download)
    if train_size is None:
        return ds
    if not 1 <= train_size <= len(ds.train):
        raise UserError(f"train_size={train_size} but {name} has {len(ds.train)} training images after "
                        f"validation; pass a value from 1 to {len(ds.train)}, or None for all")
    return replace(ds, train=ds.train.take(train_size))


def for_config(cfg) -> Dataset:
    """The dataset a training config (config.TrainConfig) reads: its dataset, root, validation size,
    image size and training-set size."""
    return load(cfg.dataset, cfg.data_root, val_size=cfg.val_size, image_size=cfg.image_size,
                train_size=cfg.train_size)


# ---------------------------------------------------------------- augmentation and loader


def augment(x: Tensor, *, padding: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Random crop with `padding` pixels of zero padding and random horizontal flip (p=0.5), per image.

    Batched tensor ops on x's device (`generator` must live there too); padding=0 and flip=False
    return `x` itself.
    """
    n, c, h, w = x.shape
    if padding > 0:
        xp = F.pad(x, (padding, padding, padding, padding))
        top = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
        left = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
        rows = (top[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
        cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(c, device=x.device)[None, :, None, None]
        x = xp[batch, chan, rows, cols]  # each image's own h x w window of its padded copy
    if flip:
        mirror = torch.rand(n, generator=generator, device=x.device) < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    return x


class TensorLoader:
    """Iterates over a Split held as tensors on one device; deterministic in (seed, epoch).

    `for x, y in loader.epoch(e)` yields the batches of epoch `e`, the same bits every time for the
    same `seed` and `e`, whatever ran before, so a resumed run sees the batches it would have seen.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = True,
        augment: bool = False,
        padding: int = 0,
        flip: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size={batch_size}; pass a positive batch size")
        if padding < 0:
            raise UserError(f"padding={padding}; pass 0 or more pixels")
        if seed < 0:
            raise UserError(f"seed={seed}; pass a seed >= 0")
        self.split, self.batch_size, self.shuffle = split, batch_size, shuffle
        self.augment, self.padding, self.flip = augment, padding, flip
        self.seed, self.drop_last = seed, drop_last

    @classmethod
    def from_dataset(
        cls,
        ds: Dataset,
        split: str = "train",
        batch_size: int = 128,
        *,
        seed: int = 0,
        shuffle: bool | None = None,
        augment: bool | None = None,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> TensorLoader:
        """A loader over `ds.<split>` with the dataset's padding and flip; shuffle and augment default
        to on for "train" and off for "val"/"test". `device` moves the split there first."""
        if split not in ("train", "val", "test"):
            raise UserError(f"unknown split {split!r}; choose train, val or test")
        data = getattr(ds, split)
        is_train = split == "train"
        return cls(
            data if device is None else data.to(device),
            batch_size,
            shuffle=is_train if shuffle is None else shuffle,
            augment=is_train if augment is None else augment,
            padding=ds.crop_padding,
            flip=ds.flip,
            seed=seed,
            drop_last=drop_last,
        )

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches `(x, y)` of epoch `epoch`, on the split's device."""
        # Fresh generators seeded from (seed, epoch) alone: no dependence on global RNG state or on
        # which epochs ran before. The permutation is drawn on the CPU so it is the same on any device.
        order_seed, aug_seed = np.random.SeedSequence([self.seed, epoch]).generate_state(2).tolist()
        device = self.split.x.device
        n = len(self.split)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(order_seed)).to(device)
        else:
            order = torch.arange(n, device=device)
        aug_gen = torch.Generator(device=device).manual_seed(aug_seed)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            x, y = self.split.x[idx], self.split.y[idx]
            if self.augment:
                x = augment(x, padding=self.padding, flip=self.flip, generator=aug_gen)
            yield x, y
