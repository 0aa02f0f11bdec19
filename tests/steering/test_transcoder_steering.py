"""Steering with a transcoder's latents on the real model (issue 15, item 3): codes read at the MLP's
input, edits added to its output, the error term kept exactly, on every forward (KV cache too)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch

import sae as saelib
import steering
from steering import Add, Clamp, FeatureSteering, Scale, SteeringError
from steering.rendering import render

IN_HOOK, OUT_HOOK = "blocks.3.mlp.hook_in", "blocks.3.hook_mlp_out"
PROMPTS = ["Tell me about yourself.", "What should I cook tonight? Something quick please."]
N_NEW = 4


def make_transcoder(skip: bool = False, d_out: int = 576, seed: int = 0, hook_in: str = IN_HOOK,
                    hook_out: str = OUT_HOOK):
    """A random ReLU transcoder (so many latents fire) with unit decoder rows (a clamp to v moves the MLP's
    output by about v), W_skip non-zero when `skip`."""
    torch.manual_seed(seed)
    tc = saelib.build_sae(saelib.SAEConfig(architecture="relu", d_in=576, d_out=d_out, d_sae=64, hook_name=hook_in,
                                           hook_name_out=hook_out, skip_connection=skip))
    with torch.no_grad():
        tc.W_dec /= tc.W_dec.norm(dim=1, keepdim=True)
        tc.b_enc.normal_(0, 0.05)
        tc.b_dec.normal_(0, 0.05)
        if skip:
            tc.W_skip.normal_(0, 0.02)
    return tc.eval()


@pytest.fixture(scope="module")
def ids(model) -> torch.Tensor:
    return torch.tensor([model.tokenizer.encode("The Golden Gate Bridge is painted orange.")])


@contextmanager
def spying(model, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """The activations at `names` after every hook installed before (steering's included)."""
    seen: dict[str, torch.Tensor] = {}
    added = []
    for name in names:
        hp = model.hook_dict[name]

        def spy(x: torch.Tensor, hook, name: str = name) -> None:
            seen[name] = x.detach().clone()

        added.append((hp, hp.add_hook(spy)))
    try:
        yield seen
    finally:
        for hp, h in added:
            h.hook.remove()
            hp.fwd_hooks[:] = [x for x in hp.fwd_hooks if x is not h]


def forward(model, ids: torch.Tensor, wrap: Callable[[], object] | None = None) -> tuple[torch.Tensor, dict]:
    """(logits, {hook: activation}) of one forward, steered inside `wrap()` when given."""
    with torch.no_grad(), (wrap() if wrap else _null()):
        with spying(model, [IN_HOOK, OUT_HOOK]) as seen:
            logits = model.original_model(input_ids=ids).logits
    return logits, seen


@contextmanager
def _null() -> Iterator[None]:
    yield


@pytest.mark.parametrize("skip", [False, True])
def test_an_edit_that_changes_nothing_leaves_the_model_exactly_as_it_was(model, ids, skip: bool) -> None:
    """Scale 1 / Add 0 move the output by exactly zero: the transcoder's error term (skip term and
    biases included) is the MLP's output less its reconstruction, so nothing of the splice shows."""
    tc = make_transcoder(skip=skip)
    clean, _ = forward(model, ids)
    edits = {3: Scale(1.0), 7: Add(0.0), 11: Scale(1.0)}
    steered, _ = forward(model, ids, lambda: steering.steer(model, tc, edits))
    assert torch.equal(steered, clean)


def test_a_clamp_moves_the_mlp_output_by_its_decoded_change(model, ids) -> None:
    """Clamping latent j to v adds (v - f_j(x)) W_dec[j] at the output hook, x read at the input hook."""
    tc = make_transcoder(skip=True)
    clean, base = forward(model, ids)
    with torch.no_grad():
        f_S = tc.encode(base[IN_HOOK][0])
    j = int((f_S > 0).sum(0).argmax())  # a latent that fires at some positions and not others
    v = 8.0
    iv = FeatureSteering(tc, {j: Clamp(v)})
    assert iv.describe() == f"transcoder@{IN_HOOK}->{OUT_HOOK}[{j}:clamp(8)]"
    steered, seen = forward(model, ids, lambda: steering.steer(model, iv))
    torch.testing.assert_close(seen[IN_HOOK], base[IN_HOOK], rtol=0, atol=0)  # the input is read, not changed
    want = (v - f_S[:, j])[:, None] * tc.W_dec[j].detach()
    torch.testing.assert_close(seen[OUT_HOOK][0] - base[OUT_HOOK][0], want, rtol=1e-4, atol=1e-4)
    assert (steered - clean).abs().max() > 0.1  # downstream logits move


def test_unit_max_is_the_latents_maximum_at_the_input_hook(model, ids) -> None:
    """`max_activations` encodes what the input hook sees; unit="max" clamps to v x that maximum."""
    tc = make_transcoder()
    texts = ["The Golden Gate Bridge is painted orange.", "Rivers flow to the sea."]
    maxes = steering.max_activations(model, tc, texts=texts)
    rows = [render(model.tokenizer, t, chat=False) for t in texts]
    tok_filter = saelib.TokenFilter(model, IN_HOOK)
    want = torch.zeros(tc.d_sae)
    for r in rows:
        row = torch.tensor([r])
        acts = steering.hook_activations(model, row, [IN_HOOK])[IN_HOOK]
        keep = tok_filter(row, acts, torch.ones_like(row)).keep
        want = torch.maximum(want, tc.encode(acts[keep]).detach().max(0).values)
    torch.testing.assert_close(maxes, want, rtol=1e-4, atol=1e-4)
    j = int(maxes.argmax())
    assert maxes[j] > 0
    # Steering resolves unit="max" from the same maxima (here given, as a feature DB would).
    iv = FeatureSteering(tc, {j: Clamp(2.0, unit="max")}, _max_acts=maxes[[j]])
    _, base = forward(model, ids)
    _, seen = forward(model, ids, lambda: steering.steer(model, iv))
    with torch.no_grad():
        f_S = tc.encode(base[IN_HOOK][0])[:, j]
    want_delta = (2.0 * float(maxes[j]) - f_S)[:, None] * tc.W_dec[j].detach()
    torch.testing.assert_close(seen[OUT_HOOK][0] - base[OUT_HOOK][0], want_delta, rtol=1e-4, atol=1e-4)


def test_kv_cache_on_and_off_give_the_same_tokens(model) -> None:
    """Every decode step is steered through both hooks: with the cache each step is one position, and
    positions="generated" steers those steps only (a hook that missed them would change nothing)."""
    tc = make_transcoder(seed=2)
    iv = FeatureSteering(tc, {5: Clamp(150.0), 9: Clamp(-75.0)}, positions="generated")
    on = steering.generate(model, PROMPTS[:1], iv, max_new_tokens=N_NEW, use_cache=True)
    off = steering.generate(model, PROMPTS[:1], iv, max_new_tokens=N_NEW, use_cache=False, compare=False)
    assert [g.steered_ids for g in on] == [g.steered_ids for g in off]
    assert on[0].steered_ids[:1] == on[0].unsteered_ids[:1]  # the prompt's forward (unsteered) picks the first token
    assert on[0].steered_ids != on[0].unsteered_ids  # the edit acts on the text


def test_bad_transcoders_fail_before_any_forward_with_the_fix(model, ids) -> None:
    narrow_out = make_transcoder(d_out=100)
    with pytest.raises(SteeringError, match=r"d_out is 100 but its output hook 'blocks.3.hook_mlp_out'.*"
                                            r"width 576.*hook_name_out"):
        with steering.steer(model, narrow_out, {1: Clamp(1.0)}):
            pass
    tc = make_transcoder()
    with pytest.raises(SteeringError, match="needs two hooks"):
        FeatureSteering(tc, {1: Clamp(1.0)}).apply(torch.zeros(2, 576))
    # Output hook upstream of the input hook: the output fires with no codes for this forward.
    backwards = make_transcoder(hook_in="blocks.4.mlp.hook_in", hook_out=OUT_HOOK)
    with pytest.raises(SteeringError, match="input hook must come earlier"):
        forward(model, ids, lambda: steering.steer(model, backwards, {1: Clamp(1.0)}))
