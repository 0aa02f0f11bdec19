"""Benchmark the feature database: pass overhead vs the model's forward, page render time, bytes per feature.

    python scripts/bench_features.py                       # 4,608 latents at layer 15, 16k tokens
    python scripts/bench_features.py --tokens 65536 --device cuda

1. Pass overhead: `build_feature_db` times, batch by batch, the model's forward (up to the SAE's
   hook: the cost a database pass cannot avoid), the SAE's encoder and the statistics. What the
   pass adds per token = (encode + statistics) / forward. Timing them interleaved inside one run
   keeps the ratio honest on a shared machine, where two separate runs see different loads; CPU
   seconds of the whole process are printed too. The fixed end cost (logit lens, neighbours,
   co-occurrence ranking) is reported apart, and as a share of the forward at this N.
2. Feature page: Streamlit AppTest renders the feature page (all its queries, HTML and plotly
   figures) for several features of the 4,608-latent database (server-side time, after the
   first run); plus the raw `FeatureDB.feature` query time.
3. Size: file bytes per latent, and per table (SQLite's dbstat when available).

The SAE is a random TopK SAE (k=32): the pass's cost depends on d_sae, k and the number of
tokens, not on what the features mean. Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rows(model, n_rows: int, context: int):
    import sae
    from sae.config import DataConfig
    from sae.features.demo_db import demo_rows

    try:
        it = sae.token_rows(DataConfig(context_size=context), model.tokenizer)
        rows = [next(it) for _ in range(n_rows)]
        return rows, "builtin corpus"
    except Exception as e:  # the corpus may not be built on a fresh checkout
        print(f"(builtin corpus unavailable: {e}; using the demo text)")
        return demo_rows(model.tokenizer, n_rows, context), "demo text"


def bench_pass(args, model, out_dir: Path) -> tuple[Path, dict]:
    import torch

    import sae
    from sae.config import DataConfig, FeaturesConfig
    from sae.features.demo_db import random_sae
    from sae.features.source import extractor_for

    n_rows = -(-args.tokens // args.context)
    rows, source = _rows(model, n_rows, args.context)
    s = random_sae(d_sae=args.d_sae, layer=args.layer, k=args.k, seed=0, dead=0)
    hook = s.cfg.hook_name
    ex = extractor_for(model, hook)
    first = ex(torch.stack(rows[: args.batch_size])).acts[hook]  # warm-up (and the fast path's self-check)
    with torch.no_grad():  # centre the random encoder on the data, or a few latents win every token
        s.b_dec.copy_(first.float().mean(0))
    sae_dir = sae.save_sae(s, out_dir / "sae")
    s = sae.load_sae(sae_dir, device=args.device)

    cfg = FeaturesConfig(sae_path=str(sae_dir), out_path=str(out_dir / "features.sqlite"), n_tokens=args.tokens,
                         batch_size=args.batch_size, data=DataConfig(context_size=args.context), overwrite=True,
                         device=args.device)
    t0, c0 = time.perf_counter(), time.process_time()
    db_path = sae.build_feature_db(cfg, model=model, sae=s, rows=rows, progress=False)
    total_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    t = sae.FeatureDB(db_path).meta["timings"]
    return db_path, {**t, "source": source, "total_s": total_s, "cpu_s": cpu_s}


def bench_page(db_path: Path, n: int = 8) -> dict:
    from streamlit.testing.v1 import AppTest

    import sae

    os.environ["SAEKIT_DB"] = str(db_path)
    db = sae.FeatureDB(db_path)
    live = [int(i) for i in (~db.summaries()["dead"]).nonzero()[0]]
    picks = [live[int(k * (len(live) - 1) / max(n - 1, 1))] for k in range(n)]
    main = str(ROOT / "app" / "explorer" / "main.py")

    # One AppTest for all renders: its first run scans every installed package for Streamlit
    # components (seconds, a test-harness cost a server pays once at start), later runs are
    # just the page script: the time a user waits for the server.
    at = AppTest.from_file(main, default_timeout=120)
    at.switch_page("views/feature.py")

    def render(i: int) -> float:
        at.query_params["feature"] = str(i)
        t0 = time.perf_counter()
        at.run()
        dt = time.perf_counter() - t0
        if at.exception or at.error:
            raise RuntimeError(f"feature page {i} failed: {[e.value for e in at.exception or at.error]}")
        if at.title[0].value != f"Feature {i}":
            raise RuntimeError(f"rendered {at.title[0].value!r} instead of feature {i}")
        return dt

    render(picks[0])  # the first run also imports plotly/pandas and opens the database
    page = [render(i) for i in picks]
    query = []
    for i in picks:
        t0 = time.perf_counter()
        db.feature(i)
        query.append(time.perf_counter() - t0)
    return {"page_median_s": statistics.median(page), "page_max_s": max(page),
            "query_median_s": statistics.median(query)}


def bench_size(db_path: Path) -> dict:
    import sae

    db = sae.FeatureDB(db_path)
    size = db_path.stat().st_size
    out = {"bytes": size, "per_feature": size / db.n_features, "tables": {}}
    con = sqlite3.connect(db_path)
    try:
        for name, b in con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"):
            out["tables"][name] = b
    except sqlite3.OperationalError:
        pass  # this SQLite was built without dbstat
    con.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="keep the database here (default: a temp folder)")
    args = p.parse_args()

    import torch

    import sae

    torch.set_num_threads(args.threads)
    model = sae.load_model(device=args.device)
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="bench_features_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    db_path, t = bench_pass(args, model, out_dir)
    page = bench_page(db_path)
    size = bench_size(db_path)

    added = (t["encode_s"] + t["stats_s"]) / t["forward_s"]
    n_dead = int(sae.FeatureDB(db_path).summaries()["dead"].sum())
    print(f"\nfeature database: d_sae={args.d_sae} k={args.k} hook=blocks.{args.layer}.hook_resid_post "
          f"tokens={args.tokens} batch={args.batch_size}x{args.context} device={args.device} ({t['source']}); "
          f"{n_dead} latents dead (a random SAE)\n")
    print(f"{'quantity':<48}{'value':>12}")
    print("-" * 60)
    rows = [
        ("pass: model forward s", f"{t['forward_s']:.2f}"),
        ("pass: SAE encode s", f"{t['encode_s']:.2f}"),
        ("pass: statistics (top-k, intervals, cooc) s", f"{t['stats_s']:.2f}"),
        ("added per token: (encode + stats) / forward", f"{100 * added:.1f} %"),
        ("finalize s (fixed, not per token)", f"{t['finalize_s']:.2f}"),
        ("  of which logit lens s", f"{t.get('logit_lens_s', float('nan')):.2f}"),
        ("added at this N incl. finalize", f"{100 * (added + t['finalize_s'] / t['forward_s']):.1f} %"),
        ("build_feature_db wall s / CPU s", f"{t['total_s']:.0f} / {t['cpu_s']:.0f}"),
        ("feature page render (AppTest) median s", f"{page['page_median_s']:.3f}"),
        ("feature page render max s", f"{page['page_max_s']:.3f}"),
        ("FeatureDB.feature() median s", f"{page['query_median_s']:.4f}"),
        ("database size MB", f"{size['bytes'] / 1e6:.1f}"),
        ("bytes per feature", f"{size['per_feature']:,.0f}"),
    ]
    for name, val in rows:
        print(f"{name:<48}{val:>12}")
    if size["tables"]:
        print("\nbytes per table (dbstat):")
        for name, b in size["tables"].items():
            print(f"  {name:<30}{b:>12,}  ({b / args.d_sae:,.0f} per feature)")
    print(f"\ndatabase: {db_path}")


if __name__ == "__main__":
    main()
