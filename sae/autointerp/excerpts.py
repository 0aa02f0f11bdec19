"""What the explainer and the judge read: excerpts with marked tokens, and the three prompts.

Excerpts are the feature database's context windows (token strings as the explorer shows
them). Tokens are marked `<<like this>>`, runs of consecutive marked tokens as one span, as
delphi does; the leading space of a token stays outside the marks so that the words still read
as words. Prompts are chat messages (`[{"role", "content"}]`) so that one prompt serves a local
chat model and an OpenAI-compatible endpoint alike. They are deliberately short: the default
explainer is a 135M model, and long instructions only make it copy them back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

OPEN, CLOSE = "<<", ">>"
Messages = list[dict[str, str]]

# A prefix for the assistant turn of local models: it forces the answer's form (a phrase, not a
# chat reply). Endpoints cannot take a prefix; `clean_explanation` strips the same words there.
EXPLAIN_PREFIX = "The marked words are"

_EXPLAIN_SYSTEM = (
    "You label features of a language model. You see text excerpts; in each, the words where the "
    f"feature is active are marked {OPEN}like this{CLOSE}. Say in one short phrase (at most 12 words) what "
    "the marked words have in common: a word, a kind of word, a topic or a pattern. No preamble."
)
_DETECT_SYSTEM = (
    "You test an explanation of a language-model feature on a text excerpt. Answer Yes if the "
    "explanation says the feature is active in the excerpt, else No. One word: Yes or No."
)
_FUZZ_SYSTEM = (
    f"You test an explanation of a language-model feature. Some words of the excerpt are marked {OPEN}so{CLOSE}. "
    "Answer Yes if the marked words are what the explanation describes, else No. One word: Yes or No."
)


def _visible(token: str) -> str:
    """A token as plain text on one line (newlines and tabs would break the numbered list)."""
    return token.replace("\r", "").replace("\n", "\\n").replace("\t", " ")


def mark(tokens: Sequence[str], marked: Sequence[bool]) -> str:
    """The excerpt with each run of marked tokens wrapped in << >> (leading spaces kept outside)."""
    if len(tokens) != len(marked):
        raise ValueError(f"mark: {len(tokens)} tokens but {len(marked)} marks; pass one flag per token")
    out: list[str] = []
    run: list[str] = []
    for tok, on in zip(tokens, marked, strict=True):
        t = _visible(tok)
        if on:
            if not run:
                stripped = t.lstrip(" ")
                out.append(t[: len(t) - len(stripped)])
                t = stripped
            run.append(t)
            continue
        if run:
            out.append(OPEN + "".join(run) + CLOSE)
            run = []
        out.append(t)
    if run:
        out.append(OPEN + "".join(run) + CLOSE)
    return "".join(out).strip()


def plain(tokens: Sequence[str]) -> str:
    """The excerpt with nothing marked (what the detection judge sees)."""
    return "".join(_visible(t) for t in tokens).strip()


def explain_messages(excerpts: Sequence[str]) -> Messages:
    listing = "\n".join(f"{k + 1}. {e}" for k, e in enumerate(excerpts))
    return [
        {"role": "system", "content": _EXPLAIN_SYSTEM},
        {"role": "user", "content": f"Excerpts:\n{listing}\n\nWhat do the marked words have in common?"},
    ]


def detection_messages(explanation: str, excerpt: str) -> Messages:
    return [
        {"role": "system", "content": _DETECT_SYSTEM},
        {"role": "user", "content": f"Explanation: {explanation}\n\nExcerpt: {excerpt}\n\n"
                                    "Is the feature active in this excerpt?"},
    ]


def fuzzing_messages(explanation: str, marked_excerpt: str) -> Messages:
    return [
        {"role": "system", "content": _FUZZ_SYSTEM},
        {"role": "user", "content": f"Explanation: {explanation}\n\nExcerpt: {marked_excerpt}\n\n"
                                    "Are the marked words the ones the explanation describes?"},
    ]


_LEADS = re.compile(
    r"^\s*(\[?explanation\]?\s*:|answer\s*:|label\s*:|common theme\s*:|the marked words (are|have)|"
    r"the feature (is|fires on|detects)|they are)\s*",
    re.IGNORECASE,
)


def clean_explanation(raw: str, max_words: int = 20) -> str:
    """The explanation as one phrase: first sentence of the first line, lead-ins, marks and quotes removed.

    Short on purpose: the judge reads it in every prompt, and small explainers ramble after it.
    """
    lines = [ln.strip() for ln in raw.replace(OPEN, "").replace(CLOSE, "").splitlines() if ln.strip()]
    text = re.split(r"(?<=[.!?])\s", lines[0])[0] if lines else ""
    for _ in range(2):  # "Explanation: The marked words are ..." has two lead-ins
        text = _LEADS.sub("", text)
    text = text.strip(" \"'`*.:;,")
    words = text.split()
    if len(words) > max_words:
        text = " ".join(words[:max_words]) + " ..."
    return text
