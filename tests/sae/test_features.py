"""The feature database against brute force: top-k, densities, histograms, intervals, lens, neighbours."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import torch

import sae
from sae.config import DataConfig, FeaturesConfig
from sae.features.accumulate import FeatureAccumulator
from sae.features.db import FeatureDB, FeatureDBError
from sae.features.demo_db import build_demo_db, demo_rows
from sae.features.reservoir import GRID
from sae.features.source import extractor_for

# ---------------------------------------------------------------------- synthetic: the accumulator


def _synthetic(F=48, B=6, T=24, n_batches=10, window=3, topk_sae=False, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    acc = FeatureAccumulator(F, top_k=5, window=window, examples_per_interval=3, seed=seed)
    dense, toks = [], []
    for i in range(n_batches):
        tok = torch.randint(3, 1000, (B, T), generator=g)
        valid = torch.rand(B, T, generator=g) > 0.15
        n = int(valid.sum())
        # ranges that grow batch after batch: the power-of-two grid must merge bins exactly
        scale = (torch.rand(F, generator=g) * 6) ** 2 * (1 + i)
        if topk_sae:  # constant L0: the padded co-occurrence path
            pre = torch.randn(n, F, generator=g)
            v, ix = pre.topk(4, dim=-1)
            codes = torch.zeros(n, F).scatter(-1, ix, v.abs() + 0.01) * scale
        else:  # variable L0: the general path
            codes = torch.relu(torch.randn(n, F, generator=g)) * scale * (torch.rand(n, F, generator=g) < 0.25)
        codes[:, 0] = 0  # a dead latent
        codes = codes.to(dtype)  # bf16 SAEs (GPU) hand over bf16 codes
        acc.update(tok, valid, codes)
        d = torch.zeros(B, T, F)
        d[valid] = codes.float()
        dense.append(d)
        toks.append(tok)
    return acc, torch.cat(dense), torch.cat(toks)


@pytest.mark.parametrize(("topk_sae", "dtype"), [(False, torch.float32), (True, torch.float32), (True, torch.bfloat16)])
def test_accumulator_matches_brute_force(topk_sae, dtype):
    acc, D, TOK = _synthetic(topk_sae=topk_sae, dtype=dtype)
    R, T, F = D.shape
    flat = D.reshape(-1, F)
    fired = flat > 0
    assert torch.equal(acc.n_fired, fired.sum(0))
    assert acc.n_fired[0] == 0
    assert torch.equal(acc.max_act, flat.max(0).values)
    assert torch.allclose(acc.mean_act(), flat.sum(0) / fired.sum(0).clamp(min=1), rtol=1e-5)

    top = acc.topk.sorted()
    want = flat.topk(5, dim=0).values.T
    assert torch.equal(top["act"], torch.where(want > 0, want, torch.full_like(want, float("-inf"))))
    for f in range(1, F):
        for r in range(5):
            row, pos = int(top["row"][f, r]), int(top["pos"][f, r])
            assert D[row, pos, f] == top["act"][f, r]
            for k, off in enumerate(range(-3, 4)):
                p = pos + off
                if 0 <= p < T:
                    assert top["ctx_tok"][f, r, k] == TOK[row, p]
                    assert top["ctx_act"][f, r, k] == D[row, p, f]
                else:
                    assert top["ctx_tok"][f, r, k] == -1

    w = acc.intervals.bin_width()
    iv = acc.intervals.intervals(acc.max_act, 10)
    for f in range(1, F):
        v = flat[:, f][fired[:, f]].double()
        M = v.max()
        assert w[f] * GRID / 2 <= M < w[f] * GRID  # the range is the power of two above the max
        bins = torch.floor(v / w[f]).long()
        assert torch.equal(torch.bincount(bins, minlength=GRID), acc.intervals.hist[f])
        assert torch.isclose(iv.hi[f, -1], torch.floor(M / w[f]) * w[f] + w[f])
        for j in range(10):
            lo, hi = float(iv.lo[f, j]), float(iv.hi[f, j])
            assert abs(lo - j * float(M) / 10) <= float(w[f]) / 2 + 1e-12  # snapped to the grid
            inside = (v >= lo) & (v < hi)
            assert int(inside.sum()) == int(iv.n_events[f, j])
            got = iv.act[f, j][~torch.isnan(iv.act[f, j])]
            assert len(got) == min(3, int(inside.sum()))
            assert bool(((got >= lo) & (got < hi)).all())
            for s in range(len(got)):
                row, pos = int(iv.row[f, j, s]), int(iv.pos[f, j, s])
                assert D[row, pos, f] == got[s]
                assert torch.isclose(iv.ctx_act[f, j, s, 3], got[s], rtol=1e-3)  # float16 windows

    A = fired.long()
    C = A.T @ A
    assert torch.equal(acc.cooc.counts.long(), C)
    others, both, jac = acc.cooc.top(4)
    diag = C.diagonal()
    for f in range(1, F):
        j_all = C[f].double() / (diag[f] + diag - C[f]).clamp(min=1)
        j_all[f] = -1
        j_all[C[f] == 0] = -1
        assert torch.allclose(jac[f], j_all.topk(4).values.clamp(min=0).float())
        for o, n in zip(others[f].tolist(), both[f].tolist(), strict=True):
            assert o == -1 or C[f, o] == n


def test_interval_samples_are_uniform():
    """One latent, values uniform in [0, 1): every event of an interval is equally likely to be sampled."""
    counts = torch.zeros(200)
    for seed in range(60):
        acc = FeatureAccumulator(2, top_k=1, window=0, examples_per_interval=2, seed=seed, cooccurrence=False)
        vals = torch.linspace(0.005, 0.995, 200)
        codes = torch.stack([vals, torch.zeros(200)], 1)
        acc.update(torch.zeros(1, 200, dtype=torch.long), torch.ones(1, 200, dtype=torch.bool), codes)
        iv = acc.intervals.intervals(acc.max_act, 10)
        for p in iv.pos[0].flatten().tolist():
            if p >= 0:
                counts[p] += 1
    # 60 runs x 2 samples per interval of ~20 events: each event expects ~6 picks; none should starve
    assert counts.sum() == 60 * 2 * 10
    assert (counts > 0).float().mean() > 0.9
    assert counts.max() < 25


# ---------------------------------------------------------------------- a real, small run


@pytest.fixture(scope="module")
def demo(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("features")
    db_path, sae_dir = build_demo_db(out, model, d_sae=256, layer=2, n_tokens=2048, context_size=64)
    return db_path, sae_dir


def _brute_codes(model, sae_obj, n_rows=32, context=64, batch=8):
    """Codes of every token of the demo rows, batched exactly as the pass does: [R, T, F]."""
    rows = torch.stack(demo_rows(model.tokenizer, n_rows, context))
    hook = sae_obj.cfg.hook_name
    ex = extractor_for(model, hook)
    D = torch.zeros(rows.shape[0], rows.shape[1], sae_obj.cfg.d_sae)
    for b0 in range(0, rows.shape[0], batch):
        res = ex(rows[b0 : b0 + batch])
        keep = res.keep[hook]
        with torch.no_grad():
            D[b0 : b0 + batch][keep] = sae_obj.encode(res.acts[hook]).float()
    return rows, D


def test_database_matches_brute_force(model, demo):
    db_path, sae_dir = demo
    s = sae.load_sae(sae_dir)
    rows, D = _brute_codes(model, s)
    db = FeatureDB(db_path)
    F = s.cfg.d_sae
    flat = D.reshape(-1, F)
    n_tok = int(db.meta["n_tokens"])
    assert db.n_features == F and db.meta["hook_name"] == "blocks.2.hook_resid_post"
    summ = db.summaries()
    fired = (flat > 0).sum(0).numpy()
    assert np.array_equal(summ["n_fired"], fired)
    assert np.allclose(summ["density"], fired / n_tok)
    assert summ["dead"][0] and not summ["dead"][1:].all()
    assert np.allclose(summ["max_act"], flat.max(0).values.numpy(), rtol=1e-6)
    checked = 0
    for f in range(0, F, 3):  # every third latent in full detail (windows, intervals)
        feat = db.feature(f)
        col = flat[:, f]
        if feat.dead:
            assert feat.top_examples == [] and col.max() == 0
            continue
        assert feat.max_act == pytest.approx(float(col.max()), rel=1e-6)
        want_top = col.topk(min(20, int((col > 0).sum()))).values.tolist()
        assert [e.act for e in feat.top_examples] == pytest.approx(want_top, rel=1e-6)
        e = feat.top_examples[0]
        r, p = e.row, e.pos
        lo = max(0, p - 8)
        assert e.token_ids == rows[r, lo : p + 9].tolist()
        assert e.acts == pytest.approx(D[r, lo : p + 9, f].tolist(), rel=1e-5, abs=1e-6)
        assert e.acts[e.center] == pytest.approx(e.act)
        assert sum(feat.hist_counts) == feat.n_fired
        v = col[col > 0].double()
        for iv in feat.intervals:
            inside = (v >= iv.lo) & ((v < iv.hi) if iv.index < 9 else (v <= iv.hi))
            assert iv.n_events == int(inside.sum())
            assert len(iv.examples) == min(5, iv.n_events)
            for ex in iv.examples:
                assert iv.lo <= ex.act <= iv.hi
                assert D[ex.row, ex.pos, f] == pytest.approx(ex.act, rel=1e-6)
        checked += 1
    assert checked > F // 6


def test_cache_replay_equals_live_pass(model, demo, tmp_path):
    """`--cache` replays an activation cache: same rows, same filter -> the same database values."""
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"Paragraph {i}. The Eiffel Tower is in Paris; rivers flow to the sea {i}." for i in range(80)))
    data_cfg = DataConfig(source=str(text), context_size=32)
    cache_dir = sae.build_cache(
        sae.CacheConfig(out_dir=str(tmp_path / "acts"), hooks=["blocks.2.hook_resid_post"], n_tokens=512,
                        data=data_cfg, batch_size=4, shard_tokens=256),
        model=model, progress=False,
    )
    s = sae.load_sae(demo[1])
    common = dict(sae_path=str(demo[1]), n_tokens=512, batch_size=4, data=data_cfg)
    live = FeatureDB(sae.build_feature_db(FeaturesConfig(out_path=str(tmp_path / "live.sqlite"), **common),
                                          model=model, sae=s, progress=False))
    cached = FeatureDB(sae.build_feature_db(
        FeaturesConfig(out_path=str(tmp_path / "cached.sqlite"), cache_dir=str(cache_dir), **common),
        model=model, sae=s, progress=False))
    assert cached.meta["n_rows"] == live.meta["n_rows"] == 16
    a, b = live.summaries(), cached.summaries()
    assert np.array_equal(a["n_fired"], b["n_fired"])
    assert np.allclose(a["max_act"], b["max_act"], rtol=1e-5)
    f = int(a["n_fired"].argmax())
    ea, eb = live.feature(f).top_examples, cached.feature(f).top_examples
    assert [e.act for e in ea] == pytest.approx([e.act for e in eb], rel=1e-5)
    assert [e.token_ids for e in ea[:3]] == [e.token_ids for e in eb[:3]]
    with pytest.raises(ValueError, match="has hooks"):
        bad = sae.load_sae(demo[1])
        bad.cfg.hook_name = "blocks.1.hook_resid_post"
        sae.build_feature_db(FeaturesConfig(out_path=str(tmp_path / "x.sqlite"), cache_dir=str(cache_dir), **common),
                             model=model, sae=bad, progress=False)


def test_logit_lens_and_neighbours(model, demo):
    db_path, sae_dir = demo
    s = sae.load_sae(sae_dir)
    db = FeatureDB(db_path)
    W_U = model.W_U.detach().float()
    ln_w = dict(model.ln_final.named_parameters())[next(n for n, _ in model.ln_final.named_parameters() if n.endswith("weight"))]
    unit = s.W_dec.detach() / s.W_dec.detach().norm(dim=1, keepdim=True)
    for f in (1, 17, 200):
        logits = (s.W_dec[f].detach() * ln_w.detach()) @ W_U
        feat = db.feature(f)
        assert [t for t, _, _ in feat.top_logits] == logits.topk(10).indices.tolist()
        assert [t for t, _, _ in feat.bottom_logits] == (-logits).topk(10).indices.tolist()
        assert feat.top_logits[0][2] == pytest.approx(float(logits.max()), rel=1e-4)
        assert sum(feat.logit_counts) == W_U.shape[1]
        cos = unit @ unit[f]
        cos[f] = -2
        assert [j for j, _ in feat.neighbours] == cos.topk(10).indices.tolist()


def test_search_and_text(model, demo):
    db = FeatureDB(demo[0])
    f = db.feature(5)
    tok = f.top_logits[0][1]
    assert any(h.feature == 5 for h in db.search_logit(tok, limit=1000))
    assert db.search_logit("no-such-token-anywhere") == []
    hits = db.search_text("Eiffel")
    assert hits and all("eiffel" in h.text.lower() for h in hits)
    assert db.search_text("50%_") == [] or all("50%_" in h.text for h in db.search_text("50%_"))


def test_text_activations_match_the_encoder(model, demo):
    s = sae.load_sae(demo[1])
    ta = sae.text_activations(model, s, "The Eiffel Tower is in Paris.")
    assert ta.token_ids[0] == model.tokenizer.bos_token_id and ta.skipped[0]
    assert float(ta.codes[0].abs().sum()) == 0.0
    hook = s.cfg.hook_name
    res = extractor_for(model, hook)(torch.tensor([ta.token_ids]))
    with torch.no_grad():
        want = s.encode(res.acts[hook])
    assert torch.allclose(ta.codes[res.keep[hook][0]], want, atol=1e-5)
    assert ta.top_features(1, 3) and all(v > 0 for _, v in ta.top_features(1, 3))


# ---------------------------------------------------------------------- errors that say what to do


def test_bad_databases(tmp_path, demo):
    with pytest.raises(FeatureDBError, match="no feature database.*saekit analyze"):
        FeatureDB(tmp_path / "missing.sqlite")
    with pytest.raises(FeatureDBError, match="is a folder"):
        FeatureDB(tmp_path)
    junk = tmp_path / "junk.sqlite"
    junk.write_text("hello, not a database")
    with pytest.raises(FeatureDBError, match="not a SQLite file"):
        FeatureDB(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(FeatureDBError, match="not a saekit feature database"):
        FeatureDB(other)
    for key, value, match in (("schema_version", 0, "schema version 0"), ("complete", False, "not finished")):
        bad = tmp_path / f"bad_{key}.sqlite"
        bad.write_bytes(demo[0].read_bytes())
        con = sqlite3.connect(bad)
        con.execute("UPDATE meta SET value = ? WHERE key = ?", (json.dumps(value), key))
        con.commit()
        con.close()
        with pytest.raises(FeatureDBError, match=match):
            FeatureDB(bad)
    db = FeatureDB(demo[0])
    with pytest.raises(FeatureDBError, match="does not exist.*0..255"):
        db.feature(256)


def test_sae_mismatch_is_detected(demo):
    from sae.features.demo_db import random_sae

    db = FeatureDB(demo[0])
    db.check_sae(sae.load_sae(demo[1]))
    with pytest.raises(FeatureDBError, match="d_sae=128"):
        db.check_sae(random_sae(d_sae=128))
    with pytest.raises(FeatureDBError, match="reads blocks.3"):
        db.check_sae(random_sae(layer=3))
    with pytest.raises(FeatureDBError, match="has changed"):
        db.check_sae(random_sae(seed=1))


def test_existing_database_is_kept(model, demo, tmp_path):
    db_path, sae_dir = demo
    before = db_path.read_bytes()
    cfg = FeaturesConfig(sae_path=str(sae_dir), out_path=str(db_path), n_tokens=64, data=DataConfig(context_size=64))
    with pytest.raises(FileExistsError, match="--force"):
        sae.build_feature_db(cfg, model=model, rows=demo_rows(model.tokenizer, 1))
    assert db_path.read_bytes() == before
    assert not list(db_path.parent.glob("*.tmp"))


def test_cli_analyze(model, demo, tmp_path, monkeypatch, capsys):
    from app.cli import main

    monkeypatch.setattr(sae, "load_model", lambda *a, **k: model)
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"Document {i}: the quick brown fox jumps over the lazy dog {i} times." for i in range(60)))
    out = tmp_path / "cli.sqlite"
    rc = main(["analyze", str(demo[1]), "--tokens", "256", "--out", str(out), "--data", str(text),
               "--device", "cpu", "--set", "data.context_size=32", "--set", "batch_size=4"])
    assert rc == 0, capsys.readouterr().err
    assert "saekit explore" in capsys.readouterr().out
    db = FeatureDB(out)
    assert db.meta["n_rows"] == 8 and db.meta["context_size"] == 32
    assert main(["analyze", str(tmp_path / "nope"), "--tokens", "10"]) == 2
    assert "no SAE at" in capsys.readouterr().err
    assert main(["analyze", str(demo[1]), "--tokens", "10", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
