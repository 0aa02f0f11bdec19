"""Per-reply scores of concept, fluency and instruction relevance, combined AxBench style.

Every log-probability is read from the UNSTEERED model: `scoring.perplexity` pauses the steering
hooks of `steering.steer` while it runs, so scoring inside a steering context is safe. Forward
hooks the caller added by other means (`model.hooks(...)`) are not paused; remove them first.

Per reply (`score_replies`):
- concept: `concept.mentions(reply)` and, separately, the description's log-probability gain:
  mean log p(" " + description | BOS + reply + "\\n\\nThis text is about") minus the same after
  `NEUTRAL_REFERENCE` instead of the reply, per description token. The score is 1.0 on a mention,
  else 1 - exp(-max(gain, 0) / CONCEPT_SCALE): with scale 1 nat, 1 - 1/(per-token likelihood
  ratio), so a description twice as likely per token scores 0.5 and an unlikelier one 0;
- fluency: 0.0 when the reply is degenerate (fails a per-sample check of the fluency gate, or its
  text perplexity lies outside the gate's [min_text_ppl, max_text_ppl]), else 1.0 up to
  FLUENT_PPL and falling linearly in log perplexity to 0.0 at the gate's max_text_ppl;
- relevance: the mean per-token log p(reply | its question) minus the same given each unrelated
  question, averaged over those; the score is 1 - exp(-max(logratio, 0) / RELEVANCE_SCALE);
- combined: the harmonic mean of concept, fluency and relevance (of fluency and relevance when no
  concept is given), so any score of 0 makes it 0.

Scales measured on 10 greedy unsteered replies (48 tokens) of the embedded model to neutral
prompts: text perplexity 2.6-7.1, relevance log-ratio 0.33-1.10 (median 0.78; the same replies
given a wrong question -0.63-0.27); a concept description gains 0.9-3.1 nats per token after a
reply about it, at most 0.35 after other replies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from steering.fluency import GateConfig, measure, problems
from steering.interventions import SteeringError
from steering.rendering import render
from steering.scoring import perplexity

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

NEUTRAL_REFERENCE = "That is a good question. Here is what I think about it."
ABOUT = "\n\nThis text is about"  # the description continues this, after the reply
CONCEPT_SCALE = 1.0  # nats per token: 1 - 1/likelihood ratio
RELEVANCE_SCALE = 0.3  # nats per token: unsteered median 0.78 -> 0.93, 0.3 -> 0.63
FLUENT_PPL = 10.0  # unsteered greedy replies read 2.6-7.1


class ConceptLike(Protocol):
    """What scoring needs of a concept (`steering.concepts.Concept` has both)."""

    description: str

    def mentions(self, text: str) -> bool: ...


@dataclass(frozen=True)
class ReplyQuality:
    """One reply's scores (see the module docstring for each definition)."""

    concept_hit: bool
    concept_logprob_gain: float  # nats per description token; nan without a concept
    concept: float  # 0..1; nan without a concept
    fluency: float  # 0..1
    relevance: float  # 0..1
    relevance_logratio: float  # nats per reply token; nan for an empty reply
    text_perplexity: float
    foreign_script_share: float
    degenerate: bool
    reasons: tuple[str, ...]  # the checks a degenerate reply fails
    combined: float  # 0..1


@dataclass
class ScoreCache:
    """Raw measures already computed, so that identical replies are scored once: the unsteered
    replies recur under every concept, the prompted ones under every SAE. Keyed by the texts the
    measure depends on; pass one instance to every `score_replies` call of a run."""

    relevance: dict[tuple[str, str, tuple[str, ...]], float] = field(default_factory=dict)
    perplexity: dict[str, float] = field(default_factory=dict)
    concept_gain: dict[tuple[str, str], float] = field(default_factory=dict)


