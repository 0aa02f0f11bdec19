"""Intervention math and input checks, on tensors only (no model)."""

from __future__ import annotations

import math

import pytest
import torch

from steering import (
    Ablate,
    Add,
    Clamp,
    FeatureSteering,
    Scale,
    SteeringError,
    VectorSteering,
    edit_codes,
)
from steering.positions import PositionTracker
from steering.scoring import concept_score, distinct_n, keyword_scorer
from steering.search import contrastive_from_acts
from tests.steering.conftest import ARCHS, make_sae


@pytest.mark.parametrize("arch", ARCHS)
def test_clamp_matches_hand_computation(arch: str) -> None:
    sae = make_sae(arch, d_in=16, d_sae=32, k=4, dtype="float64", seed=3)
    x = torch.randn(5, 16, dtype=torch.float64) * 3
    f, v = 7, 2.5
    codes = sae.encode(x)
    err = x - sae.decode(codes)  # the error term, from the UNEDITED x
    x_new = FeatureSteering(sae, {f: Clamp(v)}).apply(x)
    # By hand: x + (v - f_i(x)) W_dec[i].
    hand = x + (v - codes[:, f])[:, None] * sae.W_dec[f].detach()[None, :]
    torch.testing.assert_close(x_new, hand, rtol=0, atol=1e-12)
    # Equivalently: decode(codes with only feature f changed) + the unchanged error term.
    edited = codes.clone()
    edited[:, f] = v
    torch.testing.assert_close(x_new, sae.decode(edited) + err, rtol=0, atol=1e-12)
    torch.testing.assert_close(x_new - sae.decode(edited), err, rtol=0, atol=1e-12)


def test_scale_add_ablate_and_several_features() -> None:
    sae = make_sae("relu", d_in=16, d_sae=32, dtype="float64", seed=4)
    x = torch.randn(6, 16, dtype=torch.float64) * 3
    c = sae.encode(x)
    W = sae.W_dec.detach()
    fired = int((c > 0).sum(0).argmax())  # a feature that fires, so scaling/ablating matter
    other = (fired + 1) % 32
    out = FeatureSteering(sae, {fired: Scale(3.0), other: Add(1.5), 2: Ablate()}).apply(x)
    hand = x + (2.0 * c[:, fired])[:, None] * W[fired] + 1.5 * W[other] - c[:, 2, None] * W[2]
    torch.testing.assert_close(out, hand, rtol=0, atol=1e-12)
    assert not torch.allclose(out, x)


def test_unit_max_scales_by_max_activation() -> None:
    sae = make_sae("relu", d_in=16, d_sae=32, dtype="float64", seed=5)
    x = torch.randn(3, 16, dtype=torch.float64)
    a = edit_codes(x, sae, torch.tensor([4]), [Clamp(2.0, unit="max")], torch.tensor([3.0]))
    b = edit_codes(x, sae, torch.tensor([4]), [Clamp(6.0)])
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    with pytest.raises(SteeringError, match="max"):
        edit_codes(x, sae, torch.tensor([4]), [Clamp(2.0, unit="max")])


def test_vector_steering_adds_scaled_vector() -> None:
    v = torch.randn(8)
    x = torch.randn(3, 8)
    torch.testing.assert_close(VectorSteering(v, "h", scale=2.0).apply(x), x + 2 * v)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "strong"])
def test_non_finite_strength_is_rejected(bad) -> None:
    for make in (lambda s: Clamp(s), lambda s: Scale(s), lambda s: Add(s)):
        with pytest.raises(SteeringError, match="number|finite"):
            make(bad)
    with pytest.raises(SteeringError, match="finite"):
        VectorSteering(torch.ones(4), "h", scale=bad if bad != "strong" else math.nan)


def test_bad_feature_index_unit_and_positions() -> None:
    sae = make_sae("relu", d_in=16, d_sae=32)
    with pytest.raises(SteeringError, match=r"out of range.*32 features"):
        FeatureSteering(sae, {32: Clamp(1)})
    with pytest.raises(SteeringError, match="out of range"):
        FeatureSteering(sae, {-1: Clamp(1)})
    with pytest.raises(SteeringError, match="integer"):
        FeatureSteering(sae, {"3": Clamp(1)})
    with pytest.raises(SteeringError, match="unknown unit"):
        Clamp(1, unit="sigma")
    with pytest.raises(SteeringError, match="unknown position mode 'middle'"):
        FeatureSteering(sae, {1: Clamp(1)}, positions="middle")
    with pytest.raises(SteeringError, match="unknown position mode"):
        VectorSteering(torch.ones(16), "h", positions="last_token")
    with pytest.raises(SteeringError, match="Clamp"):
        FeatureSteering(sae, {1: 5.0})


def test_position_masks_with_left_padding() -> None:
    tr = PositionTracker()
    # Two rows: row 0 padded by 2 columns; prompt is 6 columns; assistant header at col 4 / 3.
    tr.set_batch(torch.tensor([2, 0]), 6, torch.tensor([4, 3]))
    tr.begin_forward(0)
    m = {mode: tr.mask(mode, 2, 6, torch.device("cpu")) for mode in ("all", "prompt", "generated", "after_last_user")}
    assert m["all"].tolist() == [[0, 0, 1, 1, 1, 1], [1] * 6]
    assert m["prompt"].tolist() == m["all"].tolist()
    assert not m["generated"].any()
    assert m["after_last_user"].tolist() == [[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]]
    tr.begin_forward(7)  # a KV-cached decode step: one column, the 8th
    for mode in ("all", "generated", "after_last_user"):
        assert tr.mask(mode, 2, 1, torch.device("cpu")).all()
    assert not tr.mask("prompt", 2, 1, torch.device("cpu")).any()


def test_contrastive_ranks_planted_feature_first() -> None:
    torch.manual_seed(0)
    sae = make_sae("relu", d_in=32, d_sae=64, seed=6)
    planted = 17
    direction = sae.W_enc[:, planted].detach() / sae.W_enc[:, planted].norm()
    neg = [torch.randn(int(torch.randint(3, 9, ())), 32) for _ in range(12)]
    pos = [torch.randn(int(torch.randint(3, 9, ())), 32) + 4.0 * direction for _ in range(12)]
    hits = contrastive_from_acts(sae, pos, neg, k=5)
    assert hits[0].feature == planted
    assert hits[0].details["pos_mean"] > hits[0].details["neg_mean"]
    assert hits[0].score > 2 * hits[1].score


def test_keyword_scorer_and_distinct_n() -> None:
    s = keyword_scorer(["golden gate", "bridge"])
    assert concept_score(["The Golden Gate is red.", "A bridgehead.", "Nothing"], s) == [1.0, 0.0, 0.0]
    assert keyword_scorer(regex=r"san\s+fran")("I love San  Francisco") == 1.0
    with pytest.raises(SteeringError, match="regex"):
        keyword_scorer(regex="(")
    assert distinct_n("a b a b a b", 2) == pytest.approx(2 / 5)
    assert distinct_n("one", 2) == 1.0
