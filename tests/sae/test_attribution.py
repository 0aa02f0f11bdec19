"""sae.attribute: gradient x activation at an SAE's codes, checked against real ablations (issue 16)."""

from __future__ import annotations

import pytest
import torch

import sae as saelib
from tests.steering.conftest import make_sae

PROMPT = "The Golden Gate Bridge is a famous bridge in San"


@pytest.fixture(scope="module")
def attributed(model):
    s = make_sae("relu")
    metric = saelib.logit_metric(model, " Francisco", baseline=" Diego")
    return s, metric, saelib.attribute(model, s, PROMPT, metric)


def test_attribution_shapes_and_the_clean_metric(model, attributed) -> None:
    s, metric, res = attributed
    T = model.to_tokens(PROMPT).shape[1]
    assert res.acts_TF.shape == res.effect_TF.shape == (T, s.d_sae)
    assert len(res.tokens) == T and res.tokens[-1].strip() == "San"
    with torch.no_grad():
        assert res.metric == pytest.approx(float(metric(model(model.to_tokens(PROMPT)))), abs=1e-3)
    assert bool((res.effect_TF[res.acts_TF == 0] == 0).all())  # an inactive pair has no effect
    assert res.tokens[0] == model.tokenizer.bos_token and bool((res.effect_TF[0] == 0).all())  # BOS: not spliced
    assert bool((res.effect_TF[1:] != 0).any())
    (p, tok, f, e), *_ = res.top(5)
    assert abs(e) == pytest.approx(float(res.effect_TF.abs().max())) and res.acts_TF[p, f] > 0


def test_estimates_agree_with_real_ablations(model, attributed) -> None:
    s, metric, res = attributed
    check = saelib.check_attribution(model, s, PROMPT, metric, res, n_pairs=24)
    assert check.n_pairs == 24
    assert check.correlation > 0.9, check.pairs
    assert check.sign_agreement > 0.8


def test_bad_metric_and_prompt_name_the_fix(model) -> None:
    s = make_sae("relu")
    with pytest.raises(ValueError, match="scalar"):
        saelib.attribute(model, s, PROMPT, lambda logits: logits[0, -1, :3])
    with pytest.raises(ValueError, match="one prompt"):
        saelib.attribute(model, s, model.to_tokens(["a b", "c d"]), lambda logits: logits[0, -1, 0])
    with pytest.raises(ValueError, match="encodes to no token"):
        saelib.logit_metric(model, "")
