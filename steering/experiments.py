"""Steering sweeps: features x strengths x prompts x seeds -> JSONL of generations + metrics.

    cfg = sae.load_config(SweepConfig, "sweep.yaml", ["strengths=[2,4,8]"])
    summary = run_sweep(cfg)                  # or: saekit steer-sweep sweep.yaml

Writes `<out_dir>/generations.jsonl` (one record per condition x prompt x seed, appended
and flushed as each condition finishes), `summary.json`, and charts (strength vs concept
score vs perplexity) as HTML and PNG. Re-running the same config resumes: records already
in the JSONL are kept and skipped. Settings that change what a generation means (model,
SAE, sampling, prompts...) must match the existing run, else it stops and says which.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sae import append_text, atomic_write_json, atomic_write_text, atomic_write_with
from steering.interventions import (
    FeatureSteering,
    Intervention,
    SteeringError,
    VectorSteering,
    make_edit,
)

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sae import SparseAutoencoder

log = logging.getLogger(__name__)

# Fields that change what a stored generation means: a resumed run must agree on them.
_IDENTITY = ("sae_path", "hook", "method", "unit", "positions", "prompts", "n_prompts", "chat",
             "system_prompt", "max_new_tokens", "temperature", "top_p", "top_k", "model_name")


@dataclass
class CAAConfig:
    """A difference-of-means baseline run beside the SAE conditions."""

    positive: list[str] | str = "GOLDEN_GATE_POSITIVE"  # prompts, or a set name in steering.prompts
    negative: list[str] | str = "GOLDEN_GATE_NEGATIVE"
    chat: bool = False
    region: str = "all"  # all | after_last_user | last
    scales: list[float] = field(default_factory=lambda: [2.0, 4.0, 8.0])


@dataclass
class SweepConfig:
    """A steering sweep. Strengths are in `unit`s (x max activation by default)."""

    out_dir: str = "runs/steer_sweep"
    sae_path: str | None = None
    feature_db: str | None = None  # for unit="max" (else a quick scan)
    hook: str | None = None  # default: the SAE's hook
    features: list[int] = field(default_factory=list)
    together: bool = False  # steer all `features` at once instead of one at a time
    method: str = "clamp"  # clamp | add | scale
    unit: str = "max"
    strengths: list[float] = field(default_factory=lambda: [2.0, 4.0, 8.0])
    positions: str = "all"
    prompts: list[str] | str = "NEUTRAL_PROMPTS"
    n_prompts: int | None = None
    chat: bool = True
    system_prompt: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    max_new_tokens: int = 48
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int = 10
    concept_keywords: list[str] = field(default_factory=list)
    concept_regex: str | None = None
    task_keywords: list[str] = field(default_factory=list)  # behaviour score (e.g. praise)
    task_regex: str | None = None
    include_unsteered: bool = True
    fluency: bool = True  # perplexity under the unsteered model
    caa: CAAConfig | None = None
    model_name: str = "smollm2-135m-instruct"
    device: str | None = None
    png: bool = True


def resolve_prompts(spec: list[str] | str, n: int | None = None) -> list[Any]:
    """A prompt list as given, or a named set from `steering.prompts` (e.g. NEUTRAL_PROMPTS)."""
    from steering import prompts as P

    if isinstance(spec, str):
        value = getattr(P, spec, None)
        if not isinstance(value, list):
            names = [k for k, v in vars(P).items() if isinstance(v, list) and k.isupper()]
            raise SteeringError(f"unknown prompt set {spec!r}; use a list of prompts or one of {names}")
        spec = value
    return list(spec[:n] if n else spec)


@dataclass
class Condition:
    key: str
    method: str
    features: list[int]
    strength: float | None
    intervention: Intervention | None


def _conditions(cfg: SweepConfig, sae: SparseAutoencoder | None, caa: VectorSteering | None) -> list[Condition]:
    conds: list[Condition] = []
    if cfg.include_unsteered:
        conds.append(Condition("unsteered", "none", [], None, None))
    if cfg.features:
        if sae is None:
            raise SteeringError("features given but no SAE: set sae_path")
        groups = [cfg.features] if cfg.together else [[f] for f in cfg.features]
        for g in groups:
            for s in cfg.strengths:
                edit = make_edit(cfg.method, s, cfg.unit)
                iv = FeatureSteering(sae, {f: edit for f in g}, positions=cfg.positions, hook=cfg.hook,
                                     feature_db=cfg.feature_db)
                key = f"{cfg.method}|{'+'.join(map(str, g))}|{s:g}"
                conds.append(Condition(key, cfg.method, list(g), float(s), iv))
    if caa is not None and cfg.caa is not None:
        for s in cfg.caa.scales:
            conds.append(Condition(f"caa||{s:g}", "caa", [], float(s), caa.with_scale(s)))
    if not conds:
        raise SteeringError("the sweep has nothing to run: give features (with sae_path), caa, or include_unsteered")
    return conds


def _read_jsonl(path: Path) -> list[dict]:
    """Valid records of a JSONL file; a torn last line (a crash mid-write) is set aside."""
    if not path.exists():
        return []
    good, bad = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            good.append(json.loads(line))
        except json.JSONDecodeError:
            bad.append(line)
    if bad:
        backup = path.with_suffix(".jsonl.torn")
        atomic_write_text(backup, "\n".join(bad) + "\n")
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in good))
        log.warning("%d unreadable line(s) of %s moved to %s", len(bad), path, backup)
    return good


def _check_identity(cfg: SweepConfig, out: Path, *, write: bool) -> None:
    from sae import to_dict

    cfg_path = out / "config.json"
    mine = to_dict(cfg)
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        diff = [k for k in _IDENTITY if old.get(k) != mine.get(k)]
        if diff:
            raise SteeringError(
                f"{out} holds a sweep with different {', '.join(diff)}; its generations would not be "
                "comparable. Use a new out_dir (or restore those settings to resume)."
            )
    if not write:
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg_path, mine)


def run_sweep(
    cfg: SweepConfig,
    *,
    model: TransformerBridge | None = None,
    sae: SparseAutoencoder | None = None,
    concept_scorer: Callable[[str], float] | None = None,
    task_scorer: Callable[[str], float] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) a sweep; returns the summary (also written to summary.json)."""
    import sae as saelib
    from steering.activations import render
    from steering.baselines import caa_vector
    from steering.generate import generate
    from steering.metrics import distinct_n, keyword_scorer, perplexity

    out = Path(cfg.out_dir)
    prompts = resolve_prompts(cfg.prompts, cfg.n_prompts)
    if not cfg.seeds:
        raise SteeringError("seeds is empty; give at least one seed")
    if concept_scorer is None and (cfg.concept_keywords or cfg.concept_regex):
        concept_scorer = keyword_scorer(cfg.concept_keywords, cfg.concept_regex)
    if task_scorer is None and (cfg.task_keywords or cfg.task_regex):
        task_scorer = keyword_scorer(cfg.task_keywords, cfg.task_regex)
    # Everything checkable is checked before the model loads or anything is written.
    _check_identity(cfg, out, write=False)
    for s in cfg.strengths:
        make_edit(cfg.method, s, cfg.unit)
    if cfg.feature_db is None and cfg.sae_path and (Path(cfg.sae_path) / "features.sqlite").exists():
        cfg.feature_db = str(Path(cfg.sae_path) / "features.sqlite")  # what `saekit analyze` writes
    if model is None:
        model = saelib.load_model(cfg.model_name, device=cfg.device)
    if sae is None and cfg.sae_path:
        sae = saelib.load_sae(cfg.sae_path, device=str(next(model.original_model.parameters()).device))
    caa = None
    if cfg.caa is not None:
        hook = cfg.hook or (sae.cfg.hook_name if sae is not None else None)
        if hook is None:
            raise SteeringError("the CAA baseline needs a hook: set hook or sae_path")
        caa = caa_vector(model, hook, resolve_prompts(cfg.caa.positive), resolve_prompts(cfg.caa.negative),
                         chat=cfg.caa.chat, region=cfg.caa.region)
    conds = _conditions(cfg, sae, caa)
    _check_identity(cfg, out, write=True)
    jsonl = out / "generations.jsonl"
    done = {(r["key"], r["prompt_index"], r["seed"]) for r in _read_jsonl(jsonl)}
    flat = [(pi, s) for s in cfg.seeds for pi in range(len(prompts))]
    # The context for "text perplexity": an assistant turn answering an empty user message.
    empty = render(model.tokenizer, "", chat=cfg.chat, system_prompt=cfg.system_prompt)
    for ci, cond in enumerate(conds):
        todo = [(pi, s) for pi, s in flat if (cond.key, pi, s) not in done]
        if not todo:
            continue
        t0 = time.time()
        gens = generate(
            model, [prompts[pi] for pi, _ in todo], cond.intervention, compare=False,
            seed=[s for _, s in todo], max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
            top_p=cfg.top_p, top_k=cfg.top_k, chat=cfg.chat, system_prompt=cfg.system_prompt,
            batch_size=cfg.batch_size,
        )
        ppl = text_ppl = [math.nan] * len(gens)
        if cfg.fluency:
            ppl = perplexity(model, [g.prompt_ids for g in gens], [g.steered_ids for g in gens],
                             batch_size=cfg.batch_size)
            text_ppl = perplexity(model, [empty] * len(gens), [g.steered_ids for g in gens],
                                  batch_size=cfg.batch_size)
        secs = time.time() - t0
        lines = []
        for (pi, s), g, p, tp in zip(todo, gens, ppl, text_ppl, strict=True):
            lines.append(json.dumps({
                "key": cond.key, "method": cond.method, "features": cond.features,
                "strength": cond.strength, "unit": cfg.unit if cond.method not in ("none", "caa") else None,
                "prompt_index": pi, "prompt": prompts[pi], "seed": s, "text": g.steered,
                "n_tokens": len(g.steered_ids),
                "concept": concept_scorer(g.steered) if concept_scorer else None,
                "task": task_scorer(g.steered) if task_scorer else None,
                "perplexity": None if math.isnan(p) else p,
                "text_perplexity": None if math.isnan(tp) else tp,
                "distinct_1": distinct_n(g.steered, 1), "distinct_2": distinct_n(g.steered, 2),
            }))
        append_text(jsonl, "\n".join(lines) + "\n")
        if progress:
            print(f"[{ci + 1}/{len(conds)}] {cond.key}: {len(todo)} generations in {secs:.1f}s", flush=True)
    summary = summarize(_read_jsonl(jsonl), [c.key for c in conds])
    atomic_write_json(out / "summary.json", summary)
    summary["charts"] = [str(p) for p in plot_sweep(summary, out, png=cfg.png)]
    return summary


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.fmean(xs) if xs else None


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(records: list[dict], keys: list[str] | None = None) -> dict[str, Any]:
    """Per condition: n, concept rate, task rate, perplexity (median / mean), distinct-n."""
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["key"], []).append(r)
    order = [k for k in (keys or []) if k in by] + sorted(k for k in by if k not in (keys or []))
    rows = []
    for k in order:
        rs = by[k]
        rows.append({
            "key": k, "method": rs[0]["method"], "features": rs[0]["features"],
            "strength": rs[0]["strength"], "n": len(rs),
            "concept_rate": _mean([r["concept"] for r in rs]),
            "task_rate": _mean([r["task"] for r in rs]),
            "perplexity_median": _median([r["perplexity"] for r in rs]),
            "perplexity_mean": _mean([r["perplexity"] for r in rs]),
            "text_perplexity_median": _median([r.get("text_perplexity") for r in rs]),
            "distinct_2": _mean([r["distinct_2"] for r in rs]),
            "seeds": sorted({r["seed"] for r in rs}),
        })
    return {"conditions": rows}


