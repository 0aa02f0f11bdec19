"""Training benchmark: step throughput vs the machine's matmul rate, quality per architecture, SAELens.

    python scripts/bench_train.py                                  # everything, 2M tokens
    python scripts/bench_train.py --tokens 300000 --skip-saelens   # smaller quality run
    python scripts/bench_train.py --skip-quality --steps 8         # throughput table only

1. Throughput of one training step, TopK d_sae 4,608 (8 x 576), k 32, batch 4,096, on layer-15
   activations of the embedded model: fp32 / bf16 autocast x dense / sparse decoder (+ AuxK with
   10% dead latents). Each step is timed alternately with the encoder's forward matmul as the
   step runs it, and "% of bound" is the matmul's time over the step's (the encoder-forward
   bound, 2 d_in d_sae FLOP per token at the rate the matmul ran beside the step). A last row
   times the matmul plus the top-k selection alone: the most any exact TopK step can reach.
   bf16 rows are skipped on CPUs without bf16 matmul units (measured rate < 1/4 of fp32), with
   the reason printed.
2. SAELens on the same activations and machine: `scripts/saelens_baseline.py` in the separate
   venv (`--saelens-python`, default /work/venv-saelens/bin/python), if it exists; our TopK is
   trained the same way (in-memory shuffled batches, same tokens, same held-out tail) and both
   tokens/s and held-out FVU are printed side by side.
3. Quality after `--tokens` tokens of the builtin corpus (layer-15 cache under `--cache`, built
   when missing), every architecture at L0 ~ 32 trained together on one stream: FVU, CE-loss
   recovered and dead % from `sae.evaluate` on the cache's held-out tail.
4. Many SAEs at once (`--many 8`): eight TopK SAEs (k 8..128) trained together on one stream vs
   one after another, tokens/s per SAE and overall, and peak memory of each arm.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _step_timing import BATCH, D_IN, D_SAE, K, print_throughput, profile_step, throughput  # noqa: E402
from _timing import timed_in_turn  # noqa: E402

from sae.config import CacheConfig, DataConfig, EvalConfig, SAEConfig, StoreConfig, TrainConfig  # noqa: E402

HOOK = "blocks.15.hook_resid_post"
ARCHS = ("topk", "batchtopk", "jumprelu", "relu")


def _timed(fn, repeat: int) -> float:
    """Best of `repeat` runs after a warm-up: on a shared machine the minimum is the least noisy."""
    return min(timed_in_turn({"fn": fn}, repeat)["fn"])


def matmul_rate(dtype: torch.dtype, n: int = 2048, repeat: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / _timed(lambda: a @ b, repeat) / 1e9


# --------------------------------------------------------------------------- data


def ensure_cache(path: Path, n_tokens: int, model) -> Path:
    from sae.activation_cache import build_cache, read_manifest

    if (path / "manifest.json").exists() and read_manifest(path).get("complete"):
        return path
    print(f"building the layer-15 activation cache of the builtin corpus at {path} ({n_tokens:,} tokens max)")
    build_cache(CacheConfig(out_dir=str(path), hooks=[HOOK], n_tokens=n_tokens, data=DataConfig(source="builtin")),
                model=model, progress=True)
    return path


def cache_tokens(path: Path) -> int:
    from sae.activation_cache import read_manifest

    return int(read_manifest(path)["hook_stats"][HOOK]["n_kept"])


def raw_acts(cache: Path, n: int) -> torch.Tensor:
    """The cache's first n kept activations (raw, unshuffled)."""
    from sae.store import ActivationStore

    store = ActivationStore.from_cache(cache, HOOK, StoreConfig(batch_size=min(n, cache_tokens(cache)), normalize=False, shuffle=False))
    return next(iter(store)).float()


# --------------------------------------------------------------------------- 2. SAELens


