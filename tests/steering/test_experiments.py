"""Sweeps (JSONL, metrics, charts, resume) and the `saekit steer` / `steer-sweep` commands."""

from __future__ import annotations

import json
import math
from importlib.metadata import version

import pytest

import sae as saelib
from app.cli import main
from steering import SteeringError
from steering.experiments import CAAConfig, SweepConfig, best_condition, format_summary, run_sweep
from steering.fluency import DegenerateTextError
from steering.scoring import perplexity
from steering.summary import NoEffect
from tests.steering.conftest import HOOK, emit_dashes, make_sae

PROMPTS = ["Say hi."]


def _cfg(tmp_path, **kw) -> SweepConfig:
    base = dict(
        out_dir=str(tmp_path / "sweep"), hook=HOOK, features=[5], method="clamp", unit="abs",
        strengths=[40.0], prompts=PROMPTS, chat=True, max_new_tokens=4, batch_size=4,
        concept_keywords=["blue", "hello"], png=False,
    )
    base.update(kw)
    return SweepConfig(**base)


def _lines(cfg: SweepConfig) -> list[dict]:
    with open(f"{cfg.out_dir}/generations.jsonl") as fh:
        return [json.loads(x) for x in fh if x.strip()]


def test_sweep_writes_records_resumes_and_guards_settings(model, tmp_path) -> None:
    sae = make_sae("topk", seed=2)
    cfg = _cfg(tmp_path, caa=CAAConfig(positive=["I love blue."], negative=["I love red."], scales=[4.0]), png=True)
    summary = run_sweep(cfg, model=model, sae=sae, progress=False)
    recs = _lines(cfg)
    assert len(recs) == 3 * len(PROMPTS)  # unsteered + 1 strength + 1 CAA scale
    assert {r["key"] for r in recs} == {"unsteered", "clamp|5|40", "caa||4"}
    r = next(r for r in recs if r["key"] == "clamp|5|40")
    assert r["seed"] == 0 and r["concept"] in (0.0, 1.0) and r["perplexity"] > 1 and 0 <= r["distinct_2"] <= 1
    assert r["text_perplexity"] > 1 and r["text_perplexity"] != r["perplexity"]
    rows = {c["key"]: c for c in summary["conditions"]}
    assert rows["unsteered"]["n"] == len(PROMPTS)
    assert rows["unsteered"]["fluent"] and rows["unsteered"]["gate"]["passed"]  # else the sweep would have stopped
    assert {"words", "repeat_run"} <= set(r) and "fluent" in format_summary(summary)
    assert any(p.endswith("sweep.html") for p in summary["charts"])
    assert any(p.endswith("sweep.png") for p in summary["charts"])

    # Resume with one more strength: only the new condition runs, old records are kept.
    with open(f"{cfg.out_dir}/generations.jsonl", "a") as fh:
        fh.write('{"key": "torn')  # a crash mid-write
    cfg2 = _cfg(tmp_path, strengths=[40.0, 80.0], caa=cfg.caa)
    run_sweep(cfg2, model=model, sae=sae, progress=False)
    recs2 = _lines(cfg2)
    assert len(recs2) == 4 * len(PROMPTS)
    assert recs2[: len(recs)] == recs
    assert (tmp_path / "sweep" / "generations.jsonl.torn").exists()

    # Settings that change what a generation means must match.
    with pytest.raises(SteeringError, match="max_new_tokens"):
        run_sweep(_cfg(tmp_path, max_new_tokens=5), model=model, sae=sae, progress=False)


