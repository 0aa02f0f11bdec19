"""Finding features (text, contrastive, output), the CAA baseline, and max activations."""

from __future__ import annotations

import pytest
import torch

import sae as saelib
import steering
from sae.features.demo_db import build_demo_db
from steering import Clamp, FeatureSteering, SteeringError
from steering.capture import hook_activations
from steering.rendering import render
from steering.search import _lens_top_ids
from steering.steer_hooks import prepare
from tests.steering.conftest import HOOK, make_sae

LATE_HOOK = "blocks.27.hook_resid_post"


def test_top_features_on_a_span(model, relu_sae) -> None:
    text = "The Golden Gate Bridge is in San Francisco."
    hits = steering.top_features(model, relu_sae, text, span="Golden Gate", k=3)
    ids = render(model.tokenizer, text, chat=False)
    acts = hook_activations(model, torch.tensor([ids]), [HOOK])[HOOK][0]
    # Tokens covering "Golden Gate": find them by decoding, independently of the search code.
    pieces = [model.tokenizer.decode([i]) for i in ids]
    cols = [j for j, p in enumerate(pieces) if p.strip() in ("Golden", "Gate")]
    expect = relu_sae.encode(acts[cols]).max(0).values
    assert hits[0].feature == int(expect.argmax())
    assert hits[0].score == pytest.approx(float(expect.max().detach()), rel=1e-4)
    assert "[[" in hits[0].examples[0]["text"]
    with pytest.raises(SteeringError, match="does not occur"):
        steering.top_features(model, relu_sae, text, span="Eiffel")


def test_contrastive_features_on_chat_replies(model, relu_sae) -> None:
    pos = [[{"role": "user", "content": "Rate my poem."}, {"role": "assistant", "content": "Brilliant, I love it!"}]]
    neg = [[{"role": "user", "content": "Rate my poem."}, {"role": "assistant", "content": "The meter is uneven."}]]
    hits = steering.contrastive_features(model, relu_sae, pos, neg, k=4, chat=True, region="after_last_user")
    assert len(hits) == 4 and hits[0].score >= hits[1].score > 0
    assert hits[0].details["pos_mean"] > hits[0].details["neg_mean"]
    assert hits[0].examples and "[[" in hits[0].examples[0]["text"]
    with pytest.raises(SteeringError, match="after_last_user"):
        steering.contrastive_features(model, relu_sae, ["plain"], ["text"], region="after_last_user")


def _paris_sae(model):
    """A random SAE whose feature 9 writes " Paris": the direction whose logit-lens logits best
    match "Paris only" (least squares)."""
    sae = make_sae("relu", hook=LATE_HOOK, d_sae=64, seed=9)
    paris = model.tokenizer.encode(" Paris", add_special_tokens=False)[0]
    lens = saelib.unembedding(model)
    U = saelib.lens_logits(torch.eye(lens.W_U.shape[0]), *lens)  # the (linear) lens as a matrix [d, V]
    d = torch.linalg.solve(U @ U.T, U[:, paris])
    with torch.no_grad():
        sae.W_dec[9] = d / d.norm()
    return sae


def test_output_features_and_output_score_find_a_planted_feature(model) -> None:
    sae = _paris_sae(model)
    hits = steering.output_features(model, sae, ["Paris"], k=3)
    assert hits[0].feature == 9
    assert steering.logit_lens(model, sae, 9, k=3)[0][0] == " Paris"
    scores = steering.output_score(model, sae, [9, 10], prompts=["Tell me a fact."], strength=300.0, unit="abs")
    assert scores[9] > 0.3
    assert scores[9] > 5 * abs(scores[10])
    by_concept = steering.output_score(model, sae, [9], prompts=["Tell me a fact."], strength=300.0, unit="abs",
                                       concept_tokens=["Paris", "France"])
    assert by_concept[9] > 0.3


def test_feature_search_reads_the_feature_databases_logit_lens(model, tmp_path) -> None:
    db_path, sae_dir = build_demo_db(tmp_path, model, d_sae=64, layer=2, n_tokens=256, context_size=32)
    db, sae = saelib.FeatureDB(db_path), saelib.load_sae(sae_dir)
    tok = model.tokenizer
    for f in (1, 17, 40):
        stored = db.feature(f).top_logits  # what the explorer shows: (token id, token, logit)
        searched = steering.logit_lens(model, sae, f, k=len(stored))
        assert [t for t, _ in searched] == [tok.decode([tid]) for tid, _, _ in stored]
        assert [v for _, v in searched] == pytest.approx([v for _, _, v in stored], rel=1e-4)
        assert _lens_top_ids(model, sae, f, len(stored)).tolist() == [tid for tid, _, _ in stored]  # output_score


def test_caa_vector_is_a_difference_of_means(model) -> None:
    pos, neg = ["I love San Francisco."], ["I love Paris too."]
    vec = steering.caa_vector(model, HOOK, pos, neg, region="last")
    assert vec.vector.shape == (576,) and vec.hook == HOOK
    acts = {}
    for name, p in (("pos", pos[0]), ("neg", neg[0])):
        ids = render(model.tokenizer, p, chat=False)
        acts[name] = hook_activations(model, torch.tensor([ids]), [HOOK])[HOOK][0, -1]
    torch.testing.assert_close(vec.vector, acts["pos"] - acts["neg"], rtol=1e-4, atol=1e-4)
    zero = steering.caa_vector(model, HOOK, pos, pos)
    assert zero.vector.abs().max() == 0
    assert vec.with_scale(3.0).scale == 3.0


class _StubDB:
    def max_activation(self, i: int) -> float:
        return 10.0 + i


def test_max_activations_from_scan_and_db(model) -> None:
    sae = make_sae("relu", d_sae=64, seed=11)
    texts = ["The cat sat on the mat.", "Bridges span rivers and bays."]
    maxes = steering.max_activations(model, sae, texts=texts)
    best = torch.zeros(64)
    for t in texts:
        ids = render(model.tokenizer, t, chat=False)
        a = hook_activations(model, torch.tensor([ids]), [HOOK])[HOOK][0, 1:]  # drop BOS (special)
        best = torch.maximum(best, sae.encode(a).max(0).values)
    torch.testing.assert_close(maxes, best, rtol=1e-4, atol=1e-5)
    assert steering.max_activations(model, sae, db=_StubDB(), features=[2, 5]).tolist() == [12.0, 15.0]
    iv = FeatureSteering(sae, {5: Clamp(2, unit="max")}, feature_db=_StubDB())
    prepare(model, [iv])
    assert iv._max_acts.tolist() == [15.0]


def test_selection_by_a_steered_generation_prefers_the_feature_that_writes_the_concept(model) -> None:
    from steering.reference_experiments import ExperimentConfig, select_by_steering
    from steering.search import FeatureHit

    sae = _paris_sae(model)
    hits = [FeatureHit(feature=f, score=1.0) for f in (10, 9, 11)]
    cfg = ExperimentConfig(unit="abs", score_strength=60.0, select=2, select_tokens=6)
    ranked = select_by_steering(model, sae, hits, cfg, ["Tell me a fact."], ["Paris"], "all")
    assert [h.feature for h in ranked] == [9, 10, 11]  # only the first `select` are tried; the rest keep their order
    assert ranked[0].details["steering_score"] == 1.0 and ranked[1].details["steering_score"] == 0.0
    assert "steering_score" not in ranked[2].details
