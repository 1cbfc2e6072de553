"""benchmarks/gpu_check.sh and the parts of benchmarks/speed.py it runs, as far as a CPU can check them."""

import multiprocessing
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rslad_kit.config import preset
from rslad_kit.models import build

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import speed  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def first_one_killed(counter, barrier, queue):
    """A worker of `speed.run_workers`: the first to start is killed before the barrier."""
    with counter.get_lock():
        counter.value += 1
        first = counter.value == 1
    if first:
        os.kill(os.getpid(), signal.SIGKILL)
    barrier.wait(speed.BARRIER_TIMEOUT)
    queue.put(1.0)


def test_a_worker_killed_before_the_barrier_ends_the_run_with_one_line():
    context = multiprocessing.get_context("fork")   # the target lives in this test module
    counter = context.Value("i", 0)
    with pytest.raises(SystemExit) as stop:
        speed.run_workers(first_one_killed, (counter,), 3, timeout=120, context=context)
    message = str(stop.value)
    assert "exited with code -9 before reporting its rate" in message and "\n" not in message


def test_workers_that_all_report_give_their_numbers():
    def reports(barrier, queue):
        barrier.wait(speed.BARRIER_TIMEOUT)
        queue.put(2.5)

    assert speed.run_workers(reports, (), 2, timeout=120, context=multiprocessing.get_context("fork")) == [2.5, 2.5]


def test_graphed_vs_eager_is_bitwise_in_fp32_with_the_capture_stood_in_for(graphs_on_cpu, monkeypatch):
    """`speed.agree`'s comparison, on small models (cnn-w4 for both) and on a CPU: a graph that
    computes what eager does gives bitwise-equal weights and zero gaps."""
    monkeypatch.setattr(speed, "fresh", lambda name, device="cpu": _small(device))
    cfg = preset("cifar10", "rslad", teacher="x", batch_size=16)
    cfg = replace(cfg, attack=replace(cfg.attack, random_start="none", steps=2), cuda_graphs="step")
    result = speed.graphed_vs_eager(cfg, 2, torch.device("cpu"))
    assert result["bitwise"] and result["loss"] == result["weights"] == 0
    assert result["noise loss"] == result["noise weights"] == 0


def _small(device):
    torch.manual_seed(0)
    return build("cnn-w4", 10, in_channels=3).to(device)


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


@pytest.mark.slow
def test_the_dry_run_runs_every_step_but_the_cuda_ones_and_writes_a_short_summary(tmp_path):
    out = tmp_path / "gpu-check"
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env=os.environ | {"GPU_CHECK_PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = (out / "summary.txt").read_text().splitlines()
    assert 5 <= len(summary) <= 14 and summary == done.stdout.strip().splitlines()[-len(summary):]
    assert any("dry run" in line for line in summary)
    assert {p.name for p in out.iterdir()} >= {"summary.txt", "install.log", "tests.log", "speed.log"}
