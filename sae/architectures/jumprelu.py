"""JumpReLU SAE (Rajamanoharan et al. 2024): a latent fires only above its own threshold.

f_i = z_i * H(z_i - theta_i) with z the pre-activations. Sparsity is an L0 penalty
(`l0_coefficient * L0`, or `l0_coefficient * (L0 / target_l0 - 1)^2` when `target_l0` is set).
H has no useful gradient, so theta gets straight-through estimates with a rectangle kernel of
width `jumprelu_bandwidth` (eps):
    d f_i / d theta_i  = -(theta_i / eps) * K((z_i - theta_i) / eps)
    d H_i / d theta_i  = -(1 / eps)       * K((z_i - theta_i) / eps),   K(u) = 1{|u| < 1/2}
while z gets the ordinary gradient through f (and none through the L0 term).

theta is a plain fp32 parameter, clamped at 0 after each step. It is NOT stored as a log:
Adam moves a parameter by ~lr per step whatever its gradient's size, so a log-threshold moves by
a factor (1 +- lr) per step and barely leaves its initial value in a normal run (a known bug).
With `target_l0` set, theta starts at each latent's pre-activation quantile that gives that L0
on the first batch, so the run starts at the target sparsity rather than having to crawl to it.
Decoder rows are kept at unit norm, as in Gemma Scope.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sae.architectures.base import SparseAutoencoder, TrainOutput, mse_loss, register
from sae.config import SAEConfig, TrainConfig


def _kernel(pre: Tensor, theta: Tensor, eps: float) -> Tensor:
    return (((pre - theta) / eps).abs() < 0.5).to(pre.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        pre, theta = ctx.saved_tensors
        grad_pre = grad * (pre > theta).to(grad.dtype)
        grad_theta = (-(theta / ctx.eps) * _kernel(pre, theta, ctx.eps) * grad).sum(0)
        return grad_pre, grad_theta, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        pre, theta = ctx.saved_tensors
        grad_theta = (-(1.0 / ctx.eps) * _kernel(pre, theta, ctx.eps) * grad).sum(0)
        return torch.zeros_like(pre), grad_theta, None


@register("jumprelu", native=("params.npz", "Gemma Scope"))
class JumpReLUSAE(SparseAutoencoder):
    unit_norm_decoder = True
    sparsity_loss = "l0"
    config_fields = ("l0_coefficient", "target_l0", "jumprelu_bandwidth", "jumprelu_init_threshold")
    keep_fp32 = ("threshold",)

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        # fp32 whatever the SAE's dtype: thresholds are compared against, not multiplied.
        self.threshold = nn.Parameter(torch.full((cfg.d_sae,), cfg.jumprelu_init_threshold, dtype=torch.float32))

    def activation(self, pre_acts: Tensor) -> Tensor:
        return torch.relu(pre_acts) * (pre_acts.float() > self.threshold).to(pre_acts.dtype)

    def coefficients(self) -> dict[str, float]:
        return {"mse": 1.0, "l0": self.cfg.l0_coefficient}

    def _l0_loss(self, l0: Tensor) -> Tensor:
        if self.cfg.target_l0:
            return (l0 / self.cfg.target_l0 - 1.0).pow(2)
        return l0

    def losses(self, x: Tensor, pre_acts: Tensor, feature_acts: Tensor, sae_out: Tensor) -> dict[str, Tensor]:
        l0 = (feature_acts != 0).float().sum(-1).mean()
        return {"mse": mse_loss(sae_out, x), "l0": self._l0_loss(l0)}

    def training_forward(self, x: Tensor, dead_mask: Tensor | None = None, sparse: bool = True,
                         target: Tensor | None = None) -> TrainOutput:
        x_BD = x.reshape(-1, self.d_in)
        y_BD = x_BD if target is None else target  # what the codes reconstruct (a transcoder's target)
        pre = self.pre_acts(x_BD).float()
        eps = self.cfg.jumprelu_bandwidth
        acts = _JumpReLU.apply(pre, self.threshold, eps)
        out = acts @ self.W_dec.float() + self.b_dec.float()
        l0 = _Step.apply(pre, self.threshold, eps).sum(-1).mean()
        fired = acts.detach() > 0
        losses = {"mse": mse_loss(out, y_BD), "l0": self._l0_loss(l0)}
        return TrainOutput(out, losses, fired.sum(0), fired.sum(-1).float().mean())

    @torch.no_grad()
    def init_from_data(self, x: Tensor) -> None:
        if not self.cfg.target_l0:
            return
        pre = self.pre_acts(x.reshape(-1, self.d_in)).float()
        q = 1.0 - min(self.cfg.target_l0 / self.d_sae, 1.0)
        # Per-latent quantiles: every latent starts with the same firing rate (none start dead).
        self.threshold.copy_(torch.quantile(pre, q, dim=0).clamp_min(0))

    @torch.no_grad()
    def after_step(self, out: TrainOutput) -> None:
        self.threshold.clamp_(min=0.0)

    # ------------------------------------------------------------------ for the rest of the library

    def param_groups(self, train_cfg: TrainConfig) -> list[dict[str, Any]]:
        # Thresholds live on the pre-activations' scale, not the weights': they get their own lr.
        rest = [p for n, p in self.named_parameters() if n != "threshold"]
        return [{"params": rest, "lr_scale": 1.0}, {"params": [self.threshold], "lr_scale": train_cfg.threshold_lr_scale}]

    @classmethod
    def name_detail(cls, cfg: SAEConfig) -> str:
        return f"l0_{cfg.target_l0 or cfg.l0_coefficient:g}"

    def export(self) -> tuple[str, dict[str, Tensor], dict[str, Any]]:
        name, tensors, extra = super().export()
        tensors["threshold"] = self.threshold.detach().float()
        return name, tensors, extra

    @classmethod
    def import_tensors(cls, tensors: dict[str, Tensor], cfg: SAEConfig) -> dict[str, Tensor]:
        # Older SAELens files store log thresholds.
        if "threshold" not in tensors and "log_threshold" in tensors:
            tensors["threshold"] = tensors.pop("log_threshold").float().exp()
        if "threshold" in tensors:
            tensors["threshold"] = tensors["threshold"].float()
        return tensors

    @classmethod
    def from_native(cls, tensors: dict[str, Tensor], folder: Path) -> SAEConfig:
        """Gemma Scope's params.npz: no b_dec subtraction; the hook is read off the folder's path."""
        d_in, d_sae = tensors["W_enc"].shape
        text = str(folder)
        layer = re.search(r"layer_(\d+)", text)
        kind = "hook_mlp_out" if "mlp" in text else "hook_resid_post"
        hook = f"blocks.{layer.group(1)}.{kind}" if layer else ""
        return SAEConfig(architecture=cls.architecture, d_in=d_in, d_sae=d_sae, hook_name=hook, model_name="unknown",
                         apply_b_dec_to_input=False, context_size=1024)
