"""Where the feature pass gets token rows and their activations: the model on the fly, or a cache.

Both yield `RowBatch`es of whole rows (examples need each token's neighbours): token ids
[B, T], which positions have an activation [B, T], and those activations [n_kept, d_in].
On the fly this is `sae.extract.ActivationExtractor`, the same extractor (and the same
outlier filter: special tokens, tokens above `max_norm_ratio` x their row's median norm) that
caching and training use; a cache already stores exactly that per shard (`sae.shards`).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)


@dataclass
class RowBatch:
    tokens: Tensor  # [B, T] token ids
    keep: Tensor  # [B, T] bool: positions with an activation
    acts: Tensor  # [n_kept, d_in], row-major over `keep`


class ForwardTimer:
    """Seconds spent producing activations (the model's forward, or reading the cache)."""

    def __init__(self) -> None:
        self.seconds = 0.0


_EXTRACTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def extractor_for(model, hook: str, exclude_special_tokens: bool = True, max_norm_ratio: float | None = 10.0):
    """An ActivationExtractor for (model, hook, filter), built once per model (it mirrors the model)."""
    from sae.extract import ActivationExtractor

    per_model = _EXTRACTORS.setdefault(model, {})
    key = (hook, exclude_special_tokens, max_norm_ratio)
    if key not in per_model:
        per_model[key] = ActivationExtractor(
            model, [hook], exclude_special_tokens=exclude_special_tokens, max_norm_ratio=max_norm_ratio
        )
    return per_model[key]


def batch_rows(rows: Iterable[Tensor], batch_size: int, n_rows: int) -> Iterator[Tensor]:
    """Group 1-D token rows (or re-chunk 2-D batches) into [B, T] batches, n_rows in all."""
    pending: list[Tensor] = []
    taken = 0
    for r in rows:
        r = torch.as_tensor(r)
        for row in [r] if r.dim() == 1 else list(r):
            if taken >= n_rows:
                break
            if pending and row.shape[0] != pending[0].shape[0]:
                raise ValueError(
                    f"token rows must all have the same length (got {pending[0].shape[0]} and {row.shape[0]}); "
                    "pack text into fixed-length rows (sae.token_rows) first"
                )
            pending.append(row)
            taken += 1
            if len(pending) == batch_size:
                yield torch.stack(pending)
                pending = []
        if taken >= n_rows:
            break
    if pending:
        yield torch.stack(pending)


def model_batches(
    model, hook: str, rows: Iterable[Tensor], batch_size: int, n_rows: int, timer: ForwardTimer,
    exclude_special_tokens: bool = True, max_norm_ratio: float | None = 10.0,
) -> Iterator[RowBatch]:
    ex = extractor_for(model, hook, exclude_special_tokens, max_norm_ratio)
    for tokens in batch_rows(rows, batch_size, n_rows):
        t0 = time.perf_counter()
        res = ex(tokens)
        timer.seconds += time.perf_counter() - t0
        yield RowBatch(tokens, res.keep[hook], res.acts[hook])


def cache_batches(
    cache_dir: str | Path, hook: str, batch_size: int, n_rows: int, timer: ForwardTimer
) -> Iterator[RowBatch]:
    """Replay an activation cache's shards in row order (their sizes are checked, not their sha256)."""
    from safetensors.torch import load_file

    from sae.manifest import CacheManifest
    from sae.shards import acts_key, check_shard, keep_key

    d = Path(cache_dir)
    manifest = CacheManifest.read(d)
    if hook not in manifest.hooks:
        raise ValueError(
            f"the activation cache at {d} has hooks {list(manifest.hooks)} but the SAE reads {hook}; "
            f"cache that hook (`saekit cache --hooks {hook}`) or run without --cache"
        )
    taken = 0
    for entry in sorted(manifest.shards, key=lambda e: e["index"]):
        if taken >= n_rows:
            return
        t0 = time.perf_counter()
        shard = load_file(str(check_shard(d, entry, full=False)))
        tokens, keep, acts = shard["tokens"].long(), shard[keep_key(hook)], shard[acts_key(hook)]
        starts = torch.cumsum(keep.sum(1), 0) - keep.sum(1)  # first activation of each row
        timer.seconds += time.perf_counter() - t0
        for b0 in range(0, tokens.shape[0], batch_size):
            b1 = min(b0 + batch_size, tokens.shape[0], b0 + n_rows - taken)
            if b1 <= b0:
                return
            a0 = int(starts[b0])
            a1 = int(starts[b1 - 1] + keep[b1 - 1].sum())
            taken += b1 - b0
            yield RowBatch(tokens[b0:b1], keep[b0:b1], acts[a0:a1])
    if taken < n_rows:
        log.warning("the cache at %s holds %d rows; analysed all of them (%d were asked for)", d, taken, n_rows)
