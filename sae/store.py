"""`ActivationStore`: shuffled batches of activations, from a cache or straight from the model.

The stream is an endless sequence of epochs; each epoch is a permutation of the training tokens,
so every token is yielded exactly once per epoch. Batches are consecutive `batch_size` slices of
that stream and may straddle two epochs (`epoch` is the epoch of the next token to come).

From a cache, an epoch is built from *chunks* (runs of ~buffer_tokens/16 consecutive kept tokens
of one shard): the epoch's chunk order is a seeded permutation over all shards, consecutive chunks
fill a mixing buffer of ~`buffer_tokens`, and the buffer is shuffled before it is served. A batch
therefore mixes ~16 places of the corpus (different shards, documents and positions) while memory
stays at two buffers (the one served and the one prefetched), whatever the cache size. Shards are
memory-mapped and sha256-checked the first time they are read (`StoreConfig.verify`).

From the model (`from_model`), a buffer is `buffer_tokens // T` consecutive rows run through the
model and shuffled; mixing spans one buffer (a cache mixes better; use one for long runs).

`state_dict()` records the stream position (epoch, buffer, offset) and everything the order
depends on; `load_state_dict()` resumes at exactly the next token. Held-out tokens
(`StoreConfig.held_out_tokens`) are the cache's last tokens / the text stream's first rows, and
never appear in training batches.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from sae.config import DataConfig, StoreConfig
from sae.devices import parse_dtype, pick_device
from sae.shards import CacheError, StoreError, acts_key, check_shard, read_manifest

_CHUNKS_PER_BUFFER = 16
_NORM_SAMPLE = 65_536  # tokens used to estimate the normalisation scale
_MAX_OPEN = 64  # memory-mapped shard handles kept open


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


def _perm(n: int, *seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(_seed(*seed)))


# --------------------------------------------------------------------------- sources


class _CacheSource:
    """Chunks of a cache's shards, for one hook."""

    kind = "cache"

    def __init__(self, cache_dir: Path, hook: str, cfg: StoreConfig) -> None:
        self.dir = cache_dir
        self.hook = hook
        self.key = acts_key(hook)
        self.verify = cfg.verify
        manifest = read_manifest(cache_dir)
        if not manifest.get("complete"):
            raise CacheError(
                f"the cache at {cache_dir} is incomplete ({len(manifest['shards'])} shards so far); "
                "re-run `saekit cache` with the same arguments to finish it"
            )
        self.manifest = manifest
        self.fingerprint = manifest["fingerprint"]
        self.d_in = int(manifest["d_in"][hook])
        self.shards = manifest["shards"]
        for entry in self.shards:  # cheap size check now; sha256 when first read
            check_shard(cache_dir, entry, full=False)
        self.total = sum(e["n_kept"][hook] for e in self.shards)
        self._handles: OrderedDict[int, Any] = OrderedDict()
        self._verified: set[int] = set()
        self._lock = threading.Lock()  # the prefetch thread reads too

    def _slice(self, shard: int, start: int, stop: int) -> torch.Tensor:
        from safetensors import safe_open

        entry = self.shards[shard]
        with self._lock:
            if self.verify and shard not in self._verified:
                check_shard(self.dir, entry, full=True)
                self._verified.add(shard)
            handle = self._handles.pop(shard, None)
            if handle is None:
                try:
                    handle = safe_open(str(self.dir / entry["file"]), framework="pt")
                except Exception as e:
                    raise CacheError(f"cannot read shard {self.dir / entry['file']}: {e}") from e
                if len(self._handles) >= _MAX_OPEN:
                    self._handles.popitem(last=False)
            self._handles[shard] = handle
        acts = handle.get_slice(self.key)[start:stop]
        _check_finite(acts, self.dir / entry["file"], self.hook)
        return acts

    def read(self, spans: list[tuple[int, int, int]]) -> torch.Tensor:
        """Concatenated activations of (shard, start, stop) spans, in the stored dtype."""
        return torch.cat([self._slice(s, a, b) for s, a, b in spans])

    def spans(self, lo: int, hi: int, chunk: int) -> list[tuple[int, int, int]]:
        """Chunks covering global kept-token positions [lo, hi) (shard order), none across shards."""
        out = []
        base = 0
        for i, e in enumerate(self.shards):
            n = e["n_kept"][self.hook]
            a, b = max(lo, base), min(hi, base + n)
            for start in range(a, b, chunk):
                out.append((i, start - base, min(b, start + chunk) - base))
            base += n
        return out


