"""What a sweep found: per-condition summaries, the best condition, or "no effect".

`summarize` turns a sweep's records into one row per condition, each judged by the fluency
gate (`steering.fluency`). `best_condition` picks the condition that moved the score most on
fluent text; a sweep in which none did is a `NoEffect`, never a best strength.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from steering.fluency import GateConfig, SampleFluency, judge
from steering.interventions import SteeringError


def _mean(xs: list[Any]) -> float | None:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.fmean(xs) if xs else None


def _median(xs: list[Any]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def record_fluency(r: dict[str, Any]) -> SampleFluency:
    """The gate's measures stored in a sweep record."""
    return SampleFluency(n_tokens=r["n_tokens"], words=r["words"], distinct_2=r["distinct_2"],
                         repeat_run=r["repeat_run"], text_perplexity=r.get("text_perplexity"))


def summarize(records: list[dict], keys: list[str] | None = None, gate: GateConfig | None = None) -> dict[str, Any]:
    """Per condition: n, concept rate, task rate, perplexity (median / mean), distinct-2 over
    tokens, and the fluency gate's verdict (`fluent`, `gate`)."""
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["key"], []).append(r)
    order = [k for k in (keys or []) if k in by] + sorted(k for k in by if k not in (keys or []))
    rows = []
    for k in order:
        rs = by[k]
        verdict = judge([record_fluency(r) for r in rs], gate)
        rows.append({
            "key": k, "method": rs[0]["method"], "features": rs[0]["features"],
            "strength": rs[0]["strength"], "n": len(rs),
            "concept_rate": _mean([r["concept"] for r in rs]),
            "task_rate": _mean([r["task"] for r in rs]),
            "perplexity_median": _median([r["perplexity"] for r in rs]),
            "perplexity_mean": _mean([r["perplexity"] for r in rs]),
            "text_perplexity_median": _median([r.get("text_perplexity") for r in rs]),
            "distinct_2": _mean([r["distinct_2"] for r in rs]),
            "fluent": verdict.passed,
            "gate": verdict.to_dict(),
            "seeds": sorted({r["seed"] for r in rs}),
        })
    return {"conditions": rows}


@dataclass(frozen=True)
class NoEffect:
    """No fluent condition of `method` moved `metric`: a result of its own, not a best strength.
    Falsy, so `best or ...` code treats it like "nothing to show"."""

    method: str
    metric: str
    reason: str

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return f"no effect found: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        return {"method": self.method, "metric": self.metric, "reason": self.reason}


def _ppl_limit(base: dict[str, Any] | None, col: str, ratio: float | None) -> float | None:
    if ratio is None or base is None or base.get(col) is None:
        return None
    return ratio * base[col]


def best_condition(
    summary: dict[str, Any],
    method: str,
    *,
    metric: str = "concept_rate",
    max_ppl_ratio: float | None = 2.0,
    fluency: str = "perplexity",
) -> dict[str, Any] | NoEffect | None:
    """The condition of `method` with the highest `metric` among those that pass the fluency
    gate and whose median `fluency` ("perplexity": given the prompt, or "text_perplexity": the
    text alone) stays within `max_ppl_ratio` x the unsteered one (None: no such bound).

    `NoEffect` when no such condition scores above the unsteered rate (above 0 without an
    unsteered row); None when the sweep ran no condition of `method`."""
    if fluency not in ("perplexity", "text_perplexity"):
        raise SteeringError(f"fluency must be 'perplexity' or 'text_perplexity', got {fluency!r}")
    col = f"{fluency}_median"
    rows = [r for r in summary["conditions"] if r["method"] == method]
    if not rows:
        return None
    base = next((r for r in summary["conditions"] if r["method"] == "none"), None)
    limit = _ppl_limit(base, col, max_ppl_ratio)
    label = metric.replace("_", " ")
    if all(r.get(metric) is None for r in rows):
        return NoEffect(method, metric, f"no {label} was measured")
    ok = [r for r in rows if r.get(metric) is not None and r.get("fluent")
          and (limit is None or (r.get(col) is not None and r[col] <= limit))]
    if not ok:
        fluent = sum(bool(r.get("fluent")) for r in rows)
        why = (f"none of the {len(rows)} {method} conditions passes the fluency gate" if not fluent else
               f"the {fluent} fluent {method} condition(s) exceed {max_ppl_ratio:g}x the unsteered "
               f"{fluency.replace('_', ' ')}")
        return NoEffect(method, metric, why)
    best = max(ok, key=lambda r: (r[metric], -(r["strength"] or 0)))
    floor = base.get(metric) if base is not None and base.get(metric) is not None else 0.0
    if best[metric] <= floor:
        than = f"the unsteered {floor:.0%}" if base is not None else "0%"
        return NoEffect(method, metric, f"no fluent {method} condition raised the {label} above {than}")
    return best


def headline(summary: dict[str, Any]) -> list[str]:
    """One line per steered method: its best condition, or "no effect found". Concept steering
    is bounded by text perplexity (changing the topic is the point), behaviour by perplexity
    given the prompt, as in `steering.reference_experiments`."""
    rows = summary["conditions"]
    metric = "concept_rate" if any(r["concept_rate"] is not None for r in rows) else "task_rate"
    fluency = "text_perplexity" if metric == "concept_rate" else "perplexity"
    lines = []
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "none"):
        best = best_condition(summary, method, metric=metric, fluency=fluency)
        if isinstance(best, dict):
            lines.append(f"{method}: best {best['key']} ({metric.replace('_', ' ')} {best[metric]:.2f})")
        elif best is not None:
            lines.append(f"{method}: {best}")
    return lines


def format_summary(summary: dict[str, Any]) -> str:
    head = (f"{'condition':<28} {'n':>4} {'concept':>8} {'task':>6} {'ppl(med)':>9} {'text ppl':>9} "
            f"{'dist-2':>7} {'fluent':>6}")
    lines = [head, "-" * len(head)]

    def f(x: float | None, w: int, p: int = 2) -> str:
        return f"{x:>{w}.{p}f}" if x is not None else f"{'-':>{w}}"

    for r in summary["conditions"]:
        fluent = {True: "yes", False: "no"}.get(r.get("fluent"), "-")
        lines.append(f"{r['key']:<28} {r['n']:>4} {f(r['concept_rate'], 8)} {f(r['task_rate'], 6)} "
                     f"{f(r['perplexity_median'], 9, 1)} {f(r.get('text_perplexity_median'), 9, 1)} "
                     f"{f(r['distinct_2'], 7)} {fluent:>6}")
    return "\n".join(lines + headline(summary))
