"""Gated SAE (Rajamanoharan et al. 2024): one path decides WHICH latents fire, another HOW MUCH.

    pi_gate = (x - b_dec) W_enc + b_gate                      (b_gate is stored as b_enc)
    pi_mag  = (x - b_dec) (W_enc * exp(r_mag)) + b_mag         (same directions, rescaled)
    f       = 1[pi_gate > 0] * ReLU(pi_mag)

The L1 penalty acts on ReLU(pi_gate) only, so it shrinks the gate's pre-activations without
shrinking the magnitudes that reconstruct: the shrinkage bias of a ReLU SAE goes away. Because
the step 1[pi_gate > 0] has no gradient, an auxiliary loss trains the gate path to reconstruct
through a frozen copy of the decoder: ||x - (ReLU(pi_gate) W_dec.detach() + b_dec.detach())||^2.
Decoder rows stay unit norm, as in the paper. Saved as SAELens's "gated"
(W_enc, b_gate, r_mag, b_mag, W_dec, b_dec).

pi_mag is computed from pi_gate: pi_mag = (pi_gate - b_gate) exp(r_mag) + b_mag, so the shared
encoder matmul runs once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sae.architectures.base import SparseAutoencoder, mse_loss, register
from sae.config import SAEConfig


@register("gated")
class GatedSAE(SparseAutoencoder):
    unit_norm_decoder = True
    config_fields = ("l1_coefficient",)
    sparsity_loss = "l1"
    default_lr = 4e-3  # ReLU's (measured there); the gate path is a ReLU SAE's encoder

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        dtype = getattr(torch, cfg.dtype)
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))

    def magnitudes(self, gate_pre: Tensor) -> Tensor:
        return torch.relu((gate_pre - self.b_enc) * self.r_mag.exp() + self.b_mag)

    def activation(self, pre_acts: Tensor) -> Tensor:
        return (pre_acts > 0).to(pre_acts.dtype) * self.magnitudes(pre_acts)

    def losses(self, x: Tensor, pre_acts: Tensor, feature_acts: Tensor, sae_out: Tensor) -> dict[str, Tensor]:
        gate = torch.relu(pre_acts)
        l1 = (gate.float() * self.W_dec.norm(dim=1).float()).sum(-1).mean()
        frozen = gate @ self.W_dec.detach() + self.b_dec.detach()
        # x is the target (a skip transcoder's depends on W_skip): the aux loss trains the gate only
        return {"mse": mse_loss(sae_out, x), "l1": l1, "aux": mse_loss(frozen, x.detach())}

    def coefficients(self) -> dict[str, float]:
        return {"mse": 1.0, "l1": self.cfg.l1_coefficient, "aux": 1.0}


    def export(self) -> tuple[str, dict[str, Tensor], dict[str, Any]]:
        name, tensors, extra = super().export()
        tensors["b_gate"] = tensors.pop("b_enc")
        tensors["r_mag"], tensors["b_mag"] = self.r_mag.detach(), self.b_mag.detach()
        return name, tensors, extra

    @classmethod
    def import_tensors(cls, tensors: dict[str, Tensor], cfg: SAEConfig) -> dict[str, Tensor]:
        if "b_gate" in tensors:
            tensors["b_enc"] = tensors.pop("b_gate")
        return tensors
