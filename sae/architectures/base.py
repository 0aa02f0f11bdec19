"""The interface every SAE architecture implements, and the registry that finds them by name.

An architecture is one file in this folder that subclasses `SparseAutoencoder` and decorates
itself with `@register("name")`; importing `sae.architectures` imports every file here, so
adding an architecture means adding one file. Parameters are always `W_enc [d_in, d_sae]`,
`b_enc [d_sae]`, `W_dec [d_sae, d_in]`, `b_dec [d_in]` (SAELens's layout), plus whatever the
architecture adds (e.g. JumpReLU's threshold).

Two ways in:
- `encode` / `decode` / `forward` for inference: dense codes, any leading batch shape;
- `training_forward(x, dead_mask, sparse)` for the trainer: named losses, per-latent firing
  counts and L0, computed the cheapest way the architecture allows (TopK-style SAEs never
  build dense codes there).

Class attributes tell the trainer what an architecture needs: `unit_norm_decoder` (project the
parallel part out of W_dec's gradient, renormalise rows after each step), `sparsity_loss` (the
loss whose coefficient warms up) and `coefficients()` (the final weight of every named loss).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor, nn

from sae.config import SAEConfig

_REGISTRY: dict[str, type[SparseAutoencoder]] = {}


class ForwardOutput(NamedTuple):
    """What `forward` returns: the reconstruction, the codes, and every loss term by name."""

    sae_out: Float[Tensor, "batch d_in"]
    feature_acts: Float[Tensor, "batch d_sae"]
    losses: dict[str, Tensor]  # e.g. {"mse": ..., "l1": ...}; `loss` sums them with weights


class TrainOutput(NamedTuple):
    """What `training_forward` returns to the trainer (no dense codes)."""

    sae_out: Float[Tensor, "batch d_in"]
    losses: dict[str, Tensor]  # unweighted; the trainer applies `coefficients()` x schedules
    fire_counts: Tensor  # long [d_sae]: tokens of this batch on which each latent fired
    l0: Tensor  # scalar: mean number of active latents per token


def register(name: str):
    """Class decorator: make an architecture constructible by name (`cfg.architecture`)."""

    def deco(cls: type[SparseAutoencoder]) -> type[SparseAutoencoder]:
        cls.architecture = name
        _REGISTRY[name] = cls
        return cls

    return deco


def architectures() -> list[str]:
    import sae.architectures  # noqa: F401  (importing the package registers every file)

    return sorted(_REGISTRY)


def get_architecture(name: str) -> type[SparseAutoencoder]:
    import sae.architectures  # noqa: F401

    if name not in _REGISTRY:
        raise ValueError(
            f"unknown SAE architecture {name!r}; known: {sorted(_REGISTRY)} "
            "(set architecture= to one of these, or add a file to sae/architectures/)"
        )
    return _REGISTRY[name]


def build_sae(cfg: SAEConfig) -> SparseAutoencoder:
    return get_architecture(cfg.architecture)(cfg)


def mse_loss(sae_out_BD: Tensor, x_BD: Tensor) -> Tensor:
    """Squared error summed over d_in, averaged over tokens (SAELens's and Anthropic's scale)."""
    return (sae_out_BD.float() - x_BD.float()).pow(2).sum(-1).mean()


class SparseAutoencoder(nn.Module):
    """Base class: linear encoder, an activation that makes codes sparse, linear decoder."""

    architecture: ClassVar[str] = "base"
    unit_norm_decoder: ClassVar[bool] = True
    sparsity_loss: ClassVar[str | None] = None
    default_decoder_norm: ClassVar[float] = 1.0
    default_lr: ClassVar[float] = 4e-4  # Adam lr when TrainConfig.lr is None

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        if cfg.d_in <= 0 or cfg.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got d_in={cfg.d_in}, d_sae={cfg.d_sae}")
        self.cfg = cfg
        self.d_in = cfg.d_in
        self.d_sae = cfg.d_sae
        dtype = getattr(torch, cfg.dtype)
        self.W_enc = nn.Parameter(torch.empty(cfg.d_in, cfg.d_sae, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.W_dec = nn.Parameter(torch.empty(cfg.d_sae, cfg.d_in, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype))
        self.reset_parameters()

    # ------------------------------------------------------------------ to override

    def reset_parameters(self) -> None:
        """W_dec rows: random directions with the architecture's norm; W_enc = W_dec^T."""
        norm = self.cfg.decoder_init_norm if self.cfg.decoder_init_norm is not None else self.default_decoder_norm
        nn.init.kaiming_uniform_(self.W_dec)
        with torch.no_grad():
            self.W_dec *= norm / self.W_dec.norm(dim=1, keepdim=True)
            self.W_enc.copy_(self.W_dec.T)

    def activation(self, pre_acts: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        raise NotImplementedError

    def losses(self, x: Tensor, pre_acts: Tensor, feature_acts: Tensor, sae_out: Tensor) -> dict[str, Tensor]:
        """Named losses of a dense forward pass (mse plus the architecture's sparsity terms)."""
        return {"mse": mse_loss(sae_out, x)}

    def coefficients(self) -> dict[str, float]:
        """Final weight of every loss `training_forward` returns (the trainer warms up `sparsity_loss`)."""
        return {"mse": 1.0}

    def training_forward(
        self, x: Float[Tensor, "batch d_in"], dead_mask: Tensor | None = None, sparse: bool = True
    ) -> TrainOutput:
        """Default: the dense path. Sparse architectures override this."""
        pre = self.pre_acts(x)
        acts = self.activation(pre)
        out = acts @ self.W_dec + self.b_dec
        fired = acts > 0
        return TrainOutput(out, self.losses(x, pre, acts, out), fired.sum(0), fired.sum(-1).float().mean())

    @torch.no_grad()
    def init_from_data(self, x: Float[Tensor, "batch d_in"]) -> None:
        """Data-dependent initialisation after b_dec is set (default: nothing)."""

    @torch.no_grad()
    def after_step(self, out: TrainOutput) -> None:
        """Called after each optimizer step with that step's output (default: nothing)."""

    def export(self) -> tuple[str, dict[str, Tensor], dict[str, Any]]:
        """(SAELens architecture name, tensors to save, extra cfg.json keys) for inference use."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared

    def pre_acts(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        x_BD = x.reshape(-1, self.d_in).to(self.W_enc.dtype)
        if self.cfg.apply_b_dec_to_input:
            x_BD = x_BD - self.b_dec
        pre = torch.addmm(self.b_enc, x_BD, self.W_enc)
        return pre.reshape(*x.shape[:-1], self.d_sae)

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Dense feature activations (zeros where a latent does not fire); any leading shape."""
        self._check_input(x)
        pre = self.pre_acts(x)
        return self.activation(pre.reshape(-1, self.d_sae)).reshape(pre.shape)

    def decode(self, feature_acts: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        return feature_acts.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "... d_in"]) -> ForwardOutput:
        self._check_input(x)
        x_BD = x.reshape(-1, self.d_in)
        pre = self.pre_acts(x_BD)
        acts = self.activation(pre)
        out = self.decode(acts)
        losses = self.losses(x_BD, pre, acts, out)
        return ForwardOutput(out.reshape(x.shape), acts.reshape(*x.shape[:-1], self.d_sae), losses)

    def loss(self, out: ForwardOutput | TrainOutput, coefficients: dict[str, float] | None = None) -> Tensor:
        """Weighted sum of the named losses; coefficients default to 1 (schedules scale them)."""
        coefficients = coefficients or {}
        return sum(coefficients.get(k, 1.0) * v for k, v in out.losses.items())  # type: ignore[return-value]

    def _check_input(self, x: Tensor) -> None:
        if x.shape[-1] != self.d_in:
            raise ValueError(
                f"input's last dimension is {x.shape[-1]} but this SAE has d_in={self.d_in} "
                f"(trained on {self.cfg.hook_name!r}); pass activations from that hook"
            )

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the part of each W_dec row's gradient along the row (keeps unit norm to first order)."""
        if self.W_dec.grad is None:
            return
        w = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec.grad -= (self.W_dec.grad * w).sum(1, keepdim=True) * w

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def decoder_norms(self) -> Tensor:
        return self.W_dec.norm(dim=1)

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype
