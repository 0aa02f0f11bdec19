"""The two reference experiments, as functions: Golden Gate (a concept) and sycophancy (a behaviour).

Each one finds its feature(s) by contrastive prompts (re-ranked by output score), sweeps clamp
strengths on held-out prompts beside the unsteered model (and a CAA baseline), and returns a
JSON-ready summary. `scripts/golden_gate.py`, `scripts/sycophancy.py`, notebook 02 and
`saekit demo` are thin wrappers around these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steering import prompts as P
from steering.experiments import CAAConfig, SweepConfig, run_sweep
from steering.fluency import SampleFluency, fluent, judge, measure, require_fluent
from steering.generation import generate
from steering.interventions import Clamp, FeatureSteering
from steering.scoring import keyword_scorer
from steering.search import FeatureHit, contrastive_features, logit_lens, rank_by_output_score
from steering.summary import NoEffect, best_condition

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sae import SparseAutoencoder


@dataclass
class ExperimentConfig:
    """Sizes and settings shared by both experiments."""

    out_dir: str = "runs/golden_gate"
    sae_path: str | None = None  # recorded in the sweep; the SAE object is passed in
    feature_db: str | None = None
    features: list[int] | None = None  # None: find them
    n_features: int = 1  # found features clamped together
    candidates: int = 10  # contrastive hits (per ranking) re-ranked by output score
    score_prompts: int = 5  # prompts for the output score
    score_strength: float = 2.0  # clamp strength (in `unit`) for the output score and the selection
    select: int = 6  # best candidates by output score, re-ranked by a short steered generation
    select_tokens: int = 24  # tokens generated per selection prompt
    strengths: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0, 3.0, 4.0])
    caa_scales: list[float] | None = field(default_factory=lambda: [2.0, 4.0, 8.0])  # None: no baseline
    unit: str = "max"
    positions: str | None = None  # None: the experiment's own (all / after_last_user)
    n_prompts: int | None = 20
    max_new_tokens: int = 48
    temperature: float = 0.0
    seeds: list[int] = field(default_factory=lambda: [0])
    max_ppl_ratio: float = 2.0  # fluency bound: a condition counts if its fluency stays within this x unsteered
    fluency: str | None = None  # "perplexity" | "text_perplexity"; None: the experiment's own
    batch_size: int = 10
    png: bool = True


def _candidates(hits: list[FeatureHit], model: TransformerBridge, sae: SparseAutoencoder) -> list[dict[str, Any]]:
    return [
        {"feature": h.feature, "score": h.score, **h.details, "examples": h.examples[:3],
         "logit_lens": [t for t, _ in logit_lens(model, sae, h.feature, k=5)]}
        for h in hits
    ]


def find_golden_gate(model: TransformerBridge, sae: SparseAutoencoder, cfg: ExperimentConfig) -> list[FeatureHit]:
    """Golden Gate candidates, best first: features that fire more on Golden Gate texts than on
    other landmarks, ranked both by mean over tokens and by the strongest token (a concept
    feature often fires on a few tokens only), then re-ranked by how much clamping them raises
    the next-token probability of the concept's words on neutral prompts (Arad et al.'s output
    score with the concept's tokens: the logit lens of a middle-layer decoder row is mostly noise),
    and the best of those by a short steered generation (`select_by_steering`). Selection prompts
    are kept apart from the evaluation prompts."""
    hits: dict[int, FeatureHit] = {}
    for reduce in ("max", "mean"):
        for h in contrastive_features(model, sae, P.GOLDEN_GATE_POSITIVE, P.GOLDEN_GATE_NEGATIVE, k=cfg.candidates,
                                      reduce=reduce, db=cfg.feature_db, n_examples=3):
            hits.setdefault(h.feature, h)
    ranked = rank_by_output_score(model, sae, list(hits.values()), feature_db=cfg.feature_db, unit=cfg.unit,
                                  strength=cfg.score_strength, concept_tokens=P.GOLDEN_GATE_TOKENS,
                                  prompts=P.SELECTION_PROMPTS[: cfg.score_prompts])
    return select_by_steering(model, sae, ranked, cfg, P.SELECTION_PROMPTS, P.GOLDEN_GATE_KEYWORDS, "all")


def find_praise(model: TransformerBridge, sae: SparseAutoencoder, cfg: ExperimentConfig) -> list[FeatureHit]:
    """Praise/agreement candidates, best first: mean activation difference over the assistant's
    reply in contrastive chat turns, re-ranked by how much clamping raises the probability that a
    reply opens with praise, scored on the contrastive set's own user turns (probes stay held out)."""
    hits = contrastive_features(model, sae, P.PRAISE_POSITIVE, P.PRAISE_NEGATIVE, k=cfg.candidates, chat=True,
                                region="after_last_user", db=cfg.feature_db, n_examples=3)
    ranked = rank_by_output_score(model, sae, hits, feature_db=cfg.feature_db, unit=cfg.unit,
                                  strength=cfg.score_strength, concept_tokens=P.PRAISE_TOKENS,
                                  prompts=P.PRAISE_USER_TURNS[: cfg.score_prompts])
    return select_by_steering(model, sae, ranked, cfg, P.PRAISE_USER_TURNS[: cfg.score_prompts], P.PRAISE_KEYWORDS,
                              "after_last_user")


