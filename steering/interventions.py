"""What a steering intervention is: feature edits through an SAE, or a raw steering vector.

Feature edits map a feature's activation `f_i(x)` to a new value:

- `Clamp(v)`:   f_i -> v            (Anthropic's "clamp"; `unit="max"` means v x max activation)
- `Scale(c)`:   f_i -> c * f_i
- `Add(a)`:     f_i -> f_i + a      (= adding a multiple of the decoder direction W_dec[i])
- `Ablate()`:   f_i -> 0

and are applied the way Templeton et al. (2024) do it: split the activation into the SAE's
reconstruction plus the error term, edit the codes, decode, add back the UNCHANGED error:

    x_new = decode(codes') + (x - decode(codes))  =  x + sum_i (f_i' - f_i) * W_dec[i]

The right-hand form is what runs (it needs only the edited rows of W_dec); the codes come
from one `sae.encode(x)` of the unedited x, so TopK / BatchTopK SAEs, whose f_i depend on
every other latent, are edited exactly like ReLU / JumpReLU ones. Computing the error after
the edit would cancel the edit; computing it from the edited x is the classic bug.

A transcoder's latents (`sae.is_transcoder`: codes read at `cfg.hook_name`, decoded to
`cfg.hook_name_out`) are edited the same way across two hooks of one forward: `read_codes` encodes
the input hook's activation x (left unchanged), `apply_out` moves the output hook's activation y to
`y + sum_i (f_i' - f_i) W_dec[i]`. The skip term and the biases cancel in the difference, so the
error y - transcoder(x) is kept exactly, as for an SAE.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from sae import SparseAutoencoder

POSITION_MODES = ("all", "prompt", "generated", "after_last_user")
UNITS = ("abs", "max")


class SteeringError(ValueError):
    """A steering request that cannot run (bad feature, hook, strength, position mode...)."""


def _check_finite(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise SteeringError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise SteeringError(f"{name} is {value}; steering strengths must be finite numbers")
    return value


def _check_unit(unit: str) -> str:
    if unit not in UNITS:
        raise SteeringError(
            f"unknown unit {unit!r}: use 'abs' (raw activation value) or 'max' "
            "(multiples of the feature's maximum activation over the training data)"
        )
    return unit


def check_positions(positions: str) -> str:
    if positions not in POSITION_MODES:
        raise SteeringError(
            f"unknown position mode {positions!r}; use one of {', '.join(POSITION_MODES)}"
        )
    return positions


# --------------------------------------------------------------------------- feature edits


@dataclass(frozen=True)
class Clamp:
    """Set the feature's activation to `value` (absolute, or x its max activation)."""

    value: float
    unit: Literal["abs", "max"] = "abs"

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _check_finite("Clamp value", self.value))
        _check_unit(self.unit)


@dataclass(frozen=True)
class Scale:
    """Multiply the feature's activation by `factor` (0 ablates, 2 doubles)."""

    factor: float

    unit: ClassVar[str] = "abs"

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", _check_finite("Scale factor", self.factor))


@dataclass(frozen=True)
class Add:
    """Add `amount` to the activation, i.e. `amount * W_dec[i]` to the stream (x max act for unit max)."""

    amount: float
    unit: Literal["abs", "max"] = "abs"

    def __post_init__(self) -> None:
        object.__setattr__(self, "amount", _check_finite("Add amount", self.amount))
        _check_unit(self.unit)


@dataclass(frozen=True)
class Ablate:
    """Set the feature's activation to zero (its reconstruction share is removed)."""

    unit: ClassVar[str] = "abs"


Edit = Clamp | Scale | Add | Ablate
EDIT_TYPES = (Clamp, Scale, Add, Ablate)


def make_edit(method: str, strength: float, unit: str = "abs") -> Edit:
    """An edit from its name: clamp | scale | add | ablate (used by the CLI and sweeps)."""
    method = method.lower()
    if method == "clamp":
        return Clamp(strength, unit=unit)  # type: ignore[arg-type]
    if method == "add":
        return Add(strength, unit=unit)  # type: ignore[arg-type]
    if method == "scale":
        return Scale(strength)
    if method == "ablate":
        return Ablate()
    raise SteeringError(f"unknown steering method {method!r}; use clamp, scale, add or ablate")


def _needs_codes(edits: Sequence[Edit]) -> bool:
    return any(not isinstance(e, Add) for e in edits)


def _code_deltas(
    f_NF: Float[Tensor, "n F"] | None,
    n: int,
    edits: Sequence[Edit],
    max_acts: Tensor | None,
    like: Tensor,
) -> Float[Tensor, "n F"]:
    """`f_i' - f_i` per position and edited feature (`f_NF` may be None when every edit is an Add);
    in `like`'s dtype and device."""
    cols = []
    for j, e in enumerate(edits):
        scale = 1.0
        if getattr(e, "unit", "abs") == "max":
            if max_acts is None:
                raise SteeringError("unit='max' needs the features' max activations (pass max_acts)")
            scale = float(max_acts[j])
        if isinstance(e, Clamp):
            new = torch.full_like(f_NF[:, j], e.value * scale)  # type: ignore[index]
            cols.append(new - f_NF[:, j])  # type: ignore[index]
        elif isinstance(e, Scale):
            cols.append((e.factor - 1.0) * f_NF[:, j])  # type: ignore[index]
        elif isinstance(e, Add):
            cols.append(torch.full((n,), e.amount * scale, dtype=like.dtype, device=like.device))
        elif isinstance(e, Ablate):
            cols.append(-f_NF[:, j])  # type: ignore[index]
        else:
            raise SteeringError(f"not a feature edit: {e!r}; use Clamp, Scale, Add or Ablate")
    return torch.stack(cols, dim=1)


def _add_decoded(y_ND: Tensor, sae: SparseAutoencoder, features: Tensor, delta_NF: Tensor) -> Tensor:
    delta_ND = delta_NF @ sae.W_dec[features]
    return y_ND + delta_ND.to(y_ND.device, y_ND.dtype)


def edit_codes(
    x_ND: Float[Tensor, "n d_in"],
    sae: SparseAutoencoder,
    features: Tensor,
    edits: Sequence[Edit],
    max_acts: Tensor | None = None,
) -> Float[Tensor, "n d_in"]:
    """The edited activations `x + sum_i (f_i' - f_i) W_dec[i]` (the error term is kept exactly).

    `features` [F] are feature indices, `edits` one per feature, `max_acts` [F] the features'
    max activations (needed only for unit="max"). Computes in the SAE's dtype and device,
    returns in x's.
    """
    xs = x_ND.to(sae.W_dec.device, sae.W_dec.dtype)
    f_NF = sae.encode(xs)[:, features] if _needs_codes(edits) else None
    return _add_decoded(x_ND, sae, features, _code_deltas(f_NF, xs.shape[0], edits, max_acts, xs))


# --------------------------------------------------------------------------- interventions


@dataclass
class FeatureSteering:
    """Edits to some features of one SAE, at the SAE's hook (or `hook`), at some positions.

    For a transcoder the codes are read at `hook` (its input hook by default) and the edits land
    at `hook_out` (its `cfg.hook_name_out`), in the same forward (`read_codes` / `apply_out`).

    `feature_db`: a `sae.FeatureDB` or its path, for unit="max"; without one the max
    activations come from a quick scan of builtin-corpus tokens (`steering.max_activations`).
    """

    sae: SparseAutoencoder
    edits: Mapping[int, Edit]
    positions: str = "all"
    hook: str | None = None
    feature_db: Any = None
    label: str | None = None
    _max_acts: Tensor | None = field(default=None, repr=False)
    # A transcoder's output hook (cfg.hook_name_out), where its edits land; None for an SAE.
    hook_out: str | None = field(default=None, init=False)
    _idx: Tensor | None = field(default=None, repr=False, init=False)
    _edit_list: list = field(default_factory=list, repr=False, init=False)

    def __post_init__(self) -> None:
        check_positions(self.positions)
        if isinstance(self.edits, EDIT_TYPES):
            raise SteeringError("edits must map feature index -> edit, e.g. {123: Clamp(10)}")
        if not isinstance(self.edits, Mapping) or not self.edits:
            raise SteeringError("edits must be a non-empty mapping {feature_index: Clamp/Scale/Add/Ablate}")
        d_sae = int(self.sae.W_dec.shape[0])
        clean: dict[int, Edit] = {}
        for f, e in self.edits.items():
            try:
                if isinstance(f, bool):
                    raise TypeError
                fi = operator.index(f)
            except TypeError:
                raise SteeringError(f"feature index {f!r} must be an integer") from None
            if not 0 <= fi < d_sae:
                raise SteeringError(
                    f"feature index {fi} is out of range: this SAE has {d_sae} features (0..{d_sae - 1})"
                )
            if not isinstance(e, EDIT_TYPES):
                raise SteeringError(
                    f"edit for feature {fi} is {e!r}; use Clamp(v), Scale(c), Add(a) or Ablate()"
                )
            clean[fi] = e
        self.edits = clean
        if self.hook is None:
            self.hook = getattr(getattr(self.sae, "cfg", None), "hook_name", None)
            if not self.hook:
                raise SteeringError("the SAE's config names no hook; pass hook='blocks.L.hook_resid_post'")
        if getattr(self.sae, "is_transcoder", False):
            self.hook_out = self.sae.cfg.hook_name_out  # `hook` stays the input hook, where codes are read

    @property
    def features(self) -> list[int]:
        return list(self.edits)

    @property
    def d_in(self) -> int:
        """The width of the activation the codes are read from (`hook`)."""
        return int(self.sae.d_in) if self.hook_out is not None else int(self.sae.W_dec.shape[1])

    @property
    def d_out(self) -> int:
        """The width of the activation the edits land on (`hook_out`, else `hook`)."""
        return int(self.sae.W_dec.shape[1])

    @property
    def needs_max(self) -> bool:
        return any(getattr(e, "unit", "abs") == "max" for e in self.edits.values())

    def describe(self) -> str:
        if self.label:
            return self.label
        parts = [f"{f}:{type(e).__name__.lower()}({_edit_arg(e)})" for f, e in self.edits.items()]
        where = f"transcoder@{self.hook}->{self.hook_out}" if self.hook_out is not None else f"sae@{self.hook}"
        return f"{where}[{', '.join(parts)}]"

    def _index(self) -> Tensor:
        dev = self.sae.W_dec.device
        if self._idx is None or self._idx.device != dev:  # built once: this runs every decode step
            self._idx = torch.tensor(self.features, device=dev)
            self._edit_list = list(self.edits.values())
        return self._idx

    def apply(self, x_ND: Float[Tensor, "n d"]) -> Float[Tensor, "n d"]:
        if self.hook_out is not None:
            raise SteeringError(
                f"a transcoder's edit needs two hooks ({self.hook} -> {self.hook_out}); install it with "
                "steering.steer(...) or steering.generate(...), or call read_codes then apply_out"
            )
        return edit_codes(x_ND, self.sae, self._index(), self._edit_list, self._max_acts)

    def read_codes(self, x_ND: Float[Tensor, "n d_in"]) -> Float[Tensor, "n F"] | None:
        """A transcoder's codes of the edited features at its input (None when every edit is an Add)."""
        idx = self._index()
        if not _needs_codes(self._edit_list):
            return None
        return self.sae.encode(x_ND.to(self.sae.W_dec.device, self.sae.W_dec.dtype))[:, idx]

    def apply_out(self, y_ND: Float[Tensor, "n d_out"], f_NF: Tensor | None) -> Float[Tensor, "n d_out"]:
        """The output hook's activation `y + sum_i (f_i' - f_i) W_dec[i]`, with `f_NF` from
        `read_codes` of the same positions: the transcoder's error term is kept exactly."""
        idx = self._index()
        delta_NF = _code_deltas(f_NF, y_ND.shape[0], self._edit_list, self._max_acts, self.sae.W_dec)
        return _add_decoded(y_ND, self.sae, idx, delta_NF)


