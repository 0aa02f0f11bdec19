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
from sae.training.trainer import Trainer

__all__ = ["train", "resolve_train_config", "SAE_CACHE_KEYS"]

# SAEConfig fields a cache can supply when the user did not set them
SAE_CACHE_KEYS = frozenset({"hook_name", "d_in"})


def resolve_train_config(
    cfg: TrainConfig,
    manifest: CacheManifest,
    user_set: Sequence[set[str]] | None = None,
) -> TrainConfig:
    """`cfg` with each SAE's hook, d_in, model name and context size taken from the cache.

    `user_set[i]`: the SAEConfig fields of SAE `i` the user chose (None: all of them, as for a
    config built in code). A hook or d_in the user did not choose comes from the cache (the hook
    only when the cache holds one); a chosen one must agree with it. The model name and context
    size are facts about the cached data and always come from the cache. Returns a new config.
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
        if manifest.model is not None:
            facts["model_name"] = manifest.model
        if manifest.context_size is not None:
            facts["context_size"] = manifest.context_size
        saes.append(dataclasses.replace(s, **facts))
    return dataclasses.replace(cfg, saes=saes)


def train(cfg: TrainConfig, store: Any = None, model: Any = None) -> list[Path]:
    """Train every SAE in `cfg` and return one checkpoint folder per SAE.

    `store`: an ActivationStore / any iterator of [B, d_in] batches, or {hook: store}. When None,
    one `ActivationStore` per distinct hook is built from `cfg.cache_dir` (after
    `resolve_train_config`), or on the fly from `model` (loaded from cfg.model when None) when
    there is no cache.
    """
    if store is None:
        cfg, store = _build_stores(cfg, model)
    streams = store if isinstance(store, Mapping) else {"": store}
    for scfg in cfg.saes:
        s = streams.get(scfg.hook_name, streams.get(""))
        d_in = getattr(s, "d_in", None)
        if d_in is not None and d_in != scfg.d_in:
            raise ConfigError(
                f"SAE d_in={scfg.d_in} but the activations ({getattr(s, 'hook', scfg.hook_name)}) have d_in={d_in}; "
                f"set saes.N.d_in={d_in} (`saekit train`: --d-in {d_in}, or leave --d-in out to take the cache's)"
            )
    trainer = Trainer(cfg, normalization_scale=None)
    if isinstance(store, Mapping):
        trainer.scales = {k: getattr(v, "normalization_scale", None) for k, v in store.items()}
    return trainer.fit(store)


def _build_stores(cfg: TrainConfig, model: Any) -> tuple[TrainConfig, Any]:
    """(the config resolved against its cache, one store per distinct hook, or the only one)."""
    from sae.store import ActivationStore

    manifest = CacheManifest.read(cfg.cache_dir) if cfg.cache_dir else None
    if manifest is not None:
        cfg = resolve_train_config(cfg, manifest)
    hooks = list(dict.fromkeys(s.hook_name for s in cfg.saes))
    stores = {}
    for hook in hooks:
        if manifest is not None:
            stores[hook] = ActivationStore.from_cache(manifest.path, hook=hook, cfg=cfg.store, manifest=manifest)
        else:
            if model is None:
                from sae.model import load_model

                model = load_model(cfg.model.name, device=cfg.model.device, dtype=cfg.model.dtype)
            stores[hook] = ActivationStore.from_model(model, cfg.data, hook, cfg.store, n_tokens=None)
    return cfg, stores if len(stores) > 1 else stores[hooks[0]]
