"""Per-token feature activations of a piece of text: what the explorer's live page shows.

The same token filter as the database pass applies: BOS/special tokens and massive-norm
outliers are not encoded (their activations read 0 and `skipped` marks them), so live values
and database values are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sae.features.source import extractor_for


@dataclass
class TextActivations:
    token_ids: list[int]
    tokens: list[str]  # each token decoded on its own
    codes: Tensor  # [n_tokens, d_sae] on the CPU, 0 on skipped tokens
    skipped: list[bool]

    def feature(self, i: int) -> list[float]:
        """Latent i's activation on every token."""
        return self.codes[:, i].tolist()

    def top_features(self, pos: int, n: int = 5) -> list[tuple[int, float]]:
        """The n most active latents on token `pos` (only those that fired)."""
        vals, ids = self.codes[pos].topk(min(n, self.codes.shape[1]))
        return [(int(i), float(v)) for v, i in zip(vals, ids, strict=True) if v > 0]

    def top_overall(self, n: int = 10) -> list[tuple[int, float]]:
        """The n latents with the highest activation anywhere in the text."""
        vals, ids = self.codes.max(0).values.topk(min(n, self.codes.shape[1]))
        return [(int(i), float(v)) for v, i in zip(vals, ids, strict=True) if v > 0]


@torch.no_grad()
def text_activations(
    model,
    sae,
    text: str,
    *,
    prepend_bos: bool = True,
    exclude_special_tokens: bool = True,
    max_norm_ratio: float | None = 10.0,
    max_tokens: int = 512,
) -> TextActivations:
    """Run `model` up to the SAE's hook on `text` and encode every (valid) token."""
    tok = model.tokenizer
    ids = tok(text, add_special_tokens=False).input_ids[:max_tokens]
    bos = tok.bos_token_id
    if prepend_bos and bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    if not ids:
        return TextActivations([], [], torch.zeros((0, sae.cfg.d_sae)), [])
    hook = sae.cfg.hook_name
    ex = extractor_for(model, hook, exclude_special_tokens, max_norm_ratio)
    res = ex(torch.tensor([ids]))
    keep = res.keep[hook][0].cpu()
    codes = torch.zeros((len(ids), sae.cfg.d_sae))
    if bool(keep.any()):
        acts = res.acts[hook].to(device=sae.W_enc.device, dtype=sae.W_enc.dtype)
        codes[keep] = sae.encode(acts).float().cpu()
    strs = tok.batch_decode([[i] for i in ids], skip_special_tokens=False)
    return TextActivations(ids, strs, codes, (~keep).tolist())
