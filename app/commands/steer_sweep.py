"""`saekit steer-sweep CONFIG`: features x strengths x prompts -> JSONL + metrics + charts.

    saekit steer-sweep sweep.yaml
    saekit steer-sweep sweep.yaml --set strengths=[1,2,4,8] --set out_dir=runs/sweep2

A re-run of the same config resumes (finished generations are kept and skipped).
"""

from __future__ import annotations

import argparse

NAME = "steer-sweep"
HELP = "run a steering sweep from a YAML/JSON config (resumable): generations, metrics, charts"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="SweepConfig YAML/JSON (see steering.experiments.SweepConfig)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set strengths=[2,4] --set caa.scales=[4] (repeatable)")
    p.add_argument("--out", default=None, help="output directory (overrides out_dir)")
    p.add_argument("--device", default=None, help="cpu | cuda | mps")


def run(args: argparse.Namespace) -> int:
    import sae
    from steering.experiments import SweepConfig, format_summary, run_sweep

    cfg = sae.load_config(SweepConfig, args.config, args.set)
    if args.out:
        cfg.out_dir = args.out
    if args.device:
        cfg.device = args.device
    summary = run_sweep(cfg)
    print(format_summary(summary))
    print(f"generations: {cfg.out_dir}/generations.jsonl")
    for path in summary.get("charts", []):
        print(f"chart: {path}")
    return 0
