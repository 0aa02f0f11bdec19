"""`saekit cache`: run the model over text and write activation shards + a manifest.

    saekit cache --layer 15 --tokens 200000 --out runs/demo/acts
    saekit cache --hook blocks.6.hook_resid_post --hook blocks.6.hook_mlp_out --source my.jsonl
    saekit cache --config cache.yaml --set data.context_size=256 --set batch_size=16
    torchrun --nproc_per_node 4 -m app.cli cache ...     # ranks split the shards
    saekit cache --verify runs/demo/acts                # sha256 of every shard

Re-running the same command resumes an interrupted cache (complete shards are kept); a larger
--tokens extends it. Precedence: defaults < --config file < flags < --set overrides.
"""

from __future__ import annotations

import argparse

NAME = "cache"
HELP = "cache activations of one or more hooks to disk (resumable safetensors shards)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layer", type=int, action="append", default=[],
                   help="cache blocks.L.hook_resid_post (repeatable)")
    p.add_argument("--hook", action="append", default=[],
                   help="a hook name, e.g. blocks.6.hook_mlp_out (repeatable; see `saekit hooks`)")
    p.add_argument("--tokens", type=int, default=None, help="token positions to process (default 200000)")
    p.add_argument("--out", default=None, help="output folder (default runs/acts)")
    p.add_argument("--model", default=None, help="embedded default, hub id or local HF dir")
    p.add_argument("--source", default=None,
                   help="builtin | .txt/.jsonl/.parquet file or folder | HF dataset name")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="storage dtype of the activations (the model runs in model.dtype)")
    p.add_argument("--batch-size", type=int, default=None, help="context rows per forward pass")
    p.add_argument("--device", default=None, help="cpu | cuda | mps (default: best available)")
    p.add_argument("--config", default=None, help="YAML/JSON file with CacheConfig fields")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set data.context_size=256 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verify", metavar="DIR", default=None,
                   help="only check the sha256 of every shard of an existing cache and exit")


def build_config(args: argparse.Namespace):  # -> CacheConfig
    from sae import CacheConfig, apply_overrides, from_dict, load_config, resid_hook, to_dict

    data = to_dict(load_config(CacheConfig, args.config))
    hooks = [resid_hook(layer) for layer in args.layer] + list(args.hook)
    if hooks:
        data["hooks"] = hooks
    flags = {
        "n_tokens": args.tokens,
        "out_dir": args.out,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.model is not None:
        data["model"]["name"] = args.model
    if args.device is not None:
        data["model"]["device"] = args.device
    if args.source is not None:
        data["data"]["source"] = args.source
    if args.set:
        data = apply_overrides(data, args.set)
    return from_dict(CacheConfig, data)


def run(args: argparse.Namespace) -> int:
    import sae

    if args.verify:
        manifest = sae.CacheManifest.parse(sae.verify_cache(args.verify), args.verify)
        state = "complete" if manifest.complete else "INCOMPLETE (re-run saekit cache to finish)"
        print(f"{args.verify}: {len(manifest.shards)} shards verified, {state}")
        return 0
    out = sae.build_cache(build_config(args), progress=not args.no_progress)
    m = sae.CacheManifest.read(out)
    print(
        f"cached {m.n_tokens:,} tokens ({m.n_rows} rows of {m.context_size}) of {m.model} in "
        f"{len(m.shards)} shards ({m.dtype}) -> {out}"
    )
    for hook, s in m.hook_stats.items():
        print(
            f"  {hook}: {s['n_kept']:,} activations kept, dropped {s['n_dropped_special']:,} "
            f"special-token and {s['n_dropped_norm']:,} outlier-norm positions"
        )
    return 0
