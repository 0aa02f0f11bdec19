"""`saekit autointerp --db DB`: explanations of features by a language model, scored, stored in the DB.

    saekit autointerp --db runs/demo/features.sqlite --n-features 50          # the embedded model (weak)
    saekit autointerp --db feats.sqlite --features 12,99 --explainer ~/models/Qwen2.5-7B-Instruct
    OPENAI_BASE_URL=http://localhost:8000/v1 OPENAI_MODEL=NAME saekit autointerp --db feats.sqlite --explainer openai

A re-run with the same explainer, judge and settings skips the features already done.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "autointerp"
HELP = "explain features with a language model and score the explanations (detection, fuzzing) into the DB"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", required=True, help="feature database written by `saekit analyze` (.sqlite)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--features", default=None, help="comma-separated feature ids, e.g. 1,2,3")
    which.add_argument("--n-features", type=int, default=None, help="this many live features drawn at random (default 20)")
    p.add_argument("--explainer", default="embedded",
                   help="embedded (default; weak) | a local HF model directory | openai[:MODEL] "
                        "(OPENAI_BASE_URL, OPENAI_MODEL, OPENAI_API_KEY)")
    p.add_argument("--judge", default=None, help="same choices; default: the explainer")
    p.add_argument("--n-score", type=int, default=None, help="held-out activating contexts judged per feature (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-check", action="store_true",
                   help="do not run the subject model to check the non-activating contexts")
    p.add_argument("--device", default=None, help="cpu | cuda | mps for local models (default: the best available)")


def _feature_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ValueError(f"--features {text!r} is not a comma-separated list of feature ids; e.g. --features 1,2,3") from None


def run(args: argparse.Namespace) -> int:
    import sae

    if not Path(args.db).expanduser().exists():
        raise FileNotFoundError(f"no feature database at {args.db}: build it with `saekit analyze SAE_DIR --out {args.db}`")
    meta = sae.FeatureDB(args.db).meta
    features = _feature_list(args.features) if args.features else None
    n = args.n_features if features is None else None
    n = 20 if features is None and n is None else n
    needs_subject = not args.no_check or "embedded" in (args.explainer, args.judge)
    bridge = sae.load_model(meta.get("model_name") or "smollm2-135m-instruct", device=args.device) if needs_subject else None
    check, why = None, "--no-check"
    if not args.no_check:
        sae_path = meta.get("sae_path")
        if sae_path and Path(sae_path).exists():
            check = sae.inactive_check(bridge, sae.load_sae(sae_path, device=str(sae.model_device(bridge))))
        else:
            why = f"the SAE is not at {sae_path} any more"
    explainer = sae.make_client(args.explainer, device=args.device, bridge=bridge)
    judge = sae.make_client(args.judge, device=args.device, bridge=bridge) if args.judge else explainer
    cfg = sae.AutointerpConfig(seed=args.seed)
    if args.n_score is not None:
        cfg.n_score = args.n_score
    result = sae.run_autointerp(args.db, explainer, judge, features=features, n_features=n, cfg=cfg, check=check)
    for note in result.notes:
        print(f"note: {note}" + (f" ({why})" if "not checked" in note else ""))
    for r in result.results:
        auc = f", AUC {r.detection_auc:.2f}" if r.detection_auc is not None else ""
        print(f"#{r.feature}: detection {r.detection:.2f}{auc}, fuzzing {r.fuzzing:.2f}, {r.seconds:.1f}s"
              f"{f', {r.n_unparsable} unparsable' if r.n_unparsable else ''}: {r.explanation}")
    if result.results:
        det = sum(r.detection for r in result.results) / len(result.results)
        print(f"{len(result.results)} features explained (mean detection {det:.2f}; 0.5 = chance), "
              f"{len(result.skipped)} already done; see them with `saekit explore {args.db}`")
    else:
        print(f"nothing to do: all {len(result.skipped)} features were explained before with these settings")
    return 0
