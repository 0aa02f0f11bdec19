"""Cache activations to disk: `build_cache(cfg)` / `saekit cache`.

The text stream (`sae.data.token_rows`) is cut into shards of ``shard_tokens // context_size``
consecutive rows; shard ``k`` always holds the same rows, so a re-run skips the shards already
on disk (an interrupted run loses at most the shard in progress) and a larger ``n_tokens``
extends an existing cache. Under ``torchrun`` rank ``r`` computes shards ``r, r + world, ...``;
every rank writes its own shard files and rank 0 writes the manifest covering all of them, so the
result is the same as one process would write. The file format is described in `sae.shards`.

Memory is bounded by two shards (the one being filled and the one being written by the
background thread that overlaps disk IO with the next forward passes), whatever ``n_tokens`` is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sae.atomic_io import atomic_write_json, remove_stale_temps
from sae.config import CacheConfig, to_dict
from sae.devices import parse_dtype
from sae.distributed import DistInfo, barrier, init_distributed, release
from sae.extract import ActivationExtractor
from sae.model import hf_module_of, load_model
from sae.shards import (
    FORMAT,
    MANIFEST,
    VERSION,
    CacheError,
    acts_key,
    completed_shards,
    keep_key,
    read_manifest,
    verify_cache,
    write_shard,
)

__all__ = ["build_cache", "read_manifest", "verify_cache", "CacheError", "cache_fingerprint"]

log = logging.getLogger(__name__)

_STORAGE_DTYPES = ("float32", "bfloat16", "float16")
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _storage_dtype(name: str) -> torch.dtype:
    dtype = parse_dtype(name)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"cache dtype {name!r} must be one of {_STORAGE_DTYPES}")
    return dtype


def cache_fingerprint(cfg: CacheConfig, rows_per_shard: int) -> str:
    """Hash of every setting that changes what a shard holds (not n_tokens, batch size, device)."""
    data = to_dict(cfg.data)
    keyed = {
        "model": cfg.model.name,
        "model_dtype": cfg.model.dtype,
        "hooks": list(dict.fromkeys(cfg.hooks)),
        "data": data,
        "dtype": str(_storage_dtype(cfg.dtype)),
        "rows_per_shard": rows_per_shard,
        "exclude_special_tokens": cfg.token_filter.exclude_special_tokens,
        "max_norm_ratio": cfg.token_filter.max_norm_ratio,
    }
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]


def _model_device(cfg: CacheConfig, dist: DistInfo) -> str | None:
    if dist.enabled and torch.cuda.is_available() and cfg.model.device in (None, "cuda"):
        return f"cuda:{dist.local_rank}"
    return cfg.model.device


class _ShardBuilder:
    """Accumulates the extracted batches of one shard."""

    def __init__(self, index: int, hooks: list[str]) -> None:
        self.index = index
        self.hooks = hooks
        self.tokens: list[torch.Tensor] = []
        self.rows: list[int] = []
        self.keep: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
        self.acts: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
        self.special = dict.fromkeys(hooks, 0)
        self.norm = dict.fromkeys(hooks, 0)

    def tensors_and_info(self, rank: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {
            "tokens": torch.cat(self.tokens).to(torch.int32),
            "rows": torch.tensor(self.rows, dtype=torch.int64),
        }
        for h in self.hooks:
            tensors[keep_key(h)] = torch.cat(self.keep[h])
            tensors[acts_key(h)] = torch.cat(self.acts[h])
        info = {
            "rows": len(self.rows),
            "row_start": self.rows[0],
            "n_kept": {h: int(tensors[acts_key(h)].shape[0]) for h in self.hooks},
            "n_dropped_special": self.special,
            "n_dropped_norm": self.norm,
            "rank": rank,
        }
        return tensors, info


def _validate(cfg: CacheConfig) -> None:
    if cfg.n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {cfg.n_tokens}")
    if cfg.batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {cfg.batch_size}")
    if cfg.shard_tokens < cfg.data.context_size:
        raise ValueError(
            f"shard_tokens ({cfg.shard_tokens}) must hold at least one row of "
            f"context_size={cfg.data.context_size} tokens"
        )
    _storage_dtype(cfg.dtype)


def build_cache(cfg: CacheConfig, model: Any = None, progress: bool = True) -> Path:
    """Write (or resume, or extend) the activation cache described by `cfg`; return its folder."""
    _validate(cfg)
    name = getattr(model, "saekit_name", None)
    if name is not None and name != cfg.model.name:  # record the model actually passed in
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=name))
    dist = init_distributed("cuda" if torch.cuda.is_available() else "cpu")
    try:
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)  # half-written shards of a killed run; a re-run rewrites them
        if _already_complete(cfg, out):
            log.info("%s already holds this cache; nothing to do", out)
            return out
        if model is None:
            model = load_model(cfg.model.name, _model_device(cfg, dist), cfg.model.dtype)
        run = _CacheRun.start(cfg, model, out, dist)
        exhausted_at = _compute_shards(run, model, progress) if run.todo else None
        barrier(dist)
        if dist.is_main:
            run.finish(exhausted_at)
        barrier(dist)
        return out
    finally:
        release(dist)


def _already_complete(cfg: CacheConfig, out: Path) -> bool:
    """True when `out` holds a finished cache of exactly this config (no model needed to tell)."""
    if not (out / MANIFEST).exists():
        return False
    try:
        manifest = read_manifest(out)
    except CacheError:
        return False
    T = cfg.data.context_size
    rows_per_shard = max(1, cfg.shard_tokens // T)
    return bool(
        manifest.get("complete")
        and manifest.get("fingerprint") == cache_fingerprint(cfg, rows_per_shard)
        and (manifest.get("n_rows", 0) >= math.ceil(cfg.n_tokens / T) or manifest.get("exhausted"))
        and all((out / e["file"]).is_file() for e in manifest["shards"])
    )


@dataclass
class _CacheRun:
    """One `build_cache` call on one rank: the shard geometry, what this rank computes, and the
    facts the manifest records."""

    cfg: CacheConfig
    extractor: ActivationExtractor
    out: Path
    dist: DistInfo
    rows_per_shard: int
    n_rows: int  # rows the config asks for
    fingerprint: str
    store_dtype: torch.dtype
    todo: list[int]  # shards this rank computes
    bos_sep: tuple[int, int]
    d_in: dict[str, int]  # per hook, filled in as activations are seen

    @classmethod
    def start(cls, cfg: CacheConfig, model: Any, out: Path, dist: DistInfo) -> _CacheRun:
        """Plan the run: refuse a folder of other settings; skip shards already complete."""
        from sae.data import special_ids

        bos, sep = special_ids(model.tokenizer, cfg.data)
        extractor = ActivationExtractor(
            model, cfg.hooks, **to_dict(cfg.token_filter), engine=cfg.engine, extra_special_ids=[bos, sep]
        )
        rows_per_shard = max(1, cfg.shard_tokens // cfg.data.context_size)
        n_rows = math.ceil(cfg.n_tokens / cfg.data.context_size)
        n_shards = math.ceil(n_rows / rows_per_shard)
        fingerprint = cache_fingerprint(cfg, rows_per_shard)
        done = completed_shards(out)
        foreign = sorted(i for i, e in done.items() if e.get("fingerprint") != fingerprint)
        if foreign:
            raise CacheError(
                f"{out} already holds a cache made with different settings (model, hooks, data, "
                f"dtype, shard size or filters; e.g. {out / done[foreign[0]]['file']}). Use another "
                "--out folder, or delete that one to start over"
            )
        # a shard with more rows than needed comes from a larger earlier run: keep it as it is
        ok = {i for i, e in done.items() if i < n_shards and e["rows"] >= min(rows_per_shard, n_rows - i * rows_per_shard)}
        todo = [i for i in range(n_shards) if i % dist.world_size == dist.rank and i not in ok]
        d_in: dict[str, int] = {}
        for e in done.values():
            d_in.update(e.get("d_in", {}))
        return cls(cfg, extractor, out, dist, rows_per_shard, n_rows, fingerprint,
                   _storage_dtype(cfg.dtype), todo, (bos, sep), d_in)

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n_rows / self.rows_per_shard)

    def entries(self) -> dict[int, dict[str, Any]]:
        """Sidecar entries of this run's shards on disk."""
        return {i: e for i, e in completed_shards(self.out).items() if i < self.n_shards}

    def shard_written(self) -> None:
        """After each shard of a single-process run: the manifest always lists the complete ones."""
        if not self.dist.enabled:
            atomic_write_json(self.out / MANIFEST, self.manifest(self.entries(), complete=False))

    def finish(self, exhausted_at: int | None) -> None:
        """Rank 0, after every rank wrote its shards: the final manifest."""
        entries = self.entries()
        for e in entries.values():
            self.d_in.update(e.get("d_in", {}))
        missing = [i for i in range(self.n_shards) if i not in entries]
        if exhausted_at is None and missing and self.dist.enabled:
            # another rank saw the corpus end: its shards beyond that point do not exist
            exhausted_at = missing[0] * self.rows_per_shard
        if missing and exhausted_at is None:
            raise CacheError(f"shards {missing[:5]} of {self.out} were not written; re-run to finish")
        if exhausted_at is not None:
            log.warning(
                "the corpus ran out after %d tokens (asked for %d); the cache holds what exists",
                sum(e["rows"] for e in entries.values()) * self.cfg.data.context_size, self.cfg.n_tokens,
            )
        atomic_write_json(self.out / MANIFEST, self.manifest(entries, True, exhausted_at is not None))

    def manifest(self, entries: dict[int, dict[str, Any]], complete: bool, exhausted: bool = False) -> dict[str, Any]:
        """The manifest document (fields: `sae.shards`) over the shard `entries`."""
        shards = [entries[i] for i in sorted(entries)]
        hooks = self.extractor.hooks
        n_rows = sum(e["rows"] for e in shards)
        stats = {
            h: {key: sum(e[key][h] for e in shards) for key in ("n_kept", "n_dropped_special", "n_dropped_norm")}
            for h in hooks
        }
        cfg = self.cfg
        return {
            "format": FORMAT,
            "version": VERSION,
            "complete": complete,
            "exhausted": exhausted,  # the text ran out before n_tokens
            "model": cfg.model.name,
            "hooks": hooks,
            "d_model": int(self.extractor.model.cfg.d_model),
            "d_in": self.d_in,
            "dtype": _DTYPE_NAMES[self.store_dtype],
            "context_size": cfg.data.context_size,
            "n_rows": n_rows,
            "n_tokens": n_rows * cfg.data.context_size,
            "rows_per_shard": self.rows_per_shard,
            "hook_stats": stats,
            "bos_token_id": self.bos_sep[0],
            "separator_token_id": self.bos_sep[1],
            "special_token_ids": self.extractor.special_ids.tolist(),
            "hf_modules": {h: hf_module_of(self.extractor.model, h) for h in hooks},  # SAELens's hf_hook_name
            "fingerprint": self.fingerprint,
            "world_size": self.dist.world_size,
            "config": to_dict(cfg),
            "shards": shards,
        }


