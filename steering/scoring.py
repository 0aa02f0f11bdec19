"""How well steering worked: concept presence, fluency (perplexity, distinct-n), task scores.

- concept score: 1 if a text mentions the concept (keywords / a regex, or any scorer
  function `str -> float` the user passes), averaged into a rate over prompts;
- perplexity of the steered continuation under the UNSTEERED model, given its prompt
  (steering that wrecks the text shows up here even when keywords appear);
- text perplexity: the same continuation after an empty user turn instead of its prompt. A
  concept clamp is meant to change the topic, which the prompted perplexity also counts as
  surprise; the text perplexity measures fluency alone (is this good text at all?);
- distinct-n: unique n-grams / n-grams, low when steering makes the model loop.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from sae import model_device
from steering.interventions import SteeringError
from steering.positions import tracker_for

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Scorer = Callable[[str], float]


def keyword_scorer(keywords: Sequence[str] = (), regex: str | None = None) -> Scorer:
    """1.0 when the text contains any keyword (case-insensitive, whole words) or matches regex."""
    parts = [r"\b" + re.escape(k) + r"\b" for k in keywords]
    if regex:
        parts.append(f"(?:{regex})")
    if not parts:
        raise SteeringError("a keyword scorer needs keywords or a regex")
    try:
        pat = re.compile("|".join(parts), re.IGNORECASE)
    except re.error as e:
        raise SteeringError(f"invalid concept regex {regex!r}: {e}") from None

    def score(text: str) -> float:
        return 1.0 if pat.search(text) else 0.0

    score.pattern = pat.pattern  # type: ignore[attr-defined]
    return score


def concept_score(
    texts: Sequence[str],
    scorer: Scorer | None = None,
    *,
    keywords: Sequence[str] = (),
    regex: str | None = None,
) -> list[float]:
    """Per-text concept score (mean it for a rate)."""
    fn = scorer or keyword_scorer(keywords, regex)
    return [float(fn(t)) for t in texts]


def distinct_n(text: str | Sequence[int], n: int = 2) -> float:
    """Unique n-grams over n-grams (words for a str, ids for a sequence); 1.0 when too short."""
    units = text.split() if isinstance(text, str) else list(text)
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


@torch.no_grad()
def perplexity(
    model: TransformerBridge,
    prompt_ids: Sequence[Sequence[int]],
    continuation_ids: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
) -> list[float]:
    """exp(mean NLL) of each continuation given its prompt, under the unsteered model.

    Steering hooks active on the model are paused. An empty continuation gives nan.
    """
    if len(prompt_ids) != len(continuation_ids):
        raise SteeringError("perplexity needs one prompt per continuation")
    tok = model.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    device = model_device(model)
    tracker = tracker_for(model)
    out: list[float] = [math.nan] * len(prompt_ids)
    todo = [i for i, c in enumerate(continuation_ids) if len(c) > 0]
    was = tracker.enabled
    tracker.enabled = False
    try:
        for s in range(0, len(todo), batch_size):
            idx = todo[s : s + batch_size]
            rows = [list(prompt_ids[i]) + list(continuation_ids[i]) for i in idx]
            T = max(len(r) for r in rows)
            ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), T), dtype=torch.long)
            for b, r in enumerate(rows):  # right padding: the loss positions stay aligned
                ids[b, : len(r)] = torch.tensor(r)
                mask[b, : len(r)] = 1
            ids, mask = ids.to(device), mask.to(device)
            logits = model.original_model(input_ids=ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # [B, T-1]
            for b, i in enumerate(idx):
                p, c = len(prompt_ids[i]), len(continuation_ids[i])
                out[i] = float(torch.exp(nll[b, p - 1 : p - 1 + c].mean()))
    finally:
        tracker.enabled = was
    return out
