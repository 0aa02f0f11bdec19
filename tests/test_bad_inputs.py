"""The README's bad-input table (section "Reliability"): one test per row.

Each test feeds one bad input the way a user would (`saekit ...`, or the explorer page) and
checks (a) the exit code or exception type, (b) that the message names the problem and the fix,
and (c) that every file already written is byte-for-byte what it was before. Where the message
gives a fix that is a command, the test runs that command too and checks that it works.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save, save_file

import sae
import sae.activation_cache as sae_cache
import sae.atomic_io as atomic_io
import sae.model as sae_model
from app.cli import main

CORPUS = Path(__file__).resolve().parent / "data" / "tiny_corpus.jsonl"
HOOK = "blocks.2.hook_resid_post"
T = 64


def cache_args(hook: list[str], tokens: int = 12 * T, shard_tokens: int = 3 * T) -> list[str]:
    """`saekit cache` arguments; by default 12 rows of 64 tokens in 4 shards of 3 rows, small
    enough to rebuild a shard in a second."""
    return [*hook, "--tokens", str(tokens), "--source", str(CORPUS), "--batch-size", "4", "--no-progress",
            "--set", f"data.context_size={T}", "--set", f"shard_tokens={shard_tokens}"]


CACHE_ARGS = cache_args(["--hook", HOOK])
TRAIN_ARGS = ["--arch", "topk", "--k", "8", "--d-sae", "64", "--tokens", str(24 * T), "--batch-size", "128",
              "--no-progress"]


# --------------------------------------------------------------------------- helpers


def saekit(capsys: pytest.CaptureFixture, *argv: str | Path) -> tuple[int, str]:
    """Run the CLI as a user would; return its exit code and the error line it printed."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    return rc, lines[-1] if lines else err


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path (new, changed or missing files show)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_mentions(message: str, *phrases: str) -> None:
    missing = [p for p in phrases if p not in message]
    assert not missing, f"{missing} not in: {message}"


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cli_model(model) -> Iterator[None]:
    """Every command gets the session's model instead of loading its own (2-5 s each)."""
    with pytest.MonkeyPatch.context() as mp:
        for owner in (sae, sae_model, sae_cache):
            mp.setattr(owner, "load_model", lambda *a, **k: model)
        yield