class _ShardWriter:
    """Runs rows through the extractor in batches into the shard being filled, and writes each
    finished shard in a background thread (one in flight: memory stays at two shards)."""

    def __init__(self, run: _CacheRun, progress: bool) -> None:
        from tqdm.auto import tqdm

        self.run = run
        rps, n_rows = run.rows_per_shard, run.n_rows
        total_rows = sum(min(rps, n_rows - i * rps) for i in run.todo)
        self.bar = tqdm(
            total=total_rows * run.cfg.data.context_size, unit="tok", unit_scale=True, dynamic_ncols=True,
            desc=f"caching {', '.join(run.extractor.hooks)}"[:60], disable=not progress or not run.dist.is_main,
        )
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="saekit-shard-writer")
        self.pending: Future | None = None
        self.builder: _ShardBuilder | None = None
        self.batch_TN: list[torch.Tensor] = []  # rows of the next forward pass
        self.batch_rows: list[int] = []

    def add(self, row_idx: int, row: torch.Tensor) -> None:
        shard = row_idx // self.run.rows_per_shard
        if self.builder is not None and self.builder.index != shard:
            self.finish_shard()
        if self.builder is None:
            self.builder = _ShardBuilder(shard, self.run.extractor.hooks)
        self.batch_TN.append(row)
        self.batch_rows.append(row_idx)
        if len(self.batch_TN) == self.run.cfg.batch_size:
            self.flush_batch()

    def flush_batch(self) -> None:
        builder, extractor = self.builder, self.run.extractor
        assert builder is not None
        tokens_BT = torch.stack(self.batch_TN)
        res = extractor(tokens_BT, out_dtype=self.run.store_dtype)
        builder.tokens.append(tokens_BT)
        builder.rows.extend(self.batch_rows)
        for h in extractor.hooks:
            builder.keep[h].append(res.keep[h])
            builder.acts[h].append(res.acts[h])
            builder.special[h] += res.n_dropped_special[h]
            builder.norm[h] += res.n_dropped_norm[h]
            self.run.d_in[h] = int(res.acts[h].shape[-1])
        self.bar.update(len(self.batch_TN) * self.run.cfg.data.context_size)
        self.batch_TN, self.batch_rows = [], []

    def finish_shard(self) -> None:
        assert self.builder is not None
        if self.batch_TN:
            self.flush_batch()
        tensors, info = self.builder.tensors_and_info(self.run.dist.rank)
        info["fingerprint"] = self.run.fingerprint
        info["d_in"] = dict(self.run.d_in)
        if self.pending is not None:
            self.pending.result()  # at most one shard in flight
        self.pending = self.pool.submit(_write_and_report, self.run, self.builder.index, tensors, info)
        self.builder = None

    def finish(self) -> None:
        """Write the last shard and wait for every write."""
        if self.builder is not None:
            self.finish_shard()
        if self.pending is not None:
            self.pending.result()

    def drain(self) -> None:
        """On an error: let the write in flight finish (or clean up after itself) before unwinding."""
        if self.pending is not None and not self.pending.done():
            try:
                self.pending.result()
            except BaseException:
                pass

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.bar.close()


def _compute_shards(run: _CacheRun, model: Any, progress: bool) -> int | None:
    """Compute and write the shards in `run.todo`; return the row count where the corpus ran out."""
    from sae.data import token_rows

    wanted = set(run.todo)
    last_row = min(run.n_rows, (max(run.todo) + 1) * run.rows_per_shard)
    writer = _ShardWriter(run, progress)
    n_seen = 0
    try:
        for row_idx, row in enumerate(token_rows(run.cfg.data, model.tokenizer)):
            n_seen = row_idx + 1
            if row_idx >= last_row:
                break
            if row_idx // run.rows_per_shard in wanted:
                writer.add(row_idx, row)
        writer.finish()
    except BaseException:
        writer.drain()
        raise
    finally:
        writer.close()
    return n_seen if n_seen < last_row else None


def _write_and_report(run: _CacheRun, index: int, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    entry = write_shard(run.out, index, tensors, info)
    log.debug("wrote %s (%d bytes) in %.2fs", entry["file"], entry["bytes"], time.perf_counter() - t0)
    run.shard_written()
