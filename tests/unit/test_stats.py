"""Tests of analysis.stats: known values, edge cases, numpy agreement and coverage by simulation."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from analysis.stats import (
    BOOTSTRAP_SEED,
    bootstrap_difference_ci,
    bootstrap_mean_ci,
    bootstrap_ratio_ci,
    clopper_pearson,
    loss_within_interval,
    mean_ci,
    percentile,
)

finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


@given(st.lists(finite, min_size=1, max_size=60), st.floats(min_value=0, max_value=100))
def test_percentile_matches_numpy_linear(values, q):
    expected = float(np.percentile(values, q))
    assert percentile(values, q) == pytest.approx(expected, rel=1e-12, abs=1e-6)


def test_percentile_known_values():
    data = [10.0, 20.0, 30.0, 40.0]
    assert percentile(data, 0) == 10.0
    assert percentile(data, 100) == 40.0
    assert percentile(data, 50) == 25.0  # halfway between the two middle values
    assert percentile(data, 25) == 17.5  # position 0.75
    assert percentile([5.0], 99) == 5.0
    assert percentile(reversed(data), 50) == 25.0  # order of the input does not matter


@pytest.mark.parametrize("bad", [-0.1, 100.1])
def test_percentile_rejects_q_outside_range(bad):
    with pytest.raises(ValueError, match="q="):
        percentile([1.0, 2.0], bad)


def test_percentile_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="NaN"):
        percentile([1.0, math.nan], 50)


@pytest.mark.parametrize("n", [1, 10, 100, 10_000])
def test_clopper_pearson_zero_successes_closed_form(n):
    low, high = clopper_pearson(0, n, 0.99)
    assert low == 0.0
    assert high == pytest.approx(1 - 0.005 ** (1 / n), rel=1e-9)


def test_clopper_pearson_zero_of_ten_exact_value():
    assert clopper_pearson(0, 10)[1] == pytest.approx(1 - 0.005 ** (1 / 10), rel=1e-12)


@pytest.mark.parametrize("n", [1, 10, 100, 10_000])
def test_clopper_pearson_all_successes_closed_form(n):
    low, high = clopper_pearson(n, n, 0.99)
    assert high == 1.0
    assert low == pytest.approx(0.005 ** (1 / n), rel=1e-9)


@given(st.integers(min_value=1, max_value=5000), st.data(), st.sampled_from([0.9, 0.95, 0.99]))
def test_clopper_pearson_symmetric(n, data, confidence):
    k = data.draw(st.integers(min_value=0, max_value=n))
    low, high = clopper_pearson(k, n, confidence)
    mirror_low, mirror_high = clopper_pearson(n - k, n, confidence)
    assert low == pytest.approx(1 - mirror_high, abs=1e-12)
    assert high == pytest.approx(1 - mirror_low, abs=1e-12)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_clopper_pearson_half_is_centred_and_matches_scipy_binomtest():
    low, high = clopper_pearson(50, 100, 0.95)
    assert (low + high) / 2 == pytest.approx(0.5, abs=1e-12)
    reference = scipy_stats.binomtest(50, 100).proportion_ci(confidence_level=0.95, method="exact")
    assert (low, high) == pytest.approx((reference.low, reference.high), rel=1e-9)


@pytest.mark.parametrize(("k", "n"), [(0, 10_000), (1000, 10_000), (5000, 10_000), (3, 7)])
def test_clopper_pearson_matches_scipy_binomtest_at_99(k, n):
    reference = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.99, method="exact")
    assert clopper_pearson(k, n, 0.99) == pytest.approx((reference.low, reference.high), rel=1e-9, abs=1e-15)


def test_clopper_pearson_wider_at_higher_confidence():
    low95, high95 = clopper_pearson(100, 1000, 0.95)
    low99, high99 = clopper_pearson(100, 1000, 0.99)
    assert low99 < low95 < 0.1 < high95 < high99


def test_clopper_pearson_no_trials_is_whole_interval():
    assert clopper_pearson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("k", "n", "confidence"), [(-1, 10, 0.99), (11, 10, 0.99), (1, 10, 1.0), (1, 10, 0)])
def test_clopper_pearson_rejects_bad_input(k, n, confidence):
    with pytest.raises(ValueError):
        clopper_pearson(k, n, confidence)


def test_loss_within_interval_accepts_true_rate_most_of_the_time():
    # At 99 % the exact interval covers the true value in >= 99 % of experiments; with 1000
    # simulated runs the acceptance rate of a correct emulator should be close to that.
    rng = np.random.default_rng(20240611)
    n = 10_000
    for configured in (10.0, 50.0, 1.0):
        draws = rng.binomial(n, configured / 100, size=1000)
        accepted = sum(loss_within_interval(int(k), n, configured) for k in draws)
        assert accepted >= 980, (configured, accepted)


def test_loss_within_interval_rejects_clearly_wrong_rate():
    rng = np.random.default_rng(7)
    n = 10_000
    # True loss 10 %, configured 12 %: about 6.7 standard errors off, so always rejected.
    draws = rng.binomial(n, 0.10, size=200)
    assert not any(loss_within_interval(int(k), n, 12.0) for k in draws)
    # True loss 50 %, configured 45 %.
    draws = rng.binomial(n, 0.50, size=200)
    assert not any(loss_within_interval(int(k), n, 45.0) for k in draws)


def test_loss_within_interval_zero_configured():
    assert loss_within_interval(0, 10_000, 0.0)
    assert not loss_within_interval(1, 10_000, 0.0)
    assert loss_within_interval(10_000, 10_000, 100.0)


def test_loss_within_interval_boundary_values():
    low, high = clopper_pearson(1000, 10_000, 0.99)
    assert loss_within_interval(1000, 10_000, 100 * low + 1e-9)
    assert loss_within_interval(1000, 10_000, 100 * high - 1e-9)
    assert not loss_within_interval(1000, 10_000, 100 * low - 1e-6)
    assert not loss_within_interval(1000, 10_000, 100 * high + 1e-6)


def test_loss_within_interval_no_probes_never_passes():
    assert not loss_within_interval(0, 0, 0.0)


@pytest.mark.parametrize("pct", [-1.0, 100.5])
def test_loss_within_interval_rejects_bad_percentage(pct):
    with pytest.raises(ValueError, match="configured_pct"):
        loss_within_interval(1, 10, pct)


def test_mean_ci_known_value():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    mean, low, high = mean_ci(values, 0.95)
    # s = sqrt(2.5), t_{0.975, 4} = 2.7764451051977987
    half = 2.7764451051977987 * math.sqrt(2.5 / 5)
    assert mean == 3.0
    assert (low, high) == pytest.approx((3.0 - half, 3.0 + half), rel=1e-12)


def test_mean_ci_matches_scipy_interval():
    rng = np.random.default_rng(3)
    values = rng.normal(100, 15, size=40).tolist()
    mean, low, high = mean_ci(values, 0.99)
    centre, sem = np.mean(values), scipy_stats.sem(values)
    ref_low, ref_high = scipy_stats.t.interval(0.99, len(values) - 1, loc=centre, scale=sem)
    assert mean == pytest.approx(float(np.mean(values)), rel=1e-12)
    assert (low, high) == pytest.approx((ref_low, ref_high), rel=1e-12)


def test_mean_ci_constant_sample_has_zero_width():
    assert mean_ci([4.0, 4.0, 4.0]) == (4.0, 4.0, 4.0)


def test_mean_ci_coverage_by_simulation():
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(2000):
        _, low, high = mean_ci(rng.normal(0.0, 1.0, size=8).tolist(), 0.95)
        covered += low <= 0.0 <= high
    assert 0.93 <= covered / 2000 <= 0.97


def test_mean_ci_rejects_too_few_values():
    with pytest.raises(ValueError, match="at least 2"):
        mean_ci([1.0])


def test_bootstrap_interval_stays_within_the_data_and_is_reproducible():
    data = [30.0] * 25 + [255.0, 1030.0, 3060.0, 15000.0]
    mean, low, high = bootstrap_mean_ci(data)
    assert min(data) <= low < mean < high <= max(data)
    assert bootstrap_mean_ci(data) == (mean, low, high)
    assert bootstrap_mean_ci([4.0, 4.0, 4.0]) == (4.0, 4.0, 4.0)
    single = bootstrap_mean_ci([5.0])
    assert single[0] == 5.0 and math.isnan(single[1]) and math.isnan(single[2])
    with pytest.raises(ValueError, match="empty"):
        bootstrap_mean_ci([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean_ci([1.0, math.nan])


def test_bootstrap_mean_interval_is_scipys_percentile_bootstrap():
    data = np.random.default_rng(1).exponential(300.0, size=30)
    reference = scipy_stats.bootstrap((data,), np.mean, n_resamples=10_000, method="percentile",
                                      rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval  # fmt: skip
    mean, low, high = bootstrap_mean_ci(data)
    assert mean == pytest.approx(float(np.mean(data)))
    assert (low, high) == pytest.approx((reference.low, reference.high), rel=1e-12)


def test_bootstrap_mean_interval_of_a_known_sample():
    # scipy draws the same resamples as the hand-written bootstrap the reports used before (indices
    # from the seeded generator, linear quantiles): the stored reports' intervals did not change.
    data = [30.5, 30.5, 255.2, 30.6, 30.6, 30.6, 256.7, 30.8, 30.8, 30.8]
    mean, low, high = bootstrap_mean_ci(data)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = rng.choice(np.asarray(data), size=(10_000, len(data))).mean(axis=1)
    assert (low, high) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), rel=1e-12)
    assert mean == pytest.approx(np.mean(data))


def test_bootstrap_ratio_and_difference_match_scipy_two_sample_bootstrap():
    rng = np.random.default_rng(2)
    x, y = rng.normal(2000, 100, 30), rng.normal(1500, 80, 25)
    ratio, low, high = bootstrap_ratio_ci(x, y)
    reference = scipy_stats.bootstrap((x, y), lambda a, b, axis: np.mean(a, axis=axis) / np.mean(b, axis=axis),
                                      n_resamples=10_000, method="percentile", vectorized=True,
                                      rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval  # fmt: skip
    assert ratio == pytest.approx(x.mean() / y.mean())
    assert (low, high) == pytest.approx((reference.low, reference.high), rel=1e-12)
    assert low < ratio < high
    difference, dlow, dhigh = bootstrap_difference_ci(x, y)
    assert difference == pytest.approx(y.mean() - x.mean()) and dlow < difference < dhigh < 0
    assert math.isnan(bootstrap_ratio_ci([1.0], [2.0, 3.0])[1])


def test_median_convention_is_the_middle_pair_mean():
    # The old figure9.py took sorted(t)[n // 2], the upper median; pandas/numpy average the middle pair.
    assert float(np.median([1.0, 2.0, 3.0, 10.0])) == 2.5