def test_perplexity_matches_a_direct_computation(model) -> None:
    import torch

    tok = model.tokenizer
    p = tok.encode("The sky is", add_special_tokens=False)
    c = tok.encode(" blue today.", add_special_tokens=False)
    got = perplexity(model, [p, p[:2]], [c, []])
    with torch.no_grad():
        logits = model.original_model(input_ids=torch.tensor([p + c])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    nll = -torch.stack([logp[len(p) - 1 + j, t] for j, t in enumerate(c)]).mean()
    assert got[0] == pytest.approx(float(torch.exp(nll)), rel=1e-4)
    assert math.isnan(got[1])


def test_cli_steer_and_sweep(model, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(saelib, "load_model", lambda *a, **k: model)
    sae_dir = saelib.save_sae(make_sae("topk", seed=2), tmp_path / "sae")
    rc = main(["steer", str(sae_dir), "--feature", "5", "--strength", "40", "--unit", "abs",
               "--prompt", "Say hi.", "--max-new-tokens", "3", "--json"])
    assert rc == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["prompt"] == "Say hi." and rec["steered"] != rec["unsteered"]
    # Bad input is an error message (exit 2), not a traceback, and no model is needed for it.
    assert main(["steer", str(sae_dir), "--feature", "999999", "--unit", "abs", "--prompt", "x"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["steer", str(sae_dir), "--feature", "1", "--positions", "odd", "--prompt", "x"]) == 2
    assert "unknown position mode" in capsys.readouterr().err

    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f"sae_path: {sae_dir}\nfeatures: [5]\nunit: abs\nstrengths: [40]\nmax_new_tokens: 3\n"
                   f"prompts: ['Say hi.']\nconcept_keywords: [hello]\npng: false\n")
    rc = main(["steer-sweep", str(cfg), "--out", str(tmp_path / "out"), "--set", "include_unsteered=false"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "clamp|5|40" in out and (tmp_path / "out" / "sweep.html").exists()
    assert len((tmp_path / "out" / "generations.jsonl").read_text().splitlines()) == 1


def _row(key, method, strength, rate, ppl, text_ppl, fluent=True):
    return {"key": key, "method": method, "strength": strength, "n": 10, "concept_rate": rate, "task_rate": None,
            "perplexity_median": ppl, "text_perplexity_median": text_ppl, "distinct_2": 0.9, "fluent": fluent}


def test_best_condition_needs_the_gate_and_bounds_perplexity() -> None:
    summary = {"conditions": [
        _row("unsteered", "none", None, 0.0, 2.0, 5.0),
        _row("a", "clamp", 2, 0.3, 3.0, 6.0),
        _row("b", "clamp", 4, 0.7, 9.0, 9.0),   # off-topic for the prompt, fluent as text
        _row("c", "clamp", 8, 0.9, 3.5, 4.0, fluent=False),   # a loop: low perplexity, fails the gate
    ]}
    assert best_condition(summary, "clamp")["key"] == "a"
    assert best_condition(summary, "clamp", fluency="text_perplexity")["key"] == "b"
    assert best_condition(summary, "clamp", max_ppl_ratio=None)["key"] == "b"
    assert best_condition(summary, "caa") is None  # not in the sweep: nothing to say
    with pytest.raises(SteeringError, match="fluency"):
        best_condition(summary, "clamp", fluency="vibes")


@pytest.mark.parametrize(("rates", "why"), [
    ((0.3, 0.3, 0.3), "above the unsteered 30%"),   # every condition equals unsteered
    ((0.0, 0.0, 0.0), "above the unsteered 0%"),    # all zero
    ((0.3, 0.1, 0.2), "above the unsteered 30%"),   # steering only lowered it
])
def test_a_sweep_that_moves_nothing_is_no_effect(rates, why) -> None:
    base, *steered = rates
    summary = {"conditions": [_row("unsteered", "none", None, base, 2.0, 5.0)]
               + [_row(f"clamp|1|{s}", "clamp", s, r, 2.0, 5.0) for s, r in zip((1, 2), steered, strict=True)]}
    best = best_condition(summary, "clamp")
    assert isinstance(best, NoEffect) and not best and why in str(best)
    assert "clamp: no effect found" in format_summary(summary)
    summary["conditions"][1]["concept_rate"] = base + 0.05  # one more mention is an effect
    assert best_condition(summary, "clamp")["key"] == "clamp|1|1"


def test_no_effect_when_only_degenerate_conditions_score() -> None:
    summary = {"conditions": [_row("unsteered", "none", None, 0.0, 2.0, 5.0),
                              _row("clamp|1|8", "clamp", 8, 0.9, 2.0, 5.0, fluent=False)]}
    best = best_condition(summary, "clamp")
    assert isinstance(best, NoEffect) and "none of the 1 clamp conditions passes the fluency gate" in best.reason
    summary["conditions"][1].update(fluent=True, text_perplexity_median=20.0)
    best = best_condition(summary, "clamp", fluency="text_perplexity")
    assert isinstance(best, NoEffect) and "exceed 2x the unsteered text perplexity" in best.reason


def test_sweep_stops_before_steering_when_unsteered_text_is_degenerate(model, tmp_path, monkeypatch) -> None:
    """Simulate the transformers 5.24 failure (every reply `I-----...`) without depending on it."""
    batches = emit_dashes(monkeypatch, model.tokenizer)
    cfg = _cfg(tmp_path, prompts=["Say hi.", "Name a colour."], max_new_tokens=16)
    with pytest.raises(DegenerateTextError) as e:
        run_sweep(cfg, model=model, sae=make_sae("topk", seed=2), progress=False)
    msg = str(e.value)
    assert "unsteered" in msg and "I----" in msg and "scripts/install.sh" in msg
    assert f"transformers {version('transformers')}" in msg and f"torch {version('torch')}" in msg
    assert batches == [2]  # the unsteered batch only: no steered condition ran
    jsonl = tmp_path / "sweep" / "generations.jsonl"
    assert not jsonl.exists() or not jsonl.read_text().strip()  # nothing degenerate kept for a resume
