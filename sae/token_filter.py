"""Which token positions an SAE sees: the one filter behind every stage that reads activations.

The activation cache defines what an SAE was trained on, so its rule holds everywhere (cache,
on-the-fly store, evaluation's splice, feature database, the explorer's live text, steering's
searches and max-activation scan):

1. special tokens (BOS, separators, chat markers) are dropped at hooks on, or writing into, the
   residual stream, where they carry massive activations;
2. of the rest, a position whose norm exceeds ``max_norm_ratio`` x the median norm of the
   remaining positions of its own row is dropped as an outlier.

A row median rather than a batch median makes a position's fate independent of which other
rows happen to share its batch, so the same text gives the same mask in every stage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@dataclass
class TokenMask:
    """The positions kept, and how many were dropped for each reason."""

    keep: Tensor  # bool [B, T]
    n_special: int
    n_outlier: int


def is_residual_hook(hook: str) -> bool:
    """Hooks on the residual stream or writing into it, where special tokens carry outliers.

    Residual hooks (`hook_resid_*`, a block's `hook_in` / `hook_out`) hold the massive
    activations of BOS and other sinks; the attention and MLP outputs that write them
    (`hook_attn_out`, `hook_mlp_out`, `attn.hook_out`, `mlp.hook_out`) carry them too."""
    return "resid" in hook or hook.endswith(("_out", ".hook_in"))


def drops_special_tokens(model: TransformerBridge, hook: str) -> bool:
    """Whether the filter drops special tokens at `hook`, judged by its alias and canonical name."""
    point = model.hook_dict.get(hook)
    canonical = getattr(point, "name", None) or hook
    return is_residual_hook(hook) or is_residual_hook(canonical)


def filter_tokens(
    tokens_BT: Tensor,
    acts_BT_: Tensor,
    special_ids: Tensor | None,
    max_norm_ratio: float | None,
    valid_BT: Tensor | None = None,
) -> TokenMask:
    """The filter itself (module doc). `valid_BT` marks real tokens (e.g. an attention mask):
    padding is neither kept, counted nor part of a row's median. Activations may have several
    trailing dims (per-head hooks); a position's norm is taken over all of them."""
    valid = torch.ones_like(tokens_BT, dtype=torch.bool) if valid_BT is None else valid_BT.bool()
    special = torch.zeros_like(valid)
    if special_ids is not None and special_ids.numel():
        special = valid & torch.isin(tokens_BT, special_ids.to(tokens_BT.device))
    ok = valid & ~special
    outlier = torch.zeros_like(ok)
    if max_norm_ratio is not None:
        norms_BT = torch.linalg.vector_norm(acts_BT_.flatten(2), dim=-1, dtype=torch.float32)
        median_B = norms_BT.masked_fill(~ok, float("nan")).nanmedian(dim=1).values
        # A row with nothing left has a NaN median: every comparison is False, nothing is dropped.
        outlier = ok & (norms_BT > max_norm_ratio * median_B[:, None])
    return TokenMask(ok & ~outlier, int(special.sum()), int(outlier.sum()))


class TokenFilter:
    """The filter at one hook of one model, with the special-token ids resolved once."""

    def __init__(
        self,
        model: TransformerBridge,
        hook: str,
        *,
        exclude_special_tokens: bool = True,
        max_norm_ratio: float | None = 10.0,
        extra_special_ids: Iterable[int | None] = (),
    ) -> None:
        from sae.model import special_token_ids

        if max_norm_ratio is not None and max_norm_ratio <= 1:
            raise ValueError(f"max_norm_ratio must be > 1 (or None to keep all), got {max_norm_ratio}")
        self.max_norm_ratio = max_norm_ratio
        ids = set(special_token_ids(model)) | {i for i in extra_special_ids if i is not None}
        self.all_special_ids = torch.tensor(sorted(ids), dtype=torch.long)
        drops = exclude_special_tokens and drops_special_tokens(model, hook)
        self.special_ids: Tensor | None = self.all_special_ids if drops else None

    def __call__(self, tokens_BT: Tensor, acts_BT_: Tensor, valid_BT: Tensor | None = None) -> TokenMask:
        return filter_tokens(tokens_BT, acts_BT_, self.special_ids, self.max_norm_ratio, valid_BT)