def _fill(store: dict, keys: list[Hashable], compute: Callable[[list[int]], list[float]]) -> list[float]:
    """`store[k]` for each key, computing (for the first row of each missing key) only what is missing."""
    first: dict[Hashable, int] = {}
    for i, k in enumerate(keys):
        if k not in store:
            first.setdefault(k, i)
    if first:
        for k, v in zip(first, compute(list(first.values())), strict=True):
            store[k] = v
    return [store[k] for k in keys]


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean of scores in [0, 1]; 0.0 if any is 0 (a reply is as good as its worst score)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("harmonic_mean needs at least one value")
    bad = [v for v in vals if math.isnan(v) or not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"harmonic_mean takes scores in [0, 1], got {bad}; map raw measures to [0, 1] first "
                         "(and leave a missing score out rather than passing nan)")
    if min(vals) == 0.0:
        return 0.0
    return len(vals) / sum(1.0 / v for v in vals)


def _mean_logprobs(model: TransformerBridge, contexts: list[list[int]], conts: list[list[int]],
                   batch_size: int) -> list[float]:
    """Mean per-token log p(continuation | context) for each row (nan for an empty continuation),
    from `scoring.perplexity`. Rows go in by length so that each batch pads little."""
    order = sorted(range(len(conts)), key=lambda i: len(contexts[i]) + len(conts[i]))
    ppl = perplexity(model, [contexts[i] for i in order], [conts[i] for i in order], batch_size=batch_size)
    out = [math.nan] * len(conts)
    for i, p in zip(order, ppl, strict=True):
        out[i] = -math.log(p) if p == p else math.nan
    return out


def _relevance_logratios(model: TransformerBridge, questions: Sequence[str], reply_ids: list[list[int]],
                         unrelated: Sequence[str], batch_size: int) -> list[float]:
    """Mean log p(reply | its question) minus its mean over the unrelated questions (the reply's
    own question, if among them, left out)."""
    tok = model.tokenizer
    rendered = {q: render(tok, q, chat=True) for q in {*questions, *unrelated}}
    contexts, conts, owners = [], [], []  # owners[k]: (reply index, is its own question)
    for i, (q, ids) in enumerate(zip(questions, reply_ids, strict=True)):
        others = [u for u in unrelated if u.strip() != q.strip()]
        if not others:
            raise SteeringError(f"question {i} ({q[:40]!r}) has no unrelated question to compare with; "
                                "pass `unrelated` questions that differ from it")
        for k, u in enumerate([q, *others]):
            contexts.append(rendered[u])
            conts.append(ids)
            owners.append((i, k == 0))
    lps = _mean_logprobs(model, contexts, conts, batch_size)
    own = [math.nan] * len(questions)
    rest: list[list[float]] = [[] for _ in questions]
    for (i, is_own), lp in zip(owners, lps, strict=True):
        if is_own:
            own[i] = lp
        else:
            rest[i].append(lp)
    return [o - sum(r) / len(r) for o, r in zip(own, rest, strict=True)]


def _concept_gains(model: TransformerBridge, replies: Sequence[str], description: str,
                   batch_size: int) -> list[float]:
    """Mean log p(description | reply + ABOUT) minus the same after NEUTRAL_REFERENCE."""
    tok = model.tokenizer
    desc = tok.encode(" " + description.strip(), add_special_tokens=False)
    if not desc:
        raise SteeringError("the concept's description is empty; give it a few words, e.g. 'the Golden Gate Bridge'")
    texts = [NEUTRAL_REFERENCE, *(r.strip() for r in replies)]
    lps = _mean_logprobs(model, [render(tok, t + ABOUT, chat=False) for t in texts], [desc] * len(texts),
                         batch_size)
    return [lp - lps[0] for lp in lps[1:]]


def _fluency_score(ppl: float, degenerate: bool, cfg: GateConfig) -> float:
    if degenerate:
        return 0.0
    if ppl <= FLUENT_PPL:
        return 1.0
    return max(0.0, 1.0 - math.log(ppl / FLUENT_PPL) / math.log(cfg.max_text_ppl / FLUENT_PPL))


