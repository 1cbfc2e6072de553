"""Contracts of rslad_kit.models: official parameter counts and key names, normalisation inside the model,
safe checkpoint loading, and RobustBench teachers read offline from RobustBench's file layout."""

import argparse
import sys
from pathlib import Path

import pytest
import torch

from rslad_kit import models
from rslad_kit.errors import UserError
from rslad_kit.loading import load_model, parse_spec
from rslad_kit.models import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, MODELS, ZOO,
                              DMWideResNet, Normalized, WideResNet, ZooEntry, build, load_checkpoint,
                              unwrap)


def n_params(model: torch.nn.Module, skip: str | None = None) -> int:
    return sum(p.numel() for k, p in model.named_parameters() if not (skip and k.startswith(skip)))


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- architectures

@pytest.mark.parametrize("name, num_classes, expected", [
    ("resnet18", 10, 11_173_962),
    ("resnet18", 100, 11_220_132),
    ("mobilenetv2", 10, 2_296_922),
    ("mobilenetv2", 100, 2_412_212),
    ("wrn-34-10", 10, 48_262_586),  # state dict, including the unused sub_block1
    ("wrn-70-16", 100, 266_888_756),
])
def test_parameter_counts_match_the_official_models(name, num_classes, expected):
    with torch.device("meta"):  # shapes only, nothing allocated
        assert n_params(build(name, num_classes)) == expected


def test_trades_wrn_forward_uses_all_but_sub_block1():
    with torch.device("meta"):
        assert n_params(build("wrn-34-10", 10), skip="sub_block1") == 46_160_474


@pytest.mark.parametrize("name", list(MODELS))
def test_every_registered_model_maps_cifar_images_to_logits(name):
    with torch.device("meta"):
        assert build(name, 7)(torch.empty(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])
