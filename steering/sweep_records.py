"""A sweep's generations file: JSONL records appended as each condition finishes, read back on resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sae import append_text, atomic_write_text
from steering.fluency import measure

log = logging.getLogger(__name__)


def read_jsonl(path: Path) -> list[dict]:
    """Valid records of a JSONL file; a torn last line (a crash mid-write) is set aside."""
    if not path.exists():
        return []
    good, bad = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            good.append(json.loads(line))
        except json.JSONDecodeError:
            bad.append(line)
    if bad:
        backup = path.with_suffix(".jsonl.torn")
        atomic_write_text(backup, "\n".join(bad) + "\n")
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in good))
        log.warning("%d unreadable line(s) of %s moved to %s", len(bad), path, backup)
    return good


def append_records(jsonl: Path, records: list[dict[str, Any]]) -> None:
    append_text(jsonl, "".join(json.dumps(r) + "\n" for r in records))


def with_fluency(records: list[dict[str, Any]], tokenizer: Any) -> list[dict[str, Any]]:
    """Records written before the fluency gate existed get its measures from their text."""
    for r in records:
        if "repeat_run" not in r:
            ids = tokenizer.encode(r["text"], add_special_tokens=False)
            m = measure(r["text"], ids, r.get("text_perplexity"))
            r.update(n_tokens=m.n_tokens, words=m.words, distinct_2=m.distinct_2, repeat_run=m.repeat_run)
    return records
