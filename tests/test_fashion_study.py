"""The Fashion-MNIST study's verdict (benchmarks/fashion_study.py) fires exactly when its pre-registered
rule holds, on rows whose answer is known."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fashion_study  # noqa: E402

SEEDS = (300, 301, 302, 303, 304, 305)
NOISE = (0.4, -0.3, 0.2, -0.1, 0.3, -0.5)   # per-seed wobble, so intervals have a width


def rows(lead: dict[tuple[str, str], float]) -> dict[str, dict[int, dict]]:
    """SAT at 50 and TRADES at 48 on both attacks; RSLAD ahead of each by `lead[(other, attack)]`."""
    base = {"sat": 50.0, "trades": 48.0}
    out = {m: {s: {a: base[m] + w for a in ("pgd_trades", "autoattack")} for s, w in zip(SEEDS, NOISE)}
           for m in base}
    out["rslad"] = {s: {a: max(base[o] + lead[(o, a)] for o in base) + w * 0.5 for a in ("pgd_trades", "autoattack")}
                    for s, w in zip(SEEDS, NOISE)}
    return out


def test_the_rule_holds_when_rslad_leads_both_by_more_than_2_under_both_attacks():
    r = rows({(o, a): 3.0 for o in ("sat", "trades") for a in ("pgd_trades", "autoattack")})
    assert fashion_study.meets_rule(r)


@pytest.mark.parametrize("gap", [1.0, -3.0])
def test_the_rule_fails_when_autoattack_falls_short(gap):
    lead = {(o, a): 3.0 for o in ("sat", "trades") for a in ("pgd_trades", "autoattack")}
    lead[("sat", "autoattack")] = gap
    r = rows(lead)
    r["rslad"] = {s: {"pgd_trades": v["pgd_trades"], "autoattack": 50.0 + gap + w * 0.5}
                  for (s, v), w in zip(r["rslad"].items(), NOISE)}
    assert not fashion_study.meets_rule(r)


def test_the_rule_fails_when_the_interval_reaches_zero():
    lead = {(o, a): 3.0 for o in ("sat", "trades") for a in ("pgd_trades", "autoattack")}
    r = rows(lead)
    for s, w in zip(SEEDS, (9, -9, 8, -8, 7, -7)):   # the same mean lead, now with a wide spread
        r["rslad"][s]["pgd_trades"] += w
    assert not fashion_study.meets_rule(r)
