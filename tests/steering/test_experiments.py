"""Sweeps (JSONL, metrics, charts, resume) and the `saekit steer` / `steer-sweep` commands."""

from __future__ import annotations

import json
import math

import pytest

import sae as saelib
from app.cli import main
from steering import SteeringError
from steering.experiments import CAAConfig, SweepConfig, run_sweep
from steering.metrics import perplexity
from tests.steering.conftest import HOOK, make_sae

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


def test_best_condition_bounds_fluency_and_loops() -> None:
    from steering.experiments import best_condition

    def row(key, method, strength, rate, ppl, text_ppl, d2):
        return {"key": key, "method": method, "strength": strength, "concept_rate": rate, "perplexity_median": ppl,
                "text_perplexity_median": text_ppl, "distinct_2": d2}

    summary = {"conditions": [
        row("unsteered", "none", None, 0.0, 2.0, 5.0, 0.9),
        row("a", "clamp", 2, 0.3, 3.0, 6.0, 0.85),
        row("b", "clamp", 4, 0.7, 9.0, 9.0, 0.6),   # off-topic for the prompt, fluent as text
        row("c", "clamp", 8, 0.9, 3.5, 4.0, 0.3),   # a loop: low perplexity, few distinct bigrams
    ]}
    assert best_condition(summary, "clamp")["key"] == "c"
    assert best_condition(summary, "clamp", min_distinct_ratio=0.6)["key"] == "a"
    assert best_condition(summary, "clamp", fluency="text_perplexity", min_distinct_ratio=0.6)["key"] == "b"
    assert best_condition(summary, "caa") is None
    with pytest.raises(SteeringError, match="fluency"):
        best_condition(summary, "clamp", fluency="vibes")
