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
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from sae.atomic_io import atomic_write_json, remove_stale_temps
from sae.config import CacheConfig, to_dict
from sae.devices import parse_dtype
from sae.extract import ActivationExtractor
from sae.model import load_model
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


def _dist() -> tuple[int, int, bool]:
    """(rank, world_size, created): joins the torchrun process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        created = True
    return dist.get_rank(), dist.get_world_size(), created


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


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


def _model_device(cfg: CacheConfig, world: int) -> str | None:
    if world > 1 and torch.cuda.is_available() and cfg.model.device in (None, "cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
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


def _manifest(
    cfg: CacheConfig,
    extractor: ActivationExtractor,
    entries: dict[int, dict[str, Any]],
    *,
    fingerprint: str,
    rows_per_shard: int,
    bos_sep: tuple[int, int],
    d_in: dict[str, int],
    complete: bool,
    world: int,
    exhausted: bool = False,
) -> dict[str, Any]:
    shards = [entries[i] for i in sorted(entries)]
    hooks = extractor.hooks
    n_rows = sum(e["rows"] for e in shards)
    stats = {
        h: {
            "n_kept": sum(e["n_kept"][h] for e in shards),
            "n_dropped_special": sum(e["n_dropped_special"][h] for e in shards),
            "n_dropped_norm": sum(e["n_dropped_norm"][h] for e in shards),
        }
        for h in hooks
    }
    return {
        "format": FORMAT,
        "version": VERSION,
        "complete": complete,
        "exhausted": exhausted,  # the text ran out before n_tokens
        "model": cfg.model.name,
        "hooks": hooks,
        "d_model": int(extractor.model.cfg.d_model),
        "d_in": d_in,
        "dtype": _DTYPE_NAMES[_storage_dtype(cfg.dtype)],
        "context_size": cfg.data.context_size,
        "n_rows": n_rows,
        "n_tokens": n_rows * cfg.data.context_size,
        "rows_per_shard": rows_per_shard,
        "hook_stats": stats,
        "bos_token_id": bos_sep[0],
        "separator_token_id": bos_sep[1],
        "special_token_ids": extractor.special_ids.tolist(),
        "fingerprint": fingerprint,
        "world_size": world,
        "config": to_dict(cfg),
        "shards": shards,
    }


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
    from sae.data import special_ids

    _validate(cfg)
    name = getattr(model, "saekit_name", None)
    if name is not None and name != cfg.model.name:  # record the model actually passed in
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=name))
    rank, world, created_group = _dist()
    try:
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)  # half-written shards of a killed run; a re-run rewrites them
        if _already_complete(cfg, out):
            log.info("%s already holds this cache; nothing to do", out)
            return out
        if model is None:
            model = load_model(cfg.model.name, _model_device(cfg, world), cfg.model.dtype)
        bos, sep = special_ids(model.tokenizer, cfg.data)
        extractor = ActivationExtractor(
            model,
            cfg.hooks,
            **to_dict(cfg.token_filter),
            engine=cfg.engine,
            extra_special_ids=[bos, sep],
        )
        T = cfg.data.context_size
        rows_per_shard = max(1, cfg.shard_tokens // T)
        n_rows = math.ceil(cfg.n_tokens / T)
        n_shards = math.ceil(n_rows / rows_per_shard)
        fingerprint = cache_fingerprint(cfg, rows_per_shard)
        store_dtype = _storage_dtype(cfg.dtype)

        done = completed_shards(out)
        foreign = sorted(i for i, e in done.items() if e.get("fingerprint") != fingerprint)
        if foreign:
            raise CacheError(
                f"{out} already holds a cache made with different settings (model, hooks, data, "
                f"dtype, shard size or filters; e.g. {out / done[foreign[0]]['file']}). Use another "
                "--out folder, or delete that one to start over"
            )

        def expected_rows(i: int) -> int:
            return min(rows_per_shard, n_rows - i * rows_per_shard)

        # a shard with more rows than needed comes from a larger earlier run: keep it as it is
        complete_ok = {i for i, e in done.items() if i < n_shards and e["rows"] >= expected_rows(i)}
        todo = [i for i in range(n_shards) if i % world == rank and i not in complete_ok]
        d_in: dict[str, int] = {}
        for e in done.values():
            d_in.update(e.get("d_in", {}))

        def manifest(
            entries: dict[int, dict[str, Any]], complete: bool, exhausted: bool = False
        ) -> dict[str, Any]:
            return _manifest(
                cfg, extractor, entries, fingerprint=fingerprint, rows_per_shard=rows_per_shard,
                bos_sep=(bos, sep), d_in=d_in, complete=complete, world=world, exhausted=exhausted,
            )

        exhausted_at: int | None = None
        if todo:
            exhausted_at = _compute_shards(
                cfg, model, extractor, out, todo, rows_per_shard, n_rows, store_dtype, fingerprint,
                rank, world, d_in, progress,
                on_shard=(lambda: atomic_write_json(out / MANIFEST, manifest(_entries(out, n_shards), False)))
                if world == 1 else None,
            )
        _barrier(world)
        if rank == 0:
            entries = _entries(out, n_shards)
            for e in entries.values():
                d_in.update(e.get("d_in", {}))
            missing = [i for i in range(n_shards) if i not in entries]
            if exhausted_at is None and missing and world > 1:
                # another rank saw the corpus end: its shards beyond that point do not exist
                exhausted_at = missing[0] * rows_per_shard
            if missing and exhausted_at is None:
                raise CacheError(f"shards {missing[:5]} of {out} were not written; re-run to finish")
            if exhausted_at is not None:
                log.warning(
                    "the corpus ran out after %d tokens (asked for %d); the cache holds what exists",
                    sum(e["rows"] for e in entries.values()) * T, cfg.n_tokens,
                )
            atomic_write_json(out / MANIFEST, manifest(entries, True, exhausted_at is not None))
        _barrier(world)
        return out
    finally:
        if created_group:
            import torch.distributed as dist

            dist.destroy_process_group()


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


def _entries(out: Path, n_shards: int) -> dict[int, dict[str, Any]]:
    return {i: e for i, e in completed_shards(out).items() if i < n_shards}


def _compute_shards(
    cfg: CacheConfig,
    model: Any,
    extractor: ActivationExtractor,
    out: Path,
    todo: list[int],
    rows_per_shard: int,
    n_rows: int,
    store_dtype: torch.dtype,
    fingerprint: str,
    rank: int,
    world: int,
    d_in: dict[str, int],
    progress: bool,
    on_shard: Any,
) -> int | None:
    """Compute and write the shards in `todo`; return the row count where the corpus ran out."""
    from tqdm.auto import tqdm

    from sae.data import token_rows

    T = cfg.data.context_size
    wanted = set(todo)
    last_row = min(n_rows, (max(todo) + 1) * rows_per_shard)
    total_rows = sum(min(rows_per_shard, n_rows - i * rows_per_shard) for i in todo)
    bar = tqdm(
        total=total_rows * T, unit="tok", unit_scale=True, dynamic_ncols=True,
        desc=f"caching {', '.join(extractor.hooks)}"[:60], disable=not progress or rank != 0,
    )
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="saekit-shard-writer")
    pending: Future | None = None
    builder: _ShardBuilder | None = None
    batch: list[torch.Tensor] = []
    batch_rows: list[int] = []

    def flush_batch() -> None:
        nonlocal batch, batch_rows
        assert builder is not None
        tokens = torch.stack(batch)
        res = extractor(tokens, out_dtype=store_dtype)
        builder.tokens.append(tokens)
        builder.rows.extend(batch_rows)
        for h in extractor.hooks:
            builder.keep[h].append(res.keep[h])
            builder.acts[h].append(res.acts[h])
            builder.special[h] += res.n_dropped_special[h]
            builder.norm[h] += res.n_dropped_norm[h]
            d_in[h] = int(res.acts[h].shape[-1])
        bar.update(len(batch) * T)
        batch, batch_rows = [], []

    def finish_shard() -> None:
        nonlocal pending, builder
        assert builder is not None
        if batch:
            flush_batch()
        tensors, info = builder.tensors_and_info(rank)
        info["fingerprint"] = fingerprint
        info["d_in"] = dict(d_in)
        if pending is not None:
            pending.result()  # at most one shard in flight: memory stays at two shards
        pending = writer.submit(_write_and_report, out, builder.index, tensors, info, on_shard)
        builder = None

    n_seen = 0
    try:
        for row_idx, row in enumerate(token_rows(cfg.data, model.tokenizer)):
            n_seen = row_idx + 1
            if row_idx >= last_row:
                break
            shard = row_idx // rows_per_shard
            if shard not in wanted:
                continue
            if builder is not None and builder.index != shard:
                finish_shard()
            if builder is None:
                builder = _ShardBuilder(shard, extractor.hooks)
            batch.append(row)
            batch_rows.append(row_idx)
            if len(batch) == cfg.batch_size:
                flush_batch()
        if builder is not None:
            finish_shard()
        if pending is not None:
            pending.result()
    except BaseException:
        if pending is not None and not pending.done():
            # let the write in flight finish (or clean up after itself) before unwinding
            try:
                pending.result()
            except BaseException:
                pass
        raise
    finally:
        writer.shutdown(wait=True)
        bar.close()
    return n_seen if n_seen < last_row else None


def _write_and_report(
    out: Path, index: int, tensors: dict[str, torch.Tensor], info: dict[str, Any], on_shard: Any
) -> None:
    t0 = time.perf_counter()
    entry = write_shard(out, index, tensors, info)
    log.debug("wrote %s (%d bytes) in %.2fs", entry["file"], entry["bytes"], time.perf_counter() - t0)
    if on_shard is not None:
        on_shard()
