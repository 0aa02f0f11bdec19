"""Concepts to steer towards, and the prompt sets a steering benchmark tunes and evaluates on.

A `Concept` bundles what every method needs: keywords that score a reply's mentions, a neutral
description (whose log-probability given the reply is the second concept score), the prompting
baseline's instruction, and contrastive sentence sets for finding a feature / a CAA vector.

Three disjoint prompt sets keep choice and measurement apart (issue 14):

* `SELECTION_PROMPTS` — choose the feature and the strength;
* `EVALUATION_PROMPTS` — held-out prompts the reported rates come from;
* `UNRELATED_QUESTIONS` — the foils of the relevance score (reply given its own question vs
  given an unrelated one).

None of them mentions any concept, so a mention in a reply is the steering's doing, and a
steered reply cannot look relevant to a foil just because the foil names its concept.

The texts live in `steering/data/concepts.jsonl` (one record per line, shipped by the package's
`data/*.jsonl` glob); Golden Gate reuses `steering.prompts`, so the existing Golden Gate
experiment and the benchmark search features on the same sentences.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steering import prompts as P

DATA: Path = Path(__file__).resolve().parent / "data" / "concepts.jsonl"

MIN_CONTRASTIVE = 12  # sentences per side: fewer makes the difference of means too noisy


class ConceptError(KeyError):
    """An unknown concept name (a KeyError, so `CONCEPTS[name]`-style callers keep working)."""

    def __str__(self) -> str:  # KeyError's repr-quoting would hide the list of known names
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Concept:
    """A topic to steer towards. `keywords` are regex patterns, matched case-insensitively as
    whole words; `positive` / `negative` are sentences about / not about it, alike in style."""

    name: str
    title: str
    keywords: tuple[str, ...]
    description: str
    instruction: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    # Compiled once: `mentions` scores thousands of replies in a benchmark run.
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.keywords:
            raise ValueError(f"concept {self.name!r} has no keywords")
        try:
            pat = re.compile("|".join(rf"\b(?:{k})\b" for k in self.keywords), re.IGNORECASE)
        except re.error as e:
            raise ValueError(f"concept {self.name!r}: bad keyword regex ({e})") from None
        object.__setattr__(self, "_pattern", pat)  # frozen: the one sanctioned write

    def mentions(self, text: str) -> bool:
        """True when any keyword occurs in `text` as a whole word, in any case."""
        return self._pattern.search(text) is not None


def _strings(rec: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = rec.get(key)
    if not isinstance(value, list) or not all(isinstance(s, str) and s.strip() for s in value):
        raise ValueError(f"{where}: {key!r} must be a list of non-empty strings")
    return tuple(value)


def _load(path: Path = DATA) -> tuple[dict[str, Concept], dict[str, tuple[str, ...]]]:
    """(concepts by name, prompt sets by name) from the data file."""
    concepts: dict[str, Concept] = {}
    prompt_sets: dict[str, tuple[str, ...]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            where = f"{path.name}:{lineno}"
            if rec.get("kind") == "concept":
                c = Concept(
                    name=rec["name"], title=rec["title"], keywords=_strings(rec, "keywords", where),
                    description=rec["description"], instruction=rec["instruction"],
                    positive=_strings(rec, "positive", where), negative=_strings(rec, "negative", where),
                )
                concepts[c.name] = c
            elif rec.get("kind") == "prompts":
                prompt_sets[rec["name"]] = _strings(rec, "prompts", where)
            else:
                raise ValueError(f"{where}: unknown record kind {rec.get('kind')!r}")
    return concepts, prompt_sets


# Golden Gate keeps the sentences of the existing experiment. Its keywords drop the bare
# "bridge(s)" of GOLDEN_GATE_KEYWORDS: the negatives are other bridges on purpose (Brooklyn,
# Tower, Rialto), so the feature search separates *this* bridge from bridges in general, and a
# scorer counting any bridge would call "bridge the gap" a Golden Gate mention.
GOLDEN_GATE = Concept(
    name="golden_gate",
    title="the Golden Gate Bridge",
    keywords=tuple(re.escape(k) for k in P.GOLDEN_GATE_KEYWORDS if "bridge" not in k),
    description="This text is about the Golden Gate Bridge in San Francisco.",
    instruction="Mention the Golden Gate Bridge in your answer.",
    positive=tuple(P.GOLDEN_GATE_POSITIVE),
    negative=tuple(P.GOLDEN_GATE_NEGATIVE),
)

_CONCEPTS, _PROMPTS = _load()

CONCEPTS: dict[str, Concept] = {"golden_gate": GOLDEN_GATE, **_CONCEPTS}

# The existing selection prompts come first, so the Golden Gate experiment's choices carry over.
SELECTION_PROMPTS: tuple[str, ...] = (*P.SELECTION_PROMPTS, *_PROMPTS["selection"])

# NEUTRAL_PROMPTS but for "What should I cook tonight?": it asks for the cooking concept, so a
# cooking mention there says nothing about steering.
_NOT_NEUTRAL = frozenset({"What should I cook tonight?"})
EVALUATION_PROMPTS: tuple[str, ...] = (
    *(p for p in P.NEUTRAL_PROMPTS if p not in _NOT_NEUTRAL),
    *_PROMPTS["evaluation"],
)

UNRELATED_QUESTIONS: tuple[str, ...] = _PROMPTS["unrelated"]


def get_concept(name: str) -> Concept:
    """The concept called `name`; an unknown name raises `ConceptError` listing the known ones."""
    try:
        return CONCEPTS[name]
    except KeyError:
        raise ConceptError(
            f"unknown concept {name!r}; known concepts: {', '.join(sorted(CONCEPTS))}"
        ) from None
