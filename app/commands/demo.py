"""`saekit demo`: text -> activations -> SAE -> features -> steering -> report, resumable."""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "run the whole pipeline on the embedded model and write a report (resumable)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="run folder (a re-run reuses finished stages)")
    p.add_argument("--fast", action="store_true", help="a small version for a first look (a few minutes)")
    p.add_argument("--layer", type=int, default=None, help="residual-stream layer (default 15)")
    p.add_argument("--cache-tokens", type=int, default=None, help="tokens of activations to cache")
    p.add_argument("--train-tokens", type=int, default=None, help="tokens to train on (epochs over the cache)")
    p.add_argument("--d-sae", type=int, default=None, help="SAE width")
    p.add_argument("--k", type=int, default=None, help="active latents per token (TopK)")
    p.add_argument("--analyze-tokens", type=int, default=None, help="tokens for the feature database")
    p.add_argument("--prompts", type=int, default=None, dest="n_prompts", help="prompts per steering condition")
    p.add_argument("--allow-zero-sweep", action="store_true", default=None,
                   help="a steering sweep in which no condition scored anything is reported as no effect "
                        "instead of stopping the demo (a sweep that finds no effect otherwise is always reported)")
    p.add_argument("--device", default=None, help="cpu | cuda | mps (default: best available)")
    p.add_argument("--seed", type=int, default=None)


def run(args: argparse.Namespace) -> int:
    from app.demo_pipeline import Demo, DemoConfig

    overrides = {
        k: getattr(args, k)
        for k in ("layer", "cache_tokens", "train_tokens", "d_sae", "k", "analyze_tokens", "n_prompts", "device", "seed",
                  "allow_zero_sweep")
        if getattr(args, k) is not None
    }
    cfg = DemoConfig.fast(out_dir=args.out, **overrides) if args.fast else DemoConfig(out_dir=args.out, **overrides)
    report = Demo(cfg).run()
    print(f"\nreport: {report}")
    print(f"open the explorer:  saekit explore {cfg.out_dir}/features.sqlite")
    return 0