def test_students_forward_on_cpu(name):
    assert build(name, 10)(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", [n for n in MODELS if n.startswith("cnn-")])
def test_classroom_cnns_on_small_digits(name):
    model = build(name, 10, in_channels=1)
    for side in (8, 16):
        assert model(torch.rand(2, 1, side, side)).shape == (2, 10)
    # Grad-CAM targets features[-1]: a conv block whose output keeps a spatial map.
    captured = []
    model.features[-1].register_forward_hook(lambda m, i, out: captured.append(out.shape))
    model(torch.rand(2, 1, 8, 8))
    assert captured[0][-2:] == (4, 4)


@pytest.mark.parametrize("name, official_keys", [
    ("resnet18", ["conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.shortcut.0.weight",
                  "layer4.1.bn2.num_batches_tracked", "linear.weight", "linear.bias"]),
    ("mobilenetv2", ["conv1.weight", "layers.0.conv1.weight", "layers.0.shortcut.1.running_var",
                     "layers.16.conv3.weight", "conv2.weight", "bn2.bias", "linear.weight"]),
    ("wrn-34-10", ["conv1.weight", "block1.layer.0.convShortcut.weight", "sub_block1.layer.4.conv2.weight",
                   "block3.layer.4.bn2.running_var", "bn1.weight", "fc.weight", "fc.bias"]),
    ("wrn-70-16", ["init_conv.weight", "layer.0.block.0.shortcut.weight", "layer.2.block.10.conv_1.weight",
                   "layer.1.block.0.batchnorm_0.running_mean", "batchnorm.weight", "logits.weight"]),
])
def test_state_dict_keys_are_the_official_names(name, official_keys):
    with torch.device("meta"):
        keys = set(build(name, 10).state_dict())
    assert set(official_keys) <= keys


def test_dm_wrn_mean_std_are_not_state_dict_keys():
    # RobustBench's zoo files carry no mean/std, so these keys must not be required.
    keys = DMWideResNet(16, 1, 10, mean=CIFAR100_MEAN, std=CIFAR100_STD).state_dict()
    assert not any(k.endswith(("mean", "std")) and "batchnorm" not in k for k in keys)


def test_dm_wrn_pads_stride_two_convs_like_tensorflow_same():
    # DeepMind's weights were trained with TF "SAME": a stride-2 3x3 conv pads only bottom and right.
    model = DMWideResNet(16, 1, 10)
    seen = []
    model.layer[1].block[0].conv_0.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    model(torch.rand(2, 3, 32, 32))
    v = seen[0]
    assert v.shape[-2:] == (33, 33)
    assert v[..., -1, :].abs().sum() == 0 and v[..., :, -1].abs().sum() == 0
    assert v[..., 0, :].abs().sum() > 0 and v[..., :, 0].abs().sum() > 0


def test_normalisation_lives_inside_the_model():
    torch.manual_seed(0)
    model = build("cnn-w4", 10, in_channels=3, mean=CIFAR10_MEAN, std=CIFAR10_STD).eval()
    x = torch.rand(2, 3, 16, 16)
    manual = (x - torch.tensor(CIFAR10_MEAN).view(3, 1, 1)) / torch.tensor(CIFAR10_STD).view(3, 1, 1)
    torch.testing.assert_close(model(x), unwrap(model)(manual))
    assert set(model.state_dict()) == {f"model.{k}" for k in unwrap(model).state_dict()}
    assert not isinstance(build("cnn-w4", 10), Normalized)  # no mean/std: no normalisation


def test_build_rejects_unknown_names_and_half_statistics():
    with pytest.raises(UserError) as err:
        build("resnet19", 10)
    assert "resnet18" in one_line(err) and "cnn-w128" in str(err.value)
    with pytest.raises(UserError):
        build("resnet18", 10, mean=CIFAR10_MEAN)
    with pytest.raises(UserError):
        build("cnn-w4", 10, in_channels=1, mean=CIFAR10_MEAN, std=CIFAR10_STD)


# ---------------------------------------------------------------- load_checkpoint

def small(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build("cnn-w4", 10, in_channels=1)
    model(torch.rand(4, 1, 8, 8))  # train-mode pass: BN running stats differ from their defaults
    return model


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = unwrap(a).state_dict(), unwrap(b).state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k])


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd, "epoch": 3},
    lambda sd: {"net": sd, "acc": 0.5},
    lambda sd: {"model": sd, "optimizer": {"state": {}, "param_groups": []}, "config": {"lr": 0.1}},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},  # DataParallel, as the RSLAD scripts save
    lambda sd: {f"model.{k}": v for k, v in sd.items()},
    lambda sd: {"state_dict": {f"module.model.{k}": v for k, v in sd.items()}},
    lambda sd: {f"module.module.{k}": v for k, v in sd.items()},
], ids=["plain", "state_dict", "net", "model", "module.", "model.", "wrapped+module.model.", "module.x2"])
def test_load_checkpoint_accepts_common_formats(tmp_path, wrap):
    source, target = small(0), small(1)
    torch.save(wrap(source.state_dict()), tmp_path / "ckpt.pt")
    assert load_checkpoint(target, tmp_path / "ckpt.pt") is target
    assert_same_weights(source, target)


def test_load_checkpoint_crosses_normalisation_wrappers(tmp_path):
    bare = small(0)
    wrapped = Normalized(small(1), (0.5,), (0.25,))
    torch.save(wrapped.state_dict(), tmp_path / "wrapped.pt")  # keys model.<...>
    load_checkpoint(bare, tmp_path / "wrapped.pt")
    assert_same_weights(bare, wrapped)
    torch.save(small(2).state_dict(), tmp_path / "bare.pt")
    load_checkpoint(wrapped, tmp_path / "bare.pt")
    assert_same_weights(wrapped, small(2))


