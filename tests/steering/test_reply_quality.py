"""Reply scores that mean what they say: degenerate text scores 0, the model's own replies are
fluent and relevant, a concept is seen by mention and by the description's log-probability."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

import pytest

from steering import prompts as P
from steering.fluency import GateConfig, foreign_script_share, judge, measure, problems
from steering.generation import generate
from steering.interventions import Clamp, SteeringError
from steering.reply_quality import ReplyQuality, ScoreCache, harmonic_mean, score_replies
from steering.steer_hooks import steer
from tests.steering.conftest import make_sae


@dataclass(frozen=True)
class _Concept:
    """The two members of `steering.concepts.Concept` that scoring uses."""

    description: str
    pattern: str

    def mentions(self, text: str) -> bool:
        return re.search(self.pattern, text, re.IGNORECASE) is not None


GOLDEN_GATE = _Concept("the Golden Gate Bridge in San Francisco", r"golden gate")
QUESTIONS = ["What should I cook tonight?", "Write a short poem about the morning.",
             "Describe a perfect weekend.", "Give me an idea for a short story."]
UNRELATED = P.NEUTRAL_PROMPTS[10:14]  # none of QUESTIONS
_WORDS = ("apple river quickly seven honest lamp purple theory bicycle whisper granite elbow fiscal orbit "
          "tangerine verdict sleepy cobalt harvest jungle mirror notion pencil quartz ribbon saddle timber "
          "umbrella velvet walnut yeast zebra anchor blanket candle dolphin engine feather glacier hammer").split()
DEGENERATE = {  # issue 14's two samples, the transformers 5.24 dashes, a loop of a sentence, word salad
    "loop": "San Francisco, so.\n\nSan\n\nal-\n\nal-label\n\nal-label\n\nal-label\n\nal-label",
    "cjk": "薦藅藛藗藛藛藛藛藛藛藛藛藛藛藛藛",
    "dashes": "I-----------------------------",
    "sentence": "I like to walk in the park on sunny days. " * 6,
    "salad": " ".join(random.Random(0).choices(_WORDS, k=30)),
}


# ----------------------------------------------------------------------------- no model


def test_harmonic_mean() -> None:
    assert harmonic_mean([0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert harmonic_mean([1.0, 0.0, 1.0]) == 0.0
    assert harmonic_mean([1.0, 0.25]) == pytest.approx(0.4)  # pulled to the worst, unlike the mean 0.625
    for bad, needle in (([], "at least one"), ([0.5, 1.5], "in [0, 1]"), ([-0.1], "in [0, 1]"),
                        ([0.5, math.nan], "nan")):
        with pytest.raises(ValueError, match=re.escape(needle)):
            harmonic_mean(bad)


def test_foreign_script_share_is_relative_to_the_prompt() -> None:
    cjk = DEGENERATE["cjk"]
    assert foreign_script_share(cjk, "Tell me about yourself.") == 1.0
    assert foreign_script_share(cjk) == 1.0  # no prompt: Latin expected
    assert foreign_script_share(cjk, "给我讲个故事") == 0.0  # a Chinese prompt allows it
    assert foreign_script_share("Café, naïve, Zürich: 42!", "Hi") == 0.0  # accents are Latin
    assert foreign_script_share("abcd薦", "Hi") == pytest.approx(0.2)
    assert foreign_script_share("--- 42 ---", "Hi") == 0.0  # no letters


def test_gate_fails_a_reply_that_switches_script(tokenizer) -> None:
    text = "The morning is bright and calm, and the birds sing. 早上好，今天天气很好，我们去公园散步吧。"
    ids = tokenizer.encode(text, add_special_tokens=False)
    s = measure(text, ids, prompt="Describe the morning.")
    assert s.foreign_script_share > 0.2 and "foreign_script_share" in problems(s, GateConfig())
    v = judge([s] * 3)
    assert not v.passed and any("switch script" in r for r in v.reasons), v.reasons
    both = measure(text, ids, prompt="Describe the morning (早晨).")  # the prompt uses both scripts
    assert both.foreign_script_share == 0.0 and "foreign_script_share" not in problems(both, GateConfig())
    assert "foreign_script_share" not in problems(s, GateConfig(max_foreign_script_share=0.5))


# ----------------------------------------------------------------------------- the embedded model


def _check_ranges(q: ReplyQuality) -> None:
    for name in ("fluency", "relevance", "combined"):
        assert 0.0 <= getattr(q, name) <= 1.0, (name, q)


@pytest.mark.slow
def test_known_degenerate_samples_fail(model) -> None:
    texts = list(DEGENERATE.values())
    scores = score_replies(model, ["Tell me about yourself."] * len(texts), texts, None,
                           unrelated=UNRELATED[:1])
    for name, q in zip(DEGENERATE, scores, strict=True):
        _check_ranges(q)
        assert q.degenerate and q.reasons and q.fluency == 0.0 and q.combined == 0.0, (name, q)
    assert "foreign_script_share" in scores[1].reasons and scores[1].foreign_script_share == 1.0
    assert "text_perplexity" in scores[4].reasons  # word salad passes every other check
    tok = model.tokenizer
    samples = [measure(t, tok.encode(t, add_special_tokens=False), q.text_perplexity)
               for t, q in zip(texts, scores, strict=True)]
    assert not judge(samples).passed
    assert not judge(samples[:4]).passed  # without the salad: the per-sample checks alone


@pytest.mark.slow
def test_scoring_is_unsteered_inside_a_steering_context(model) -> None:
    reply = "You could make a simple pasta with garlic, olive oil and fresh tomatoes."
    args = (model, QUESTIONS[:1], [reply], GOLDEN_GATE)
    plain = score_replies(*args, unrelated=UNRELATED[:1])
    with steer(model, make_sae(), {0: Clamp(50.0)}):
        inside = score_replies(*args, unrelated=UNRELATED[:1])
    assert inside == plain


@pytest.mark.slow
def test_concept_mention_and_logprob_gain(model) -> None:
    about = ("I love to visit San Francisco and walk across the Golden Gate Bridge, watching the fog "
             "roll in over the bay.")
    other = "To make a simple pasta, boil water, cook the spaghetti and toss it with garlic and olive oil."
    hit, miss = score_replies(model, ["Tell me something interesting."] * 2, [about, other], GOLDEN_GATE,
                              unrelated=UNRELATED[:2])
    assert hit.concept_hit and not miss.concept_hit
    assert hit.concept_logprob_gain > miss.concept_logprob_gain + 0.5, (hit, miss)
    assert hit.concept == 1.0 and miss.concept < 0.5
    (none,) = score_replies(model, ["Tell me something interesting."], [about], None, unrelated=UNRELATED[:1])
    assert not none.concept_hit and math.isnan(none.concept_logprob_gain) and math.isnan(none.concept)
    assert none.combined == pytest.approx(harmonic_mean([none.fluency, none.relevance]))


@pytest.mark.slow
def test_a_score_cache_scores_each_reply_once(model, monkeypatch) -> None:
    import steering.reply_quality as rq

    replies = ["You could roast vegetables with olive oil and rosemary.", "A poem: the sun climbs slowly."]
    args = (model, QUESTIONS[:2], replies, GOLDEN_GATE)
    plain = score_replies(*args, unrelated=UNRELATED[:2])
    cache = ScoreCache()
    first = score_replies(*args, unrelated=UNRELATED[:2], cache=cache)
    assert len(cache.relevance) == len(cache.perplexity) == len(cache.concept_gain) == 2
    for a, b in zip(plain, first, strict=True):
        assert b.combined == pytest.approx(a.combined, abs=1e-4)
        assert b.text_perplexity == pytest.approx(a.text_perplexity, rel=1e-4)
    rows: list[int] = []
    inner = rq.perplexity
    monkeypatch.setattr(rq, "perplexity", lambda m, c, x, **k: rows.append(len(x)) or inner(m, c, x, **k))
    again = score_replies(*args, unrelated=UNRELATED[:2], cache=cache)
    assert again == first and rows == []  # every measure came from the cache
    # A repeated reply under a new question: only its relevance is computed (3 rows: own + 2
    # unrelated); a new concept: only the description's gain (the neutral reference + 1 reply).
    score_replies(model, [QUESTIONS[2]], replies[:1], GOLDEN_GATE, unrelated=UNRELATED[:2], cache=cache)
    assert rows == [3]
    other = _Concept("cooking food in a kitchen", r"cook")
    score_replies(model, QUESTIONS[:1], replies[:1], other, unrelated=UNRELATED[:2], cache=cache)
    assert rows == [3, 2]


def test_input_errors_name_the_fix(model) -> None:
    with pytest.raises(SteeringError, match="one question per reply"):
        score_replies(model, ["a", "b"], ["x"], None, unrelated=["c"])
    with pytest.raises(SteeringError, match="needs `unrelated`"):
        score_replies(model, ["a"], ["x"], None, unrelated=[])
    with pytest.raises(SteeringError, match="differ from it"):
        score_replies(model, ["a"], ["x"], None, unrelated=["a "])
    with pytest.raises(SteeringError, match="wrap a single one"):
        score_replies(model, "a", "x", None, unrelated=["c"])


@pytest.fixture(scope="module")
def own_replies(model) -> list[str]:
    gens = generate(model, QUESTIONS, None, compare=False, max_new_tokens=40)
    return [g.steered for g in gens]


@pytest.mark.slow
def test_the_models_own_replies_are_fluent_and_relevant(model, own_replies) -> None:
    scores = score_replies(model, QUESTIONS, own_replies, None, unrelated=UNRELATED)
    for r, q in zip(own_replies, scores, strict=True):
        _check_ranges(q)
        assert not q.degenerate and q.fluency > 0.5, (r, q)
        assert q.relevance_logratio > 0 and q.relevance > 0.3, (r, q)
    tok = model.tokenizer
    samples = [measure(r, tok.encode(r, add_special_tokens=False), q.text_perplexity, prompt=qu)
               for r, q, qu in zip(own_replies, scores, QUESTIONS, strict=True)]
    assert judge(samples).passed
    # The same replies, each paired with another reply's question: less likely given it.
    wrong = score_replies(model, QUESTIONS[1:] + QUESTIONS[:1], own_replies, None, unrelated=UNRELATED)
    for right, w in zip(scores, wrong, strict=True):
        assert w.relevance_logratio < right.relevance_logratio and w.relevance <= right.relevance
