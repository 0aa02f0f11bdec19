"""Everything the feature database needs from the token stream, updated one batch at a time.

`FeatureAccumulator.update(tokens_BT, valid_BT, codes_NF)` takes a batch of token rows and the
SAE codes of its valid tokens; all state is sized by d_sae (never by the number of tokens):
counts, sums and max per latent, the running top-k (`top_examples.py`), exact histograms and interval
samples (`reservoir.py`) and co-occurrence counts (`cooccur.py`). Work per batch is
proportional to the number of firing events (sparse), apart from one scan of the codes.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from sae.features.cooccur import CooccurrenceCounter
from sae.features.reservoir import IntervalSampler
from sae.features.top_examples import RunningTopK
from sae.features.window import BatchCodes

# Above this many latents the d_sae^2 co-occurrence matrix is not kept (16384^2 x 4 B = 1 GiB).
MAX_COOC_FEATURES = 16384


class FeatureAccumulator:
    def __init__(
        self,
        d_sae: int,
        *,
        top_k: int = 20,
        window: int = 8,
        examples_per_interval: int = 5,
        device: torch.device | str = "cpu",
        seed: int = 0,
        cooccurrence: bool = True,
    ) -> None:
        dev = torch.device(device)
        self.d_sae = d_sae
        self.window = window
        self.n_tokens = 0  # encoded (valid) tokens: the density denominator
        self.n_rows = 0
        self.n_excluded = 0
        self.n_fired = torch.zeros(d_sae, dtype=torch.long, device=dev)
        self.sum_act = torch.zeros(d_sae, dtype=torch.float64, device=dev)
        self.max_act = torch.zeros(d_sae, device=dev)
        self.topk = RunningTopK(d_sae, top_k, window, dev)
        self.intervals = IntervalSampler(d_sae, examples_per_interval, window, dev, seed=seed)
        self.cooc = CooccurrenceCounter(d_sae, dev, seed=seed) if cooccurrence and d_sae <= MAX_COOC_FEATURES else None
        self.seconds = 0.0

    @property
    def cooccurrence_note(self) -> str:
        if self.cooc is None:
            return f"skipped: d_sae {self.d_sae} > {MAX_COOC_FEATURES} (the d_sae^2 count matrix would not fit)"
        return f"counted on {self.cooc.n_tokens} of {self.n_tokens} tokens, ranked by Jaccard"

    @torch.no_grad()
    def update(self, tokens_BT: Tensor, valid_BT: Tensor, codes_NF: Tensor) -> None:
        """One batch: token rows [B, T], which were encoded [B, T], their codes [n_valid, d_sae]."""
        t0 = time.perf_counter()
        B, T = tokens_BT.shape
        if codes_NF.shape[0] != int(valid_BT.sum()):
            raise ValueError(f"codes have {codes_NF.shape[0]} rows but {int(valid_BT.sum())} tokens are valid")
        batch = BatchCodes(tokens_BT, valid_BT, codes_NF, self.n_rows, self.window)
        ev = batch.events()
        self.n_rows += B
        self.n_tokens += codes_NF.shape[0]
        self.n_excluded += B * T - codes_NF.shape[0]
        F = self.d_sae
        self.n_fired += torch.bincount(ev.feat, minlength=F)
        act = ev.act.float()
        self.sum_act.index_add_(0, ev.feat, act.double())
        batch_max = torch.zeros(F, device=act.device).scatter_reduce_(0, ev.feat, act, "amax")
        self.max_act = torch.maximum(self.max_act, batch_max)
        self.topk.update(batch, ev)
        self.intervals.update(batch, ev, batch_max, batch_max > 0)
        if self.cooc is not None:
            self.cooc.update(ev, codes_NF.shape[0])
        if act.is_cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0

    def mean_act(self) -> Tensor:
        return (self.sum_act / self.n_fired.clamp(min=1)).float()

    def density(self) -> Tensor:
        return self.n_fired.double() / max(self.n_tokens, 1)
