"""A logistic-regression probe fitted in torch (LBFGS), for sparse probing and absorption.

    probe = fit_probe(x_ND, y_N, n_classes=2)
    probe.predict(x_test_ND)        # LongTensor [N]
    probe.weight_CD                 # class directions in the input's own coordinates

Inputs are standardised per dimension while fitting (SAE codes and residual dimensions differ
in scale by orders of magnitude; without it an L2 penalty would mean different things for each),
then the standardisation is folded back into `weight_CD` / `bias_C`, so a probe reads raw
inputs and its rows are directions in the raw space (what absorption compares decoder rows with).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class LinearProbe:
    """logits = x @ weight_CD.T + bias_C, on raw (unstandardised) inputs."""

    weight_CD: Tensor
    bias_C: Tensor

    def logits(self, x_ND: Tensor) -> Tensor:
        return x_ND.float() @ self.weight_CD.T + self.bias_C

    def predict(self, x_ND: Tensor) -> Tensor:
        return self.logits(x_ND).argmax(-1)

    def accuracy(self, x_ND: Tensor, y_N: Tensor) -> float:
        if y_N.numel() == 0:
            return float("nan")
        return float((self.predict(x_ND) == y_N).float().mean())


def fit_probe(x_ND: Tensor, y_N: Tensor, n_classes: int | None = None, *, l2: float | None = None,
              steps: int = 300, standardize: bool = True) -> LinearProbe:
    """Multinomial logistic regression: mean cross-entropy + `l2` x sum of squared (standardised)
    weights, by LBFGS. `l2` None is 1 / (2N), scikit-learn's default (C = 1).

    `steps` bounds LBFGS iterations (it stops earlier once the loss stops moving). Dimensions
    that are constant on the training set get zero weight. `standardize=False` scales every
    dimension by one number instead, so the penalty is isotropic in the input space and the
    probe's rows are geometric directions (a rare dimension is not cheap to use): what a
    direction compared with decoder rows should be.
    """
    if x_ND.ndim != 2 or y_N.ndim != 1 or x_ND.shape[0] != y_N.shape[0]:
        raise ValueError(f"fit_probe needs x [N, D] and y [N] with the same N; got {tuple(x_ND.shape)} "
                         f"and {tuple(y_N.shape)}")
    if x_ND.shape[0] == 0:
        raise ValueError("fit_probe got no training examples; give it more documents or words")
    x = x_ND.float()
    y = y_N.long().to(x.device)
    C = int(n_classes if n_classes is not None else int(y.max()) + 1)
    penalty = 0.5 / x.shape[0] if l2 is None else l2
    mean_D = x.mean(0)
    std_D = x.std(0, unbiased=False)
    if not standardize:
        std_D = std_D.pow(2).mean().sqrt().expand_as(std_D).where(std_D > 0, torch.zeros_like(std_D))
    live_D = std_D > 1e-8 * std_D.max().clamp_min(1e-30)
    inv_D = torch.where(live_D, 1.0 / std_D.clamp_min(1e-30), torch.zeros_like(std_D))
    z = (x - mean_D) * inv_D
    w = torch.zeros(C, x.shape[1], device=x.device, requires_grad=True)
    b = torch.zeros(C, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w.T + b, y) + penalty * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad(), _one_cpu_thread(x.device):
        opt.step(closure)
    w_raw = (w.detach() * inv_D)  # fold the standardisation back: raw-space directions
    b_raw = b.detach() - w_raw @ mean_D
    return LinearProbe(w_raw, b_raw)


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """LBFGS is thousands of tiny ops; on a busy CPU each one waits for a thread pool (measured:
    0.4 s on one thread, 30-110 s on two, for a 26-way probe on 182 x 576 inputs)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