@pytest.fixture(scope="module")
def cache(cli_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "acts"
    assert main(["cache", *CACHE_ARGS, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory) -> Path:
    """A finished `saekit train` run: the SAE, its config and its trainer checkpoints."""
    out = tmp_path_factory.mktemp("run") / "sae"
    assert main(["train", "--cache", str(cache), "--out", str(out), *TRAIN_ARGS]) == 0
    return out


@pytest.fixture(scope="module")
def narrow_sae(tmp_path_factory) -> Path:
    """An SAE of width 16 that names this model's 576-wide hook (as if from another model)."""
    cfg = sae.SAEConfig(architecture="topk", d_in=16, d_sae=32, k=4, hook_name=HOOK,
                        model_name="smollm2-135m-instruct")
    return sae.save_sae(sae.build_sae(cfg), tmp_path_factory.mktemp("narrow") / "sae")


# --------------------------------------------------------------------------- hooks and widths


@pytest.mark.parametrize("command", ["cache", "train"])
def test_wrong_hook_name(command, cache, run, tmp_path, capsys) -> None:
    if command == "cache":  # into an existing cache: it must survive
        target = copy_tree(cache, tmp_path / "acts")
        argv = ["cache", *cache_args(["--hook", "blocks.2.hook_resid_pots"]), "--out", target]
        phrases = ["unknown hook 'blocks.2.hook_resid_pots'", f"nearest valid hooks: {HOOK}", "`saekit hooks`"]
    else:  # over an existing run: it must survive
        target = copy_tree(run, tmp_path / "sae")
        argv = ["train", "--cache", cache, "--out", target, *TRAIN_ARGS, "--hook", "blocks.3.hook_resid_post"]
        phrases = ["'blocks.3.hook_resid_post' is not in the cache", f"it holds ['{HOOK}']", "(use --hook)"]
    before = checksums(target)
    rc, err = saekit(capsys, *argv)
    assert rc == 2
    assert_mentions(err, *phrases)
    assert checksums(target) == before


def test_layer_out_of_range(cache, tmp_path, capsys) -> None:
    target = copy_tree(cache, tmp_path / "acts")
    before = checksums(target)
    rc, err = saekit(capsys, "cache", *cache_args(["--layer", "40"]), "--out", target)
    assert rc == 2
    assert_mentions(err, "asks for layer 40", "the model has 30 layers (0..29)", "choose a layer in that range")
    assert checksums(target) == before


D_IN_CASES = {
    "train --d-in vs cache": (["train", "--cache", "{cache}", "--out", "{run}", *TRAIN_ARGS, "--d-in", "512"],
                              ["SAE d_in=512", "have d_in=576", "--d-in 576"]),
    "eval: SAE vs cache": (["eval", "{narrow}", "--cache", "{cache}", "--ce-batches", "0", "--no-png"],
                           ["holds d_in=576", "the SAE has d_in=16", "point --cache at a cache of that hook"]),
    "eval: SAE vs model hook": (["eval", "{narrow}", f"data.source={CORPUS}", f"data.context_size={T}",
                                 "--tokens", "256", "--ce-batches", "0", "--no-png"],
                                ["have width 576", "expects d_in=16", "Evaluate it with that model"]),
    "analyze: SAE vs model hook": (["analyze", "{narrow}", "--tokens", "256", "--data", str(CORPUS),
                                    "--set", f"data.context_size={T}"],
                                   ["size 576", "expects d_in=16", "--set model.name=NAME"]),
    "steer: SAE vs model hook": (["steer", "{narrow}", "--feature", "3", "--strength", "2", "--prompt", "Hi",
                                  "--max-new-tokens", "4"],
                                 ["SAE d_in is 16", "has width 576", "use the SAE trained on this hook"]),
}


@pytest.mark.parametrize("case", list(D_IN_CASES))
def test_d_in_mismatch(case, cache, run, narrow_sae, tmp_path, capsys) -> None:
    """Never a silent reshape: eval on the model once turned 576-wide vectors into 36x as many
    16-wide ones and printed metrics."""
    paths = {"cache": cache, "run": copy_tree(run, tmp_path / "run"),
             "narrow": copy_tree(narrow_sae, tmp_path / "narrow")}
    argv, phrases = D_IN_CASES[case]
    before = {k: checksums(p) for k, p in paths.items()}
    rc, err = saekit(capsys, *[a.format(**paths) for a in argv])
    assert rc == 2
    assert_mentions(err, *phrases)
    assert {k: checksums(p) for k, p in paths.items()} == before  # no eval.json, no features.sqlite


# --------------------------------------------------------------------------- the activation cache


def _damage(shard: Path, how: str) -> None:
    blob = bytearray(shard.read_bytes())
    if how == "corrupt":
        blob[len(blob) // 2] ^= 0xFF
    else:
        del blob[-100:]
    shard.write_bytes(bytes(blob))


@pytest.mark.parametrize("how", ["corrupt", "truncated"])
def test_damaged_shard(how, cache, tmp_path, capsys) -> None:
    acts = copy_tree(cache, tmp_path / "acts")
    shard = acts / "shard-00001.safetensors"
    _damage(shard, how)
    before = checksums(acts)
    rc, err = saekit(capsys, "train", "--cache", acts, "--out", tmp_path / "sae", *TRAIN_ARGS)
    assert rc == 2
    problem = "is corrupt: sha256" if how == "corrupt" else "is truncated or altered"
    assert_mentions(err, f"shard-00001.safetensors {problem}",
                    "delete it and re-run `saekit cache` with the same arguments")
    assert checksums(acts) == before and not (tmp_path / "sae" / "cfg.json").exists()
    # the fix, as written: only the damaged shard is recomputed, the others keep their bytes
    shard.unlink()
    assert saekit(capsys, "cache", *CACHE_ARGS, "--out", acts)[0] == 0
    assert saekit(capsys, "cache", "--verify", acts)[0] == 0
    after, original = checksums(acts), checksums(cache)
    assert {k: v for k, v in after.items() if "00001" not in k and k != "manifest.json"} == {
        k: v for k, v in original.items() if "00001" not in k and k != "manifest.json"}
    old, new = load_file(str(cache / shard.name)), load_file(str(shard))
    assert old.keys() == new.keys() and all(torch.allclose(old[k].float(), new[k].float(), atol=1e-3) for k in old)


def _poison(acts: Path, index: int) -> None:
    """Write NaN into a shard with a matching sha256, as a model that overflowed would have."""
    shard = acts / f"shard-{index:05d}.safetensors"
    with safe_open(str(shard), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(shard))
    tensors[f"acts.{HOOK}"][-1, 3] = float("nan")
    payload = save(tensors, metadata=meta)
    shard.write_bytes(payload)
    fix = {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
    side = acts / f"shard-{index:05d}.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), **fix}))
    manifest = json.loads((acts / "manifest.json").read_text())
    manifest["shards"][index].update(fix)
    (acts / "manifest.json").write_text(json.dumps(manifest))


def test_nan_in_the_cache(cache, tmp_path, capsys) -> None:
    acts = copy_tree(cache, tmp_path / "acts")
    _poison(acts, 3)
    assert saekit(capsys, "cache", "--verify", acts)[0] == 0  # checksums cannot see it
    before = checksums(acts)
    rc, err = saekit(capsys, "train", "--cache", acts, "--out", tmp_path / "sae", *TRAIN_ARGS)
    assert rc == 2
    assert_mentions(err, "shard-00003.safetensors holds NaN or inf activations", HOOK,
                    "Rebuild the cache into a new --out in float32", "--dtype float32")
    assert checksums(acts) == before and not (tmp_path / "sae" / "cfg.json").exists()


class _Stream:
    """16-wide batches that turn NaN at batch `nan_at`; records the checkpoints just before."""

    def __init__(self, ckpt: Path, nan_at: int | None = None) -> None:
        self.ckpt, self.nan_at, self.pos = ckpt, nan_at, 0
        self.d_in, self.normalization_scale = 16, 1.0
        self.before_nan: dict[str, str] | None = None

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> torch.Tensor:
        x = torch.randn(128, 16, generator=torch.Generator().manual_seed(self.pos))
        if self.pos == self.nan_at:
            self.before_nan = checksums(self.ckpt)
            x[5, 2] = float("nan")
        self.pos += 1
        return x

    def state_dict(self) -> dict:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pos = int(state["pos"])


def test_nan_during_training(tmp_path) -> None:
    from sae.training.resume import latest_checkpoint, read_checkpoint
    from sae.training.trainer import Trainer, TrainingDivergedError

    cfg = sae.TrainConfig(out_dir=str(tmp_path), n_tokens=128 * 10, checkpoint_every_tokens=128 * 2,
                          saes=[sae.SAEConfig(architecture="topk", d_in=16, d_sae=32, k=4)], progress=False)
    stream = _Stream(tmp_path / "checkpoints", nan_at=7)
    with pytest.raises(TrainingDivergedError) as err:
        Trainer(cfg).fit(stream)
    assert_mentions(str(err.value), "loss became nan at step 7", "the step was not applied",
                    "step_000000006 is intact", "input batch itself holds NaN/inf", "--dtype float32")
    assert stream.before_nan and checksums(tmp_path / "checkpoints") == stream.before_nan
    meta, _ = read_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert meta["step"] == 6 and not (tmp_path / "cfg.json").exists()
    resumed = Trainer(cfg)  # clean data again: the run continues from step 6
    resumed.fit(_Stream(tmp_path / "checkpoints"))
    assert resumed.step_idx == 10 and (tmp_path / "cfg.json").exists()


def test_loss_diverges_without_bad_input(cache, tmp_path, capsys) -> None:
    rc, err = saekit(capsys, "train", "--cache", cache, "--out", tmp_path / "sae", *TRAIN_ARGS, "--lr", "1e30")
    assert rc == 2
    assert_mentions(err, "loss became nan at step 1", "the step was not applied",
                    "no checkpoint had been written yet", "lower lr (now 1e+30)")
    assert not (tmp_path / "sae" / "cfg.json").exists()


# --------------------------------------------------------------------------- SAE checkpoints


CFG_DAMAGE = {
    "cut short": lambda text: text[:200],
    "no d_sae": lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k not in ("d_sae", "saekit")}),
    "not an object": lambda text: "[1, 2]",
}
CFG_CASES = [("eval", "cut short"), ("eval", "no d_sae"), ("eval", "not an object"), ("steer", "cut short"),
             ("analyze", "cut short")]
CFG_PROBLEM = {"cut short": "not valid JSON", "no d_sae": "'d_sae' must be a positive integer, got None",
               "not an object": "must hold a JSON object, got list"}


@pytest.mark.parametrize(("command", "damage"), CFG_CASES)
def test_malformed_cfg_json(command, damage, cache, run, tmp_path, capsys) -> None:
    folder = copy_tree(run, tmp_path / "sae")
    good = (folder / "cfg.json").read_bytes()
    (folder / "cfg.json").write_text(CFG_DAMAGE[damage](good.decode()))
    before = checksums(folder)
    rest = {"eval": ["--cache", cache, "--ce-batches", "0", "--no-png"],
            "steer": ["--feature", "3", "--prompt", "Hi", "--max-new-tokens", "4"],
            "analyze": ["--tokens", "256", "--cache", cache]}[command]
    rc, err = saekit(capsys, command, folder, *rest)
    assert rc == 2
    fix = f"saekit train --config {folder / 'train_config.json'} --out {folder}"
    assert_mentions(err, f"{folder / 'cfg.json'}: {CFG_PROBLEM[damage]}", "the file is damaged", fix)
    assert checksums(folder) == before
    assert saekit(capsys, *fix.split()[1:])[0] == 0  # the fix, as written, restores the file
    assert (folder / "cfg.json").read_bytes() == good


def test_saelens_checkpoint_of_unknown_architecture(cache, tmp_path, capsys) -> None:
    folder = tmp_path / "crosscoder"
    folder.mkdir()
    cfg = {"architecture": "crosscoder", "d_in": 576, "d_sae": 64, "dtype": "float32", "normalize_activations": "none",
           "metadata": {"model_name": "smollm2-135m-instruct", "hook_name": HOOK, "sae_lens_version": "6.5.0"}}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({"W_enc": torch.zeros(576, 64), "b_enc": torch.zeros(64), "W_dec": torch.zeros(64, 576),
               "b_dec": torch.zeros(576)},
              str(folder / "sae_weights.safetensors"))
    before = checksums(folder)
    rc, err = saekit(capsys, "eval", folder, "--cache", cache, "--ce-batches", "0", "--no-png")
    assert rc == 2
    assert_mentions(err, "architecture 'crosscoder' is not supported", "supported: ['batchtopk', 'gated', 'jumprelu'",
                    "use it with SAELens", "saekit train --arch topk")
    assert checksums(folder) == before


# --------------------------------------------------------------------------- the explorer


def _explorer_error(db: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The message the explorer's first page shows for `db` (it must not raise)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SAEKIT_DB", str(db))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "explorer" / "main.py"),
                           default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.error, "no error shown"
    return at.error[0].value


def test_missing_feature_db(tmp_path, monkeypatch) -> None:
    db = tmp_path / "features.sqlite"
    msg = _explorer_error(db, monkeypatch)
    assert_mentions(msg, f"No feature database at `{db}`", f"saekit analyze SAE_DIR --tokens 200000 --out {db}")
    assert not db.exists()  # opening never creates an empty database in its place


def _foreign(path: Path, kind: str) -> Path:
    if kind == "SQLite of another program":
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        con.execute("INSERT INTO notes (body) VALUES ('keep me')")
        con.commit()
        con.close()
    else:
        path.write_bytes(b"\x00not a database" * 64)
    return path


@pytest.mark.parametrize(("kind", "problem"), [("SQLite of another program", "is a SQLite file but not a saekit "
                                                "feature database"), ("garbage", "is not a SQLite file")])
def test_foreign_feature_db(kind, problem, tmp_path, monkeypatch) -> None:
    db = _foreign(tmp_path / "notes.sqlite", kind)
    before = db.read_bytes()
    msg = _explorer_error(db, monkeypatch)
    assert_mentions(msg, f"{db} {problem}", "it was left untouched",
                    f"saekit analyze SAE_DIR --tokens 200000 --out {tmp_path / 'features.sqlite'}")
    assert db.read_bytes() == before  # the fix builds elsewhere: never over someone else's file


# --------------------------------------------------------------------------- text and disks


def test_empty_corpus(cli_model, tmp_path, capsys) -> None:
    """The corpus of an existing cache is emptied, then the cache is extended: the shards stay."""
    corpus = tmp_path / "corpus.jsonl"
    shutil.copy(CORPUS, corpus)
    small = ["--layer", "2", "--source", corpus, "--no-progress", "--set", f"data.context_size={T}",
             "--set", f"shard_tokens={2 * T}", "--out", tmp_path / "acts"]
    assert saekit(capsys, "cache", "--tokens", str(2 * T), *small)[0] == 0
    before = checksums(tmp_path / "acts")
    corpus.write_text("")
    rc, err = saekit(capsys, "cache", "--tokens", str(4 * T), *small)
    assert rc == 2
    assert_mentions(err, f"data source '{corpus}' holds no text", "add documents or point data.source elsewhere")
    assert checksums(tmp_path / "acts") == before


def _disk_fills_at(name: str, monkeypatch: pytest.MonkeyPatch, nth: int = 1) -> None:
    """The `nth` file whose temp name contains `name` gets half its bytes, then ENOSPC."""
    real, seen = atomic_io._write_bytes, [0]

    def write(fh, data) -> None:
        if name in fh.name:
            seen[0] += 1
            if seen[0] == nth:
                real(fh, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, data)

    monkeypatch.setattr(atomic_io, "_write_bytes", write)


def test_disk_full_mid_shard(cli_model, tmp_path, monkeypatch, capsys) -> None:
    acts = tmp_path / "acts"
    args = ["cache", *cache_args(["--hook", HOOK], tokens=6 * T, shard_tokens=2 * T), "--out", acts]
    with monkeypatch.context() as mp:
        _disk_fills_at("shard-00002.safetensors", mp)
        rc, err = saekit(capsys, *args)
    assert rc == 2
    assert_mentions(err, f"disk full while writing {acts / 'shard-00002.safetensors'}", "partial file was removed",
                    "Free space", "re-run the same command to resume")
    kept = checksums(acts)
    assert sorted(kept) == ["manifest.json", "shard-00000.json", "shard-00000.safetensors", "shard-00001.json",
                            "shard-00001.safetensors"]  # no temp file, no partial shard
    assert saekit(capsys, "cache", "--verify", acts)[0] == 0
    assert saekit(capsys, *args)[0] == 0  # the fix: the same command resumes at shard 2
    after = checksums(acts)
    shards = [k for k in kept if k != "manifest.json"]
    assert {k: after[k] for k in shards} == {k: kept[k] for k in shards}
    assert len(sae.read_manifest(acts)["shards"]) == 3


def test_disk_full_mid_checkpoint(cache, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "sae"
    args = ["train", "--cache", cache, "--out", out, *TRAIN_ARGS, "--set", f"checkpoint_every_tokens={8 * T}"]
    with monkeypatch.context() as mp:
        _disk_fills_at("state.safetensors", mp, nth=2)  # the first checkpoint fits, the second does not
        rc, err = saekit(capsys, *args)
    assert rc == 2
    assert_mentions(err, "disk full while writing", "state.safetensors", "partial file was removed",
                    "re-run the same command to resume")
    kept = checksums(out / "checkpoints")
    assert sorted(kept) == ["latest.json", "step_000000004/state.json", "step_000000004/state.safetensors"]
    assert saekit(capsys, *args)[0] == 0  # resumes from step 4 and finishes
    assert sae.load_sae(out).cfg.d_sae == 64