def best_condition(
    summary: dict[str, Any],
    method: str,
    *,
    metric: str = "concept_rate",
    max_ppl_ratio: float | None = 2.0,
    fluency: str = "perplexity",
    min_distinct_ratio: float | None = None,
) -> dict[str, Any] | None:
    """The condition of `method` with the highest `metric` whose median `fluency` ("perplexity":
    given the prompt, or "text_perplexity": the text alone) stays within `max_ppl_ratio` x the
    unsteered one (None: no fluency bound) and whose distinct-2 stays above `min_distinct_ratio`
    x the unsteered one (a model stuck in a loop has a low perplexity: only distinct-n sees it).
    None if nothing qualifies."""
    if fluency not in ("perplexity", "text_perplexity"):
        raise SteeringError(f"fluency must be 'perplexity' or 'text_perplexity', got {fluency!r}")
    col = f"{fluency}_median"
    rows = summary["conditions"]
    base = next((r for r in rows if r["method"] == "none"), None)
    limit = None
    if max_ppl_ratio is not None and base is not None and base.get(col) is not None:
        limit = max_ppl_ratio * base[col]
    floor = None
    if min_distinct_ratio is not None and base is not None and base.get("distinct_2") is not None:
        floor = min_distinct_ratio * base["distinct_2"]
    ok = [
        r for r in rows
        if r["method"] == method and r[metric] is not None
        and (limit is None or (r.get(col) is not None and r[col] <= limit))
        and (floor is None or (r.get("distinct_2") is not None and r["distinct_2"] >= floor))
    ]
    return max(ok, key=lambda r: (r[metric], -(r["strength"] or 0))) if ok else None


