"""Quality evaluations beyond FVU for one or more SAEs: one table row per SAE.

    python scripts/bench_eval_quality.py runs/steer_seeds/seed0
    python scripts/bench_eval_quality.py runs/arch/topk runs/arch/jumprelu runs/arch/relu --device cuda
    python scripts/bench_eval_quality.py SAE_DIR --density-tokens 500000 --cache runs/acts --json out.json

Per SAE: sparse probing (`sae.run_sparse_probing`: held-out accuracy on the builtin corpus's
topic / format tasks from the k = 1, 2, 5 latents with the largest class-mean difference, from
every latent, and from the residual), first-letter absorption (`sae.run_absorption`: mean rate
over letters with its bootstrap 95% interval, the partial-absorption fraction, main latents per
letter) and, with `--density-tokens`, dead / dense latents over that many tokens. The model is
loaded once per model name; the SAEs may differ in architecture, width and hook. Prints a
Markdown table (ready for the README) and the seconds each part took; `--json` saves every number.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HEADER = ("| SAE | arch | d_sae | hook | residual | k=1 | k=2 | k=5 | all latents | absorption (95% CI) "
          "| abs. fraction | main latents | dead / dense | seconds |")


def evaluate_one(path: str, model: Any, args: argparse.Namespace) -> dict[str, Any]:
    import sae
    from sae.density import count_firing, density_batches

    s = sae.load_sae(path, device=str(sae.model_device(model)))
    cfg = sae.EvalConfig(probing_docs_per_class=args.docs_per_class, probing_max_tokens=args.max_tokens,
                         absorption_max_words=args.words, quality_seed=args.seed, cache_dir=args.cache,
                         density_tokens=args.density_tokens)
    row: dict[str, Any] = {"path": path, **s.summary()}
    t = time.perf_counter()
    row["probing"] = sae.run_sparse_probing(model, s, cfg)
    row["absorption"] = sae.run_absorption(model, s, cfg)
    if args.density_tokens:
        source, batches = density_batches(cfg, s, lambda: model)
        row["density"] = count_firing(s, batches, args.density_tokens, source)
    row["seconds"] = time.perf_counter() - t
    return row


def table_row(r: dict[str, Any]) -> str:
    p, a = r["probing"], r["absorption"]
    d = r.get("density")
    dead = f"{d.dead_fraction:.1%} / {d.dense_fraction:.1%} ({d.n_tokens:,} tok)" if d else "-"
    ks = " | ".join(f"{x:.3f}" for x in p.mean_sae_accuracy)
    return (f"| {Path(r['path']).name} | {r.get('architecture', '?')} | {r.get('d_sae', '?')} | "
            f"{r.get('hook_name', '?')} | {p.mean_residual_accuracy:.3f} | {ks} | {p.mean_sae_all_accuracy:.3f} | "
            f"{a.mean_absorption_rate:.3f} ({a.ci_low:.3f}-{a.ci_high:.3f}) | {a.mean_absorption_fraction:.3f} | "
            f"{a.mean_main_latents:.2f} | {dead} | {r['seconds']:.0f} (probing {p.seconds:.0f}, "
            f"absorption {a.seconds:.0f}) |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("saes", nargs="+", help="SAE checkpoint folders (cfg.json + sae_weights.safetensors)")
    ap.add_argument("--words", type=int, default=2000, help="single-token words for absorption (0: all ~31k)")
    ap.add_argument("--docs-per-class", type=int, default=50, help="documents per class and probing task")
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens of each document mean-pooled")
    ap.add_argument("--density-tokens", type=int, default=0, help="also count dead / dense over this many tokens")
    ap.add_argument("--cache", default=None, help="activation cache for the density pass (else the model runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="cpu | cuda | mps (default: the best available)")
    ap.add_argument("--json", default=None, help="write every number here")
    args = ap.parse_args(argv)

    import sae

    models: dict[str, Any] = {}
    rows = []
    for path in args.saes:
        name = sae.load_sae(path, device="cpu").cfg.model_name
        if name not in models:
            models[name] = sae.load_model(name, device=args.device)
        rows.append(evaluate_one(path, models[name], args))
        print(f"done {path} in {rows[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    print(f"sparse probing: mean held-out accuracy over {len(rows[0]['probing'].tasks)} tasks "
          f"({', '.join(t['name'] for t in rows[0]['probing'].tasks)}); absorption: first letter, "
          f"{rows[0]['absorption'].n_words} words")
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for r in rows:
        print(table_row(r))
    if args.json:
        from dataclasses import asdict

        doc = [{k: asdict(v) if hasattr(v, "__dataclass_fields__") else v for k, v in r.items()} for r in rows]
        Path(args.json).write_text(json.dumps(doc, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