def test_legacy_torch_save_format_loads(tmp_path):
    source, target = small(0), small(1)
    torch.save(source.state_dict(), tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    load_checkpoint(target, tmp_path / "old.pt")
    assert_same_weights(source, target)


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path):
    torch.save(build("cnn-w4", 10, in_channels=1).state_dict(), tmp_path / "w4.pt")
    target = build("cnn-w8", 10, in_channels=1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(UserError) as err:
        load_checkpoint(target, tmp_path / "w4.pt")
    msg = one_line(err)
    assert "shape mismatch" in msg and "features.0.0.weight (4, 1, 3, 3) in file vs (8, 1, 3, 3)" in msg
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # nothing half-loaded

    with pytest.raises(UserError) as err:
        load_checkpoint(build("resnet18", 10), tmp_path / "w4.pt")
    msg = one_line(err)
    assert "missing" in msg and "conv1.weight" in msg
    assert "unexpected" in msg and "features.0.0.weight" in msg
    assert "more)" in msg  # long lists are truncated


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as err:
        load_checkpoint(small(0), tmp_path / "nope.pt")
    assert "nope.pt" in one_line(err)


class Payload:
    """Unpickling this opens (creates) a marker file: code that must never run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_code_carrying_checkpoint_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": small(0).state_dict(), "hook": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UserError) as err:
        load_checkpoint(small(1), tmp_path / "evil.pt")
    assert "carries code" in one_line(err) and "state dict" in str(err.value)
    assert not marker.exists()
    # The payload is live: an unsafe load does run it. This is what the kit refuses to do.
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_namespace_in_checkpoint_is_refused(tmp_path):
    torch.save({"state_dict": small(0).state_dict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "ns.pt")
    with pytest.raises(UserError) as err:
        load_checkpoint(small(1), tmp_path / "ns.pt")
    assert "argparse.Namespace" in one_line(err)


@pytest.mark.parametrize("content, says", [
    (b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>", "HTML"),
    (b"\n  <html><body>Quota exceeded</body></html>", "HTML"),
    (bytes(range(256)) * 8, "not a PyTorch checkpoint"),
    (b"", "is empty"),
])
def test_non_checkpoints_are_user_errors(tmp_path, content, says):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(UserError) as err:
        load_checkpoint(small(0), tmp_path / "x.pt")
    assert says in one_line(err)


def test_truncated_download_is_a_user_error(tmp_path):
    torch.save(small(0).state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as err:
        load_checkpoint(small(1), tmp_path / "half.pt")
    assert "damaged" in one_line(err)


def test_file_without_tensors_is_a_user_error(tmp_path):
    torch.save({"epoch": 3, "acc": 0.5}, tmp_path / "meta.pt")
    with pytest.raises(UserError) as err:
        load_checkpoint(small(0), tmp_path / "meta.pt")
    assert "no state dict" in one_line(err)


# ---------------------------------------------------------------- RobustBench teachers (loading.load_model)

TINY_DM = ZooEntry(DMWideResNet, dict(depth=16, width=1, num_classes=100, mean=CIFAR100_MEAN, std=CIFAR100_STD),
                   "fake-id", 0.0, 0.0, 8 / 255)


@pytest.fixture
def tiny_gowal(monkeypatch):
    """The CIFAR-100 Gowal entry, shrunk to WRN-16-1 so the DM code path stays cheap."""
    monkeypatch.setitem(ZOO, ("cifar100", "Gowal2020Uncovering"), TINY_DM)
    torch.manual_seed(0)
    return DMWideResNet(16, 1, 100)


def place(model: torch.nn.Module, root: Path, dataset: str, name: str) -> Path:
    path = root / dataset / "Linf" / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def assert_frozen_eval(model: torch.nn.Module) -> None:
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())


def test_trades_teacher_loads_offline_from_robustbench_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_download", lambda *a: pytest.fail("must not download a present file"))
    torch.manual_seed(0)
    source = WideResNet(34, 10, 10)  # the real architecture and its ~190 MB state dict, sub_block1 included
    place(source, tmp_path, "cifar10", "Zhang2019Theoretically")
    teacher = load_model("robustbench:Zhang2019Theoretically", dataset="cifar10", model_dir=tmp_path)
    assert isinstance(teacher, WideResNet)
    assert_frozen_eval(teacher)
    for key in ("conv1.weight", "sub_block1.layer.2.conv1.weight", "block3.layer.4.bn2.running_var", "fc.weight"):
        torch.testing.assert_close(teacher.state_dict()[key], source.state_dict()[key])


def test_dm_teacher_normalises_with_cifar100_statistics(tmp_path, tiny_gowal):
    place(tiny_gowal, tmp_path, "cifar100", "Gowal2020Uncovering")
    x = torch.rand(2, 3, 32, 32)
    for official, (mean, std) in ((False, (CIFAR100_MEAN, CIFAR100_STD)), (True, (CIFAR10_MEAN, CIFAR10_STD))):
        teacher = load_model("robustbench:Gowal2020Uncovering", dataset="cifar100", model_dir=tmp_path,
                             download=False, rslad_official_stats=official)
        assert_frozen_eval(teacher)
        manual = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
        torch.testing.assert_close(teacher(x), tiny_gowal.eval()(manual))


def test_unknown_teacher_or_wrong_dataset_lists_known_names(tmp_path):
    for spec, dataset in (("robustbench:Nope2020", "cifar10"),
                          ("robustbench:Zhang2019Theoretically", "cifar100")):
        with pytest.raises(UserError) as err:
            load_model(spec, dataset=dataset, model_dir=tmp_path, download=False)
        msg = one_line(err)
        assert "cifar10: Zhang2019Theoretically" in msg and "cifar100: Gowal2020Uncovering" in msg


def test_a_zoo_name_without_its_prefix_is_suggested_with_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="did you mean 'robustbench:Zhang2019Theoretically'"):
        load_model("Zhang2019Theoretically", dataset="cifar10")
    with pytest.raises(UserError, match="name the dataset"):
        load_model("robustbench:Zhang2019Theoretically")


def test_parse_spec_is_the_one_reading_of_a_spec():
    assert parse_spec("robustbench:Zhang2019Theoretically") == ("robustbench", "Zhang2019Theoretically")
    assert parse_spec("shipped:fashion14-trades-w16") == ("shipped", "fashion14-trades-w16")
    assert parse_spec("runs/teacher") == ("path", "runs/teacher")
    assert parse_spec("C:/runs/teacher.pt") == ("path", "C:/runs/teacher.pt")


def test_absent_teacher_without_download_names_the_path(tmp_path):
    with pytest.raises(UserError) as err:
        load_model("robustbench:Gowal2020Uncovering", dataset="cifar100", model_dir=tmp_path, download=False)
    assert str(tmp_path / "cifar100" / "Linf" / "Gowal2020Uncovering.pt") in one_line(err)


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_network_failure_names_the_path_and_leaves_nothing(tmp_path, monkeypatch, tiny_gowal):
    def offline(file_id, dest):
        Path(dest).write_bytes(b"partial")
        Path(f"{dest}k3x9q").write_bytes(b"partial")  # gdown keeps its own partial file beside `dest`
        raise OSError("Network is unreachable")

    monkeypatch.setattr(models, "_download", offline)
    with pytest.raises(UserError) as err:
        load_model("robustbench:Gowal2020Uncovering", dataset="cifar100", model_dir=tmp_path)
    msg = one_line(err)
    assert str(tmp_path / "cifar100" / "Linf" / "Gowal2020Uncovering.pt") in msg and "Network" in msg
    assert leftovers(tmp_path) == []


def test_missing_gdown_names_the_path(tmp_path, monkeypatch, tiny_gowal):
    monkeypatch.setitem(sys.modules, "gdown", None)  # makes `import gdown` fail even where it is installed
    with pytest.raises(UserError) as err:
        load_model("robustbench:Gowal2020Uncovering", dataset="cifar100", model_dir=tmp_path)
    msg = one_line(err)
    assert "gdown" in msg and str(tmp_path / "cifar100" / "Linf" / "Gowal2020Uncovering.pt") in msg
    assert leftovers(tmp_path) == []


def test_download_writes_into_place_and_loads(tmp_path, monkeypatch, tiny_gowal):
    calls = []

    def fake_download(file_id, dest):
        calls.append(file_id)
        assert Path(dest).parent == tmp_path / "cifar100" / "Linf"  # same folder, so the move is atomic
        assert not (tmp_path / "cifar100" / "Linf" / "Gowal2020Uncovering.pt").exists()
        torch.save(tiny_gowal.state_dict(), dest)

    monkeypatch.setattr(models, "_download", fake_download)
    teacher = load_model("robustbench:Gowal2020Uncovering", dataset="cifar100", model_dir=tmp_path)
    assert calls == ["fake-id"]
    assert_frozen_eval(teacher)
    assert_same_weights(teacher, tiny_gowal)
    assert leftovers(tmp_path) == [tmp_path / "cifar100" / "Linf" / "Gowal2020Uncovering.pt"]
    load_model("robustbench:Gowal2020Uncovering", dataset="cifar100", model_dir=tmp_path)  # present: no second download
    assert calls == ["fake-id"]


def test_downloaded_html_page_is_refused_and_removed(tmp_path, monkeypatch, tiny_gowal):
    monkeypatch.setattr(models, "_download", lambda file_id, dest: Path(dest).write_bytes(
        b"<!DOCTYPE html><html><body>Too many users have viewed or downloaded this file</body></html>"))
    with pytest.raises(UserError) as err:
        load_model("robustbench:Gowal2020Uncovering", dataset="cifar100", model_dir=tmp_path)
    assert "HTML" in one_line(err)
    assert not (tmp_path / "cifar100" / "Linf" / "Gowal2020Uncovering.pt").exists()
    assert leftovers(tmp_path) == []
