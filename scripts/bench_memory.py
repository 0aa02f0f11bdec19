"""Memory at scale: training from a cache far larger than the store's buffer, and the feature-DB pass.

    python scripts/bench_memory.py                                  # runs/steer_seeds/acts (400k tokens)
    python scripts/bench_memory.py --cache DIR --train-tokens 800000 --db-tokens 100000 400000

Each case runs in its own process, so its peak memory is its own (VmHWM and the peak of
anonymous memory sampled every 50 ms; file-backed pages of memory-mapped shards are counted
apart, since the kernel drops them under pressure and they are not the program's to hold).

1. Training (TopK, 4,608 latents, k 32) over the whole cache with the mixing buffer holding the
   whole cache vs 1/10 of it (the cache is then 10x the buffer, the out-of-core case): peak
   memory and tokens/s. The store's design target: memory ~ two buffers, throughput within 10%.
2. The feature-database pass over a growing number of cached tokens: peak memory should not grow
   with the tokens analysed (top examples are bounded heaps, histograms fixed bins).
3. `--replicate N --big-cache DIR`: a cache larger than this machine's RAM, made of N byte copies
   of the cache's shards (fresh files, so the page cache cannot share them), trained over once
   with the default mixing buffer, beside the same SAE on the original cache (which stays in the
   page cache): peak memory and tokens/s. The copies repeat the same activations, so this
   measures memory and I/O, not quality. `--d-sae` picks a smaller SAE to make the reader, not
   the SAE, the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _peak_memory import PeakSampler, status_kb

ROOT = Path(__file__).resolve().parents[1]
D_SAE, K = 4608, 32


def _case_train(args: argparse.Namespace) -> dict:
    import sae
    from sae.config import SAEConfig, StoreConfig, TrainConfig

    with tempfile.TemporaryDirectory() as out, PeakSampler() as peak:
        base_anon = status_kb("RssAnon")
        cfg = TrainConfig(out_dir=out, cache_dir=args.cache, n_tokens=args.train_tokens,
                          saes=[SAEConfig(architecture="topk", d_sae=args.d_sae, k=K)],
                          store=StoreConfig(buffer_tokens=args.buffer, verify=False), log_every_steps=100)
        t0 = time.perf_counter()
        sae.train(cfg)
        wall = time.perf_counter() - t0
    return {"buffer_tokens": args.buffer, "tokens": args.train_tokens, "seconds": wall,
            "tokens_per_s": args.train_tokens / wall, "start_anon_mb": base_anon / 1024,
            "peak_anon_mb": peak.anon_kb / 1024, "peak_file_mb": peak.file_kb / 1024,
            "vm_hwm_mb": status_kb("VmHWM") / 1024}


def _case_db(args: argparse.Namespace) -> dict:
    import sae
    from sae.config import FeaturesConfig

    model = sae.load_model(device="cpu")
    my_sae = sae.load_sae(args.sae, device="cpu")
    with tempfile.TemporaryDirectory() as out, PeakSampler() as peak:
        base_anon = status_kb("RssAnon")
        t0 = time.perf_counter()
        sae.build_feature_db(FeaturesConfig(sae_path=args.sae, out_path=f"{out}/f.sqlite", cache_dir=args.cache,
                                            n_tokens=args.db_tokens[0]), model, my_sae)
        wall = time.perf_counter() - t0
    return {"tokens": args.db_tokens[0], "seconds": wall, "start_anon_mb": base_anon / 1024,
            "peak_anon_mb": peak.anon_kb / 1024, "peak_file_mb": peak.file_kb / 1024}


def replicate_cache(src: Path, dst: Path, copies: int) -> Path:
    """A cache at `dst` whose shards are `copies` byte copies of `src`'s, in order (reused if complete)."""
    from sae import atomic_write_json
    from sae.shards import MANIFEST, read_manifest

    doc = read_manifest(src)
    n_shards = len(doc["shards"]) * copies
    if (dst / MANIFEST).exists() and len(read_manifest(dst)["shards"]) == n_shards:
        return dst
    need = sum(int(e["bytes"]) for e in doc["shards"]) * copies
    free = shutil.disk_usage(dst.parent if dst.parent.exists() else Path.cwd()).free
    if need > free - (2 << 30):
        raise SystemExit(f"{copies} copies need {need / 2**30:.1f} GiB but {free / 2**30:.1f} GiB are free "
                         "(2 GiB kept spare); use fewer --replicate copies or another --big-cache disk")
    dst.mkdir(parents=True, exist_ok=True)
    shards: list[dict] = []
    for copy in range(copies):
        for entry in doc["shards"]:
            name = f"shard-{len(shards):05d}.safetensors"
            shutil.copyfile(src / entry["file"], dst / name)
            shards.append({**entry, "file": name, "index": len(shards),
                           "row_start": copy * int(doc["n_rows"]) + int(entry["row_start"])})
            atomic_write_json(dst / name.replace(".safetensors", ".json"), shards[-1])
        print(f"  copy {copy + 1}/{copies} written", flush=True)
    stats = {h: {k: v * copies for k, v in st.items()} for h, st in doc.get("hook_stats", {}).items()}
    atomic_write_json(dst / MANIFEST, {**doc, "n_rows": int(doc["n_rows"]) * copies, "shards": shards,
                                       "n_tokens": int(doc["n_tokens"]) * copies, "hook_stats": stats})
    return dst


