"""rslad-kit: adversarial robustness distillation (RSLAD, ICCV'21) for the classroom and the lab.

The flat API, one import line for a script:

    from rslad_kit import config, data, evaluate, figures, load_model, reproduce, train

* `load_model(spec, ...)`: a model from a checkpoint, a run folder or run name, `shipped:<name>` or
  `robustbench:<name>` (rslad_kit/loading.py, the one place that loads models);
* `train.train(cfg, out)`, `evaluate.evaluate(model, split, attacks, eps=...)`, `reproduce.run(preset)`
  and `figures` (every figure, drawn from data, e.g. `figures.eps_curves(...)`): modules, not
  functions, because each shares its name with the module that holds it, and a function here would be
  shadowed by the module as soon as the module is imported; a module also keeps its helpers one dot
  away (`train.train_step`, `evaluate.ATTACKS`);
* `config.preset(name, method)` and `data.load(name)`: the settings and the data.

Names are imported on first use, so `import rslad_kit` stays cheap (no torch) and no floor imports a
higher one through this file.
"""

from __future__ import annotations

import importlib
from typing import Any

from rslad_kit.errors import UserError

__version__ = "0.1.0"

_MODULES = ("config", "data", "evaluate", "figures", "reproduce", "train")
_FUNCTIONS = {"load_model": "rslad_kit.loading"}

__all__ = ["UserError", "__version__", "load_model", *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(_FUNCTIONS[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"rslad_kit.{name}")
    raise AttributeError(f"module 'rslad_kit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