def ours_like_saelens(acts: torch.Tensor, tokens: int, holdout: int, out: Path, lr: float | None = None) -> dict:
    """Our TopK trained the way the SAELens baseline is: in-memory shuffled batches, fit() timed."""
    from sae.checkpoint import load_sae
    from sae.training.trainer import Trainer

    shutil.rmtree(out, ignore_errors=True)  # the benchmark's own scratch run: start clean every time
    train_ND, eval_ND = acts[:-holdout], acts[-holdout:]
    scale = D_IN**0.5 / float(train_ND.norm(dim=1).mean())
    g = torch.Generator().manual_seed(0)

    def batches():
        while True:
            perm = torch.randperm(train_ND.shape[0], generator=g)
            for i in range(0, perm.numel() - BATCH + 1, BATCH):
                yield train_ND[perm[i : i + BATCH]] * scale

    steps = max(1, tokens // BATCH)
    cfg = TrainConfig(out_dir=str(out), saes=[SAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, hook_name=HOOK)], n_tokens=tokens, lr=lr,
                      lr_warmup_steps=max(1, steps // 10), progress=False, resume=False, checkpoint_every_tokens=10**12)
    trainer = Trainer(cfg, normalization_scale=scale)
    t = time.perf_counter()
    trainer.fit(batches())
    seconds = time.perf_counter() - t
    sae = load_sae(out)
    with torch.no_grad():
        fvu = float((sae(eval_ND).sae_out - eval_ND).pow(2).sum() / (eval_ND - eval_ND.mean(0)).pow(2).sum())
    return {"library": "saekit", "tokens_per_s": trainer.tokens_seen / seconds, "fvu": fvu, "n_tokens": trainer.tokens_seen}


def baseline(script: str, python: str, acts_file: Path, tokens: int, holdout: int, lr: float | None = None) -> dict | str:
    """Run `scripts/<script>` in its own venv on the same activations; its last JSON line."""
    if not Path(python).exists():
        return f"not run: {python} does not exist (create its venv, see scripts/{script})"
    cmd = [python, str(ROOT / "scripts" / script), "--acts", str(acts_file), "--tokens", str(tokens),
           "--d-sae", str(D_SAE), "--k", str(K), "--batch", str(BATCH), "--holdout", str(holdout),
           "--threads", str(torch.get_num_threads()), *(["--lr", str(lr)] if lr else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return f"failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-500:]}"
    return json.loads(lines[-1])


def compare_libraries(args: argparse.Namespace, cache: Path, n_cached: int) -> None:
    """Section 2: saekit, SAELens and sparsify on the same activations, `--rounds` times in turn
    (tokens/s: median and range over the rounds, since this VM's speed drifts; FVU: the last round)."""
    from safetensors.torch import save_file

    n_sl = args.saelens_tokens or args.tokens
    holdout = min(16_384, n_cached // 5)
    acts = raw_acts(cache, n_cached)
    acts_file = args.out / "acts_l15.safetensors"
    acts_file.parent.mkdir(parents=True, exist_ok=True)
    save_file({"acts": acts.contiguous()}, str(acts_file))
    runs: dict[str, list[dict | str]] = {"saekit": [], "SAELens": [], "sparsify": []}
    for _ in range(args.rounds):
        runs["saekit"].append(ours_like_saelens(acts, n_sl, holdout, args.out / "saekit_topk", lr=args.lr))
        runs["SAELens"].append(baseline("saelens_baseline.py", args.saelens_python, acts_file, n_sl, holdout))
        if args.sparsify_python:
            runs["sparsify"].append(baseline("sparsify_baseline.py", args.sparsify_python, acts_file, n_sl, holdout,
                                             lr=args.sparsify_lr))
    print(f"\n## 2. Same activations, same machine (SAELens, sparsify): TopK d_sae={D_SAE}, k={K}, batch {BATCH}, "
          f"{n_sl:,} tokens, held-out {holdout:,}, {args.rounds} round(s) in turn")
    print("| library | tokens/s (median) | tokens/s (range) | held-out FVU |\n|---|---|---|---|")
    ours_rate = statistics.median([r["tokens_per_s"] for r in runs["saekit"]])  # type: ignore[index]
    for name, results in runs.items():
        done = [r for r in results if isinstance(r, dict)]
        if not done:
            if results:
                print(f"| {name} | {results[-1]} |")
            continue
        rates = [r["tokens_per_s"] for r in done]
        ratio = "" if name == "saekit" else f" (saekit {ours_rate / statistics.median(rates):.2f}x faster)"
        print(f"| {name} {done[-1].get('version', '')} | {statistics.median(rates):,.0f}{ratio} | {min(rates):,.0f}-{max(rates):,.0f} | "
              f"{done[-1]['fvu']:.4f} |")


# --------------------------------------------------------------------------- 3. quality


def quality(cache: Path, tokens: int, eval_tokens: int, ce_batches: int, relu_l1: list[float], out: Path, model,
            lr: float | None = None, archs: tuple[str, ...] = ARCHS) -> list[dict]:
    from sae.evaluation import evaluate
    from sae.training.run import train

    saes = [
        SAEConfig(architecture="topk", d_in=D_IN, d_sae=D_SAE, k=K, hook_name=HOOK),
        SAEConfig(architecture="batchtopk", d_in=D_IN, d_sae=D_SAE, k=K, hook_name=HOOK),
        SAEConfig(architecture="jumprelu", d_in=D_IN, d_sae=D_SAE, target_l0=K, hook_name=HOOK),
        *[SAEConfig(architecture="relu", d_in=D_IN, d_sae=D_SAE, l1_coefficient=c, hook_name=HOOK) for c in relu_l1],
    ]
    saes = [s for s in saes if s.architecture in archs]
    shutil.rmtree(out, ignore_errors=True)
    steps = max(1, tokens // BATCH)
    cfg = TrainConfig(out_dir=str(out), cache_dir=str(cache), saes=saes, n_tokens=tokens, resume=False, lr=lr,
                      lr_warmup_steps=max(1, steps // 10), sparsity_warmup_steps=max(1, steps // 20),
                      store=StoreConfig(batch_size=BATCH, held_out_tokens=eval_tokens), checkpoint_every_tokens=10**12)
    t = time.perf_counter()
    paths = train(cfg, model=model)
    seconds = time.perf_counter() - t
    rows = []
    for path in paths:
        res = evaluate(str(path), model=model, cfg=EvalConfig(sae_path=str(path), cache_dir=str(cache), n_tokens=eval_tokens,
                                                              ce_batches=ce_batches, save_png=False))
        d = res.to_dict(include_schema=False)
        rows.append({"sae": path.name, "l0": d["sparsity"]["l0"], "fvu": d["reconstruction"]["fvu"],
                     "ce_recovered": (d["downstream"] or {}).get("ce_loss_recovered"),
                     "dead_pct": 100 * d["sparsity"]["dead_fraction"], "eval_tokens": d["sparsity"]["n_tokens"]})
    print(f"(all {len(paths)} SAEs trained together on one stream: {tokens * len(paths) / seconds:,.0f} SAE-tokens/s overall)")
    return rows


MANY_KS = (8, 16, 24, 32, 48, 64, 96, 128)


def many_saes(cache: Path, tokens: int, out: Path, n_saes: int) -> list[dict]:
    """`n_saes` TopK SAEs (k from MANY_KS) trained together on one stream vs one after another:
    tokens/s per SAE and overall, and peak anonymous memory of each arm."""
    from _peak_memory import PeakSampler

    from sae import train

    saes = [SAEConfig(architecture="topk", d_in=D_IN, d_sae=D_SAE, k=k, hook_name=HOOK, name=f"topk_k{k}")
            for k in MANY_KS[:n_saes]]

    def run(configs: list[SAEConfig], where: Path) -> tuple[float, float]:
        shutil.rmtree(where, ignore_errors=True)
        cfg = TrainConfig(out_dir=str(where), cache_dir=str(cache), saes=configs, n_tokens=tokens, resume=False,
                          store=StoreConfig(batch_size=BATCH), checkpoint_every_tokens=10**12, progress=False)
        with PeakSampler() as peak:
            t = time.perf_counter()
            train(cfg)
            return time.perf_counter() - t, peak.anon_kb / 1024

    together_s, together_mb = run(saes, out / "many_together")
    alone = [run([c], out / f"many_alone_{c.name}") for c in saes]
    alone_s, alone_mb = sum(t for t, _ in alone), max(m for _, m in alone)
    n = len(saes)
    return [{"arm": f"{n} together, one stream", "seconds": together_s, "per_sae": tokens / together_s,
             "overall": n * tokens / together_s, "peak_mb": together_mb},
            {"arm": f"{n} one after another", "seconds": alone_s, "per_sae": n * tokens / alone_s / n,
             "overall": n * tokens / alone_s, "peak_mb": alone_mb}]


def print_many(rows: list[dict], tokens: int, n_saes: int) -> None:
    ks = ", ".join(map(str, MANY_KS[:n_saes]))
    print(f"\n## 4. Many SAEs at once: TopK d_sae={D_SAE}, k = {ks}, {tokens:,} tokens each, from the cache")
    print("| arm | seconds | tokens/s per SAE | SAE-tokens/s overall | peak anonymous MB |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arm']} | {r['seconds']:.0f} | {r['per_sae']:,.0f} | {r['overall']:,.0f} | {r['peak_mb']:,.0f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "bench" / "acts_l15", help="layer-15 cache of the builtin corpus")
    ap.add_argument("--cache-tokens", type=int, default=2_000_000, help="tokens to cache when building it (capped by the corpus)")
    ap.add_argument("--tokens", type=int, default=2_000_000, help="training tokens for the quality and SAELens runs")
    ap.add_argument("--saelens-tokens", type=int, default=None, help="training tokens for the SAELens comparison (default --tokens)")
    ap.add_argument("--eval-tokens", type=int, default=16_384, help="held-out tokens (cache tail) for FVU / dead %%")
    ap.add_argument("--ce-batches", type=int, default=4, help="row batches for CE-loss recovered")
    ap.add_argument("--relu-l1", type=float, nargs="+", default=[2.5], help="ReLU L1 coefficient(s); pick the one at L0~32")
    ap.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS),
                    help="architectures in the quality run (e.g. --archs relu to search --relu-l1 alone)")
    ap.add_argument("--lr", type=float, default=None, help="our peak lr (default: each architecture's default_lr)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per throughput case (median)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--saelens-python", default="/work/venv-saelens/bin/python")
    ap.add_argument("--sparsify-python", default="/work/venv-sparsify/bin/python",
                    help="venv with eai-sparsify for a second baseline ('' to skip)")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="print torch.profiler's table over this many fp32 sparse steps (0: skip)")
    ap.add_argument("--sparsify-lr", type=float, default=None, help="sparsify's lr (default: its own rule)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of the library comparison, run in turn")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-saelens", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--many", type=int, default=8, help="SAEs in the many-at-once comparison (0 to skip)")
    ap.add_argument("--many-tokens", type=int, default=200_000, help="training tokens per SAE in that comparison")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("WANDB_MODE", "disabled")
    if args.threads:
        torch.set_num_threads(args.threads)

    import sae

    model = sae.load_model(device="cpu")
    cache = ensure_cache(args.cache, args.cache_tokens, model)
    n_cached = cache_tokens(cache)
    print(f"layer-15 cache: {cache} ({n_cached:,} tokens of the builtin corpus)")

    machine_fp32, machine_bf16 = matmul_rate(torch.float32), matmul_rate(torch.bfloat16, n=512, repeat=2)
    if not args.skip_throughput:
        acts = raw_acts(cache, BATCH)
        rows = throughput(acts, args.steps, machine_fp32, machine_bf16)
        print_throughput(rows, machine_fp32, machine_bf16)
        if args.profile:
            profile_step(acts, args.profile)

    if not args.skip_saelens:
        compare_libraries(args, cache, n_cached)

    if args.many:
        print_many(many_saes(cache, args.many_tokens, args.out, args.many), args.many_tokens, args.many)

    if not args.skip_quality:
        eval_tokens = min(args.eval_tokens, n_cached // 5)
        rows = quality(cache, args.tokens, eval_tokens, args.ce_batches, args.relu_l1, args.out / "quality", model, lr=args.lr,
                       archs=tuple(args.archs))
        print(f"\n## 3. Quality after {args.tokens:,} tokens ({n_cached - eval_tokens:,} distinct training tokens, "
              f"held-out {eval_tokens:,}), target L0 ~ {K}")
        print(f"| {'SAE':22s} | {'L0':>6s} | {'FVU':>7s} | {'CE recovered':>12s} | {'dead %':>6s} |")
        print(f"|{'-' * 24}|{'-' * 8}|{'-' * 9}|{'-' * 14}|{'-' * 8}|")
        for r in rows:
            ce = f"{r['ce_recovered']:.3f}" if r["ce_recovered"] is not None else "-"
            print(f"| {r['sae']:22s} | {r['l0']:6.1f} | {r['fvu']:7.4f} | {ce:>12s} | {r['dead_pct']:6.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
