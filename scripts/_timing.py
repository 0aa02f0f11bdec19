"""Wall-clock timing shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping


def timed_in_turn(cases: Mapping[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each case: one warm-up call each, then `rounds` rounds that run every case
    once, in turn. This VM's speed drifts by up to 50% within the hour, so cases compared with each
    other must be timed interleaved like this, not one after another."""
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times
