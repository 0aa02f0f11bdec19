"""`saekit demo --fast` end to end (with the sizes shrunk further), and its resumability."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from app.cli import main
from app.demo_pipeline import Demo, StageCheckError, _check_sweep, _checked
from tests.steering.conftest import emit_dashes

pytestmark = pytest.mark.slow

STRICT = ["--fast", "--layer", "6", "--cache-tokens", "6000", "--train-tokens", "30000", "--d-sae", "512",
          "--k", "16", "--analyze-tokens", "3000", "--prompts", "2", "--device", "cpu"]
# An SAE trained on 30k tokens does not steer (its clamps make "ErrorErrorError..." and may score 0
# everywhere): reported, not failed.
ARGS = [*STRICT, "--allow-zero-sweep"]


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
    assert "Failed stage" not in report
    gg = json.loads((run_dir / "stages" / "golden_gate.json").read_text())
    assert (gg["best_strength"] is None) == bool(gg["no_effect"])  # a best strength only with an effect
    if gg["no_effect"]:
        assert f"**Golden Gate mention rate**: {gg['no_effect']}" in report
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
    shutil.rmtree(out / "golden_gate")
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
    zero = {"no_effect": "no effect found: nothing moved",
            "table": [{"condition": "unsteered", "concept_rate": 0.0}, {"condition": "clamp|1|2", "concept_rate": 0.0}]}
    with pytest.raises(StageCheckError, match="scored 0 .*no effect found") as e:
        _check_sweep(zero, "Golden Gate clamp")
    assert e.value.partial == zero
    assert _check_sweep(zero, "x", allow_zero=True) == zero
    # No effect where something scored (the unsteered rate, or a non-fluent clamp): a plain result.
    flat = {"no_effect": "no effect found: no fluent clamp condition raised the praise rate above 30%",
            "table": [{"condition": "unsteered", "praise_rate": 0.3}, {"condition": "clamp|1|2", "praise_rate": 0.3}]}
    assert _check_sweep(flat, "praise clamp") == flat
    assert _check_sweep({"no_effect": None, "best_rate": 0.5}, "x")["best_rate"] == 0.5


def test_an_all_zero_sweep_fails_the_stage_unless_allowed(run_dir, tmp_path, monkeypatch, capsys):
    import steering.reference_experiments

    table = [{"condition": "unsteered", "concept_rate": 0.0}, {"condition": "clamp|7|2", "concept_rate": 0.0}]
    canned = {"features": [7], "no_effect": "no effect found: no fluent clamp condition raised it", "table": table,
              "best_strength": None, "summary": {}}
    monkeypatch.setattr(steering.reference_experiments, "golden_gate", lambda *a, **k: dict(canned))
    monkeypatch.setattr(Demo, "model", property(lambda self: None))  # the canned stage needs no model
    out = _resume_copy(run_dir, tmp_path, "golden_gate", "sycophancy")
    assert main(["demo", "--out", str(out), *STRICT]) == 2
    assert "no effect found" in capsys.readouterr().err
    report = (out / "report.md").read_text()
    assert "## Failed stage: golden_gate" in report and "clamp|7|2" in report  # the partial table is shown
    assert not (out / "stages" / "golden_gate.json").exists()
