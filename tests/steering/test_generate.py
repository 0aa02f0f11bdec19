"""Steered generation on the real model: KV cache, positions, batching, bad input."""

from __future__ import annotations

import math

import pytest
import torch

import sae as saelib
import steering
from steering import Clamp, FeatureSteering, SteeringError, VectorSteering, generation
from steering.positions import generation_header_ids, last_occurrence
from steering.rendering import render
from tests.steering.conftest import HOOK, make_sae

PROMPTS = ["Tell me about yourself.", "What should I cook tonight? Something quick please."]
N_NEW = 6


@pytest.fixture(scope="module")
def strong_sae():
    return make_sae("topk", seed=2)


def _iv(sae, positions="all", value=60.0):
    return FeatureSteering(sae, {5: Clamp(value)}, positions=positions)


@pytest.mark.parametrize("positions", ["all", "prompt", "generated", "after_last_user"])
def test_kv_cache_on_and_off_give_the_same_tokens(model, strong_sae, positions) -> None:
    iv = _iv(strong_sae, positions)
    on = steering.generate(model, PROMPTS, iv, max_new_tokens=N_NEW, use_cache=True)
    off = steering.generate(model, PROMPTS, iv, max_new_tokens=N_NEW, use_cache=False)
    assert [g.steered_ids for g in on] == [g.steered_ids for g in off]
    assert [g.unsteered_ids for g in on] == [g.unsteered_ids for g in off]
    # The steering acts on the text (for "generated": on decode steps, not only the prompt).
    assert any(g.steered_ids != g.unsteered_ids for g in on)


def test_unsteered_greedy_text_continues_the_prompt(model) -> None:
    """The KV-cached loop continues the sentence (transformers 5.24 once gave "The-----")."""
    [g] = steering.generate(model, "What is the capital of France?", None, compare=False, max_new_tokens=12)
    words = g.steered.split()
    assert "Paris" in g.steered, g.steered
    assert len(words) >= 4 and len(set(words)) >= 4, g.steered


def test_kv_cache_fails_loudly_when_the_model_does_not_fill_it(model) -> None:
    """A transformers that ignores the cache it is given raises, naming the versions and the fix."""

    class Ignores(torch.nn.Module):
        config = model.original_model.config

        def forward(self, input_ids, past_key_values=None, use_cache=None, **kwargs):
            return model.original_model(input_ids=input_ids, use_cache=False, **kwargs)

    kv = saelib.KVCache(Ignores())
    with pytest.raises(saelib.KVCacheError, match=r"holds 0 positions.*transformers \S+.*scripts/install.sh"):
        kv.forward(torch.tensor([[1, 2, 3]]))


def test_batched_and_single_prompt_agree_under_a_seed(model, strong_sae) -> None:
    iv = _iv(strong_sae, "all", value=20.0)
    batch = steering.generate(model, PROMPTS, iv, max_new_tokens=N_NEW, temperature=1.0, seed=7)
    single = steering.generate(model, PROMPTS[1:], iv, max_new_tokens=N_NEW, temperature=1.0, seed=7)
    assert single[0].steered_ids == batch[1].steered_ids
    assert single[0].unsteered_ids == batch[1].unsteered_ids
    other = steering.generate(model, PROMPTS[1:], iv, max_new_tokens=N_NEW, temperature=1.0, seed=8,
                              compare=False)
    assert other[0].steered_ids != batch[1].steered_ids  # the seed matters


def test_context_manager_equals_passing_interventions(model, strong_sae) -> None:
    hp = model.hook_dict[HOOK]
    n_hooks = len(hp.fwd_hooks)
    direct = steering.generate(model, PROMPTS[:1], (strong_sae, {5: Clamp(60.0)}), max_new_tokens=N_NEW)
    with steering.steer(model, strong_sae, {5: Clamp(60.0)}):
        assert len(hp.fwd_hooks) == n_hooks + 1
        inside = steering.generate(model, PROMPTS[:1], None, max_new_tokens=N_NEW)  # unsteered = paused
    assert inside[0].steered_ids == direct[0].steered_ids
    assert inside[0].unsteered_ids == direct[0].unsteered_ids != direct[0].steered_ids
    assert len(hp.fwd_hooks) == n_hooks  # the hooks are gone after the block


