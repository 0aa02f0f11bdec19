"""A second English text source that is offline everywhere: Python's own documentation.

    python scripts/make_python_docs_text.py --out runs/python_docs/python_docs.jsonl

The builtin corpus was written by a language model, and a corpus the model (or a model like it)
wrote itself flatters reconstruction. Every Python install carries human-written English prose
instead: the language reference's help topics (`pydoc_data.topics`, ~465k characters) and the
docstrings of the standard library's modules, classes and functions. This script writes them as
JSONL (`{"text": ..., "origin": ...}`), one record per topic or docstring, in a fixed order, so
the file is the same on every machine with the same Python version (the version is printed and
stored in the sidecar `.json`). Docstrings are read by parsing the sources (`ast`), not by
importing the modules, so nothing in the stdlib runs. Tests, IDLE, tkinter and lib2to3 are left
out (code samples and GUI strings rather than prose). Use it with `saekit cache --source FILE`
and `saekit eval SAE --cache ... --data FILE`.
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import pydoc_data.topics
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from sae import atomic_write_json, atomic_write_text

SKIPPED_PARTS = {"test", "tests", "idlelib", "tkinter", "lib2to3", "site-packages", "turtledemo", "__pycache__"}
MIN_DOCSTRING_CHARS = 200  # one-line docstrings are mostly restated names


def topic_records() -> Iterator[dict[str, str]]:
    for name in sorted(pydoc_data.topics.topics):
        yield {"text": pydoc_data.topics.topics[name].strip(), "origin": f"pydoc_data.topics:{name}"}


def _docstrings(tree: ast.Module) -> Iterator[tuple[str, str]]:
    module_doc = ast.get_docstring(tree)
    if module_doc:
        yield "", module_doc
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                yield node.name, doc


def docstring_records(stdlib: Path) -> Iterator[dict[str, str]]:
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib)
        if SKIPPED_PARTS & set(rel.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a few stdlib files are deliberately invalid (bad-syntax fixtures)
        for name, doc in _docstrings(tree):
            if len(doc) >= MIN_DOCSTRING_CHARS:
                yield {"text": doc.strip(), "origin": f"{rel.as_posix()}:{name}" if name else rel.as_posix()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/python_docs/python_docs.jsonl"))
    args = ap.parse_args(argv)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    records = list(topic_records()) + list(docstring_records(stdlib))
    if not records:
        raise SystemExit(f"no documentation found under {stdlib}; is this a full Python install?")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    n_chars = sum(len(r["text"]) for r in records)
    about = {"python": platform.python_version(), "stdlib": str(stdlib), "records": len(records), "characters": n_chars}
    atomic_write_json(args.out.with_suffix(".json"), about)
    print(f"{args.out}: {len(records):,} records, {n_chars:,} characters (Python {about['python']})")


if __name__ == "__main__":
    main()
