"""Finalizing saekit's builtin corpus: part files -> filtered, deduplicated `.jsonl.zst`.

Used by `scripts/build_corpus.py --finalize-only` (and at the end of a generation run).
Samples cut off at max_new_tokens are trimmed to their last full sentence (or dropped when
little is left), degenerate ones (too short, loops, drift into other scripts, dialogues that
are not dialogues) are dropped, and near-duplicates are removed in corpus order.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import corpus_recipe as R

CHAT_STREAMS = ("qa", "feedback", "opinion")  # stored as {"messages": [...]}, the rest as {"text"}


class CorpusError(RuntimeError):
    """A corpus build that cannot go on (missing parts, a second generator, bad settings)."""


def read_part(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return json.loads(lines[0]), [json.loads(x) for x in lines[1:]]


@dataclass
class FilterConfig:
    min_words: int = 30  # shorter samples carry little context for an SAE
    trim_truncated: bool = True  # cut samples that hit max_new_tokens back to a sentence end
    min_keep_fraction: float = 0.5  # truncated samples trimmed below this fraction are dropped
    max_repeat_3gram: float = 0.30  # share of repeated word 3-grams: loops score far above prose
    max_line_repeats: int = 3  # the same (non-trivial) line this many times is a loop
    max_char_run: int = 30  # "!!!!!!!..." or "------..." runs
    max_foreign_letters: float = 0.15  # letters outside Latin scripts: the model drifted languages
    min_speaker_lines: int = 2  # "Name:" lines: dialogues must be dialogues
    min_faq_questions: int = 2
    prefix_chars: int = 200  # near-dup key: normalised start
    shingle_words: int = 6
    max_containment: float = 0.5  # near-dup: this share of shingles already seen in one doc


_SENT_END = re.compile(r"[.!?…][\"'”’)\]*]*(?=\s|$)")
_LIST_MARKER = re.compile(r"(^|\n)\s*\d{1,2}\.$")
_SPEAKER = re.compile(r"^\s*\**[A-Z][\w .'-]{0,30}\**\s*:", re.M)


def trim_to_sentence(text: str) -> str:
    """Cut a truncated sample after its last complete sentence (and out of any open code block)."""
    if text.count("```") % 2:
        text = text[: text.rfind("```")]
    for end in reversed(list(_SENT_END.finditer(text))):
        kept = text[: end.end()].rstrip()
        if not _LIST_MARKER.search(kept):  # "...\n3." is a list item's number, not a sentence
            return kept
    return ""


def degenerate_reason(text: str, fmt: str, cfg: FilterConfig) -> str | None:
    words = text.split()
    if len(words) < cfg.min_words:
        return "too_short"
    grams = list(zip(words, words[1:], words[2:], strict=False))
    if grams and 1 - len(set(grams)) / len(grams) > cfg.max_repeat_3gram:
        return "repetitive"
    lines = [ln.strip().lower() for ln in text.splitlines() if len(ln.strip()) >= 12]
    if lines and max(collections.Counter(lines).values()) >= cfg.max_line_repeats:
        return "repetitive"
    if re.search(rf"(\S)\1{{{cfg.max_char_run},}}", text):
        return "repetitive"
    letters = [c for c in text if c.isalpha()]
    if letters and sum(ord(c) > 0x24F for c in letters) / len(letters) > cfg.max_foreign_letters:
        return "foreign_script"
    if fmt == "dialogue" and len(_SPEAKER.findall(text)) < cfg.min_speaker_lines:
        return "malformed"
    if fmt == "faq" and len(re.findall(r"\bQ\s*\d*\s*[:.]", text)) < cfg.min_faq_questions:
        return "malformed"
    return None


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


class Deduper:
    """Exact duplicates (normalised hash) and near duplicates (shared start, or most shingles
    already seen in one earlier document). Documents are compared in corpus order."""

    def __init__(self, cfg: FilterConfig) -> None:
        self.cfg = cfg
        self.exact: set[str] = set()
        self.prefixes: set[str] = set()
        self.owner: dict[int, int] = {}  # shingle hash -> first doc that had it
        self.n = 0

    def check(self, text: str) -> str | None:
        """None if new (and remembered), else "exact_dup" / "near_dup"."""
        norm = _normalize(text)
        digest = hashlib.sha1(norm.encode()).hexdigest()
        if digest in self.exact:
            return "exact_dup"
        prefix = norm[: self.cfg.prefix_chars] if len(norm) >= self.cfg.prefix_chars else None
        if prefix is not None and prefix in self.prefixes:
            return "near_dup"
        w, k = norm.split(), self.cfg.shingle_words
        shingles = {hash(" ".join(w[i : i + k])) for i in range(max(1, len(w) - k + 1))}
        owners = collections.Counter(self.owner[s] for s in shingles if s in self.owner)
        if owners and owners.most_common(1)[0][1] >= self.cfg.max_containment * len(shingles):
            return "near_dup"
        self.exact.add(digest)
        if prefix is not None:
            self.prefixes.add(prefix)
        for s in shingles:
            self.owner.setdefault(s, self.n)
        self.n += 1
        return None


def build_record(row: dict[str, Any], cfg: FilterConfig) -> tuple[dict[str, Any] | None, str]:
    """A part row -> (corpus record, "kept") or (None, why it was dropped)."""
    job = row["job"]
    body = (job["prefill"] + row["completion"]).strip()
    if row["finish"] == "length" and cfg.trim_truncated:
        trimmed = trim_to_sentence(body)
        if len(trimmed) < cfg.min_keep_fraction * len(body):
            return None, "truncated"
        body = trimmed
    reason = degenerate_reason(body, job["format"], cfg)
    if reason:
        return None, reason
    meta = {k: job[k] for k in ("topic", "category", "format")}
    if job["stream"] not in CHAT_STREAMS:
        return {"text": body, **meta}, "kept"
    user = job["messages"][-1]  # the stance's system prompt steered the reply; it is not stored
    rec = {
        "messages": [dict(user), {"role": "assistant", "content": body}],
        **meta,
        "stance": job["stance"],
    }
    rec.update({k: job[k] for k in ("work", "claim", "truth") if k in job})
    return rec, "kept"


def finalize(parts: Path, out: Path, tok: Any, cfg: FilterConfig, run_info: dict[str, Any]) -> dict:
    import zstandard

    files = sorted(parts.glob("part-*.jsonl"))
    if not files:
        others = (
            sorted(p.name for p in parts.parent.glob("*") if p.is_dir())
            if parts.parent.exists()
            else []
        )
        raise CorpusError(
            f"no part files in {parts}: generate first (drop --finalize-only), or pass "
            f"--parts-dir / the same --seed, --batch-size, --max-new-tokens as the "
            f"generating run (other part dirs there: {others})"
        )
    dedup, dropped = Deduper(cfg), collections.Counter()
    records, gen_seconds, new_tokens = [], 0.0, 0
    for f in files:
        meta, rows = read_part(f)
        gen_seconds += meta["seconds"]
        new_tokens += meta["new_tokens"]
        for row in rows:
            rec, why = build_record(row, cfg)
            if rec is not None:
                why = (
                    dedup.check(rec["text"] if "text" in rec else rec["messages"][-1]["content"])
                    or why
                )
            if why != "kept":
                dropped[why] += 1
            else:
                records.append(rec)
    texts = [
        r["text"]
        if "text" in r
        else r["messages"][0]["content"] + "\n" + r["messages"][1]["content"]
        for r in records
    ]
    counts = [len(x) for x in tok(texts, add_special_tokens=False)["input_ids"]] if texts else []
    by: dict[str, dict[str, dict[str, int]]] = {k: {} for k in ("category", "format", "stance")}
    for rec, n in zip(records, counts, strict=True):
        for key in by:
            if key in rec:
                slot = by[key].setdefault(rec[key], {"docs": 0, "tokens": 0})
                slot["docs"] += 1
                slot["tokens"] += n
    buf = io.BytesIO()
    for rec in records:
        buf.write((json.dumps(rec, ensure_ascii=False) + "\n").encode())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(zstandard.ZstdCompressor(level=19).compress(buf.getvalue()))
    tmp.replace(out)
    stats = {
        "docs": len(records),
        "tokens": sum(counts),
        "bytes_compressed": out.stat().st_size,
        "batches": len(files),
        "generated_samples": len(records) + sum(dropped.values()),
        "dropped": dict(dropped.most_common()),
        "generation_seconds": round(gen_seconds, 1),
        "generated_new_tokens": new_tokens,
        "generation_tokens_per_s": round(new_tokens / max(gen_seconds, 1e-9), 1),
        **by,
        "filters": asdict(cfg),
        **run_info,
        "finalized_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out.parent / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    recipe = {**R.recipe_dict(), "run": run_info}
    (out.parent / "recipe.json").write_text(json.dumps(recipe, indent=2, ensure_ascii=False) + "\n")
    return stats
