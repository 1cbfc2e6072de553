"""GPU switches: deterministic kernels, CUDA graphs (attack and whole step), channels_last, workers per GPU.

The CUDA tests skip on a machine without a GPU; the rest check the switches' contracts on a CPU.
"""

import os
from dataclasses import replace

import pytest
import torch

from rslad_kit import UserError, cli, gpu, train
from rslad_kit import attacks as atk
from rslad_kit.config import AttackConfig, from_dict, preset, to_dict
from rslad_kit.distributed import Context
from rslad_kit.graphs import GraphedPGD
from rslad_kit.losses import METHODS
from rslad_kit.models import build

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def batch(n=32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device)


def test_deterministic_fixes_the_kernels_and_off_lets_cudnn_autotune():
    try:
        gpu.set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
    finally:
        gpu.set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    assert torch.backends.cudnn.benchmark   # fixed shapes: autotuning pays when results need not repeat


@pytest.mark.parametrize("scope", ["attack", "step"])
def test_cuda_graphs_without_cuda_is_one_line(tmp_path, scope):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match=f"cuda_graphs={scope} needs a CUDA device"):
        train.train(preset("smoke", "sat", cuda_graphs=scope), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_cuda_graphs_names_its_choices(tmp_path):
    with pytest.raises(UserError, match="use 'off', 'attack'"):
        train.train(preset("smoke", "sat", cuda_graphs="yes"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_config_saved_with_a_boolean_cuda_graphs_still_loads():
    saved = to_dict(preset("smoke", "sat")) | {"cuda_graphs": True}
    assert from_dict(saved).cuda_graphs == "attack"
    assert from_dict(saved | {"cuda_graphs": False}).cuda_graphs == "off"


def test_step_graphs_under_torchrun_are_refused(tmp_path, monkeypatch):
    """DDP's all-reduce runs inside the backward; a captured step would replay it blind."""
    monkeypatch.setattr(train.dist_lib, "setup", lambda device: (Context(0, 2, 0), device))
    with pytest.raises(UserError, match="under torchrun use --set cuda_graphs=attack"):
        train.train(preset("smoke", "sat", cuda_graphs="step"), tmp_path / "run", progress=False)


@pytest.mark.parametrize("running", [True, False])
def test_mps_note_is_one_line_and_says_whether_mps_runs(running, monkeypatch, tmp_path):
    monkeypatch.setattr(gpu, "MPS_PIPE_DIR", tmp_path)
    if running:
        (tmp_path / "control").touch()   # the daemon's control pipe
    note = gpu.mps_note(4)
    assert "\n" not in note and ("is running" in note) == running and "4 workers" in note


def test_deterministic_sets_cublas_workspace_before_cuda_starts_and_refuses_after(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(UserError, match="export CUBLAS_WORKSPACE_CONFIG"):
        gpu.set_deterministic(True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    try:
        gpu.set_deterministic(True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == gpu.CUBLAS_WORKSPACE
    finally:
        gpu.set_deterministic(False)


@pytest.mark.parametrize("graphs", ["off", "step"])
@pytest.mark.parametrize("method", [m for m in METHODS if METHODS[m].needs_teacher])
def test_teacher_sees_the_clean_batch_once_per_step(method, graphs, graphs_on_cpu):
    """The soft labels on the clean batch are shared by the attack and the loss, on the eager path and
    in a graphed step (its capture, stood in for on a CPU, is the first step's; the second is counted)."""
    x, y = batch()
    calls = []
    teacher = build("cnn-w4", 10, in_channels=1).eval().requires_grad_(False)
    teacher.register_forward_hook(lambda m, inputs, out: calls.append(torch.equal(inputs[0], x)))
    student = build("cnn-w4", 10, in_channels=1)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    cfg = preset("smoke", method, teacher="t", cuda_graphs=graphs)
    _, graph = train.make_graphs(cfg, student, teacher, num_classes=10)
    for step in range(2):
        calls.clear()
        train.train_step(student, teacher, optimizer, x, y, cfg, num_classes=10, graph=graph)
    assert calls.count(True) == 1   # (IAD also reads the teacher on x_adv)


# --- the graphs' bookkeeping, on a CPU (`graphs_on_cpu` in conftest.py stands in for the capture) ----

@pytest.mark.parametrize("method", list(METHODS))
def test_graphed_step_bookkeeping_matches_eager_steps(method, graphs_on_cpu):
    # no random start: a capture draws its random numbers in another order than the eager path
    cfg = preset("smoke", method, teacher="t", attack={"random_start": "none"}, cuda_graphs="step")
    teacher = _student("cpu").eval().requires_grad_(False) if METHODS[method].needs_teacher else None
    eager, graphed = _student("cpu"), _student("cpu")
    opt_eager, opt_graphed = (torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (eager, graphed))
    _, graph = train.make_graphs(cfg, graphed, teacher, num_classes=10)
    for seed, n, epoch in ((0, 32, 1), (1, 32, 1), (2, 7, 1), (3, 32, 1), (4, 32, 100), (5, 7, 100)):
        x, y = batch(n, "cpu", seed)
        a = train.train_step(eager, teacher, opt_eager, x, y, cfg, epoch=epoch, num_classes=10)
        b = train.train_step(graphed, teacher, opt_graphed, x, y, cfg, epoch=epoch, num_classes=10, graph=graph)
        assert a == b, (seed, epoch)
    for (name, p), q in zip(eager.state_dict().items(), graphed.state_dict().values()):
        assert torch.equal(p, q), name
    # a full and a last batch per epoch; IAD reads the epoch, so its first epoch's graphs were freed
    assert len(graph.graphs) == 2


def test_graphed_attack_bookkeeping_matches_eager_pgd(graphs_on_cpu):
    model = _student("cpu")
    a = AttackConfig(eps=0.2, step_size=0.08, steps=5, random_start="none")
    graphed = GraphedPGD(model, a, lambda x, y, t: atk.ce(y))
    for seed, n in ((0, 32), (1, 32), (2, 7)):
        x, y = batch(n, "cpu", seed)
        eager = atk.pgd(model, x, atk.ce(y), eps=a.eps, step_size=a.step_size, steps=a.steps, random_start="none")
        assert torch.equal(graphed(x, y, None), eager)
    assert len(graphed.graphs) == 2 and model.training


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
def test_graphed_steps_with_random_starts_resume_bitwise(device, request):
    """`train` reseeds every epoch from (seed, epoch); a resumed run captures its graphs in the epoch it
    resumes in, an uninterrupted one in epoch 1, so the capture's warm-up must not move the generator
    the replays draw their random starts from. On a CPU the capture is stood in for (eager_record);
    on a GPU it is real, with deterministic kernels."""
    if device == "cpu":
        request.getfixturevalue("graphs_on_cpu")
    cfg = preset("smoke", "rslad", teacher="t", attack={"random_start": "uniform"}, cuda_graphs="step")
    teacher = _student(device).eval().requires_grad_(False)
    batches = [batch(n, device, seed) for seed, n in ((0, 32), (1, 32), (2, 7))]   # the last one smaller

    def train_epochs(student, optimizer, epochs):
        _, graph = train.make_graphs(cfg, student, teacher, num_classes=10)   # a new process: new graphs
        for epoch in epochs:
            torch.manual_seed(epoch)
            for x, y in batches:
                train.train_step(student, teacher, optimizer, x, y, cfg, epoch=epoch, num_classes=10, graph=graph)

    def sgd(model):
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    gpu.set_deterministic(device == "cuda")
    try:
        straight, interrupted, resumed = _student(device), _student(device), _student(device)
        train_epochs(straight, sgd(straight), [1, 2, 3])
        opt = sgd(interrupted)
        train_epochs(interrupted, opt, [1])
        resumed.load_state_dict(interrupted.state_dict())   # what last.pt carries
        opt_resumed = sgd(resumed)
        opt_resumed.load_state_dict(opt.state_dict())
        train_epochs(resumed, opt_resumed, [2, 3])
    finally:
        gpu.set_deterministic(False)
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name


# --- on a GPU --------------------------------------------------------------------------------------

def _student(device):
    torch.manual_seed(0)
    return build("cnn-w4", 10, in_channels=1).to(device)


@cuda
def test_graphed_attack_equals_eager_in_fp32_with_deterministic_kernels():
    gpu.set_deterministic(True)
    try:
        model, (x, y) = _student("cuda"), batch(device="cuda")
        a = AttackConfig(eps=0.2, step_size=0.08, steps=5, random_start="none")
        graphed = GraphedPGD(model, a, lambda x, y, t: atk.ce(y))
        eager = atk.pgd(model, x, atk.ce(y), eps=a.eps, step_size=a.step_size, steps=a.steps, random_start="none")
        assert torch.equal(graphed(x, y, None), eager)
        x2, y2 = batch(device="cuda", seed=1)   # a new batch through the same graph
        eager2 = atk.pgd(model, x2, atk.ce(y2), eps=a.eps, step_size=a.step_size, steps=a.steps, random_start="none")
        assert torch.equal(graphed(x2, y2, None), eager2)
        x3, y3 = x2[:7], y2[:7]                 # the epoch's last, smaller batch: its own graph
        eager3 = atk.pgd(model, x3, atk.ce(y3), eps=a.eps, step_size=a.step_size, steps=a.steps, random_start="none")
        assert torch.equal(graphed(x3, y3, None), eager3) and len(graphed.graphs) == 2
    finally:
        gpu.set_deterministic(False)


@cuda
def test_graphed_attack_in_bf16_stays_in_the_ball_and_near_eager():
    model, (x, y) = _student("cuda"), batch(device="cuda")
    a = AttackConfig(eps=0.2, step_size=0.08, steps=5)   # Gaussian start, drawn inside the graph
    x_adv = GraphedPGD(model, a, lambda x, y, t: atk.ce(y), bf16=True)(x, y, None)
    assert (x_adv - x).abs().max() <= a.eps + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager = atk.pgd(model, x, atk.ce(y), eps=a.eps, step_size=a.step_size, steps=a.steps, random_start="normal")
    # bf16 sign steps flip where a gradient is near zero; most pixels land on the same corner
    assert (x_adv - eager).abs().le(1e-3).float().mean() > 0.8


@cuda
@pytest.mark.parametrize("method", list(METHODS))
def test_graphed_step_matches_eager_steps_in_fp32_with_deterministic_kernels(method):
    """Full batches, the epoch's last smaller one (its own graph), and a later epoch (IAD's warm-up
    ends: its graphs are captured anew). Same kernels in both paths, so the weights should agree to
    the last bit; the tolerance only allows for a different summation order in a replayed kernel."""
    gpu.set_deterministic(True)
    try:
        cfg = preset("smoke", method, teacher="t", attack={"random_start": "none"}, cuda_graphs="step")
        teacher = _student("cuda").eval().requires_grad_(False) if METHODS[method].needs_teacher else None
        eager, graphed = _student("cuda"), _student("cuda")
        opt_eager, opt_graphed = (torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (eager, graphed))
        _, graph = train.make_graphs(cfg, graphed, teacher, num_classes=10)
        for seed, n, epoch in ((0, 32, 1), (1, 32, 1), (2, 7, 1), (3, 32, 100)):
            x, y = batch(n, "cuda", seed)
            a = train.train_step(eager, teacher, opt_eager, x, y, cfg, epoch=epoch, num_classes=10)
            b = train.train_step(graphed, teacher, opt_graphed, x, y, cfg, epoch=epoch, num_classes=10, graph=graph)
            assert a.keys() == b.keys()
            torch.testing.assert_close(torch.stack(list(b.values())), torch.stack(list(a.values())),
                                       rtol=1e-5, atol=1e-6)
        for (name, p), q in zip(eager.state_dict().items(), graphed.state_dict().values()):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    finally:
        gpu.set_deterministic(False)


@cuda
@pytest.mark.parametrize("scope", ["attack", "step"])
@pytest.mark.parametrize("bf16", [False, True])
def test_training_with_graphs_and_channels_last_runs(tmp_path, scope, bf16, monkeypatch):
    made = _spy_on_graphs(monkeypatch)
    cfg = preset("smoke", "trades", cuda_graphs=scope, channels_last=True, bf16=bf16, device="cuda")
    history = train.train(cfg, tmp_path / "run", progress=False)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert len(made) == 1 and len(made[0].graphs) >= 1   # the run went through the graphs


def _spy_on_graphs(monkeypatch) -> list:
    """The graphs `train` builds (GraphedPGD or GraphedStep), to check a run really replayed them."""
    made, build = [], train.make_graphs

    def spy(*args, **kwargs):
        attack, step = build(*args, **kwargs)
        made.append(attack or step)
        return attack, step

    monkeypatch.setattr(train, "make_graphs", spy)
    return made


@cuda
def test_distilling_through_train_with_a_step_graph(tmp_path, monkeypatch):
    """RSLAD from a teacher run folder, the whole step graphed: the loss stays finite and falls."""
    train.train(preset("smoke", "trades", device="cuda"), tmp_path / "teacher", progress=False)
    made = _spy_on_graphs(monkeypatch)
    cfg = preset("smoke", "rslad", teacher=str(tmp_path / "teacher"), cuda_graphs="step", device="cuda")
    history = train.train(replace(cfg, epochs=max(cfg.epochs, 3)), tmp_path / "run", progress=False)
    losses = [h["loss"] for h in history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert (tmp_path / "run" / "best.pt").is_file() and len(made[0].graphs) >= 1


@pytest.mark.parametrize("inherited, names", [
    (None, ["0", "1", "0", "1", "0"]),
    ("3,5", ["3", "5", "3", "5", "3"]),   # Slurm or a shared node gave this process GPUs 3 and 5
    ("MIG-a1, MIG-b2,MIG-c3", ["MIG-a1", "MIG-b2", "MIG-a1", "MIG-b2", "MIG-a1"]),   # 2 of them counted
])
def test_workers_spread_over_the_visible_gpus_round_robin(monkeypatch, inherited, names):
    seen = []
    for slot in range(1, 6):
        if inherited is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", inherited)   # each worker inherits the parent's list
        gpu.pin_worker(slot, 2)
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == names


@pytest.mark.parametrize("command", ["reproduce", "teacher-study"])
def test_workers_per_gpu_without_a_gpu_is_one_line(tmp_path, capsys, command):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = cli.main([command, "--preset", "smoke", "--out", str(tmp_path), "--workers-per-gpu", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "--workers-per-gpu needs CUDA" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_workers_per_gpu_below_one_is_one_line(tmp_path, capsys):
    code = cli.main(["reproduce", "--preset", "smoke", "--out", str(tmp_path), "--workers-per-gpu", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "pass a whole number >= 1" in err and not any(tmp_path.iterdir())
