"""Real crashes: `saekit cache` and `saekit train` SIGKILLed mid-write, then resumed by re-running
the same command, end where an uninterrupted run ends (same shard sha256s, same weights bit for bit).

An exception raised inside the process (tests/sae/test_activation_cache.py, test_trainer.py) lets the write in
flight finish or clean up; SIGKILL does not. To kill at a known point rather than by luck, the
child runs with SAEKIT_TEST_PAUSE_IN_WRITE (see `sae.atomic_io`): the write of a matching path
stops half-way, prints a marker and sleeps, and the test kills it there.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sae.activation_cache import CacheError, read_manifest, verify_cache
from sae.atomic_io import PAUSE_ENV, PAUSE_MARKER
from sae.checkpoint import load_sae
from sae.store import ActivationStore
from sae.training.resume import latest_checkpoint, read_checkpoint

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "data" / "tiny_corpus.jsonl"
HOOK = "blocks.1.hook_resid_post"
TIMEOUT_S = 180

# 6 rows of 64 tokens, 2 rows per shard: 3 shards
CACHE_ARGS = ["cache", "--hook", HOOK, "--tokens", "384", "--source", str(CORPUS), "--batch-size", "2",
              "--no-progress", "--set", "data.context_size=64", "--set", "shard_tokens=128"]
# 32 steps of 64 tokens over the cache (several epochs), a checkpoint every 8 steps
TRAIN_ARGS = ["train", "--arch", "topk", "--k", "8", "--d-sae", "128", "--tokens", "2048", "--batch-size", "64",
              "--lr", "3e-3", "--no-progress", "--set", "checkpoint_every_tokens=512"]


def _env(pause: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != PAUSE_ENV}
    # One BLAS thread: summation order, hence every float, is then the same in every process.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    if pause is not None:
        env[PAUSE_ENV] = pause
    return env


def _saekit(args: list[str]) -> None:
    """Run `saekit ARGS` to completion, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _saekit_killed_in_write(args: list[str], pause: str) -> str:
    """Start `saekit ARGS`, SIGKILL it while it is half-way through writing a path containing
    `pause`; return the path it was writing."""
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=REPO, env=_env(pause),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    seen: list[str] = []
    try:
        while True:
            line = lines.get(timeout=TIMEOUT_S)
            seen.append(line)
            if line.startswith(PAUSE_MARKER):
                return line[len(PAUSE_MARKER):].strip()
            if proc.poll() is not None and lines.empty():
                pytest.fail(f"saekit exited ({proc.returncode}) before writing {pause}:\n{''.join(seen)[-3000:]}")
    except queue.Empty:
        pytest.fail(f"no write of {pause} within {TIMEOUT_S}s:\n{''.join(seen)[-3000:]}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)  # reaped: its pid is gone, so its temp files count as stale
        assert proc.returncode == -signal.SIGKILL


def _checksums(cache: Path) -> list[tuple[str, str]]:
    return [(e["file"], e["sha256"]) for e in read_manifest(cache)["shards"]]


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


@pytest.fixture(scope="module")
def ref_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kill") / "ref_acts"
    _saekit([*CACHE_ARGS, "--out", str(out)])
    return out


def test_cache_killed_mid_shard_resumes_to_the_same_checksums(ref_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "acts"
    args = [*CACHE_ARGS, "--out", str(out)]
    writing = _saekit_killed_in_write(args, pause="shard-00001.safetensors")
    assert writing == str(out / "shard-00001.safetensors")

    # on disk: shard 0 complete, half of shard 1 in a temp file, no shard 1, a manifest of shard 0
    (temp,) = _temps(out)
    assert temp.startswith(".shard-00001.safetensors.tmp-") and (out / temp).stat().st_size > 0
    assert not (out / "shard-00001.safetensors").exists()
    partial = read_manifest(out)
    assert not partial["complete"] and [e["file"] for e in partial["shards"]] == ["shard-00000.safetensors"]
    verify_cache(out)  # what the manifest lists is intact
    with pytest.raises(CacheError, match="incomplete"):
        ActivationStore.from_cache(out, hook=HOOK)

    shard0 = (out / "shard-00000.safetensors").stat().st_mtime_ns
    _saekit(args)  # the same command resumes
    assert (out / "shard-00000.safetensors").stat().st_mtime_ns == shard0  # kept, not recomputed
    assert read_manifest(out)["complete"]
    assert _checksums(out) == _checksums(ref_cache)
    verify_cache(out)  # the files hash to what the manifest says
    assert _temps(out) == []  # the killed run's half shard was cleaned up


def test_train_killed_mid_checkpoint_keeps_the_previous_and_resumes_exactly(ref_cache: Path, tmp_path: Path) -> None:
    ref, run = tmp_path / "ref", tmp_path / "run"
    _saekit([*TRAIN_ARGS, "--cache", str(ref_cache), "--out", str(ref)])
    args = [*TRAIN_ARGS, "--cache", str(ref_cache), "--out", str(run)]
    writing = _saekit_killed_in_write(args, pause="step_000000016")  # the second checkpoint
    assert Path(writing).name == "state.safetensors"

    ckpts = run / "checkpoints"
    (temp,) = _temps(ckpts)
    assert temp.startswith(".step_000000016.tmp-") and not (ckpts / "step_000000016").exists()
    assert json.loads((ckpts / "latest.json").read_text())["dir"] == "step_000000008"
    meta, state = read_checkpoint(latest_checkpoint(ckpts))  # the previous checkpoint loads
    assert meta["step"] == 8 and meta["tokens_seen"] == 512
    assert set(state["slots"]) and not (run / "sae_weights.safetensors").exists()

    _saekit(args)  # the same command resumes from step 8
    assert _temps(ckpts) == [] and sorted(p.name for p in ckpts.iterdir()) == ["latest.json", "step_000000032"]
    a, b = load_file(ref / "sae_weights.safetensors"), load_file(run / "sae_weights.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit for bit
    assert load_sae(run).cfg.d_sae == 128
    ref_state = read_checkpoint(latest_checkpoint(ref / "checkpoints"))[1]
    run_state = read_checkpoint(latest_checkpoint(ckpts))[1]
    (slot,) = ref_state["slots"]
    for k, v in ref_state["slots"][slot]["optimizer"]["state"][0].items():
        assert torch.equal(v, run_state["slots"][slot]["optimizer"]["state"][0][k]), k
