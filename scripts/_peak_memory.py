"""Peak memory of this process for the benchmarks: anonymous and file-backed resident pages, sampled."""

from __future__ import annotations

import threading
import time
from pathlib import Path


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (0 where there is no /proc)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class PeakSampler:
    """Peak anonymous and file-backed resident memory of this process, sampled in a thread."""

    def __init__(self, every_s: float = 0.05) -> None:
        self.every_s, self.anon_kb, self.file_kb = every_s, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.anon_kb = max(self.anon_kb, status_kb("RssAnon"))
            self.file_kb = max(self.file_kb, status_kb("RssFile"))
            time.sleep(self.every_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
