"""One concept on one SAE: SAE clamp vs CAA (at the clamp's edit sizes) vs prompting vs unsteered.

Each method's setting is chosen by mean `combined` (harmonic mean of concept, fluency, relevance)
on the SELECTION prompts; the chosen settings are then evaluated on the EVALUATION prompts, which
nothing was chosen on.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from steering.baselines import caa_vector
from steering.benchmark_methods import (
    BenchmarkError,
    GenSettings,
    Measured,
    RunMemo,
    SearchSettings,
    best_by,
    caa_at_size,
    clamp_at,
    find_concept_feature,
    hook_of,
    require_fluent_unsteered,
    run_generation,
    unedited_generation,
)
from steering.bootstrap import bootstrap_interval
from steering.concepts import Concept
from steering.reply_quality import ReplyQuality, score_replies

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sae import SparseAutoencoder

SCORES = ("concept", "fluency", "relevance", "combined")


@dataclass
class ConceptRun:
    """What one concept's run needs; `steering.benchmark` builds it from `BenchmarkConfig`."""

    selection: list[str]
    evaluation: list[str]
    unrelated: list[str]
    strengths: list[float]
    gen: GenSettings
    search: SearchSettings
    edit_tolerance: float = 0.05
    resamples: int = 2000
    n_samples: int = 4
    rate_rule_ppl: float | None = 2.0  # also report clamp/CAA chosen by `by_rate` (None: only by combined)
    memo: RunMemo = field(default_factory=RunMemo)  # shared by every concept and SAE of a run


def interval(values: Sequence[float], cfg: ConceptRun) -> dict[str, float]:
    point, low, high = bootstrap_interval(list(values), n_resamples=cfg.resamples, seed=cfg.gen.seed)
    return {"point": point, "low": low, "high": high}


def check_scores(quality: Sequence[ReplyQuality], what: str, replies: Sequence[str] | None = None) -> None:
    """NaN means a scorer failed silently; a mean over it would hide that. The raw measures of an
    empty reply (a steered model that stops at once) are NaN by definition; its 0..1 scores are not."""
    raw = ("concept_logprob_gain", "relevance_logratio", "text_perplexity")
    for i, q in enumerate(quality):
        empty = replies is not None and not replies[i].strip()
        for name in SCORES if empty else (*SCORES, *raw):
            v = getattr(q, name)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                raise BenchmarkError(f"{what}: reply {i} has {name} = {v}; a scorer failed on it (empty reply? "
                                     "run steering.reply_quality.score_replies on it alone to see why)")


def condition_row(method: str, setting: float | None, m: Measured, quality: Sequence[ReplyQuality],
                  cfg: ConceptRun, **extra: Any) -> dict[str, Any]:
    """A condition's numbers: rates and means with 95% bootstrap intervals over prompts."""
    check_scores(quality, f"{method} {setting}", m.replies)
    row: dict[str, Any] = {"method": method, "setting": setting, "n": len(quality), "edit_size": m.edit_size,
                           "residual_norm": m.residual_norm, **extra}
    row["concept_rate"] = interval([float(q.concept_hit) for q in quality], cfg)
    for name in SCORES:
        row[name] = interval([float(getattr(q, name)) for q in quality], cfg)
    ppl = [float(q.text_perplexity) for q in quality if math.isfinite(float(q.text_perplexity))]
    row["text_perplexity_median"] = statistics.median(ppl) if ppl else math.nan  # empty replies have none
    row["degenerate_share"] = statistics.fmean(float(bool(q.degenerate)) for q in quality)
    return row


def check_sweep(rows: Sequence[dict[str, Any]], what: str) -> None:
    """A sweep whose every score is zero at every setting is a broken pipeline, not a finding:
    even a useless steering vector leaves some fluent, relevant text at its weakest setting."""
    if not rows:
        raise BenchmarkError(f"{what}: the sweep is empty; give at least one strength")
    total = sum(abs(r[name]["point"]) for r in rows for name in (*SCORES, "concept_rate"))
    if total == 0:
        raise BenchmarkError(f"{what}: every score is zero at every setting; the scorers or generation are broken "
                             "(check steering.reply_quality on the unsteered replies before trusting any number)")


