"""`sae.evaluate`: metrics against hand computations, the CE splice on the real model, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sae.architectures.base import SparseAutoencoder
from sae.config import DataConfig, EvalConfig, SAEConfig
from sae.eval_metrics import schema
from sae.evaluation import evaluate

HOOK = "blocks.6.hook_resid_post"


class LinearCodes(SparseAutoencoder):
    """A test SAE with hand-set weights and a chosen activation (relu or identity)."""

    architecture = "test-linear"

    def __init__(self, cfg: SAEConfig, relu: bool = True) -> None:
        self.relu = relu
        super().__init__(cfg)

    def activation(self, pre_acts: torch.Tensor) -> torch.Tensor:
        return pre_acts.relu() if self.relu else pre_acts


def _tiny_sae(dtype: str = "float32") -> LinearCodes:
    """d_in 2, d_sae 3; latent 2 has negative encoder weights, so it never fires on these inputs."""
    sae = LinearCodes(SAEConfig(architecture="topk", d_in=2, d_sae=3, dtype=dtype, hook_name="x"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0]]))
        sae.b_enc.zero_()
        sae.W_dec.copy_(torch.tensor([[0.5, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        sae.b_dec.zero_()
    return sae


X = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [4.0, 2.0]])
# codes: [2,0,0], [0,3,0], [1,1,0], [4,2,0]; recon: [1,0], [0,3], [0.5,1], [2,2]
# squared errors per token: 1, 0, 0.25, 4 -> SSE 5.25; mean x = [1.75, 1.5]
# total variance: dim 0: 0.0625+3.0625+0.5625+5.0625 = 8.75, dim 1: 2.25+2.25+0.25+0.25 = 5
HAND = {
    "fvu": 5.25 / 13.75,
    "mse": 5.25 / 8,
    "mse_per_token": 5.25 / 4,
    "cos": (1 + 1 + 1.5 / math.sqrt(2 * 1.25) + 12 / math.sqrt(20 * 8)) / 4,
    "l2_ratio": (1 / 2 + 1 + math.sqrt(1.25 / 2) + math.sqrt(8 / 20)) / 4,
    "l0": (1 + 1 + 2 + 2) / 4,
    "l1": (2 + 3 + 2 + 6) / 4,
}


@pytest.mark.parametrize("dtype,batch_size", [("float32", 4096), ("float32", 3), ("bfloat16", 2)])
def test_metrics_match_hand_computation(dtype: str, batch_size: int) -> None:
    # Every number here is exact in bf16 too, so a bf16 SAE must give the same fp32 metrics.
    cfg = EvalConfig(ce_batches=0, batch_size=batch_size, dense_threshold=0.5)
    res = evaluate(_tiny_sae(dtype), cfg=cfg, acts=X)
    r, s = res.reconstruction, res.sparsity
    assert r.n_tokens == 4 and r.source == "acts"
    assert r.fvu == pytest.approx(HAND["fvu"], rel=1e-6)
    assert r.explained_variance == pytest.approx(1 - HAND["fvu"], rel=1e-6)
    assert r.mse == pytest.approx(HAND["mse"], rel=1e-6)
    assert r.mse_per_token == pytest.approx(HAND["mse_per_token"], rel=1e-6)
    assert r.cosine_similarity == pytest.approx(HAND["cos"], rel=1e-6)
    assert r.l2_ratio == pytest.approx(HAND["l2_ratio"], rel=1e-6)
    assert s.l0 == pytest.approx(HAND["l0"]) and s.l1 == pytest.approx(HAND["l1"])
    # latents 0 and 1 fire on 3 of 4 tokens (> 0.5: dense); latent 2 never fires
    assert (s.n_dead, s.dead_fraction) == (1, pytest.approx(1 / 3))
    assert (s.n_dense, s.dense_fraction) == (2, pytest.approx(2 / 3))
    assert res.feature_density.tolist() == [0.75, 0.75, 0.0]
    assert sum(s.density_hist_counts) == 2  # dead latents are not in the histogram
    assert res.downstream is None


def test_perfect_and_mean_reconstruction() -> None:
    """FVU is 0 for a perfect reconstruction and 1 for one that always outputs the mean."""
    sae = LinearCodes(SAEConfig(d_in=2, d_sae=2, hook_name="x"), relu=False)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2)), sae.W_dec.copy_(torch.eye(2))
    r = evaluate(sae, cfg=EvalConfig(ce_batches=0), acts=X).reconstruction
    assert (
        r.fvu == 0.0
        and r.cosine_similarity == pytest.approx(1.0)
        and r.l2_ratio == pytest.approx(1.0)
    )
    with torch.no_grad():
        sae.W_dec.zero_(), sae.b_dec.copy_(X.mean(0))
        sae.W_enc.zero_()  # codes 0: output is b_dec = mean(x)
    r = evaluate(sae, cfg=EvalConfig(ce_batches=0), acts=X).reconstruction
    assert r.fvu == pytest.approx(1.0, rel=1e-6)


def test_json_is_self_documenting(tmp_path) -> None:
    out = tmp_path / "eval.json"
    res = evaluate(
        _tiny_sae(), cfg=EvalConfig(ce_batches=0, out_path=str(out), save_png=False), acts=X
    )
    doc = json.loads(out.read_text())
    for group in ("reconstruction", "sparsity"):
        for key in doc[group]:
            assert doc["schema"][group]["fields"][key]["description"], (
                f"{group}.{key} has no description"
            )
    assert doc["reconstruction"]["fvu"] == pytest.approx(HAND["fvu"])
    assert doc["downstream"] is None
    assert set(doc["schema"]) == set(schema())
    assert (tmp_path / "eval_density.html").exists() and res.plots["density_html"].endswith(".html")
    assert "FVU" in res.summary()


# --------------------------------------------------------------------------- real model


def _rows(tokenizer, n_rows: int = 2, length: int = 16) -> torch.Tensor:
    text = (
        "The cat sat on the mat and looked out of the window at the birds in the garden. "
        "Paris is the capital of France, and Berlin is the capital of Germany. " * 3
    )
    ids = tokenizer.encode(text)
    body = length - 1
    rows = [[tokenizer.bos_token_id] + ids[i * body : (i + 1) * body] for i in range(n_rows)]
    return torch.tensor(rows, dtype=torch.long)


def _layer_sae(kind: str) -> LinearCodes:
    d = 576
    sae = LinearCodes(SAEConfig(d_in=d, d_sae=d, hook_name=HOOK), relu=False)
    with torch.no_grad():
        sae.b_enc.zero_(), sae.b_dec.zero_()
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d) if kind == "identity" else torch.zeros(d, d))
    return sae


def test_ce_identity_sae_recovers_everything(model, tokenizer) -> None:
    cfg = EvalConfig(ce_batches=1, ce_batch_size=2)
    tokens = _rows(tokenizer)
    acts = torch.randn(16, 576)
    d = evaluate(_layer_sae("identity"), model, cfg, acts=acts, tokens=tokens).downstream
    assert d is not None and d.n_rows == 2 and d.n_tokens == 2 * 15
    assert d.n_kept_special >= 2  # BOS of each row is never spliced
    assert d.n_spliced + d.n_kept_special + d.n_kept_outlier == tokens.numel()
    assert d.ce_loss_sae == d.ce_loss_clean
    assert d.ce_loss_recovered == 1.0
    assert abs(d.kl_div_sae) < 1e-6 and d.kl_div_zero > 0.1
    assert d.kl_div_recovered == pytest.approx(1.0)
    assert d.ce_loss_zero > d.ce_loss_clean


def test_ce_zero_sae_recovers_nothing(model, tokenizer) -> None:
    cfg = EvalConfig(ce_batches=1, ce_batch_size=2)
    res = evaluate(
        _layer_sae("zero"), model, cfg, acts=torch.randn(16, 576), tokens=_rows(tokenizer)
    )
    d = res.downstream
    assert d.ce_loss_sae == pytest.approx(d.ce_loss_zero, abs=1e-5)
    assert d.ce_loss_recovered == pytest.approx(0.0, abs=1e-4)
    assert d.kl_div_recovered == pytest.approx(0.0, abs=1e-4)


def test_activations_from_model_and_cli(model, tmp_path, monkeypatch) -> None:
    """`saekit eval DIR` with no cache: activations and CE text from the model and a local corpus."""
    from app.cli import main
    from sae.architectures.base import build_sae
    from sae.checkpoint import save_sae

    corpus = tmp_path / "docs.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog near the river bank. " * 40)
    data = DataConfig(source=str(corpus), context_size=32)
    cfg = SAEConfig(architecture="topk", d_in=576, d_sae=64, k=8, hook_name=HOOK)
    torch.manual_seed(0)
    sae_dir = save_sae(build_sae(cfg), tmp_path / "sae")

    res = evaluate(str(sae_dir), model, EvalConfig(n_tokens=200, ce_batches=0, data=data))
    assert res.reconstruction.source == "model" and res.reconstruction.n_tokens == 200
    assert (
        0 < res.sparsity.l0 <= 8 and res.reconstruction.mean_input_norm < 1000
    )  # outliers dropped

    monkeypatch.setattr(
        "sae.model.load_model", lambda *a, **k: model
    )  # the CLI reuses the loaded model
    rc = main(
        [
            "eval",
            str(sae_dir),
            "data.context_size=32",
            "--tokens",
            "100",
            "--ce-batches",
            "0",
            "--no-png",
            "--data",
            str(corpus),
        ]
    )  # the CE path is tested above; this is the plumbing
    assert rc == 0
    doc = json.loads((sae_dir / "eval.json").read_text())
    assert doc["downstream"] is None and doc["reconstruction"]["n_tokens"] == 100
    assert (sae_dir / "eval_density.html").exists()
    assert doc["sae"]["hook_name"] == HOOK and doc["config"]["cache_dir"] is None


def test_activations_from_cache(model, tmp_path) -> None:
    """With a cache: its tail, raw (unnormalised); the CE text starts after the cached rows."""
    from sae.activation_cache import build_cache
    from sae.config import CacheConfig
    from sae.splice import _rows_used_by_cache

    corpus = tmp_path / "docs.txt"
    corpus.write_text(
        "A small test corpus about rivers, mountains and the weather in spring. " * 30
    )
    data = DataConfig(source=str(corpus), context_size=32)
    cache = build_cache(
        CacheConfig(out_dir=str(tmp_path / "cache"), hooks=[HOOK], n_tokens=320, data=data),
        model=model,
        progress=False,
    )
    sae = _layer_sae("identity")
    res = evaluate(sae, model, EvalConfig(cache_dir=str(cache), n_tokens=50, ce_batches=0))
    r = res.reconstruction
    assert r.source == "cache-tail" and r.n_tokens == 50
    assert (
        r.fvu == 0.0 and 10 < r.mean_input_norm < 1000
    )  # raw activations, outliers already dropped
    assert _rows_used_by_cache(str(cache)) == 10

    # A saved SAE whose training run reserved the cache's tail: `evaluate(path)` finds and uses it.
    from sae.architectures.base import build_sae
    from sae.checkpoint import save_sae

    sae_dir = save_sae(
        build_sae(SAEConfig(d_in=576, d_sae=32, k=4, hook_name=HOOK)), tmp_path / "run"
    )
    (sae_dir / "train_config.json").write_text(
        json.dumps({"cache_dir": str(cache), "store": {"held_out_tokens": 64}})
    )
    r = evaluate(str(sae_dir), model, EvalConfig(ce_batches=0)).reconstruction
    assert (r.source, r.n_tokens) == ("cache-held-out", 64)

    # The SAE object with the folder it came from: the same held-out split.
    from sae.checkpoint import load_sae

    r = evaluate(load_sae(sae_dir), model, EvalConfig(sae_path=str(sae_dir), ce_batches=0)).reconstruction
    assert (r.source, r.n_tokens) == ("cache-held-out", 64)

    # A source the cache used up: the CE pass runs on the cache's own last rows.
    from sae.shards import tail_token_rows

    tail = tail_token_rows(cache, 3)
    assert tail.shape == (3, 32) and tail.dtype == torch.long and bool((tail[:, 0] == tail[0, 0]).all())  # BOS
    cfg = EvalConfig(cache_dir=str(cache), n_tokens=50, ce_batches=1, ce_batch_size=2, data=data, skip_rows=10**6)
    d = evaluate(_layer_sae("identity"), model, cfg).downstream
    assert d is not None and d.n_rows == 2 and d.ce_loss_recovered == 1.0


# --------------------------------------------------------------------------- quality groups (schema 2)


def test_quality_groups_in_the_json_and_version_1_files_still_load(tmp_path) -> None:
    from sae.eval_metrics import SCHEMA_VERSION, AbsorptionMetrics, SparseProbingMetrics
    from sae.eval_result import load_eval

    out = tmp_path / "eval.json"
    res = evaluate(_tiny_sae(), cfg=EvalConfig(ce_batches=0, save_png=False), acts=X)
    res.sparse_probing = SparseProbingMetrics(
        n_documents=10, max_tokens=8, ks=[1, 2, 5], mean_residual_accuracy=0.9, mean_sae_accuracy=[0.6, 0.7, 0.8],
        mean_sae_all_accuracy=0.85, tasks=[{"name": "format=chat", "residual_accuracy": math.nan}])
    res.absorption = AbsorptionMetrics(n_words=40, mean_absorption_rate=0.25, ci_low=0.1, ci_high=0.4,
                                       mean_absorption_fraction=0.3, mean_main_latents=1.5, n_letters=4,
                                       probe_test_accuracy=0.95, per_letter=[])
    res.save(out)
    doc = load_eval(out)
    assert doc["schema_version"] == SCHEMA_VERSION == 2
    assert doc["sparse_probing"]["mean_sae_accuracy"] == [0.6, 0.7, 0.8]
    assert doc["sparse_probing"]["tasks"][0]["residual_accuracy"] is None  # NaN inside a row: null
    assert doc["absorption"]["mean_absorption_rate"] == 0.25
    for group in ("sparse_probing", "absorption"):
        for key in doc[group]:
            assert doc["schema"][group]["fields"][key]["description"], f"{group}.{key} has no description"
    text = res.summary()
    assert "k=1 0.600" in text and "0.250 (0.100-0.400" in text
    # a version-1 file (before these groups existed) loads, its missing groups null
    old = {k: v for k, v in doc.items() if k not in ("sparse_probing", "absorption", "schema")}
    old["schema_version"] = 1
    (tmp_path / "old.json").write_text(json.dumps(old))
    back = load_eval(tmp_path / "old.json")
    assert back["schema_version"] == 1 and back["sparse_probing"] is None and back["absorption"] is None
    assert back["reconstruction"]["fvu"] == pytest.approx(HAND["fvu"])
    (tmp_path / "not.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not an eval JSON"):
        load_eval(tmp_path / "not.json")


def test_opt_in_passes_run_only_when_asked(monkeypatch) -> None:
    from sae import evaluation
    from sae.eval_metrics import AbsorptionMetrics, SparseProbingMetrics

    calls = []
    monkeypatch.setattr(evaluation, "run_sparse_probing",
                        lambda m, s, c: calls.append(("probing", m)) or SparseProbingMetrics(n_documents=3))
    monkeypatch.setattr(evaluation, "run_absorption",
                        lambda m, s, c: calls.append(("absorption", m)) or AbsorptionMetrics(n_words=5))
    model = object()
    plain = evaluate(_tiny_sae(), model, EvalConfig(ce_batches=0), acts=X)
    assert calls == [] and plain.sparse_probing is None and plain.absorption is None
    res = evaluate(_tiny_sae(), model, EvalConfig(ce_batches=0, probing=True, absorption=True), acts=X)
    assert calls == [("probing", model), ("absorption", model)]  # the given model, not a fresh load
    assert res.sparse_probing.n_documents == 3 and res.to_dict()["absorption"]["n_words"] == 5
