"""The drift guard's smoke set: every load-bearing path once, on the real embedded model, in ~2 min.

    python scripts/smoke.py [--out DIR]

Load the model; generate with the KV cache on and off (same tokens, fluent text); cache 2k
tokens at a shallow hook; train a TopK SAE for 50 steps on them; clamp one of its features and
check the text changes and stays fluent; build a feature database and render every explorer
page with Streamlit's AppTest. Prints one table row per step and exits 1 at the first failure,
naming the installed versions. `scripts/check_latest.sh` runs it in a venv of the newest
releases; it runs as well in the locked venv (a quick check after an install).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sae  # noqa: E402
import steering  # noqa: E402
from steering.fluency import judge, measure  # noqa: E402

HOOK = "blocks.3.hook_resid_post"  # shallow: the forward stops after layer 3
PROMPTS = ["Tell me about the Golden Gate Bridge.", "Explain how a bicycle works."]
N_NEW = 16
PAGES = ["views/features.py", "views/feature.py", "views/live.py", "views/playground.py", "views/evaluation.py"]


class SmokeFailure(RuntimeError):
    pass


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise SmokeFailure(what)


def _fluent(gens: list[Any], attr: str) -> str:
    samples = [measure(getattr(g, attr), getattr(g, attr + "_ids")) for g in gens]
    verdict = judge(samples)
    texts = [getattr(g, attr)[:60] for g in gens]
    _check(verdict.passed, f"{attr} text not fluent ({'; '.join(verdict.reasons)}): {texts}")
    return f"{len(gens)} fluent"


def step_generate(state: dict[str, Any]) -> str:
    model = state["model"]
    on = steering.generate(model, PROMPTS, None, compare=False, max_new_tokens=N_NEW, use_cache=True)
    off = steering.generate(model, PROMPTS, None, compare=False, max_new_tokens=N_NEW, use_cache=False)
    for a, b in zip(on, off, strict=True):
        _check(a.steered_ids == b.steered_ids, f"KV cache on != off: {a.steered!r} vs {b.steered!r}")
    return "cache on == off, " + _fluent(on, "steered")


def step_cache(state: dict[str, Any]) -> str:
    cfg = sae.CacheConfig(out_dir=str(state["out"] / "acts"), hooks=[HOOK], n_tokens=2048,
                          data=sae.DataConfig(context_size=64), batch_size=8, shard_tokens=1024)
    state["acts"] = sae.build_cache(cfg, model=state["model"], progress=False)
    manifest = sae.read_manifest(state["acts"])
    _check(manifest.get("complete") is True, f"cache incomplete: {manifest}")
    return f"{manifest.get('n_tokens', '?')} tokens, {len(manifest.get('shards', []))} shards"


def step_train(state: dict[str, Any]) -> str:
    scfg = sae.SAEConfig(architecture="topk", d_sae=1024, k=16, hook_name=HOOK, context_size=64)
    cfg = sae.TrainConfig(out_dir=str(state["out"] / "sae"), cache_dir=str(state["acts"]), saes=[scfg],
                          n_tokens=50 * 256, store=sae.StoreConfig(batch_size=256, buffer_tokens=2048),
                          lr_warmup_steps=5, sparsity_warmup_steps=0, progress=False,
                          checkpoint_every_tokens=10**9)
    [state["sae_dir"]] = sae.train(cfg, model=state["model"])
    state["sae"] = sae.load_sae(state["sae_dir"])
    return f"50 steps -> {state['sae_dir'].name}"


def step_clamp(state: dict[str, Any]) -> str:
    """A 50-step SAE's features are crude: take the lowest strength that changes the text."""
    model, my_sae = state["model"], state["sae"]
    codes = sae.text_activations(model, my_sae, PROMPTS[0]).codes
    feature = int(codes.max(0).values.argmax())
    top = float(codes[:, feature].max())
    for times in (1.0, 2.0):
        edit = (my_sae, {feature: steering.Clamp(times * top)})
        gens = steering.generate(model, PROMPTS, edit, max_new_tokens=N_NEW)
        if any(g.steered_ids != g.unsteered_ids for g in gens):
            return f"feature {feature} at {times:g}x {top:.2f}: text changed, " + _fluent(gens, "steered")
    raise SmokeFailure(f"clamping feature {feature} up to 2x its max ({top:.2f}) changed no text")


def step_explorer(state: dict[str, Any]) -> str:
    from streamlit.testing.v1 import AppTest

    from app.explorer import resources

    db = state["out"] / "features.sqlite"
    sae.build_feature_db(sae.FeaturesConfig(sae_path=str(state["sae_dir"]), out_path=str(db), n_tokens=2048,
                                            data=sae.DataConfig(context_size=64)),
                         state["model"], state["sae"], progress=False)
    resources.preload(model=state["model"])
    os.environ["SAEKIT_DB"] = str(db)
    for page in PAGES:
        at = AppTest.from_file(str(ROOT / "app" / "explorer" / "main.py"), default_timeout=120)
        at.switch_page(page)
        at.query_params["feature"] = "1"
        at.run()
        errors = [e.value for e in at.exception] + [e.value for e in at.error]
        _check(not errors, f"explorer page {page}: {errors}")
    return f"{len(PAGES)} pages render"


STEPS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("generate", step_generate), ("cache", step_cache), ("train", step_train),
    ("clamp", step_clamp), ("explorer", step_explorer),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="saekit-smoke-"))
    state: dict[str, Any] = {"out": out}
    print(f"saekit smoke set: {sae.versions_line()}")
    t0 = time.perf_counter()
    state["model"] = sae.load_model()
    print(f"| {'step':<9} | {'seconds':>7} | result")
    print(f"| {'load':<9} | {time.perf_counter() - t0:7.1f} | {sae.__name__} model loaded")
    for name, fn in STEPS:
        t = time.perf_counter()
        try:
            result = fn(state)
        except Exception as e:  # noqa: BLE001  (any failure is the finding: report it with versions)
            print(f"| {name:<9} | {time.perf_counter() - t:7.1f} | FAILED: {type(e).__name__}: {e}")
            print(f"smoke set FAILED at '{name}' with {sae.versions_line()}", file=sys.stderr)
            return 1
        print(f"| {name:<9} | {time.perf_counter() - t:7.1f} | {result}")
    print(f"smoke set passed in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
