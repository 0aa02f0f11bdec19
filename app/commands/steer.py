"""`saekit steer SAE --feature 123 --strength 10 --unit max --prompt "..."`: steered vs unsteered text.

    saekit steer runs/sae/topk --feature 123 --strength 8 --unit max --prompt "Tell me about yourself."
    saekit steer runs/sae/topk --feature 12=4 --feature 99=-2 --method add --prompt "Hi" --prompt "Plan a trip"
    saekit steer runs/sae/topk --feature 7 --method ablate --positions generated --temperature 0.7 --seed 3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sae import SparseAutoencoder

NAME = "steer"
HELP = "generate with SAE features clamped / scaled / added / ablated, beside the unsteered text"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sae", help="trained SAE directory (saekit or SAELens layout)")
    p.add_argument("--feature", action="append", required=True, metavar="F[=S]",
                   help="feature index, optionally with its own strength (repeatable)")
    p.add_argument("--strength", type=float, default=10.0, help="value for clamp/add, factor for scale (default 10)")
    p.add_argument("--method", default="clamp", choices=["clamp", "scale", "add", "ablate"])
    p.add_argument("--unit", default="max", choices=["abs", "max"],
                   help="strength in raw activation units or x the feature's max activation (default max)")
    p.add_argument("--prompt", action="append", default=[], help="prompt (repeatable)")
    p.add_argument("--prompts-file", default=None, help="a text file with one prompt per line")
    p.add_argument("--positions", default="all", help="all | prompt | generated | after_last_user")
    p.add_argument("--db", default=None, help="feature database for unit=max (default: SAE/features.sqlite if present)")
    p.add_argument("--hook", default=None, help="hook to steer at (default: the SAE's own)")
    p.add_argument("--model", default=None, help="model (default: the one the SAE was trained on)")
    p.add_argument("--device", default=None, help="cpu | cuda | mps")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-chat", action="store_true", help="raw text prompts (no chat template)")
    p.add_argument("--no-compare", action="store_true", help="skip the unsteered generation")
    p.add_argument("--json", action="store_true", help="print one JSON record per prompt")


def _features(specs: list[str], default: float) -> dict[int, float]:
    out: dict[int, float] = {}
    for spec in specs:
        f, _, s = spec.partition("=")
        try:
            out[int(f)] = float(s) if s else default
        except ValueError:
            raise ValueError(f"--feature {spec!r} must look like 123 or 123=4.5") from None
    return out


def run(args: argparse.Namespace) -> int:
    import sae
    import steering
    from steering.interventions import FeatureSteering, check_positions, make_edit

    prompts = list(args.prompt)
    if args.prompts_file:
        prompts += [ln.strip() for ln in Path(args.prompts_file).read_text().splitlines() if ln.strip()]
    if not prompts:
        raise ValueError("no prompt: pass --prompt TEXT (repeatable) or --prompts-file FILE")
    # Check everything that needs no model before loading one.
    check_positions(args.positions)
    edits = {f: make_edit(args.method, s, args.unit) for f, s in _features(args.feature, args.strength).items()}
    sae_dir = Path(args.sae)
    if not sae_dir.exists():
        raise FileNotFoundError(f"no SAE at {sae_dir}: pass the directory a `saekit train` run wrote")
    db = args.db
    if db is None and (sae_dir / "features.sqlite").exists():
        db = str(sae_dir / "features.sqlite")
    s = sae.load_sae(sae_dir)  # a damaged cfg.json is reported (with its fix) before a model loads
    model = sae.load_model(args.model or _sae_model_name(s), device=args.device)
    s = s.to(str(sae.model_device(model)))
    iv = FeatureSteering(s, edits, positions=args.positions, hook=args.hook, feature_db=db)
    gens = steering.generate(
        model, prompts, iv, compare=not args.no_compare, seed=args.seed, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, chat=not args.no_chat,
        batch_size=args.batch_size,
    )
    if args.json:
        for g in gens:
            print(json.dumps({"prompt": g.prompt, "seed": g.seed, "steered": g.steered, "unsteered": g.unsteered}))
    else:
        print(f"steering {iv.describe()} (positions={args.positions})")
        print(gens)
    return 0


def _sae_model_name(s: SparseAutoencoder) -> str:
    """The model the SAE was trained on, when its cfg.json names one; else the embedded default."""
    name = s.cfg.model_name
    return name if name and name != "unknown" else "smollm2-135m-instruct"
