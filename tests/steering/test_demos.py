"""The demo scripts run end to end (tiny settings, random-weight SAE: a smoke test of the wiring)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import sae as saelib
from tests.steering.conftest import make_sae

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def test_golden_gate_and_sycophancy_scripts(model, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(saelib, "load_model", lambda *a, **k: model)
    monkeypatch.syspath_prepend(str(SCRIPTS))  # the scripts import their shared `_experiment` module
    sae_dir = saelib.save_sae(make_sae("topk", seed=2), tmp_path / "sae")
    tiny = ["--unit", "abs", "--max-new-tokens", "2", "--no-png", "--candidates", "2", "--n-prompts", "1",
            "--score-prompts", "1", "--score-strength", "40", "--select", "2"]
    gg = runpy.run_path(str(SCRIPTS / "golden_gate.py"), run_name="demo")
    # Golden Gate with a given feature (the search path runs in the sycophancy script below).
    assert gg["main"](["--sae", str(sae_dir), "--feature", "5", "--strengths", "40", "--caa-scales", "--out",
                       str(tmp_path / "gg"),
                       *tiny]) == 0
    report = json.loads((tmp_path / "gg" / "report.json").read_text())
    assert report["features"] == [5] and {c["key"] for c in report["summary"]["conditions"]} == {"unsteered", "clamp|5|40"}
    assert "unsteered mention rate" in capsys.readouterr().out
    syc = runpy.run_path(str(SCRIPTS / "sycophancy.py"), run_name="demo")
    assert syc["main"](["--sae", str(sae_dir), "--strengths", "40", "--caa-scales", "2", "--out",
                        str(tmp_path / "syc"), *tiny]) == 0
    report = json.loads((tmp_path / "syc" / "report.json").read_text())
    assert len(report["candidates"]) == 2 and "output_score" in report["candidates"][0]
    assert all(0 <= c["steering_score"] <= 1 for c in report["candidates"])  # both tried by a steered generation
    keys = {c["key"] for c in report["summary"]["conditions"]}
    assert keys == {"unsteered", f"clamp|{report['features'][0]}|40", "caa||2"}
