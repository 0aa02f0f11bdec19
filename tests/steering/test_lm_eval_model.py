"""steering.lm_eval_model on the real model: lm-eval's simple_evaluate on a tiny offline task,
steered and unsteered, checked against the model's own log-probabilities."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sae as saelib
import steering
from steering import Clamp, FeatureSteering, SteeringError, VectorSteering

pytest.importorskip("lm_eval", reason="lm-eval is an optional extra: pip install 'saekit[lm-eval]'")
from lm_eval.api.instance import Instance  # noqa: E402

from steering.lm_eval_model import SteeredLM  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TASK_DIR = REPO / "tests" / "data" / "lm_eval_tiny"
TASK = "saekit_tiny"
HOOK = "blocks.3.hook_resid_post"


def _strong():
    """Clamping a latent of a random SAE at 100 (at layer 3) moves every later activation a lot."""
    return (saelib.random_sae(layer=3, seed=0), {5: Clamp(100.0)})


def _evaluate(lm: SteeredLM) -> tuple[dict, list[dict]]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.chdir(REPO)  # the task's data_files path is relative to the repository root
        tasks = TaskManager(include_path=str(TASK_DIR), include_defaults=False)
        out = simple_evaluate(model=lm, tasks=[TASK], task_manager=tasks, bootstrap_iters=0)
    samples = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
    return out["results"][TASK], samples


def _loglikelihoods(samples: list[dict]) -> list[list[float]]:
    return [[float(r[0]) for r in s["filtered_resps"]] for s in samples]


@pytest.fixture(scope="module")
def unsteered(model):
    return _evaluate(SteeredLM(model, batch_size=32))


@pytest.fixture(scope="module")
def steered(model):
    return _evaluate(SteeredLM(model, _strong(), batch_size=32))


def _direct(model, pairs: list[tuple[str, str]]) -> list[tuple[float, bool]]:
    """log P(continuation | BOS + context) and is_greedy from one right-padded forward, row by row."""
    tok = model.tokenizer
    rows, starts = [], []
    for ctx, cont in pairs:
        ctx_ids = [tok.bos_token_id, *tok.encode(ctx, add_special_tokens=False)]
        whole = [tok.bos_token_id, *tok.encode(ctx + cont, add_special_tokens=False)]
        assert whole[: len(ctx_ids)] == ctx_ids  # the continuation starts on a token boundary
        rows.append(whole)
        starts.append(len(ctx_ids))
    T = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (T - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
    with torch.no_grad():
        logp = torch.log_softmax(model.original_model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    out = []
    for b, (row, n) in enumerate(zip(rows, starts, strict=True)):
        lp = logp[b, n - 1 : len(row) - 1]
        target = torch.tensor(row[n:])
        out.append((float(lp.gather(-1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())))
    return out


def test_unsteered_scores_are_the_models_own_logprobs(model, unsteered) -> None:
    results, samples = unsteered
    assert len(samples) == 8
    pairs = [tuple(a) for s in samples for a in s["arguments"]]
    got = [(float(r[0]), bool(r[1])) for s in samples for r in s["filtered_resps"]]
    want = _direct(model, pairs)
    assert [g[0] for g in got] == pytest.approx([w[0] for w in want], abs=2e-3)
    assert [g[1] for g in got] == [w[1] for w in want]
    # acc is lm-eval's own metric over exactly these numbers
    picks = [max(range(len(ll)), key=ll.__getitem__) for ll in _loglikelihoods(samples)]
    acc = sum(p == s["doc"]["answer"] for p, s in zip(picks, samples, strict=True)) / len(samples)
    assert results["acc,none"] == pytest.approx(acc)


def test_steering_changes_every_loglikelihood_and_the_accuracy(unsteered, steered) -> None:
    (res_u, samples_u), (res_s, samples_s) = unsteered, steered
    assert [s["arguments"] for s in samples_u] == [s["arguments"] for s in samples_s]
    for lls_u, lls_s in zip(_loglikelihoods(samples_u), _loglikelihoods(samples_s), strict=True):
        assert all(abs(u - s) > 1e-2 for u, s in zip(lls_u, lls_s, strict=True))
    assert res_s["acc,none"] != res_u["acc,none"]


def test_generated_positions_steer_the_continuation_not_the_context(model) -> None:
    """positions='generated': a one-token continuation is read off the context alone, so it keeps
    its score; a two-token one is steered from its second token on. 'prompt' moves both."""
    torch.manual_seed(0)
    vec = torch.randn(576) * 30

    ctx = "Question: What is the capital of France?\nAnswer:"
    one, two = " Paris", " San Francisco"
    tok = model.tokenizer
    assert len(tok.encode(one, add_special_tokens=False)) == 1
    assert len(tok.encode(two, add_special_tokens=False)) == 2
    reqs = [Instance("loglikelihood", {}, (ctx, c), 0) for c in (one, two)]

    def scores(positions: str | None) -> list[float]:
        iv = None if positions is None else VectorSteering(vec, HOOK, positions=positions)
        return [ll for ll, _ in SteeredLM(model, iv).loglikelihood(reqs)]

    base, gen, prompt = scores(None), scores("generated"), scores("prompt")
    assert gen[0] == pytest.approx(base[0], abs=1e-4)
    assert abs(gen[1] - base[1]) > 1e-2
    assert all(abs(p - b) > 1e-2 for p, b in zip(prompt, base, strict=True))


def test_generate_until_is_steering_generate_cut_at_the_stop_string(model) -> None:
    """Greedy steered text equals steering.generate's (KV cache, every decode step steered)."""
    iv = FeatureSteering(*_strong(), positions="generated")
    prompt = "The best thing about summer is"
    req = Instance("generate_until", {}, (prompt, {"until": ["\n\n"], "max_gen_toks": 6, "do_sample": False}), 0)
    [ours] = SteeredLM(model, iv).generate_until([req])
    [g] = steering.generate(model, prompt, iv, chat=False, max_new_tokens=6)
    assert ours == g.steered.split("\n\n")[0]
    assert g.steered != g.unsteered


