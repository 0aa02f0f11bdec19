"""scripts/make_python_docs_text.py: the second text source is real prose, complete and the same every run (issue 15)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_python_docs_text.py"


def _load():
    spec = importlib.util.spec_from_file_location("make_python_docs_text", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_writes_topics_and_docstrings_deterministically(tmp_path) -> None:
    mod = _load()
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    mod.main(["--out", str(first)])
    mod.main(["--out", str(second)])
    assert first.read_bytes() == second.read_bytes()
    records = [json.loads(line) for line in first.read_text().splitlines()]
    origins = [r["origin"] for r in records]
    assert len(records) > 1000 and sum(len(r["text"]) for r in records) > 1_000_000
    assert any(o.startswith("pydoc_data.topics:") for o in origins)
    assert any(o.startswith("json/__init__.py") for o in origins)  # a stdlib module's docstring
    assert not any(o.startswith(("test/", "idlelib/", "tkinter/")) for o in origins)
    assert all(len(r["text"]) >= mod.MIN_DOCSTRING_CHARS for r in records if not r["origin"].startswith("pydoc_data"))
    about = json.loads(first.with_suffix(".json").read_text())
    assert about["records"] == len(records)
