"""`saekit eval`: held-out metrics of a trained SAE, written as self-documenting JSON."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

NAME = "eval"
HELP = ("evaluate an SAE: L0, FVU, cosine, shrinkage, dead/dense latents, CE/KL with it spliced in; "
        "opt-in sparse probing and feature absorption")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "sae_dir", help="SAE checkpoint folder (holds cfg.json + sae_weights.safetensors)"
    )
    p.add_argument(
        "--cache",
        default=None,
        help="activation cache of the SAE's hook; its last --tokens are evaluated (default: the training cache's "
        "held-out tail when the run reserved one, else the model runs on the fly)",
    )
    p.add_argument(
        "--tokens",
        type=int,
        default=None,
        help="held-out tokens for reconstruction metrics (default 50000)",
    )
    p.add_argument(
        "--ce-batches",
        type=int,
        default=None,
        help="batches of rows for CE/KL (0 skips the CE pass)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="JSON path (default: SAE_DIR/eval.json); the plot goes beside it",
    )
    p.add_argument(
        "--data",
        default=None,
        help="text source: builtin, a .txt/.jsonl/.parquet file or folder, or a HF dataset",
    )
    p.add_argument(
        "--density-tokens",
        type=int,
        default=None,
        help="count dead / dense latents over this many tokens in their own pass (e.g. 500000; default: "
        "over --tokens); read from the cache when it holds that many, else from the model",
    )
    p.add_argument("--probing", action="store_true",
                   help="sparse probing: topic / format of builtin-corpus documents from k = 1, 2, 5 latents "
                        "vs the residual (runs the model on ~600 documents x 64 tokens)")
    p.add_argument("--absorption", action="store_true",
                   help="first-letter feature absorption with a bootstrap 95%% interval (runs the model on "
                        "2000 single-token words in a ~26-token prompt)")
    p.add_argument("--device", default=None, help="cpu | cuda | mps (default: the best available)")
    p.add_argument("--config", default=None, help="YAML/JSON EvalConfig")
    p.add_argument("--no-png", action="store_true", help="write the density plot as HTML only")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted EvalConfig overrides, e.g. ce_batch_size=4 data.context_size=64",
    )


def build_config(args: argparse.Namespace) -> Any:
    """The EvalConfig the arguments ask for (file, then KEY=VALUE overrides, then flags)."""
    from sae import EvalConfig, load_config

    cfg = load_config(EvalConfig, args.config, args.overrides)
    cfg.sae_path = args.sae_dir
    if args.cache is not None:
        cfg.cache_dir = args.cache
    if args.tokens is not None:
        cfg.n_tokens = args.tokens
    if args.ce_batches is not None:
        cfg.ce_batches = args.ce_batches
    if args.data is not None:
        cfg.data.source = args.data
    if args.device is not None:
        cfg.device = args.device
    if args.no_png:
        cfg.save_png = False
    if args.density_tokens is not None:
        cfg.density_tokens = args.density_tokens
    cfg.probing = cfg.probing or args.probing
    cfg.absorption = cfg.absorption or args.absorption
    sae_dir = Path(args.sae_dir)
    cfg.out_path = (
        args.out
        or cfg.out_path
        or str((sae_dir if sae_dir.is_dir() else sae_dir.parent) / "eval.json")
    )
    return cfg


def run(args: argparse.Namespace) -> int:
    import sae

    cfg = build_config(args)
    result = sae.evaluate(args.sae_dir, cfg=cfg, progress=True)
    print(result.summary())
    print(f"wrote {cfg.out_path}" + "".join(f"\n      {p}" for p in result.plots.values()))
    return 0
