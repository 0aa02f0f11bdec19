"""steering.bootstrap: percentile intervals over prompts, paired differences, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from steering.bootstrap import Interval, bootstrap_interval, paired_difference_interval


def test_mean_interval_covers_the_mean_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0.3, 0.1, size=200)
    iv = bootstrap_interval(x)
    assert isinstance(iv, Interval)
    point, low, high = iv
    assert point == pytest.approx(x.mean())
    assert low < point < high
    # the width matches the normal approximation 2 * 1.96 * sd / sqrt(n) within 20%
    assert high - low == pytest.approx(2 * 1.96 * x.std(ddof=1) / math.sqrt(x.size), rel=0.2)
    assert bootstrap_interval(x, seed=0) == iv
    assert bootstrap_interval(x, seed=1) != iv


def test_rate_of_zero_one_values_and_wider_at_higher_confidence() -> None:
    hits = [1] * 14 + [0] * 6
    iv95 = bootstrap_interval(hits)
    iv80 = bootstrap_interval(hits, confidence=0.8)
    assert iv95.point == pytest.approx(0.7)
    assert 0.0 <= iv95.low < iv80.low <= iv80.high < iv95.high <= 1.0


def test_other_stats_and_torch_input() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    med = bootstrap_interval(x, stat=np.median, n_resamples=500)
    assert med.point == 3.0 and med.low >= 1.0 and med.high <= 100.0

    def trimmed(v: np.ndarray) -> float:  # no axis= argument: the slow per-resample path
        return float(np.sort(v)[1:-1].mean()) if v.size > 2 else float(v.mean())

    assert bootstrap_interval(x, stat=trimmed, n_resamples=200).point == pytest.approx(3.0)


def test_paired_difference_cancels_shared_prompt_variation() -> None:
    rng = np.random.default_rng(2)
    difficulty = rng.normal(0, 1.0, size=60)  # shared by both conditions
    a = difficulty + 0.2 + rng.normal(0, 0.05, size=60)
    b = difficulty + rng.normal(0, 0.05, size=60)
    paired = paired_difference_interval(a, b)
    assert paired.point == pytest.approx(a.mean() - b.mean())
    assert 0.0 < paired.low < 0.2 < paired.high  # paired: the 0.2 shift is clear
    ia, ib = bootstrap_interval(a), bootstrap_interval(b)
    assert ia.low < ib.high  # separately, the two intervals overlap
    assert paired_difference_interval(a, b) == paired


@pytest.mark.parametrize(
    ("values", "match"),
    [([], "empty"), ([0.1, float("nan")], "NaN"), ([[0.1, 0.2]], "1-D"), ([1.0, float("inf")], "infinite"),
     (["a", "b"], "numbers")],
)
def test_bad_values_raise_naming_the_fix(values: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bootstrap_interval(values)


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_interval([1.0, 2.0], n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="same prompt order"):
        paired_difference_interval([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        paired_difference_interval([1.0, 2.0], [1.0, float("nan")])
