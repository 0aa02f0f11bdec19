"""The fluency gate: is a set of generations text at all?

Every place that asks "is this output fluent?" calls `judge`: the check on the unsteered
generations before a sweep (a broken install produces `I-----...` for every prompt), which
steered condition may be called the best, and which candidate feature survives selection.

Per generation (`measure`):
- words per token: whitespace words with a letter or digit, over model tokens. The embedded
  model's replies run 0.56-0.92; a run of dashes or CJK characters is one "word" spread over
  dozens of tokens;
- distinct-2 over model token ids, not whitespace words: `薦藅藛藗藛藛藛藛` is one word, so its
  word bigrams are all distinct, but its token bigrams repeat;
- repeat run: the longest stretch of tokens that copy the token p places back (p <= 8), i.e.
  the same token or short n-gram repeated in a row;
- foreign-script share: the share of letters written in a script the prompt does not use (a CJK
  run in an English reply), by the first word of each letter's Unicode name (LATIN, CJK, ...).

Over the set: each per-generation check may fail on at most `max_bad_share` of the
generations (a small model's greedy text loops on the odd prompt), and the median text
perplexity (the reply after an empty user turn, under the unsteered model) lies within
[min_text_ppl, max_text_ppl]: a loop is too predictable, gibberish too surprising.
"""

from __future__ import annotations

import math
import re
import statistics
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from sae import versions_line
from steering.interventions import SteeringError
from steering.scoring import distinct_n