def _squash(x: float, scale: float) -> float:
    """0 for x <= 0 (or nan), rising to 1: 1 - exp(-x / scale)."""
    return 0.0 if not x > 0 else 1.0 - math.exp(-x / scale)


def _degenerate_reasons(text: str, ids: list[int], ppl: float, question: str, cfg: GateConfig
                        ) -> tuple[list[str], float]:
    """The gate's per-sample checks, plus the text perplexity bounds that the gate applies to a
    set's median: word salad passes every other check (returns reasons, foreign-script share)."""
    if not ids:
        return ["empty"], 0.0
    sample = measure(text, ids, ppl, prompt=question)
    reasons = problems(sample, cfg)
    if not cfg.min_text_ppl <= ppl <= cfg.max_text_ppl:  # nan fails too
        reasons.append("text_perplexity")
    return reasons, sample.foreign_script_share


def score_replies(model: TransformerBridge, questions: Sequence[str], replies: Sequence[str],
                  concept: ConceptLike | None, *, unrelated: Sequence[str], batch_size: int = 8,
                  gate: GateConfig | None = None, cache: ScoreCache | None = None) -> list[ReplyQuality]:
    """Score each reply to its question (a user turn, chat-templated) under the unsteered model.

    `unrelated`: questions the replies do not answer (relevance compares against them);
    `concept`: has `.mentions(text)` and `.description`, or None (concept scores nan, combined
    over fluency and relevance); `gate`: the fluency gate's thresholds (default `GateConfig()`);
    `cache`: raw measures of earlier calls, reused for identical (question, reply) pairs.
    """
    if isinstance(questions, str) or isinstance(replies, str):
        raise SteeringError("score_replies takes lists of questions and replies; wrap a single one in a list")
    if len(questions) != len(replies):
        raise SteeringError(f"score_replies needs one question per reply, got {len(questions)} and {len(replies)}")
    if not unrelated:
        raise SteeringError("score_replies needs `unrelated` questions to measure relevance against")
    if batch_size < 1:
        raise SteeringError(f"batch_size must be >= 1, got {batch_size}")
    if not replies:
        return []
    cfg = gate or GateConfig()
    tok = model.tokenizer
    cache = cache if cache is not None else ScoreCache()
    reply_ids = [tok.encode(r, add_special_tokens=False) for r in replies]
    empty = render(tok, "", chat=True)  # text perplexity: the reply after an empty user turn, as the gate
    unrel = tuple(unrelated)
    logratios = _fill(cache.relevance, [(q, r, unrel) for q, r in zip(questions, replies, strict=True)],
                      lambda idx: _relevance_logratios(model, [questions[i] for i in idx], [reply_ids[i] for i in idx],
                                                       unrelated, batch_size))
    ppls = _fill(cache.perplexity, list(replies),
                 lambda idx: perplexity(model, [empty] * len(idx), [reply_ids[i] for i in idx], batch_size=batch_size))
    gains = (_fill(cache.concept_gain, [(concept.description, r) for r in replies],
                   lambda idx: _concept_gains(model, [replies[i] for i in idx], concept.description, batch_size))
             if concept is not None else [math.nan] * len(replies))
    out = []
    for i, (q, r) in enumerate(zip(questions, replies, strict=True)):
        reasons, foreign = _degenerate_reasons(r, reply_ids[i], ppls[i], q, cfg)
        hit = bool(concept.mentions(r)) if concept is not None else False
        c = (1.0 if hit else _squash(gains[i], CONCEPT_SCALE)) if concept is not None else math.nan
        f = _fluency_score(ppls[i], bool(reasons), cfg)
        rel = _squash(logratios[i], RELEVANCE_SCALE)
        out.append(ReplyQuality(
            concept_hit=hit, concept_logprob_gain=gains[i], concept=c, fluency=f, relevance=rel,
            relevance_logratio=logratios[i], text_perplexity=ppls[i], foreign_script_share=foreign,
            degenerate=bool(reasons), reasons=tuple(reasons),
            combined=harmonic_mean([f, rel] if concept is None else [c, f, rel]),
        ))
    return out