def _score(model: TransformerBridge, questions: Sequence[str], m: Measured, concept: Concept,
           cfg: ConceptRun) -> list[ReplyQuality]:
    return score_replies(model, list(questions), m.replies, concept, unrelated=cfg.unrelated,
                         batch_size=cfg.gen.batch_size, cache=cfg.memo.scores)


def _prompted(questions: Sequence[str], concept: Concept) -> list[str]:
    """The prompting baseline: the concept's instruction added to the user turn."""
    return [f"{q}\n\n{concept.instruction}" for q in questions]


def _sweep(model: TransformerBridge, sae: SparseAutoencoder, concept: Concept, feature: int,
           cfg: ConceptRun) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], Any]:
    """Selection prompts: unsteered, the clamp at each strength, CAA at each clamp's edit size."""
    q = cfg.selection
    base = unedited_generation(model, sae, q, cfg.gen, cfg.memo)  # checked by concept_benchmark already
    base_row = condition_row("unsteered", None, base, _score(model, q, base, concept, cfg), cfg)
    clamps = []
    for s in cfg.strengths:
        m = run_generation(model, q, clamp_at(sae, feature, s), cfg.gen)
        clamps.append(condition_row("clamp", s, m, _score(model, q, m, concept, cfg), cfg))
    check_sweep(clamps, f"{concept.name}: clamp sweep")
    vec = caa_vector(model, hook_of(sae), concept.positive, concept.negative, positions="all",
                     batch_size=cfg.gen.batch_size, label=f"caa {concept.name}")
    caas = []
    for c in clamps:
        iv, m = caa_at_size(model, q, vec, c["edit_size"], base.residual_norm, cfg.gen, cfg.edit_tolerance)
        caas.append(condition_row("caa", c["edit_size"], m, _score(model, q, m, concept, cfg), cfg,
                                  scale=iv.scale, target_edit_size=c["edit_size"], clamp_strength=c["setting"]))
    check_sweep(caas, f"{concept.name}: CAA sweep")
    return base_row, clamps, caas, vec


def _steered(model: TransformerBridge, sae: SparseAutoencoder, feature: int, vec: Any, kind: str,
             row: dict[str, Any], q: Sequence[str], cfg: ConceptRun) -> tuple[Measured, float, dict[str, Any]]:
    """A selection row's setting (a clamp strength, or a CAA scale) applied to the prompts `q`."""
    if kind == "clamp":
        return run_generation(model, q, clamp_at(sae, feature, row["setting"]), cfg.gen), row["setting"], \
            {"feature": feature}
    return run_generation(model, q, vec.with_scale(row["scale"]), cfg.gen), row["setting"], {"scale": row["scale"]}


def _evaluate(model: TransformerBridge, sae: SparseAutoencoder, concept: Concept, feature: int,
              chosen: dict[str, dict[str, Any]], vec: Any, cfg: ConceptRun) -> tuple[list[dict[str, Any]], list[dict]]:
    """The chosen settings (and unsteered) on the evaluation prompts, with samples side by side.
    `chosen` maps a method ("clamp", "caa", "clamp_by_rate", ...) to its selection row; a setting
    chosen under two rules is generated once."""
    q = cfg.evaluation
    runs: dict[str, tuple[Measured, float | None, dict[str, Any]]] = {}
    base = unedited_generation(model, sae, q, cfg.gen, cfg.memo)
    require_fluent_unsteered(base, "unsteered (evaluation prompts)")
    runs["unsteered"] = (base, None, {})
    generated: dict[tuple[str, float], tuple[Measured, float, dict[str, Any]]] = {}

    def at(method: str) -> tuple[Measured, float, dict[str, Any]]:
        kind, row = method.split("_")[0], chosen[method]
        if (kind, row["setting"]) not in generated:
            generated[(kind, row["setting"])] = _steered(model, sae, feature, vec, kind, row, q, cfg)
        return generated[(kind, row["setting"])]

    runs["clamp"], runs["caa"] = at("clamp"), at("caa")
    runs["prompting"] = (unedited_generation(model, sae, _prompted(q, concept), cfg.gen, cfg.memo), None,
                         {"instruction": concept.instruction})
    runs.update({method: at(method) for method in chosen if method not in runs})
    rows = [condition_row(k, setting, m, _score(model, q, m, concept, cfg), cfg, **extra)
            for k, (m, setting, extra) in runs.items()]
    samples = [{"prompt": q[i], **{k: r[0].replies[i] for k, r in runs.items()}}
               for i in range(min(cfg.n_samples, len(q)))]
    return rows, samples


