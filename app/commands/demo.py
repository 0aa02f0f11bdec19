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
    p.add_argument("--selection", type=int, default=None, dest="n_selection",
                   help="steering: prompts each method's setting is chosen on (default 12)")
    p.add_argument("--evaluation", type=int, default=None, dest="n_evaluation",
                   help="steering: held-out prompts the chosen settings are reported on (default 60)")
    p.add_argument("--prompts", "--allow-zero-sweep", dest="retired", nargs="?", const=True, default=None,
                   help=argparse.SUPPRESS)
    p.add_argument("--device", default=None, help="cpu | cuda | mps (default: best available)")
    p.add_argument("--seed", type=int, default=None)


def run(args: argparse.Namespace) -> int:
    from app.demo_pipeline import Demo, DemoConfig

    if args.retired is not None:
        raise SystemExit("saekit demo: --prompts and --allow-zero-sweep are gone: the steering stages are the steering "
                         "benchmark's now (size them with --selection / --evaluation), and it stops only on a sweep "
                         "in which fluency and relevance are zero too, which is a broken run")
    overrides = {
        k: getattr(args, k)
        for k in ("layer", "cache_tokens", "train_tokens", "d_sae", "k", "analyze_tokens", "n_selection", "n_evaluation",
                  "device", "seed")
        if getattr(args, k) is not None
    }
    cfg = DemoConfig.fast(out_dir=args.out, **overrides) if args.fast else DemoConfig(out_dir=args.out, **overrides)
    report = Demo(cfg).run()
    print(f"\nreport: {report}")
    print(f"open the explorer:  saekit explore {cfg.out_dir}/features.sqlite")
    return 0
