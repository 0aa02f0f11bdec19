"""One batch of token rows with their SAE codes, and the context windows cut from it.

An example is saved the moment it is found (the batch is gone afterwards), so its window
(token ids and the latent's activation on each window token) is cut right here. Only
`valid` tokens were encoded (BOS, separators and massive-norm outliers were skipped); their
activation in a window is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

PAD = -1  # token id of window slots outside the row


@dataclass
class SparseEvents:
    """Every (token, latent) pair where the latent fired, flattened."""

    tok: Tensor  # [E] index into the batch's valid tokens
    feat: Tensor  # [E] latent index
    act: Tensor  # [E] activation (> 0)


class BatchCodes:
    """Token rows [B, T], which of them were encoded, and their codes [N_valid, F]."""

    def __init__(self, tokens_BT: Tensor, valid_BT: Tensor, codes_NF: Tensor, row_offset: int, window: int):
        self.tokens_BT = tokens_BT
        self.codes_NF = codes_NF
        self.row_offset = row_offset
        self.window = window
        B, T = tokens_BT.shape
        self.T = T
        flat_valid = valid_BT.reshape(-1)
        # valid token n sits at flat position pos_N[n] = b * T + t
        self.pos_N = flat_valid.nonzero().squeeze(1)
        self.index_BT = torch.full((B * T,), -1, dtype=torch.long, device=tokens_BT.device)
        self.index_BT[self.pos_N] = torch.arange(self.pos_N.numel(), device=tokens_BT.device)

    def events(self) -> SparseEvents:
        tok, feat = (self.codes_NF > 0).nonzero(as_tuple=True)
        return SparseEvents(tok, feat, self.codes_NF[tok, feat])

    def rows_pos(self, tok: Tensor) -> tuple[Tensor, Tensor]:
        """Global row index and position in the row of valid tokens."""
        flat = self.pos_N[tok]
        return flat // self.T + self.row_offset, flat % self.T

    def windows(self, tok: Tensor, feat: Tensor) -> tuple[Tensor, Tensor]:
        """Token ids [C, 2W+1] (PAD outside the row) and latent `feat`'s activations on them."""
        W = self.window
        flat = self.pos_N[tok]
        b, t = flat // self.T, flat % self.T
        offs = torch.arange(-W, W + 1, device=flat.device)
        t_CW = t[:, None] + offs[None, :]
        inside = (t_CW >= 0) & (t_CW < self.T)
        flat_CW = b[:, None] * self.T + t_CW.clamp(0, self.T - 1)
        tok_CW = self.tokens_BT.reshape(-1)[flat_CW].to(torch.int32)
        tok_CW = torch.where(inside, tok_CW, torch.full_like(tok_CW, PAD))
        n_CW = self.index_BT[flat_CW]
        encoded = inside & (n_CW >= 0)
        acts = self.codes_NF[n_CW.clamp(min=0), feat[:, None].expand_as(n_CW)]
        acts = torch.where(encoded, acts, torch.zeros_like(acts)).float()
        return tok_CW, acts

