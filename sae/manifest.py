"""`CacheManifest`: an activation cache's `manifest.json`, parsed once into a typed object.

The file format (every field, and how `sae.activation_cache` writes it) is described in `sae.shards`;
`sae.shards.read_manifest` returns the raw dict for code that rewrites it. Everything that only
reads a cache's facts (the store, `saekit train --cache`, `sae.train`, evaluation) goes through
`CacheManifest.read`, so one parser decides what each field means.

    m = CacheManifest.read("runs/demo/acts")
    m.hooks, m.d_in_of(hook), m.model, m.context_size, m.n_rows, m.n_kept(hook)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae.shards import MANIFEST, CacheError, read_manifest

__all__ = ["CacheManifest"]

_FIX = "delete the folder and re-run `saekit cache` to rebuild it"


@dataclass(frozen=True)
class CacheManifest:
    """What a cache holds. Fields older or hand-written manifests may lack are None (or 0/{})."""

    path: Path  # the cache folder
    hooks: tuple[str, ...]
    d_in: Mapping[str, int]  # width of each hook's activations
    fingerprint: str  # hash of every setting that determines the shards' contents
    shards: tuple[dict[str, Any], ...]  # raw shard entries (`sae.shards.check_shard` reads them)
    complete: bool  # every shard of the run is written
    exhausted: bool = False  # the text ran out before the n_tokens asked for
    model: str | None = None  # name of the model the activations come from
    d_model: int | None = None
    dtype: str | None = None  # storage dtype of the activations
    context_size: int | None = None  # tokens per row
    n_rows: int = 0  # rows of the text stream the cache consumed (its first n_rows rows)
    n_tokens: int = 0  # token positions consumed: n_rows x context_size, kept or not
    rows_per_shard: int | None = None
    hook_stats: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    world_size: int = 1
    config: Mapping[str, Any] = field(default_factory=dict)  # the full CacheConfig that wrote it
    hf_modules: Mapping[str, str | None] = field(default_factory=dict)  # hook -> transformers module it reads

    @classmethod
    def read(cls, cache_dir: str | Path) -> CacheManifest:
        """Parse `<cache_dir>/manifest.json`; `CacheError` naming the path and the fix if it cannot."""
        d = Path(cache_dir)
        return cls.parse(read_manifest(d), d)

    @classmethod
    def parse(cls, doc: Mapping[str, Any], cache_dir: str | Path) -> CacheManifest:
        """The typed view of a manifest dict already read from `cache_dir`."""
        d = Path(cache_dir)
        where = d / MANIFEST
        hooks = _field(doc, "hooks", list, where)
        shards = _field(doc, "shards", list, where)
        d_in = _field(doc, "d_in", dict, where)
        if not all(isinstance(h, str) for h in hooks) or not all(isinstance(e, dict) for e in shards):
            raise CacheError(f"{where} has malformed 'hooks' or 'shards' entries; {_FIX}")
        n_rows = _optional(doc, "n_rows", int, where)
        if n_rows is None:  # hand-written manifests: count the shards' rows
            n_rows = sum(int(e.get("rows", 0)) for e in shards)
        context_size = _optional(doc, "context_size", int, where)
        n_tokens = _optional(doc, "n_tokens", int, where)
        return cls(
            path=d,
            hooks=tuple(hooks),
            d_in={str(h): int(v) for h, v in d_in.items()},
            fingerprint=str(_field(doc, "fingerprint", str, where)),
            shards=tuple(shards),
            complete=bool(doc.get("complete", False)),
            exhausted=bool(doc.get("exhausted", False)),
            model=_optional(doc, "model", str, where),
            d_model=_optional(doc, "d_model", int, where),
            dtype=_optional(doc, "dtype", str, where),
            context_size=context_size,
            n_rows=n_rows,
            n_tokens=n_tokens if n_tokens is not None else n_rows * (context_size or 0),
            rows_per_shard=_optional(doc, "rows_per_shard", int, where),
            hook_stats=_optional(doc, "hook_stats", dict, where) or {},
            world_size=_optional(doc, "world_size", int, where) or 1,
            config=_optional(doc, "config", dict, where) or {},
            hf_modules=_optional(doc, "hf_modules", dict, where) or {},
        )

    # ------------------------------------------------------------------ questions

    def hook_or_only(self, hook: str | None) -> str | None:
        """`hook`, or the cache's only hook when `hook` is None (None when it holds several)."""
        if hook is not None:
            return hook
        return self.hooks[0] if len(self.hooks) == 1 else None

    def d_in_of(self, hook: str) -> int:
        """Width of `hook`'s activations."""
        self.require_hook(hook)
        width = self.d_in.get(hook, self.d_model)
        if width is None:
            raise CacheError(
                f"{self.path / MANIFEST} records no d_in for {hook!r} (no shard written yet?); "
                "re-run `saekit cache` with the same arguments to finish it"
            )
        return int(width)

    def n_kept(self, hook: str) -> int:
        """Activations stored for `hook`: every token of the cache that passed the filter."""
        self.require_hook(hook)
        return sum(int(e["n_kept"][hook]) for e in self.shards)

    def require_hook(self, hook: str) -> None:
        if hook not in self.hooks:
            raise CacheError(
                f"the cache at {self.path} has no hook {hook!r}; it holds {list(self.hooks)} "
                "(cache that hook with `saekit cache --hook ...`, or choose one of those)"
            )

    def require_complete(self) -> None:
        """`CacheError` unless every shard of the run that wrote the cache is on disk."""
        if not self.complete:
            raise CacheError(
                f"the cache at {self.path} is incomplete ({len(self.shards)} shards so far); "
                "re-run `saekit cache` with the same arguments to finish it"
            )


def _field(doc: Mapping[str, Any], key: str, tp: type, where: Path) -> Any:
    if key not in doc:
        raise CacheError(f"{where} has no {key!r} field, so it was not written by `saekit cache`; {_FIX}")
    return _typed(doc, key, tp, where)


def _optional(doc: Mapping[str, Any], key: str, tp: type, where: Path) -> Any:
    return None if doc.get(key) is None else _typed(doc, key, tp, where)


def _typed(doc: Mapping[str, Any], key: str, tp: type, where: Path) -> Any:
    value = doc[key]
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise CacheError(
            f"{where}: field {key!r} should be of type {tp.__name__}, not {value!r}; the file is damaged or "
            f"was edited by hand: {_FIX}"
        )
    return value
