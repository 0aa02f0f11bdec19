"""`ActivationStore`: shuffled batches of activations, from a cache or straight from the model.

The stream is an endless sequence of epochs; each epoch is a permutation of the training tokens,
so every token is yielded exactly once per epoch. Batches are consecutive `batch_size` slices of
that stream and may straddle two epochs (`epoch` is the epoch of the next token to come).

The store reads unshuffled buffers of ~`buffer_tokens` from its source
(`sae.activation_sources`: a cache, `from_cache`, or the model, `from_model`), shuffles each one
and serves it. From a cache, a buffer mixes ~16 places of the corpus (different shards, documents
and positions), and the next buffer is read in a background thread once the consumer has let go
of the previous one, so memory stays at two buffers whatever the cache size; each piece read goes
straight to its shuffled place, so reading adds one piece, not a second copy of the buffer; shards
are memory-mapped and sha256-checked the first time they are read (`StoreConfig.verify`). From the
model, a buffer is `buffer_tokens // T` consecutive rows run through the model; mixing spans one
buffer (a cache mixes better; use one for long runs).

A transcoder's store (`target_hook=`) yields `ActivationPair(input [B, d_in], target [B, d_out])`:
the same token positions at both hooks (paired where both hooks' filters kept the position), one
shuffle for both, each side normalised by its own factor (`normalization_scale`, `target_scale`).

`state_dict()` records the stream position (epoch, buffer, offset) and everything the order
depends on; `load_state_dict()` resumes at exactly the next token. Held-out tokens
(`StoreConfig.held_out_tokens`) are the cache's last tokens / the text stream's first rows, and
never appear in training batches.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from sae.activation_sources import (
    ActivationPair,
    ActivationSource,
    CacheSource,
    ModelSource,
    StoreError,
    seeded_perm,
)
from sae.config import DataConfig, StoreConfig
from sae.devices import parse_dtype, pick_device
from sae.manifest import CacheManifest

__all__ = ["ActivationPair", "ActivationStore", "StoreError"]


# --------------------------------------------------------------------------- the store


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


_MALLOC_TRIM = _load_malloc_trim()


def _return_freed_heap() -> None:
    """Hand memory that glibc keeps after frees back to the system. Reading a buffer frees many
    blocks of 1-40 MB (finite checks, pieces, batches), which glibc keeps in its arenas for reuse:
    out of core, where every buffer is a full one, that held ~500 MB beyond the two buffers
    (measured: peak anonymous memory 2.0 GB -> 1.6 GB over 1.5M tokens with this called once per
    buffer). Once per buffer, so its cost (~ms) is nothing beside the reading."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class ActivationStore:
    """Iterable of activation batches `[batch_size, d_in]`, or of `ActivationPair`s for a transcoder
    (see the module docstring)."""

    def __init__(self, source: ActivationSource, cfg: StoreConfig) -> None:
        if cfg.batch_size <= 0 or cfg.buffer_tokens <= 0:
            raise StoreError("store.batch_size and store.buffer_tokens must be positive")
        self.cfg = cfg
        self.hook = source.hook
        self._src = source
        self.d_in: int = source.d_in
        self.target_hook: str | None = getattr(source, "target_hook", None)
        self.d_out: int | None = getattr(source, "d_out", None)
        self.provenance: dict[str, Any] = dict(getattr(source, "provenance", {}) or {})
        self.device = pick_device(cfg.device)
        self.dtype = parse_dtype(cfg.dtype)
        self.seed = cfg.seed
        self.buffer_tokens = cfg.buffer_tokens
        self.shuffle = cfg.shuffle
        self._pos = (0, 0, 0)  # (epoch, buffer, offset) of the next token
        self.epoch = 0
        self.n_tokens: int | None = source.epoch_tokens
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="saekit-store")
        self._prefetch: dict[tuple[int, int], Future] = {}
        self._cur: tuple[tuple[int, int], torch.Tensor | None] | None = None
        sample = source.normalization_sample()
        self.normalization_scale = self._scale_of(sample[:, : self.d_in], self.hook)
        # a transcoder's target has its own scale (e.g. an MLP's output is ~10x smaller than its input)
        self.target_scale: float | None = (
            self._scale_of(sample[:, self.d_in :], self.target_hook) if self.target_hook is not None else None
        )

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_cache(
        cls,
        cache_dir: str | Path,
        hook: str | None = None,
        cfg: StoreConfig | None = None,
        manifest: CacheManifest | None = None,
        target_hook: str | None = None,
    ) -> ActivationStore:
        """Batches from an activation cache (`manifest`: the cache's, when already read); with
        `target_hook`, (input, target) pairs for a transcoder: the cache must hold both hooks."""
        cfg = cfg or StoreConfig()
        d = Path(cache_dir)
        manifest = manifest or CacheManifest.read(d)
        hooks = list(manifest.hooks)
        if hook is None:
            if len(hooks) != 1:
                raise StoreError(f"the cache at {d} holds several hooks {hooks}; pass hook=<one of them>")
            hook = hooks[0]
        missing = [h for h in (hook, target_hook) if h is not None and h not in hooks]
        if missing and target_hook is not None:
            raise StoreError(
                f"a transcoder reads {hook!r} and reconstructs {target_hook!r}, but the cache at {d} holds {hooks} "
                f"(no {', '.join(map(repr, missing))}): cache both in one pass with "
                f"`saekit cache --hook {hook} --hook {target_hook} --out NEW_DIR`"
            )
        if missing:
            raise StoreError(f"the cache at {d} has no hook {hook!r}; it holds {hooks}")
        return cls(CacheSource(manifest, hook, cfg, target_hook), cfg)

    @classmethod
    def from_model(
        cls,
        model: Any,
        data: DataConfig,
        hook: str,
        cfg: StoreConfig | None = None,
        n_tokens: int | None = None,
        target_hook: str | None = None,
    ) -> ActivationStore:
        """Activations computed on the fly; an epoch is the first `n_tokens` of text (or all). With
        `target_hook`, (input, target) pairs from the same forward passes, for a transcoder."""
        cfg = cfg or StoreConfig()
        return cls(ModelSource(model, data, hook, cfg, n_tokens, target_hook), cfg)

    def _scale_of(self, acts: torch.Tensor, hook: str) -> float:
        """The factor that makes `hook`'s mean activation norm sqrt(width)."""
        mean_norm = torch.linalg.vector_norm(acts.float(), dim=-1).mean().item()
        if not math.isfinite(mean_norm):
            raise StoreError(
                f"activations of {hook} hold NaN or inf values (mean norm {mean_norm}), so they cannot be "
                "normalised or learned from: load the model in float32 (model.dtype=float32)"
            )
        if mean_norm <= 0:
            raise StoreError(f"activations of {hook} are all zero; cannot normalise them: choose another hook")
        return math.sqrt(acts.shape[-1]) / mean_norm

    def _normalize_(self, buf: torch.Tensor) -> None:
        if self.target_scale is None:
            buf.mul_(self.normalization_scale)
        else:
            buf[:, : self.d_in].mul_(self.normalization_scale)
            buf[:, self.d_in :].mul_(self.target_scale)

    def _out(self, rows: torch.Tensor) -> torch.Tensor | ActivationPair:
        """A batch as served: the tensor, or a transcoder's (input, target) pair cut from it."""
        if self.target_hook is None:
            return rows
        return ActivationPair(rows[:, : self.d_in].contiguous(), rows[:, self.d_in :].contiguous())

    # ------------------------------------------------------------------ buffers

    def _load(self, epoch: int, b: int) -> torch.Tensor | None:
        """Buffer `b` of `epoch`, shuffled and normalised. Each piece read goes straight to its
        shuffled rows of one preallocated tensor, so loading holds one buffer and one piece, not the
        raw buffer, its concatenation and its shuffled copy at once (3x the memory)."""
        parts = self._src.buffer_parts(epoch, b)
        if parts is None:
            return None
        buf = torch.empty(parts.rows, parts.width, dtype=self.dtype, device=self.device)
        # row j of the unshuffled buffer goes to row dest[j]: the same order as buf = raw[perm]
        dest = (torch.argsort(seeded_perm(parts.rows, self.seed, epoch, b, 1)).to(self.device)
                if self.shuffle else None)
        row = 0
        for piece in parts.pieces:
            n = int(piece.shape[0])
            piece = piece.to(self.device, non_blocking=True).to(self.dtype)
            if dest is None:
                buf[row : row + n].copy_(piece)
            else:
                buf.index_copy_(0, dest[row : row + n], piece)
            row += n
        if row != parts.rows:
            raise StoreError(f"buffer {b} of epoch {epoch} of {self.hook} gave {row} rows, expected {parts.rows}")
        if self.cfg.normalize:
            self._normalize_(buf)
        _return_freed_heap()
        return buf

    def _get(self, epoch: int, b: int) -> torch.Tensor | None:
        if self._cur is not None and self._cur[0] == (epoch, b):
            return self._cur[1]
        fut = self._prefetch.pop((epoch, b), None)
        for stale in self._prefetch.values():
            stale.cancel()
        self._prefetch.clear()
        self._cur = None  # the old buffer lives on only in the batches the consumer still holds
        buf = fut.result() if fut is not None else self._load(epoch, b)
        self._cur = ((epoch, b), buf)
        return buf

    def _prefetch_next(self, epoch: int, b: int) -> None:
        """Start reading buffer b + 1 in the background (once)."""
        if (self._src.prefetch and (epoch, b + 1) not in self._prefetch
                and self._cur is not None and self._cur[1] is not None):
            self._prefetch[(epoch, b + 1)] = self._pool.submit(self._load, epoch, b + 1)

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[torch.Tensor | ActivationPair]:
        """Batches forever, from the current position (a new iterator continues where it is)."""
        bs = self.cfg.batch_size
        epoch, b, off = self._pos
        parts: list[torch.Tensor] = []
        need = bs
        first_b, seen = b, 0  # to detect an epoch without a single token
        # The buffer the consumer's last batch is a view of: until it lets go of that batch (it does
        # when it takes the next one), a buffer older than the current one is still in memory, and
        # reading the next one then would hold three buffers at once instead of two.
        pinned: tuple[int, int] | None = None
        while True:
            buf = self._get(epoch, b)
            if buf is None:  # the epoch is over
                if self.n_tokens is None:  # a source that learns its size by reading it
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
                    if pinned is None or pinned == (epoch, b):
                        self._prefetch_next(epoch, b)
                    pinned = (epoch, b) if len(parts) == 1 and self.target_hook is None else None
                    parts, need = [], bs
                    yield self._out(batch)
            b, off = b + 1, 0

    def batches(self, n_tokens: int) -> Iterator[torch.Tensor | ActivationPair]:
        """Exactly ceil(n_tokens / batch_size) batches."""
        n = math.ceil(n_tokens / self.cfg.batch_size)
        it = iter(self)
        for _ in range(n):
            yield next(it)

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """The stream position and all the order depends on (a format trainer checkpoints hold)."""
        paired = {"target_hook": self.target_hook, "target_scale": self.target_scale} if self.target_hook else {}
        return {
            "version": 1,
            "source": self._src.kind,
            "hook": self.hook,
            "fingerprint": self._src.fingerprint,
            "position": list(self._pos),
            "seed": self.seed,
            "buffer_tokens": self.buffer_tokens,
            "shuffle": self.shuffle,
            "normalization_scale": self.normalization_scale,
            "n_tokens": self.n_tokens,
            **paired,  # a transcoder's store only: an SAE's state keeps its format
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state.get("source") != self._src.kind or state.get("hook") != self.hook
                or state.get("target_hook") != self.target_hook):
            raise StoreError(
                f"store state is for a {state.get('source')} store of {state.get('hook')!r} "
                f"(target {state.get('target_hook')!r}); this is a {self._src.kind} store of {self.hook!r} "
                f"(target {self.target_hook!r})"
            )
        if state.get("fingerprint") != self._src.fingerprint:
            raise StoreError("store state was saved for a different activation cache")
        self.seed = int(state["seed"])
        self.shuffle = bool(state["shuffle"])
        self.buffer_tokens = int(state["buffer_tokens"])
        self._src.arrange(self.buffer_tokens, self.seed, self.shuffle)
        self.normalization_scale = float(state["normalization_scale"])
        if self.target_hook is not None:
            self.target_scale = float(state["target_scale"])
        self.n_tokens = state.get("n_tokens")
        epoch, b, off = (int(x) for x in state["position"])
        self._pos = (epoch, b, off)
        self.epoch = epoch
        self._prefetch.clear()
        self._cur = None

    # ------------------------------------------------------------------ evaluation

    def held_out(self, n_tokens: int | None = None, raw: bool = False) -> torch.Tensor | ActivationPair:
        """The first `n_tokens` of the reserved held-out tokens (normalised like batches unless `raw`);
        a transcoder's store gives an `ActivationPair`."""
        reserved = self.cfg.held_out_tokens
        n = reserved if n_tokens is None else n_tokens
        if reserved <= 0:
            raise StoreError(
                "no held-out tokens are reserved; set store.held_out_tokens=N (those N tokens are "
                "then never used for training)"
            )
        if n > reserved:
            raise StoreError(f"asked for {n} held-out tokens but only {reserved} are reserved")
        acts = self._src.held_out(n).to(self.device).to(self.dtype).clone()
        if self.cfg.normalize and not raw:
            self._normalize_(acts)
        return self._out(acts)

    def __repr__(self) -> str:
        return (
            f"ActivationStore({self._src.kind}, hook={self.hook!r}, d_in={self.d_in}, "
            + (f"target_hook={self.target_hook!r}, d_out={self.d_out}, " if self.target_hook else "")
            + f"n_tokens={self.n_tokens}, batch_size={self.cfg.batch_size}, epoch={self.epoch})"
        )
