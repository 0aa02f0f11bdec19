"""Typed configuration for every stage, and the one way to load, override and save it.

Each stage's config is a dataclass defined here, so there is a single source of truth that
is saved beside every artifact (`config.json` / inside `manifest.json` / `cfg.json`).
Configs load from YAML or JSON, take dotted `key=value` overrides from the command line,
and round-trip exactly through `to_dict` / `from_dict`.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sae.atomic_io import atomic_write_json

T = TypeVar("T")

DEFAULT_MODEL = "smollm2-135m-instruct"


class ConfigError(ValueError):
    """A config file or override that does not fit its dataclass."""


# --------------------------------------------------------------------------- stages


@dataclass
class ModelConfig:
    """Which language model to load, where, and in what precision."""

    name: str = DEFAULT_MODEL  # the embedded default, a hub id, or a local HF directory
    device: str | None = None  # None: cuda > mps > cpu
    dtype: str = "float32"


@dataclass
class DataConfig:
    """Where text comes from and how it is packed into fixed-length token rows."""

    source: str = "builtin"  # "builtin", a .txt/.jsonl/.parquet file or folder, or a HF dataset name
    split: str = "train"
    dataset_config: str | None = None  # HF dataset config name (e.g. "sample-10BT")
    text_field: str = "text"
    messages_field: str = "messages"  # chat data: rendered with the model's chat template
    context_size: int = 128
    streaming: bool = True
    shuffle_seed: int | None = None  # shuffle documents (HF streaming buffer) when set
    data_files: str | None = None  # HF generic builders: source="json"/"parquet"/"text" + these files
    separator: str | None = None  # token between documents; None: <|endoftext|> if known, else EOS


@dataclass
class TokenFilterConfig:
    """Which positions an SAE sees (`sae.token_filter`): one setting for every stage that reads
    activations, so evaluation and the feature database see what the cache trained on."""

    exclude_special_tokens: bool = True  # BOS / separators: massive-norm outliers in residual streams
    max_norm_ratio: float | None = 10.0  # drop tokens whose norm exceeds this x their row's median


@dataclass
class CacheConfig:
    """An activation-caching run: model x text x hooks -> shards + manifest."""

    out_dir: str = "runs/acts"
    hooks: list[str] = field(default_factory=lambda: ["blocks.15.hook_resid_post"])
    n_tokens: int = 200_000
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    dtype: str = "float32"  # storage dtype of activations: float32 | bfloat16 | float16
    batch_size: int = 32  # context rows per forward pass
    shard_tokens: int = 65_536  # tokens (kept or not) per shard
    token_filter: TokenFilterConfig = field(default_factory=TokenFilterConfig)
    seed: int = 0
    engine: str = "auto"  # auto: plain HF forward with hooks (checked against the bridge) | bridge


@dataclass
class StoreConfig:
    """How activations are served to a trainer: batches, shuffling, normalisation."""

    batch_size: int = 4096
    buffer_tokens: int = 262_144  # mixing buffer: bounded memory, mixes across shards
    shuffle: bool = True
    seed: int = 0
    device: str | None = None
    dtype: str = "float32"
    normalize: bool = True  # scale so that the mean norm is sqrt(d_in)
    held_out_tokens: int = 0  # reserved for evaluation (cache tail / stream head), never trained on
    verify: bool = True  # sha256-check each cache shard the first time it is read
    # on-the-fly (from_model) only; a cache applies its own filters when written
    model_batch_size: int = 32  # context rows per forward pass
    token_filter: TokenFilterConfig = field(default_factory=TokenFilterConfig)


@dataclass
class SAEConfig:
    """The shape and sparsity mechanism of one sparse autoencoder."""

    architecture: str = "topk"  # a registered name: `sae.architecture_names()`
    d_in: int = 576
    d_sae: int = 4608
    k: int = 32  # topk / batchtopk
    l1_coefficient: float = 5.0  # relu
    l0_coefficient: float = 1.0  # jumprelu
    jumprelu_bandwidth: float = 0.05
    jumprelu_init_threshold: float = 0.001
    aux_k: int | None = None  # topk/batchtopk AuxK latents (None: d_in // 2)
    aux_coefficient: float = 1 / 32
    # a latent is dead after this many tokens without firing (None: min(10M, training tokens / 10))
    dead_after_tokens: int | None = None
    target_l0: float | None = None  # jumprelu: penalise (L0/target - 1)^2 instead of L0
    decoder_init_norm: float | None = None  # None: the architecture's default (relu 0.1, others 1)
    apply_b_dec_to_input: bool = True  # subtract b_dec before encoding (SAELens's flag); off for transcoders
    # Transcoders (Dunefsky et al. 2024): read `hook_name`, reconstruct `hook_name_out` (e.g. an MLP's
    # input -> its output). None: an autoencoder, which reconstructs its own input. Any architecture.
    hook_name_out: str | None = None
    d_out: int | None = None  # width of hook_name_out (None: d_in)
    # transcoders: add a learned linear term x W_skip^T to the output (skip transcoder, Paulo et al. 2025)
    skip_connection: bool = False
    # Settings only one architecture reads, checked by that architecture's own `Options` dataclass
    # (e.g. matryoshka_batchtopk's {"group_sizes": [...]}): a new architecture adds its settings in
    # its own file, not here. CLI: `saekit train --option group_sizes=[288,288,576]`.
    options: dict[str, Any] = field(default_factory=dict)
    name: str | None = None  # sub-folder / metric prefix when several SAEs train together
    hook_name: str = "blocks.15.hook_resid_post"
    model_name: str = DEFAULT_MODEL
    context_size: int = 128
    dtype: str = "float32"


@dataclass
class TrainConfig:
    """A training run: one activation stream, one or more SAEs."""

    out_dir: str = "runs/sae"
    cache_dir: str | None = None  # activation cache; None: run the model on the fly
    saes: list[SAEConfig] = field(default_factory=lambda: [SAEConfig()])
    store: StoreConfig = field(default_factory=StoreConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    n_tokens: int = 2_000_000
    lr: float | None = None  # None: each architecture's own (`default_lr`: TopK/BatchTopK 2e-3, ReLU 4e-3, JumpReLU 4e-4)
    lr_warmup_steps: int = 50  # ~10% of the default 2M-token run (488 steps of 4096)
    lr_decay_fraction: float = 0.2  # linear decay over the last fraction of training
    sparsity_warmup_steps: int = 25  # ~5% of it (Anthropic's recipe); scale both for longer runs
    grad_clip: float = 1.0
    b_dec_init: str = "mean"  # mean | geometric_median | zeros
    autocast_dtype: str | None = None  # None (fp32) or "bfloat16"
    sparse_decoder: bool = True
    device: str | None = None
    seed: int = 0
    checkpoint_every_tokens: int = 500_000
    log_every_steps: int = 20
    wandb_project: str | None = None  # None: no wandb
    wandb_mode: str | None = None  # online | offline | disabled
    run_name: str | None = None
    resume: bool = True  # continue from <out_dir>/checkpoints when its config matches
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    # jumprelu thresholds' lr = lr x this. Thresholds live on the pre-activations' scale (~1-3) and
    # Adam moves them ~lr per step: at 1x they stayed near their init and L0 settled at 19 for a
    # target of 32; at 10x it reached 26 within 49 steps, at 50x it overshot to 62-73 (measured).
    threshold_lr_scale: float = 10.0
    progress: bool = True  # tqdm bar with tokens/s, FVU, L0, dead %


@dataclass
class EvalConfig:
    """Held-out evaluation of a trained SAE."""

    sae_path: str = "runs/sae"
    cache_dir: str | None = None
    n_tokens: int = 50_000
    ce_batches: int = 8  # context rows batches for CE / KL with the SAE spliced in (0: skip CE)
    ce_batch_size: int = 8  # rows per model forward in the CE pass (logits are rows x T x vocab)
    skip_rows: int | None = None  # rows of the text stream to skip for CE; None: those the cache used
    token_filter: TokenFilterConfig = field(default_factory=TokenFilterConfig)  # never spliced in
    batch_size: int = 4096
    dense_threshold: float = 0.1
    save_png: bool = True  # density histogram as PNG too (kaleido + Chromium); HTML always
    out_path: str | None = None  # default: <sae_path>/eval.json
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    device: str | None = None
    # Dead / dense latents over their own budget (0: over the n_tokens above). Rare latents need
    # many tokens to show they are alive: SAEBench counts over >= 500k.
    density_tokens: int = 0
    # Opt-in quality evaluations (slow; `sae.sparse_probing`, `sae.absorption`).
    probing: bool = False  # sparse probing on the builtin corpus's topic / format labels
    probing_docs_per_class: int = 50  # documents per class and task (positives, then as many negatives)
    probing_max_tokens: int = 64  # tokens of each document (after BOS) that are mean-pooled
    absorption: bool = False  # first-letter feature absorption (Chanin et al. 2024)
    absorption_max_words: int = 2000  # single-token words drawn from the vocabulary (0: all)
    quality_seed: int = 0  # document / word sampling, splits and bootstrap


@dataclass
class FeaturesConfig:
    """A feature-database pass over N tokens."""

    sae_path: str = "runs/sae"
    out_path: str = "runs/features.sqlite"
    cache_dir: str | None = None
    n_tokens: int = 200_000
    top_k: int = 20
    context_window: int = 8  # tokens either side of the top example
    n_intervals: int = 10
    examples_per_interval: int = 5
    n_logits: int = 10
    n_neighbours: int = 10
    batch_size: int = 32
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    device: str | None = None
    seed: int = 0
    token_filter: TokenFilterConfig = field(default_factory=TokenFilterConfig)  # not analysed
    cooccurrence: bool = True  # count co-occurring latents (d_sae^2 int32 counts in memory)
    overwrite: bool = False  # replace an existing database at out_path


# --------------------------------------------------------------------------- machinery


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (nested dataclasses become dicts)."""
    return dataclasses.asdict(cfg)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        if tp is type(None) or (origin in (typing.Union, types.UnionType) and type(None) in args):
            return None
        raise ConfigError(f"{where}: None is not allowed here (expected {tp})")
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError("; ".join(errors))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if as_float != int(as_float):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        return str(value)
    return value


