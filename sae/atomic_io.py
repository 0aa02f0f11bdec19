"""Writing files so that a crash, a kill or a full disk never leaves half of one.

Every file saekit writes goes through here. The bytes go to a hidden temp file in the target's
folder (same filesystem, so the rename is atomic), are flushed and fsynced, the temp file is
renamed over the target, and the folder is fsynced so that the rename itself survives a power
cut. Readers therefore see the old file or the new one, never a mix. On any failure the temp
file is removed; a full disk becomes `DiskFullError`, which names the path and the fix.

    atomic_write_json(out / "manifest.json", manifest)
    atomic_write_bytes(out / "shard-00003.safetensors", payload)
    atomic_write_with(db_path, lambda tmp: build_sqlite(tmp))     # libraries that want a path
    with atomic_dir(ckpt_root / "step_000000120") as tmp: ...     # a folder appears whole

Temp names are `.<name>.tmp-<host>-<pid>-<n><suffix>`: hidden (globs such as `shard-*` skip them),
with the target's suffix (plotly and matplotlib pick the format from it), and traceable to the
process that made them, so `remove_stale_temps` deletes only those of processes that are gone.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_CHUNK = 16 << 20  # bytes per write call
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FULL_MESSAGES = ("No space left on device", "database or disk is full", "Disk quota exceeded")
_counter = itertools.count()
_TEMP_RE = re.compile(r"^\..+\.tmp-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-\d+(\.[^.]*)?$")

# Exists only for the SIGKILL tests (tests/sae/test_kill.py): a write whose target path contains
# this substring stops half-way (or, for `atomic_write_with`, just before the rename), prints a
# marker to stderr and sleeps, so the test can kill the process at a known point mid-write.
PAUSE_ENV = "SAEKIT_TEST_PAUSE_IN_WRITE"
PAUSE_MARKER = "saekit-test: paused writing"


class DiskFullError(OSError):
    """The disk (or quota) filled up mid-write; the partial file is gone, older files untouched."""


def temp_path(path: Path) -> Path:
    """A fresh hidden sibling of `path` for this process to write into."""
    tag = f"{_host()}-{os.getpid()}-{next(_counter)}"
    return path.with_name(f".{path.name}.tmp-{tag}{path.suffix}")


def atomic_write_with(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Atomically create `path` with `write(tmp)`, for writers that insist on a path of their own
    (safetensors, sqlite, plotly). `write` must create the file at `tmp`; it is fsynced after."""
    return _commit(Path(path), write, pause_before_rename=True)


def _commit(path: Path, write: Callable[[Path], Any], *, pause_before_rename: bool) -> Path:
    tmp = temp_path(path)
    try:
        write(tmp)
        _fsync_file(tmp)
        if pause_before_rename:
            _maybe_pause(path)
        os.replace(tmp, path)
    except BaseException as e:
        _remove(tmp)
        _raise_if_disk_full(e, path)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> Path:
    """Atomically replace `path` with `data`."""
    path = Path(path)

    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            _write_all(fh, path, memoryview(data))

    return _commit(path, fill, pause_before_rename=False)  # it pauses half-way instead


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2, **dumps_kwargs: Any) -> Path:
    """Atomically replace `path` with `obj` as JSON (keyword arguments go to `json.dumps`)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, **dumps_kwargs) + "\n")


def append_text(path: str | Path, text: str) -> None:
    """Append to a log (JSONL) and fsync: a crash may tear the last line, never lose earlier ones."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as e:
        _raise_if_disk_full(e, Path(path))
        raise


def read_json(
    path: str | Path, *, fix: str, error: type[Exception] = ValueError, what: str = "file"
) -> Any:
    """A JSON file's content; a missing or damaged file raises `error` naming the path and `fix`."""
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise error(f"{p}: no such {what}; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{p} is not valid JSON ({e}); the {what} is damaged: {fix}") from e


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder to fill; on success it replaces `path` whole, on failure it is removed."""
    path = Path(path)
    tmp = temp_path(path)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)  # libraries that filled it (save_pretrained) did not fsync
        _replace_dir(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_if_disk_full(e, path)
        raise
    fsync_dir(path.parent)


def remove_stale_temps(folder: str | Path) -> int:
    """Delete temp files and folders in `folder` left by killed processes of this host; count them.

    Temps of live processes (another rank writing right now) and of other hosts sharing the
    folder are kept: only the process that made a temp can know it is abandoned.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for entry in folder.iterdir():
        m = _TEMP_RE.match(entry.name)
        if m is None or m["host"] != _host() or _alive(int(m["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF):  # filesystems without directory fsync
            raise
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- internals


def _write_bytes(fh: Any, data: memoryview) -> None:
    """The one place bytes reach the disk (tests patch it to simulate a full disk)."""
    fh.write(data)


def _write_all(fh: Any, path: Path, view: memoryview) -> None:
    cut = len(view) // 2 if _pause_wanted(path) else -1
    stops = sorted({*range(_CHUNK, len(view), _CHUNK), len(view), *([cut] if cut > 0 else [])})
    start = 0
    for stop in stops:
        _write_bytes(fh, view[start:stop])
        start = stop
        if stop == cut:
            fh.flush()  # the first half is in the file when the test's SIGKILL lands
            _maybe_pause(path)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_tree(folder: Path) -> None:
    for sub in sorted(folder.rglob("*"), reverse=True):  # files before the folders holding them
        if sub.is_file() and not sub.is_symlink():
            _fsync_file(sub)
        elif sub.is_dir() and not sub.is_symlink():
            fsync_dir(sub)
    fsync_dir(folder)


def _replace_dir(tmp: Path, path: Path) -> None:
    """Rename `tmp` to `path`; an existing `path` is first moved aside so that a crash between
    the two renames leaves it on disk as `.<name>.old-*` (which stale-temp cleanup never deletes)."""
    aside = None
    if path.exists():
        aside = path.with_name(f".{path.name}.old-{_host()}-{os.getpid()}-{next(_counter)}")
        os.replace(path, aside)
    os.replace(tmp, path)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _raise_if_disk_full(e: BaseException, path: Path) -> None:
    if isinstance(e, DiskFullError):
        return  # already names the file that did not fit
    full = isinstance(e, OSError) and e.errno in _FULL_ERRNOS
    if full or any(m in str(e) for m in _FULL_MESSAGES):
        raise DiskFullError(
            f"disk full while writing {path}: the partial file was removed and everything "
            "written before is intact. Free space (or choose an output folder on another disk) "
            "and re-run the same command to resume"
        ) from e


def _remove(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _pause_wanted(path: Path) -> bool:
    want = os.environ.get(PAUSE_ENV)
    return bool(want) and want in str(path)


def _maybe_pause(path: Path) -> None:
    if _pause_wanted(path):
        print(f"{PAUSE_MARKER} {path}", file=sys.stderr, flush=True)
        time.sleep(3600)