def format_summary(summary: dict[str, Any]) -> str:
    head = f"{'condition':<28} {'n':>4} {'concept':>8} {'task':>6} {'ppl(med)':>9} {'text ppl':>9} {'dist-2':>7}"
    lines = [head, "-" * len(head)]

    def f(x: float | None, w: int, p: int = 2) -> str:
        return f"{x:>{w}.{p}f}" if x is not None else f"{'-':>{w}}"

    for r in summary["conditions"]:
        lines.append(f"{r['key']:<28} {r['n']:>4} {f(r['concept_rate'], 8)} {f(r['task_rate'], 6)} "
                     f"{f(r['perplexity_median'], 9, 1)} {f(r.get('text_perplexity_median'), 9, 1)} "
                     f"{f(r['distinct_2'], 7)}")
    return "\n".join(lines)


def sweep_figure(summary: dict[str, Any]) -> Any:
    """Left: strength vs concept (or task) rate, perplexity on a second (log) axis.
    Right: rate vs perplexity, the trade-off that compares methods at equal fluency."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = summary["conditions"]
    base = next((r for r in rows if r["method"] == "none"), None)
    series: dict[str, list[dict]] = {}
    for r in rows:
        if r["method"] != "none":
            series.setdefault(f"{r['method']} {'+'.join(map(str, r['features']))}".strip(), []).append(r)
    metric = "task_rate" if any(r["task_rate"] is not None for r in rows) and not any(
        r["concept_rate"] is not None for r in rows) else "concept_rate"
    label = metric.replace("_", " ")
    fig = make_subplots(rows=1, cols=2, specs=[[{"secondary_y": True}, {}]],
                        subplot_titles=("strength sweep", f"{label} vs perplexity"))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for i, (name, rs) in enumerate(series.items()):
        rs = sorted(rs, key=lambda r: r["strength"])
        color = palette[i % len(palette)]
        xs = [r["strength"] for r in rs]
        ys = [r[metric] for r in rs]
        ppl = [r["perplexity_median"] for r in rs]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", line={"color": color},
                                 name=f"{name}: {label}"), row=1, col=1, secondary_y=False)
        fig.add_trace(go.Scatter(x=xs, y=ppl, mode="lines+markers", line={"color": color, "dash": "dot"},
                                 name=f"{name}: perplexity"), row=1, col=1, secondary_y=True)
        fig.add_trace(go.Scatter(x=ppl, y=ys, mode="lines+markers+text", text=[f"{x:g}" for x in xs],
                                 textposition="top center", line={"color": color}, name=name,
                                 showlegend=False), row=1, col=2)
    if base is not None and base[metric] is not None and base["perplexity_median"] is not None:
        fig.add_trace(go.Scatter(x=[base["perplexity_median"]], y=[base[metric]], mode="markers+text",
                                 text=["unsteered"], textposition="bottom center",
                                 marker={"color": "black", "size": 10}, name="unsteered"), row=1, col=2)
        fig.add_hline(y=base[metric], line_dash="dash", line_color="gray", row=1, col=1)
    fig.update_layout(title="Steering sweep: strength vs concept score vs fluency", template="plotly_white",
                      width=1200, height=500)
    fig.update_xaxes(title_text="strength (clamp/add: in units; caa: scale)", row=1, col=1)
    fig.update_yaxes(title_text=label, range=[0, 1.05], row=1, col=1, secondary_y=False)
    fig.update_yaxes(title_text="perplexity (median)", type="log", row=1, col=1, secondary_y=True)
    fig.update_xaxes(title_text="perplexity of steered text under the unsteered model (median)", type="log",
                     row=1, col=2)
    fig.update_yaxes(title_text=label, range=[0, 1.05], row=1, col=2)
    return fig


def plot_sweep(summary: dict[str, Any], out_dir: str | Path, *, png: bool = True) -> list[Path]:
    """Write `sweep_figure(summary)` as sweep.html (+ sweep.png)."""
    out = Path(out_dir)
    fig = sweep_figure(summary)
    paths = [out / "sweep.html"]
    atomic_write_with(paths[0], lambda tmp: fig.write_html(tmp, include_plotlyjs=True))
    if png:
        try:
            atomic_write_with(out / "sweep.png", fig.write_image)
            paths.append(out / "sweep.png")
        except Exception as e:  # noqa: BLE001  (no browser for kaleido: keep the HTML, say why)
            log.warning("could not write sweep.png (%s); the HTML chart is there", e)
    return paths
