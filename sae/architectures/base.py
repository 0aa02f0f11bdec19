"""The interface every SAE architecture implements, and the registry that finds them by name.

An architecture is one file in this folder that subclasses `SparseAutoencoder` and decorates
itself with `@register("name")`. Parameters are always `W_enc [d_in, d_sae]`, `b_enc [d_sae]`,
`W_dec [d_sae, d_in]`, `b_dec [d_in]` (SAELens's layout), plus whatever the architecture adds
(e.g. JumpReLU's threshold).
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

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
        raise ValueError(f"unknown SAE architecture {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def build_sae(cfg: SAEConfig) -> SparseAutoencoder:
    return get_architecture(cfg.architecture)(cfg)


class SparseAutoencoder(nn.Module):
    """Base class: linear encoder, an activation that makes codes sparse, linear decoder."""

    architecture: ClassVar[str] = "base"

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
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
        """Default init: W_dec rows random unit vectors, W_enc = W_dec^T."""
        nn.init.kaiming_uniform_(self.W_dec)
        with torch.no_grad():
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True)
            self.W_enc.copy_(self.W_dec.T)

    def activation(self, pre_acts: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        raise NotImplementedError

    def forward(self, x: Float[Tensor, "batch d_in"]) -> ForwardOutput:
        raise NotImplementedError

    def loss(self, out: ForwardOutput, coefficients: dict[str, float] | None = None) -> Tensor:
        """Weighted sum of the named losses; coefficients default to 1 (schedules scale them)."""
        coefficients = coefficients or {}
        return sum(coefficients.get(k, 1.0) * v for k, v in out.losses.items())  # type: ignore[return-value]

    # ------------------------------------------------------------------ shared

    def pre_acts(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        """Dense feature activations (zeros where a latent does not fire)."""
        return self.activation(self.pre_acts(x))

    def decode(self, feature_acts: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_in"]:
        return feature_acts @ self.W_dec + self.b_dec

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype
