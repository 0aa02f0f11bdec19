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

Everything else that differs between architectures is also answered here, so that the trainer,
checkpoints, evaluation and the CLI never name one: `config_fields` (the SAEConfig fields it
reads), `default_name` (run folder), `param_groups` (optimizer groups), `keep_fp32`,
`expected_tensors`, `export` (+ `export_layout`) / `import_tensors` / `read_saelens_cfg` (the SAELens layout, both
directions), `summary` (evaluation's report) and `describe` (the CLI's line). The defaults fit a
plain SAE with the four SAELens tensors; an architecture overrides only what it changes.

Transcoders are not an architecture but a setting every architecture takes (`SAEConfig.hook_name_out`):
the codes come from `hook_name` and decode to another hook's activations (`W_dec [d_sae, d_out]`,
`b_dec [d_out]`, no b_dec subtraction on the input), optionally plus a linear skip term
`x W_skip^T` (`W_skip [d_out, d_in]`, zero at init, SAELens's layout). The base class owns all of
it: the trainer's entry `forward_for_training(x, target)` subtracts the skip term from the target
and hands the rest to the architecture's `training_forward(x, ..., target=)`, which reconstructs
`target` instead of `x` when given one. Saved under SAELens's transcoder names ("transcoder",
"skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder"), and by the same rule
"<name>_transcoder" / "<name>_skip_transcoder" for mechanisms SAELens has no transcoder of (TopK, Gated).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor, nn

from sae.config import ConfigError, SAEConfig, TrainConfig, from_dict

SAELENS_TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec")  # what every SAELens SAE holds
SAELENS_UNNAMED = "standard"  # the architecture SAELens assumes when cfg.json names none

_REGISTRY: dict[str, type[SparseAutoencoder]] = {}
# SAELens "architecture" (or ("architecture", "activation_fn") for older layouts) -> our name
_SAELENS: dict[str | tuple[str, str], str] = {}
# file name of a native (non-SAELens) format -> (label for messages, our name)
_NATIVE: dict[str, tuple[str, str]] = {}


def transcoder_saelens_name(name: str, skip: bool) -> str:
    """The SAELens architecture name of a transcoder whose SAE would be saved as `name`."""
    if name == SAELENS_UNNAMED:
        return "skip_transcoder" if skip else "transcoder"
    return f"{name}_skip_transcoder" if skip else f"{name}_transcoder"


def split_transcoder_name(name: str) -> tuple[str, bool] | None:
    """(SAE name, skip) of a transcoder architecture name; None when `name` is not a transcoder's."""
    for suffix, skip in (("skip_transcoder", True), ("transcoder", False)):
        if name == suffix:
            return SAELENS_UNNAMED, skip
        if name.endswith("_" + suffix):
            return name[: -len(suffix) - 1], skip
    return None


class ForwardOutput(NamedTuple):
    """What `forward` returns: the reconstruction, the codes, and every loss term by name."""

    sae_out: Float[Tensor, "batch d_out"]
    feature_acts: Float[Tensor, "batch d_sae"]
    losses: dict[str, Tensor]  # e.g. {"mse": ..., "l1": ...}; `loss` sums them with weights


class TrainOutput(NamedTuple):
    """What `training_forward` returns to the trainer (no dense codes)."""

    sae_out: Float[Tensor, "batch d_out"]
    losses: dict[str, Tensor]  # unweighted; the trainer applies `coefficients()` x schedules
    fire_counts: Tensor  # long [d_sae]: tokens of this batch on which each latent fired
    l0: Tensor  # scalar: mean number of active latents per token


def register(
    name: str,
    *,
    saelens: Iterable[str | tuple[str, str]] = (),
    native: tuple[str, str] | None = None,
):
    """Class decorator: make an architecture constructible by name (`cfg.architecture`).

    `saelens`: other SAELens names this class loads (its own name always counts), or
    (architecture, activation_fn) pairs for layouts that named it by its activation.
    `native`: (file name, label) of a non-SAELens npz format whose folder loads as this class
    through `from_native`.
    """

    def deco(cls: type[SparseAutoencoder]) -> type[SparseAutoencoder]:
        cls.architecture = name
        _REGISTRY[name] = cls
        for alias in (name, *saelens):
            _SAELENS[alias] = name
        if native is not None:
            _NATIVE[native[0]] = (native[1], name)
        return cls

    return deco


def _load_all() -> None:
    import sae.architectures  # noqa: F401  (importing the package registers every file)


def architectures() -> list[str]:
    """Every registered name. `sae` exports `architecture_names` too: once the package
    `sae.architectures` is imported, `sae.architectures` is that package, not this function."""
    return architecture_names()


def architecture_names(uses: str | None = None) -> list[str]:
    """Registered names, sorted; with `uses`, only those that read that SAEConfig field."""
    _load_all()
    def reads(cls: type[SparseAutoencoder]) -> bool:
        return uses is None or uses in cls.config_fields or (uses == "options" and cls.options_type is not None)

    return sorted(n for n, cls in _REGISTRY.items() if reads(cls))


def get_architecture(name: str) -> type[SparseAutoencoder]:
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown SAE architecture {name!r}; known: {sorted(_REGISTRY)} "
            "(set architecture= to one of these, or add a file to sae/architectures/)"
        )
    return _REGISTRY[name]


def from_saelens(name: object, activation_fn: object = None) -> type[SparseAutoencoder] | None:
    """The class that loads a SAELens cfg.json's architecture (None: no registered one does).
    Both arguments come straight from a file, so anything that is not a name matches nothing."""
    _load_all()
    if not isinstance(name, str):
        return None
    split = split_transcoder_name(name)
    if split is not None:  # a transcoder of the SAE saved under that name
        name = split[0]
    ours = _SAELENS.get((name, activation_fn)) if isinstance(activation_fn, str) else None
    ours = ours or _SAELENS.get(name)
    return _REGISTRY[ours] if ours is not None else None


def saelens_names() -> list[str]:
    """Every SAELens architecture name some registered class loads (and, by `transcoder_saelens_name`,
    the transcoder of each: "transcoder", "jumprelu_transcoder", "topk_skip_transcoder", ...)."""
    _load_all()
    return sorted(k for k in _SAELENS if isinstance(k, str))


def native_formats() -> dict[str, tuple[str, type[SparseAutoencoder]]]:
    """{file name: (label, class)} of the non-SAELens formats a folder may hold."""
    _load_all()
    return {f: (label, _REGISTRY[name]) for f, (label, name) in _NATIVE.items()}


def build_sae(cfg: SAEConfig) -> SparseAutoencoder:
    return get_architecture(cfg.architecture)(cfg)


def kind_name(cfg: SAEConfig) -> str:
    """The architecture's name, marked as a transcoder where it is one (run names, the CLI's line)."""
    if cfg.hook_name_out is None:
        return cfg.architecture
    return f"{cfg.architecture}_{'skip_' if cfg.skip_connection else ''}transcoder"


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
    # SAEConfig fields this architecture reads beyond the shared ones (the CLI's help says which
    # flags apply to which architecture). "k" also puts k in run names, evaluation reports, the
    # CLI's line and SAELens files, as every TopK-style SAE needs.
    config_fields: ClassVar[tuple[str, ...]] = ()
    saelens_name: ClassVar[str | None] = None  # cfg.json's "architecture"; None: the registered name
    keep_fp32: ClassVar[tuple[str, ...]] = ()  # parameters that stay fp32 whatever cfg.dtype says
    # A dataclass of the settings only this architecture reads (`SAEConfig.options`); None: it takes none.
    options_type: ClassVar[type | None] = None

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        if cfg.d_in <= 0 or cfg.d_sae <= 0 or (cfg.d_out is not None and cfg.d_out <= 0):
            raise ValueError(f"d_in, d_sae and d_out must be positive, got d_in={cfg.d_in}, d_sae={cfg.d_sae}, "
                             f"d_out={cfg.d_out}")
        if cfg.skip_connection and cfg.hook_name_out is None:
            raise ValueError("skip_connection=True is a transcoder's setting: set hook_name_out (the hook to "
                             "reconstruct, e.g. blocks.15.hook_mlp_out) or drop skip_connection")
        if cfg.hook_name_out is not None and cfg.apply_b_dec_to_input:
            # b_dec lives in the output's space (SAELens refuses the flag on transcoders too)
            cfg = dataclasses.replace(cfg, apply_b_dec_to_input=False)
        self.options = self.parse_options(cfg)
        self.cfg = cfg
        self.d_in = cfg.d_in
        self.d_sae = cfg.d_sae
        self.d_out = cfg.d_out if cfg.d_out is not None else cfg.d_in
        dtype = getattr(torch, cfg.dtype)
        self.W_enc = nn.Parameter(torch.empty(cfg.d_in, cfg.d_sae, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.W_dec = nn.Parameter(torch.empty(cfg.d_sae, self.d_out, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(self.d_out, dtype=dtype))
        # zero at init: the codes first learn what the linear map cannot give
        self.W_skip = nn.Parameter(torch.zeros(self.d_out, cfg.d_in, dtype=dtype)) if cfg.skip_connection else None
        self.reset_parameters()

    @classmethod
    def parse_options(cls, cfg: SAEConfig) -> Any:
        """`cfg.options` as this architecture's `options_type` (ValueError: which key is wrong and
        which keys exist). Called when an SAE is built, so a bad option fails before training."""
        given = dict(cfg.options or {})
        if cls.options_type is None:
            if given:
                raise ValueError(
                    f"{cls.architecture} takes no options, got {sorted(given)}; remove them "
                    f"(architectures with options: {architecture_names(uses='options')})"
                )
            return None
        try:
            options = from_dict(cls.options_type, given, where=f"{cls.architecture} options")
        except ConfigError as e:
            raise ValueError(str(e)) from None
        check = getattr(options, "check", None)
        if check is not None:
            check(cfg)  # cross-checks against the rest of the config (e.g. group sizes vs d_sae)
        return options

    # ------------------------------------------------------------------ to override

    def reset_parameters(self) -> None:
        """W_dec rows: random directions with the architecture's norm; W_enc = W_dec^T (a transcoder's
        encoder reads another space: its own random directions of the same norm)."""
        norm = self.cfg.decoder_init_norm if self.cfg.decoder_init_norm is not None else self.default_decoder_norm
        nn.init.kaiming_uniform_(self.W_dec)
        with torch.no_grad():
            self.W_dec *= norm / self.W_dec.norm(dim=1, keepdim=True)
            if self.is_transcoder:
                nn.init.kaiming_uniform_(self.W_enc)
                self.W_enc *= norm / self.W_enc.norm(dim=0, keepdim=True)
            else:
                self.W_enc.copy_(self.W_dec.T)

    def activation(self, pre_acts: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        raise NotImplementedError

    def losses(self, x: Tensor, pre_acts: Tensor, feature_acts: Tensor, sae_out: Tensor) -> dict[str, Tensor]:
        """Named losses of a dense forward pass (mse plus the architecture's sparsity terms). `x` is what
        `sae_out` must reconstruct: the input, or a transcoder's target less its skip term."""
        return {"mse": mse_loss(sae_out, x)}

    def coefficients(self) -> dict[str, float]:
        """Final weight of every loss `training_forward` returns (the trainer warms up `sparsity_loss`)."""
        return {"mse": 1.0}

    def training_forward(
        self, x: Float[Tensor, "batch d_in"], dead_mask: Tensor | None = None, sparse: bool = True,
        target: Tensor | None = None,
    ) -> TrainOutput:
        """Default: the dense path. Sparse architectures override this. `target` [batch, d_out]: what
        codes @ W_dec + b_dec must reconstruct (None: x itself); `forward_for_training` passes it."""
        pre = self.pre_acts(x)
        acts = self.activation(pre)
        out = acts @ self.W_dec + self.b_dec
        fired = acts > 0
        y = x if target is None else target
        return TrainOutput(out, self.losses(y, pre, acts, out), fired.sum(0), fired.sum(-1).float().mean())

    def forward_for_training(
        self, x: Tensor, target: Tensor | None = None, dead_mask: Tensor | None = None, sparse: bool = True
    ) -> TrainOutput:
        """The trainer's entry: `training_forward` on x, reconstructing `target` (a transcoder's
        activations at hook_name_out; None for an autoencoder) less the skip term, so that every
        architecture's losses see the part its codes must explain. `sae_out` includes the skip term."""
        if not self.is_transcoder:
            if target is not None:
                raise ValueError(f"{self.cfg.architecture} SAE on {self.cfg.hook_name!r} reconstructs its input; "
                                 "a target is for transcoders (set hook_name_out)")
            return self.training_forward(x, dead_mask, sparse)
        if target is None:
            raise ValueError(f"a transcoder needs target activations from {self.cfg.hook_name_out!r} beside its "
                             f"input; pass (input, target) batches (the store pairs them)")
        x_BD = x.reshape(-1, self.d_in)
        y_BD = self._check_target(target).reshape(-1, self.d_out)
        skip = self.skip_term(x_BD)
        if skip is not None:
            y_BD = y_BD - skip
        out = self.training_forward(x_BD, dead_mask, sparse, target=y_BD)
        return out if skip is None else out._replace(sae_out=out.sae_out + skip.detach())

    @torch.no_grad()
    def init_from_data(self, x: Float[Tensor, "batch d_in"]) -> None:
        """Data-dependent initialisation after b_dec is set (default: nothing)."""

    @torch.no_grad()
    def after_step(self, out: TrainOutput) -> None:
        """Called after each optimizer step with that step's output (default: nothing)."""

    def export(self) -> tuple[str, dict[str, Tensor], dict[str, Any]]:
        """(SAELens architecture name, tensors to save, extra cfg.json keys) of this architecture as
        an autoencoder, for inference use (`export_layout` adds a transcoder's parts)."""
        tensors = {n: getattr(self, n).detach() for n in SAELENS_TENSORS}
        extra = {"k": self.cfg.k} if "k" in self.config_fields else {}
        return self.saelens_name or self.architecture, tensors, extra

    def export_layout(self) -> tuple[str, dict[str, Tensor], dict[str, Any]]:
        """What a checkpoint holds: `export`, renamed to the transcoder layout for a transcoder
        (SAELens's name, "d_out", W_skip [d_out, d_in] of a skip transcoder)."""
        name, tensors, extra = self.export()
        if not self.is_transcoder:
            return name, tensors, extra
        if self.W_skip is not None:
            tensors["W_skip"] = self.W_skip.detach()
        return transcoder_saelens_name(name, self.W_skip is not None), tensors, {**extra, "d_out": self.d_out}

    @classmethod
    def import_tensors(cls, tensors: dict[str, Tensor], cfg: SAEConfig) -> dict[str, Tensor]:
        """A loaded file's tensors, renamed and converted to this class's state_dict (default: as read)."""
        return tensors

    @classmethod
    def read_saelens_cfg(cls, raw: dict[str, Any], cfg: SAEConfig) -> None:
        """Fill this architecture's fields of `cfg` from a SAELens cfg.json (ValueError: what is wrong)."""
        if "k" not in cls.config_fields:
            return
        k = raw.get("k", (raw.get("activation_fn_kwargs") or {}).get("k"))
        if not isinstance(k, (int, float)) or int(k) <= 0:
            raise ValueError(f"a {cls.architecture} SAE needs a positive 'k', got {k!r}")
        cfg.k = int(k)

    @classmethod
    def from_native(cls, tensors: dict[str, Tensor], folder: Path) -> SAEConfig:
        """The config of an SAE in this class's native format (`register(native=...)`)."""
        raise NotImplementedError(f"{cls.architecture} has no native format")

    def param_groups(self, train_cfg: TrainConfig) -> list[dict[str, Any]]:
        """Adam's parameter groups; `lr_scale` multiplies the scheduled lr. The order is part of the
        optimizer state that checkpoints hold: changing it breaks resuming older runs."""
        return [{"params": list(self.parameters()), "lr_scale": 1.0}]

    def expected_tensors(self) -> dict[str, tuple[int, ...]]:
        """Name and shape of every tensor a checkpoint of this SAE holds (after `import_tensors`)."""
        return {n: tuple(t.shape) for n, t in self.state_dict().items()}

    @classmethod
    def name_detail(cls, cfg: SAEConfig) -> str:
        """What sets this SAE's sparsity, for run names (e.g. "k32", "l1_2.5"); "" when nothing is worth naming."""
        if "k" in cls.config_fields:
            return f"k{cfg.k}"
        return f"l1_{cfg.l1_coefficient:g}" if "l1_coefficient" in cls.config_fields else ""

    @classmethod
    def default_name(cls, cfg: SAEConfig) -> str:
        """Run folder name when SAEConfig.name is unset: architecture, width, sparsity."""
        return "_".join(p for p in (kind_name(cfg), str(cfg.d_sae), cls.name_detail(cfg)) if p)

    @classmethod
    def describe(cls, cfg: SAEConfig) -> str:
        """One line for the CLI, e.g. "topk(d_sae=4608, k=32)"."""
        k = f", k={cfg.k}" if "k" in cls.config_fields else ""
        return f"{kind_name(cfg)}(d_sae={cfg.d_sae}{k})"

    def summary(self) -> dict[str, Any]:
        """What evaluation reports about this SAE (eval.json's "sae" block, its path aside)."""
        return {
            "architecture": self.cfg.architecture,
            "hook_name": self.cfg.hook_name,
            "model_name": self.cfg.model_name,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            **({"hook_name_out": self.cfg.hook_name_out, "d_out": self.d_out,
                "skip_connection": self.W_skip is not None} if self.is_transcoder else {}),
            "k": self.cfg.k if "k" in self.config_fields else None,
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    # ------------------------------------------------------------------ shared

    @property
    def is_transcoder(self) -> bool:
        """Reads one hook and reconstructs another (`cfg.hook_name_out`)."""
        return self.cfg.hook_name_out is not None

    @property
    def output_hook(self) -> str:
        """The hook whose activations `reconstruct` estimates (hook_name for an autoencoder)."""
        return self.cfg.hook_name_out if self.cfg.hook_name_out is not None else self.cfg.hook_name

    def skip_term(self, x: Float[Tensor, "... d_in"]) -> Tensor | None:
        """x W_skip^T [..., d_out] of a skip transcoder; None without one."""
        if self.W_skip is None:
            return None
        return x.to(self.W_skip.dtype) @ self.W_skip.T

    def reconstruct(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        """The SAE's estimate of its output hook's activation from its input: decode(encode(x)), plus
        the skip term for a skip transcoder. What evaluation, splicing and steering put in the model."""
        out = self.decode(self.encode(x))
        skip = self.skip_term(x)
        return out if skip is None else out + skip

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

    def forward(self, x: Float[Tensor, "... d_in"], target: Tensor | None = None) -> ForwardOutput:
        """Output, codes and losses; the losses measure `target` (a transcoder's; its losses are
        empty without one) or, for an autoencoder, x itself."""
        self._check_input(x)
        x_BD = x.reshape(-1, self.d_in)
        pre = self.pre_acts(x_BD)
        acts = self.activation(pre)
        out = self.decode(acts)
        skip = self.skip_term(x_BD)
        losses: dict[str, Tensor] = {}
        if target is not None or not self.is_transcoder:
            y_BD = x_BD if target is None else self._check_target(target).reshape(-1, self.d_out)
            losses = self.losses(y_BD if skip is None else y_BD - skip, pre, acts, out)
        if skip is not None:
            out = out + skip
        return ForwardOutput(out.reshape(*x.shape[:-1], self.d_out), acts.reshape(*x.shape[:-1], self.d_sae), losses)

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

    def _check_target(self, y: Tensor) -> Tensor:
        if y.shape[-1] != self.d_out:
            raise ValueError(
                f"target's last dimension is {y.shape[-1]} but this transcoder has d_out={self.d_out} "
                f"(it reconstructs {self.cfg.hook_name_out!r}); pass activations from that hook"
            )
        return y

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the part of each W_dec row's gradient along the row (keeps unit norm to first order)."""
        if self.W_dec.grad is None:
            return
        # g -= (g.w / |w|^2) w in place: no [d_sae, d_in] temporaries (three fresh blocks a step otherwise)
        w, g = self.W_dec, self.W_dec.grad
        along_F = torch.linalg.vecdot(g, w) / torch.linalg.vector_norm(w, dim=1).square().clamp_min(1e-24)
        g.addcmul_(along_F.unsqueeze(1), w, value=-1.0)

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
