"""Activation cache: contents, outlier filtering, resume, checksums, bad input, disk full, CLI."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sae
import sae.atomic_io as atomic_io
import sae.shards as shards
from sae.activation_cache import CacheError, build_cache, read_manifest, verify_cache
from sae.atomic_io import DiskFullError
from sae.config import CacheConfig, DataConfig
from sae.data import token_rows
from sae.extract import ActivationExtractor
from sae.manifest import CacheManifest
from sae.model import HookError

HOOKS = ["blocks.2.hook_resid_post", "blocks.1.hook_mlp_out"]
T = 64
ROWS = 12


CORPUS = Path(__file__).resolve().parents[1] / "data" / "tiny_corpus.jsonl"  # prose + chats


@pytest.fixture(scope="module")
def corpus() -> Path:
    return CORPUS


def config(out: Path, corpus: Path, **kw) -> CacheConfig:
    base = dict(
        out_dir=str(out),
        hooks=list(HOOKS),
        n_tokens=ROWS * T,  # 4 shards of 3 rows
        shard_tokens=3 * T,
        batch_size=2,  # does not divide a shard: partial batches are exercised
        data=DataConfig(source=str(corpus), context_size=T),
    )
    base.update(kw)
    return CacheConfig(**base)


@pytest.fixture(scope="module")
def ref_cache(model, corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "acts"
    build_cache(config(out, corpus), model=model, progress=False)
    return out


def assert_same_cache(a: Path, b: Path) -> None:
    """Same shards, rows, tokens and masks; activations equal up to float noise (BLAS threading
    under load may change summation order between runs, so bit-equality is not promised)."""
    ma, mb = read_manifest(a), read_manifest(b)
    assert ma["complete"] and mb["complete"] and ma["fingerprint"] == mb["fingerprint"]
    assert [e["file"] for e in ma["shards"]] == [e["file"] for e in mb["shards"]]
    for ea in ma["shards"]:
        ta, tb = load_file(a / ea["file"]), load_file(b / ea["file"])
        assert ta.keys() == tb.keys()
        for k in ta:
            if k.startswith("acts."):
                assert torch.allclose(ta[k], tb[k], rtol=1e-4, atol=1e-3), (ea["file"], k)
            else:
                assert torch.equal(ta[k], tb[k]), (ea["file"], k)


# --------------------------------------------------------------------------- contents


def test_manifest_and_shards(ref_cache: Path, model, corpus: Path) -> None:
    m = verify_cache(ref_cache)
    assert m["complete"] and m["hooks"] == HOOKS and m["d_model"] == 576
    assert m["context_size"] == T and m["n_rows"] == ROWS and m["n_tokens"] == ROWS * T
    assert m["dtype"] == "float32" and m["model"] == "smollm2-135m-instruct"
    assert [e["file"] for e in m["shards"]] == [f"shard-0000{i}.safetensors" for i in range(4)]
    assert all(len(e["sha256"]) == 64 for e in m["shards"])
    assert m["config"]["data"]["source"] == str(corpus)
    rows = torch.stack(list(token_rows(DataConfig(source=str(corpus), context_size=T), model.tokenizer))[:ROWS])
    specials = torch.tensor(m["special_token_ids"])
    for h in HOOKS:
        kept = special = norm = 0
        for e in m["shards"]:
            t = load_file(ref_cache / e["file"])
            lo, n = e["row_start"], e["rows"]
            assert torch.equal(t["tokens"].long(), rows[lo : lo + n])
            assert t["rows"].tolist() == list(range(lo, lo + n))
            keep = t[f"keep.{h}"]
            assert keep.shape == (n, T) and t[f"acts.{h}"].shape == (int(keep.sum()), 576)
            assert not keep[:, 0].any()  # BOS never kept (residual-like hook)
            assert not (keep & torch.isin(t["tokens"].long(), specials)).any()
            kept += e["n_kept"][h]
            special += e["n_dropped_special"][h]
            norm += e["n_dropped_norm"][h]
        stats = m["hook_stats"][h]
        assert (stats["n_kept"], stats["n_dropped_special"], stats["n_dropped_norm"]) == (kept, special, norm)
        assert kept + special + norm == ROWS * T
        assert special >= ROWS  # at least every BOS


def test_cache_manifest_is_the_parsed_manifest(ref_cache: Path) -> None:
    raw, m = read_manifest(ref_cache), CacheManifest.read(ref_cache)
    assert m.path == ref_cache and m.complete and not m.exhausted and m.hooks == tuple(HOOKS)
    assert (m.model, m.context_size, m.dtype, m.d_model) == ("smollm2-135m-instruct", T, "float32", 576)
    assert (m.n_rows, m.n_tokens, m.fingerprint) == (ROWS, ROWS * T, raw["fingerprint"])
    assert list(m.shards) == raw["shards"] and m.config == raw["config"]
    for h in HOOKS:
        assert m.d_in_of(h) == 576 and m.n_kept(h) == raw["hook_stats"][h]["n_kept"]
    with pytest.raises(CacheError, match="no hook 'x'.*saekit cache --hook"):
        m.d_in_of("x")


@pytest.mark.parametrize(
    ("edit", "phrases"),
    [
        (lambda m: m.pop("hooks"), ["has no 'hooks' field", "re-run `saekit cache`"]),
        (lambda m: m.update(context_size="128"), ["'context_size' should be of type int", "re-run `saekit cache`"]),
        (lambda m: m.update(format="other"), ["is not a saekit activation manifest"]),
    ],
)
def test_cache_manifest_errors_name_the_file_and_the_fix(tmp_path, ref_cache, edit, phrases) -> None:
    d = tmp_path / "acts"
    d.mkdir()
    doc = read_manifest(ref_cache)
    edit(doc)
    (d / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(CacheError) as info:
        CacheManifest.read(d)
    assert str(d / "manifest.json") in str(info.value)
    for phrase in phrases:
        assert phrase in str(info.value)
    with pytest.raises(CacheError, match=f"no activation cache at {tmp_path / 'none'}.*saekit cache --out"):
        CacheManifest.read(tmp_path / "none")


def test_cached_acts_equal_the_bridge_at_kept_positions(ref_cache: Path, model) -> None:
    e = read_manifest(ref_cache)["shards"][1]
    t = load_file(ref_cache / e["file"])
    tokens = t["tokens"].long()
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=HOOKS, stop_at_layer=3)
    for h in HOOKS:
        ref = cache[h][t[f"keep.{h}"]]
        got = t[f"acts.{h}"]
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-3 * ref.abs().max().item())


def test_fast_path_matches_bridge_for_every_hook_kind(model) -> None:
    hooks = [
        "blocks.2.hook_resid_pre", "blocks.2.hook_resid_mid", "blocks.2.hook_resid_post",
        "blocks.2.attn.hook_out", "blocks.2.hook_mlp_out", "hook_embed",
    ]
    tokens = torch.randint(3, 40_000, (2, 24))
    tokens[:, 0] = 1
    fast = ActivationExtractor(model, hooks, engine="fast").raw(tokens)
    ref = ActivationExtractor(model, hooks, engine="bridge").raw(tokens)
    for h in hooks:
        err = (fast[h] - ref[h]).norm() / ref[h].norm()
        assert err < 1e-4, (h, err)


def test_norm_filter_drops_outliers_relative_to_row_median(model) -> None:
    tokens = torch.randint(3, 40_000, (3, 32))
    tokens[:, 0] = 1
    ex = ActivationExtractor(model, ["blocks.2.hook_resid_post"], max_norm_ratio=1.2)
    res = ex(tokens)
    h = "blocks.2.hook_resid_post"
    raw = ex.raw(tokens)[h]
    norms = raw.norm(dim=-1)
    assert res.n_dropped_special[h] == 3 and res.n_dropped_norm[h] > 0
    for r in range(3):
        med = norms[r, 1:].median()
        assert (norms[r][res.keep[h][r]] <= 1.2 * med + 1e-3).all()
    everything = ActivationExtractor(model, [h], max_norm_ratio=None, exclude_special_tokens=False)(tokens)
    assert everything.keep[h].all() and everything.acts[h].shape[0] == 3 * 32


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_storage_dtypes(tmp_path: Path, model, corpus: Path, ref_cache: Path, dtype: str) -> None:
    out = tmp_path / dtype
    cfg = config(out, corpus, n_tokens=3 * T, dtype=dtype, batch_size=3)
    build_cache(cfg, model=model, progress=False)
    m = verify_cache(out)
    assert m["dtype"] == dtype
    got = load_file(out / "shard-00000.safetensors")
    ref = load_file(ref_cache / "shard-00000.safetensors")
    for h in HOOKS:
        assert got[f"acts.{h}"].dtype == getattr(torch, dtype)
        assert torch.equal(got[f"keep.{h}"], ref[f"keep.{h}"])
        assert torch.allclose(got[f"acts.{h}"].float(), ref[f"acts.{h}"], rtol=1e-2, atol=0.05)


# --------------------------------------------------------------------------- resume


def test_interrupted_run_resumes_to_the_same_result(tmp_path, model, corpus, ref_cache, monkeypatch) -> None:
    out = tmp_path / "acts"
    real = shards.write_shard
    calls = []
    die = [True]

    def dying(out_dir, index, tensors, info):
        calls.append(index)
        if index == 2 and die[0]:
            raise RuntimeError("killed")  # the process dies before shard 2 reaches the disk
        return real(out_dir, index, tensors, info)

    monkeypatch.setattr("sae.activation_cache.write_shard", dying)
    with pytest.raises(RuntimeError, match="killed"):
        build_cache(config(out, corpus), model=model, progress=False)
    partial = read_manifest(out)
    assert not partial["complete"] and [e["index"] for e in partial["shards"]] == [0, 1]
    with pytest.raises(CacheError, match="incomplete"):
        sae.ActivationStore.from_cache(out, hook=HOOKS[0])
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-0000[01].safetensors")}
    calls.clear()
    die[0] = False
    build_cache(config(out, corpus), model=model, progress=False)
    assert calls == [2, 3]  # complete shards were skipped, not recomputed
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-0000[01].safetensors")} == before
    assert_same_cache(out, ref_cache)  # the same as an uninterrupted run
    verify_cache(out)


def test_extending_keeps_existing_shards(tmp_path, model, corpus, ref_cache) -> None:
    out = tmp_path / "acts"
    build_cache(config(out, corpus, n_tokens=8 * T), model=model, progress=False)  # 2.67 shards
    first = read_manifest(out)
    assert first["n_rows"] == 8 and first["shards"][-1]["rows"] == 2
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-0000[01].safetensors")}
    build_cache(config(out, corpus), model=model, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-0000[01].safetensors")} == before
    assert_same_cache(out, ref_cache)


# --------------------------------------------------------------------------- corruption


def test_corrupt_and_truncated_shards_are_named(tmp_path: Path, ref_cache: Path) -> None:
    d = tmp_path / "acts"
    shutil.copytree(ref_cache, d)
    target = d / "shard-00001.safetensors"
    blob = bytearray(target.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    target.write_bytes(bytes(blob))
    with pytest.raises(CacheError, match=r"shard-00001\.safetensors is corrupt: sha256"):
        verify_cache(d)
    with pytest.raises(CacheError, match="shard-00001"):  # never silent garbage
        cfg = sae.StoreConfig(device="cpu", buffer_tokens=512)
        store = sae.ActivationStore.from_cache(d, hook=HOOKS[0], cfg=cfg)
        for _ in store.batches(2 * store.n_tokens):
            pass
    short = d / "shard-00002.safetensors"
    short.write_bytes(short.read_bytes()[:-100])
    with pytest.raises(CacheError, match=r"shard-00002\.safetensors is truncated"):
        sae.ActivationStore.from_cache(d, hook=HOOKS[0])


def test_disk_full_mid_shard(tmp_path, model, corpus, ref_cache, monkeypatch) -> None:
    out = tmp_path / "acts"
    real = atomic_io._write_bytes

    def full_disk(fh, data):
        if "shard-00002.safetensors" in fh.name:
            real(fh, data[: len(data) // 2])  # half the bytes land, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, data)

    monkeypatch.setattr(atomic_io, "_write_bytes", full_disk)
    with pytest.raises(DiskFullError, match="disk full.*shard-00002.*partial file was removed"):
        build_cache(config(out, corpus), model=model, progress=False)
    assert not list(out.glob(".*tmp*")) and not (out / "shard-00002.safetensors").exists()
    m = read_manifest(out)  # intact, and describes exactly the complete shards
    assert [e["file"] for e in m["shards"]] == ["shard-00000.safetensors", "shard-00001.safetensors"]
    verify_cache(out)
    monkeypatch.setattr(atomic_io, "_write_bytes", real)
    build_cache(config(out, corpus), model=model, progress=False)
    assert_same_cache(out, ref_cache)


# --------------------------------------------------------------------------- bad input


def test_unknown_hook_lists_nearest(tmp_path, model, corpus) -> None:
    with pytest.raises(HookError, match=r"nearest valid hooks: .*blocks\.2\.hook_resid_post"):
        build_cache(config(tmp_path / "x", corpus, hooks=["blocks.2.hook_resid_pots"]), model=model)


def test_layer_beyond_the_model(tmp_path, model, corpus) -> None:
    with pytest.raises(HookError, match="layer 40.*30 layers"):
        build_cache(config(tmp_path / "x", corpus, hooks=["blocks.40.hook_resid_post"]), model=model)


def test_other_settings_in_the_same_folder(tmp_path, model, corpus, ref_cache) -> None:
    d = tmp_path / "acts"
    shutil.copytree(ref_cache, d)
    with pytest.raises(CacheError, match="different settings"):
        build_cache(config(d, corpus, hooks=["blocks.1.hook_resid_post"]), model=model, progress=False)


def test_missing_cache_and_bad_dtype(tmp_path, corpus) -> None:
    with pytest.raises(CacheError, match="no activation cache"):
        read_manifest(tmp_path / "nothing")
    with pytest.raises(ValueError, match="dtype"):
        build_cache(config(tmp_path / "x", corpus, dtype="int8"))


# --------------------------------------------------------------------------- CLI


def test_cli_cache_and_verify(tmp_path, model, corpus, ref_cache, monkeypatch, capsys) -> None:
    from app.cli import main

    monkeypatch.setattr("sae.activation_cache.load_model", lambda *a, **k: model)
    out = tmp_path / "cli"
    argv = [
        "cache", "--hook", HOOKS[0], "--hook", HOOKS[1], "--tokens", str(ROWS * T), "--out", str(out),
        "--source", str(corpus), "--batch-size", "2", "--no-progress",
        "--set", f"data.context_size={T}", "--set", f"shard_tokens={3 * T}",
    ]
    assert main(argv) == 0
    assert f"cached {ROWS * T:,} tokens" in capsys.readouterr().out
    assert_same_cache(out, ref_cache)
    assert main(["cache", "--verify", str(out)]) == 0
    assert "4 shards verified, complete" in capsys.readouterr().out
    assert main(["cache", "--layer", "40", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "30 layers" in capsys.readouterr().err
