"""Where an `ActivationStore`'s activations come from: a cache on disk, or the model on the fly.

Both sources answer the same questions (`ActivationSource`), so the store never asks which one
it has. A source hands out *unshuffled* buffers of kept activations, in pieces
(``buffer_parts(epoch, b)``), until an epoch ends (None); the store shuffles, normalises and cuts
them into batches.

`CacheSource`: an epoch is built from *chunks* (runs of ~buffer_tokens/16 consecutive kept tokens
of one shard). The epoch's chunk order is a seeded permutation over all shards and consecutive
chunks fill a buffer of ~buffer_tokens, so a batch mixes ~16 places of the corpus while memory
stays at two buffers. Held-out tokens are the cache's last ones.

`ModelSource`: buffer ``b`` of every epoch is text rows ``[h + b*R, h + (b+1)*R)`` of the packed
stream, where ``R = buffer_tokens // T`` and the first ``h`` rows are held out. Rows are
deterministic, so any buffer can be recomputed from its index alone: resuming costs re-tokenizing
the rows before it and one buffer's forward passes, not the whole epoch.

Paired sources (a transcoder's, `target_hook=`): each row is a token position's input activation
and its target activation side by side ([n, d_in + d_out]), so the store shuffles, normalises and
cuts both with one permutation. A position is paired where both hooks' token filters kept it (the
cache stores each hook's kept positions only; the live model applies the same rule, so a cache and
the model give the same pairs): `paired_positions` maps it into each hook's kept rows.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch

from sae.config import DataConfig, StoreConfig, to_dict
from sae.manifest import CacheManifest
from sae.model import hf_module_of
from sae.shards import CacheError, acts_key, check_shard, keep_key

__all__ = ["ActivationPair", "ActivationSource", "BufferParts", "CacheSource", "ModelSource", "StoreError", "paired_positions"]

_CHUNKS_PER_BUFFER = 16
_NORM_SAMPLE = 65_536  # tokens used to estimate the normalisation scale
_MAX_OPEN = 64  # memory-mapped shard handles kept open

Span = tuple[int, int, int]  # (shard, start, stop) of kept tokens


class StoreError(ValueError):
    """An activation store (over a cache or a live model) asked for something its source cannot give."""


class BufferParts(NamedTuple):
    """A buffer's unshuffled activations as pieces read one at a time, so a reader can place each
    piece where it belongs without holding the whole unshuffled buffer as well."""

    rows: int  # rows of all pieces together
    width: int  # d_in (+ d_out for a paired source)
    pieces: Iterator[torch.Tensor]  # [n_i, width] each, in buffer order, in the stored dtype


class ActivationPair(NamedTuple):
    """A transcoder's batch: the same token positions at its input hook and at its target hook."""

    input: torch.Tensor  # [B, d_in]
    target: torch.Tensor  # [B, d_out]


