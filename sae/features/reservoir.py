"""Exact activation histograms and exact uniform interval samples, in one pass and fixed memory.

The problem: intervals are linear in [0, max], but the max is only known at the end.

The trick: each latent keeps a grid of G = 64 equal bins over [0, R], where R = 2^e is the
smallest power of two above every activation seen so far. When a larger activation arrives,
R doubles (or more) and each new bin is exactly the union of 2^s old bins, so counts simply
add up: the histogram stays exact. At the end max is in [R/2, R), so [0, max] is covered by
33..64 bins.

Samples: every firing event gets a random key; a uniform sample of size S from any set of
events is the S events with the smallest keys ("bottom-k sampling"). Each (latent, bin)
keeps its S smallest-key events, and the bottom-S of a union of bins is the bottom-S of the
bins' bottom-S sets. So bins merge exactly when R grows, and at the end each of the
`n_intervals` intervals, with edges snapped to the bin grid (within half a bin, < max/64, of
the exact linear edge), gets an exact uniform sample of its events. Memory: d_sae x G x S
slots, each with a context window (~40 KB per latent with the defaults: ~190 MB for 4,608
latents), independent of the number of tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sae.features.slots import SlotTable
from sae.features.window import BatchCodes, SparseEvents

GRID_BITS = 6
GRID = 1 << GRID_BITS  # bins per latent
EMPTY_EXP = -(1 << 20)  # exponent of a latent that has not fired yet


def bin_index(act: Tensor, exp: Tensor) -> Tensor:
    """Bin of each activation on a grid of GRID bins over [0, 2^exp]: exact (a power-of-two scale)."""
    scaled = torch.ldexp(act.float(), (GRID_BITS - exp).to(torch.float32))
    return scaled.floor().long().clamp_(0, GRID - 1)


def ceil_exp(act: Tensor) -> Tensor:
    """Smallest e with act < 2^e (frexp: act = m * 2^e with m in [0.5, 1))."""
    return torch.frexp(act.float()).exponent.long()


@dataclass
class Intervals:
    lo: Tensor  # [F, n] interval lower edges
    hi: Tensor  # [F, n]
    n_events: Tensor  # [F, n]
    act: Tensor  # [F, n, S] sampled activations (nan = no sample)
    row: Tensor  # [F, n, S]
    pos: Tensor  # [F, n, S]
    ctx_tok: Tensor  # [F, n, S, W]
    ctx_act: Tensor  # [F, n, S, W]


class IntervalSampler:
    def __init__(self, d_sae: int, per_bin: int, window: int, device: torch.device, seed: int = 0) -> None:
        self.S = per_bin
        self.d_sae = d_sae
        self.exp = torch.full((d_sae,), EMPTY_EXP, dtype=torch.long, device=device)
        self.hist = torch.zeros((d_sae, GRID), dtype=torch.long, device=device)
        # group = latent * GRID + bin; float16 windows: display only (the centre value is exact in
        # `act`), and they halve the largest buffer
        self.slots = SlotTable(d_sae * GRID, per_bin, window, device, torch.float16)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)

    def update(self, batch: BatchCodes, ev: SparseEvents, batch_max: Tensor, fired: Tensor) -> None:
        """`batch_max` [F]: this batch's max activation per latent; `fired` [F]: it fired at all."""
        self._grow(torch.where(fired, ceil_exp(batch_max), torch.full_like(self.exp, EMPTY_EXP)))
        if ev.act.numel() == 0:
            return
        group = ev.feat * GRID + bin_index(ev.act, self.exp[ev.feat])
        self.hist.view(-1).index_add_(0, group, torch.ones_like(group))
        key = torch.rand(ev.act.shape, generator=self.gen, device=ev.act.device)
        self.slots.offer(batch, group, key, ev.tok, ev.feat, ev.act)

    def _field(self, name: str) -> Tensor:
        t = getattr(self.slots, name)
        return t.view(self.d_sae, GRID, *t.shape[1:])

    def _grow(self, need: Tensor) -> None:
        """Raise each latent's range to 2^need, merging 2^s bins into one where it doubles s times."""
        new_exp = torch.maximum(self.exp, need)
        had = self.exp != EMPTY_EXP
        shift = torch.where(had, new_exp - self.exp, torch.zeros_like(new_exp))
        self.exp = new_exp
        for s in torch.unique(shift[shift > 0]).tolist():
            lat = (shift == s).nonzero().squeeze(1)
            self._merge_bins(lat, min(int(s), GRID_BITS))

    def _merge_bins(self, lat: Tensor, s: int) -> None:
        """Bins [j*f, (j+1)*f) -> bin j (f = 2^s): add counts, keep the S smallest keys of the union."""
        n, f, S = lat.numel(), 1 << s, self.S
        keep_bins = GRID // f
        hist = self.hist[lat].view(n, keep_bins, f).sum(-1)
        self.hist[lat] = torch.cat([hist, hist.new_zeros(n, GRID - keep_bins)], 1)

        key = self._field("key")
        merged_key, idx = key[lat].view(n, keep_bins, f * S).topk(S, dim=2, largest=False)
        key[lat] = torch.cat([merged_key, merged_key.new_full((n, GRID - keep_bins, S), float("inf"))], 1)
        for name, fill in (("act", 0.0), ("row", -1), ("pos", -1), ("ctx_tok", -1), ("ctx_act", 0.0)):
            t = self._field(name)
            extra = t.shape[3:]
            src = t[lat].view(n, keep_bins, f * S, *extra)
            gidx = idx.view(n, keep_bins, S, *([1] * len(extra))).expand(n, keep_bins, S, *extra)
            merged = src.gather(2, gidx)
            pad = merged.new_full((n, GRID - keep_bins, S, *extra), fill)
            t[lat] = torch.cat([merged, pad], 1)
        self.slots.worst.view(self.d_sae, GRID)[lat] = key[lat].max(-1).values

    # ------------------------------------------------------------------ at the end

    def bin_width(self) -> Tensor:
        """[F] bin width 2^exp / GRID (0 for latents that never fired)."""
        fired = self.exp != EMPTY_EXP
        w = torch.ldexp(torch.ones_like(self.exp, dtype=torch.float64), (self.exp - GRID_BITS).double())
        return torch.where(fired, w, torch.zeros_like(w))

    def used_bins(self, max_act: Tensor) -> Tensor:
        """[F] number of bins covering [0, max]: bin(max) + 1 (0 for latents that never fired)."""
        fired = self.exp != EMPTY_EXP
        return torch.where(fired, bin_index(max_act.clamp(min=0), self.exp) + 1, torch.zeros_like(self.exp))

    def intervals(self, max_act: Tensor, n_intervals: int) -> Intervals:
        F, S = self.d_sae, self.S
        key_all = self._field("key")
        dev = key_all.device
        used = self.used_bins(max_act)  # [F]
        w = self.bin_width()
        j = torch.arange(n_intervals + 1, device=dev, dtype=torch.float64)
        # exact linear edges j*max/n in bin units, snapped to the nearest bin edge
        edges = torch.round(j[None, :] * max_act.double()[:, None] / n_intervals / w.clamp(min=1e-300)[:, None])
        edges = edges.long()
        edges[:, -1] = used
        edges[:, 0] = 0
        edges = torch.where((used > 0)[:, None], edges, torch.zeros_like(edges))
        bins = torch.arange(GRID, device=dev)
        W = self.slots.ctx_tok.shape[-1]
        out_shape = (F, n_intervals, S)
        res = Intervals(
            lo=edges[:, :-1].double() * w[:, None],
            hi=edges[:, 1:].double() * w[:, None],
            n_events=torch.zeros((F, n_intervals), dtype=torch.long, device=dev),
            act=torch.full(out_shape, float("nan"), device=dev),
            row=torch.full(out_shape, -1, dtype=torch.long, device=dev),
            pos=torch.full(out_shape, -1, dtype=torch.long, device=dev),
            ctx_tok=torch.full((*out_shape, W), -1, dtype=torch.int32, device=dev),
            ctx_act=torch.zeros((*out_shape, W), device=dev),
        )
        for i in range(n_intervals):
            inside = (bins[None, :] >= edges[:, i : i + 1]) & (bins[None, :] < edges[:, i + 1 : i + 2])  # [F, G]
            res.n_events[:, i] = (self.hist * inside).sum(1)
            key = torch.where(inside[:, :, None], key_all, torch.full_like(key_all, float("inf")))
            best_key, idx = key.view(F, GRID * S).topk(S, dim=1, largest=False, sorted=True)
            found = torch.isfinite(best_key)
            act = self.slots.act.view(F, GRID * S).gather(1, idx)
            res.act[:, i] = torch.where(found, act, torch.full_like(act, float("nan")))
            res.row[:, i] = self.slots.row.view(F, GRID * S).gather(1, idx)
            res.pos[:, i] = self.slots.pos.view(F, GRID * S).gather(1, idx)
            idx3 = idx[:, :, None].expand(-1, -1, W)
            res.ctx_tok[:, i] = self.slots.ctx_tok.view(F, GRID * S, W).gather(1, idx3)
            res.ctx_act[:, i] = self.slots.ctx_act.view(F, GRID * S, W).gather(1, idx3).float()
        return res