@dataclass
class VectorSteering:
    """Add `scale * vector` at a hook (a CAA / difference-of-means steering vector)."""

    vector: Tensor
    hook: str
    scale: float = 1.0
    positions: str = "all"
    label: str | None = None

    def __post_init__(self) -> None:
        check_positions(self.positions)
        self.scale = _check_finite("steering-vector scale", self.scale)
        if not isinstance(self.vector, Tensor) or self.vector.ndim != 1:
            raise SteeringError("vector must be a 1-D tensor [d_model]")
        if not torch.isfinite(self.vector).all():
            raise SteeringError("the steering vector contains NaN or infinite values")

    @property
    def d_in(self) -> int:
        return int(self.vector.shape[0])

    def with_scale(self, scale: float) -> VectorSteering:
        return VectorSteering(self.vector, self.hook, scale, self.positions, self.label)

    def describe(self) -> str:
        return self.label or f"vector@{self.hook}x{self.scale:g}"

    def apply(self, x_ND: Float[Tensor, "n d"]) -> Float[Tensor, "n d"]:
        return x_ND + (self.scale * self.vector).to(x_ND.device, x_ND.dtype)


Intervention = FeatureSteering | VectorSteering


def _edit_arg(e: Edit) -> str:
    if isinstance(e, Clamp):
        return f"{e.value:g}{'xmax' if e.unit == 'max' else ''}"
    if isinstance(e, Add):
        return f"{e.amount:+g}{'xmax' if e.unit == 'max' else ''}"
    if isinstance(e, Scale):
        return f"x{e.factor:g}"
    return ""


def as_interventions(spec: Any, edits: Mapping[int, Edit] | None = None, **kwargs: Any) -> list[Intervention]:
    """Normalise what users pass: None, one intervention, a list, or (sae, {feature: edit})."""
    if spec is None:
        return []
    if edits is not None:
        return [FeatureSteering(spec, edits, **kwargs)]
    if isinstance(spec, (FeatureSteering, VectorSteering)):
        return [spec]
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], Mapping):
        return [FeatureSteering(spec[0], spec[1], **kwargs)]
    if isinstance(spec, (list, tuple)):
        out: list[Intervention] = []
        for item in spec:
            out.extend(as_interventions(item, **kwargs))
        return out
    raise SteeringError(
        f"cannot steer with {type(spec).__name__}; pass FeatureSteering / VectorSteering objects, "
        "a list of them, or (sae, {feature: Clamp(...)})"
    )
