"""A table of G groups x S slots that keeps, per group, the S events with the smallest keys.

The one data structure behind both the running top-k (key = -activation) and the interval
reservoirs (key = a random number: the S smallest random keys of a set are a uniform sample of
it). Slots are unordered: a batch's winners overwrite the evicted slots in place, so an event's
context window is cut only if it actually gets in (cheap once the table has filled), and old
windows never move. `worst[g]` (the largest kept key, +inf while a slot is free) lets most
events be rejected with one comparison.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sae.features.window import BatchCodes

_NAN = float("nan")


def rank_in_group(group: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
    """Sort events by (group, key) and return (permutation, rank of each sorted event in its group).

    One sort on a packed int64 (group in the high bits, the float key's order-preserving bit
    pattern in the low 32) instead of two stable sorts.
    """
    bits = key.float().view(torch.int32).long()
    bits = torch.where(bits < 0, -(1 << 31) - 1 - bits, bits)  # order-preserving for negative floats
    packed = (group.long() << 32) | (bits + (1 << 31))
    perm = torch.argsort(packed)
    g = group[perm]
    n = g.numel()
    idx = torch.arange(n, device=g.device)
    is_start = torch.ones(n, dtype=torch.bool, device=g.device)
    is_start[1:] = g[1:] != g[:-1]
    start = torch.cummax(torch.where(is_start, idx, torch.zeros_like(idx)), dim=0).values
    return perm, idx - start


class SlotTable:
    def __init__(self, n_groups: int, S: int, window: int, device: torch.device, ctx_dtype: torch.dtype) -> None:
        W = 2 * window + 1
        self.S = S
        self.key = torch.full((n_groups, S), float("inf"), device=device)
        self.worst = torch.full((n_groups,), float("inf"), device=device)
        self.act = torch.zeros((n_groups, S), device=device)
        self.row = torch.full((n_groups, S), -1, dtype=torch.long, device=device)
        self.pos = torch.full((n_groups, S), -1, dtype=torch.long, device=device)
        self.ctx_tok = torch.full((n_groups, S, W), -1, dtype=torch.int32, device=device)
        self.ctx_act = torch.zeros((n_groups, S, W), dtype=ctx_dtype, device=device)

    def offer(self, batch: BatchCodes, group: Tensor, key: Tensor, tok: Tensor, feat: Tensor, act: Tensor) -> None:
        """Events (group, key, valid-token index, latent, activation): keep the winners."""
        keep = key < self.worst[group]
        if not bool(keep.any()):
            return
        group, key, tok, feat, act = group[keep], key[keep], tok[keep], feat[keep], act[keep]
        perm, rank = rank_in_group(group, key)
        best = rank < self.S
        perm, rank = perm[best], rank[best]
        group, key, tok, feat, act = group[perm], key[perm], tok[perm], feat[perm], act[perm]

        touched, slot_of = torch.unique_consecutive(group, return_inverse=True)  # sorted by group
        U, S = touched.numel(), self.S
        new_key = torch.full((U, S), _NAN, device=key.device)  # NaN sorts after +inf: never beats a slot
        new_key[slot_of, rank] = key.float()
        cand = torch.full((U, S), -1, dtype=torch.long, device=key.device)
        cand[slot_of, rank] = torch.arange(key.numel(), device=key.device)

        both = torch.cat([self.key[touched], new_key], 1)
        kept_key, idx = both.topk(S, dim=1, largest=False)
        chosen = torch.zeros_like(both, dtype=torch.bool).scatter_(1, idx, True)
        evicted = (~chosen[:, :S]).nonzero(as_tuple=True)  # (u, slot) to overwrite, row-major
        incoming = chosen[:, S:].nonzero(as_tuple=True)  # (u, j) winners, row-major: same count per u
        self.worst[touched] = kept_key.max(1).values
        if incoming[0].numel() == 0:
            return
        src = cand[incoming]
        g_dst, s_dst = touched[evicted[0]], evicted[1]
        self.key[g_dst, s_dst] = key[src].float()
        self.act[g_dst, s_dst] = act[src].float()
        row, pos = batch.rows_pos(tok[src])
        self.row[g_dst, s_dst] = row
        self.pos[g_dst, s_dst] = pos
        ctx_tok, ctx_act = batch.windows(tok[src], feat[src])
        self.ctx_tok[g_dst, s_dst] = ctx_tok
        if self.ctx_act.dtype == torch.float16:  # display-only windows: saturate rather than overflow to inf
            ctx_act = ctx_act.clamp(-65504.0, 65504.0)
        self.ctx_act[g_dst, s_dst] = ctx_act.to(self.ctx_act.dtype)
