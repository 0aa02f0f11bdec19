"""Percentile-bootstrap confidence intervals over prompts, for one condition or a paired difference.

Every steering rate is a statistic over a few dozen prompts; its interval says how much of a
difference between two numbers is prompt sampling. Resampling is over prompts (the unit that was
sampled), with a seeded generator, so the same inputs and seed give the same interval.

    point, low, high = bootstrap_interval(per_prompt_scores)
    diff = paired_difference_interval(steered, unsteered)     # same prompts, in the same order
    if diff.low > 0: ...                                      # steering raised it beyond sampling
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

Stat = Callable[..., Any]


class Interval(NamedTuple):
    """A statistic and its percentile-bootstrap interval; unpacks as (point, low, high)."""

    point: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.point:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _as_values(values: Sequence[float] | np.ndarray | Any, name: str = "values") -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, without importing torch here
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numbers, one per prompt: {e}") from e
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one number per prompt (1-D), got shape {arr.shape}; "
                         "flatten it or compute a per-prompt score first")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: pass at least one per-prompt score (were all prompts filtered out?)")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise ValueError(f"{name} has {bad.size} NaN or infinite values (at {shown}); drop those prompts or "
                         "score them (e.g. values[np.isfinite(values)]) before bootstrapping")
    return arr


def _check(n_resamples: int, confidence: float) -> None:
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}; 2000 is usual")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}; e.g. 0.95")


def _per_row(stat: Stat, samples: np.ndarray) -> np.ndarray:
    """stat applied to each row of a [R, n] array: one vectorised call where stat takes axis=."""
    try:
        out = np.asarray(stat(samples, axis=1), dtype=np.float64)
        if out.shape == (samples.shape[0],):
            return out
    except TypeError:  # a stat without an axis argument
        pass
    return np.array([float(stat(row)) for row in samples], dtype=np.float64)


def _resample_idx(n: int, n_resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(int(n_resamples), n))


def _interval(point: float, boot: np.ndarray, confidence: float) -> Interval:
    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return Interval(float(point), float(low), float(high))


def bootstrap_interval(values: Sequence[float] | np.ndarray | Any, stat: Stat = np.mean, n_resamples: int = 2000,
                       confidence: float = 0.95, seed: int = 0) -> Interval:
    """`stat` of per-prompt `values` with its percentile-bootstrap interval over prompts.

    A rate is the mean of 0/1 values. One value gives a zero-width interval: there is nothing to
    resample, which says nothing about the spread.
    """
    arr = _as_values(values)
    _check(n_resamples, confidence)
    boot = _per_row(stat, arr[_resample_idx(arr.size, n_resamples, seed)])
    return _interval(float(stat(arr)), boot, confidence)


def paired_difference_interval(a: Sequence[float] | np.ndarray | Any, b: Sequence[float] | np.ndarray | Any,
                               stat: Stat = np.mean, n_resamples: int = 2000, confidence: float = 0.95,
                               seed: int = 0) -> Interval:
    """stat(a) - stat(b) for two conditions scored on the same prompts, with a paired interval.

    Resampling draws prompts, and each drawn prompt brings both of its scores, so the variation
    shared by the two conditions (easy and hard prompts) cancels: the interval is narrower than
    two separate intervals would suggest, and honest about the difference.
    """
    x, y = _as_values(a, "a"), _as_values(b, "b")
    if x.size != y.size:
        raise ValueError(f"a has {x.size} values and b has {y.size}: a paired interval needs one score per "
                         "prompt in each condition, in the same prompt order")
    _check(n_resamples, confidence)
    idx = _resample_idx(x.size, n_resamples, seed)
    boot = _per_row(stat, x[idx]) - _per_row(stat, y[idx])
    return _interval(float(stat(x)) - float(stat(y)), boot, confidence)