def _edited_columns(model, positions: str, prompts: list[str]) -> list[set[tuple[int, int]]]:
    """Run generate with a spy around the steering hook; return (row, column) pairs it changed."""
    vec = torch.zeros(576)
    vec[0] = 1000.0
    iv = VectorSteering(vec, HOOK, positions=positions)
    hp = model.hook_dict[HOOK]
    before: list[torch.Tensor] = []
    changed: list[torch.Tensor] = []

    def pre(x, hook):
        before.append(x.clone())

    def post(x, hook):
        changed.append((x != before[len(changed)]).any(-1))

    with steering.steer(model, [iv]):
        h1 = hp.add_hook(pre, prepend=True)
        h2 = hp.add_hook(post)
        try:
            gens = steering.generate(model, prompts, None, max_new_tokens=3, compare=False, stop_at_eos=False)
        finally:
            for h in (h1, h2):
                h.hook.remove()
                hp.fwd_hooks[:] = [x for x in hp.fwd_hooks if x is not h]
    P = changed[0].shape[1]
    out: list[set[tuple[int, int]]] = [set() for _ in prompts]
    for step, m in enumerate(changed):
        col0 = 0 if step == 0 else P + step - 1
        for b, c in m.nonzero().tolist():
            out[b].add(c + col0 - (P - len(gens[b].prompt_ids)))  # column -> position in the row
    return out


def test_each_position_mode_touches_exactly_its_positions(model) -> None:
    tok = model.tokenizer
    rows = [render(tok, p, chat=True) for p in PROMPTS]
    header = generation_header_ids(tok)
    n_new = 3  # positions 0..L-1 are the prompt; L, L+1 the generated inputs (the last is never fed)
    for mode in ("all", "prompt", "generated", "after_last_user"):
        got = _edited_columns(model, mode, PROMPTS)
        for b, r in enumerate(rows):
            L = len(r)
            expect = {
                "all": set(range(L + n_new - 1)),
                "prompt": set(range(L)),
                "generated": set(range(L, L + n_new - 1)),
                "after_last_user": set(range(last_occurrence(r, header), L + n_new - 1)),
            }[mode]
            assert got[b] == expect, (mode, b)


def test_auto_tracking_outside_generate(model) -> None:
    """model.original_model called directly (any decode loop) with the KV cache: generated-only steering."""
    vec = torch.zeros(576)
    vec[0] = 1000.0
    hp = model.hook_dict[HOOK]
    seen: list[torch.Tensor] = []
    h = None
    ids = torch.tensor([model.tokenizer.encode("Hello there, friend")])
    with torch.no_grad(), steering.steer(model, [VectorSteering(vec, HOOK, positions="generated")]):
        h = hp.add_hook(lambda x, hook: seen.append(x[..., 0].clone()))
        try:
            kv = saelib.KVCache(model.original_model)
            nxt = kv.forward(ids).logits[:, -1:].argmax(-1)
            kv.forward(nxt)
        finally:
            h.hook.remove()
            hp.fwd_hooks[:] = [x for x in hp.fwd_hooks if x is not h]
    assert (seen[0].abs() < 500).all()  # the prompt is untouched
    assert (seen[1] > 500).all()  # the decode step is steered


