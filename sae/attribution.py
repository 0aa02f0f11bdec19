"""Which (token, feature) pairs drive a scalar of the model's output (issue 16, item 2).

    result = sae.attribute(model, my_sae, "The Golden Gate Bridge is in San",
                           sae.logit_metric(model, " Francisco"))
    result.top(10)            # [(position, token, feature, attribution), ...]
    sae.check_attribution(model, my_sae, prompt, metric, result, n_pairs=30).correlation

Attribution is gradient x activation at the SAE's codes, with the SAE spliced in WITH its error
term (`sae.attached`), so the model's output is the clean one and the number for a pair is the
first-order estimate of what zero-ablating that feature at that position changes: -(d metric /
d act) x act. Positions the token filter drops (special tokens such as BOS, massive-norm
outliers) are not spliced and get no attribution: the SAE never saw them in training, and its
codes there (BOS norm ~100x the median) would top every ranking while meaning nothing. `check_attribution` runs the real ablations on a sample of active pairs and
reports how well the estimates agree (Pearson correlation and sign agreement).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sae.attachment import attached

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sae.architectures.base import SparseAutoencoder
    from sae.token_filter import TokenFilter

Metric = Callable[[Tensor], Tensor]  # logits [1, pos, vocab] -> a scalar


def logit_metric(model: TransformerBridge, target: str, baseline: str | None = None,
                 position: int = -1) -> Metric:
    """The logit of `target`'s first token at `position` (minus `baseline`'s: a logit difference)."""
    tok = model.tokenizer

    def first(text: str) -> int:
        ids = tok.encode(text, add_special_tokens=False)
        if not ids:
            raise ValueError(f"{text!r} encodes to no token; give a word, e.g. ' Francisco'")
        return ids[0]

    t, b = first(target), (first(baseline) if baseline is not None else None)

    def metric(logits: Tensor) -> Tensor:
        row = logits[0, position]
        return row[t] - row[b] if b is not None else row[t]

    return metric


@dataclass
class Attribution:
    """Per (position, feature): the first-order effect on the metric of zero-ablating the feature there."""

    tokens: list[str]
    metric: float  # the clean metric
    acts_TF: Tensor  # the SAE's codes [pos, d_sae]
    effect_TF: Tensor  # -(d metric / d act) x act [pos, d_sae]

    def top(self, k: int = 10, by_magnitude: bool = True) -> list[tuple[int, str, int, float]]:
        """The k pairs with the largest |effect| (or the most positive): (position, token, feature, effect)."""
        scores = self.effect_TF.abs() if by_magnitude else self.effect_TF
        flat = scores.flatten().topk(min(k, scores.numel())).indices
        F = self.effect_TF.shape[1]
        return [(int(i) // F, self.tokens[int(i) // F], int(i) % F, float(self.effect_TF.flatten()[i]))
                for i in flat]

    def by_feature(self) -> Tensor:
        """Summed over positions: each feature's total first-order effect [d_sae]."""
        return self.effect_TF.sum(0)


def _filter(model: TransformerBridge, sae: SparseAutoencoder, token_filter: TokenFilter | None) -> TokenFilter:
    from sae.token_filter import TokenFilter

    return token_filter if token_filter is not None else TokenFilter(model, sae.cfg.hook_name)


def attribute(model: TransformerBridge, sae: SparseAutoencoder, prompt: str | Tensor, metric: Metric,
              token_filter: TokenFilter | None = None) -> Attribution:
    """Gradient x activation of `metric` at every (position, feature) of `sae` (module docstring);
    `token_filter`: which positions are spliced (default: `sae.TokenFilter` with its defaults)."""
    tokens = model.to_tokens(prompt) if isinstance(prompt, str) else prompt
    if tokens.ndim != 2 or tokens.shape[0] != 1:
        raise ValueError(f"attribute takes one prompt (a string or token ids [1, pos]), got shape {tuple(tokens.shape)}")
    held: dict[str, Tensor] = {}

    def leaf(acts: Tensor, hook: Any) -> Tensor:
        held["acts"] = acts.detach().clone().requires_grad_(True)
        return held["acts"]

    name = f"{sae.cfg.hook_name}.hook_sae_acts_post"
    spliced = attached(model, sae, use_error_term=True, token_filter=_filter(model, sae, token_filter))
    with torch.enable_grad(), spliced as m, m.hooks([(name, leaf)]):
        value = metric(m(tokens))
        if value.numel() != 1:
            raise ValueError(f"the metric must return a scalar, got shape {tuple(value.shape)}")
        (grad,) = torch.autograd.grad(value, held["acts"])
    acts = held["acts"].detach()[0]
    effect = -(grad[0] * acts)
    strs = [model.tokenizer.decode([int(t)]) for t in tokens[0]]
    return Attribution(strs, float(value.detach()), acts, effect.detach())


@dataclass
class AttributionCheck:
    """First-order estimates against real ablations on sampled active pairs."""

    n_pairs: int
    correlation: float  # Pearson, estimate vs real change
    sign_agreement: float  # share of pairs whose estimate has the real change's sign
    pairs: list[tuple[int, int, float, float]]  # (position, feature, estimate, real change)


def check_attribution(model: TransformerBridge, sae: SparseAutoencoder, prompt: str | Tensor, metric: Metric,
                      result: Attribution, n_pairs: int = 30, seed: int = 0,
                      token_filter: TokenFilter | None = None) -> AttributionCheck:
    """Ablate `n_pairs` active (position, feature) pairs one at a time, half of them the largest
    estimates and half drawn at random, and compare the real metric change with the estimate."""
    tokens = model.to_tokens(prompt) if isinstance(prompt, str) else prompt
    active = (result.effect_TF != 0).nonzero().tolist()  # active where spliced
    if len(active) < 3:
        raise ValueError("fewer than 3 active (position, feature) pairs to check; use a longer prompt")
    top = [(p, f) for p, _, f, _ in result.top(n_pairs // 2) if result.effect_TF[p, f] != 0]
    chosen = set(top)
    rest = [tuple(a) for a in active if tuple(a) not in chosen]
    pairs = top + random.Random(seed).sample(rest, min(n_pairs - len(top), len(rest)))
    name = f"{sae.cfg.hook_name}.hook_sae_acts_post"
    out = []
    spliced = attached(model, sae, use_error_term=True, token_filter=_filter(model, sae, token_filter))
    with torch.no_grad(), spliced as m:
        clean = float(metric(m(tokens)))
        for p, f in pairs:
            def ablate(acts: Tensor, hook: Any, p: int = p, f: int = f) -> Tensor:
                acts = acts.clone()
                acts[0, p, f] = 0.0
                return acts

            with m.hooks([(name, ablate)]):
                real = float(metric(m(tokens))) - clean
            out.append((p, f, float(result.effect_TF[p, f]), real))
    est = torch.tensor([o[2] for o in out], dtype=torch.float64)
    real = torch.tensor([o[3] for o in out], dtype=torch.float64)
    corr = float(torch.corrcoef(torch.stack([est, real]))[0, 1]) if len(out) > 2 else math.nan
    signs = float(((est.sign() == real.sign()) | (real.abs() < 1e-6)).double().mean())
    return AttributionCheck(len(out), corr, signs, out)
