"""`saekit demo --fast` end to end (with the sizes shrunk further), and its resumability."""

from __future__ import annotations

import json

import pytest

from app.cli import main

pytestmark = pytest.mark.slow

ARGS = ["--fast", "--layer", "6", "--cache-tokens", "6000", "--train-tokens", "30000", "--d-sae", "512",
        "--k", "16", "--analyze-tokens", "3000", "--prompts", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--out", str(out), *ARGS]) == 0
    return out


def test_every_artifact_is_written(run_dir):
    assert (run_dir / "acts" / "manifest.json").exists()
    assert (run_dir / "sae" / "sae_weights.safetensors").exists()
    cfg = json.loads((run_dir / "sae" / "cfg.json").read_text())
    assert cfg["d_sae"] == 512
    ev = json.loads((run_dir / "eval.json").read_text())
    assert 0 < ev["reconstruction"]["fvu"] < 1
    assert (run_dir / "features.sqlite").stat().st_size > 0
    for name in ("golden_gate", "sycophancy"):
        assert (run_dir / name / "generations.jsonl").exists()
        assert (run_dir / name / "summary.json").exists()
    report = (run_dir / "report.md").read_text()
    for needle in ("L0", "FVU", "CE-loss recovered", "dead fraction", "Golden Gate mention rate", "saekit explore"):
        assert needle in report
    stages = json.loads((run_dir / "stages" / "eval.json").read_text())
    assert stages["l0"] == pytest.approx(16, abs=0.5)


def test_second_run_reuses_finished_stages(run_dir, capsys):
    before = (run_dir / "sae" / "sae_weights.safetensors").stat().st_mtime_ns
    assert main(["demo", "--out", str(run_dir), *ARGS]) == 0
    out = capsys.readouterr().out
    assert out.count("done already") == 6
    assert (run_dir / "sae" / "sae_weights.safetensors").stat().st_mtime_ns == before