def test_rolling_loglikelihood_is_the_texts_logprob_after_bos(model) -> None:
    text = "The Golden Gate Bridge is a suspension bridge in San Francisco."
    [ll] = SteeredLM(model).loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    [(want, _)] = _direct(model, [("", text)])
    assert ll == pytest.approx(want, abs=2e-3)


def test_model_args_build_a_feature_edit(model, tmp_path) -> None:
    sae_dir = tmp_path / "sae"
    saelib.save_sae(saelib.random_sae(layer=3, seed=0), sae_dir)
    lm = SteeredLM.create_from_arg_obj(
        {"model": model, "sae": str(sae_dir), "feature": 5, "clamp": 100, "positions": "generated"},
        {"batch_size": 4, "max_batch_size": None, "device": None},
    )
    [iv] = lm.interventions
    assert (iv.edits, iv.positions, iv.hook, lm.batch_size) == ({5: Clamp(100.0)}, "generated", HOOK, 4)
    assert lm.get_model_info() == {"steering": [iv.describe()]}


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ("sae=x,feature=5", r"exactly one of clamp, add, scale, ablate"),
        ("feature=5,clamp=3", r"missing sae"),
        ("sae=x,feature=a,clamp=3", r"feature must be one integer"),
        ("sae=x,feature=5,ablate=3", r"ablate=true"),
        ("sae=x,feature=5,clamp=3,fetaure=4", r"unknown model_args \['fetaure'\]"),
        ("sae=x,feature=5,clamp=3,unit=big", r"unknown unit 'big'"),
    ],
)
def test_bad_model_args_fail_before_any_model_loads(args: str, match: str) -> None:
    with pytest.raises(SteeringError, match=match):
        SteeredLM.create_from_arg_string(args)


def test_bad_generation_kwargs_and_batch_size(model) -> None:
    with pytest.raises(SteeringError, match=r"\['repetition_penalty'\] are not supported"):
        SteeredLM(model).generate_until([Instance("generate_until", {}, ("Hi", {"repetition_penalty": 1.1}), 0)])
    with pytest.raises(SteeringError, match="batch_size must be"):
        SteeredLM(model, batch_size=0)


def test_without_lm_eval_the_error_names_the_extra(monkeypatch) -> None:
    for name in [m for m in sys.modules if m == "lm_eval" or m.startswith("lm_eval.")]:
        monkeypatch.setitem(sys.modules, name, None)  # what an environment without the extra sees
    monkeypatch.delitem(sys.modules, "steering.lm_eval_model")
    with pytest.raises(ImportError, match=r"pip install 'saekit\[lm-eval\]'"):
        importlib.import_module("steering.lm_eval_model")


def test_import_steering_does_not_import_lm_eval() -> None:
    code = "import sys, steering; steering.Clamp; assert 'lm_eval' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_command_line_knows_the_saekit_model() -> None:
    """`python -m steering.lm_eval_model` registers `saekit` and hands model_args to it (a bad one
    here, so that it stops before loading the model)."""
    cmd = [sys.executable, "-m", "steering.lm_eval_model", "run", "--model", "saekit",
           "--model_args", "sae=x,feature=5", "--tasks", TASK, "--include_path", str(TASK_DIR)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0
    assert "give exactly one of clamp, add, scale, ablate" in proc.stderr, proc.stderr[-2000:]
