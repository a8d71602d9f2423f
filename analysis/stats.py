"""The statistics of the figures, reports and validations, from numpy and scipy.

Thin wrappers that check their input (empty samples, NaN, confidence outside (0, 1)) and fix the
conventions used throughout the project; the computing is numpy's and scipy's:

* :func:`percentile`: ``numpy.percentile`` (linear interpolation).
* :func:`clopper_pearson`: ``scipy.stats.binomtest(k, n).proportion_ci(method="exact")``.
* :func:`loss_within_interval`: is a configured loss probability consistent with an observed count?
* :func:`mean_ci`: ``scipy.stats.t.interval`` around the sample mean.
* :func:`bootstrap_mean_ci`, :func:`bootstrap_ratio_ci`, :func:`bootstrap_difference_ci`:
  ``scipy.stats.bootstrap`` (percentile method, 10,000 resamples, seeded).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as _scipy_stats

#: Seed of every bootstrap: figures and reports regenerate to the same numbers.
BOOTSTRAP_SEED = 8684
BOOTSTRAP_RESAMPLES = 10_000


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence}: must be strictly between 0 and 1")


def _sample(values: Iterable[float], what: str, minimum: int = 1) -> npt.NDArray[np.float64]:
    data = np.asarray([float(v) for v in values], dtype=np.float64)
    if data.size < minimum:
        raise ValueError(f"{what} needs at least {minimum} value(s), got {data.size}" if minimum > 1 else
                         f"{what} of an empty sample")  # fmt: skip
    if np.isnan(data).any():
        raise ValueError(f"{what} of a sample containing NaN")
    return data


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0 <= q <= 100) of ``values``: numpy's default (linear, Hyndman-Fan 7).

    Raises ValueError for an empty sample, a NaN value or q outside 0..100.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q={q}: must be within 0..100")
    return float(np.percentile(_sample(values, "percentile"), q))


def clopper_pearson(k: int, n: int, confidence: float = 0.99) -> tuple[float, float]:
    """Exact (Clopper–Pearson) two-sided confidence interval for a binomial proportion k / n.

    With n = 0 there is no information and the interval is the whole [0, 1]. Raises ValueError
    unless 0 <= k <= n and 0 < confidence < 1.
    """
    _check_confidence(confidence)
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"k={k}, n={n}: need 0 <= k <= n")
    if n == 0:
        return 0.0, 1.0
    interval = _scipy_stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(interval.low), float(interval.high)


def loss_within_interval(lost: int, total: int, configured_pct: float, confidence: float = 0.99) -> bool:
    """Whether the configured loss probability is consistent with ``lost`` of ``total`` probes.

    True when ``configured_pct / 100`` lies inside the two-sided Clopper–Pearson interval at
    ``confidence``, i.e. an exact binomial test of "loss probability = configured" does not reject
    at level 1 - confidence. ``total == 0`` returns False: a check must not pass without evidence.
    """
    if not 0.0 <= configured_pct <= 100.0:
        raise ValueError(f"configured_pct={configured_pct}: must be within 0..100")
    low, high = clopper_pearson(lost, total, confidence)
    if total == 0:
        return False
    return low <= configured_pct / 100.0 <= high


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Sample mean and its two-sided Student t confidence interval: (mean, low, high).

    Raises ValueError for fewer than two values (no variance estimate) or a NaN value.
    """
    _check_confidence(confidence)
    data = _sample(values, "mean_ci", minimum=2)
    mean = float(data.mean())
    sem = float(_scipy_stats.sem(data))
    if sem == 0.0:
        return mean, mean, mean
    low, high = _scipy_stats.t.interval(confidence, data.size - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def bootstrap_interval(
    samples: tuple[npt.NDArray[np.float64], ...],
    statistic: Callable[..., Any],
    confidence: float = 0.95,
    seed: int = BOOTSTRAP_SEED,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of a vectorised ``statistic(*samples, axis)``, each sample
    resampled independently (``scipy.stats.bootstrap``, seeded)."""
    _check_confidence(confidence)
    result = _scipy_stats.bootstrap(samples, statistic, n_resamples=resamples, vectorized=True,
                                    method="percentile", confidence_level=confidence,
                                    rng=np.random.default_rng(seed))  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def bootstrap_mean_ci(
    values: Iterable[float], confidence: float = 0.95, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float, float]:
    """Sample mean and its percentile-bootstrap confidence interval: (mean, low, high).

    Unlike the t interval it stays within the data's range, which suits heavy-tailed samples such
    as set-up times under loss. A single value has no interval (NaN); a constant sample has a
    zero-width one. Raises ValueError for an empty sample or a NaN value.
    """
    _check_confidence(confidence)
    data = _sample(values, "bootstrap_mean_ci")
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan, math.nan
    if np.all(data == data[0]):
        return mean, mean, mean
    low, high = bootstrap_interval((data,), lambda x, axis: np.mean(x, axis=axis), confidence, seed)
    return mean, low, high


def bootstrap_ratio_ci(
    numerator: Iterable[float], denominator: Iterable[float], confidence: float = 0.95, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float, float]:
    """mean(numerator) / mean(denominator) and its percentile-bootstrap interval (the samples resampled
    independently): (ratio, low, high); NaN interval when a sample has fewer than two values."""
    _check_confidence(confidence)
    x, y = _sample(numerator, "bootstrap_ratio_ci"), _sample(denominator, "bootstrap_ratio_ci")
    ratio = float(x.mean() / y.mean())
    if x.size < 2 or y.size < 2:
        return ratio, math.nan, math.nan
    if np.all(x == x[0]) and np.all(y == y[0]):
        return ratio, ratio, ratio
    low, high = bootstrap_interval((x, y), lambda a, b, axis: np.mean(a, axis=axis) / np.mean(b, axis=axis),
                           confidence, seed)  # fmt: skip
    return ratio, low, high


def bootstrap_difference_ci(
    first: Iterable[float], second: Iterable[float], confidence: float = 0.95, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float, float]:
    """mean(second) - mean(first) and its percentile-bootstrap interval: (difference, low, high)."""
    _check_confidence(confidence)
    x, y = _sample(first, "bootstrap_difference_ci"), _sample(second, "bootstrap_difference_ci")
    difference = float(y.mean() - x.mean())
    if x.size < 2 or y.size < 2:
        return difference, math.nan, math.nan
    if np.all(x == x[0]) and np.all(y == y[0]):
        return difference, difference, difference
    low, high = bootstrap_interval((x, y), lambda a, b, axis: np.mean(b, axis=axis) - np.mean(a, axis=axis),
                           confidence, seed)  # fmt: skip
    return difference, low, high