def test_bad_inputs_fail_before_generation(model, monkeypatch) -> None:
    def boom(*a, **k):
        raise AssertionError("generation started")

    monkeypatch.setattr(generation, "sample_rows", boom)
    sae = make_sae("relu")
    with pytest.raises(SteeringError, match="out of range"):
        steering.generate(model, "hi", (sae, {10_000: Clamp(1)}))
    narrow = make_sae("relu", d_in=100)
    with pytest.raises(SteeringError, match="d_in is 100 but hook .* has width 576"):
        steering.generate(model, "hi", (narrow, {1: Clamp(1)}))
    with pytest.raises(ValueError, match="unknown hook"):
        steering.generate(model, "hi", FeatureSteering(sae, {1: Clamp(1)}, hook="blocks.3.hook_resid_postt"))
    with pytest.raises(ValueError, match="layer 99"):
        steering.generate(model, "hi", FeatureSteering(sae, {1: Clamp(1)}, hook="blocks.99.hook_resid_post"))
    with pytest.raises(SteeringError, match="finite"):
        steering.generate(model, "hi", (sae, {1: Clamp(math.nan)}))
    with pytest.raises(SteeringError, match="unknown position mode"):
        steering.steer(model, sae, {1: Clamp(1)}, positions="sometimes")
    with pytest.raises(SteeringError, match="after_last_user"):
        steering.generate(model, "hi", FeatureSteering(sae, {1: Clamp(1)}, positions="after_last_user"), chat=False)
    with pytest.raises(SteeringError, match="max_new_tokens"):
        steering.generate(model, "hi", None, max_new_tokens=0)


def test_several_hooks_and_saes_at_once(model) -> None:
    """A vector at layer 2 and two SAEs at layer 3, in one forward: each edit lands where it should."""
    vec = torch.randn(576)
    sae_a, sae_b = make_sae("relu", seed=3), make_sae("jumprelu", seed=4)
    ivs = [
        VectorSteering(vec, "blocks.2.hook_resid_post"),
        FeatureSteering(sae_a, {1: Clamp(30.0), 2: Clamp(-5.0)}),
        FeatureSteering(sae_b, {7: Clamp(20.0)}),
    ]
    seen: dict[str, list[torch.Tensor]] = {}
    spies = []

    def spy(name):
        return lambda x, hook: seen.setdefault(name, []).append(x.clone())

    ids = torch.tensor([model.tokenizer.encode("Hello there, friend")])
    with torch.no_grad(), steering.steer(model, ivs):
        for hook, tag in (("blocks.2.hook_resid_post", "2"), (HOOK, "3")):
            hp = model.hook_dict[hook]
            spies += [(hp, hp.add_hook(spy(tag + "in"), prepend=True)), (hp, hp.add_hook(spy(tag + "out")))]
        try:
            model.original_model(input_ids=ids)
        finally:
            for hp, h in spies:
                h.hook.remove()
                hp.fwd_hooks[:] = [x for x in hp.fwd_hooks if x is not h]
    torch.testing.assert_close(seen["2out"][0], seen["2in"][0] + vec)
    x3 = seen["3in"][0][0]
    expect = ivs[2].apply(ivs[1].apply(x3))  # SAEs at one hook apply in order
    torch.testing.assert_close(seen["3out"][0][0], expect)
    assert not torch.allclose(expect, ivs[1].apply(x3))


def test_bf16_sae_on_fp32_activations() -> None:
    """bf16 SAEs (GPU setups) edit fp32 activations correctly within bf16 precision."""
    s32 = make_sae("topk", d_in=64, d_sae=128, seed=5)
    s16 = make_sae("topk", d_in=64, d_sae=128, seed=5, dtype="bfloat16")
    with torch.no_grad():
        for name, p in s16.named_parameters():
            p.copy_(dict(s32.named_parameters())[name].to(torch.bfloat16))
    x = torch.randn(4, 64) * 3
    a = FeatureSteering(s32, {3: Clamp(10.0)}).apply(x)
    b = FeatureSteering(s16, {3: Clamp(10.0)}).apply(x)
    assert b.dtype == torch.float32
    torch.testing.assert_close(b, a, rtol=0.05, atol=0.15)
    assert (a - x).abs().max() > 1.0
