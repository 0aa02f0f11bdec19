"""The one token filter (`sae.token_filter`), and proof that every stage now applies it alike."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import sae as saelib
from sae.config import EvalConfig
from sae.extract import ActivationExtractor
from sae.splice import splice_ce
from sae.token_filter import TokenFilter, drops_special_tokens, filter_tokens, is_residual_hook
from steering.capture import prompt_set_activations
from steering.rendering import render

HOOK = "blocks.3.hook_resid_post"
# Three texts of 12 tokens each (13 with BOS): one batch with no padding for the cache's path.
TEXTS = [
    "The cat sat on the warm mat and watched the birds.",
    "In spring the old orchard blooms with white and pink flowers.",
    "She wrote three letters to her brother before the storm came.",
]
PLANTED = 6  # position of the outlier planted in the last row


def _acts(norms: list[list[float]]) -> torch.Tensor:
    acts = torch.zeros(len(norms), len(norms[0]), 3)
    acts[..., 0] = torch.tensor(norms)
    return acts


def test_drops_special_tokens_then_outliers_of_their_row() -> None:
    tokens = torch.tensor([[1, 5, 6, 7, 0, 8]])
    acts = _acts([[500.0, 10.0, 11.0, 200.0, 9.0, 12.0]])
    m = filter_tokens(tokens, acts, torch.tensor([0, 1, 2]), max_norm_ratio=10.0)
    assert m.keep.tolist() == [[False, True, True, False, False, True]]
    assert (m.n_special, m.n_outlier) == (2, 1)  # BOS and <|endoftext|>; 200 > 10 x median 11
    everything = filter_tokens(tokens, acts, None, max_norm_ratio=None)
    assert everything.keep.all() and (everything.n_special, everything.n_outlier) == (0, 0)


def test_a_rows_mask_does_not_depend_on_the_rows_beside_it() -> None:
    tokens = torch.tensor([[1, 5, 6, 7, 8], [1, 5, 6, 7, 8]])
    quiet = _acts([[500.0, 10.0, 11.0, 150.0, 12.0]])
    alone = filter_tokens(tokens[:1], quiet, torch.tensor([1]), 10.0).keep[0]
    assert alone.tolist() == [False, True, True, False, True]
    # Next to a row 100x louder, a batch-wide median would keep the 150-norm token; a row's must not.
    batch = torch.cat([quiet, 100 * quiet])
    m = filter_tokens(tokens, batch, torch.tensor([1]), 10.0)
    assert m.keep[0].tolist() == alone.tolist() and m.keep[1].tolist() == alone.tolist()


def test_padding_is_neither_kept_counted_nor_part_of_the_median() -> None:
    row = _acts([[500.0, 10.0, 11.0, 150.0, 12.0]])
    tokens = torch.tensor([[1, 5, 6, 7, 8]])
    unpadded = filter_tokens(tokens, row, torch.tensor([1]), 10.0)
    pad = torch.full((1, 3, 3), 0.5)  # tiny norms: would drag the median down if counted
    padded = filter_tokens(
        torch.tensor([[2, 2, 2, 1, 5, 6, 7, 8]]), torch.cat([pad, row], dim=1), torch.tensor([1, 2]), 10.0,
        valid_BT=torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]]),
    )
    assert padded.keep[0, 3:].tolist() == unpadded.keep[0].tolist() and not padded.keep[0, :3].any()
    assert (padded.n_special, padded.n_outlier) == (unpadded.n_special, unpadded.n_outlier) == (1, 1)


def test_outlier_prone_hooks() -> None:
    for hook in ("blocks.15.hook_resid_post", "blocks.3.hook_resid_mid", "blocks.3.hook_out", "blocks.0.hook_in",
                 "blocks.1.hook_mlp_out", "blocks.1.mlp.hook_out", "blocks.1.attn.hook_out"):
        assert is_residual_hook(hook), hook
    for hook in ("blocks.3.attn.hook_q", "blocks.3.attn.hook_pattern", "blocks.3.mlp.hook_pre"):
        assert not is_residual_hook(hook), hook


def test_special_tokens_are_dropped_only_at_residual_hooks(model) -> None:
    bos = model.tokenizer.bos_token_id
    assert drops_special_tokens(model, HOOK) and not drops_special_tokens(model, "blocks.3.attn.hook_pattern")
    at_resid = TokenFilter(model, HOOK, extra_special_ids=[None, 12345])
    assert at_resid.special_ids is not None and {bos, 12345} <= set(at_resid.special_ids.tolist())
    assert TokenFilter(model, "blocks.3.attn.hook_pattern").special_ids is None
    assert TokenFilter(model, HOOK, exclude_special_tokens=False).special_ids is None
    with pytest.raises(ValueError, match="max_norm_ratio must be > 1"):
        TokenFilter(model, HOOK, max_norm_ratio=1.0)


def _plant(act: torch.Tensor, hook: Any) -> torch.Tensor:
    """Rows 0 and 1 four times louder, and in row 2 a token at 20x its row's median norm: a
    median over the whole batch (steering's former rule) would have kept that token."""
    act = act.clone()
    act[:2] *= 4.0
    norms = act[2].norm(dim=-1)
    act[2, PLANTED] *= 20 * norms[1:].median() / norms[PLANTED]
    return act


def _evaluate_mask(model, tokens: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """The positions evaluation splices: those its zero-ablation run zeroes (seen entering block 4)."""
    sae = saelib.build_sae(saelib.SAEConfig(architecture="relu", d_in=576, d_sae=64, hook_name=HOOK))
    seen: list[torch.Tensor] = []

    def record(module: Any, args: tuple, kwargs: dict) -> None:
        seen.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    handle = model.blocks[4].register_forward_pre_hook(record, with_kwargs=True)
    try:
        metrics = splice_ce(model, sae, [tokens], EvalConfig(ce_batches=1))
    finally:
        handle.remove()
    assert len(seen) == 3  # clean, SAE spliced, zero-ablated
    return seen[2].abs().amax(dim=-1) == 0, metrics


def test_cache_evaluation_and_steering_keep_the_same_positions(model) -> None:
    rows = [render(model.tokenizer, t, chat=False) for t in TEXTS]
    assert len({len(r) for r in rows}) == 1, [len(r) for r in rows]
    tokens = torch.tensor(rows)
    with model.hooks(fwd_hooks=[(HOOK, _plant)]):
        # engine="bridge": the planting hook lives on the bridge's hook point, which the fast path skips.
        cache = ActivationExtractor(model, [HOOK], engine="bridge")(tokens)
        evaluated, metrics = _evaluate_mask(model, tokens)
        steered = prompt_set_activations(model, TEXTS, HOOK, chat=False, batch_size=len(TEXTS))
    cache_keep = cache.keep[HOOK]
    steer_keep = torch.zeros_like(cache_keep)
    for b, p in enumerate(steered):
        steer_keep[b, p.positions] = True
    assert torch.equal(cache_keep, evaluated) and torch.equal(cache_keep, steer_keep)
    assert not cache_keep[:, 0].any() and not cache_keep[2, PLANTED]  # BOS, and the planted outlier
    assert cache.n_dropped_norm[HOOK] >= 1 and cache.n_dropped_special[HOOK] == len(TEXTS)
    assert (metrics.n_spliced, metrics.n_kept_special, metrics.n_kept_outlier) == (
        int(cache_keep.sum()), cache.n_dropped_special[HOOK], cache.n_dropped_norm[HOOK])
