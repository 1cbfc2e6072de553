"""Contracts of rslad_kit.data: splits, ranges, offline CIFAR and Fashion-MNIST, augmentation, loader determinism."""

import gzip
import pickle
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
import torchvision.datasets.cifar

from rslad_kit import data
from rslad_kit.data import DATASETS, Split, TensorLoader, augment, load
from rslad_kit.errors import UserError


@contextmanager
def raises_user_error(match: str | None = None):
    """pytest.raises(UserError) that also checks the message is one line."""
    with pytest.raises(UserError, match=match) as info:
        yield info
    assert "\n" not in str(info.value)


def rows(x: torch.Tensor) -> Counter:
    """Multiset of examples, so splits can be compared as partitions even when images repeat."""
    return Counter(bytes(r) for r in x.flatten(1).numpy().view(np.uint8))


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return load("digits")


def test_registry_names():
    assert set(DATASETS) == {"digits", "fashion", "cifar10", "cifar100"}


def test_digits_shapes_range_and_sizes(digits):
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1257, 180, 360)
    assert (digits.in_channels, digits.image_size, digits.num_classes) == (1, 8, 10)
    assert digits.classes == tuple("0123456789")
    assert (digits.crop_padding, digits.flip) == (1, False)
    for s in (digits.train, digits.val, digits.test):
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64
        assert s.x.shape[1:] == (1, 8, 8)
        assert s.x.min() >= 0 and s.x.max() <= 1
    assert digits.train.x.max() == 1  # 16/16: the full range is used, not 0..16/255


def test_digits_stratified(digits):
    from sklearn.datasets import load_digits

    all_counts = np.bincount(load_digits().target, minlength=10)
    for s in (digits.train, digits.val, digits.test):
        counts = np.bincount(s.y.numpy(), minlength=10)
        assert (counts > 0).all()
        expected = len(s) * all_counts / all_counts.sum()
        assert np.abs(counts - expected).max() <= 1.5


def test_digits_splits_partition_the_data(digits):
    from sklearn.datasets import load_digits

    full = torch.from_numpy(load_digits().images).float().div(16).unsqueeze(1)
    union = rows(digits.train.x) + rows(digits.val.x) + rows(digits.test.x)
    assert union == rows(full)  # every example in exactly one split (as a multiset, duplicates included)


def test_digits_deterministic(digits):
    again = load("digits")
    for a, b in [(digits.train, again.train), (digits.val, again.val), (digits.test, again.test)]:
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_digits_upsampled():
    ds = load("digits", image_size=16)
    assert ds.train.x.shape[1:] == (1, 16, 16) and ds.image_size == 16
    assert ds.train.x.min() >= 0 and ds.train.x.max() <= 1
    assert len(ds.test) == 360


def test_digits_val_size():
    ds = load("digits", val_size=300)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1137, 300, 360)
    with raises_user_error("val_size"):
        load("digits", val_size=1437)


def test_unknown_dataset():
    with raises_user_error("digits") as info:
        load("mnist")
    assert "cifar10" in str(info.value) and "cifar100" in str(info.value)


def test_split_take_and_to(digits):
    s = digits.train.take(5)
    assert len(s) == 5 and torch.equal(s.x, digits.train.x[:5])
    assert digits.train.take(None) is digits.train
    assert digits.train.to("cpu").x.device.type == "cpu"
    with raises_user_error("y of shape"):
        Split(torch.zeros(3, 1, 2, 2), torch.zeros(4, dtype=torch.int64))


# ---------------------------------------------------------------- fake CIFAR in the real on-disk format

N_PER_FILE = 6  # CIFAR-10: 5 train batches -> 30 train images; CIFAR-100: one `train` file