def _check_finite(acts: torch.Tensor, shard: Path, hook: str) -> None:
    """NaN/inf survive the sha256 check when the model produced them, and an SAE cannot learn
    from them; name the shard rather than let the loss turn NaN steps later."""
    if not bool(torch.isfinite(acts).all()):
        raise CacheError(
            f"shard {shard} holds NaN or inf activations for {hook}: the model overflowed while "
            "caching (e.g. in float16), or the file was written that way. Rebuild the cache into a "
            "new --out in float32 (`saekit cache --dtype float32 --set model.dtype=float32 ...`)"
        )


# --------------------------------------------------------------------------- the store


class ActivationStore:
    """Iterable of activation batches `[batch_size, d_in]` (see the module docstring)."""

    def __init__(self, source: Any, hook: str, cfg: StoreConfig) -> None:
        if cfg.batch_size <= 0 or cfg.buffer_tokens <= 0:
            raise StoreError("store.batch_size and store.buffer_tokens must be positive")
        self.cfg = cfg
        self.hook = hook
        self._src = source
        self.d_in: int = source.d_in
        self.device = pick_device(cfg.device)
        self.dtype = parse_dtype(cfg.dtype)
        self.seed = cfg.seed
        self.buffer_tokens = cfg.buffer_tokens
        self.shuffle = cfg.shuffle
        self._pos = (0, 0, 0)  # (epoch, buffer, offset) of the next token
        self.epoch = 0
        self.n_tokens: int | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="saekit-store")
        self._prefetch: dict[tuple[int, int], Future] = {}
        self._cur: tuple[tuple[int, int], torch.Tensor | None] | None = None
        self.normalization_scale = 1.0

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_cache(
        cls, cache_dir: str | Path, hook: str | None = None, cfg: StoreConfig | None = None
    ) -> ActivationStore:
        cfg = cfg or StoreConfig()
        d = Path(cache_dir)
        manifest = read_manifest(d)
        hooks = manifest["hooks"]
        if hook is None:
            if len(hooks) != 1:
                raise StoreError(f"the cache at {d} holds several hooks {hooks}; pass hook=<one of them>")
            hook = hooks[0]
        if hook not in hooks:
            raise StoreError(f"the cache at {d} has no hook {hook!r}; it holds {hooks}")
        store = cls(_CacheSource(d, hook, cfg), hook, cfg)
        store._init_cache()
        return store

    @classmethod
    def from_model(
        cls,
        model: Any,
        data: DataConfig,
        hook: str,
        cfg: StoreConfig | None = None,
        n_tokens: int | None = None,
    ) -> ActivationStore:
        """Activations computed on the fly; an epoch is the first `n_tokens` of text (or all)."""
        from sae.live import ModelSource

        cfg = cfg or StoreConfig()
        source = ModelSource(model, data, hook, cfg, n_tokens)
        store = cls(source, source.hook, cfg)
        store._init_model()
        return store

    def _init_cache(self) -> None:
        src: _CacheSource = self._src
        held = self.cfg.held_out_tokens
        if held >= src.total:
            raise StoreError(
                f"held_out_tokens={held} leaves nothing to train on: the cache holds "
                f"{src.total} tokens for {self.hook}"
            )
        self.n_tokens = src.total - held
        self._chunk = max(1, self.buffer_tokens // _CHUNKS_PER_BUFFER)
        self._train_spans = src.spans(0, self.n_tokens, self._chunk)
        self._held_spans = src.spans(self.n_tokens, src.total, self._chunk)
        self._layouts: dict[int, list[list[tuple[int, int, int]]]] = {}
        # evenly spaced training chunks, start of each: a deterministic sample for the scale
        step = max(1, len(self._train_spans) // 32)
        sample = [
            (s, a, min(b, a + _NORM_SAMPLE // 32)) for s, a, b in self._train_spans[::step][:32]
        ]
        self.normalization_scale = self._scale_of(src.read(sample))

    def _init_model(self) -> None:
        src = self._src
        self.normalization_scale = self._scale_of(src.buffer(0, 0)[:_NORM_SAMPLE])

    def _scale_of(self, acts: torch.Tensor) -> float:
        mean_norm = torch.linalg.vector_norm(acts.float(), dim=-1).mean().item()
        if not math.isfinite(mean_norm):
            raise StoreError(
                f"activations of {self.hook} hold NaN or inf values (mean norm {mean_norm}), so they cannot be "
                "normalised or learned from: load the model in float32 (model.dtype=float32)"
            )
        if mean_norm <= 0:
            raise StoreError(f"activations of {self.hook} are all zero; cannot normalise them: choose another hook")
        return math.sqrt(self.d_in) / mean_norm

    # ------------------------------------------------------------------ buffers

    def _layout(self, epoch: int) -> list[list[tuple[int, int, int]]]:
        """The buffers of a cache epoch: groups of chunks in the epoch's chunk order."""
        if epoch not in self._layouts:
            spans = self._train_spans
            order = _perm(len(spans), self.seed, epoch) if self.shuffle else range(len(spans))
            buffers: list[list[tuple[int, int, int]]] = [[]]
            filled = 0
            for i in order:
                s, a, b = spans[int(i)]
                if filled >= self.buffer_tokens:
                    buffers.append([])
                    filled = 0
                buffers[-1].append((s, a, b))
                filled += b - a
            self._layouts = {epoch: buffers}  # only the current epoch's layout is kept
            return buffers
        return self._layouts[epoch]

    def _raw_buffer(self, epoch: int, b: int) -> torch.Tensor | None:
        """Unshuffled buffer `b` of `epoch` (None past the epoch's end)."""
        if self._src.kind == "cache":
            layout = self._layout(epoch)
            return self._src.read(layout[b]) if b < len(layout) else None
        return self._src.buffer(epoch, b)

    def _load(self, epoch: int, b: int) -> torch.Tensor | None:
        raw = self._raw_buffer(epoch, b)
        if raw is None:
            return None
        buf = raw.to(self.device, non_blocking=True).to(self.dtype)
        if self.shuffle:
            buf = buf[_perm(buf.shape[0], self.seed, epoch, b, 1).to(self.device)]
        else:
            buf = buf.clone()  # an ordinary tensor (raw ones may be inference tensors)
        if self.cfg.normalize:
            buf.mul_(self.normalization_scale)
        return buf

    def _get(self, epoch: int, b: int) -> torch.Tensor | None:
        if self._cur is not None and self._cur[0] == (epoch, b):
            return self._cur[1]
        fut = self._prefetch.pop((epoch, b), None)
        for stale in self._prefetch.values():
            stale.cancel()
        self._prefetch.clear()
        buf = fut.result() if fut is not None else self._load(epoch, b)
        self._cur = ((epoch, b), buf)
        if buf is not None and self._src.kind == "cache":
            # read and shuffle the next buffer while this one is consumed
            self._prefetch[(epoch, b + 1)] = self._pool.submit(self._load, epoch, b + 1)
        return buf

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Batches forever, from the current position (a new iterator continues where it is)."""
        bs = self.cfg.batch_size
        epoch, b, off = self._pos
        parts: list[torch.Tensor] = []
        need = bs
        first_b, seen = b, 0  # to detect an epoch without a single token
        while True:
            buf = self._get(epoch, b)
            if buf is None:  # the epoch is over
                if self.n_tokens is None and self._src.kind == "model":
                    self.n_tokens = self._src.epoch_tokens
                if seen == 0 and first_b == 0:
                    raise StoreError(f"no activations for {self.hook}: the source is empty")
                epoch, b, off, first_b, seen = epoch + 1, 0, 0, 0, 0
                continue
            seen += buf.shape[0]
            while off < buf.shape[0]:
                take = min(need, buf.shape[0] - off)
                parts.append(buf[off : off + take])
                off += take
                need -= take
                if need == 0:
                    batch = parts[0] if len(parts) == 1 else torch.cat(parts)
                    self._pos = (epoch, b, off)
                    self.epoch = epoch
                    parts, need = [], bs
                    yield batch
            b, off = b + 1, 0

    def batches(self, n_tokens: int) -> Iterator[torch.Tensor]:
        """Exactly ceil(n_tokens / batch_size) batches."""
        n = math.ceil(n_tokens / self.cfg.batch_size)
        it = iter(self)
        for _ in range(n):
            yield next(it)

    def next_batch(self) -> torch.Tensor:
        return next(iter(self))

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "source": self._src.kind,
            "hook": self.hook,
            "fingerprint": getattr(self._src, "fingerprint", None),
            "position": list(self._pos),
            "seed": self.seed,
            "buffer_tokens": self.buffer_tokens,
            "shuffle": self.shuffle,
            "normalization_scale": self.normalization_scale,
            "n_tokens": self.n_tokens,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("source") != self._src.kind or state.get("hook") != self.hook:
            raise StoreError(
                f"store state is for a {state.get('source')} store of {state.get('hook')!r}; this is "
                f"a {self._src.kind} store of {self.hook!r}"
            )
        if state.get("fingerprint") != getattr(self._src, "fingerprint", None):
            raise StoreError("store state was saved for a different activation cache")
        self.seed = int(state["seed"])
        self.shuffle = bool(state["shuffle"])
        if int(state["buffer_tokens"]) != self.buffer_tokens and self._src.kind == "cache":
            self.buffer_tokens = int(state["buffer_tokens"])
            self._init_cache()
        self.buffer_tokens = int(state["buffer_tokens"])
        if self._src.kind == "model":
            self._src.set_buffer_rows(self.buffer_tokens)
        self._layouts = {}
        self.normalization_scale = float(state["normalization_scale"])
        self.n_tokens = state.get("n_tokens")
        epoch, b, off = (int(x) for x in state["position"])
        self._pos = (epoch, b, off)
        self.epoch = epoch
        self._prefetch.clear()
        self._cur = None

    # ------------------------------------------------------------------ evaluation

    def held_out(self, n_tokens: int | None = None, raw: bool = False) -> torch.Tensor:
        """The first `n_tokens` of the reserved held-out tokens (normalised like batches unless `raw`)."""
        reserved = self.cfg.held_out_tokens
        n = reserved if n_tokens is None else n_tokens
        if reserved <= 0:
            raise StoreError(
                "no held-out tokens are reserved; set store.held_out_tokens=N (those N tokens are "
                "then never used for training)"
            )
        if n > reserved:
            raise StoreError(f"asked for {n} held-out tokens but only {reserved} are reserved")
        if self._src.kind == "cache":
            acts = self._src.read(self._held_spans)[:n]
        else:
            acts = self._src.held_out(n)
        acts = acts.to(self.device).to(self.dtype).clone()
        if self.cfg.normalize and not raw:
            acts.mul_(self.normalization_scale)
        return acts

    def __repr__(self) -> str:
        return (
            f"ActivationStore({self._src.kind}, hook={self.hook!r}, d_in={self.d_in}, "
            f"n_tokens={self.n_tokens}, batch_size={self.cfg.batch_size}, epoch={self.epoch})"
        )
