"""The steering benchmark end to end on the embedded model with a tiny random SAE (issue 14).

One small run (2 concepts, 4 + 4 prompts, 8 tokens, a few forced-choice items) is shared by the
tests that read its result; the guards (overlap, NaN, all-zero, degenerate baseline) run without it.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from steering import benchmark_concepts as bc
from steering.benchmark import BenchmarkConfig, concept_run, run_benchmark
from steering.benchmark_methods import BenchmarkError, SearchSettings
from steering.fluency import DegenerateTextError
from tests.steering.conftest import emit_dashes, make_sae


def _cfg(tmp_path, **kw) -> BenchmarkConfig:
    base = dict(out_dir=str(tmp_path / "bench"), n_selection=3, n_evaluation=3, max_new_tokens=6,
                search=SearchSettings(candidates=2, select=1, select_prompts=2, select_tokens=6, score_prompts=1),
                n_items=2, n_free_text=2, resamples=200, batch_size=8,
                strengths=[4.0], n_unrelated=2)
    base.update(kw)
    return BenchmarkConfig.fast(**base)


@pytest.fixture(scope="module")
def bench(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("steer_bench")
    cfg = _cfg(out)
    return cfg, run_benchmark(model, [("seed0", make_sae("relu"))], cfg)


def _iv_ok(iv: dict) -> bool:
    return all(math.isfinite(iv[k]) for k in ("point", "low", "high")) and iv["low"] <= iv["point"] <= iv["high"]


def test_results_have_intervals_and_files(bench) -> None:
    cfg, result = bench
    res = result["saes"]["seed0"]
    assert set(res["concepts"]) == {"golden_gate", "cooking"}
    for c in res["concepts"].values():
        methods = [r["method"] for r in c["evaluation"]]
        assert methods[:4] == ["unsteered", "clamp", "caa", "prompting"]
        assert set(methods[4:]) <= {"clamp_by_rate", "caa_by_rate"}
        for r in c["evaluation"]:
            assert r["n"] == cfg.n_evaluation
            for name in ("concept_rate", "concept", "fluency", "relevance", "combined"):
                assert _iv_ok(r[name]), (r["method"], name, r[name])
            assert r["text_perplexity_median"] > 1
        assert c["samples"] and set(c["samples"][0]) == {"prompt", *methods}
    syc = res["sycophancy"]
    assert [r["method"] for r in syc["forced_choice"]] == ["unsteered", "clamp", "caa", "prompting"]
    for r in syc["forced_choice"]:
        assert _iv_ok(r["agreement"]) and _iv_ok(r["difference_to_unsteered"])
        assert 0 <= r["agreement"]["point"] <= 1
    assert syc["forced_choice"][0]["difference_to_unsteered"]["point"] == 0
    assert {r["method"] for r in syc["free_text"]} == {"unsteered", "clamp", "caa", "prompting"}
    out = cfg.out_dir
    assert json.load(open(f"{out}/results.json"))["saes"]["seed0"]["concepts"]["cooking"]["feature"] >= 0
    assert json.load(open(f"{out}/config.json"))["n_evaluation"] == cfg.n_evaluation
    md = open(f"{out}/results.md").read()
    assert "| golden_gate | clamp |" in md and "agreement probability" in md
    assert result["spread"]["cooking"]["clamp"]["combined"]["n_saes"] == 1


def test_caa_matches_the_clamps_edit_sizes_and_prompting_adds_nothing(bench) -> None:
    _, result = bench
    for c in result["saes"]["seed0"]["concepts"].values():
        sel = c["selection"]
        assert [r["target_edit_size"] for r in sel["caa"]] == [r["edit_size"] for r in sel["clamp"]]
        for clamp, caa in zip(sel["clamp"], sel["caa"], strict=True):
            assert clamp["edit_size"] > 0
            assert caa["edit_size"] == pytest.approx(clamp["edit_size"], rel=0.10)
        ev = {r["method"]: r for r in c["evaluation"]}
        assert ev["prompting"]["edit_size"] == 0 and ev["unsteered"]["edit_size"] == 0
        assert ev["clamp"]["edit_size"] > 0 and ev["caa"]["edit_size"] > 0
    syc = {r["method"]: r for r in result["saes"]["seed0"]["sycophancy"]["forced_choice"]}
    assert syc["caa"]["edit_size"] == pytest.approx(syc["clamp"]["edit_size"], rel=0.10)
    assert syc["prompting"]["edit_size"] == 0


def test_a_rerun_keeps_finished_saes_and_reruns_changed_ones(bench, model, monkeypatch, tmp_path) -> None:
    import shutil

    import steering.benchmark as sb

    cfg, result = bench
    cfg = replace(cfg, out_dir=str(tmp_path / "again"))  # another folder, the same results.json
    (tmp_path / "again").mkdir()
    shutil.copy(f"{bench[0].out_dir}/results.json", tmp_path / "again" / "results.json")
    calls: list[str] = []
    monkeypatch.setattr(sb, "benchmark_sae", lambda m, s, c, memo=None, **kw: calls.append("ran") or
                        {**result["saes"]["seed0"], "fingerprint": sb.fingerprint(s)})
    again = run_benchmark(model, [("seed0", make_sae("relu"))], cfg)  # the same weights (seeded)
    assert calls == [] and again["saes"] == result["saes"]
    other = make_sae("relu", seed=1)
    assert sb.fingerprint(other) != result["saes"]["seed0"]["fingerprint"]
    run_benchmark(model, [("seed0", other)], cfg)
    assert calls == ["ran"]  # same label, other weights: run again
    run_benchmark(model, [("seed0", make_sae("relu"))], replace(cfg, n_evaluation=cfg.n_evaluation + 1))
    assert calls == ["ran", "ran"]  # another config: nothing kept


def test_a_stopped_run_keeps_its_finished_concepts(bench, model, monkeypatch, tmp_path) -> None:
    import steering.benchmark as sb

    cfg, result = bench
    cfg = replace(cfg, out_dir=str(tmp_path / "partial"))
    finished = result["saes"]["seed0"]
    done = {"golden_gate": finished["concepts"]["golden_gate"]}
    ran: list[str] = []

    def concept(m, s, c, run):
        ran.append(c.name)
        if c.name == "cooking":
            raise KeyboardInterrupt  # the run is stopped during its second concept
        return done[c.name]

    monkeypatch.setattr(sb.bc, "concept_benchmark", concept)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(model, [("seed0", make_sae("relu"))], cfg)
    kept = json.load(open(tmp_path / "partial" / "results.json"))["saes"]["seed0"]
    assert list(kept["concepts"]) == ["golden_gate"] and kept["complete"] is False
    monkeypatch.setattr(sb.bc, "concept_benchmark", lambda m, s, c, run: ran.append(c.name) or finished["concepts"][c.name])
    monkeypatch.setattr(sb.bs, "sycophancy_benchmark", lambda m, s, run: finished["sycophancy"])
    again = run_benchmark(model, [("seed0", make_sae("relu"))], cfg)
    assert ran == ["golden_gate", "cooking", "cooking"]  # golden_gate was not run again
    assert again["saes"]["seed0"]["complete"] is True and set(again["saes"]["seed0"]["concepts"]) == {"golden_gate", "cooking"}


def test_the_rate_rule_picks_the_highest_rate_within_the_perplexity_bound() -> None:
    def row(setting: float, rate: float, ppl: float) -> dict:
        return {"setting": setting, "concept_rate": {"point": rate}, "text_perplexity_median": ppl, "edit_size": setting}

    base = row(0, 0.0, 5.0)
    sweep = [row(1, 0.1, 6.0), row(2, 0.6, 9.9), row(3, 0.9, 10.1)]
    assert bc.by_rate(sweep, base, 2.0)["setting"] == 2  # x3 rates higher but its perplexity is 2.02x
    assert bc.by_rate(sweep, base, 3.0)["setting"] == 3
    assert bc.by_rate(sweep, base, 1.1) is None


def test_free_text_agreement_counts_only_fluent_replies(tokenizer) -> None:
    from steering import benchmark_sycophancy as bs
    from steering.benchmark_methods import GenSettings, Measured

    replies = ["You're absolutely right, 15% of 80 is 12 and you did it well.",
               "You're absolutely, and indeed, that is, and that is, and that is, and that is, and that is, and that is",
               "No, that's not correct: 15% of 80 is 12."]
    m = Measured(replies, [tokenizer.encode(r, add_special_tokens=False) for r in replies], 0.5, 100.0, 30)
    (row,) = bs._free_rows({"caa": m}, bs.SycophancyRun([1.0], GenSettings(), resamples=200))
    assert row["only_agrees_interval"]["point"] == pytest.approx(2 / 3)  # the loop holds agreeing words
    assert row["fluent_only_agrees_interval"]["point"] == pytest.approx(1 / 3)  # but it is not sycophancy
    assert row["corrects_interval"]["point"] == pytest.approx(1 / 3) and row["fluent_share"] == pytest.approx(2 / 3)


def test_selection_and_evaluation_prompts_are_disjoint(tmp_path, monkeypatch) -> None:
    import steering.concepts as concepts

    run = concept_run(BenchmarkConfig(out_dir=str(tmp_path)))  # the full-size sets
    assert len(run.evaluation) >= 50 and not set(run.selection) & set(run.evaluation)
    monkeypatch.setattr(concepts, "EVALUATION_PROMPTS", [concepts.SELECTION_PROMPTS[0], *concepts.EVALUATION_PROMPTS])
    with pytest.raises(BenchmarkError, match="share prompts"):
        concept_run(BenchmarkConfig(out_dir=str(tmp_path)))


def _row(value: float) -> dict:
    iv = {"point": value, "low": value, "high": value}
    return {name: iv for name in (*bc.SCORES, "concept_rate")}


def test_all_zero_sweeps_and_nan_scores_raise() -> None:
    with pytest.raises(BenchmarkError, match="every score is zero"):
        bc.check_sweep([_row(0.0), _row(0.0)], "cooking: clamp sweep")
    bc.check_sweep([_row(0.0), _row(0.2)], "fine")

    class Q:
        concept_hit, concept, fluency, relevance, combined = True, 1.0, 1.0, 1.0, 1.0
        concept_logprob_gain, relevance_logratio, text_perplexity = 0.1, float("nan"), 3.0

    with pytest.raises(BenchmarkError, match="relevance_logratio"):
        bc.check_scores([Q()], "clamp 2")


def test_a_degenerate_unsteered_baseline_raises(model, tmp_path, monkeypatch) -> None:
    emit_dashes(monkeypatch, model.tokenizer)
    with pytest.raises(DegenerateTextError, match="not fluent"):
        run_benchmark(model, [("s", make_sae("relu"))], _cfg(tmp_path, concepts=["cooking"], sycophancy=False))
    assert not (tmp_path / "bench" / "results.json").exists()


def test_steer_bench_command_is_registered() -> None:
    from app.cli import build_parser

    args = build_parser().parse_args(["steer-bench", "--sae", "a", "--sae", "b", "--concepts", "cooking", "--fast"])
    assert args.sae == ["a", "b"] and args.fast
