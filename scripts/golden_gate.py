"""Golden Gate demo: find the Golden Gate Bridge / San Francisco feature(s) of an SAE and clamp them.

    python scripts/golden_gate.py --sae runs/demo/sae/topk
    python scripts/golden_gate.py --sae runs/demo/sae/topk --strengths 2 4 6 8 --n-prompts 20 --caa

1. contrastive search: Golden Gate / San Francisco texts vs other landmarks and cities, ranked
   by mean activation difference; the top candidates' top examples are printed;
2. among the top candidates, the feature(s) with the highest output score (Arad et al. 2025)
   are steered (or pass --feature);
3. a sweep clamps them on 20 neutral prompts over a range of strengths (x max activation) and
   reports the mention rate (bridge / Golden Gate / San Francisco) and the perplexity of the
   steered text under the unsteered model, against the unsteered baseline.
Targets: mention rate >= 70% at the best strength with perplexity <= 2x unsteered; unsteered <= 5%.
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
    ap.add_argument("--sae", required=True, help="SAE trained on a middle layer (e.g. 15) of the builtin corpus")
    ap.add_argument("--db", default=None, help="feature database (default: SAE/features.sqlite if present)")
    ap.add_argument("--feature", type=int, action="append", default=None, help="steer these features (skip search)")
    ap.add_argument("--n-features", type=int, default=1, help="how many found features to clamp together")
    ap.add_argument("--score-prompts", type=int, default=5, help="neutral prompts for the output score")
    ap.add_argument("--candidates", type=int, default=10, help="contrastive hits to score by output")
    ap.add_argument("--strengths", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 6.0, 8.0])
    ap.add_argument("--unit", default="max", choices=["max", "abs"])
    ap.add_argument("--positions", default="all")
    ap.add_argument("--n-prompts", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--caa", action="store_true", help="also run the difference-of-means baseline")
    ap.add_argument("--caa-scales", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--out", default="runs/golden_gate")
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-png", action="store_true")
    args = ap.parse_args(argv)

    model = saelib.load_model(device=args.device)
    dev = str(next(model.original_model.parameters()).device)
    sae = saelib.load_sae(args.sae, device=dev)
    db = args.db or (str(Path(args.sae) / "features.sqlite") if (Path(args.sae) / "features.sqlite").exists() else None)
    print(f"SAE {args.sae}: {sae.cfg.architecture}, d_sae={sae.cfg.d_sae}, hook {sae.cfg.hook_name}")

    report: dict = {"sae": args.sae, "hook": sae.cfg.hook_name, "d_sae": sae.cfg.d_sae}
    if args.feature:
        features = args.feature
    else:
        hits = steering.contrastive_features(model, sae, P.GOLDEN_GATE_POSITIVE, P.GOLDEN_GATE_NEGATIVE,
                                             k=args.candidates, db=db, n_examples=3)
        hits = steering.rank_by_output_score(model, sae, hits, feature_db=db, unit=args.unit,
                                            strength=4.0 if args.unit == "max" else max(args.strengths),
                                            prompts=P.NEUTRAL_PROMPTS[: args.score_prompts])
        print("\nCandidates (contrastive score, output score) and their top examples:")
        for h in hits:
            print(f"  feature {h.feature}: diff {h.score:.3f}  output {h.details['output_score']:.4f}  "
                  f"logit lens {[t for t, _ in steering.logit_lens(model, sae, h.feature, k=5)]}")
            for ex in h.examples[:3]:
                print(f"      {ex.get('activation', float('nan')):7.2f}  {ex.get('text', '')!r}")
        features = [h.feature for h in hits[: args.n_features]]
        report["candidates"] = [{"feature": h.feature, "score": h.score, **h.details, "examples": h.examples}
                                for h in hits]
    print(f"\nSteering features {features} (together), strengths {args.strengths} x {args.unit}")

    cfg = SweepConfig(
        out_dir=args.out, sae_path=args.sae, feature_db=db, features=features, together=True,
        method="clamp", unit=args.unit, strengths=args.strengths, positions=args.positions,
        prompts="NEUTRAL_PROMPTS", n_prompts=args.n_prompts, seeds=args.seeds,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, batch_size=args.batch_size,
        concept_keywords=P.GOLDEN_GATE_KEYWORDS, png=not args.no_png,
        caa=CAAConfig(positive="GOLDEN_GATE_POSITIVE", negative="GOLDEN_GATE_NEGATIVE",
                      scales=args.caa_scales) if args.caa else None,
    )
    summary = run_sweep(cfg, model=model, sae=sae)
    print("\n" + format_summary(summary))
    base = next(r for r in summary["conditions"] if r["method"] == "none")
    best = best_condition(summary, "clamp", max_ppl_ratio=2.0)
    report.update({"features": features, "summary": summary, "best": best})
    print(f"\nunsteered mention rate {base['concept_rate']:.0%} (target <= 5%), "
          f"median perplexity {base['perplexity_median']:.2f}")
    if best:
        ratio = best["perplexity_median"] / base["perplexity_median"]
        print(f"best clamp within 2x perplexity: strength {best['strength']:g} -> mention rate "
              f"{best['concept_rate']:.0%} (target >= 70%), perplexity {best['perplexity_median']:.2f} "
              f"({ratio:.2f}x unsteered)")
        ex = [json.loads(line) for line in open(Path(args.out) / "generations.jsonl")]
        shown = [r for r in ex if r["key"] == best.get("key")][:3]
        for r in shown:
            print(f"  {r['prompt']!r} -> {r['text']!r}")
    else:
        print("no clamp strength kept perplexity within 2x unsteered")
    if args.caa:
        caa_best = best_condition(summary, "caa", max_ppl_ratio=2.0)
        report["caa_best"] = caa_best
        if caa_best:
            print(f"CAA baseline within 2x perplexity: scale {caa_best['strength']:g} -> mention rate "
                  f"{caa_best['concept_rate']:.0%}")
    (Path(args.out) / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nreport: {args.out}/report.json; charts: {summary.get('charts')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
