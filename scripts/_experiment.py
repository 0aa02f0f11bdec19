"""The command line shared by `golden_gate.py` and `sycophancy.py`: flags -> ExperimentConfig -> run."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sae as saelib  # noqa: E402
from steering.reference_experiments import ExperimentConfig, format_result  # noqa: E402


def run(doc: str, experiment: Callable[..., dict[str, Any]], what: str, argv: list[str] | None,
        **defaults: Any) -> int:
    d = ExperimentConfig(**defaults)
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sae", required=True, help="SAE trained on a middle layer (e.g. 15) of the builtin corpus")
    ap.add_argument("--db", default=None, help="feature database (default: SAE/features.sqlite if present)")
    ap.add_argument("--feature", type=int, action="append", default=None, help="steer these features (skip search)")
    ap.add_argument("--n-features", type=int, default=d.n_features, help="found features clamped together")
    ap.add_argument("--candidates", type=int, default=d.candidates, help="contrastive hits scored by output")
    ap.add_argument("--score-prompts", type=int, default=d.score_prompts, help="prompts for the output score")
    ap.add_argument("--score-strength", type=float, default=d.score_strength, help="clamp for the output score")
    ap.add_argument("--select", type=int, default=d.select, help="candidates tried by a short steered generation")
    ap.add_argument("--strengths", type=float, nargs="+", default=d.strengths)
    ap.add_argument("--caa-scales", type=float, nargs="*", default=d.caa_scales, help="none: no CAA baseline")
    ap.add_argument("--unit", default=d.unit, choices=["max", "abs"])
    ap.add_argument("--positions", default=d.positions)
    ap.add_argument("--n-prompts", type=int, default=d.n_prompts)
    ap.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    ap.add_argument("--temperature", type=float, default=d.temperature)
    ap.add_argument("--seeds", type=int, nargs="+", default=d.seeds)
    ap.add_argument("--max-ppl-ratio", type=float, default=d.max_ppl_ratio)
    ap.add_argument("--fluency", choices=["perplexity", "text_perplexity"], default=d.fluency,
                    help="what the fluency bound applies to (default: the experiment's own)")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--out", default=d.out_dir)
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-png", action="store_true")
    a = ap.parse_args(argv)

    model = saelib.load_model(device=a.device)
    sae = saelib.load_sae(a.sae, device=str(next(model.original_model.parameters()).device))
    default_db = Path(a.sae) / "features.sqlite"
    cfg = ExperimentConfig(
        out_dir=a.out, sae_path=a.sae, feature_db=a.db or (str(default_db) if default_db.exists() else None),
        features=a.feature, n_features=a.n_features, candidates=a.candidates, score_prompts=a.score_prompts,
        score_strength=a.score_strength, select=a.select, strengths=a.strengths, caa_scales=a.caa_scales or None, unit=a.unit,
        positions=a.positions, n_prompts=a.n_prompts, max_new_tokens=a.max_new_tokens, temperature=a.temperature,
        seeds=a.seeds, max_ppl_ratio=a.max_ppl_ratio, fluency=a.fluency, batch_size=a.batch_size,
        png=not a.no_png,
    )
    print(f"SAE {a.sae}: {sae.cfg.architecture}, d_sae={sae.cfg.d_sae}, hook {sae.cfg.hook_name}")
    result = experiment(model, sae, cfg)
    print(format_result(result, what))
    report = Path(a.out) / "report.json"
    report.write_text(json.dumps({"sae": a.sae, "config": vars(a), **result}, indent=2, default=str) + "\n")
    print(f"report: {report}; charts: {result['figures']}")
    return 0
