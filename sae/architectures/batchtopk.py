"""BatchTopK SAE (Bussmann et al. 2024): keep the batch's B*k largest activations, not k per token.

Tokens that need more latents get more, tokens that need fewer get fewer; the average L0 is k.
Because that selection depends on the batch, inference uses a single learned threshold
instead: an exponential moving average of the batch's cut-off value, updated every training
step. The saved SAE is therefore a JumpReLU (SAELens's "jumprelu", every latent's threshold
equal to the learned one), and `encode` already behaves that way.

Training reuses TopK's sparse kernels: each token's top `candidate_factor * k` pre-activations
are candidates, and the batch's B*k largest of those are kept. If some token had all its
candidates above the cut-off (it might own more winners than it was offered), the selection
is redone with more candidates, so the result equals an exact batch top-k. AuxK draws each
token's dead latents from outside its candidates (they were just considered for the main code).
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

    def _select(self, x_BD: Tensor, dead_idx: Tensor | None) -> tuple[Selection, Tensor | None, Selection | None]:
        B = x_BD.shape[0]
        k = min(self.cfg.k, self.d_sae)
        n_cand = min(self.d_sae, self.candidate_factor * k)
        while True:
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
            n_keep = min(B * k, vals.numel())
            cutoff = vals.flatten().kthvalue(vals.numel() - n_keep + 1).values
            keep = (vals >= cutoff) & (vals > 0)
            # A token whose every candidate made the cut may own more winners than it was offered.
            truncated = bool((keep.all(dim=1)).any()) and n_cand < self.d_sae
            if not truncated:
                break
            n_cand = min(self.d_sae, n_cand * 4)
        self._update_threshold(cutoff)
        # Compact: kept entries first, width = the most any token kept, then re-sort by latent.
        width = max(int(keep.sum(1).max()), 1)
        order = keep.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :width]
        idx = main.idx_BK.gather(1, order)
        raw = main.vals_BK.gather(1, order)
        kept = keep.gather(1, order)
        idx, raw, kept = sort_rows(idx, raw, kept)
        return Selection(idx, raw), kept.to(torch.float32), aux

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
