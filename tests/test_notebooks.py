"""Every notebook in notebooks/ runs top to bottom (tiny settings) and is committed without outputs.

Notebooks read `SAEKIT_NOTEBOOK_FAST=1` to pick tiny sizes, and `SAEKIT_NOTEBOOK_OUT` for where
to write. `SAEKIT_NOTEBOOK_DATA` (optional) points them at another text source than the built-in
corpus.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count)
    ]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them before committing"


PUBLIC_IMPORT = re.compile(r"^\s*(import (sae|steering)$|from (sae|steering) import )")
PRIVATE_IMPORT = re.compile(r"^\s*(from|import) (sae|steering|app)\b")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_uses_the_installed_public_api(path: Path) -> None:
    """No sys.path edits, nothing from the explorer, and sae / steering only through their
    top-level exports (what `sae/__init__.py` and `steering/__init__.py` promise)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    bad = []
    for i, cell in enumerate(nb.cells):
        for line in cell.source.splitlines() if cell.cell_type == "code" else []:
            if "sys.path" in line or (PRIVATE_IMPORT.match(line) and not PUBLIC_IMPORT.match(line)):
                bad.append(f"cell {i}: {line.strip()}")
    assert not bad, f"{path.name}: " + "; ".join(bad)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    # The kernel is a subprocess: it inherits these.
    monkeypatch.setenv("SAEKIT_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("SAEKIT_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the installed package, as a user's kernel has it
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    try:
        client.execute()
    except CellExecutionError as e:  # the message names the cell and the traceback
        pytest.fail(f"{path.name} failed:\n{e}")