def write_fake_cifar(root: Path, name: str, seed: int = 0) -> dict:
    """Write a tiny CIFAR copy in torchvision's layout; return what was written.

    The real files are Python-2 pickles of dicts with str keys; torchvision reads them with
    encoding="latin1", so str keys and protocol 2 match what it expects.
    """
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, test_files = "cifar-10-batches-py", ["test_batch"]
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        label_key, names_key, n_classes = "labels", "label_names", 10
        meta_file, meta = "batches.meta", {names_key: [f"c{i}" for i in range(10)], "num_vis": 3072}
    else:
        folder, train_files, test_files = "cifar-100-python", ["train"], ["test"]
        label_key, names_key, n_classes = "fine_labels", "fine_label_names", 100
        meta_file, meta = "meta", {names_key: [f"f{i}" for i in range(100)], "coarse_label_names": list("abcd")}
    d = root / folder
    d.mkdir(parents=True)
    written = {"train_x": [], "train_y": [], "test_x": [], "test_y": [], "classes": meta[names_key]}
    for files, part in [(train_files, "train"), (test_files, "test")]:
        for f in files:
            data = rng.integers(0, 256, (N_PER_FILE, 3072), dtype=np.uint8)
            labels = rng.integers(0, n_classes, N_PER_FILE).tolist()
            entry = {"batch_label": f, "data": data, label_key: labels}
            if name == "cifar100":
                entry["coarse_labels"] = [label % 4 for label in labels]
            (d / f).write_bytes(pickle.dumps(entry, protocol=2))
            written[f"{part}_x"].append(data)
            written[f"{part}_y"] += labels
    (d / meta_file).write_bytes(pickle.dumps(meta, protocol=2))
    for part in ("train", "test"):
        written[f"{part}_x"] = torch.from_numpy(np.concatenate(written[f"{part}_x"]).reshape(-1, 3, 32, 32))
        written[f"{part}_y"] = torch.tensor(written[f"{part}_y"])
    return written


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_fake_cifar_loads_exactly(tmp_path, name):
    w = write_fake_cifar(tmp_path, name)
    with pytest.warns(UserWarning, match="differ from the official release"):
        ds = load(name, tmp_path, val_size=5, download=False)

    assert ds.name == name and ds.classes == tuple(w["classes"]) and ds.num_classes == len(w["classes"])
    assert (ds.in_channels, ds.image_size, ds.crop_padding, ds.flip) == (3, 32, 4, True)
    for s in (ds.train, ds.val, ds.test):
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64 and s.x.shape[1:] == (3, 32, 32)

    # Test split: untouched order; pixels round-trip exactly from the uint8 written (CHW row-major).
    assert torch.equal((ds.test.x * 255).round().to(torch.uint8), w["test_x"])
    assert torch.equal(ds.test.x, w["test_x"].float() / 255)
    assert torch.equal(ds.test.y, w["test_y"])

    # Train + val: a partition of the written training images, labels travelling with their image.
    n_train = len(w["train_y"])
    assert (len(ds.train), len(ds.val)) == (n_train - 5, 5)
    label_of = {bytes(x.numpy()): int(y) for x, y in zip(w["train_x"], w["train_y"])}
    seen = []
    for s in (ds.train, ds.val):
        u8 = (s.x * 255).round().to(torch.uint8)
        for x, y in zip(u8, s.y):
            assert label_of[bytes(x.numpy())] == int(y)
            seen.append(bytes(x.numpy()))
    assert sorted(seen) == sorted(label_of)  # val held out of train: disjoint, nothing lost
    assert not set(rows(ds.val.x)) & set(rows(ds.test.x))


def test_fake_cifar_val_is_deterministic_and_validated(tmp_path):
    write_fake_cifar(tmp_path, "cifar10")
    with pytest.warns(UserWarning):
        a = load("cifar10", tmp_path, val_size=7)
    with pytest.warns(UserWarning):
        b = load("cifar10", tmp_path, val_size=7)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    with pytest.warns(UserWarning), raises_user_error("val_size"):
        load("cifar10", tmp_path, val_size=30)  # 30 training images: nothing left to train on
    with raises_user_error("image_size"):
        load("cifar10", tmp_path, image_size=16)


