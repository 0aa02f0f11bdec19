"""Co-occurrence: how often two latents fire on the same token, counted sparsely.

A [d_sae, d_sae] int32 count matrix (its diagonal = how often each latent fired on the counted
tokens). Each token adds L0^2 pairs, so the cost is proportional to sum(L0^2), far below a
dense A^T A (tokens x d_sae^2). When a batch would add more than `max_pairs` pairs (dense
SAEs), a random subset of its tokens is counted: Jaccard needs only consistent counts, and
the number of tokens counted is recorded. Memory is d_sae^2 x 4 bytes whatever the number
of tokens; above `max_features` latents co-occurrence is skipped (and the meta says so).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sae.features.window import SparseEvents


class CooccurrenceCounter:
    def __init__(self, d_sae: int, device: torch.device, max_pairs: int = 1 << 24, seed: int = 0) -> None:
        self.d_sae = d_sae
        # one extra row/column collects the padding pairs of the fixed-width path
        self._counts = torch.zeros((d_sae + 1, d_sae + 1), dtype=torch.int32, device=device)
        self.max_pairs = max_pairs
        self.n_tokens = 0
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed + 1)
        self._index_dtype = torch.int32 if (d_sae + 1) ** 2 < 2**31 else torch.long

    @property
    def counts(self) -> Tensor:
        """[d_sae, d_sae]: tokens on which both latents fired (diagonal: on which each fired)."""
        return self._counts[: self.d_sae, : self.d_sae]

    def update(self, ev: SparseEvents, n_tok: int) -> None:
        tok, feat = ev.tok, ev.feat  # nonzero() yields events grouped by token, in token order
        l0 = torch.bincount(tok, minlength=n_tok)
        n_pairs = int((l0 * l0).sum())
        if n_pairs > self.max_pairs:
            chosen = torch.rand(n_tok, generator=self.gen, device=tok.device) < self.max_pairs / n_pairs
            keep = chosen[tok]
            tok, feat = tok[keep], feat[keep]
            l0 = torch.where(chosen, l0, torch.zeros_like(l0))
            n_pairs = int((l0 * l0).sum())
            self.n_tokens += int(chosen.sum())
        else:
            self.n_tokens += n_tok
        if tok.numel() == 0:
            return
        F1 = self.d_sae + 1
        start = torch.cumsum(l0, 0) - l0  # first event of each token
        within = torch.arange(tok.numel(), device=tok.device) - start[tok]
        l_max = int(l0.max())
        if n_tok * l_max * l_max <= 2 * n_pairs:
            # near-constant L0 (TopK SAEs): a padded [tokens, L_max] table and one outer "product"
            table = torch.full((n_tok, l_max), self.d_sae, dtype=self._index_dtype, device=tok.device)
            table[tok, within] = feat.to(self._index_dtype)
            flat = (table[:, :, None] * F1 + table[:, None, :]).reshape(-1)
        else:
            # variable L0: pair each event with every event of its token
            reps = l0[tok]
            left = torch.repeat_interleave(torch.arange(tok.numel(), device=tok.device), reps)
            block_start = torch.cumsum(reps, 0) - reps
            right = start[tok[left]] + torch.arange(left.numel(), device=tok.device) - block_start[left]
            flat = (feat[left] * F1 + feat[right]).to(self._index_dtype)
        self._counts.view(-1).index_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))

    def top(self, n: int, chunk: int = 1024) -> tuple[Tensor, Tensor, Tensor]:
        """Per latent the n latents with the highest Jaccard: (other, n_both, jaccard), [F, n] each.

        Slots with no co-occurrence have other = -1.
        """
        F = self.d_sae
        n = min(n, F - 1)
        diag = self.counts.diagonal().long()
        others, boths, jacs = [], [], []
        for lo in range(0, F, chunk):
            c = self.counts[lo : lo + chunk].long()
            union = diag[lo : lo + chunk, None] + diag[None, :] - c
            jac = c.float() / union.clamp(min=1).float()
            rows = torch.arange(c.shape[0], device=c.device)
            jac[rows, rows + lo] = -1.0  # not its own neighbour
            jac[c == 0] = -1.0
            j, o = jac.topk(n, dim=1)
            both = c.gather(1, o)
            o = torch.where(j > 0, o, torch.full_like(o, -1))
            others.append(o)
            boths.append(both)
            jacs.append(j.clamp(min=0))
        return torch.cat(others), torch.cat(boths), torch.cat(jacs)
