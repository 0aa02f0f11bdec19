"""Data-dependent initialisation of the decoder bias."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def geometric_median(x_BD: Tensor, n_iter: int = 100, tol: float = 1e-6) -> Tensor:
    """Point minimising the sum of Euclidean distances to the rows (Weiszfeld's algorithm).

    More robust than the mean to the residual stream's few huge-norm tokens.
    """
    x = x_BD.double()
    median = x.mean(0)
    for _ in range(n_iter):
        dist = (x - median).norm(dim=1).clamp_min(1e-12)
        w = 1.0 / dist
        new = (w[:, None] * x).sum(0) / w.sum()
        if (new - median).norm() <= tol * max(float(median.norm()), 1.0):
            median = new
            break
        median = new
    return median.to(x_BD.dtype)


def init_b_dec(x_BD: Tensor, method: str) -> Tensor:
    if method == "mean":
        return x_BD.mean(0)
    if method == "geometric_median":
        return geometric_median(x_BD)
    raise ValueError(f"b_dec_init must be mean, geometric_median or zeros, got {method!r}")
