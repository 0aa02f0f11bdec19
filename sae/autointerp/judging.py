"""Detection and fuzzing: how well a judge, given an explanation, tells activating contexts apart.

Detection (as delphi): the judge reads the explanation and one unmarked excerpt and says whether
the feature is active in it; positives are held-out activating windows, negatives windows of
other latents. Fuzzing: the judge reads an activating excerpt with tokens marked and says
whether the marks sit on the tokens the explanation describes; half the excerpts carry the true
marks, half as many marks on inactive tokens. Both report balanced accuracy (mean of the hit
rate on positives and on negatives, 0.5 = chance whatever the class balance).

Answers: a judge that can give probabilities (a local model) is read from the next token's
distribution over "Yes" and "No". A free-text answer is parsed (`parse_yes_no`) and one that says
neither, or both, is *unparsable*: it counts as wrong in the accuracy and is counted, never
dropped, so a judge that cannot follow the format scores at or below chance instead of being
scored on the few answers it managed.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from sae.autointerp.clients import Client
from sae.autointerp.excerpts import Messages

_YES = re.compile(r"\b(yes|true|active|correct)\b|^\s*1\b", re.IGNORECASE)
_NO = re.compile(r"\b(no|false|inactive|not active|incorrect)\b|^\s*0\b", re.IGNORECASE)


@dataclass
class Score:
    accuracy: float  # balanced accuracy, unparsable answers counted wrong
    auc: float | None  # ROC AUC of the yes-probabilities (judges that give them), else None
    n: int  # contexts judged
    n_unparsable: int
    hit_rate: float  # on positives
    reject_rate: float  # on negatives


def parse_yes_no(text: str) -> bool | None:
    """The judge's answer from its first line: True (yes), False (no), None (neither word: unparsable)."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    line = line.strip().strip("*`\"'.[]()").strip()
    yes, no = _YES.search(line), _NO.search(line)
    if yes and no:  # "No, it is not active" / "Yes, not ...": the answer comes first
        return yes.start() < no.start()
    if yes:
        return True
    if no:
        return False
    return None


def balanced_accuracy(labels: Sequence[bool], answers: Sequence[bool | None]) -> tuple[float, float, float]:
    """(balanced accuracy, hit rate on positives, reject rate on negatives); None answers are wrong."""
    if len(labels) != len(answers):
        raise ValueError(f"{len(labels)} labels but {len(answers)} answers")
    pos = [a is True for lab, a in zip(labels, answers, strict=True) if lab]
    neg = [a is False for lab, a in zip(labels, answers, strict=True) if not lab]
    if not pos or not neg:
        raise ValueError(f"balanced accuracy needs both classes; got {len(pos)} positives and {len(neg)} negatives")
    hit, rej = sum(pos) / len(pos), sum(neg) / len(neg)
    return (hit + rej) / 2, hit, rej


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """P(a random positive scores above a random negative), ties half (the Mann-Whitney U)."""
    pos = [s for lab, s in zip(labels, scores, strict=True) if lab]
    neg = [s for lab, s in zip(labels, scores, strict=True) if not lab]
    if not pos or not neg:
        raise ValueError("AUC needs both classes")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def judge(client: Client, prompts: list[Messages], calibrate: bool = True) -> tuple[list[bool | None], list[float] | None]:
    """Each prompt's answer (None = unparsable) and, where the client gives them, the yes-probabilities.

    With probabilities, `calibrate` answers Yes above the median probability of the batch rather
    than above 0.5. Why: a 135M judge says "Yes" to nearly every question, so its raw answers
    score 0.5 on every feature and hide what its probabilities do tell apart; each batch holds
    as many positives as negatives by construction, so the median is the unbiased cut.
    """
    probs = client.yes_probability(prompts)
    if probs is not None:
        cut = statistics.median(probs) if calibrate else 0.5
        return [p > cut for p in probs], probs
    return [parse_yes_no(client.generate(m, max_new_tokens=8)) for m in prompts], None


def judge_score(client: Client, prompts: list[Messages], labels: list[bool], calibrate: bool = True) -> Score:
    answers, probs = judge(client, prompts, calibrate)
    acc, hit, rej = balanced_accuracy(labels, answers)
    auc = roc_auc(labels, probs) if probs is not None else None
    return Score(acc, auc, len(prompts), sum(a is None for a in answers), hit, rej)
