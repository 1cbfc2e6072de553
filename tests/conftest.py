import os

import pytest
import torch
from torch import Tensor

from rslad_kit import gpu
from rslad_kit.graphs import GraphCache

# cuBLAS reads this when CUDA starts; tests that train with deterministic=True after another test has
# started CUDA need it set already (rslad_kit.gpu.set_deterministic).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", gpu.CUBLAS_WORKSPACE)
torch.set_num_threads(1)


# A CUDA graph replays its recorded kernels, overwriting its static outputs in place. `eager_record`
# stands in for graphs.GraphCache._record (the warm-up and the capture) with exactly that contract, by
# running the function again at each replay and copying its results into the first run's outputs. Its
# warm-up runs the function as a real one does (drawing random starts, moving BatchNorm's statistics),
# so what GraphCache._capture does around it (the forked generator, the statistics put back) is
# tested here too. It cannot check what only CUDA can (no host sync inside a capture, the allocator);
# it does check which graph runs when, that the gradients `.grad` points at after a replay are that
# replay's, and that the graphed step computes what the eager one does.

def _copy_into(out, new):
    if isinstance(out, Tensor):
        out.copy_(new)
    elif isinstance(out, dict):
        for k in out:
            _copy_into(out[k], new[k])
    else:
        for a, b in zip(out, new):
            _copy_into(a, b)


def eager_record(self, fn, static, reset):
    reset()
    for _ in range(self.warmup):
        fn(**static)
    reset()
    out = fn(**static)   # the outputs' memory, as a capture allocates it

    def replay():   # writes the outputs in place and, like a real replay, leaves every `.grad` binding alone
        bound = [(p, p.grad) for p in self.model.parameters()]
        reset()
        _copy_into(out, fn(**static))
        for p, grad in bound:
            p.grad = grad
    return replay, out


@pytest.fixture
def graphs_on_cpu(monkeypatch):
    """CUDA graphs' bookkeeping on a CPU: GraphCache captures with `eager_record`."""
    monkeypatch.setattr(GraphCache, "_record", eager_record)
