"""Matryoshka BatchTopK SAE (Bussmann et al. 2025; Nabeshima 2024): every prefix of the dictionary
must reconstruct the input on its own.

The latents are split into nested groups (`group_sizes`, e.g. 288 | 288 | 576 | 1152 | 2304 of
4608). The loss sums the reconstruction error of each prefix: latents 0..287 alone, then 0..575,
..., then all of them. The first latents are pushed to carry general, reusable directions (they
must reconstruct with little help), and later ones specialise; the claimed effect is less
feature absorption (a general latent such as "starts with S" no longer goes silent on tokens a
specific latent covers), which `saekit eval --absorption` measures.

Selection, AuxK and the learned inference threshold are BatchTopK's, so the saved SAE is a
JumpReLU with one threshold, as SAELens saves its own Matryoshka BatchTopK SAEs for inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sae.architectures.base import mse_loss, register
from sae.architectures.batchtopk import BatchTopKSAE
from sae.architectures.sparse_ops import Selection, decode_selection
from sae.config import SAEConfig

N_DEFAULT_PREFIXES = 5  # prefixes d/16, d/8, d/4, d/2, d: each group doubles the dictionary


@dataclass
class MatryoshkaOptions:
    """`SAEConfig.options` of a matryoshka_batchtopk SAE."""

    # latents per nested group, summing to d_sae; None: prefixes of d_sae/16, /8, /4, /2 and all
    group_sizes: list[int] | None = None

    def check(self, cfg: SAEConfig) -> None:
        if self.group_sizes is None:
            return
        if not self.group_sizes or any(s <= 0 for s in self.group_sizes) or sum(self.group_sizes) != cfg.d_sae:
            raise ValueError(
                f"matryoshka group_sizes {self.group_sizes} must be positive and sum to d_sae={cfg.d_sae} "
                f"(e.g. --option group_sizes=[{cfg.d_sae // 4},{cfg.d_sae - cfg.d_sae // 4}])"
            )


def prefix_ends(d_sae: int, group_sizes: list[int] | None) -> list[int]:
    """Where each nested prefix ends (the last is d_sae)."""
    if group_sizes is not None:
        ends = torch.tensor(group_sizes).cumsum(0).tolist()
        return [int(e) for e in ends]
    halvings = (d_sae >> j for j in reversed(range(N_DEFAULT_PREFIXES)))
    return sorted({e for e in halvings if e > 0})


@register("matryoshka_batchtopk", saelens=("matryoshka_batchtopk",))
class MatryoshkaBatchTopKSAE(BatchTopKSAE):
    options_type = MatryoshkaOptions

    @property
    def prefix_ends(self) -> list[int]:
        return prefix_ends(self.d_sae, self.options.group_sizes)

    def coefficients(self) -> dict[str, float]:
        return {**super().coefficients(), "prefix_mse": 1.0}

    def code_losses(self, y_BD: Tensor, vals_RK: Tensor, sel: Selection) -> dict[str, Tensor]:
        """Sum of the proper prefixes' reconstruction errors ("mse" is the full dictionary's)."""
        total = y_BD.new_zeros((), dtype=torch.float32)
        for end in self.prefix_ends[:-1]:
            inside = (sel.idx_BK < end).to(vals_RK.dtype)
            recon = decode_selection(vals_RK * inside, sel, self.W_dec, y_BD.shape[0]) + self.b_dec
            total = total + mse_loss(recon, y_BD)
        return {"prefix_mse": total}

    def dense_code_losses(self, y_BD: Tensor, acts_BF: Tensor) -> dict[str, Tensor]:
        total = y_BD.new_zeros((), dtype=torch.float32)
        for end in self.prefix_ends[:-1]:
            recon = acts_BF[:, :end] @ self.W_dec[:end] + self.b_dec
            total = total + mse_loss(recon, y_BD)
        return {"prefix_mse": total}

    @classmethod
    def describe(cls, cfg: SAEConfig) -> str:
        ends = prefix_ends(cfg.d_sae, cls.parse_options(cfg).group_sizes)
        return f"{cfg.architecture}(d_sae={cfg.d_sae}, k={cfg.k}, prefixes={ends})"
