"""Write one feature's explanation, and score it by detection and fuzzing."""

from __future__ import annotations

import random
from dataclasses import dataclass

from sae.autointerp import excerpts
from sae.autointerp.clients import Client
from sae.autointerp.judging import Score, judge_score
from sae.autointerp.samples import FeatureSamples, Window, fuzzed

FALLBACK = "(no explanation: the explainer's reply was empty)"


def explain(client: Client, windows: list[Window], max_new_tokens: int = 40) -> str:
    """One line saying what the marked tokens of `windows` have in common (never empty)."""
    if not windows:
        raise ValueError("explain needs at least one activating window; the feature has no stored examples")
    msgs = excerpts.explain_messages([excerpts.mark(w.tokens, w.active) for w in windows])
    prefix = excerpts.EXPLAIN_PREFIX if getattr(client, "takes_prefix", False) else ""
    raw = client.generate(msgs, max_new_tokens=max_new_tokens, prefix=prefix)
    # an empty reply is stored as such (and scores at chance), never silently replaced by examples
    return excerpts.clean_explanation(raw) or FALLBACK


@dataclass
class Scores:
    detection: Score
    fuzzing: Score


def score_explanation(judge: Client, explanation: str, samples: FeatureSamples, *, seed: int = 0,
                      calibrate: bool = True) -> Scores:
    """Detection on held-out positives vs negatives; fuzzing on the positives with true vs displaced marks."""
    if len(samples.positives) < 2 or not samples.negatives:
        raise ValueError(f"scoring needs >= 2 held-out activating and >= 1 other window; got "
                         f"{len(samples.positives)} and {len(samples.negatives)} (build the database with more "
                         "tokens, or a larger top_k / examples_per_interval)")
    det_windows = samples.positives + samples.negatives
    det = judge_score(judge, [excerpts.detection_messages(explanation, excerpts.plain(w.tokens)) for w in det_windows],
                [True] * len(samples.positives) + [False] * len(samples.negatives), calibrate)
    # every held-out window twice, truly and falsely marked: the judge cannot go by the text alone
    rng = random.Random(seed)
    true_marks = samples.positives
    false_marks = [fuzzed(w, rng) for w in samples.positives]
    fz_windows = true_marks + false_marks
    fuzz = judge_score(judge, [excerpts.fuzzing_messages(explanation, excerpts.mark(w.tokens, w.active)) for w in fz_windows],
                 [True] * len(true_marks) + [False] * len(false_marks), calibrate)
    return Scores(det, fuzz)
