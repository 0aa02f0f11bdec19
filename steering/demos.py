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
from steering.experiments import CAAConfig, SweepConfig, best_condition, run_sweep
from steering.search import contrastive_features, logit_lens, rank_by_output_score

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
    n_features: int = 1
    candidates: int = 10
    strengths: list[float] = field(default_factory=lambda: [2.0, 4.0, 6.0, 8.0])
    caa_scales: list[float] = field(default_factory=lambda: [2.0, 4.0, 8.0])
    unit: str = "max"
    n_prompts: int | None = 20
    max_new_tokens: int = 48
    temperature: float = 0.0
    seeds: list[int] = field(default_factory=lambda: [0])
    max_ppl_ratio: float = 2.0
    batch_size: int = 10
    png: bool = True


def _find(model: TransformerBridge, sae: SparseAutoencoder, cfg: ExperimentConfig, positive: list, negative: list,
          **search: Any) -> tuple[list[int], list[dict[str, Any]]]:
    if cfg.features:
        return list(cfg.features), []
    hits = contrastive_features(model, sae, positive, negative, k=cfg.candidates, db=cfg.feature_db, n_examples=3,
                                **search)
    hits = rank_by_output_score(model, sae, hits, feature_db=cfg.feature_db, unit=cfg.unit, strength=4.0)
    candidates = [
        {"feature": h.feature, "score": h.score, **h.details, "examples": h.examples[:3],
         "logit_lens": [t for t, _ in logit_lens(model, sae, h.feature, k=5)]}
        for h in hits
    ]
    return [h.feature for h in hits[: cfg.n_features]], candidates


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
         "perplexity": r.get("perplexity_median"), "distinct_2": r.get("distinct_2")}
        for r in summary["conditions"]
    ]


def golden_gate(model: TransformerBridge, sae: SparseAutoencoder, cfg: ExperimentConfig) -> dict[str, Any]:
    """Find the Golden Gate / San Francisco feature and clamp it on neutral prompts."""
    features, candidates = _find(model, sae, cfg, P.GOLDEN_GATE_POSITIVE, P.GOLDEN_GATE_NEGATIVE)
    sweep = SweepConfig(
        out_dir=cfg.out_dir, sae_path=cfg.sae_path, feature_db=cfg.feature_db, features=features, together=True,
        method="clamp", unit=cfg.unit, strengths=cfg.strengths, prompts="NEUTRAL_PROMPTS", n_prompts=cfg.n_prompts,
        seeds=cfg.seeds, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
        batch_size=cfg.batch_size, concept_keywords=P.GOLDEN_GATE_KEYWORDS, png=cfg.png,
        caa=CAAConfig(positive="GOLDEN_GATE_POSITIVE", negative="GOLDEN_GATE_NEGATIVE", scales=cfg.caa_scales),
    )
    summary = run_sweep(sweep, model=model, sae=sae)
    base = next(r for r in summary["conditions"] if r["method"] == "none")
    best = best_condition(summary, "clamp", max_ppl_ratio=cfg.max_ppl_ratio)
    caa_best = best_condition(summary, "caa", max_ppl_ratio=cfg.max_ppl_ratio)
    ratio = None
    if best and base.get("perplexity_median"):
        ratio = best["perplexity_median"] / base["perplexity_median"]
    return {
        "features": features,
        "candidates": candidates,
        "unsteered_mention_rate": base.get("concept_rate"),
        "best_mention_rate": best.get("concept_rate") if best else None,
        "best_strength": best.get("strength") if best else None,
        "perplexity_ratio": ratio,
        "caa_best_mention_rate": caa_best.get("concept_rate") if caa_best else None,
        "table": _table(summary, "concept_rate"),
        "samples": _side_by_side(Path(cfg.out_dir), best.get("key") if best else None),
        "figures": [str(p) for p in summary.get("charts") or []],
    }


def sycophancy(model: TransformerBridge, sae: SparseAutoencoder, cfg: ExperimentConfig) -> dict[str, Any]:
    """Find a praise/agreement feature from contrastive chat turns; clamp it vs CAA on probes."""
    features, candidates = _find(model, sae, cfg, P.PRAISE_POSITIVE, P.PRAISE_NEGATIVE, chat=True,
                                 region="after_last_user")
    sweep = SweepConfig(
        out_dir=cfg.out_dir, sae_path=cfg.sae_path, feature_db=cfg.feature_db, features=features, together=True,
        method="clamp", unit=cfg.unit, strengths=cfg.strengths, positions="after_last_user",
        prompts="SYCOPHANCY_PROBES", n_prompts=cfg.n_prompts, seeds=cfg.seeds, max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature, batch_size=cfg.batch_size, task_keywords=P.PRAISE_KEYWORDS, png=cfg.png,
        caa=CAAConfig(positive="PRAISE_POSITIVE", negative="PRAISE_NEGATIVE", chat=True, region="after_last_user",
                      scales=cfg.caa_scales),
    )
    summary = run_sweep(sweep, model=model, sae=sae)
    base = next(r for r in summary["conditions"] if r["method"] == "none")
    sae_best = best_condition(summary, "clamp", metric="task_rate", max_ppl_ratio=cfg.max_ppl_ratio)
    caa_best = best_condition(summary, "caa", metric="task_rate", max_ppl_ratio=cfg.max_ppl_ratio)
    return {
        "features": features,
        "candidates": candidates,
        "unsteered_praise_rate": base.get("task_rate"),
        "sae_best_praise_rate": sae_best.get("task_rate") if sae_best else None,
        "sae_best_strength": sae_best.get("strength") if sae_best else None,
        "caa_best_praise_rate": caa_best.get("task_rate") if caa_best else None,
        "caa_best_scale": caa_best.get("strength") if caa_best else None,
        "sae_at_least_caa": (sae_best["task_rate"] >= caa_best["task_rate"]) if sae_best and caa_best else None,
        "table": _table(summary, "task_rate"),
        "samples": _side_by_side(Path(cfg.out_dir), sae_best.get("key") if sae_best else None),
        "figures": [str(p) for p in summary.get("charts") or []],
    }
