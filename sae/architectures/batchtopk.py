"""BatchTopK SAE (Bussmann et al. 2024): keep the batch's B*k largest activations, not k per token.

Tokens that need more latents get more, tokens that need fewer get fewer; the average L0 is k.
Because that selection depends on the batch, inference uses a single learned threshold
instead: an exponential moving average of the batch's cut-off value, updated every training
step. The saved SAE is therefore a JumpReLU (SAELens's "jumprelu", every latent's threshold
equal to the learned one), and `encode` already behaves that way.

Training reuses TopK's sparse kernels: each token's top `candidate_factor * k` pre-activations
are candidates, and the batch's B*k largest of those are kept. A token with all its candidates
above the cut-off might own more winners than it was offered: its whole row of pre-activations
joins the pool and the cut is redone, so the result equals an exact batch top-k. Winners are laid
out in rows k wide, a token owning as many rows as it needs (`Selection.rows`): padding every
token to the widest one's count (1,716 latents in a batch whose mean is 32) made the step 7.4x
slower (quiet machine). AuxK draws each token's dead latents from outside its candidates (they were just
considered for the main code).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sae.architectures.base import register
from sae.architectures.sparse_ops import Selection, select_topk, sort_rows
from sae.architectures.topk import TopKSAE
from sae.config import SAEConfig

THRESHOLD_MOMENTUM = 0.9  # EMA of the batch cut-off (a quantile of B*k values: stable); ~10 steps of memory


@register("batchtopk")
class BatchTopKSAE(TopKSAE):
    candidate_factor: int = 4
    saelens_name = "jumprelu"  # what it is at inference (see the module's docstring)

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        # Negative = not learned yet (encode falls back to per-token top-k). Kept in fp32.
        self.register_buffer("threshold", torch.tensor(-1.0, dtype=torch.float32))

    def activation(self, pre_acts: Tensor) -> Tensor:
        if float(self.threshold) < 0:
            return super().activation(pre_acts)
        return torch.relu(pre_acts) * (pre_acts.float() > self.threshold).to(pre_acts.dtype)

    def _train_activation(self, pre_BF: Tensor) -> Tensor:
        flat = pre_BF.relu().flatten()
        n_keep = min(self.cfg.k * pre_BF.shape[0], flat.numel())
        vals, idx = flat.topk(n_keep, sorted=False)
        self._update_threshold(vals.min())
        return torch.zeros_like(flat).scatter(0, idx, vals).view_as(pre_BF)

    def _aux_excluded(self, pre_BF: Tensor) -> Tensor:
        n_cand = min(self.d_sae, self.candidate_factor * self.cfg.k)
        idx = pre_BF.topk(n_cand, dim=-1).indices
        return torch.zeros_like(pre_BF, dtype=torch.bool).scatter_(-1, idx, True)

    @torch.no_grad()
    def _select(self, x_BD: Tensor, dead_idx: Tensor | None) -> tuple[Selection, Tensor | None, Selection | None]:
        B = x_BD.shape[0]
        k = min(self.cfg.k, self.d_sae)
        n_cand = min(self.d_sae, self.candidate_factor * k)
        main, aux = select_topk(
            x_BD,
            self.W_enc.detach(),
            self.b_enc.detach(),
            self.b_dec.detach() if self.cfg.apply_b_dec_to_input else None,
            n_cand,
            dead_idx=dead_idx,
            k_aux=self.k_aux,
        )
        vals = main.vals_BK.float().clamp_min(0)
        n_keep = B * k  # k <= d_sae, so the batch always holds that many
        cutoff = _kth_largest(vals.flatten(), n_keep)
        # A token whose every candidate made the cut may own more winners than it was offered: its
        # whole row of pre-activations joins the pool (few tokens: cheap), and the cut is redone.
        heavy = ((vals >= cutoff) & (vals > 0)).all(dim=1) if n_cand < self.d_sae else vals.new_zeros(B, dtype=torch.bool)
        heavy_rows = heavy.nonzero().squeeze(1)
        pre_HF = None
        if heavy_rows.numel():
            pre_HF = self.pre_acts(x_BD.index_select(0, heavy_rows)).float()
            cutoff = _kth_largest(torch.cat([vals[~heavy].flatten(), pre_HF.clamp_min(0).flatten()]), n_keep)
        self._update_threshold(cutoff)
        keep = (vals >= cutoff) & (vals > 0) & ~heavy.unsqueeze(1)
        # Rows k wide: a token keeps k latents on average, so most own one row and a few own
        # several (padding a [B, widest] layout instead made every sparse kernel ~50x wider).
        order = keep.to(torch.int8).argsort(dim=1, descending=True, stable=True)
        parts = [_rows_of(main.idx_BK.gather(1, order), main.vals_BK.gather(1, order), keep.sum(1),
                          torch.arange(B, device=x_BD.device), k)]
        if pre_HF is not None:  # heavy tokens: their winners from the whole row, in descending order
            sorted_vals, sorted_idx = pre_HF.sort(dim=1, descending=True)
            n_won = ((sorted_vals >= cutoff) & (sorted_vals > 0)).sum(1)
            parts.append(_rows_of(sorted_idx, sorted_vals.to(main.vals_BK.dtype), n_won, heavy_rows, k))
        idx, raw, kept, rows = (torch.cat(t) for t in zip(*parts, strict=True))
        idx, raw, kept = sort_rows(idx, raw, kept)
        return Selection(idx, raw, rows), kept.to(torch.float32), aux

    @torch.no_grad()
    def _update_threshold(self, cutoff: Tensor) -> None:
        if not self.training:
            return
        c = cutoff.detach().float().clamp_min(0).to(self.threshold.device)
        if float(self.threshold) < 0:
            self.threshold.copy_(c)
        else:
            self.threshold.mul_(THRESHOLD_MOMENTUM).add_((1 - THRESHOLD_MOMENTUM) * c)

    def export(self) -> tuple[str, dict[str, Tensor], dict[str, Any]]:
        name, tensors, _ = super().export()
        thr = max(float(self.threshold), 0.0)
        tensors["threshold"] = torch.full((self.d_sae,), thr, dtype=torch.float32, device=self.W_enc.device)
        return name, tensors, {}  # a JumpReLU has no k

    @classmethod
    def import_tensors(cls, tensors: dict[str, Tensor], cfg: SAEConfig) -> dict[str, Tensor]:
        # SAELens's BatchTopK files hold one scalar cut-off, under either name (or none: not learned yet).
        thr = tensors.pop("topk_threshold", tensors.pop("threshold", None))
        tensors["threshold"] = torch.as_tensor(-1.0 if thr is None else float(thr.reshape(-1)[0]), dtype=torch.float32)
        return tensors


def _kth_largest(values: Tensor, k: int) -> Tensor:
    """The k-th largest value (k counted from 1; all values when k exceeds their number)."""
    k = min(k, values.numel())
    return values.kthvalue(values.numel() - k + 1).values


def _rows_of(idx_TN: Tensor, raw_TN: Tensor, n_kept_T: Tensor, tokens_T: Tensor, width: int) -> tuple[Tensor, ...]:
    """Each token's first `n_kept` entries (its winners, listed first) cut into rows of `width`.

    Returns (idx [R, width], raw [R, width], kept [R, width], token of each row [R]); a token
    owns ceil(n_kept / width) rows (at least one). Row j of a token takes its entries
    [j*width, (j+1)*width), so indices are unique within a row; entries past its last winner are
    padding (kept False, contributing nothing).
    """
    N = idx_TN.shape[1]
    n_rows = (n_kept_T + width - 1).div(width, rounding_mode="floor").clamp_min(1)
    owner = torch.repeat_interleave(torch.arange(len(tokens_T), device=idx_TN.device), n_rows)
    first = torch.cumsum(n_rows, 0) - n_rows
    chunk = torch.arange(len(owner), device=idx_TN.device) - first[owner]
    # past the end of a token's entries only padding remains (a token keeping nearly all of them)
    pos = (chunk.unsqueeze(1) * width + torch.arange(width, device=idx_TN.device)).clamp_max(N - 1)
    kept = pos < n_kept_T[owner].unsqueeze(1)
    return idx_TN[owner].gather(1, pos), raw_TN[owner].gather(1, pos), kept, tokens_T[owner]