_WORD = re.compile(r"[^\W_]", re.UNICODE)


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the gate. Measured on 80 unsteered replies of the embedded model (48 tokens;
    neutral prompts greedy and at temperature 1, selection prompts, sycophancy probes, praise
    turns): words per token >= 0.56, distinct-2 over tokens >= 0.64, repeat run <= 3, median text
    perplexity 3.9-7.2 greedy and 27 at temperature 1. Degenerate text: `I-----` 0.02 / 0.04 / 46,
    a CJK run 0.02 / 0.21 / 33, issue 14's loop 0.26 / 0.32 / 25, a sentence repeated 0.78 / 0.17
    / 34; perplexity cannot tell these apart (2.3-10), but word salad scores 270-2000."""

    min_words_per_token: float = 0.3
    min_distinct_2: float = 0.5
    max_repeat_run: int = 8
    max_bad_share: float = 0.2  # share of generations that may fail a per-generation check
    min_text_ppl: float = 1.5
    max_text_ppl: float = 100.0
    min_tokens: int = 4  # distinct-2 and repeat runs of shorter replies say nothing
    # Share of letters outside the prompt's scripts. Unsteered English replies score 0.0; one
    # quoted foreign word in a reply stays under 0.05, a CJK run scores up to 1.0.
    max_foreign_script_share: float = 0.05


@dataclass(frozen=True)
class SampleFluency:
    """What the gate measures on one generation."""

    n_tokens: int
    words: int
    distinct_2: float  # over token ids
    repeat_run: int
    text_perplexity: float | None = None
    foreign_script_share: float = 0.0  # letters outside the prompt's scripts (see `foreign_script_share`)

    @property
    def words_per_token(self) -> float:
        return self.words / self.n_tokens if self.n_tokens else 0.0


@dataclass
class Verdict:
    """The gate's answer for a set of generations: passed, each check's value, and why not."""

    passed: bool
    n: int
    values: dict[str, float | None] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    failing: list[int] = field(default_factory=list)  # generations that fail a per-generation check

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def explain(self) -> str:
        return "fluent" if self.passed else "; ".join(self.reasons)


def count_words(text: str) -> int:
    """Whitespace words holding a letter or digit; a word's digits count one word each, because the
    embedded tokenizer spells numbers one digit per token: "1000 - 357 = 753." is 10 words over
    its 13 tokens, not 3, and an arithmetic answer is text. The gate judges space-separated text
    (the toolkit's prompts are English): a run of CJK characters is one word over many tokens."""
    return sum(max(1, sum(c.isdigit() for c in w)) for w in text.split() if _WORD.search(w))


def repeat_run(ids: Sequence[int], max_period: int = 8) -> int:
    """The longest run of tokens each equal to the token p places back, over periods p <= max_period."""
    best = 0
    for p in range(1, max_period + 1):
        run = 0
        for i in range(p, len(ids)):
            run = run + 1 if ids[i] == ids[i - p] else 0
            best = max(best, run)
    return best


@lru_cache(maxsize=4096)
def script_of(ch: str) -> str:
    """A letter's script as the first word of its Unicode name (LATIN, CYRILLIC, CJK, HANGUL...):
    coarse, but needs no table and tells an English reply from a run of ideographs."""
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"


def scripts(text: str) -> set[str]:
    """The scripts of the letters in `text`."""
    return {script_of(ch) for ch in text if ch.isalpha()}


def foreign_script_share(text: str, prompt: str | None = None) -> float:
    """Share of the letters of `text` written in a script the prompt's letters do not use (0.0
    when `text` has no letters). Without a prompt, or one without letters, the allowed script is
    Latin: the toolkit's prompts are English."""
    allowed = scripts(prompt or "") or {"LATIN"}
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    return sum(script_of(ch) not in allowed for ch in letters) / len(letters)


def measure(text: str, ids: Sequence[int], text_perplexity: float | None = None, *,
            prompt: str | None = None) -> SampleFluency:
    """The gate's per-generation measures from the decoded text and its token ids; `prompt` (its
    text) sets the scripts a reply may use (default: Latin)."""
    ppl = None if text_perplexity is None or math.isnan(text_perplexity) else float(text_perplexity)
    return SampleFluency(n_tokens=len(ids), words=count_words(text), distinct_2=distinct_n(list(ids), 2),
                         repeat_run=repeat_run(ids), text_perplexity=ppl,
                         foreign_script_share=foreign_script_share(text, prompt))


def problems(s: SampleFluency, cfg: GateConfig) -> list[str]:
    """The per-generation checks this generation fails (empty: it reads as text)."""
    out = []
    if s.words == 0 or s.words_per_token < cfg.min_words_per_token:
        out.append("words_per_token")
    if s.n_tokens >= cfg.min_tokens:
        if s.distinct_2 < cfg.min_distinct_2:
            out.append("distinct_2")
        if s.repeat_run > cfg.max_repeat_run:
            out.append("repeat_run")
    if s.foreign_script_share > cfg.max_foreign_script_share:
        out.append("foreign_script_share")
    return out


def fluent(s: SampleFluency, cfg: GateConfig | None = None) -> bool:
    """One generation passes the per-generation checks (perplexity is judged over a set)."""
    return not problems(s, cfg or GateConfig())


_NEEDS = {
    "words_per_token": "have too few words ({v:.2f} words per token; fluent text >= {t})",
    "distinct_2": "repeat their token bigrams (distinct-2 over tokens {v:.2f}; needs >= {t})",
    "repeat_run": "repeat a token or short n-gram in a row ({v:.0f} tokens; at most {t})",
    "foreign_script_share": "switch script ({v:.0%} of letters outside the prompt's scripts; at most {t:.0%})",
}


def judge(samples: Sequence[SampleFluency], cfg: GateConfig | None = None) -> Verdict:
    """The gate's verdict on a set of generations (see the module docstring for the checks)."""
    cfg = cfg or GateConfig()
    if not samples:
        return Verdict(False, 0, {}, ["no generations to judge"])
    n = len(samples)
    fails = [problems(s, cfg) for s in samples]
    typical = {  # what the values record: the median, or the worst (longest run, most foreign)
        "words_per_token": statistics.median(s.words_per_token for s in samples),
        "distinct_2": statistics.median(s.distinct_2 for s in samples),
        "repeat_run": float(max(s.repeat_run for s in samples)),
        "foreign_script_share": max(s.foreign_script_share for s in samples),
    }
    worst = {  # what a reason quotes: the worst value among the generations that fail that check
        name: (min if name in ("words_per_token", "distinct_2") else max)(
            float(getattr(s, name)) for s, f in zip(samples, fails, strict=True) if name in f)
        for name in typical if any(name in f for f in fails)
    }
    limits = {"words_per_token": cfg.min_words_per_token, "distinct_2": cfg.min_distinct_2,
              "repeat_run": cfg.max_repeat_run, "foreign_script_share": cfg.max_foreign_script_share}
    values: dict[str, float | None] = {}
    reasons = []
    for name, v in typical.items():
        bad = sum(name in f for f in fails)
        values[name] = v
        values[f"{name}_bad_share"] = bad / n
        if bad / n > cfg.max_bad_share:
            reasons.append(f"{bad} of {n} generations " + _NEEDS[name].format(v=worst[name], t=limits[name]))
    ppls = [s.text_perplexity for s in samples if s.text_perplexity is not None]
    ppl = statistics.median(ppls) if ppls else None
    values["text_perplexity"] = ppl
    if ppl is not None and not cfg.min_text_ppl <= ppl <= cfg.max_text_ppl:
        kind = "too predictable: a loop" if ppl < cfg.min_text_ppl else "too surprising: not text"
        reasons.append(f"median text perplexity {ppl:.2f} is outside [{cfg.min_text_ppl}, {cfg.max_text_ppl}] ({kind})")
    return Verdict(not reasons, n, values, reasons, [i for i, f in enumerate(fails) if f])


class DegenerateTextError(SteeringError):
    """The unsteered model's text fails the fluency gate: the environment, not steering, is broken."""

    def __init__(self, message: str, verdict: Verdict) -> None:
        super().__init__(message)
        self.verdict = verdict


def require_fluent(verdict: Verdict, texts: Sequence[str], what: str, *, stale: str | None = None) -> None:
    """Raise `DegenerateTextError` unless `verdict` passed; the message names the installed
    versions and the fix, since degenerate unsteered text has so far always meant a library
    update that broke generation (e.g. transformers 5.24 and KV-cached decoding)."""
    if verdict.passed:
        return
    failing = [texts[i] for i in verdict.failing if i < len(texts)]
    sample = next((t for t in [*failing, *texts] if t.strip()), texts[0] if texts else "")
    where = f" ({stale}: delete it to generate them afresh)" if stale else ""
    raise DegenerateTextError(
        f"the {what} model's text is not fluent, so steering results on it would mean nothing: "
        f"{verdict.explain()}. Example: {sample[:80]!r}{where}. Installed: {versions_line()}. "
        "`scripts/install.sh` installs the locked, tested versions; re-run after it.",
        verdict,
    )
