"""Paired comparisons over seeds (rslad_kit.stats) and the summary's wording built on them."""

import math

import pytest
from scipy import stats as scipy_stats

from rslad_kit.report import describe, verdict
from rslad_kit.stats import MAX_SEEDS, RESOLUTION, Paired, paired, power_margin

A = {0: 45.0, 1: 47.5, 2: 41.0, 3: 50.0, 4: 44.0, 5: 46.0}
B = {0: 43.0, 1: 44.0, 2: 41.5, 3: 46.0, 4: 43.5, 5: 42.0}


def test_paired_difference_matches_the_paired_t_test():
    d = paired(A, B)
    diffs = [A[s] - B[s] for s in A]
    t = scipy_stats.ttest_rel(list(A.values()), list(B.values()))
    ci = t.confidence_interval(0.95)
    assert d.n == 6 and d.mean == pytest.approx(sum(diffs) / 6)
    assert d.p == pytest.approx(t.pvalue) and (d.low, d.high) == pytest.approx((ci.low, ci.high))
    assert d.excludes_zero and verdict(d) == "holds"


def test_pairing_removes_the_shared_seed_noise():
    # A constant +1 on top of large seed-to-seed swings: unpaired, lost in the noise; paired, exact.
    b = {s: 30.0 + 10 * (s % 3) for s in range(6)}
    a = {s: v + 1.0 for s, v in b.items()}
    assert scipy_stats.ttest_ind(list(a.values()), list(b.values())).pvalue > 0.5
    d = paired(a, b)
    assert (d.mean, d.low, d.high, d.p) == (1.0, 1.0, 1.0, 0.0) and verdict(d) == "holds"


def test_identical_runs_are_a_tie_with_a_zero_interval():
    d = paired(A, dict(A))
    assert (d.mean, d.low, d.high, d.p, d.sd) == (0.0, 0.0, 0.0, 1.0, 0.0)
    assert not d.excludes_zero and verdict(d) == "tie" and d.seeds_needed() is None


def test_one_seed_gives_a_sign_and_no_interval():
    d = paired({3: 50.0}, {3: 48.0})
    assert d.n == 1 and d.mean == 2.0 and d.low is None and d.p is None
    assert verdict(d) == "holds on one seed only" and "one seed" in str(d)
    assert verdict(paired({3: 47.0}, {3: 48.0})) == "reversed on one seed only"


def test_a_missing_seed_is_left_out_and_named():
    b = {s: v for s, v in B.items() if s != 4}
    d = paired(A, b)
    assert d.n == 5 and d.missing == (4,)
    assert d.mean == pytest.approx(sum(A[s] - B[s] for s in b) / 5)
    assert paired({0: 1.0}, {1: 2.0}).mean is None   # nothing shared


def test_seeds_needed_grows_as_the_difference_shrinks():
    wide = paired({0: 3.0, 1: -1.0, 2: 2.5, 3: 0.0}, {s: 0.0 for s in range(4)})
    assert not wide.excludes_zero
    n = wide.seeds_needed()
    assert n > wide.n   # not detected with 4 seeds, so more are needed
    assert power_margin(n) * wide.sd / math.sqrt(n) <= wide.mean < power_margin(n - 1) * wide.sd / math.sqrt(n - 1)
    half = paired({s: v / 2 for s, v in {0: 3.0, 1: -1.0, 2: 2.5, 3: 0.0}.items()}, {s: 0.0 for s in range(4)})
    assert half.seeds_needed() == n    # scale-free: the ratio of mean to spread decides
    assert verdict(wide) == "not shown: within the seed noise (same direction)"


# --- seeds_needed stays bounded (a residue of 1e-15 once asked scipy for 1.6e30 seeds) --------------

def _diff(mean: float, sd: float, n: int = 3) -> Paired:
    return Paired(n, mean, mean - 1.0, mean + 1.0, 0.5, sd)


def test_a_floating_point_residue_is_no_difference():
    d = _diff(1e-15, 3.0)
    assert d.seeds_needed() is None
    assert verdict(d) == "not shown: within the seed noise (no difference on average)"
    assert "needs" not in describe(d)


def test_a_difference_below_the_resolution_is_no_difference():
    assert RESOLUTION > 1e-6 and _diff(1e-6, 3.0).seeds_needed() is None
    assert _diff(-1e-6, 0.5).seeds_needed() is None


def test_no_spread_needs_no_more_than_two_seeds_and_no_difference_needs_none():
    assert _diff(1.5, 0.0).seeds_needed() == 2
    assert _diff(1e-15, 0.0).seeds_needed() is None
    assert verdict(_diff(1e-15, 0.0)) == "tie"


def test_a_negative_difference_needs_as_many_seeds_as_its_mirror():
    assert _diff(-1e-12, 2.0).seeds_needed() is None     # a negative residue is no difference either
    n = _diff(2.0, 3.0).seeds_needed()
    assert _diff(-2.0, 3.0).seeds_needed() == n and 2 < n <= MAX_SEEDS
    assert power_margin(n) * 3.0 / math.sqrt(n) <= 2.0 < power_margin(n - 1) * 3.0 / math.sqrt(n - 1)


def test_the_search_stops_at_the_cap_and_the_summary_says_more_than():
    d = _diff(-0.05, 3.0)         # the normal approximation alone asks for ~28,000 seeds
    assert d.seeds_needed() == MAX_SEEDS + 1
    assert "needs more than 10,000 seeds" in describe(d) and "rough" in describe(d)
    # just under the cap the search still returns a count, and it is the first n that has the power
    edge = _diff(0.09, 3.0)
    n = edge.seeds_needed()
    assert n <= MAX_SEEDS and power_margin(n) * 3.0 / math.sqrt(n) <= 0.09


def test_paired_differences_of_pure_residue_are_described_without_a_count():
    a = {0: 0.1 + 0.2, 1: 52.0, 2: 41.0}
    b = {0: 0.3, 1: 55.0, 2: 38.0}      # mean difference 5.6e-17: the residue of 0.1 + 0.2
    d = paired(a, b)
    assert 0 < abs(d.mean) < 1e-15 and d.sd > 2
    assert d.seeds_needed() is None and "seeds to be detected" not in describe(d)


def test_residue_with_a_residue_spread_is_not_beyond_the_noise():
    d = Paired(3, 2e-16, 1e-16, 3e-16, 0.01, 5e-17)   # the interval alone would exclude 0
    assert not d.excludes_zero and verdict(d) == "tie" and d.seeds_needed() is None