_FLAT_FILTER_KEYS = ("exclude_special_tokens", "max_norm_ratio")


def _nest_filter_keys(names: set[str], data: dict[str, Any]) -> dict[str, Any]:
    """Configs written before `token_filter` was nested (saved configs, manifests, `key=value`
    overrides) keep loading: their top-level filter keys move into it, and win over it."""
    flat = {k: data[k] for k in _FLAT_FILTER_KEYS if k in data}
    if "token_filter" not in names or not flat:
        return data
    nested = data.get("token_filter") or {}
    if dataclasses.is_dataclass(nested):
        nested = dataclasses.asdict(nested)  # type: ignore[arg-type]
    if not isinstance(nested, dict):
        return data  # from_dict reports the malformed value
    out = {k: v for k, v in data.items() if k not in flat}
    out["token_filter"] = {**nested, **flat}
    return out


def from_dict(cls: type[T], data: dict[str, Any], where: str | None = None) -> T:
    """Build a config dataclass from a dict, rejecting unknown keys with the valid ones."""
    where = where or cls.__name__
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    data = _nest_filter_keys(names, data)
    unknown = set(data) - names
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; valid keys are {sorted(names)}"
        )
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _parse_scalar(text: str) -> Any:
    """Parse a command-line value the way YAML would (numbers, bools, null, lists)."""
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides to a nested dict (copied). `saes.0.k=64` indexes lists."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. lr=1e-3)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = out
        for p in parts[:-1]:
            if isinstance(node, list):
                node = node[int(p)]
            else:
                node = node.setdefault(p, {})
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = _parse_scalar(raw)
        else:
            node[last] = _parse_scalar(raw)
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load a config dataclass from YAML/JSON (or defaults), then apply dotted overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        text = p.read_text()
        try:
            loaded = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"config file {p} is not valid {p.suffix[1:] or 'YAML'}: {e}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at top level")
        data = loaded
    if overrides:
        base = to_dict(from_dict(cls, data))
        data = apply_overrides(base, overrides)
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a config as pretty JSON, atomically (see `sae.atomic_io`)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(p, to_dict(cfg))
