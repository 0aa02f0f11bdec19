"""The drift guard's smoke set runs green in the locked environment (so it cannot rot unnoticed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "smoke.py"


@pytest.mark.slow
def test_smoke_set_passes_and_prints_every_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("saekit_smoke", SCRIPT)
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    assert smoke.main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for step in ("generate", "cache", "train", "clamp", "explorer"):
        assert f"| {step:<9} |" in out and "FAILED" not in out
    assert "cache on == off" in out and "text changed" in out
    assert (tmp_path / "features.sqlite").exists()
