"""The on-disk activation cache: shard files, their checksums, and the manifest.

Layout of a cache directory::

    manifest.json               the index (rewritten atomically after every shard; "complete"
                                becomes true when the run has written every shard)
    shard-00000.safetensors     one shard: a run of consecutive context rows
    shard-00000.json            its sidecar: sha256, size and counts, written right after the shard
    ...

A shard (safetensors; the header's ``__metadata__`` has one key, ``saekit``: the JSON, keys sorted,
of ``format``, ``version`` and ``info``, which repeats the sidecar) holds:

==================  ======================  ===============================================
key                 dtype, shape            meaning
==================  ======================  ===============================================
``tokens``          int32 [rows, T]         token ids of every row (BOS first), whole rows
``rows``            int64 [rows]            global row index in the packed text stream
``keep.<hook>``     bool  [rows, T]         which positions have an activation for <hook>
``acts.<hook>``     float [n_kept, d_in]    activations of the kept positions, row-major
                                            order: ``acts[i]`` is the i-th True of ``keep``
==================  ======================  ===============================================

Positions are dropped per hook for two reasons, both counted in the manifest: special tokens
(BOS, separators, chat markers) for residual-stream hooks, and tokens whose norm exceeds
``max_norm_ratio`` x the median norm of their row (attention sinks and other massive activations
that would otherwise dominate an SAE's loss). The row-median (not the batch-median) keeps the
result independent of batch size and of how rows are split across ranks. To rebuild a context:
``tokens[r]`` is the row; ``keep[r].nonzero()`` the positions of its activations.

``manifest.json`` fields: ``format``, ``version``, ``complete``, ``model``, ``hooks``,
``d_model``, ``d_in`` (per hook), ``dtype``, ``context_size``, ``n_rows``, ``n_tokens`` (token
positions = rows x T), ``rows_per_shard``, ``hook_stats`` (per hook: ``n_kept``,
``n_dropped_special``, ``n_dropped_norm``), ``bos_token_id``, ``separator_token_id``,
``special_token_ids``, ``fingerprint`` (hash of everything that determines the contents),
``world_size``, ``config`` (the full `CacheConfig`), and ``shards``: per shard ``file``, ``index``,
``rows``, ``row_start``, ``n_kept`` / ``n_dropped_special`` / ``n_dropped_norm`` (per hook),
``bytes``, ``sha256``, ``rank``.

Writes go through `sae.atomic_io` (temp file, fsync, rename, fsync the folder): a crash, a kill or
a full disk leaves either the complete file or none, never a partial one, and the manifest always
describes shards that are complete.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from sae.atomic_io import atomic_write_bytes, atomic_write_json, read_json

FORMAT = "saekit-activations"
VERSION = 1
MANIFEST = "manifest.json"
_CHUNK = 16 << 20  # bytes per read call when hashing


class CacheError(RuntimeError):
    """An activation cache that is missing, incomplete, corrupt, or made with another config."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def sidecar_path(shard: Path) -> Path:
    return shard.with_suffix(".json")


def acts_key(hook: str) -> str:
    return f"acts.{hook}"


def keep_key(hook: str) -> str:
    return f"keep.{hook}"


def write_shard(
    out_dir: Path, index: int, tensors: dict[str, torch.Tensor], info: dict[str, Any]
) -> dict[str, Any]:
    """Write shard `index` and its sidecar atomically; return its manifest entry."""
    from safetensors.torch import save

    path = out_dir / shard_name(index)
    # One metadata key: safetensors keeps metadata in a Rust HashMap whose order changes from
    # process to process, and a shard's sha256 must not depend on which process wrote it.
    meta = {"saekit": json.dumps({"format": FORMAT, "version": VERSION, "info": info}, sort_keys=True)}
    payload = save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta)
    entry = {
        "file": path.name,
        "index": index,
        **info,
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    atomic_write_bytes(path, payload)
    atomic_write_json(sidecar_path(path), entry)  # after the shard: a sidecar implies a complete shard
    return entry


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- reading


def completed_shards(out_dir: Path) -> dict[int, dict[str, Any]]:
    """Sidecar entries of the shards on disk whose file exists with the recorded size."""
    done: dict[int, dict[str, Any]] = {}
    for side in sorted(out_dir.glob("shard-*.json")):
        try:
            entry = json.loads(side.read_text())
        except (json.JSONDecodeError, OSError):
            continue  # a torn sidecar cannot exist (atomic), but never trust one that fails to parse
        shard = out_dir / entry.get("file", "")
        if shard.is_file() and shard.stat().st_size == entry.get("bytes"):
            done[int(entry["index"])] = entry
    return done


def read_manifest(cache_dir: str | Path) -> dict[str, Any]:
    """The manifest of a cache (complete or still being written)."""
    d = Path(cache_dir)
    path = d / MANIFEST
    if not path.exists():
        if not d.exists():
            raise CacheError(f"no activation cache at {d}; create one with `saekit cache --out {d}`")
        n = len(list(d.glob("shard-*.safetensors")))
        hint = f" ({n} shard files present: an interrupted run?)" if n else ""
        raise CacheError(
            f"{d} has no {MANIFEST}{hint}; re-run `saekit cache` with the same arguments to finish"
        )
    manifest = read_json(path, fix="delete it and re-run `saekit cache`", error=CacheError, what="manifest")
    if manifest.get("format") != FORMAT:
        raise CacheError(f"{path} is not a saekit activation manifest")
    return manifest


def tail_token_rows(cache_dir: str | Path, n_rows: int) -> torch.Tensor:
    """The token ids [<= n_rows, T] of the cache's last rows, in order: the text of the held-out
    tail a trainer with `store.held_out_tokens` never trained on (each shard is verified)."""
    from safetensors import safe_open

    d = Path(cache_dir)
    parts: list[torch.Tensor] = []
    have = 0
    for entry in reversed(read_manifest(d)["shards"]):
        if have >= n_rows:
            break
        with safe_open(str(check_shard(d, entry)), framework="pt") as f:
            rows = f.get_tensor("tokens")[-(n_rows - have) :]
        parts.insert(0, rows)
        have += rows.shape[0]
    if not parts:
        raise CacheError(f"the cache at {d} has no shards yet; run `saekit cache` first")
    return torch.cat(parts).long()


def check_shard(cache_dir: Path, entry: dict[str, Any], full: bool = True) -> Path:
    """Raise `CacheError` naming the file unless it has the recorded size (and sha256 if `full`)."""
    path = cache_dir / entry["file"]
    fix = "delete it and re-run `saekit cache` with the same arguments to rewrite it"
    if not path.is_file():
        raise CacheError(f"shard {path} is missing; re-run `saekit cache` with the same arguments")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise CacheError(
            f"shard {path} is truncated or altered: {size} bytes, the manifest says "
            f"{entry['bytes']}; {fix}"
        )
    if full:
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise CacheError(
                f"shard {path} is corrupt: sha256 {digest[:16]}... does not match the manifest's "
                f"{entry['sha256'][:16]}...; {fix}"
            )
    return path


def verify_cache(cache_dir: str | Path) -> dict[str, Any]:
    """Check every shard's size and sha256 against the manifest; return the manifest."""
    d = Path(cache_dir)
    manifest = read_manifest(d)
    for entry in manifest["shards"]:
        check_shard(d, entry, full=True)
    return manifest
