"""The training attack replayed from CUDA graphs (`TrainConfig.cuda_graphs`).

At the paper's batch of 128 a GPU spends most of an RSLAD step waiting on Python and kernel launches.
A CUDA graph records the whole PGD loop once (forwards, input gradients, sign steps, projections and
the random start) and replays it with one launch: on an H100 the attack went from 66.6 to 26.9 ms
(bf16 + channels_last) and from 63.5 to 44.3 ms (fp32) (reference measurements, docs/benchmarks.md).

A graph replays fixed shapes from fixed memory, so each batch is copied into static tensors, and each
input shape gets its own graph: the epoch's last, smaller batch is captured once more (no batch is
dropped). The model's weights are read in place, so the optimiser's updates are seen by every replay.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from rslad_kit import attacks as atk
from rslad_kit.config import AttackConfig

ObjectiveFactory = Callable[[Tensor, Tensor, "Tensor | None"], atk.Objective]


class GraphedPGD:
    """`attack(x, y, t_nat) -> x_adv`: PGD with `objective(x, y, t_nat)`, replayed from CUDA graphs."""

    def __init__(self, model: nn.Module, attack: AttackConfig, objective: ObjectiveFactory, *,
                 bf16: bool = False, warmup: int = 3) -> None:
        self.model, self.attack, self.objective = model, attack, objective
        self.bf16, self.warmup = bf16, warmup
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict[str, Tensor | None], Tensor]] = {}

    def __call__(self, x: Tensor, y: Tensor, t_nat: Tensor | None) -> Tensor:
        atk.check_images(x)   # host sync: outside the graph
        key = (tuple(x.shape), x.dtype, x.is_contiguous(memory_format=torch.channels_last), t_nat is None)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x, y, t_nat)
        graph, static, out = self.graphs[key]
        for name, value in (("x", x), ("y", y), ("t_nat", t_nat)):
            if value is not None:
                static[name].copy_(value)
        graph.replay()
        return out.clone()   # the next replay overwrites `out`

    def _run(self, static: dict[str, Tensor | None]) -> Tensor:
        a = self.attack
        # cache_enabled=False: autocast's cache of bf16 weights would be frozen into the graph
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False):
            objective = self.objective(static["x"], static["y"], static["t_nat"])
            return atk.pgd_steps(self.model, static["x"], objective, eps=a.eps, step_size=a.step_size,
                                 steps=a.steps, random_start=a.random_start)

    def _capture(self, x: Tensor, y: Tensor, t_nat: Tensor | None):
        static = {"x": x.clone(), "y": y.clone(), "t_nat": None if t_nat is None else t_nat.clone()}
        was_training = self.model.training
        buffers = {name: b.clone() for name, b in self.model.named_buffers()}
        self.model.train(self.attack.bn_mode == "train")
        try:
            # Warm up on a side stream (cuDNN and autograd allocate lazily), as torch.cuda.graph requires.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self._run(static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._run(static)
        finally:
            self.model.train(was_training)
            with torch.no_grad():   # train-mode warm-up moved BatchNorm's running stats: put them back
                for name, b in self.model.named_buffers():
                    b.copy_(buffers[name])
        return graph, static, out
