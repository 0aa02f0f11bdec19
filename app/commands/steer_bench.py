"""`saekit steer-bench`: SAE clamp vs CAA vs prompting per concept, across SAEs -> results.json + results.md.

    saekit steer-bench --sae runs/s0/sae --sae runs/s1/sae --sae runs/s2/sae --out runs/steer_bench
    saekit steer-bench --sae runs/demo/sae --concepts golden_gate,cooking --fast

Each SAE gets its features found afresh; give >= 3 SAEs trained with different seeds for a claim
about steering (`scripts/bench_steering_quality.py` trains them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "steer-bench"
HELP = "benchmark SAE clamping against CAA and prompting (per concept, across SAEs, with intervals)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sae", action="append", required=True, metavar="DIR",
                   help="an SAE folder (repeatable: one per training seed)")
    p.add_argument("--concepts", default=None,
                   help="comma-separated concept names (default: all in steering.concepts; 'none': sycophancy only)")
    p.add_argument("--out", default="runs/steer_bench", help="output folder (config.json, results.json, results.md)")
    p.add_argument("--fast", action="store_true", help="a smoke run: 2 concepts, few prompts, short replies")
    p.add_argument("--selection", type=int, default=None, dest="n_selection", help="selection prompts per concept")
    p.add_argument("--evaluation", type=int, default=None, dest="n_evaluation", help="held-out prompts per concept")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--strengths", default=None, help="clamp strengths, x max activation, e.g. 1,2,4")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--unrelated", type=int, default=None, dest="n_unrelated",
                   help="unrelated questions per reply for the relevance score (default 4; each costs a forward)")
    p.add_argument("--no-sycophancy", action="store_true", help="skip the sycophancy measurements")
    p.add_argument("--model", default=None, help="model name (default: the one the SAE was trained on)")
    p.add_argument("--device", default=None, help="cpu | cuda | mps")
    p.add_argument("--seed", type=int, default=None)


def _config(args: argparse.Namespace):
    from steering import BenchmarkConfig

    over = {k: getattr(args, k) for k in ("n_selection", "n_evaluation", "max_new_tokens", "batch_size", "seed", "n_unrelated")
            if getattr(args, k) is not None}
    if args.concepts:
        names = [c.strip() for c in args.concepts.split(",") if c.strip()]
        over["concepts"] = [] if names == ["none"] else names
    if args.strengths:
        over["strengths"] = [float(s) for s in args.strengths.split(",") if s.strip()]
    if args.no_sycophancy:
        over["sycophancy"] = False
    over["out_dir"] = args.out
    return BenchmarkConfig.fast(**over) if args.fast else BenchmarkConfig(**over)


def _labels(dirs: list[Path]) -> list[str]:
    """Short unique labels: the folder name, or its parent's when the names clash (runs/s0/sae)."""
    names = [d.name for d in dirs]
    if len(set(names)) == len(names):
        return names
    return [f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name for d in dirs]


def run(args: argparse.Namespace) -> int:
    import sae
    from steering import run_benchmark

    cfg = _config(args)  # bad settings are reported before a model loads
    if cfg.concepts:
        from steering.concepts import get_concept

        for name in cfg.concepts:
            get_concept(name)
    dirs = [Path(d) for d in args.sae]
    missing = [str(d) for d in dirs if not d.exists()]
    if missing:
        raise FileNotFoundError(f"no SAE at {', '.join(missing)}: pass folders a `saekit train` run wrote")
    saes = [sae.load_sae(d) for d in dirs]
    name = saes[0].cfg.model_name
    model = sae.load_model(args.model or (name if name and name != "unknown" else "smollm2-135m-instruct"),
                           device=args.device)
    saes = [s.to(str(sae.model_device(model))) for s in saes]
    run_benchmark(model, list(zip(_labels(dirs), saes, strict=True)), cfg)
    print((Path(cfg.out_dir) / "results.md").read_text())
    print(f"results: {cfg.out_dir}/results.json")
    return 0
