"""The fluency gate: degenerate text fails it (by the check that should see it), real text passes."""

from __future__ import annotations

import pytest

from steering import prompts as P
from steering.fluency import (
    DegenerateTextError,
    GateConfig,
    SampleFluency,
    count_words,
    fluent,
    judge,
    measure,
    repeat_run,
    require_fluent,
)
from steering.generation import generate
from steering.rendering import render
from steering.scoring import distinct_n, perplexity

# The samples of issue 14: a CJK run that whitespace distinct-2 scored 0.955, and a loop.
CJK = "薦藅藛藗藛藛藛藛" + "藛" * 12 + "藗藛藛藛藛藛藛藛藛"
LOOP = "San Francisco, so.\n\nSan\n\nal-\n\nal-label\n\nal-label\n\nal-label\n\nal-label\n\nal-label\n\nal-label"
GOOD = "The weather today is sunny, with a light breeze from the west and a few clouds."


def _sample(tokenizer, text: str) -> SampleFluency:
    return measure(text, tokenizer.encode(text, add_special_tokens=False))


def _dashes(tokenizer) -> SampleFluency:
    """`I` and 47 dash tokens: what KV-cached decoding gave under transformers 5.24 (the text
    alone would re-encode into three tokens: long dash runs are single tokens)."""
    ids = tokenizer.encode("I", add_special_tokens=False) + tokenizer.encode("-", add_special_tokens=False) * 47
    return measure(tokenizer.decode(ids), ids)


def test_per_generation_measures() -> None:
    assert repeat_run([1, 2, 3, 4]) == 0
    assert repeat_run([7] * 10) == 9  # each token after the first copies the one before
    assert repeat_run([1, 2, 3] * 4 + [9]) == 9  # a trigram four times: 9 tokens copy 3 back
    assert count_words("Hello, world -- 42 !") == 4  # a digit is a word: one token each
    assert count_words("1000 - 357 = 753.") == 10
    assert count_words("I" + "-" * 47) == 1 and count_words(CJK) == 1
    assert distinct_n(CJK, 2) == 1.0  # the whitespace view, which the gate does not use


@pytest.mark.parametrize(("case", "check"), [("dashes", "words per token"), ("cjk", "words per token"),
                                             ("cjk", "in a row"), ("loop", "in a row"),
                                             ("sentence", "token bigrams"), ("sentence", "in a row")])
def test_gate_rejects_degenerate_text(tokenizer, case: str, check: str) -> None:
    texts = {"cjk": CJK, "loop": LOOP, "sentence": "The bridge is red. " * 8}
    sample = _dashes(tokenizer) if case == "dashes" else _sample(tokenizer, texts[case])
    assert not fluent(sample)
    v = judge([sample] * 4)
    assert not v.passed and v.n == 4
    assert any(check in r for r in v.reasons), v.reasons


def test_gate_tolerates_a_few_bad_generations_not_more(tokenizer) -> None:
    good, bad = _sample(tokenizer, GOOD), _dashes(tokenizer)
    assert fluent(good) and judge([good] * 4).passed
    assert judge([good] * 4 + [bad]).passed  # a fifth may loop (max_bad_share 0.2)
    v = judge([good] * 3 + [bad] * 2)
    assert not v.passed and v.values["words_per_token_bad_share"] == 0.4
    assert judge([good, bad], GateConfig(max_bad_share=0.5)).passed  # thresholds are settings


def test_gate_bounds_text_perplexity() -> None:
    fine = measure("a b c d e f", [1, 2, 3, 4, 5, 6])
    ppl = lambda x: measure("a b c d e f", [1, 2, 3, 4, 5, 6], x)  # noqa: E731
    assert judge([fine]).passed and judge([fine]).values["text_perplexity"] is None  # not measured: not judged
    assert judge([ppl(3.0)]).passed
    assert "too predictable" in judge([ppl(1.05)]).explain()
    assert "too surprising" in judge([ppl(500.0)]).explain()
    assert not judge([]).passed


def test_error_names_versions_and_the_fix(tokenizer) -> None:
    v = judge([_dashes(tokenizer)] * 3)
    with pytest.raises(DegenerateTextError) as e:
        require_fluent(v, ["I" + "-" * 47] * 3, "unsteered", stale="3 of them read back from g.jsonl")
    msg = str(e.value)
    for needle in ("torch ", "transformers ", "transformer-lens ", "scripts/install.sh", "I---", "delete it"):
        assert needle in msg
    assert e.value.verdict is v
    require_fluent(judge([_sample(tokenizer, GOOD)]), [GOOD], "unsteered")  # fluent: no error


@pytest.mark.slow
def test_gate_accepts_the_embedded_models_unsteered_text(model) -> None:
    """Greedy unsteered replies of the embedded model, generated and measured as a sweep does."""
    gens = generate(model, P.NEUTRAL_PROMPTS[:6] + P.SYCOPHANCY_PROBES[:2], None, compare=False, max_new_tokens=32)
    empty = render(model.tokenizer, "", chat=True)
    ppl = perplexity(model, [empty] * len(gens), [g.steered_ids for g in gens])
    v = judge([measure(g.steered, g.steered_ids, p) for g, p in zip(gens, ppl, strict=True)])
    assert v.passed, (v.reasons, [g.steered for g in gens])
    assert v.values["words_per_token"] > 0.5 and v.values["text_perplexity"] > GateConfig().min_text_ppl
