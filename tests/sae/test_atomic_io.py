"""The one atomic-write helper: replace whole or not at all, clean up, name a full disk, stale temps."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sae
import sae.atomic_io as atomic_io
from sae.atomic_io import (
    DiskFullError,
    append_text,
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_with,
    remove_stale_temps,
    temp_path,
)


def test_replaces_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2}, indent=None)
    assert json.loads(target.read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_chunks_reassemble(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic_io, "_CHUNK", 7)
    payload = bytes(range(256)) * 3
    atomic_write_bytes(tmp_path / "b.bin", payload)
    assert (tmp_path / "b.bin").read_bytes() == payload


def test_disk_full_keeps_the_old_file_and_names_path_and_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "shard.safetensors"
    target.write_bytes(b"old")

    def full(fh, data):
        fh.write(data[:1])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_io, "_write_bytes", full)
    with pytest.raises(DiskFullError, match=r"shard\.safetensors.*partial file was removed.*Free space") as e:
        atomic_write_bytes(target, b"new contents")
    assert isinstance(e.value, OSError)  # callers catching OSError still see it
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_writer_callback_failure_removes_temp(tmp_path: Path) -> None:
    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("partial")
        raise RuntimeError("library failed")

    with pytest.raises(RuntimeError, match="library failed"):
        atomic_write_with(tmp_path / "db.sqlite", half_then_fail)
    assert list(tmp_path.iterdir()) == []

    def sqlite_full(tmp: Path) -> None:
        tmp.write_text("partial")
        raise RuntimeError("database or disk is full")  # sqlite says it in words, not errno

    with pytest.raises(DiskFullError, match="db.sqlite"):
        atomic_write_with(tmp_path / "db.sqlite", sqlite_full)
    assert list(tmp_path.iterdir()) == []


def test_temp_keeps_the_suffix_for_format_sniffing_writers(tmp_path: Path) -> None:
    seen: list[Path] = []
    atomic_write_with(tmp_path / "plot.png", lambda tmp: (seen.append(tmp), tmp.write_bytes(b"png")))
    assert seen[0].suffix == ".png" and seen[0].name.startswith(".plot.png.tmp-")
    assert (tmp_path / "plot.png").read_bytes() == b"png"


def test_atomic_dir_replaces_whole_or_keeps_the_old(tmp_path: Path) -> None:
    target = tmp_path / "step_000000004"
    with atomic_dir(target) as d:
        (d / "state.json").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "state.json").write_text("2")
            raise RuntimeError("killed half-way")
    assert (target / "state.json").read_text() == "1"
    with atomic_dir(target) as d:
        (d / "state.json").write_text("3")
    assert (target / "state.json").read_text() == "3"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_stale_temps_of_dead_processes_only(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = atomic_io._host()
    mine = temp_path(tmp_path / "shard-00001.safetensors")  # this (live) process
    stale_file = tmp_path / f".shard-00002.safetensors.tmp-{host}-{dead_pid}-0.safetensors"
    stale_dir = tmp_path / f".step_000000008.tmp-{host}-{dead_pid}-3"
    other_host = tmp_path / f".shard-00003.safetensors.tmp-elsewhere-{dead_pid}-0.safetensors"
    for p in (mine, stale_file, other_host):
        p.write_bytes(b"x")
    stale_dir.mkdir()
    (stale_dir / "state.safetensors").write_bytes(b"x")
    (tmp_path / "shard-00000.safetensors").write_bytes(b"done")
    assert remove_stale_temps(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other_host.name, "shard-00000.safetensors"])


def test_append_text_and_exports(tmp_path: Path) -> None:
    log = tmp_path / "g.jsonl"
    append_text(log, '{"a": 1}\n')
    append_text(log, '{"a": 2}\n')
    assert log.read_text().splitlines() == ['{"a": 1}', '{"a": 2}']
    for name in ("atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_with",
                 "append_text", "DiskFullError"):
        assert getattr(sae, name) is getattr(atomic_io, name)


def test_pause_hook_stops_mid_file(tmp_path: Path) -> None:
    """The crash tests rely on it: half the bytes in the temp file, nothing at the target."""
    code = (
        "import sys; from sae.atomic_io import atomic_write_bytes;"
        f"atomic_write_bytes({str(tmp_path / 'x.bin')!r}, b'a' * 1000)"
    )
    env = {**os.environ, atomic_io.PAUSE_ENV: "x.bin"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert line.startswith(atomic_io.PAUSE_MARKER)
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".x.bin.tmp-")]
        assert len(temps) == 1 and temps[0].stat().st_size == 500 and not (tmp_path / "x.bin").exists()
    finally:
        proc.kill()
        proc.wait()


def test_read_json_names_the_path_and_the_fix(tmp_path):
    from sae.atomic_io import read_json

    good = tmp_path / "ok.json"
    good.write_text('{"a": 1}')
    assert read_json(good, fix="unused") == {"a": 1}
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ')
    with pytest.raises(RuntimeError, match=r"bad\.json is not valid JSON.*rebuild it"):
        read_json(bad, fix="rebuild it", error=RuntimeError)
    with pytest.raises(ValueError, match=r"missing\.json: no such manifest; run saekit cache"):
        read_json(tmp_path / "missing.json", fix="run saekit cache", what="manifest")


def test_parse_dtype_and_model_device_are_shared():
    import torch

    from sae.devices import model_device, parse_dtype

    for name in ("float32", "fp32", "torch.float32", "FLOAT"):
        assert parse_dtype(name) is torch.float32
    assert parse_dtype("bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'int7'"):
        parse_dtype("int7")
    assert model_device(torch.nn.Linear(2, 2)).type == "cpu"