def test_official_checksums_load_silently(tmp_path, monkeypatch):
    from torchvision.datasets.utils import calculate_md5

    write_fake_cifar(tmp_path, "cifar10")
    d = tmp_path / "cifar-10-batches-py"
    cls = torchvision.datasets.CIFAR10
    # Pretend the fake files are the official release: genuine data must load without a warning.
    md5 = {f.name: calculate_md5(str(f)) for f in d.iterdir()}
    monkeypatch.setattr(cls, "train_list", [[f, md5[f]] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, md5[f]] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5["batches.meta"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load("cifar10", tmp_path, val_size=5).test) == N_PER_FILE


def test_incomplete_cifar_folder(tmp_path):
    write_fake_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with raises_user_error("data_batch_3"):
        load("cifar10", tmp_path, download=False)


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_absent_folder_without_download(tmp_path, name, folder):
    with raises_user_error() as info:
        load(name, tmp_path, download=False)
    assert str((tmp_path / folder).resolve()) in str(info.value)
    assert "https://" in str(info.value)


@pytest.mark.parametrize("name, tarball", [("cifar10", "cifar-10-python.tar.gz"), ("cifar100", "cifar-100-python.tar.gz")])
def test_absent_folder_download_fails(tmp_path, monkeypatch, name, tarball):
    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    # Both the method and the helper it calls, so no test can reach the network.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    with raises_user_error("could not download") as info:
        load(name, tmp_path, download=True)
    assert tarball in str(info.value) and str(tmp_path.resolve()) in str(info.value)


# ---------------------------------------------------------------- fake Fashion-MNIST in the real idx format

FASHION_N = {"train": 40, "test": 12}


def idx_bytes(array: np.ndarray) -> bytes:
    """LeCun's idx format: 0x0000, 0x08 (unsigned byte), the number of dimensions, big-endian sizes, data."""
    return bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes() + array.astype(np.uint8).tobytes()


def write_fake_fashion(folder: Path, *, gz: bool = False, seed: int = 0) -> dict:
    """Four tiny idx files under `folder`, named as torchvision extracts them (or .gz, as Debian ships)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for part, n in FASHION_N.items():
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.arange(n, dtype=np.uint8) % 10
        for name, array in zip(data.FASHION_FILES[part], (x, y)):
            raw = idx_bytes(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
        written[part] = (torch.from_numpy(x).float().div(255).unsqueeze(1), torch.from_numpy(y.astype(np.int64)))
    return written


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    """As on a machine without Debian's dataset-fashion-mnist package, and offline."""
    monkeypatch.setattr(data, "FASHION_DEBIAN", tmp_path / "no-debian-copy")

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", offline)


@pytest.mark.parametrize("gz", [False, True])
def test_fake_fashion_loads_exactly(tmp_path, no_debian, gz):
    w = write_fake_fashion(tmp_path / data.FASHION_FOLDER, gz=gz)
    ds = load("fashion", tmp_path, val_size=8, download=False)
    assert (ds.name, ds.num_classes, ds.classes[0], ds.flip, ds.crop_padding) == ("fashion", 10, "T-shirt/top", True, 2)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (32, 8, 12)
    assert ds.train.x.shape[1:] == (1, 28, 28) and ds.train.x.dtype == torch.float32
    assert torch.equal(ds.test.x, w["test"][0]) and torch.equal(ds.test.y, w["test"][1])
    # train and val partition the training file, labels travelling with their images
    x, y = w["train"]
    assert rows(torch.cat([ds.train.x, ds.val.x])) == rows(x)
    label_of = {bytes(r): int(c) for r, c in zip(x.flatten(1).numpy().view(np.uint8), y)}
    assert all(label_of[bytes(r)] == int(c) for r, c in zip(ds.val.x.flatten(1).numpy().view(np.uint8), ds.val.y))
    again = load("fashion", tmp_path, val_size=8, download=False)
    assert torch.equal(again.val.x, ds.val.x) and torch.equal(again.train.x, ds.train.x)


def test_fashion_downsampled_to_14_is_the_2x2_means(tmp_path, no_debian):
    w = write_fake_fashion(tmp_path / data.FASHION_FOLDER)
    ds = load("fashion", tmp_path, val_size=8, image_size=14, download=False)
    assert ds.test.x.shape[1:] == (1, 14, 14) and ds.crop_padding == 1
    block = w["test"][0][:, :, 2:4, 6:8].mean(dim=(2, 3))
    assert torch.allclose(ds.test.x[:, :, 1, 3], block)
    with raises_user_error("image_size=20"):
        load("fashion", tmp_path, image_size=20, download=False)


def test_train_size_keeps_a_fixed_subset_of_train(tmp_path, no_debian):
    write_fake_fashion(tmp_path / data.FASHION_FOLDER)
    full = load("fashion", tmp_path, val_size=8, download=False)
    part = load("fashion", tmp_path, val_size=8, train_size=10, download=False)
    assert torch.equal(part.train.x, full.train.x[:10]) and torch.equal(part.val.x, full.val.x)
    assert torch.equal(load("digits", train_size=100).train.y, load("digits").train.y[:100])
    for bad in (0, 33):
        with raises_user_error(f"train_size={bad}"):
            load("fashion", tmp_path, val_size=8, train_size=bad, download=False)


def test_fashion_falls_back_to_debian_and_writes_nothing(tmp_path, monkeypatch, no_debian):
    w = write_fake_fashion(tmp_path / "debian", gz=True)
    monkeypatch.setattr(data, "FASHION_DEBIAN", tmp_path / "debian")
    root = tmp_path / "data"
    assert torch.equal(load("fashion", root, val_size=8).test.x, w["test"][0])
    assert not root.exists()


def test_a_broken_own_copy_is_an_error_not_replaced_by_debian(tmp_path, monkeypatch, no_debian):
    write_fake_fashion(tmp_path / "debian", gz=True)
    monkeypatch.setattr(data, "FASHION_DEBIAN", tmp_path / "debian")
    write_fake_fashion(tmp_path / data.FASHION_FOLDER)
    (tmp_path / data.FASHION_FOLDER / "t10k-labels-idx1-ubyte").unlink()
    with raises_user_error("lacks t10k-labels-idx1-ubyte"):
        load("fashion", tmp_path, download=False)


def test_fashion_absent_everywhere(tmp_path, no_debian):
    with raises_user_error("apt-get install dataset-fashion-mnist") as info:
        load("fashion", tmp_path / "data", download=False)
    assert "--data-root" in str(info.value)
    with raises_user_error("download failed"):   # online in name only: the download raises
        load("fashion", tmp_path / "data", download=True)
    assert not (tmp_path / "data").exists()


def test_fashion_download_lands_in_torchvision_layout(tmp_path, monkeypatch, no_debian):
    def fake_download(self):
        write_fake_fashion(Path(self.raw_folder))

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", fake_download)
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "_check_exists", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "_load_data", lambda self: (None, None))
    ds = load("fashion", tmp_path, val_size=8)
    assert len(ds.test) == FASHION_N["test"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FashionMNIST"]   # no temporary folder left


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-5], "truncated"),
    (lambda raw: b"\x00\x00\x0d\x03" + raw[4:], "magic 00000d03"),
    (lambda raw: b"", "magic none"),
])
def test_damaged_idx_files(tmp_path, no_debian, damage, message):
    write_fake_fashion(tmp_path / data.FASHION_FOLDER)
    f = tmp_path / data.FASHION_FOLDER / "train-images-idx3-ubyte"
    f.write_bytes(damage(f.read_bytes()))
    with raises_user_error(message) as info:
        load("fashion", tmp_path, download=False)
    assert str(f) in str(info.value)


