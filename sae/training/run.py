"""`train(cfg)`: build the activation stores a config describes, then run the `Trainer`.

With `cfg.cache_dir`, the config is first resolved against the cache (`resolve_train_config`):
the same function `saekit train --cache` uses, so the library and the CLI train the same SAEs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sae.config import ConfigError, TrainConfig
from sae.manifest import CacheManifest
from sae.training.sae_slot import stream_key
from sae.training.trainer import Trainer

__all__ = ["train", "resolve_train_config", "SAE_CACHE_KEYS"]

# SAEConfig fields a cache can supply when the user did not set them
SAE_CACHE_KEYS = frozenset({"hook_name", "d_in", "d_out"})


def resolve_train_config(
    cfg: TrainConfig,
    manifest: CacheManifest,
    user_set: Sequence[set[str]] | None = None,
) -> TrainConfig:
    """`cfg` with each SAE's hook, d_in, model name and context size taken from the cache.

    `user_set[i]`: the SAEConfig fields of SAE `i` the user chose (None: all of them, as for a
    config built in code). A hook or d_in the user did not choose comes from the cache (the hook
    only when the cache holds one); a chosen one must agree with it. The model name and context
    size are facts about the cached data and always come from the cache. A transcoder's target
    hook must be in the cache too; its d_out is the cache's width of that hook. Returns a new config.
    """
    hooks = list(manifest.hooks)
    saes = []
    for i, s in enumerate(cfg.saes):
        chosen = SAE_CACHE_KEYS if user_set is None else user_set[i]
        hook = s.hook_name
        if "hook_name" not in chosen and len(hooks) == 1:
            hook = hooks[0]
        if hook not in hooks:
            raise ConfigError(
                f"hook {hook!r} is not in the cache {manifest.path}; it holds {hooks} (use --hook)"
            )
        d_in = manifest.d_in_of(hook)
        if "d_in" in chosen and s.d_in != d_in:
            raise ConfigError(
                f"SAE d_in={s.d_in} but the activations ({hook}) in {manifest.path} have d_in={d_in}; "
                f"set saes.{i}.d_in={d_in} (`saekit train`: --d-in {d_in}, or leave --d-in out to take the cache's)"
            )
        facts: dict[str, Any] = {"hook_name": hook, "d_in": d_in}
        if s.hook_name_out is not None:
            facts["d_out"] = _target_width(s, i, manifest, chosen)
        if manifest.model is not None:
            facts["model_name"] = manifest.model
        if manifest.context_size is not None:
            facts["context_size"] = manifest.context_size
        saes.append(dataclasses.replace(s, **facts))
    return dataclasses.replace(cfg, saes=saes)


def _target_width(s: Any, i: int, manifest: CacheManifest, chosen: set[str] | frozenset[str]) -> int:
    """The cache's width of a transcoder's target hook (ConfigError: not cached, or another d_out chosen)."""
    hooks = list(manifest.hooks)
    if s.hook_name_out not in hooks:
        raise ConfigError(
            f"transcoder {i} reconstructs {s.hook_name_out!r}, which is not in the cache {manifest.path} (it holds "
            f"{hooks}); cache both hooks in one pass: `saekit cache --hook {s.hook_name} --hook {s.hook_name_out}`"
        )
    d_out = manifest.d_in_of(s.hook_name_out)
    if "d_out" in chosen and s.d_out is not None and s.d_out != d_out:
        raise ConfigError(
            f"transcoder d_out={s.d_out} but the activations ({s.hook_name_out}) in {manifest.path} have width "
            f"{d_out}; set saes.{i}.d_out={d_out} or leave it unset to take the cache's"
        )
    return d_out


def train(cfg: TrainConfig, store: Any = None, model: Any = None) -> list[Path]:
    """Train every SAE in `cfg` and return one checkpoint folder per SAE.

    `store`: an ActivationStore / any iterator of [B, d_in] batches (a transcoder's: of (input,
    target) pairs), or {stream key: store} (`sae_slot.stream_key`: the hook, "in->out" for a
    transcoder). When None, one `ActivationStore` per distinct stream is built from `cfg.cache_dir`
    (after `resolve_train_config`), or on the fly from `model` (loaded from cfg.model when None)
    when there is no cache.
    """
    if store is None:
        cfg, store = _build_stores(cfg, model)
    streams = store if isinstance(store, Mapping) else {"": store}
    for scfg in cfg.saes:
        _check_widths(scfg, streams.get(stream_key(scfg), streams.get("")))
    trainer = Trainer(cfg, normalization_scale=None)  # each store's own scales are folded on export
    return trainer.fit(store)


def _check_widths(scfg: Any, s: Any) -> None:
    """ConfigError when a store's widths are not the SAE's (d_in, and a transcoder's d_out)."""
    d_in = getattr(s, "d_in", None)
    if d_in is not None and d_in != scfg.d_in:
        raise ConfigError(
            f"SAE d_in={scfg.d_in} but the activations ({getattr(s, 'hook', scfg.hook_name)}) have d_in={d_in}; "
            f"set saes.N.d_in={d_in} (`saekit train`: --d-in {d_in}, or leave --d-in out to take the cache's)"
        )
    d_out = getattr(s, "d_out", None)
    want = scfg.d_out if scfg.d_out is not None else scfg.d_in
    if scfg.hook_name_out is not None and d_out is not None and d_out != want:
        raise ConfigError(
            f"transcoder d_out={want} but the target activations ({scfg.hook_name_out}) have width {d_out}; "
            f"set saes.N.d_out={d_out}"
        )


def _build_stores(cfg: TrainConfig, model: Any) -> tuple[TrainConfig, Any]:
    """(the config resolved against its cache, one store per distinct stream, or the only one)."""
    from sae.store import ActivationStore

    manifest = CacheManifest.read(cfg.cache_dir) if cfg.cache_dir else None
    if manifest is not None:
        cfg = resolve_train_config(cfg, manifest)
    wanted = {stream_key(s): (s.hook_name, s.hook_name_out) for s in cfg.saes}
    stores = {}
    for key, (hook, target) in wanted.items():
        if manifest is not None:
            stores[key] = ActivationStore.from_cache(manifest.path, hook=hook, cfg=cfg.store, manifest=manifest,
                                                     target_hook=target)
        else:
            if model is None:
                from sae.model import load_model

                model = load_model(cfg.model.name, device=cfg.model.device, dtype=cfg.model.dtype)
            stores[key] = ActivationStore.from_model(model, cfg.data, hook, cfg.store, n_tokens=None, target_hook=target)
    return cfg, stores if len(stores) > 1 else next(iter(stores.values()))