def select_by_steering(model: TransformerBridge, sae: SparseAutoencoder, hits: list[FeatureHit],
                       cfg: ExperimentConfig, prompts: list[str], keywords: list[str],
                       positions: str) -> list[FeatureHit]:
    """Re-rank the first `cfg.select` hits by what clamping each one (at `cfg.score_strength`)
    does to a short greedy generation: the share of prompts whose text has a keyword and
    passes the fluency gate's per-generation checks. A feature that lifts the concept's
    next-token probability can still derail the text into fragments of one token; this is the
    check that sees it. Ties keep the output-score order. The unsteered text on the same
    prompts must pass the gate first (`DegenerateTextError`): steered text from a broken
    install would make every candidate look equally useless."""
    if cfg.select <= 0:
        return hits
    mentions = keyword_scorer(keywords)

    def measured(iv: FeatureSteering | None) -> list[tuple[str, SampleFluency]]:
        gens = generate(model, prompts, iv, compare=False, max_new_tokens=cfg.select_tokens, batch_size=len(prompts))
        return [(g.steered, measure(g.steered, g.steered_ids)) for g in gens]

    base = measured(None)
    require_fluent(judge([m for _, m in base]), [t for t, _ in base], "unsteered")
    top = hits[: cfg.select]
    for h in top:
        iv = FeatureSteering(sae, {h.feature: Clamp(cfg.score_strength, unit=cfg.unit)}, positions=positions,
                             feature_db=cfg.feature_db)
        out = measured(iv)
        h.details["steering_score"] = sum(mentions(t) * fluent(m) for t, m in out) / len(out)
    return sorted(top, key=lambda h: -h.details["steering_score"]) + hits[cfg.select :]


def _side_by_side(out_dir: Path, best_key: str | None, limit: int = 6) -> list[dict[str, str]]:
    path = out_dir / "generations.jsonl"
    if best_key is None or not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    base = {r["prompt"]: r["text"] for r in rows if r["key"] == "unsteered"}
    return [
        {"prompt": str(r["prompt"]), "unsteered": base.get(r["prompt"], ""), "steered": r["text"]}
        for r in rows if r["key"] == best_key
    ][:limit]


