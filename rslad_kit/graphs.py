"""Training replayed from CUDA graphs (`TrainConfig.cuda_graphs`): the attack alone, or the whole step.

At the paper's batch of 128 a GPU spends most of an RSLAD step waiting on Python and kernel launches.
A CUDA graph records a stretch of GPU work once and replays it with one launch. On an H100 (reference
measurements, docs/benchmarks.md): the PGD-10 attack alone went from 66.6 to 26.9 ms in bf16 +
channels_last; the whole step (teacher forward, attack, outer forwards and backward) from 1,657 to
3,355 images/s.

* `cuda_graphs="attack"`: `GraphedPGD` replays the attack; the outer step runs eagerly.
* `cuda_graphs="step"`: `GraphedStep` replays everything up to the gradients; the optimiser then
  steps eagerly, so the learning-rate schedule needs no graph of its own.

A graph replays fixed shapes from fixed memory: each batch is copied into static tensors, and each
input shape gets its own graph (the epoch's last, smaller batch is captured once more; no batch is
dropped). Weights are read in place, so every replay sees the optimiser's latest update. Nothing in a
graph may sync with the host, which is why the input checks run before each replay (or, in `train`,
once on the whole training split). A replay draws its random starts from the global generator as it
stands, and the warm-up before a capture draws in a forked generator, so a run that captures its
graphs later (a resumed one) draws the same numbers as one that captured them earlier.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable

import torch
from torch import Tensor, nn

from rslad_kit import attacks as atk
from rslad_kit.config import AttackConfig

ObjectiveFactory = Callable[[Tensor, Tensor, "Tensor | None"], atk.Objective]
Attack = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


def capturable_attack(model: nn.Module, attack: AttackConfig, objective: ObjectiveFactory, *,
                      bf16: bool = False) -> Attack:
    """`attack(x, y, t_nat) -> x_adv`: the training PGD, without the input check a capture cannot hold."""
    def run(x: Tensor, y: Tensor, t_nat: Tensor | None = None) -> Tensor:
        # cache_enabled=False: autocast's cache of bf16 weights must not outlive a capture
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
            return atk.pgd(model, x, objective(x, y, t_nat), eps=attack.eps, step_size=attack.step_size,
                           steps=attack.steps, random_start=attack.random_start, bn_mode=attack.bn_mode,
                           check=False)
    return run


class GraphCache:
    """CUDA graphs of a function of named tensors, one per key, each with its own static inputs."""

    def __init__(self, model: nn.Module, warmup: int = 3) -> None:
        self.model, self.warmup = model, warmup
        # key -> (replay, static inputs, static outputs)
        self.graphs: dict[Hashable, tuple[Callable[[], None], dict[str, Tensor], Any]] = {}

    def __len__(self) -> int:
        return len(self.graphs)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.graphs

    def keep(self, wanted: Callable[[Hashable], bool]) -> None:
        """Free the graphs whose key is not `wanted`."""
        self.graphs = {key: entry for key, entry in self.graphs.items() if wanted(key)}

    def replay(self, key: Hashable, fn: Callable[..., Any], inputs: dict[str, Tensor],
               reset: Callable[[], None] = lambda: None) -> Any:
        """Copy `inputs` into the static tensors of graph `key` (captured from `fn(**inputs)` if new),
        replay it, and return its static outputs (overwritten by the next replay). `reset()` runs
        before the warm-up and again before the capture."""
        if key not in self.graphs:
            self.graphs[key] = self._capture(fn, inputs, reset)
        replay, static, out = self.graphs[key]
        for name, value in inputs.items():
            static[name].copy_(value)
        replay()
        return out

    def _capture(self, fn: Callable[..., Any], inputs: dict[str, Tensor], reset: Callable[[], None]):
        static = {name: value.clone() for name, value in inputs.items()}
        buffers = {name: b.clone() for name, b in self.model.named_buffers()}
        device = next(iter(inputs.values())).device
        try:
            # The warm-up draws random starts like a step: without the fork, the steps after a capture
            # would draw other numbers, and a resumed run (which captures in another epoch) would
            # not repeat the uninterrupted one. A replay draws from the generator as it is then.
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                replay, out = self._record(fn, static, reset)
        finally:
            with torch.no_grad():   # train-mode warm-ups moved BatchNorm's running stats: put them back
                for name, b in self.model.named_buffers():
                    b.copy_(buffers[name])
        return replay, static, out

    def _record(self, fn: Callable[..., Any], static: dict[str, Tensor], reset: Callable[[], None]):
        """(replay, outputs): `fn(**static)` warmed up, then recorded into a CUDA graph."""
        # Warm up on a side stream (cuDNN and autograd allocate lazily), as torch.cuda.graph requires.
        reset()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                fn(**static)
        torch.cuda.current_stream().wait_stream(side)
        reset()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):   # records; nothing runs until a replay
            out = fn(**static)
        return graph.replay, out


def signature(x: Tensor) -> tuple:
    """What a graph of a batch is fixed to: shape, dtype and memory format."""
    return tuple(x.shape), x.dtype, x.is_contiguous(memory_format=torch.channels_last)


class GraphedPGD:
    """`attack(x, y, t_nat) -> x_adv`: PGD with `objective(x, y, t_nat)`, replayed from CUDA graphs.

    `check=False` skips the check that `x` lies in [0,1], which makes the host wait for the device
    at every call: for callers that checked their images once (`train` checks the whole split).
    """

    def __init__(self, model: nn.Module, attack: AttackConfig, objective: ObjectiveFactory, *,
                 bf16: bool = False, warmup: int = 3, check: bool = True) -> None:
        self.run = capturable_attack(model, attack, objective, bf16=bf16)
        self.graphs = GraphCache(model, warmup)
        self.check = check

    def __call__(self, x: Tensor, y: Tensor, t_nat: Tensor | None) -> Tensor:
        if self.check:
            atk.check_images(x)   # syncs with the host: outside the graph
        inputs = {"x": x, "y": y} | ({} if t_nat is None else {"t_nat": t_nat})
        out = self.graphs.replay((signature(x), t_nat is None), self.run, inputs)
        return out.clone()   # the next replay overwrites `out`


class GraphedStep:
    """`step(x, y, epoch) -> terms`: a training step's forwards and backward, replayed from CUDA graphs.

    `terms(x, y, epoch)` returns the step's loss terms (soft labels, attack, outer loss) and must be
    capturable (train.make_graphs builds it with `capturable_attack`). After each replay the batch's
    gradients are in the parameters' `.grad`, ready for an eager `optimizer.step()`. Do not zero them
    in between: each graph writes its gradients into tensors of its own, and `.grad` is pointed at
    them after its replay. `reads_epoch`: the terms depend on the epoch (IAD's warm-up), so each
    epoch is captured anew and the previous epoch's graphs are freed. `check`: as for GraphedPGD.
    """

    def __init__(self, model: nn.Module, terms: Callable[[Tensor, Tensor, int], dict[str, Tensor]], *,
                 reads_epoch: bool = False, warmup: int = 3, check: bool = True) -> None:
        self.terms, self.reads_epoch, self.check = terms, reads_epoch, check
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.graphs = GraphCache(model, warmup)

    def __call__(self, x: Tensor, y: Tensor, epoch: int) -> dict[str, Tensor]:
        if self.check:
            atk.check_images(x)   # syncs with the host: outside the graph
        key = (signature(x), epoch if self.reads_epoch else None)
        if self.reads_epoch and key not in self.graphs:
            self.graphs.keep(lambda k: k[1] == epoch)

        def forward_backward(x: Tensor, y: Tensor) -> tuple[dict[str, Tensor], list[Tensor | None]]:
            terms = self.terms(x, y, epoch)
            sum(terms.values()).backward()
            return terms, [p.grad for p in self.params]

        def fresh_gradients() -> None:   # the capture then allocates its own .grad: a write, not an add
            for p in self.params:
                p.grad = None

        terms, grads = self.graphs.replay(key, forward_backward, {"x": x, "y": y}, reset=fresh_gradients)
        for p, grad in zip(self.params, grads):
            p.grad = grad
        return {name: value.clone() for name, value in terms.items()}
