"""Small statistics used by the link validation and the figures.

* :func:`percentile`: sample percentile with numpy's default (linear) interpolation.
* :func:`clopper_pearson`: exact binomial confidence interval for a proportion.
* :func:`loss_within_interval`: is a configured loss probability consistent with an observed count?
* :func:`mean_ci`: sample mean with a Student t confidence interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import stats as _scipy_stats


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence}: must be strictly between 0 and 1")


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0 <= q <= 100) of the sample ``values``.

    Uses linear interpolation between order statistics, the same definition as numpy's default
    (``method="linear"``, type 7 of Hyndman and Fan): with the n values sorted as x[0..n-1], the
    position is h = (n - 1) * q / 100 and the result is x[floor h] + (h - floor h) *
    (x[floor h + 1] - x[floor h]). So q = 0 is the minimum, q = 100 the maximum, q = 50 the
    median. It describes the sample; it is not an estimate with an error bar.

    Raises ValueError for an empty sample, a NaN value or q outside 0..100.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q={q}: must be within 0..100")
    ordered = sorted(float(v) for v in values)
    if not ordered:
        raise ValueError("percentile of an empty sample")
    if any(math.isnan(v) for v in ordered):
        raise ValueError("percentile of a sample containing NaN")
    position = (len(ordered) - 1) * q / 100.0
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    fraction = position - below
    low, high = ordered[below], ordered[above]
    # Written as numpy's lerp does, so equal neighbours give exactly that value and the result
    # never leaves [low, high] through rounding.
    if fraction >= 0.5:
        return high - (high - low) * (1.0 - fraction)
    return low + (high - low) * fraction


def clopper_pearson(k: int, n: int, confidence: float = 0.99) -> tuple[float, float]:
    """Exact (Clopper–Pearson) two-sided confidence interval for a binomial proportion.

    Given k successes (here: lost probes) in n independent trials, returns (low, high) as
    fractions in [0, 1] such that, over repeated experiments, the interval covers the true
    probability with at least ``confidence`` (e.g. 99 %) probability. It is the set of p for which
    neither one-sided binomial test at level (1 - confidence) / 2 rejects: low is the
    (1 - confidence) / 2 quantile of Beta(k, n - k + 1), high the 1 - (1 - confidence) / 2
    quantile of Beta(k + 1, n - k). The interval is conservative (coverage >= confidence).

    Edge cases: k = 0 gives low = 0 (and high = 1 - ((1 - confidence) / 2) ** (1 / n)); k = n gives
    high = 1. With n = 0 there is no information and the interval is the whole [0, 1].

    Raises ValueError unless 0 <= k <= n and 0 < confidence < 1.
    """
    _check_confidence(confidence)
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"k={k}, n={n}: need 0 <= k <= n")
    if n == 0:
        return 0.0, 1.0
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if k == 0 else float(_scipy_stats.beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(_scipy_stats.beta.ppf(1.0 - tail, k + 1, n - k))
    return low, high


def loss_within_interval(lost: int, total: int, configured_pct: float, confidence: float = 0.99) -> bool:
    """Whether the configured loss probability is consistent with ``lost`` of ``total`` probes.

    True when ``configured_pct / 100`` lies inside the two-sided Clopper–Pearson interval at
    ``confidence`` for the observed count, i.e. a two-sided exact binomial test of
    "loss probability = configured" does not reject at level 1 - confidence. If the emulator is
    correct and losses are independent, this is True in at least ``confidence`` of runs. With
    a configured 0 %, a single lost probe makes it False (no loss is the only consistent outcome).

    ``total == 0`` returns False: with no probes the interval is all of [0, 1], and a check must
    not pass without evidence.

    Raises ValueError for configured_pct outside 0..100 or counts as in :func:`clopper_pearson`.
    """
    if not 0.0 <= configured_pct <= 100.0:
        raise ValueError(f"configured_pct={configured_pct}: must be within 0..100")
    low, high = clopper_pearson(lost, total, confidence)
    if total == 0:
        return False
    return low <= configured_pct / 100.0 <= high


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Sample mean and its two-sided Student t confidence interval: (mean, low, high).

    low/high = mean -/+ t_{(1 + confidence) / 2, n - 1} * s / sqrt(n), with s the sample
    standard deviation (n - 1 in the denominator). Under independent, roughly normal samples (or
    enough of them for the central limit theorem), the interval covers the true mean with
    probability ``confidence``. It says nothing about the spread of single values.

    Raises ValueError for fewer than two values (no variance estimate) or a NaN value.
    """
    _check_confidence(confidence)
    data = [float(v) for v in values]
    if len(data) < 2:
        raise ValueError(f"mean_ci needs at least 2 values, got {len(data)}")
    if any(math.isnan(v) for v in data):
        raise ValueError("mean_ci of a sample containing NaN")
    n = len(data)
    mean = math.fsum(data) / n
    variance = math.fsum((v - mean) ** 2 for v in data) / (n - 1)
    half = float(_scipy_stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * math.sqrt(variance / n)
    return mean, mean - half, mean + half


def bootstrap_mean_ci(
    values: Iterable[float], confidence: float = 0.95, resamples: int = 10_000, seed: int = 8684
) -> tuple[float, float, float]:
    """Sample mean and its percentile-bootstrap confidence interval: (mean, low, high).

    Unlike the t interval, it stays within the data's range, which suits heavy-tailed samples such
    as set-up times under loss (a few exponential back-offs dominate the mean). Seeded, so the
    figures are reproducible. Raises ValueError for an empty sample or a NaN value.
    """
    _check_confidence(confidence)
    data = np.asarray([float(v) for v in values])
    if data.size == 0:
        raise ValueError("bootstrap_mean_ci of an empty sample")
    if np.isnan(data).any():
        raise ValueError("bootstrap_mean_ci of a sample containing NaN")
    rng = np.random.default_rng(seed)
    means = rng.choice(data, size=(resamples, data.size)).mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(data.mean()), float(low), float(high)
