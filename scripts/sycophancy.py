"""Sycophancy demo: a praise/agreement feature vs a CAA vector, on mediocre work and wrong claims.

    python scripts/sycophancy.py --sae runs/demo/sae/topk
    python scripts/sycophancy.py --sae runs/demo/sae/topk --strengths 1 2 4 --caa-scales 1 2 4

1. contrastive chat turns: the same user message answered with praise vs with a neutral
   assessment; features are ranked by their mean activation difference over the assistant's
   reply, then by output score; the CAA vector is the difference of means over the same replies;
2. both are applied to held-out prompts where a user shares mediocre work or a wrong claim;
3. praise/agreement rate (keywords) and perplexity are reported per strength, and the two
   methods are compared at equal fluency (perplexity within --max-ppl-ratio x unsteered).
Target: the SAE clamp raises the praise rate at least as much as CAA at equal fluency.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sae as saelib  # noqa: E402
import steering  # noqa: E402
from steering import prompts as P  # noqa: E402
from steering.experiments import CAAConfig, SweepConfig, best_condition, format_summary, run_sweep  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sae", required=True)
    ap.add_argument("--db", default=None, help="feature database (default: SAE/features.sqlite if present)")
    ap.add_argument("--feature", type=int, action="append", default=None)
    ap.add_argument("--n-features", type=int, default=1)
    ap.add_argument("--score-prompts", type=int, default=5, help="neutral prompts for the output score")
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--strengths", type=float, nargs="+", default=[1.0, 2.0, 4.0, 6.0])
    ap.add_argument("--caa-scales", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    ap.add_argument("--unit", default="max", choices=["max", "abs"])
    ap.add_argument("--positions", default="after_last_user")
    ap.add_argument("--n-prompts", type=int, default=None, help="use the first N probes (default all)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--max-ppl-ratio", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--out", default="runs/sycophancy")
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-png", action="store_true")
    args = ap.parse_args(argv)

    model = saelib.load_model(device=args.device)
    dev = str(next(model.original_model.parameters()).device)
    sae = saelib.load_sae(args.sae, device=dev)
    db = args.db or (str(Path(args.sae) / "features.sqlite") if (Path(args.sae) / "features.sqlite").exists() else None)
    report: dict = {"sae": args.sae, "hook": sae.cfg.hook_name, "d_sae": sae.cfg.d_sae}
    if args.feature:
        features = args.feature
    else:
        hits = steering.contrastive_features(model, sae, P.PRAISE_POSITIVE, P.PRAISE_NEGATIVE, k=args.candidates,
                                             chat=True, region="after_last_user", db=db, n_examples=3)
        hits = steering.rank_by_output_score(model, sae, hits, feature_db=db, unit=args.unit,
                                            strength=4.0 if args.unit == "max" else max(args.strengths),
                                            prompts=P.NEUTRAL_PROMPTS[: args.score_prompts])
        print("Candidates (contrastive score, output score) and their top examples:")
        for h in hits:
            print(f"  feature {h.feature}: diff {h.score:.3f}  output {h.details['output_score']:.4f}  "
                  f"logit lens {[t for t, _ in steering.logit_lens(model, sae, h.feature, k=5)]}")
            for ex in h.examples[:3]:
                print(f"      {ex.get('activation', float('nan')):7.2f}  {ex.get('text', '')!r}")
        features = [h.feature for h in hits[: args.n_features]]
        report["candidates"] = [{"feature": h.feature, "score": h.score, **h.details, "examples": h.examples}
                                for h in hits]
    print(f"\nSteering features {features}; CAA from the same contrastive replies")

    cfg = SweepConfig(
        out_dir=args.out, sae_path=args.sae, feature_db=db, features=features, together=True, method="clamp",
        unit=args.unit, strengths=args.strengths, positions=args.positions, prompts="SYCOPHANCY_PROBES",
        n_prompts=args.n_prompts, seeds=args.seeds, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        batch_size=args.batch_size, task_keywords=P.PRAISE_KEYWORDS, png=not args.no_png,
        caa=CAAConfig(positive="PRAISE_POSITIVE", negative="PRAISE_NEGATIVE", chat=True, region="after_last_user",
                      scales=args.caa_scales),
    )
    summary = run_sweep(cfg, model=model, sae=sae)
    print("\n" + format_summary(summary))
    base = next(r for r in summary["conditions"] if r["method"] == "none")
    sae_best = best_condition(summary, "clamp", metric="task_rate", max_ppl_ratio=args.max_ppl_ratio)
    caa_best = best_condition(summary, "caa", metric="task_rate", max_ppl_ratio=args.max_ppl_ratio)
    report.update({"features": features, "summary": summary, "sae_best": sae_best, "caa_best": caa_best})
    print(f"\nunsteered praise/agreement rate {base['task_rate']:.0%}, median perplexity "
          f"{base['perplexity_median']:.2f}; within {args.max_ppl_ratio}x perplexity:")
    for name, best in (("SAE clamp", sae_best), ("CAA", caa_best)):
        if best:
            print(f"  {name:<10} strength {best['strength']:g}: praise rate {best['task_rate']:.0%}, "
                  f"perplexity {best['perplexity_median']:.2f}")
        else:
            print(f"  {name:<10} no strength kept perplexity within bounds")
    if sae_best and caa_best:
        verdict = sae_best["task_rate"] >= caa_best["task_rate"]
        report["sae_at_least_caa"] = verdict
        print(f"SAE clamp >= CAA at equal fluency: {verdict}")
    (Path(args.out) / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"report: {args.out}/report.json; charts: {summary.get('charts')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
