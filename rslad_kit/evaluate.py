"""Robustness evaluation: accuracy under each attack, as one JSON-serialisable results row.

The row checks itself and records what it found in `row["warnings"]` (and prints each warning):
the model was in train mode, its outputs look like probabilities, a perturbation left the eps-ball,
or one of the gradient-masking checks fired (`masking_checks`: each compares accuracies the row
already has, and `row["masking_checks"]` lists every check that could run, fired or not).

Taught in notebooks/02_attacks.ipynb.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from rslad_kit import attacks as atk
from rslad_kit import runs
from rslad_kit.data import Split
from rslad_kit.errors import UserError, did_you_mean



# --- the attacks, by name -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    """What an attack reads besides the model and the images (`evaluate`'s arguments)."""

    eps: float
    batch_size: int
    seed: int
    surrogate: nn.Module | None
    autoattack_state: Path | None
    autoattack_only: tuple[str, ...] | None
    square_queries: int


@dataclass(frozen=True)
class Attack:
    """A named evaluation attack: how tables and figures name it, what it is, and how it runs."""

    label: str
    about: str
    run: Callable[[nn.Module, Tensor, Tensor, Budget], Tensor]   # (model, x, y, budget) -> x'


def _white_box(name: str) -> Callable[[nn.Module, Tensor, Tensor, Budget], Tensor]:
    return lambda m, x, y, b: _batched(lambda xb, yb: atk.white_box(name, m, xb, yb, eps=b.eps), x, y, b.batch_size)


def _transfer(name: str) -> Callable[[nn.Module, Tensor, Tensor, Budget], Tensor]:
    return lambda m, x, y, b: _batched(lambda xb, yb: atk.transfer(b.surrogate, xb, yb, eps=b.eps, attack=name),
                                       x, y, b.batch_size)


# Every attack `evaluate` runs, in the order tables list them; labels as the paper's tables print them.
ATTACKS: dict[str, Attack] = {
    "clean": Attack("Clean", "no attack: accuracy on the test images", lambda m, x, y, b: x),
    "fgsm": Attack("FGSM", "one signed-gradient step of size eps on the cross-entropy", _white_box("fgsm")),
    "pgd_sat": Attack("PGD_SAT", "PGD-20 on the cross-entropy, step eps/4, random start (Madry)",
                      _white_box("pgd_sat")),
    "pgd_trades": Attack("PGD_TRADES", "PGD-20 on the cross-entropy, step 0.003 at eps 8/255, random start (TRADES)",
                         _white_box("pgd_trades")),
    "cw": Attack("CW∞", "PGD-20 on the CW margin (kappa 50), step eps/4, random start", _white_box("cw")),
    "autoattack": Attack("AutoAttack", "the standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square)",
                         lambda m, x, y, b: atk.autoattack(m, x, y, eps=b.eps, seed=b.seed, batch_size=b.batch_size,
                                                           state_path=b.autoattack_state, only=b.autoattack_only)),
    "square": Attack("Square", "black-box Square, from queries only (a gradient-masking check)",
                     lambda m, x, y, b: atk.square(m, x, y, eps=b.eps, seed=b.seed, batch_size=b.batch_size,
                                                   n_queries=b.square_queries)),
    "transfer_pgd": Attack("PGD-20 (transfer)", "PGD_SAT crafted on a surrogate model", _transfer("pgd_sat")),
    "transfer_cw": Attack("CW∞ (transfer)", "CW∞ crafted on a surrogate model", _transfer("cw")),
    "pgd_large_eps": Attack("PGD (eps 0.5)", "PGD at eps 0.5, which should leave about 0% (a sanity check)",
                            lambda m, x, y, b: _batched(lambda xb, yb: atk.large_eps(m, xb, yb), x, y, b.batch_size)),
}
GRADIENT_ATTACKS = tuple(atk.WHITE_BOX)
PAPER_ATTACKS = ("clean", "fgsm", "pgd_sat", "pgd_trades", "cw", "autoattack")  # Tables 2-4, 6


def attack_label(name: str) -> str:
    """How tables and figures name attack `name` ("autoattack" -> "AutoAttack"); other names as given."""
    return ATTACKS[name].label if name in ATTACKS else name


def check_attacks(names: Iterable[str]) -> tuple[str, ...]:
    names = tuple(names)
    unknown = [a for a in names if a not in ATTACKS]
    if unknown:
        raise UserError(f"unknown attack {unknown[0]!r}; {did_you_mean(unknown[0], ATTACKS)}choose from "
                        f"{', '.join(ATTACKS)}")
    return names


def _batched(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    return torch.cat([fn(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 500) -> Tensor:
    """Predicted labels, in batches."""
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * (predict(model, x, batch_size) == y).float().mean().item()


def evaluate(
    model: nn.Module,
    data,
    attacks: Iterable[str] = PAPER_ATTACKS,
    *,
    eps: float = 8 / 255,
    n: int | None = None,
    batch_size: int = 500,
    surrogate: nn.Module | None = None,
    seed: int = 0,
    autoattack_state: Path | None = None,
    autoattack_only: tuple[str, ...] | None = None,
    square_queries: int = 5000,
) -> dict:
    """Accuracy (%) of `model` under each attack on `data`, as one row.

    `data` is a split with `.x` and `.y` (e.g. `Dataset.test`) or an `(x, y)` pair, on the model's
    device. `n` takes the first n examples. `transfer_*` attacks craft on `surrogate`.
    `autoattack_only` restricts AutoAttack to some of its attacks and `square_queries` sets the black-box
    Square budget (smoke tests; the defaults are the standard evaluation).
    Random starts are seeded by `seed`, without touching the caller's RNG state.
    """
    names = check_attacks(attacks)
    x, y = (data.x, data.y) if hasattr(data, "x") else data
    x, y = x[:n], y[:n]
    if any(a.startswith("transfer") for a in names) and surrogate is None:
        raise UserError("transfer attacks need a surrogate model; pass surrogate=... (CLI: --surrogate)")
    atk.check_eps(eps)
    atk.check_images(x)
    budget = Budget(eps, batch_size, seed, surrogate, autoattack_state, autoattack_only, square_queries)

    row: dict = {"n": len(x), "eps": eps, "seconds": {}, "warnings": []}

    def warn(message: str) -> None:
        row["warnings"].append(message)
        warnings.warn(message, stacklevel=3)

    was_training = model.training
    if was_training:
        warn("the model was in train mode; evaluated in eval mode (call model.eval() first)")
    model.eval()
    try:
        with torch.no_grad():
            probe = model(x[:batch_size])
        if probe.min() >= 0 and torch.allclose(probe.sum(1), torch.ones_like(probe[:, 0]), atol=1e-3):
            warn("the model's outputs look like probabilities; attacks need logits (remove the final softmax)")
        with atk.seeded(seed, x.device), atk.autoattack_warnings() as flags:
            for name in names:
                # Each attack from the same seed: its random start does not depend on which attacks ran
                # before it, so a resumed evaluation (AutoAttack from its state file) gives the same numbers.
                torch.manual_seed(seed)
                start = time.perf_counter()
                x_adv = ATTACKS[name].run(model, x, y, budget)
                for flag in flags:   # AutoAttack's own sanity checks
                    warn(f"{name} (AutoAttack's check): {flag}")
                flags.clear()
                if name != "clean":
                    bound = atk.LARGE_EPS if name == "pgd_large_eps" else eps
                    gap = (x_adv - x).abs().max().item()
                    if gap > bound + 1e-6 or x_adv.min() < 0 or x_adv.max() > 1:
                        warn(f"{name}: perturbation left the eps-ball or [0,1] "
                             f"(max |delta| {gap:.4g} > eps {bound:.4g})")
                row[name] = round(accuracy(model, x_adv, y, batch_size), 2)
                row["seconds"][name] = round(time.perf_counter() - start, 2)
    finally:
        model.train(was_training)

    row["masking_checks"] = masking_checks(row)
    for check in row["masking_checks"]:
        if check["fired"]:
            warn(check["detail"])
    return row


def evaluate_checkpoint(model: nn.Module, checkpoint: str | Path, split: Split, attacks: Iterable[str], *,
                        eps: float, device: torch.device, config: dict[str, Any], seed: int = 0,
                        n: int | None = None, **options: Any) -> dict:
    """`evaluate` of `model`, read from the file `checkpoint`, on the first `n` examples of `split` (on
    the host; evaluated on `device`), with what the row was computed from: the file's SHA-256
    (`checkpoint_sha256`), the settings (`config`, `seed`), the examples' SHA-256 (`data_sha256`) and
    the code and machine (runs.provenance). `options` go to `evaluate`. What `rslad-kit evaluate` and
    `reproduce` record of every evaluation."""
    row = evaluate(model, split.to(device), attacks, eps=eps, n=n, **options)
    return row | {"checkpoint_sha256": runs.sha256(checkpoint)} | computed_from(split.take(n), device, config, seed)


def computed_from(split: Split, device: torch.device, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """What a result was computed from: its settings, the SHA-256 of its examples (`split`, on the host:
    the same bytes as on the device, without a copy back), the code and the machine."""
    return {"config": config, "seed": seed, "data_sha256": runs.data_checksum(split), **runs.provenance(device)}


# --- gradient masking ------------------------------------------------------------------------------
#
# Signs that the gradient attacks overestimate robustness (Athalye et al. 2018; Carlini et al. 2019,
# "On evaluating adversarial robustness", §5), each read from accuracies on the same images: an attack
# that should be weaker does better than the stronger ones, or a huge eps does not break the model.

MASKING_MARGIN = 1.0     # points: more than a few images' worth of chance between two attacks on the same images
AUTOATTACK_GAP = 10.0    # points: on models that do not mask, AutoAttack lands a few points below PGD-20
LARGE_EPS_CEILING = 10.0  # % under `pgd_large_eps`: any image can become mid-grey, so ~0 is expected
MULTI_STEP = ("pgd_sat", "pgd_trades", "cw")   # the multi-step gradient attacks
MASKING_CHECKS = {   # check -> when it fires
    "autoattack": f"AutoAttack more than {AUTOATTACK_GAP:g} points below the best multi-step gradient attack",
    "square": f"black-box Square more than {MASKING_MARGIN:g} point below the best gradient attack",
    "fgsm": f"one-step FGSM more than {MASKING_MARGIN:g} point below the better PGD",
    "transfer_pgd": f"transfer PGD more than {MASKING_MARGIN:g} point below the best white-box attack",
    "transfer_cw": f"transfer CW∞ more than {MASKING_MARGIN:g} point below the best white-box attack",
    "pgd_large_eps": f"above {LARGE_EPS_CEILING:g}% accuracy under PGD at eps {atk.LARGE_EPS:g}",
}


def masking_checks(row: dict) -> list[dict]:
    """The gradient-masking checks whose accuracies `row` (attack -> accuracy in %) holds, each as
    {"check", "fired", "detail"}. `evaluate` runs them on its row; `report` on every evaluation on disk."""
    checks = []

    def check(name: str, fired: bool, detail: str) -> None:
        checks.append({"check": name, "fired": fired,
                       "detail": detail + (": gradient masking suspected" if fired else "")})

    def strongest(attacks: tuple[str, ...]) -> str | None:
        """The attack of `attacks` that leaves the lowest accuracy in the row (None: none ran)."""
        return min((a for a in attacks if a in row), key=row.get, default=None)

    multi, gradient, pgd = strongest(MULTI_STEP), strongest(GRADIENT_ATTACKS), strongest(("pgd_sat", "pgd_trades"))
    if "autoattack" in row and multi:
        check("autoattack", row["autoattack"] < row[multi] - AUTOATTACK_GAP,
              f"AutoAttack {row['autoattack']}% vs the best multi-step gradient attack ({multi} {row[multi]}%), "
              f"flagged more than {AUTOATTACK_GAP:g} points below")
    if "square" in row and gradient:
        check("square", row["square"] < row[gradient] - MASKING_MARGIN,
              f"black-box Square {row['square']}% vs the best gradient attack ({gradient} {row[gradient]}%), "
              f"flagged more than {MASKING_MARGIN:g} point below")
    if "fgsm" in row and pgd:
        check("fgsm", row["fgsm"] < row[pgd] - MASKING_MARGIN,
              f"one-step FGSM {row['fgsm']}% vs PGD ({pgd} {row[pgd]}%), flagged more than "
              f"{MASKING_MARGIN:g} point below")
    for transfer in ("transfer_pgd", "transfer_cw"):
        if transfer in row and multi:
            check(transfer, row[transfer] < row[multi] - MASKING_MARGIN,
                  f"{transfer} from a surrogate {row[transfer]}% vs the best white-box attack "
                  f"({multi} {row[multi]}%), flagged more than {MASKING_MARGIN:g} point below")
    if "pgd_large_eps" in row:
        check("pgd_large_eps", row["pgd_large_eps"] > LARGE_EPS_CEILING,
              f"PGD at eps {atk.LARGE_EPS:g} leaves {row['pgd_large_eps']}% accuracy, flagged above "
              f"{LARGE_EPS_CEILING:g}% (any image can become mid-grey there)")
    return checks


def eps_curve(model: nn.Module, data, eps_values: Iterable[float], attack: str = "pgd_trades", *,
              n: int | None = None, seed: int = 0) -> list[float]:
    """Robust accuracy (%) under `attack` at each eps of `eps_values`; eps 0 gives clean accuracy."""
    curve = []
    for eps in eps_values:
        name = "clean" if eps == 0 else attack
        # `evaluate` validates eps even for "clean", which ignores it
        curve.append(evaluate(model, data, [name], eps=eps if eps else 1.0, n=n, seed=seed)[name])
    return curve