def _table(summary: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    return [
        {"condition": r["key"], "strength": r.get("strength"), metric: r.get(metric),
         "perplexity": r.get("perplexity_median"), "text_perplexity": r.get("text_perplexity_median"),
         "distinct_2": r.get("distinct_2"), "fluent": r.get("fluent")}
        for r in summary["conditions"]
    ]


def _run(model: TransformerBridge, sae: SparseAutoencoder, cfg: ExperimentConfig, hits: list[FeatureHit] | None,
         metric: str, default_fluency: str, **sweep: Any) -> dict[str, Any]:
    """Sweep the chosen features; the result common to both experiments."""
    features = list(cfg.features) if cfg.features else [h.feature for h in (hits or [])[: cfg.n_features]]
    if not features:
        raise ValueError("no feature to steer: the contrastive search found none; pass features=[...]")
    summary = run_sweep(SweepConfig(
        out_dir=cfg.out_dir, sae_path=cfg.sae_path, feature_db=cfg.feature_db, features=features, together=True,
        method="clamp", unit=cfg.unit, strengths=cfg.strengths, n_prompts=cfg.n_prompts, seeds=cfg.seeds,
        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, batch_size=cfg.batch_size, png=cfg.png,
        **sweep,
    ), model=model, sae=sae)
    base = next(r for r in summary["conditions"] if r["method"] == "none")
    fluency = cfg.fluency or default_fluency
    bounds = dict(metric=metric, max_ppl_ratio=cfg.max_ppl_ratio, fluency=fluency)
    best = best_condition(summary, "clamp", **bounds)
    caa = best_condition(summary, "caa", **bounds)
    # With no effect, show the strongest clamp's text: the reader sees what it did instead.
    shown = best.get("key") if best else next((r["key"] for r in reversed(summary["conditions"])
                                                if r["method"] == "clamp"), None)
    col = f"{fluency}_median"
    ratio = None
    if best and base.get(col):
        ratio = best[col] / base[col]
    return {
        "features": features,
        "candidates": _candidates(hits or [], model, sae),
        "fluency": fluency,
        "unsteered_rate": base.get(metric),
        "unsteered_perplexity": base.get("perplexity_median"),
        "unsteered_text_perplexity": base.get("text_perplexity_median"),
        "best_rate": best.get(metric) if best else None,
        "best_strength": best.get("strength") if best else None,
        "best_perplexity": best.get("perplexity_median") if best else None,
        "best_text_perplexity": best.get("text_perplexity_median") if best else None,
        "fluency_ratio": ratio,
        "no_effect": str(best) if isinstance(best, NoEffect) else None,
        "caa_best_rate": caa.get(metric) if caa else None,
        "caa_best_scale": caa.get("strength") if caa else None,
        "caa_best_perplexity": caa.get("perplexity_median") if caa else None,
        "caa_best_text_perplexity": caa.get("text_perplexity_median") if caa else None,
        "caa_no_effect": str(caa) if isinstance(caa, NoEffect) else None,
        "table": _table(summary, metric),
        "samples": _side_by_side(Path(cfg.out_dir), shown),
        "samples_condition": shown,
        "figures": [str(p) for p in summary.get("charts") or []],
        "summary": summary,
    }


def golden_gate(model: TransformerBridge, sae: SparseAutoencoder, cfg: ExperimentConfig) -> dict[str, Any]:
    """Find the Golden Gate / San Francisco feature and clamp it on neutral prompts; the result's
    `*_rate` fields are mention rates (bridge / Golden Gate / San Francisco)."""
    hits = None if cfg.features else find_golden_gate(model, sae, cfg)
    caa = None
    if cfg.caa_scales:
        caa = CAAConfig(positive="GOLDEN_GATE_POSITIVE", negative="GOLDEN_GATE_NEGATIVE", scales=cfg.caa_scales)
    # Fluency of the text alone: talking about the bridge when asked about dinner is the intended
    # effect, which perplexity given the question would count as disfluency.
    return _run(model, sae, cfg, hits, "concept_rate", "text_perplexity", positions=cfg.positions or "all", prompts="NEUTRAL_PROMPTS",
                concept_keywords=P.GOLDEN_GATE_KEYWORDS, caa=caa)


def sycophancy(model: TransformerBridge, sae: SparseAutoencoder, cfg: ExperimentConfig) -> dict[str, Any]:
    """Find a praise/agreement feature from contrastive chat turns; clamp it vs CAA on probes
    where a user shares mediocre work or a wrong claim; `*_rate` fields are praise rates."""
    hits = None if cfg.features else find_praise(model, sae, cfg)
    caa = None
    if cfg.caa_scales:
        caa = CAAConfig(positive="PRAISE_POSITIVE", negative="PRAISE_NEGATIVE", chat=True, region="after_last_user",
                        scales=cfg.caa_scales)
    result = _run(model, sae, cfg, hits, "task_rate", "perplexity", positions=cfg.positions or "after_last_user",
                  prompts="SYCOPHANCY_PROBES", task_keywords=P.PRAISE_KEYWORDS, caa=caa)
    if result["best_rate"] is not None and result["caa_best_rate"] is not None:
        result["sae_at_least_caa"] = result["best_rate"] >= result["caa_best_rate"]
    return result


def format_result(result: dict[str, Any], what: str) -> str:
    """A few lines for a terminal: the candidates, the best clamp and CAA against unsteered."""
    lines = []
    for c in result["candidates"]:
        lines.append(f"  feature {c['feature']}: diff {c['score']:.3f}  output {c.get('output_score', 0):.4f}  "
                     f"steered {c.get('steering_score', float('nan')):.2f}  "
                     f"logit lens {c['logit_lens']}")
        lines += [f"      {ex.get('activation', float('nan')):7.2f}  {ex.get('text', '')!r}" for ex in c["examples"]]
    pct = lambda x: "-" if x is None else f"{x:.0%}"  # noqa: E731
    num = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    lines.append(f"features {result['features']}: unsteered {what} {pct(result['unsteered_rate'])} "
                 f"(perplexity {num(result['unsteered_perplexity'])}, text {num(result['unsteered_text_perplexity'])})")
    if result.get("no_effect"):
        lines.append(f"  clamp: {result['no_effect']}")
    else:
        lines.append(f"  best clamp: strength {result['best_strength']} -> {what} {pct(result['best_rate'])}, "
                     f"perplexity {num(result['best_perplexity'])}, text {num(result['best_text_perplexity'])} "
                     f"({result['fluency']} {num(result['fluency_ratio'])}x unsteered)")
    if result.get("caa_no_effect"):
        lines.append(f"  CAA: {result['caa_no_effect']}")
    elif result["caa_best_scale"] is not None:
        lines.append(f"  best CAA:   scale {result['caa_best_scale']} -> {what} {pct(result['caa_best_rate'])}, "
                     f"perplexity {num(result['caa_best_perplexity'])}, text {num(result['caa_best_text_perplexity'])}")
    lines += [f"  {s['prompt']!r} -> {s['steered']!r}" for s in result["samples"][:3]]
    return "\n".join(lines)
