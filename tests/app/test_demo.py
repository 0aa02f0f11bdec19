"""`saekit demo --fast` end to end (with the sizes shrunk further), and its resumability."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from app.cli import main
from app.demo_pipeline import Demo, StageCheckError, _checked
from tests.steering.conftest import emit_dashes

pytestmark = pytest.mark.slow

ARGS = ["--fast", "--layer", "6", "--cache-tokens", "6000", "--train-tokens", "30000", "--d-sae", "512",
        "--k", "16", "--analyze-tokens", "3000", "--selection", "3", "--evaluation", "3", "--device", "cpu"]


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
        res = json.loads((run_dir / name / "results.json").read_text())
        assert list(res["saes"]) == ["demo"] and (run_dir / name / "results.md").exists()
        assert res["config"]["n_evaluation"] == 3
    report = (run_dir / "report.md").read_text()
    for needle in ("L0", "FVU", "CE-loss recovered", "dead fraction", "Golden Gate mention rate", "saekit explore",
                   "| golden_gate | prompting |", "| caa |", "agreement probability", "agrees, fluent"):
        assert needle in report, needle
    assert "Failed stage" not in report
    gg = json.loads((run_dir / "stages" / "golden_gate.json").read_text())
    assert [r["method"] for r in gg["evaluation"]] == ["unsteered", "clamp", "caa", "prompting"]
    for r in gg["evaluation"]:
        iv = r["concept_rate"]
        assert iv["low"] <= iv["point"] <= iv["high"] and r["n"] == 3
    sy = json.loads((run_dir / "stages" / "sycophancy.json").read_text())
    assert [r["method"] for r in sy["forced_choice"]] == ["unsteered", "clamp", "caa", "prompting"]
    stages = json.loads((run_dir / "stages" / "eval.json").read_text())
    assert stages["l0"] == pytest.approx(16, abs=0.5)


def test_second_run_reuses_finished_stages(run_dir, capsys):
    before = (run_dir / "sae" / "sae_weights.safetensors").stat().st_mtime_ns
    assert main(["demo", "--out", str(run_dir), *ARGS]) == 0
    out = capsys.readouterr().out
    assert out.count("done already") == 6
    assert (run_dir / "sae" / "sae_weights.safetensors").stat().st_mtime_ns == before


def _resume_copy(run_dir, tmp_path, *redo: str):
    """A copy of the finished run with the `redo` stages (and the ones after them) to run again."""
    out = tmp_path / "again"
    shutil.copytree(run_dir, out)
    for name in redo:
        (out / "stages" / f"{name}.json").unlink()
    return out


def test_degenerate_text_fails_the_stage_and_the_report_says_why(run_dir, tmp_path, model, monkeypatch, capsys):
    out = _resume_copy(run_dir, tmp_path, "golden_gate", "sycophancy")
    shutil.rmtree(out / "golden_gate")  # its results.json would let the benchmark skip the run
    monkeypatch.setattr(Demo, "model", property(lambda self: model))  # the session's model, loaded once
    batches = emit_dashes(monkeypatch, model.tokenizer)
    assert main(["demo", "--out", str(out), *ARGS]) == 2
    captured = capsys.readouterr()
    assert "stage 'golden_gate' failed its check" in captured.err and "transformers" in captured.err
    assert "Sycophancy" not in captured.out.split("FAILED")[-1]  # nothing ran after the failed stage
    report = (out / "report.md").read_text()
    assert "## Failed stage: golden_gate" in report and "scripts/install.sh" in report and "I----" in report
    assert "| L0 | FVU |" in report  # what was done is still reported
    assert not (out / "stages" / "golden_gate.json").exists()  # a re-run retries it
    assert not (out / "stages" / "sycophancy.json").exists()
    assert len(batches) == 1  # the unsteered check ran before any steered generation


def test_nan_metrics_fail_the_stage(run_dir, tmp_path, monkeypatch, capsys):
    out = _resume_copy(run_dir, tmp_path, "eval", "features", "golden_gate", "sycophancy")
    monkeypatch.setattr(Demo, "stage_eval", lambda self: {"l0": 16.0, "fvu": math.nan})
    assert main(["demo", "--out", str(out), *ARGS]) == 2
    assert "non-finite metrics: fvu" in capsys.readouterr().err
    report = (out / "report.md").read_text()
    assert "## Failed stage: eval" in report and "non-finite metrics: fvu" in report
    assert not (out / "stages" / "eval.json").exists()
    assert not (out / "stages" / "features.json").exists()


def test_stage_checks():
    assert _checked({"l0": 16.0, "table": [{"ppl": 2.0, "rate": None}]})
    with pytest.raises(StageCheckError, match=r"table\[1\]\.ppl"):
        _checked({"table": [{"ppl": 2.0}, {"ppl": math.inf}]})


def test_retired_flags_say_what_replaced_them(capsys):
    for flag in (["--allow-zero-sweep"], ["--prompts", "2"]):
        with pytest.raises(SystemExit, match="--selection / --evaluation"):
            main(["demo", "--out", "unused", *flag])
