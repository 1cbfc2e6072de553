"""Paired comparisons of two methods over seeds: the difference, its 95% interval, and power.

Runs that share a seed share their initialisation and data order, so the honest comparison of two
methods is the per-seed difference, not two independent means. Used by the summary of `reproduce`,
the teacher study, and the classroom regime study (benchmarks/regime_study.py); `mean_interval` gives
Figure 2's similarity its interval.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as _scipy_stats

_Z_POWER = 1.959964 + 0.841621  # the same margin under the normal distribution (infinite degrees of freedom)

# Accuracy differences are in points (percent). A hundredth of one test image's worth on a 10,000-image
# test set: anything smaller is floating-point residue of a mean, never a measured difference.
RESOLUTION = 1e-4
# Where seeds_needed stops searching: past this, "more than 10,000 seeds" says all there is to say.
MAX_SEEDS = 10_000


def power_margin(n: int) -> float:
    """t_0.975 + t_0.8 at n - 1 degrees of freedom: a two-sided 5% test with 80% power."""
    return float(_scipy_stats.t.ppf(0.975, n - 1) + _scipy_stats.t.ppf(0.8, n - 1))


def half_width(sd: float, n: int, level: float = 0.95) -> float:
    """Half the width of the t-interval at `level` (two-sided) of a mean of `n` values whose standard
    deviation is `sd`."""
    return float(_scipy_stats.t.ppf(1 - (1 - level) / 2, n - 1) * sd / math.sqrt(n))


def mean_interval(values: Sequence[float]) -> dict[str, float | int]:
    """Mean and its 95% t-interval (NaNs dropped): {"mean", "low", "high", "n"}."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    half = half_width(float(v.std(ddof=1)), n) if n > 1 else math.nan
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


@dataclass(frozen=True)
class Paired:
    """`a - b` over the seeds both have."""

    n: int                        # seeds with both values
    mean: float | None            # mean difference (None without any shared seed)
    low: float | None             # 95% t-interval of the mean difference (None with fewer than 2 seeds)
    high: float | None
    p: float | None               # two-sided paired t-test (None with fewer than 2 seeds)
    sd: float | None              # standard deviation of the per-seed differences
    missing: tuple[int, ...] = ()  # seeds present in only one of the two

    @property
    def excludes_zero(self) -> bool:
        """The 95% interval lies on one side of 0, and the difference is more than residue."""
        return self.low is not None and abs(self.mean) >= RESOLUTION and (self.low > 0 or self.high < 0)

    def seeds_needed(self) -> int | None:
        """Seeds a paired t-test needs to detect a difference of this size (5% level, 80% power).

        The smallest n with (t_0.975 + t_0.8, at n - 1 degrees of freedom) * sd / sqrt(n) <= |mean|.
        None when there is nothing to size: no shared seed, no spread to size it from, or a difference
        below `RESOLUTION` (floating-point residue, not an effect). Past `MAX_SEEDS` the search stops and
        returns MAX_SEEDS + 1, read as "more than MAX_SEEDS".

        A rough, post-hoc figure: it plugs the observed difference and the spread of a few seeds into
        the formula, and both are noisy, so it can be off by a large factor."""
        if self.mean is None or self.sd is None or abs(self.mean) < RESOLUTION:
            return None
        if self.sd == 0:
            return 2
        ratio = self.sd / abs(self.mean)
        if (_Z_POWER * ratio) ** 2 > MAX_SEEDS:     # the normal approximation is a lower bound
            return MAX_SEEDS + 1
        n = max(2, math.ceil((_Z_POWER * ratio) ** 2))
        while n <= MAX_SEEDS and power_margin(n) * ratio > math.sqrt(n):
            n += 1
        return n

    def __str__(self) -> str:
        if self.mean is None:
            return "no shared seed"
        if self.low is None:
            return f"{self.mean:+.2f} (one seed, no interval)"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}] over {self.n} seeds"


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> Paired:
    """Compare `a` and `b`, each a mapping seed -> value, on the seeds they share."""
    shared = sorted(set(a) & set(b))
    missing = tuple(sorted(set(a) ^ set(b)))
    diffs = [a[s] - b[s] for s in shared]
    if not diffs:
        return Paired(0, None, None, None, None, None, missing)
    mean = statistics.fmean(diffs)
    if len(diffs) == 1:
        return Paired(1, mean, None, None, None, None, missing)
    sd = statistics.stdev(diffs)
    if sd == 0:   # every seed gives the same difference: the interval is that point
        return Paired(len(diffs), mean, mean, mean, 1.0 if mean == 0 else 0.0, 0.0, missing)
    half = half_width(sd, len(diffs))
    p = 2 * _scipy_stats.t.sf(abs(mean) / (sd / math.sqrt(len(diffs))), len(diffs) - 1)
    return Paired(len(diffs), mean, mean - half, mean + half, float(p), sd, missing)
