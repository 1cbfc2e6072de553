"""Training: one step per method, label-free RSLAD, exact resume, atomic saves and the guards."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rslad_kit import UserError, config, losses, models, runs, soft_labels, train
from rslad_kit.config import preset
from rslad_kit.losses import METHODS
from rslad_kit.train import TrainingDiverged, lr_at, train_step

ROOT = Path(__file__).resolve().parents[1]


def fixed_batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def smoke(method, **overrides):
    return preset("smoke", method, **overrides)


@pytest.mark.parametrize("method", list(METHODS))
def test_train_step_loss_is_finite_and_decreases(method):
    torch.manual_seed(0)
    x, y = fixed_batch()
    student = models.build("cnn-w4", 10, in_channels=1)
    teacher = models.build("cnn-w8", 10, in_channels=1).eval()
    cfg = smoke(method, teacher="unused", attack=dict(eps=0.1, step_size=0.025, steps=3),
                loss_params={"warmup": 0} if method == "iad" else {})
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    losses_seen = [train_step(student, teacher, optimizer, x, y, cfg, epoch=5, num_classes=10)["loss"].item()
                   for _ in range(25)]
    assert all(torch.isfinite(torch.tensor(losses_seen)))
    assert sum(losses_seen[-5:]) / 5 < losses_seen[0]


def test_rslad_never_reads_labels():
    x, y = fixed_batch()
    garbage = torch.randint(10**6, 10**7, y.shape)  # would crash any indexing by label
    teacher = models.build("cnn-w8", 10, in_channels=1).eval()
    cfg = smoke("rslad", teacher="unused")
    results = []
    for labels in (y, garbage):
        torch.manual_seed(0)
        student = models.build("cnn-w4", 10, in_channels=1)
        optimizer = torch.optim.SGD(student.parameters(), lr=0.05)
        torch.manual_seed(1)
        terms = train_step(student, teacher, optimizer, x, labels, cfg, num_classes=10)
        results.append(({name: value.item() for name, value in terms.items()}, student.state_dict()))
    (terms_y, weights_y), (terms_g, weights_g) = results
    assert terms_y == terms_g
    assert all(torch.equal(weights_y[k], weights_g[k]) for k in weights_y)


def test_lr_schedule_follows_rslad_milestones():
    cfg = preset("cifar10", "rslad")
    assert [lr_at(cfg, e) for e in (1, 215, 216, 260, 261, 285, 286, 300)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-4])


def test_paper_presets_carry_the_official_recipes():
    rslad = preset("cifar10", "rslad")
    assert (rslad.epochs, rslad.batch_size, rslad.lr, rslad.momentum, rslad.weight_decay) == (300, 128, 0.1, 0.9, 2e-4)
    assert rslad.attack == config.AttackConfig(eps=8 / 255, step_size=2 / 255, steps=10, random_start="normal")
    assert rslad.loss_params == {"kl_scale": 0.1} and rslad.teacher == "robustbench:Zhang2019Theoretically"
    assert preset("cifar100", "rslad").loss_params == {"kl_scale": 0.1}
    assert preset("cifar10", "ard").loss_params == {"kl_scale": 0.1}
    assert preset("cifar100", "ard").loss_params == {"kl_scale": 0.01}
    assert preset("cifar10", "ard").attack.bn_mode == "train"
    assert preset("cifar10", "trades").attack.step_size == 0.007
    assert preset("cifar10", "natural").select_by == "clean"
    assert preset("cifar100", "rslad").teacher == "robustbench:Gowal2020Uncovering"


def test_overrides_merge_and_unknown_fields_fail():
    cfg = preset("cifar10", "rslad", epochs=5, attack={"eps": 0.1}, loss_params={"alpha": 0.9})
    assert cfg.epochs == 5 and cfg.attack.eps == 0.1 and cfg.attack.steps == 10
    assert cfg.loss_params == {"kl_scale": 0.1, "alpha": 0.9}
    with pytest.raises(UserError, match="unknown config field 'epoch'"):
        preset("cifar10", "rslad", epoch=5)
    with pytest.raises(UserError, match="unknown preset"):
        preset("imagenet", "rslad")


# --- the loop, checkpoints and resume -------------------------------------------------------------

@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "teacher"
    train.train(smoke("trades", model="cnn-w8"), out, progress=False)
    return out


def test_a_run_folder_holds_config_checkpoints_and_metrics(teacher_run):
    lines = [json.loads(line) for line in (teacher_run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert {"loss", "ce_nat", "kl_adv", "val_clean", "val_pgd_trades", "lr", "seconds"} <= set(lines[0])
    for name in ("last.pt", "best.pt"):
        checkpoint = torch.load(teacher_run / name, map_location="cpu", weights_only=True)
        meta = checkpoint["meta"]
        assert meta["config"]["method"] == "trades" and meta["seed"] == 0
        assert meta["kit_version"] and meta["torch_version"] == torch.__version__
    assert runs.is_finished(teacher_run)


def test_distillation_from_a_kit_run_by_name(teacher_run):
    out = teacher_run.parent / "student"
    history = train.train(smoke("rslad", teacher="teacher"), out, progress=False)
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)


@pytest.mark.parametrize("graphs", ["off", pytest.param("step", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_resume_after_interrupt_is_bitwise_exact(tmp_path, teacher_run, monkeypatch, graphs):
    # deterministic: bitwise on a GPU as well (on a CPU it changes nothing); with the step graphed, the
    # resumed run captures its graphs in epoch 3 and must still draw the same random starts
    cfg = smoke("rslad", teacher=str(teacher_run), epochs=4, milestones=(2,), deterministic=True, cuda_graphs=graphs)
    train.train(cfg, tmp_path / "straight", progress=False)

    real_step = train.train_step
    calls = {"n": 0}

    def dies_in_epoch_3(*args, **kwargs):
        if kwargs["epoch"] == 3:
            calls["n"] += 1
            if calls["n"] == 4:
                raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train, "train_step", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train.train(cfg, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(train, "train_step", real_step)
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["epoch"] == 2
    train.train(cfg, tmp_path / "resumed", resume=True, progress=False)

    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3, 4]
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def _cli(*args, threads=1):
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return [sys.executable, "-m", "rslad_kit.cli", "--threads", str(threads), *args], env


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_gives_the_same_weights(tmp_path):
    args = ["train", "--preset", "smoke", "--method", "sat", "--epochs", "6", "--set", "model=\"cnn-w8\"",
            "--set", "deterministic=true"]
    cmd, env = _cli(*args, "--out", str(tmp_path / "straight"))
    subprocess.run(cmd, env=env, check=True, capture_output=True)

    cmd, env = _cli(*args, "--out", str(tmp_path / "killed"))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["epoch"] < 6

    cmd, env = _cli(*args, "--out", str(tmp_path / "killed"), "--resume")
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_crash_during_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    runs.save({"epoch": 1}, path)

    def torn_write(obj, f):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_write)
    with pytest.raises(OSError):
        runs.save({"epoch": 2}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 1}


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    def explodes_in_epoch_2(s_adv, y, epoch):
        loss = F.cross_entropy(s_adv, y)
        return {"ce_adv": loss * float("nan") if epoch == 2 else loss}

    monkeypatch.setitem(METHODS, "explodes", losses.Method(explodes_in_epoch_2, attack="ce"))
    with pytest.raises(TrainingDiverged, match="became nan at epoch 2.*last good checkpoint \\(epoch 1\\)"):
        train.train(smoke("explodes"), tmp_path, progress=False)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1


# --- bad input: one line, non-zero exit, nothing written ------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--preset", "smoke", "--method", "rslad"], "distils from a teacher but none was given"),
    (["--preset", "smoke", "--method", "dropout"], "unknown method 'dropout'"),
    (["--preset", "imagenet", "--method", "sat"], "unknown preset 'imagenet'"),
    (["--preset", "smoke", "--method", "sat", "--resume"], "no checkpoint in"),
    (["--preset", "smoke", "--method", "sat", "--set", "attack.eps=2"], "eps must lie in"),
    (["--preset", "smoke", "--method", "sat", "--set", "model=\"vgg\""], "unknown model 'vgg'"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    cmd, env = _cli("train", *args, "--out", str(out))
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_teacher_with_other_class_count_is_refused(tmp_path):
    teacher = models.build("cnn-w4", 100, in_channels=1)
    torch.save(teacher.state_dict(), tmp_path / "t100.pt")
    cfg = smoke("rslad", teacher=str(tmp_path / "t100.pt"), teacher_model="cnn-w4")
    with pytest.raises(UserError, match="does not fit.*linear.weight \\(100, 16\\) in file"):
        train.train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_bare_state_dict_teacher_needs_its_architecture(tmp_path):
    torch.save(models.build("cnn-w4", 10, in_channels=1).state_dict(), tmp_path / "t.pt")
    with pytest.raises(UserError, match="bare state dict"):
        train.train(smoke("rslad", teacher=str(tmp_path / "t.pt")), tmp_path / "run", progress=False)
    history = train.train(smoke("rslad", teacher=str(tmp_path / "t.pt"), teacher_model="cnn-w4"),
                          tmp_path / "run", progress=False)
    assert len(history) == 2


def test_starting_over_an_existing_run_is_refused(teacher_run):
    with pytest.raises(UserError, match="already holds a run"):
        train.train(smoke("trades", model="cnn-w8"), teacher_run, progress=False)


def test_resume_with_other_settings_is_refused(teacher_run):
    with pytest.raises(UserError, match="different settings \\(lr\\)"):
        train.train(smoke("trades", model="cnn-w8", lr=0.5), teacher_run, resume=True, progress=False)


def test_ssl_needs_no_teacher_and_uses_smoothed_labels():
    cfg = smoke("rslad", soft_labels="smooth", smoothing=0.2)
    assert not losses.loads_teacher(cfg)
    y = torch.tensor([0, 3])
    p = F.softmax(soft_labels.soft_labels(cfg, None, torch.zeros(2, 1, 8, 8), y, 10), dim=1)
    assert torch.allclose(p[0, 0], torch.tensor(0.82)) and torch.allclose(p[0, 1], torch.tensor(0.02))


def test_ablation_swaps_the_inner_objective():
    cfg = smoke("ard", objective="kl_teacher", teacher="t")
    assert losses.loads_teacher(cfg)
    with pytest.raises(UserError, match="unknown inner objective"):
        train.check_config(replace(cfg, objective="kl_magic"))
