"""sae.attached: SAEs spliced into the embedded model, their insides cached and hookable (issue 16)."""

from __future__ import annotations

import pytest
import torch

import sae as saelib
from sae.attachment import SAE_HOOKS, AttachError
from tests.steering.conftest import HOOK, make_sae

TEXT = ["The Golden Gate Bridge is in San Francisco.", "She cooked pasta with garlic for dinner."]


@pytest.fixture(scope="module")
def tokens(model) -> torch.Tensor:
    return model.to_tokens(TEXT)


def test_with_the_error_term_the_model_is_unchanged(model, tokens) -> None:
    s = make_sae("relu")
    clean = model(tokens)
    with saelib.attached(model, s, use_error_term=True) as m:
        spliced = m(tokens)
    torch.testing.assert_close(spliced, clean, atol=1e-5, rtol=0)
    torch.testing.assert_close(model(tokens), clean)  # the splice is gone after the block


def test_the_cache_holds_every_sae_hook_point(model, tokens) -> None:
    s = make_sae("relu")
    with saelib.attached(model, [s]) as m:
        logits, cache = m.run_with_cache(tokens)
    B, T = tokens.shape
    x = cache[f"{HOOK}.hook_sae_input"]
    assert x.shape == (B, T, 576)
    for name in SAE_HOOKS:
        assert f"{HOOK}.{name}" in cache, name
    acts = cache[f"{HOOK}.hook_sae_acts_post"]
    assert acts.shape == (B, T, s.d_sae) and bool((acts > 0).any())
    torch.testing.assert_close(acts, s.encode(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache[f"{HOOK}.hook_sae_recons"], s.decode(acts), atol=1e-5, rtol=1e-5)
    assert "blocks.0.hook_resid_post" in cache or any(k.startswith("blocks.0.") for k in cache)
    # without the error term, the model ran on the reconstruction
    assert not torch.allclose(logits, model(tokens), atol=1e-3)


def test_a_feature_edit_changes_the_output_by_its_own_decoded_effect(model, tokens) -> None:
    s = make_sae("relu")
    with saelib.attached(model, s, use_error_term=True) as m:
        _, base = m.run_with_cache(tokens)
        f = int(base[f"{HOOK}.hook_sae_acts_post"].sum((0, 1)).argmax())

        def ablate(acts: torch.Tensor, hook) -> torch.Tensor:
            assert hook.name == f"{HOOK}.hook_sae_acts_post"
            acts = acts.clone()
            acts[..., f] = 0.0
            return acts

        with m.hooks([(f"{HOOK}.hook_sae_acts_post", ablate)]):
            logits, edited = m.run_with_cache(tokens)
        after = m(tokens)  # the hook is gone again
    out = f"{HOOK}.hook_sae_output"
    expected = -base[f"{HOOK}.hook_sae_acts_post"][..., f, None] * s.W_dec[f]
    torch.testing.assert_close(edited[out] - base[out], expected, atol=1e-4, rtol=1e-4)
    # the error term is that of the unedited input, so it does not cancel the edit
    torch.testing.assert_close(edited[f"{HOOK}.hook_sae_error"], base[f"{HOOK}.hook_sae_error"])
    assert not torch.allclose(logits, after, atol=1e-4)
    torch.testing.assert_close(after, model(tokens), atol=1e-5, rtol=0)


def test_without_the_error_term_the_loss_is_evaluates(model, tokens) -> None:
    from sae.eval_metrics import next_token_ce
    from sae.splice import _token_filter, splice_ce

    s = make_sae("relu")
    cfg = saelib.EvalConfig()
    expected = splice_ce(model, s, [tokens], cfg)
    with saelib.attached(model, s, token_filter=_token_filter(model, HOOK, cfg)) as m:
        ce = float(next_token_ce(m(tokens), tokens).mean())
    assert expected.n_kept_special > 0  # the BOS kept its activation in both
    assert ce == pytest.approx(expected.ce_loss_sae, abs=1e-4)


def test_bad_attachments_name_the_fix(model, tokens) -> None:
    with pytest.raises(AttachError, match="one per hook"):
        saelib.attached(model, [make_sae("relu"), make_sae("relu", seed=1)])
    with pytest.raises(AttachError, match="no SAEs"):
        saelib.attached(model, [])
    with saelib.attached(model, make_sae("relu")) as m, pytest.raises(AttachError, match="hook_sae_acts_post"):
        with m.hooks([("blocks.9.hook_resid_post.hook_sae_acts_post", lambda a, h: a)]):
            pass
    wrong = make_sae("relu", d_in=64)
    with pytest.raises(ValueError, match="d_in=64"), saelib.attached(model, wrong) as m:
        m(tokens)
