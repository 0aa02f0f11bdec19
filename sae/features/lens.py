"""What a latent writes, read from its decoder direction alone: logit lens and decoder neighbours.

Logit lens: W_dec[i] through the final norm and the unembedding. A norm divides by the
input's scale, which a lone direction does not have, so only the norm's elementwise weight is
applied (and, for LayerNorm, the mean is removed); the unembedding bias is left out because it
is the same for every latent. Both are computed in chunks of latents: memory is
chunk x vocab whatever d_sae.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

N_LOGIT_BINS = 40


@dataclass
class LogitLens:
    top_ids: Tensor  # [F, n] most positive logits' token ids
    top_vals: Tensor
    bottom_ids: Tensor  # [F, n] most negative
    bottom_vals: Tensor
    hist_lo: Tensor  # [F]
    hist_hi: Tensor  # [F]
    hist: Tensor  # [F, N_LOGIT_BINS] int64


class Unembedding(NamedTuple):
    """What the lens reads from a model: W_U [d_model, vocab], the final norm's weight [d_model]
    (None without one) and whether the norm removes the mean (LayerNorm) before scaling."""

    W_U: Tensor
    norm_w: Tensor | None
    centre: bool


def unembedding(model: TransformerBridge) -> Unembedding:
    """The lens's view of a TransformerBridge (its `W_U` and `ln_final`, whatever the family)."""
    W_U = model.W_U
    norm_w = None
    ln = getattr(model, "ln_final", None)
    if ln is not None:
        for name, p in ln.named_parameters():
            if name.endswith("weight"):
                norm_w = p
                break
    norm_type = str(getattr(model.cfg, "normalization_type", "") or "")
    centre = norm_type.upper().startswith("LN")
    return Unembedding(W_U.detach(), None if norm_w is None else norm_w.detach(), centre)


def lens_logits(d_FD: Tensor, W_U: Tensor, norm_w: Tensor | None, centre: bool) -> Tensor:
    """Logits [F, columns of W_U] of directions through the final norm's weight and W_U (float32,
    on W_U's device). Pass a column subset of W_U to score a few tokens without the whole vocab."""
    d = d_FD.float().to(W_U.device)
    if centre:
        d = d - d.mean(1, keepdim=True)
    if norm_w is not None:
        d = d * norm_w.float().to(d.device)
    return d @ W_U.float()


@torch.no_grad()
def logit_lens(
    W_dec: Tensor, W_U: Tensor, norm_w: Tensor | None, centre: bool, n: int = 10, chunk: int = 256
) -> LogitLens:
    F, vocab = W_dec.shape[0], W_U.shape[1]
    W_U = W_U.float()
    n = min(n, vocab)
    out: dict[str, list[Tensor]] = {k: [] for k in LogitLens.__dataclass_fields__}
    for lo in range(0, F, chunk):
        logits = lens_logits(W_dec[lo : lo + chunk], W_U, norm_w, centre)  # [chunk, vocab]
        tv, ti = logits.topk(n, dim=1)
        bv, bi = logits.topk(n, dim=1, largest=False)
        lo_v, hi_v = torch.aminmax(logits, dim=1)
        per_unit = N_LOGIT_BINS / (hi_v - lo_v).clamp(min=1e-12)
        bins = ((logits - lo_v[:, None]) * per_unit[:, None]).to(torch.int32).clamp_(0, N_LOGIT_BINS - 1)
        rows = logits.shape[0]
        bins += torch.arange(rows, device=logits.device, dtype=torch.int32)[:, None] * N_LOGIT_BINS
        hist = torch.bincount(bins.view(-1), minlength=rows * N_LOGIT_BINS).view(rows, N_LOGIT_BINS)
        for k, v in zip(LogitLens.__dataclass_fields__, (ti, tv, bi, bv, lo_v, hi_v, hist), strict=True):
            out[k].append(v.cpu())
    return LogitLens(**{k: torch.cat(v) for k, v in out.items()})


def feature_lens(model: TransformerBridge, W_dec: Tensor, n: int = 10) -> LogitLens:
    """The logit lens of decoder rows [F, d_model] of `model`: what the feature database stores,
    for the few features a search or a page asks about."""
    u = unembedding(model)
    if W_dec.shape[-1] != u.W_U.shape[0]:
        raise ValueError(
            f"the decoder's width {W_dec.shape[-1]} is not the model's d_model {u.W_U.shape[0]}: "
            "a logit lens needs an SAE on the residual stream of this model"
        )
    return logit_lens(W_dec.detach(), *u, n=n)


@torch.no_grad()
def decoder_neighbours(W_dec: Tensor, n: int = 10, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Per latent the n others with the highest decoder cosine: (ids [F, n], cosines [F, n])."""
    unit = W_dec.float()
    unit = unit / unit.norm(dim=1, keepdim=True).clamp(min=1e-12)
    F = unit.shape[0]
    n = min(n, F - 1)
    ids, coss = [], []
    for lo in range(0, F, chunk):
        cos = unit[lo : lo + chunk] @ unit.T
        rows = torch.arange(cos.shape[0], device=cos.device)
        cos[rows, rows + lo] = float("-inf")
        c, i = cos.topk(n, dim=1)
        ids.append(i.cpu())
        coss.append(c.cpu())
    return torch.cat(ids), torch.cat(coss)
