"""The concept catalogue and its prompt sets: sizes, keyword sanity, disjointness (no model)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import pytest

import steering
from steering import concepts as C
from steering import prompts as P
from steering.concepts import (
    CONCEPTS,
    EVALUATION_PROMPTS,
    SELECTION_PROMPTS,
    UNRELATED_QUESTIONS,
    Concept,
    ConceptError,
    get_concept,
)

ROOT = Path(__file__).resolve().parents[2]
PROMPT_SETS = {"selection": SELECTION_PROMPTS, "evaluation": EVALUATION_PROMPTS,
               "unrelated": UNRELATED_QUESTIONS}


def test_catalogue_size_and_names():
    assert "golden_gate" in CONCEPTS and len(CONCEPTS) >= 11
    for name in ("cooking", "football", "ocean", "paris", "music", "programming", "space", "dogs",
                 "rain"):
        assert name in CONCEPTS
    for name, c in CONCEPTS.items():
        assert c.name == name
        assert c.title and c.description.endswith(".") and c.instruction.endswith(".")
        assert len(c.positive) >= 12 and len(c.negative) >= 12, name


def test_prompt_set_sizes():
    assert len(SELECTION_PROMPTS) >= 30
    assert len(EVALUATION_PROMPTS) >= 60
    assert len(UNRELATED_QUESTIONS) >= 20


@pytest.mark.parametrize("name", sorted(CONCEPTS))
def test_positives_mention_and_negatives_do_not(name: str):
    c = CONCEPTS[name]
    assert [s for s in c.positive if not c.mentions(s)] == []
    assert [s for s in c.negative if c.mentions(s)] == []
    assert not set(c.positive) & set(c.negative)


@pytest.mark.parametrize("which", sorted(PROMPT_SETS))
def test_prompts_mention_no_concept(which: str):
    hits = [(p, c.name) for p in PROMPT_SETS[which] for c in CONCEPTS.values() if c.mentions(p)]
    assert hits == []


def test_prompt_sets_are_disjoint_and_without_duplicates():
    for name, ps in PROMPT_SETS.items():
        assert len(set(ps)) == len(ps), name
    sel, ev, un = (set(PROMPT_SETS[k]) for k in ("selection", "evaluation", "unrelated"))
    assert not sel & ev and not sel & un and not ev & un


def test_reuses_the_existing_prompt_sets():
    assert set(P.SELECTION_PROMPTS) <= set(SELECTION_PROMPTS)
    assert set(P.NEUTRAL_PROMPTS) - set(EVALUATION_PROMPTS) == {"What should I cook tonight?"}
    gg = CONCEPTS["golden_gate"]
    assert gg.positive == tuple(P.GOLDEN_GATE_POSITIVE)
    assert gg.negative == tuple(P.GOLDEN_GATE_NEGATIVE)


def test_mentions_is_case_insensitive_and_whole_word():
    ocean, gg, rain = CONCEPTS["ocean"], CONCEPTS["golden_gate"], CONCEPTS["rain"]
    assert ocean.mentions("The OCEAN was calm.") and ocean.mentions("big waves")
    assert not ocean.mentions("She seasoned the soup.")  # "sea" inside a word
    assert gg.mentions("We drove over the golden gate.") and gg.mentions("San Francisco fog")
    assert not gg.mentions("Let us bridge the gap.")  # a bare bridge is not the Golden Gate
    assert rain.mentions("A rainy day.") and not rain.mentions("They trained hard.")


def test_get_concept():
    assert get_concept("paris") is CONCEPTS["paris"]
    with pytest.raises(ConceptError) as e:
        get_concept("chesss")
    msg = str(e.value)
    assert "chesss" in msg and "golden_gate" in msg and "cooking" in msg
    with pytest.raises(KeyError):  # callers catching KeyError keep working
        get_concept("nope")


def test_concept_rejects_bad_keywords():
    kw = dict(name="x", title="x", description="x.", instruction="x.", positive=(), negative=())
    with pytest.raises(ValueError, match="no keywords"):
        Concept(keywords=(), **kw)
    with pytest.raises(ValueError, match="bad keyword regex"):
        Concept(keywords=("(unclosed",), **kw)


def test_concepts_are_frozen_and_exported():
    with pytest.raises(AttributeError):
        CONCEPTS["dogs"].name = "cats"  # type: ignore[misc]
    assert steering.get_concept is get_concept and steering.CONCEPTS is CONCEPTS
    assert steering.Concept is Concept


def test_data_file_is_shipped():
    # The texts are package data: a wheel without them imports fine and then fails at load.
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    rel = C.DATA.relative_to(ROOT / "steering").as_posix()
    assert any(fnmatch.fnmatch(rel, g) for g in globs["steering"])