def by_rate(rows: Sequence[dict[str, Any]], base_row: dict[str, Any], ppl_ratio: float) -> dict[str, Any] | None:
    """Issue 14's target rule: the highest concept rate among the settings whose median text
    perplexity stays within `ppl_ratio` x the unsteered one (None: no setting does). The combined
    score also weighs relevance, which this rule ignores; both choices are reported."""
    limit = ppl_ratio * base_row["text_perplexity_median"]
    ok = [r for r in rows if r["text_perplexity_median"] <= limit]
    return best_by(ok, lambda r: r["concept_rate"]["point"]) if ok else None


def concept_benchmark(model: TransformerBridge, sae: SparseAutoencoder, concept: Concept,
                      cfg: ConceptRun) -> dict[str, Any]:
    """Find the feature, sweep and tune on selection prompts, evaluate on held-out prompts."""
    if set(cfg.selection) & set(cfg.evaluation):
        raise BenchmarkError("selection and evaluation prompts overlap; a setting chosen on a prompt must not "
                             "be scored on it (use steering.concepts' SELECTION_PROMPTS / EVALUATION_PROMPTS)")
    # The unsteered replies first: a broken generation stack stops the run before the feature search
    # spends minutes on it (the memo hands these replies to the sweep below).
    require_fluent_unsteered(unedited_generation(model, sae, cfg.selection, cfg.gen, cfg.memo),
                             "unsteered (selection prompts)")
    feature, candidates = find_concept_feature(model, sae, concept.positive, concept.negative, concept.keywords,
                                               cfg.selection, cfg.search)
    base_row, clamps, caas, vec = _sweep(model, sae, concept, feature, cfg)
    combined = lambda r: r["combined"]["point"]  # noqa: E731
    chosen = {"clamp": best_by(clamps, combined), "caa": best_by(caas, combined)}
    if cfg.rate_rule_ppl is not None:
        for method, sweep in (("clamp", clamps), ("caa", caas)):
            row = by_rate(sweep, base_row, cfg.rate_rule_ppl)
            if row is not None:
                chosen[f"{method}_by_rate"] = row
    rows, samples = _evaluate(model, sae, concept, feature, chosen, vec, cfg)
    return {
        "concept": concept.name,
        "title": concept.title,
        "feature": feature,
        "candidates": candidates,
        "selection": {"unsteered": base_row, "clamp": clamps, "caa": caas},
        "chosen": {"clamp_strength": chosen["clamp"]["setting"], "caa_edit_size": chosen["caa"]["setting"],
                   "caa_scale": chosen["caa"]["scale"],
                   **{f"{k}_setting": r["setting"] for k, r in chosen.items() if k.endswith("_by_rate")}},
        "evaluation": rows,
        "samples": samples,
    }


def headline(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per method, the numbers whose spread over SAEs is reported."""
    out = {}
    for r in result["evaluation"]:
        out[r["method"]] = {"concept_rate": r["concept_rate"]["point"], "fluency": r["fluency"]["point"],
                            "relevance": r["relevance"]["point"], "combined": r["combined"]["point"],
                            "edit_size": r["edit_size"], "text_perplexity": r["text_perplexity_median"]}
    return out


def spread(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(list(values), dtype=float)
    return {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())}
