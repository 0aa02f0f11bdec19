"""`run_autointerp`: explain and score many features of a feature database, resumably.

For each chosen feature: split its stored windows (`samples.py`), have the explainer write an
explanation from the strongest ones, have the judge score it on held-out ones (`explanation.py`),
and commit the result into the database (`results_table.py`). A re-run with the same explainer, judge
and settings skips the features already done; a tqdm bar shows progress.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sae.autointerp.clients import AutointerpError, Client
from sae.autointerp.explanation import explain, score_explanation
from sae.autointerp.results_table import done_features, open_for_write, save_result
from sae.autointerp.samples import Check, FeatureSamples, negative_windows, split_examples
from sae.features.db import FeatureDB

log = logging.getLogger(__name__)

WEAK_NOTE = ("the explainer is the embedded 135M model: its explanations are weak (a smoke test of the "
             "pipeline, not an interpretation); use a local HF directory or `openai` for real ones")


@dataclass
class AutointerpConfig:
    n_explain_top: int = 10  # strongest windows the explainer reads
    n_explain_interval: int = 5  # plus one sample from each of this many strongest intervals
    n_score: int = 10  # held-out activating windows judged (and as many non-activating)
    max_explanation_tokens: int = 32
    calibrate: bool = True  # judges with probabilities: cut at the batch median (see score.judge)
    seed: int = 0

    def run_key(self, explainer: str, judge: str, checked: bool) -> str:
        """One id for (explainer, judge, settings): what `resume` matches on."""
        blob = json.dumps({"explainer": explainer, "judge": judge, "checked": checked, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class FeatureResult:
    feature: int
    explanation: str
    detection: float
    fuzzing: float
    detection_auc: float | None
    fuzzing_auc: float | None
    n_detection: int
    n_fuzzing: int
    n_unparsable: int
    seconds: float


@dataclass
class AutointerpRun:
    results: list[FeatureResult] = field(default_factory=list)  # features done by this call
    skipped: list[int] = field(default_factory=list)  # already done by an earlier call with the same key
    run_key: str = ""
    notes: list[str] = field(default_factory=list)


def pick_features(db: FeatureDB, features: list[int] | None, n_features: int | None, seed: int = 0,
                  min_examples: int = 12) -> list[int]:
    """Your list (checked: each must exist and have fired), or n live features drawn at random (seeded)."""
    dead = db.summaries()["dead"]
    if features is not None:
        bad = [i for i in features if not 0 <= i < db.n_features]
        if bad:
            raise AutointerpError(f"features {bad} do not exist: this database has features 0..{db.n_features - 1}")
        never = [i for i in features if dead[i]]
        if never:
            raise AutointerpError(f"features {never} never fired in the analysed tokens (dead): nothing to explain; "
                                  "leave them out, or use --n-features to draw live ones")
        return list(features)
    if n_features is None or n_features < 1:
        raise AutointerpError(f"pass a list of features or a positive number of features, got {n_features!r}")
    fired = db.summaries()["n_fired"]
    # enough firings that both the explainer and the judge get windows of their own
    live = [i for i in range(db.n_features) if not dead[i] and fired[i] >= min_examples]
    rng = random.Random(seed)
    return sorted(rng.sample(live, min(n_features, len(live))))


def feature_samples(db: FeatureDB, i: int, cfg: AutointerpConfig, live: list[int], check: Check | None) -> FeatureSamples:
    f = db.feature(i)
    rng = random.Random(cfg.seed * 1_000_003 + i)  # per feature: a resumed run draws the same windows
    explain_w, pos = split_examples(f, cfg.n_explain_top, cfg.n_explain_interval, cfg.n_score, rng)
    neg = negative_windows(db, f, len(pos), live, rng, check)
    return FeatureSamples(explain_w, pos, neg)


def autointerp_feature(db: FeatureDB, i: int, explainer: Client, judge: Client, cfg: AutointerpConfig,
                       live: list[int], check: Check | None = None) -> FeatureResult:
    """Explain feature i and score the explanation (nothing is written)."""
    t0 = time.perf_counter()
    s = feature_samples(db, i, cfg, live, check)
    text = explain(explainer, s.explain, cfg.max_explanation_tokens)
    sc = score_explanation(judge, text, s, seed=cfg.seed + i, calibrate=cfg.calibrate)
    d, z = sc.detection, sc.fuzzing
    return FeatureResult(i, text, d.accuracy, z.accuracy, d.auc, z.auc, d.n, z.n, d.n_unparsable + z.n_unparsable,
                         time.perf_counter() - t0)


def run_autointerp(db_path: str | Path, explainer: Client, judge: Client | None = None, *,
                   features: list[int] | None = None, n_features: int | None = None,
                   cfg: AutointerpConfig | None = None, check: Check | None = None,
                   progress: bool = True) -> AutointerpRun:
    """Explain and score features of the database at `db_path`; results are committed one by one.

    `judge` defaults to the explainer. `check` (see `samples.inactive_check`) verifies that the
    non-activating windows really are. Features already done with the same explainer, judge
    and settings are skipped (listed in `.skipped`).
    """
    cfg = cfg or AutointerpConfig()
    judge = judge or explainer
    run = AutointerpRun(run_key=cfg.run_key(explainer.id, judge.id, check is not None))
    if explainer.weak:
        run.notes.append(WEAK_NOTE)
        log.warning(WEAK_NOTE)
    if check is None:
        run.notes.append("non-activating windows were not checked with the subject model (see samples.py)")
    con = open_for_write(db_path)
    db = FeatureDB(db_path)
    try:
        chosen = pick_features(db, features, n_features, cfg.seed)
        done = done_features(con, run.run_key)
        run.skipped = [i for i in chosen if i in done]
        todo = [i for i in chosen if i not in done]
        s = db.summaries()
        live = [int(j) for j in s["id"][~s["dead"]]]
        config = {**asdict(cfg), "negatives_checked": check is not None, "explainer_weak": explainer.weak}
        for i in _bar(todo, progress, len(run.skipped)):
            r = autointerp_feature(db, i, explainer, judge, cfg, live, check)
            save_result(con, {**asdict(r), "run_key": run.run_key, "explainer": explainer.id, "judge": judge.id,
                              "config": config})
            run.results.append(r)
    finally:
        db.close()
        con.close()
    return run


def _bar(items: list[int], enabled: bool, skipped: int):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=f"autointerp ({skipped} done before)" if skipped else "autointerp", unit="feature")