def test_corrupt_gz_idx_file(tmp_path, no_debian):
    write_fake_fashion(tmp_path / data.FASHION_FOLDER, gz=True)
    f = tmp_path / data.FASHION_FOLDER / "t10k-images-idx3-ubyte.gz"
    for broken in (f.read_bytes()[:200], b"not gzip at all"):
        f.write_bytes(broken)
        with raises_user_error("cannot read"):
            load("fashion", tmp_path, download=False)


def test_real_fashion_when_installed(tmp_path):
    if not all((data.FASHION_DEBIAN / f"{n}.gz").is_file() for pair in data.FASHION_FILES.values() for n in pair):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    ds = load("fashion", tmp_path, download=False)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (59000, 1000, 10000)
    assert torch.bincount(ds.test.y).tolist() == [1000] * 10   # the official test set is balanced
    assert 0.25 < ds.test.x.mean() < 0.35 and ds.test.x.min() == 0 and ds.test.x.max() == 1


# ---------------------------------------------------------------- augmentation


def images(n: int = 32, c: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_augment_identity_when_off():
    x = images()
    assert torch.equal(augment(x, padding=0, flip=False, generator=torch.Generator().manual_seed(0)), x)


def test_augment_flip_only():
    x = images()
    out = augment(x, padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert same.any() and mirrored.any()  # p=0.5 over 32 images


@pytest.mark.parametrize("flip", [False, True])
def test_augment_crop_is_window_of_padded(flip):
    p = 2
    x = images()
    out = augment(x, padding=p, flip=flip, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    xp = torch.nn.functional.pad(x, (p, p, p, p))
    offsets = []
    for i in range(len(x)):
        cands = [out[i], out[i].flip(-1)] if flip else [out[i]]
        match = [
            (a, b)
            for a in range(2 * p + 1)
            for b in range(2 * p + 1)
            if any(torch.equal(xp[i, :, a : a + 8, b : b + 8], o) for o in cands)
        ]
        assert match, f"image {i} is not a window of its padded original"
        offsets.append(match[0])
    tops, lefts = zip(*offsets)
    assert len(set(tops)) > 1 and len(set(lefts)) > 1  # offsets drawn per image, in both directions


def test_augment_deterministic_in_generator():
    x = images()
    a = augment(x, padding=2, flip=True, generator=torch.Generator().manual_seed(5))
    b = augment(x, padding=2, flip=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


# ---------------------------------------------------------------- loader


def indexed_split(n: int = 50) -> Split:
    """Each image is filled with its own index, so batches reveal the order."""
    x = (torch.arange(n, dtype=torch.float32) / n).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return Split(x, torch.arange(n))


def order(batches) -> list[int]:
    return torch.cat([y for _, y in batches]).tolist()


def test_loader_len_and_coverage():
    s = indexed_split(50)
    loader = TensorLoader(s, 16, seed=3)
    assert len(loader) == 4
    batches = list(loader.epoch(0))
    assert len(batches) == 4 and [len(y) for _, y in batches] == [16, 16, 16, 2]
    assert sorted(order(batches)) == list(range(50))  # every example exactly once
    for x, y in batches:
        assert torch.equal(x[:, 0, 0, 0], y.float() / 50)  # images travel with their labels

    dropped = TensorLoader(s, 16, seed=3, drop_last=True)
    assert len(dropped) == 3 and [len(y) for _, y in dropped.epoch(0)] == [16, 16, 16]

    plain = TensorLoader(s, 16, shuffle=False)
    assert order(plain.epoch(0)) == list(range(50))


def test_loader_deterministic_in_seed_and_epoch():
    s = indexed_split(50)
    kw = dict(augment=True, padding=1, flip=True, seed=7)
    first = list(TensorLoader(s, 16, **kw).epoch(2))
    other = TensorLoader(s, 16, **kw)
    list(other.epoch(0))  # whatever ran before must not matter
    torch.manual_seed(1234)
    torch.rand(10)
    second = list(other.epoch(2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))
    assert any(not torch.equal(x, s.x[y]) for x, y in first)  # augmentation was applied (y is the index)
    assert order(first) != order(other.epoch(3))
    assert order(first) != order(TensorLoader(s, 16, **{**kw, "seed": 8}).epoch(2))


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=GPU)])
def test_loader_batches_on_split_device(device, digits):
    loader = TensorLoader.from_dataset(digits, "train", batch_size=256, device=device)
    assert (loader.padding, loader.flip, loader.augment, loader.shuffle) == (1, False, True, True)
    x, y = next(iter(loader.epoch(0)))
    assert x.device.type == device and y.device.type == device
    assert x.shape == (256, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
    test_loader = TensorLoader.from_dataset(digits, "test", batch_size=100)
    assert not test_loader.augment and not test_loader.shuffle and len(test_loader) == 4
