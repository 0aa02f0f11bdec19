"""Activations computed on the fly, buffer by buffer: the source behind `ActivationStore.from_model`.

Buffer ``b`` of every epoch is text rows ``[h + b*R, h + (b+1)*R)`` of the packed stream, where
``R = buffer_tokens // T`` and the first ``h`` rows are held out for evaluation. Rows are
deterministic, so any buffer can be recomputed from its index alone: resuming costs re-tokenizing
the rows before it and one buffer's forward passes, not the whole epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from sae.config import DataConfig, StoreConfig, to_dict
from sae.data import special_ids, token_rows
from sae.extract import ActivationExtractor
from sae.shards import StoreError


class ModelSource:
    kind = "model"
    fingerprint = None

    def __init__(
        self, model: Any, data: DataConfig, hook: str, cfg: StoreConfig, n_tokens: int | None
    ) -> None:
        bos, sep = special_ids(model.tokenizer, data)
        self.extractor = ActivationExtractor(
            model,
            [hook],
            **to_dict(cfg.token_filter),
            extra_special_ids=[bos, sep],
        )
        self.hook = self.extractor.hooks[0]
        self.model = model
        self.data = data
        self.batch_rows = cfg.model_batch_size
        T = data.context_size
        self.held_rows = math.ceil(cfg.held_out_tokens / T) if cfg.held_out_tokens else 0
        self.epoch_rows = math.ceil(n_tokens / T) if n_tokens else None
        self.set_buffer_rows(cfg.buffer_tokens)
        self.epoch_tokens: int | None = None  # kept activations per epoch, known after one epoch
        self._rows: Iterator[torch.Tensor] | None = None
        self._next_row = 0
        self._cache: dict[tuple[int, int], torch.Tensor | None] = {}
        self._epoch_count: dict[int, int] = {}
        self.d_in = int(self.buffer(0, 0).shape[-1])

    def set_buffer_rows(self, buffer_tokens: int) -> None:
        self.buffer_rows = max(1, buffer_tokens // self.data.context_size)
        self._cache = {}

    def _take_rows(self, start: int, n: int) -> list[torch.Tensor]:
        """Rows [start, start+n) of the stream (fewer at its end), re-reading it only if needed."""
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
        for i in range(0, len(rows), self.batch_rows):
            res = self.extractor(torch.stack(rows[i : i + self.batch_rows]))
            parts.append(res.acts[self.hook])
        return torch.cat(parts) if parts else torch.empty(0, 0)

    def buffer(self, epoch: int, b: int) -> torch.Tensor | None:
        """Unshuffled kept activations of buffer `b` (same for every epoch), None past the end."""
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

    def _count(self, b: int, acts: torch.Tensor | None) -> None:
        if acts is None:
            if self.epoch_tokens is None and all(i in self._epoch_count for i in range(b)):
                self.epoch_tokens = sum(self._epoch_count[i] for i in range(b))
        else:
            self._epoch_count[b] = int(acts.shape[0])

    def held_out(self, n: int) -> torch.Tensor:
        acts = self._acts(self._take_rows(0, self.held_rows))
        if acts.shape[0] < n:
            raise StoreError(
                f"the {self.held_rows} held-out rows give {acts.shape[0]} activations after "
                f"filtering, fewer than the {n} asked for; raise store.held_out_tokens"
            )
        return acts[:n]
