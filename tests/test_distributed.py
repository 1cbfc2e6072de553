"""Data parallelism: torchrun with gloo on a CPU against one process with the same global batch."""

import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from rslad_kit import UserError, data, train
from rslad_kit import distributed as dist_lib
from rslad_kit.config import preset
from rslad_kit.models import build


def test_the_shards_of_every_rank_make_up_the_global_batch():
    split = data.load("digits").train
    loader = data.TensorLoader(split, 50, augment=True, padding=1, seed=3)
    whole = list(loader.epoch(2))
    ranks = [list(dist_lib.shard(loader.epoch(2), dist_lib.Context(rank, 3, rank))) for rank in range(3)]
    for i, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([r[i][0] for r in ranks]), x)
        assert torch.equal(torch.cat([r[i][1] for r in ranks]), y)


def _flat(state):
    return torch.cat([v.flatten() for k, v in state.items() if v.is_floating_point() and "running" not in k])


def test_two_gloo_processes_reach_the_weights_of_one_process(tmp_path):
    cfg = preset("smoke", "trades", epochs=1)
    args = ["train", "--preset", "smoke", "--method", "trades", "--epochs", "1", "--out", str(tmp_path / "two")]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    errors = []
    for _ in range(2):
        # One retry: in 1 of 3 full CI runs (2 cores, both pytest workers busy) torchrun exited 1, before its stderr was
        # kept; a second failure fails the test with both stderr tails.
        shutil.rmtree(tmp_path / "two", ignore_errors=True)
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                               "2", "-m", "rslad_kit", "--threads", "1", *args], env=env, capture_output=True,
                              text=True, timeout=300)
        if done.returncode == 0:
            break
        errors.append(done.stderr[-3000:])
    assert done.returncode == 0, "\n----\n".join(errors)
    if errors:
        warnings.warn(f"torchrun failed once, then passed; its stderr: {errors[0][-1500:]}")
    train.train(cfg, tmp_path / "one", progress=False)

    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    # Not bitwise: each rank's BatchNorm normalises its half of the batch with that half's statistics
    # (as nn.DataParallel does), and the ranks draw their own random starts. So the gap is measured
    # against how far the epoch moved the weights: 0.16 here, and 0.38 with DDP's wrapper removed (each
    # rank trains alone on its half of each batch, no gradient averaging), which this bound fails.
    torch.manual_seed(cfg.seed)
    start = _flat(build(cfg.model, 10, in_channels=1).state_dict())
    update = (_flat(one["model"]) - start).norm()
    assert (_flat(one["model"]) - _flat(two["model"])).norm() / update < 0.25
    # The logged loss is the mean over the whole epoch, summed over both ranks.
    assert two["history"][0]["loss"] == pytest.approx(one["history"][0]["loss"], rel=0.02)
    assert {"val_clean", "val_pgd_trades"} <= set(two["history"][0])


def test_a_last_batch_smaller_than_the_process_count_is_refused():
    ctx = dist_lib.Context(0, 4, 0)
    dist_lib.check_batches(1_000, 128, ctx)          # last batch: 104 images
    with pytest.raises(UserError, match="last batch has 2"):
        dist_lib.check_batches(258, 128, ctx)
