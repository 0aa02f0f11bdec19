"""Steering quality across SAE seeds: train (or take) N SAEs, run the steering benchmark, print the table.

    python scripts/bench_steering_quality.py                                   # 3 seeds, every concept
    python scripts/bench_steering_quality.py --sae runs/a/sae --sae runs/b/sae # SAEs you already have
    python scripts/bench_steering_quality.py --fast --seeds 0 1                # a smoke run (CPU, minutes)

The SAEs are the demo's recipe (TopK, layer 15 of the embedded model, the builtin corpus), one per
`--seeds` value: the seed sets the SAE's initialisation and the order the activations are served
in. They are trained on one activation cache (`--cache`, built when missing) into
`<out>/sae_seed<N>`, and reused on a re-run. Each SAE has its features found afresh
(`steering.run_benchmark`); the table gives every concept x method per SAE, then the spread.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sae  # noqa: E402
from sae.config import CacheConfig, DataConfig, SAEConfig, StoreConfig, TrainConfig  # noqa: E402

LAYER = 15


def ensure_cache(path: Path, n_tokens: int, model, seed: int) -> Path:
    """The layer's activation cache of the builtin corpus, built once and shared by every seed."""
    if (path / "manifest.json").exists() and sae.read_manifest(path).get("complete"):
        return path
    print(f"building the layer-{LAYER} activation cache at {path} ({n_tokens:,} tokens max)")
    sae.build_cache(CacheConfig(out_dir=str(path), hooks=[sae.resid_hook(LAYER)], n_tokens=n_tokens,
                                data=DataConfig(source="builtin"), seed=seed), model=model)
    return path


def train_seed(cache: Path, out: Path, seed: int, args: argparse.Namespace, d_model: int) -> Path:
    """One TopK SAE; a re-run finds the finished run in `out` and only exports it (the trainer resumes)."""
    held_out = min(40_000, sae.CacheManifest.read(cache).n_tokens // 10)
    cfg = TrainConfig(
        out_dir=str(out), cache_dir=str(cache),
        saes=[SAEConfig(architecture="topk", d_in=d_model, d_sae=args.d_sae, k=args.k, hook_name=sae.resid_hook(LAYER))],
        store=StoreConfig(batch_size=4096, held_out_tokens=held_out, seed=seed, device=args.device),
        n_tokens=args.train_tokens, device=args.device, seed=seed, progress=False,
    )
    return Path(sae.train(cfg)[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sae", action="append", default=[], help="use this SAE folder (repeatable) instead of training")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one SAE per seed (>= 3 for a claim)")
    p.add_argument("--cache", default="runs/steer_quality/acts", help="layer-15 activation cache (built when missing)")
    p.add_argument("--cache-tokens", type=int, default=400_000)
    p.add_argument("--train-tokens", type=int, default=2_000_000)
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--out", default="runs/steer_quality")
    p.add_argument("--concepts", default=None, help="comma-separated (default: all; 'none': sycophancy only)")
    p.add_argument("--fast", action="store_true", help="a smoke run: small SAEs, 2 concepts, few prompts")
    p.add_argument("--no-sycophancy", action="store_true")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from steering import BenchmarkConfig, run_benchmark

    if args.fast:  # the demo --fast sizes
        args.cache_tokens, args.train_tokens, args.d_sae = min(args.cache_tokens, 24_000), min(args.train_tokens, 200_000), 1152
    over: dict = {"out_dir": str(Path(args.out) / "bench")}
    if args.concepts:
        names = [c.strip() for c in args.concepts.split(",") if c.strip()]
        over["concepts"] = [] if names == ["none"] else names
    if args.no_sycophancy:
        over["sycophancy"] = False
    cfg = BenchmarkConfig.fast(**over) if args.fast else BenchmarkConfig(**over)
    model = sae.load_model(device=args.device)
    t0 = time.perf_counter()
    if args.sae:
        saes = [(Path(d).name if len({Path(x).name for x in args.sae}) == len(args.sae) else d, sae.load_sae(d))
                for d in args.sae]
    else:
        cache = ensure_cache(Path(args.cache), args.cache_tokens, model, args.seeds[0])
        d_model = int(model.cfg.d_model)
        saes = [(f"seed{s}", sae.load_sae(train_seed(cache, Path(args.out) / f"sae_seed{s}", s, args, d_model)))
                for s in args.seeds]
    t_train = time.perf_counter() - t0
    saes = [(label, s.to(str(sae.model_device(model)))) for label, s in saes]
    result = run_benchmark(model, saes, cfg)
    print((Path(cfg.out_dir) / "results.md").read_text())
    print(f"SAEs ready in {t_train:.0f} s, benchmark {result['seconds']:.0f} s; results: {cfg.out_dir}/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