def paired_positions(keep_in_BT: torch.Tensor, keep_out_BT: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Indices into each hook's kept activations (row-major) of the positions both hooks kept; None
    when the two keep masks are the same (then kept row i of one is kept row i of the other)."""
    if torch.equal(keep_in_BT, keep_out_BT):
        return None
    both = (keep_in_BT & keep_out_BT).flatten()
    return tuple((k.flatten().long().cumsum(0) - 1)[both] for k in (keep_in_BT, keep_out_BT))  # type: ignore[return-value]


def take_pairs(acts_in: torch.Tensor, acts_out: torch.Tensor,
               maps: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """[n_pairs, d_in + d_out]: each paired position's input and target activations side by side."""
    if maps is not None:
        acts_in, acts_out = acts_in[maps[0]], acts_out[maps[1]]
    return torch.cat([acts_in, acts_out.to(acts_in.dtype)], dim=1)


def stable_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


def seeded_perm(n: int, *seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(stable_seed(*seed)))


class ActivationSource(Protocol):
    """What `ActivationStore` needs from a source of activations of one hook."""

    kind: str  # "cache" | "model": recorded in the store's state, so a resume finds the same kind
    hook: str
    d_in: int
    target_hook: str | None  # a transcoder's target hook: rows are [input | target] (None: input only)
    d_out: int | None  # width of target_hook's activations
    fingerprint: str | None  # identifies a cache's contents (None: computed on the fly)
    prefetch: bool  # cheap to read the next buffer in a background thread while one is consumed
    epoch_tokens: int | None  # training tokens per epoch (None until an epoch has been seen)
    provenance: dict[str, Any]  # how the activations were made, for the checkpoint's metadata

    def arrange(self, buffer_tokens: int, seed: int, shuffle: bool) -> None:
        """Lay epochs out in buffers of ~`buffer_tokens` for this seed (also on resume)."""

    def buffer_parts(self, epoch: int, b: int) -> BufferParts | None:
        """Unshuffled kept activations [n, d_in (+ d_out)] of buffer `b` of `epoch`, in pieces; None
        past its end."""

    def held_out(self, n: int) -> torch.Tensor:
        """The first `n` held-out activations [n, d_in (+ d_out)] (never in a training buffer)."""

    def normalization_sample(self) -> torch.Tensor:
        """A deterministic sample of training activations [m, d_in (+ d_out)] for the normalisation scales."""


# --------------------------------------------------------------------------- from a cache


def inputs_provenance(data: Mapping[str, Any], token_filter: Mapping[str, Any], hf_module: str | None,
                      model_dtype: str | None = None) -> dict[str, Any]:
    """What a consumer of the SAE needs to reproduce its inputs, under SAELens's metadata names
    where SAELens has one (`dataset_path`, `exclude_special_tokens`, `hf_hook_name`, ...)."""
    return {
        "dataset_path": data.get("source"),
        "dataset": dict(data),
        "context_size": data.get("context_size"),
        "prepend_bos": True,
        "exclude_special_tokens": bool(token_filter.get("exclude_special_tokens", True)),
        # positions whose norm exceeds this x their row's median were dropped (massive activations)
        "max_norm_ratio": token_filter.get("max_norm_ratio"),
        "hf_hook_name": hf_module,
        "model_from_pretrained_kwargs": {"dtype": model_dtype} if model_dtype else {},
    }


def cache_provenance(manifest: CacheManifest, hook: str, target_hook: str | None = None) -> dict[str, Any]:
    cfg = manifest.config
    out = inputs_provenance(cfg.get("data") or {}, cfg.get("token_filter") or {},
                            (manifest.hf_modules or {}).get(hook), (cfg.get("model") or {}).get("dtype"))
    if target_hook is not None:
        out["hf_hook_name_out"] = (manifest.hf_modules or {}).get(target_hook)
    return {**out, "activation_cache_fingerprint": manifest.fingerprint}


class CacheSource:
    """Chunks of a cache's shards, for one hook (or an input hook and a target hook, paired)."""

    kind = "cache"
    prefetch = True

    def __init__(self, manifest: CacheManifest, hook: str, cfg: StoreConfig, target_hook: str | None = None) -> None:
        manifest.require_complete()
        self.dir = manifest.path
        self.hook = hook
        self.target_hook = target_hook
        self.hooks = [hook] if target_hook is None else [hook, target_hook]
        self.verify = cfg.verify
        self.fingerprint: str | None = manifest.fingerprint
        self.d_in = manifest.d_in_of(hook)
        self.d_out = manifest.d_in_of(target_hook) if target_hook is not None else None
        self.shards = manifest.shards
        for entry in self.shards:  # cheap size check now; sha256 when first read
            check_shard(self.dir, entry, full=False)
        self._maps: OrderedDict[int, tuple[torch.Tensor, torch.Tensor] | None] = OrderedDict()
        self._lock = threading.Lock()  # the prefetch thread reads too
        self._handles: OrderedDict[int, Any] = OrderedDict()
        # kept tokens (pairs) per shard: a pair exists where both hooks kept the position
        self._n = [int(e["n_kept"][hook]) for e in self.shards] if target_hook is None else self._count_pairs()
        self.total = sum(self._n)
        held = cfg.held_out_tokens
        if held >= self.total:
            raise StoreError(
                f"held_out_tokens={held} leaves nothing to train on: the cache holds "
                f"{self.total} tokens for {hook}"
            )
        self.epoch_tokens: int | None = self.total - held
        self.provenance = cache_provenance(manifest, hook, target_hook)
        self._verified: set[int] = set()
        self.arrange(cfg.buffer_tokens, cfg.seed, cfg.shuffle)

    def arrange(self, buffer_tokens: int, seed: int, shuffle: bool) -> None:
        self.buffer_tokens, self.seed, self.shuffle = buffer_tokens, seed, shuffle
        self._chunk = max(1, buffer_tokens // _CHUNKS_PER_BUFFER)
        assert self.epoch_tokens is not None
        self._train_spans = self._spans(0, self.epoch_tokens)
        self._held_spans = self._spans(self.epoch_tokens, self.total)
        self._layouts: dict[int, list[list[Span]]] = {}

    def buffer_parts(self, epoch: int, b: int) -> BufferParts | None:
        layout = self._layout(epoch)
        if b >= len(layout):
            return None
        spans = layout[b]
        width = self.d_in + (self.d_out or 0)
        return BufferParts(sum(stop - start for _, start, stop in spans), width,
                           (self._slice(s, start, stop) for s, start, stop in spans))

    def held_out(self, n: int) -> torch.Tensor:
        return self._read(self._held_spans)[:n]

    def normalization_sample(self) -> torch.Tensor:
        # the start of evenly spaced training chunks
        step = max(1, len(self._train_spans) // 32)
        starts = self._train_spans[::step][:32]
        return self._read([(s, a, min(b, a + _NORM_SAMPLE // 32)) for s, a, b in starts])

    def _layout(self, epoch: int) -> list[list[Span]]:
        """The buffers of an epoch: groups of chunks in the epoch's chunk order."""
        if epoch not in self._layouts:
            spans = self._train_spans
            order = seeded_perm(len(spans), self.seed, epoch) if self.shuffle else range(len(spans))
            buffers: list[list[Span]] = [[]]
            filled = 0
            for i in order:
                s, a, b = spans[int(i)]
                if filled >= self.buffer_tokens:
                    buffers.append([])
                    filled = 0
                buffers[-1].append((s, a, b))
                filled += b - a
            self._layouts = {epoch: buffers}  # only the current epoch's layout is kept
        return self._layouts[epoch]

    def _spans(self, lo: int, hi: int) -> list[Span]:
        """Chunks covering global kept-token positions [lo, hi) (shard order), none across shards."""
        out = []
        base = 0
        for i, n in enumerate(self._n):
            a, b = max(lo, base), min(hi, base + n)
            for start in range(a, b, self._chunk):
                out.append((i, start - base, min(b, start + self._chunk) - base))
            base += n
        return out

    def _read(self, spans: list[Span]) -> torch.Tensor:
        """Concatenated activations of the spans, in the stored dtype."""
        return torch.cat([self._slice(s, a, b) for s, a, b in spans])

    def _slice(self, shard: int, start: int, stop: int) -> torch.Tensor:
        """Kept activations [start, stop) of a shard ([input | target] of its pairs when paired)."""
        path = self.dir / self.shards[shard]["file"]
        handle = self._handle(shard, verify=True)
        if self.target_hook is None:
            acts = handle.get_slice(acts_key(self.hook))[start:stop]
            _check_finite(acts, path, self.hook)
            return acts
        maps = self._pair_map(shard, handle)
        parts = []
        for j, hook in enumerate(self.hooks):
            if maps is None:
                part = handle.get_slice(acts_key(hook))[start:stop]
            else:  # one contiguous read covering the rows wanted, then the rows themselves
                idx = maps[j][start:stop]
                lo = int(idx[0]) if idx.numel() else 0
                hi = int(idx[-1]) + 1 if idx.numel() else 0
                part = handle.get_slice(acts_key(hook))[lo:hi][idx - lo]
            _check_finite(part, path, hook)
            parts.append(part)
        return take_pairs(parts[0], parts[1], None)

    def _handle(self, shard: int, verify: bool) -> Any:
        """The shard's open safetensors handle (sha256-checked on first read when `verify`)."""
        from safetensors import safe_open

        entry = self.shards[shard]
        path = self.dir / entry["file"]
        with self._lock:
            if verify and self.verify and shard not in self._verified:
                check_shard(self.dir, entry, full=True)
                self._verified.add(shard)
            handle = self._handles.pop(shard, None)
            if handle is None:
                try:
                    handle = safe_open(str(path), framework="pt")
                except Exception as e:
                    raise CacheError(f"cannot read shard {path}: {e}") from e
                if len(self._handles) >= _MAX_OPEN:
                    self._handles.popitem(last=False)
            self._handles[shard] = handle
        return handle

    def _keeps(self, handle: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return handle.get_tensor(keep_key(self.hooks[0])), handle.get_tensor(keep_key(self.hooks[1]))

    def _count_pairs(self) -> list[int]:
        """Positions both hooks kept, per shard (reads the small keep masks; sha256 waits for the acts)."""
        counts = []
        for i in range(len(self.shards)):
            keep_in, keep_out = self._keeps(self._handle(i, verify=False))
            counts.append(int((keep_in & keep_out).sum()))
        return counts

    def _pair_map(self, shard: int, handle: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
        with self._lock:
            if shard in self._maps:
                return self._maps[shard]
        maps = paired_positions(*self._keeps(handle))
        with self._lock:
            self._maps[shard] = maps
            if len(self._maps) > _MAX_OPEN:
                self._maps.popitem(last=False)
        return maps


def _check_finite(acts: torch.Tensor, shard: Path, hook: str) -> None:
    """NaN/inf survive the sha256 check when the model produced them, and an SAE cannot learn
    from them; name the shard rather than let the loss turn NaN steps later."""
    if not bool(torch.isfinite(acts).all()):
        raise CacheError(
            f"shard {shard} holds NaN or inf activations for {hook}: the model overflowed while "
            "caching (e.g. in float16), or the file was written that way. Rebuild the cache into a "
            "new --out in float32 (`saekit cache --dtype float32 --set model.dtype=float32 ...`)"
        )


# --------------------------------------------------------------------------- from the model


class ModelSource:
    """Buffers of text rows run through the model (the same rows every epoch)."""

    kind = "model"
    prefetch = False  # the forward passes would compete with training for the device
    fingerprint: str | None = None

    def __init__(
        self, model: Any, data: DataConfig, hook: str, cfg: StoreConfig, n_tokens: int | None,
        target_hook: str | None = None,
    ) -> None:
        from sae.data import special_ids
        from sae.extract import ActivationExtractor
        from sae.model import validate_hook

        bos, sep = special_ids(model.tokenizer, data)
        self.extractor = ActivationExtractor(
            model, [hook] + ([target_hook] if target_hook else []), **to_dict(cfg.token_filter), extra_special_ids=[bos, sep]
        )
        self.hook = self.extractor.hooks[0]
        self.target_hook = validate_hook(model, target_hook) if target_hook is not None else None
        self.d_out: int | None = None
        self._widths: tuple[int, int] | None = None
        self.model = model
        self.data = data
        self.batch_rows = cfg.model_batch_size
        T = data.context_size
        self.held_rows = math.ceil(cfg.held_out_tokens / T) if cfg.held_out_tokens else 0
        self.epoch_rows = math.ceil(n_tokens / T) if n_tokens else None
        self.arrange(cfg.buffer_tokens, cfg.seed, cfg.shuffle)
        self.epoch_tokens: int | None = None  # kept activations per epoch, known after one epoch
        self._rows: Iterator[torch.Tensor] | None = None
        self._next_row = 0
        self._cache: dict[tuple[int, int], torch.Tensor | None] = {}
        self._epoch_count: dict[int, int] = {}
        self.normalization_sample()  # the first buffer: its activations' widths
        assert self._widths is not None
        self.d_in = self._widths[0]
        if self.target_hook is not None:
            self.d_out = self._widths[1]
        self.provenance = inputs_provenance(to_dict(data), to_dict(cfg.token_filter), hf_module_of(model, self.hook))
        if self.target_hook is not None:
            self.provenance["hf_hook_name_out"] = hf_module_of(model, self.target_hook)

    def arrange(self, buffer_tokens: int, seed: int, shuffle: bool) -> None:
        # the store shuffles within a buffer; the rows of a buffer do not depend on the seed
        self.buffer_rows = max(1, buffer_tokens // self.data.context_size)
        self._cache = {}

    def buffer(self, epoch: int, b: int) -> torch.Tensor | None:
        key = (0, b)  # the text is the same every epoch
        if key in self._cache:
            return self._cache[key]
        start = b * self.buffer_rows
        n = self.buffer_rows
        if self.epoch_rows is not None:
            n = min(n, self.epoch_rows - start)
        rows = self._take_rows(self.held_rows + start, n) if n > 0 else []
        acts = self._acts(rows) if rows else None
        if acts is None and b == 0 and self.epoch_tokens is None:
            self.epoch_tokens = 0
        self._cache = {key: acts}  # one buffer of memory
        self._count(b, acts)
        return acts

    def buffer_parts(self, epoch: int, b: int) -> BufferParts | None:
        acts = self.buffer(epoch, b)  # a forward pass makes the whole buffer at once anyway
        return None if acts is None else BufferParts(int(acts.shape[0]), int(acts.shape[1]), iter([acts]))

    def held_out(self, n: int) -> torch.Tensor:
        acts = self._acts(self._take_rows(0, self.held_rows))
        if acts.shape[0] < n:
            raise StoreError(
                f"the {self.held_rows} held-out rows give {acts.shape[0]} activations after "
                f"filtering, fewer than the {n} asked for; raise store.held_out_tokens"
            )
        return acts[:n]

    def normalization_sample(self) -> torch.Tensor:
        first = self.buffer(0, 0)
        if first is None:
            raise StoreError(f"no activations for {self.hook}: the text stream is empty")
        return first[:_NORM_SAMPLE]

    def _take_rows(self, start: int, n: int) -> list[torch.Tensor]:
        """Rows [start, start+n) of the stream (fewer at its end), re-reading it only if needed."""
        from sae.data import token_rows

        if self._rows is None or start < self._next_row:
            self._rows = token_rows(self.data, self.model.tokenizer)
            self._next_row = 0
        out = []
        for row in self._rows:
            self._next_row += 1
            if self._next_row - 1 < start:
                continue
            out.append(row)
            if len(out) == n:
                break
        return out

    def _acts(self, rows: list[torch.Tensor]) -> torch.Tensor:
        parts = []
        t = self.target_hook
        for i in range(0, len(rows), self.batch_rows):
            res = self.extractor(torch.stack(rows[i : i + self.batch_rows]))
            x = res.acts[self.hook]
            self._widths = (int(x.shape[-1]), int(res.acts[t].shape[-1]) if t is not None else 0)
            if t is None:
                parts.append(x)
            elif t == self.hook:
                parts.append(take_pairs(x, x, None))
            else:
                parts.append(take_pairs(x, res.acts[t], paired_positions(res.keep[self.hook], res.keep[t])))
        return torch.cat(parts) if parts else torch.empty(0, 0)

    def _count(self, b: int, acts: torch.Tensor | None) -> None:
        if acts is None:
            if self.epoch_tokens is None and all(i in self._epoch_count for i in range(b)):
                self.epoch_tokens = sum(self._epoch_count[i] for i in range(b))
        else:
            self._epoch_count[b] = int(acts.shape[0])
