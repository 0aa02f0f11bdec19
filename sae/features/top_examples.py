"""Per-latent running top-k activations, with their context windows, in fixed memory.

A `SlotTable` with one group per latent and key = -activation: each batch, only events above
the latent's current k-th value are considered, and only those that get in have their
context window cut. Cost is proportional to the batch's firing events, not d_sae x tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sae.features.slots import SlotTable
from sae.features.window import BatchCodes, SparseEvents


class RunningTopK:
    def __init__(self, d_sae: int, k: int, window: int, device: torch.device) -> None:
        self.k = k
        self.slots = SlotTable(d_sae, k, window, device, torch.float32)

    def update(self, batch: BatchCodes, ev: SparseEvents) -> None:
        self.slots.offer(batch, ev.feat, -ev.act.float(), ev.tok, ev.feat, ev.act)

    def sorted(self) -> dict[str, Tensor]:
        """Slots ordered by activation, highest first; empty slots have act -inf."""
        s = self.slots
        order = s.key.argsort(dim=1)
        key = s.key.gather(1, order)
        W = s.ctx_tok.shape[-1]
        idx3 = order[:, :, None].expand(-1, -1, W)
        return {
            "act": torch.where(torch.isfinite(key), -key, torch.full_like(key, float("-inf"))),
            "row": s.row.gather(1, order),
            "pos": s.pos.gather(1, order),
            "ctx_tok": s.ctx_tok.gather(1, idx3),
            "ctx_act": s.ctx_act.gather(1, idx3),
        }
