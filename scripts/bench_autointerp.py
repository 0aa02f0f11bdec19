"""Autointerp benchmark: detection / fuzzing of an explainer's explanations on N features, with intervals.

    python scripts/bench_autointerp.py                       # the demo-recipe seed-0 SAE, 50 features
    python scripts/bench_autointerp.py --db runs/demo/features.sqlite --n-features 20 --explainer DIR

Builds the feature database first when it is missing (`saekit analyze SAE --cache ACTS`), runs
`sae.run_autointerp` into it (resumable: a stopped run continues, a finished one only reprints),
checks the non-activating windows with the subject model and SAE, and prints one row per
feature and the means with 95% bootstrap intervals over features, and seconds per feature.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import sae


def bootstrap(values: list[float], n: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5th, 97.5th percentile of the mean over resampled features)."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(n))
    return statistics.fmean(values), means[int(0.025 * n)], means[int(0.975 * n) - 1]


def ensure_db(args: argparse.Namespace) -> Path:
    db = Path(args.db)
    if not db.exists():
        cmd = [sys.executable, "-m", "app.cli", "analyze", args.sae, "--cache", args.cache, "--tokens",
               str(args.tokens), "--out", str(db)]
        print("building the feature database:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return db


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="runs/autointerp/features.sqlite")
    ap.add_argument("--sae", default="runs/steer_seeds/seed0", help="SAE the database is built from")
    ap.add_argument("--cache", default="runs/steer_seeds/acts", help="its activation cache (to build the DB)")
    ap.add_argument("--tokens", type=int, default=100_000, help="tokens analysed when building the DB")
    ap.add_argument("--n-features", type=int, default=50)
    ap.add_argument("--explainer", default="embedded", help="embedded | HF model dir | openai[:MODEL]")
    ap.add_argument("--judge", default=None, help="default: the explainer")
    ap.add_argument("--no-check", action="store_true", help="do not check negatives with the subject model")
    ap.add_argument("--report", action="store_true", help="only print what the database holds (no new runs)")
    args = ap.parse_args()

    db_path = ensure_db(args)
    meta = sae.FeatureDB(db_path).meta
    bridge = sae.load_model(meta.get("model_name") or "smollm2-135m-instruct", device="cpu")
    explainer = sae.make_client(args.explainer, bridge=bridge)
    judge = sae.make_client(args.judge, bridge=bridge) if args.judge else explainer
    check = None
    if not args.no_check:
        check = sae.inactive_check(bridge, sae.load_sae(meta["sae_path"], device="cpu"))
    t0, cpu0 = time.perf_counter(), time.process_time()
    if args.report:  # the same run, nothing left to do: every chosen feature already done is listed
        features = [e.feature for e in sae.FeatureDB(db_path).all_explanations()]
        run = sae.run_autointerp(db_path, explainer, judge, features=features, check=check) if features else None
        if run is None:
            print("nothing stored yet")
            return 1
    else:
        run = sae.run_autointerp(db_path, explainer, judge, n_features=args.n_features, check=check)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    db = sae.FeatureDB(db_path)
    rows = [e for i in sorted(set(run.skipped) | {r.feature for r in run.results})
            for e in db.explanations(i) if e.explainer == explainer.id and e.judge == judge.id
            and e.config.get("negatives_checked") == (check is not None)][: args.n_features]
    print(f"\n{db_path}: explainer {explainer.id}, judge {judge.id}; {len(rows)} features "
          f"({len(run.results)} run now in {wall:.0f} s, {len(run.skipped)} from before)")
    for note in run.notes:
        print("note:", note)
    print("\n| feature | detection | fuzzing | det. AUC | fuzz AUC | s | explanation |\n|---|---|---|---|---|---|---|")
    for e in rows:
        print(f"| {e.feature} | {e.detection:.2f} | {e.fuzzing:.2f} | {_f(e.detection_auc)} | {_f(e.fuzzing_auc)} | "
              f"{e.seconds:.1f} | {e.explanation[:70]} |")
    print("\n| metric | mean [95% bootstrap CI over features] |\n|---|---|")
    for name in ("detection", "fuzzing", "detection_auc", "fuzzing_auc"):
        vals = [getattr(e, name) for e in rows if getattr(e, name) is not None]
        if len(vals) > 1:
            m, lo, hi = bootstrap(vals)
            print(f"| {name} | {m:.3f} [{lo:.3f}, {hi:.3f}] |")
    unparsable = sum(e.n_unparsable for e in rows)
    print(f"| seconds per feature (wall, as stored) | {statistics.fmean(e.seconds for e in rows):.1f} |")
    if run.results:  # CPU seconds: comparable across machine load, unlike wall time on a shared machine
        print(f"| CPU seconds per feature (this call, {len(run.results)} features) | {cpu / len(run.results):.1f} |")
    print(f"| unparsable answers | {unparsable} of {sum(e.n_detection + e.n_fuzzing for e in rows)} |")
    return 0


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


if __name__ == "__main__":
    sys.exit(main())
