"""Steering sweeps: features x strengths x prompts x seeds -> JSONL of generations + metrics.

    cfg = sae.load_config(SweepConfig, "sweep.yaml", ["strengths=[2,4,8]"])
    summary = run_sweep(cfg)                  # or: saekit steer-sweep sweep.yaml

Writes `<out_dir>/generations.jsonl` (one record per condition x prompt x seed, appended
and flushed as each condition finishes), `summary.json`, and charts (strength vs concept
score vs perplexity) as HTML and PNG. Re-running the same config resumes: records already
in the JSONL are kept and skipped. Settings that change what a generation means (model,
SAE, sampling, prompts...) must match the existing run, else it stops and says which.

Before any steered generation, the unsteered text must pass the fluency gate
(`steering.fluency`): a sweep over broken text stops with an error instead of becoming a
result. Summaries and "best condition / no effect" live in `steering.summary`, the charts in
`steering.sweep_charts`, reading and appending the JSONL in `steering.sweep_records`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sae import atomic_write_json
from steering.fluency import GateConfig, judge, measure, require_fluent
from steering.interventions import (
    FeatureSteering,
    Intervention,
    SteeringError,
    VectorSteering,
    make_edit,
)
from steering.summary import best_condition, format_summary, record_fluency, summarize
from steering.sweep_charts import plot_sweep, sweep_figure
from steering.sweep_records import append_records, read_jsonl, with_fluency

__all__ = ["CAAConfig", "SweepConfig", "run_sweep", "resolve_prompts", "summarize", "best_condition",
           "format_summary", "sweep_figure", "plot_sweep"]

Scorer = Callable[[str], float]

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sae import SparseAutoencoder

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
    gate: GateConfig = field(default_factory=GateConfig)  # what counts as fluent text
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


@dataclass
class _Run:
    """What every condition of one sweep shares."""

    cfg: SweepConfig
    model: TransformerBridge
    prompts: list[Any]
    empty_ids: list[int]  # the context of "text perplexity": an assistant turn after an empty user message
    concept_scorer: Scorer | None
    task_scorer: Scorer | None

    @property
    def flat(self) -> list[tuple[int, int]]:
        return [(pi, s) for s in self.cfg.seeds for pi in range(len(self.prompts))]


def _records(run: _Run, cond: Condition, todo: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """Generate `todo` (prompt index, seed) under `cond` and measure each generation."""
    from steering.generation import generate
    from steering.scoring import distinct_n, perplexity

    cfg, model = run.cfg, run.model
    gens = generate(
        model, [run.prompts[pi] for pi, _ in todo], cond.intervention, compare=False,
        seed=[s for _, s in todo], max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
        top_p=cfg.top_p, top_k=cfg.top_k, chat=cfg.chat, system_prompt=cfg.system_prompt,
        batch_size=cfg.batch_size,
    )
    ppl = text_ppl = [math.nan] * len(gens)
    if cfg.fluency:
        ids = [g.steered_ids for g in gens]
        ppl = perplexity(model, [g.prompt_ids for g in gens], ids, batch_size=cfg.batch_size)
        text_ppl = perplexity(model, [run.empty_ids] * len(gens), ids, batch_size=cfg.batch_size)
    out = []
    for (pi, s), g, p, tp in zip(todo, gens, ppl, text_ppl, strict=True):
        m = measure(g.steered, g.steered_ids, tp)
        out.append({
            "key": cond.key, "method": cond.method, "features": cond.features,
            "strength": cond.strength, "unit": cfg.unit if cond.method not in ("none", "caa") else None,
            "prompt_index": pi, "prompt": run.prompts[pi], "seed": s, "text": g.steered,
            "n_tokens": m.n_tokens,
            "concept": run.concept_scorer(g.steered) if run.concept_scorer else None,
            "task": run.task_scorer(g.steered) if run.task_scorer else None,
            "perplexity": None if math.isnan(p) else p,
            "text_perplexity": m.text_perplexity,
            "words": m.words, "distinct_1": distinct_n(g.steered_ids, 1), "distinct_2": m.distinct_2,
            "repeat_run": m.repeat_run,
        })
    return out


def _check_unsteered(run: _Run, conds: list[Condition], old: list[dict[str, Any]], jsonl: Path) -> float:
    """Before any steered condition: the unsteered text must pass the fluency gate, else stop
    (steering results on broken text mean nothing). Without an unsteered condition in the
    sweep, the unsteered text is generated for this check and not recorded."""
    t0 = time.time()
    recorded = conds[0].method == "none"
    probe = conds[0] if recorded else Condition("unsteered", "none", [], None, None)
    old = [r for r in old if r["key"] == probe.key] if recorded else []
    have = {(r["prompt_index"], r["seed"]) for r in old}
    fresh = _records(run, probe, [x for x in run.flat if x not in have]) if len(have) < len(run.flat) else []
    both = old + fresh
    verdict = judge([record_fluency(r) for r in both], run.cfg.gate)
    stale = f"{len(old)} of them read back from {jsonl}, written by an earlier run" if old else None
    require_fluent(verdict, [r["text"] for r in both], "unsteered", stale=stale)
    if recorded and fresh:
        append_records(jsonl, fresh)
    return time.time() - t0


def _prepare(cfg: SweepConfig, model: TransformerBridge | None, sae: SparseAutoencoder | None,
             concept_scorer: Scorer | None, task_scorer: Scorer | None) -> tuple[_Run, list[Condition]]:
    """Check everything checkable before the model loads or anything is written; then load."""
    import sae as saelib
    from steering.baselines import caa_vector
    from steering.rendering import render
    from steering.scoring import keyword_scorer

    prompts = resolve_prompts(cfg.prompts, cfg.n_prompts)
    if not cfg.seeds:
        raise SteeringError("seeds is empty; give at least one seed")
    if concept_scorer is None and (cfg.concept_keywords or cfg.concept_regex):
        concept_scorer = keyword_scorer(cfg.concept_keywords, cfg.concept_regex)
    if task_scorer is None and (cfg.task_keywords or cfg.task_regex):
        task_scorer = keyword_scorer(cfg.task_keywords, cfg.task_regex)
    _check_identity(cfg, Path(cfg.out_dir), write=False)
    for s in cfg.strengths:
        make_edit(cfg.method, s, cfg.unit)
    if cfg.feature_db is None and cfg.sae_path and (Path(cfg.sae_path) / "features.sqlite").exists():
        # what `saekit analyze` writes; on a copy, so the caller's config stays as given
        cfg = replace(cfg, feature_db=str(Path(cfg.sae_path) / "features.sqlite"))
    if model is None:
        model = saelib.load_model(cfg.model_name, device=cfg.device)
    if sae is None and cfg.sae_path:
        sae = saelib.load_sae(cfg.sae_path, device=str(saelib.model_device(model)))
    caa = None
    if cfg.caa is not None:
        hook = cfg.hook or (sae.cfg.hook_name if sae is not None else None)
        if hook is None:
            raise SteeringError("the CAA baseline needs a hook: set hook or sae_path")
        caa = caa_vector(model, hook, resolve_prompts(cfg.caa.positive), resolve_prompts(cfg.caa.negative),
                         chat=cfg.caa.chat, region=cfg.caa.region)
    conds = _conditions(cfg, sae, caa)
    empty = render(model.tokenizer, "", chat=cfg.chat, system_prompt=cfg.system_prompt)
    return _Run(cfg, model, prompts, empty, concept_scorer, task_scorer), conds


def run_sweep(
    cfg: SweepConfig,
    *,
    model: TransformerBridge | None = None,
    sae: SparseAutoencoder | None = None,
    concept_scorer: Scorer | None = None,
    task_scorer: Scorer | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) a sweep; returns the summary (also written to summary.json).

    Raises `DegenerateTextError` before any steered generation when the unsteered text
    fails the fluency gate (see `steering.fluency`)."""
    out = Path(cfg.out_dir)
    run, conds = _prepare(cfg, model, sae, concept_scorer, task_scorer)
    cfg = run.cfg  # the caller's config, completed (feature_db) on a copy
    _check_identity(cfg, out, write=True)
    jsonl = out / "generations.jsonl"
    old = with_fluency(read_jsonl(jsonl), run.model.tokenizer)
    secs = _check_unsteered(run, conds, old, jsonl)
    if progress:
        print(f"unsteered text passed the fluency gate ({secs:.1f}s)", flush=True)
    done = {(r["key"], r["prompt_index"], r["seed"]) for r in old}
    for ci, cond in enumerate(conds):
        todo = [(pi, s) for pi, s in run.flat if (cond.key, pi, s) not in done]
        if cond.method == "none" or not todo:
            continue
        t0 = time.time()
        append_records(jsonl, _records(run, cond, todo))
        if progress:
            print(f"[{ci + 1}/{len(conds)}] {cond.key}: {len(todo)} generations in {time.time() - t0:.1f}s",
                  flush=True)
    records = with_fluency(read_jsonl(jsonl), run.model.tokenizer)
    summary = summarize(records, [c.key for c in conds], cfg.gate)
    atomic_write_json(out / "summary.json", summary)
    summary["charts"] = [str(p) for p in plot_sweep(summary, out, png=cfg.png)]
    return summary
