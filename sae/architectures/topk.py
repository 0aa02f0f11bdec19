"""TopK SAE (Gao et al. 2024): keep each token's k largest pre-activations, ReLU them.

Sparsity is set by k, so there is no sparsity penalty. Decoder rows stay unit norm (the
trainer projects the parallel part out of W_dec's gradient and renormalises after each step).
Dead latents (no firing for `dead_after_tokens`) are revived by the AuxK loss: the top
`aux_k` dead latents of each token reconstruct the main reconstruction's residual, weighted by
`aux_coefficient` and by min(n_dead / aux_k, 1).

Training uses the sparse kernels of `sparse_ops` unless `sparse=False` (the dense path, kept as
a reference and as the benchmark's baseline): after the encoder matmul, every cost scales with k.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sae.architectures.base import SparseAutoencoder, TrainOutput, mse_loss, register
from sae.architectures.sparse_ops import (
    Selection,
    decode_selection,
    gathered_pre_acts,
    select_topk,
    selected_inputs,
    sparse_decode,
)


def auxk_loss(recon_BD: Tensor, residual_BD: Tensor, n_dead: int, k_aux: int) -> Tensor:
    """AuxK: how well the dead latents reconstruct what the live ones missed (down-weighted when few are dead)."""
    scale = min(n_dead / k_aux, 1.0)
    return scale * (recon_BD.float() - residual_BD.float()).pow(2).sum(-1).mean()


# SAELens before 6 saved TopK SAEs as "standard" with activation_fn "topk".
@register("topk", saelens=(("standard", "topk"),))
class TopKSAE(SparseAutoencoder):
    unit_norm_decoder = True
    config_fields = ("k", "aux_k", "aux_coefficient")
    # Measured on layer-15 activations (d_sae 4608, k 32, batch 4096, 1M tokens): held-out FVU
    # 0.303 at 4e-4, 0.223 at 2e-3, 0.213 at 4e-3 (scripts/bench_train.py --lr).
    default_lr = 2e-3

    def activation(self, pre_acts: Tensor) -> Tensor:
        vals, idx = pre_acts.topk(min(self.cfg.k, self.d_sae), dim=-1)
        return torch.zeros_like(pre_acts).scatter_(-1, idx, vals.relu())

    def coefficients(self) -> dict[str, float]:
        return {"mse": 1.0, "auxk": self.cfg.aux_coefficient}

    @property
    def k_aux(self) -> int:
        return self.cfg.aux_k if self.cfg.aux_k is not None else max(1, self.d_in // 2)

    # ------------------------------------------------------------------ training

    def _select(self, x_BD: Tensor, dead_idx: Tensor | None) -> tuple[Selection, Tensor | None, Selection | None]:
        """(main selection, optional keep-mask over it, AuxK selection)."""
        main, aux = select_topk(
            x_BD,
            self.W_enc.detach(),
            self.b_enc.detach(),
            self.b_dec.detach() if self.cfg.apply_b_dec_to_input else None,
            min(self.cfg.k, self.d_sae),
            dead_idx=dead_idx,
            k_aux=self.k_aux,
        )
        return main, None, aux

    def training_forward(self, x: Tensor, dead_mask: Tensor | None = None, sparse: bool = True,
                         target: Tensor | None = None) -> TrainOutput:
        x_BD = x.reshape(-1, self.d_in)
        y_BD = x_BD if target is None else target  # what the codes reconstruct (a transcoder's target)
        dead_idx = None
        if dead_mask is not None:
            dead_idx = dead_mask.nonzero().squeeze(1)
            if dead_idx.numel() == 0:
                dead_idx = None
        if not sparse:
            return self._dense_training_forward(x_BD, dead_idx, y_BD)
        main, keep, aux = self._select(x_BD.detach(), dead_idx)
        sub = self.cfg.apply_b_dec_to_input
        x_RD = selected_inputs(x_BD, main)
        vals = gathered_pre_acts(x_RD, self.W_enc, self.b_enc, self.b_dec, main, sub).float().relu()
        if keep is not None:
            vals = vals * keep
        out = decode_selection(vals, main, self.W_dec, x_BD.shape[0]) + self.b_dec
        losses = {"mse": mse_loss(out, y_BD), "auxk": out.new_zeros(()), **self.code_losses(y_BD, vals, main)}
        if aux is not None:
            aux_vals = gathered_pre_acts(x_BD, self.W_enc, self.b_enc, self.b_dec, aux, sub).float().relu()
            recon = sparse_decode(aux_vals, aux.idx_BK, self.W_dec)
            n_dead = int(dead_idx.numel())  # type: ignore[union-attr]
            losses["auxk"] = auxk_loss(recon, (y_BD - out).detach(), n_dead, min(self.k_aux, n_dead))
        active = vals.detach() > 0
        fire_counts = torch.bincount(main.idx_BK[active], minlength=self.d_sae)
        return TrainOutput(out, losses, fire_counts, active.sum().float() / x_BD.shape[0])

    def _dense_training_forward(self, x_BD: Tensor, dead_idx: Tensor | None, y_BD: Tensor) -> TrainOutput:
        """Reference path: dense codes, dense decoder, autograd everywhere (what most libraries do)."""
        pre = self.pre_acts(x_BD).float()
        acts = self._train_activation(pre)
        out = acts @ self.W_dec + self.b_dec
        losses = {"mse": mse_loss(out, y_BD), "auxk": out.new_zeros(()), **self.dense_code_losses(y_BD, acts)}
        if dead_idx is not None:
            k_aux = min(self.k_aux, int(dead_idx.numel()))
            dead_pre = torch.full_like(pre, float("-inf"))
            dead_pre[:, dead_idx] = pre[:, dead_idx]
            dead_pre = dead_pre.masked_fill(self._aux_excluded(pre), float("-inf"))
            vals, idx = dead_pre.topk(k_aux, dim=-1)
            aux_acts = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
            losses["auxk"] = auxk_loss(aux_acts @ self.W_dec, (y_BD - out).detach(), int(dead_idx.numel()), k_aux)
        fired = acts.detach() > 0
        return TrainOutput(out, losses, fired.sum(0), fired.sum(-1).float().mean())

    def _train_activation(self, pre_BF: Tensor) -> Tensor:
        return self.activation(pre_BF)

    def code_losses(self, y_BD: Tensor, vals_RK: Tensor, sel: Selection) -> dict[str, Tensor]:
        """Losses a subclass adds on the kept codes (values `vals_RK` of the latents `sel` selects; zeros
        where a candidate was not kept; `decode_selection` sums rows into tokens) in the sparse path,
        with `y_BD` what the codes reconstruct (the input, or a transcoder's target);
        `dense_code_losses` is the same on dense codes."""
        return {}

    def dense_code_losses(self, y_BD: Tensor, acts_BF: Tensor) -> dict[str, Tensor]:
        return {}

    def _aux_excluded(self, pre_BF: Tensor) -> Tensor:
        """Latents a token may not use for AuxK: its own top-k selection (as in the sparse path)."""
        idx = pre_BF.topk(min(self.cfg.k, self.d_sae), dim=-1).indices
        return torch.zeros_like(pre_BF, dtype=torch.bool).scatter_(-1, idx, True)
