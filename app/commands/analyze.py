"""`saekit analyze SAE --tokens N`: build the feature database of a trained SAE.

    saekit analyze runs/sae/topk --tokens 200000                 # -> runs/sae/topk/features.sqlite
    saekit analyze runs/sae/topk --tokens 1000000 --cache runs/acts --out feats.sqlite --force
    saekit analyze runs/sae/topk --set top_k=30 --set context_window=12
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "analyze"
HELP = "one pass over N tokens -> a SQLite feature database (stats, examples, logit lens, neighbours)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sae", help="trained SAE directory (saekit or SAELens layout)")
    p.add_argument("--tokens", type=int, default=None, help="tokens to analyse (default 200000)")
    p.add_argument("--cache", default=None, metavar="DIR", help="replay an activation cache instead of running the model")
    p.add_argument("--out", default=None, help="database path (default: SAE/features.sqlite)")
    p.add_argument("--force", action="store_true", help="replace an existing database at --out")
    p.add_argument("--config", default=None, help="FeaturesConfig YAML/JSON file")
    p.add_argument("--data", default=None, help="text source: builtin, a .txt/.jsonl/.parquet file or folder, or a HF dataset")
    p.add_argument("--batch-size", type=int, default=None, help="context rows per forward pass")
    p.add_argument("--device", default=None, help="cpu | cuda | mps (default: the best available)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any FeaturesConfig field, e.g. --set top_k=30 --set data.context_size=256 (repeatable)")


def run(args: argparse.Namespace) -> int:
    import sae
    from sae import FeaturesConfig, apply_overrides, from_dict, load_config, to_dict

    sae_dir = Path(args.sae)
    if not sae_dir.exists():
        raise FileNotFoundError(f"no SAE at {sae_dir}: pass the directory a `saekit train` run wrote (it holds cfg.json)")
    # precedence: defaults < --config file < flags < --set (flags are assigned directly: paths are not YAML)
    cfg = load_config(FeaturesConfig, args.config)
    cfg.sae_path = str(sae_dir)
    cfg.out_path = args.out or str((sae_dir if sae_dir.is_dir() else sae_dir.parent) / "features.sqlite")
    if args.tokens is not None:
        cfg.n_tokens = args.tokens
    if args.cache is not None:
        cfg.cache_dir = args.cache
    if args.force:
        cfg.overwrite = True
    if args.data is not None:
        cfg.data.source = args.data
    if args.batch_size is not None:
        cfg.batch_size = args.batch_size
    if args.device is not None:
        cfg.device = args.device
        cfg.model.device = args.device
    if args.set:
        cfg = from_dict(FeaturesConfig, apply_overrides(to_dict(cfg), args.set))
    if Path(cfg.out_path).exists() and not cfg.overwrite:
        raise FileExistsError(f"{cfg.out_path} already exists; add --force to replace it, or choose another --out")
    path = sae.build_feature_db(cfg)
    db = sae.FeatureDB(path)
    s = db.summaries()
    t = db.meta.get("timings", {})
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {db.n_features} latents over {db.meta['n_tokens']} tokens, "
          f"{int(s['dead'].sum())} dead")
    if t:
        print(f"forward {t.get('forward_s', 0):.1f}s, SAE encode {t.get('encode_s', 0):.1f}s, "
              f"statistics {t.get('stats_s', 0):.1f}s, finalize {t.get('finalize_s', 0):.1f}s")
    print(f"explore it: saekit explore {path}")
    return 0