def _out_of_core(args: argparse.Namespace, common: list[str]) -> None:
    import sae

    big = replicate_cache(Path(args.cache), Path(args.big_cache), args.replicate)
    big_manifest = sae.CacheManifest.read(big)
    n_big = big_manifest.n_kept(big_manifest.hooks[0])
    size = sum(f.stat().st_size for f in big.glob("shard-*.safetensors"))
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"\nbig cache {big}: {n_big:,} tokens, {size / 2**30:.1f} GiB on disk, RAM {ram / 2**30:.1f} GiB; "
          f"TopK d_sae {args.d_sae}, default mixing buffer\n")
    print("| cache | GiB | tokens trained | tokens/s | peak anon MB (start) | peak file-backed MB |\n|---|---|---|---|---|---|")
    rows = []
    for cache, tokens in ((args.cache, args.compare_tokens), (str(big), n_big)):
        argv = [*common, "--cache", cache, "--train-tokens", str(tokens), "--d-sae", str(args.d_sae)]
        r = _run_case([*argv, "--case", "train", "--buffer", str(sae.StoreConfig().buffer_tokens)])
        rows.append(r)
        gib = sum(f.stat().st_size for f in Path(cache).glob("shard-*.safetensors")) / 2**30
        print(f"| {cache} | {gib:.1f} | {tokens:,} | {r['tokens_per_s']:,.0f} | {r['peak_anon_mb']:,.0f} "
              f"({r['start_anon_mb']:,.0f}) | {r['peak_file_mb']:,.0f} |", flush=True)
    print(f"\nthroughput larger-than-RAM / in page cache: {rows[1]['tokens_per_s'] / rows[0]['tokens_per_s']:.2f}")


def _run_case(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"case {argv} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(ROOT / "runs/steer_seeds/acts"))
    ap.add_argument("--sae", default=str(ROOT / "runs/steer_seeds/seed0"), help="SAE for the feature-DB pass")
    ap.add_argument("--train-tokens", type=int, default=None, help="default: the cache's token count (one epoch)")
    ap.add_argument("--db-tokens", type=int, nargs="+", default=[100_000, 400_000])
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-db", action="store_true")
    ap.add_argument("--replicate", type=int, default=0, help="copies of --cache in the larger-than-RAM cache (0: skip)")
    ap.add_argument("--big-cache", default=str(ROOT / "runs/big_cache"), help="where the copies go (delete it after)")
    ap.add_argument("--compare-tokens", type=int, default=2_000_000, help="tokens trained on the original cache")
    ap.add_argument("--d-sae", type=int, default=D_SAE)
    ap.add_argument("--case", choices=("train", "db"), help=argparse.SUPPRESS)
    ap.add_argument("--buffer", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:  # a child process: one measurement, printed as JSON
        print(json.dumps(_case_train(args) if args.case == "train" else _case_db(args)))
        return 0

    import sae

    manifest = sae.CacheManifest.read(args.cache)
    n_cache = manifest.n_kept(manifest.hooks[0])
    tokens = args.train_tokens or n_cache
    common = ["--cache", args.cache, "--sae", args.sae, "--train-tokens", str(tokens), "--d-sae", str(args.d_sae)]
    if args.replicate:
        _out_of_core(args, ["--sae", args.sae])
    if not args.skip_train:
        d_in = manifest.d_in_of(manifest.hooks[0])
        print(f"cache {args.cache}: {n_cache:,} tokens x d_in {d_in} fp32 = {n_cache * d_in * 4 / 2**20:,.0f} MB\n")
        print("| mixing buffer | buffer MB | cache / buffer | tokens/s | peak anon MB (start) | peak file-backed MB |")
        print("|---|---|---|---|---|---|")
        rows = []
        for buffer in (n_cache, n_cache // 10):
            r = _run_case([*common, "--case", "train", "--buffer", str(buffer)])
            rows.append(r)
            print(f"| {buffer:,} tokens | {buffer * d_in * 4 / 2**20:,.0f} | {n_cache / buffer:.0f}x | "
                  f"{r['tokens_per_s']:,.0f} | {r['peak_anon_mb']:,.0f} ({r['start_anon_mb']:,.0f}) | "
                  f"{r['peak_file_mb']:,.0f} |", flush=True)
        print(f"\nthroughput out of core / in memory: {rows[1]['tokens_per_s'] / rows[0]['tokens_per_s']:.2f}")
    if not args.skip_db:
        print("\n| feature-DB tokens | seconds | peak anon MB (start) | peak file-backed MB |\n|---|---|---|---|")
        for n in args.db_tokens:
            r = _run_case([*common, "--case", "db", "--db-tokens", str(n)])
            print(f"| {n:,} | {r['seconds']:.0f} | {r['peak_anon_mb']:,.0f} ({r['start_anon_mb']:,.0f}) | "
                  f"{r['peak_file_mb']:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
