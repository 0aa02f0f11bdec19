"""Every registered architecture at matched sparsity, on the same activations and token budget.

    python scripts/bench_architectures.py --cache runs/steer_seeds/acts --tokens 500000
    python scripts/bench_architectures.py --cache ACTS --l0 32 --archs topk gated --no-quality
    python scripts/bench_architectures.py --cache ACTS --from-json runs/bench_arch_all/result.json \
        --second-cache runs/python_docs/acts     # the same SAEs on another text

For each architecture in `sae.architecture_names()` and each target L0 (default 32 and 64) one
SAE (d_sae 4608) is configured from what the architecture reads: `k` = L0 (TopK-style),
`target_l0` = L0 (JumpReLU), or an L1 coefficient found by calibration (ReLU, Gated: a short run
over an L1 grid, log L0 against log L1 interpolated to the target; `--l1 ARCH:L0=VALUE` skips it).
All SAEs train together on one stream with each architecture's default lr; then each is evaluated
on the cache's held-out tail (`sae.evaluate`: L0, FVU, CE-loss recovered, dead %) with sparse
probing and first-letter absorption (`--no-quality` skips them), and its training speed alone is
timed over a few steps of a fixed batch. Prints a Markdown table; `--json` keeps every number.
The architecture list comes from the registry: this script names none.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import timed_in_turn  # noqa: E402

import sae  # noqa: E402

D_SAE, BATCH = 4608, 4096
L1_GRID = (0.5, 1.0, 2.0, 4.0, 8.0)


def sparsity_field(arch: str) -> str | None:
    """The SAEConfig field that sets this architecture's L0, in order of preference."""
    fields = sae.get_architecture(arch).config_fields
    return next((f for f in ("k", "target_l0", "l1_coefficient") if f in fields), None)


def configure(arch: str, l0: int, hook: str, d_in: int, l1: float | None) -> sae.SAEConfig:
    field = sparsity_field(arch)
    value: dict[str, Any] = {"k": l0} if field == "k" else {"target_l0": float(l0)} if field == "target_l0" else {"l1_coefficient": l1}
    return sae.SAEConfig(architecture=arch, d_in=d_in, d_sae=D_SAE, hook_name=hook, name=f"{arch}_L0{l0}", **value)


def train_together(saes: list[sae.SAEConfig], cache: Path, tokens: int, held_out: int, out: Path, model) -> tuple[list[Path], float]:
    steps = max(1, tokens // BATCH)
    shutil.rmtree(out, ignore_errors=True)
    cfg = sae.TrainConfig(out_dir=str(out), cache_dir=str(cache), saes=saes, n_tokens=tokens, resume=False,
                          lr_warmup_steps=max(1, steps // 10), sparsity_warmup_steps=max(1, steps // 20),
                          store=sae.StoreConfig(batch_size=BATCH, held_out_tokens=held_out),
                          checkpoint_every_tokens=10**12, progress=False)
    t = time.perf_counter()
    paths = sae.train(cfg, model=model)
    return paths, time.perf_counter() - t


def held_out_l0(path: Path, cache: Path, n_tokens: int, model) -> float:
    cfg = sae.EvalConfig(sae_path=str(path), cache_dir=str(cache), n_tokens=n_tokens, ce_batches=0, save_png=False)
    return float(sae.evaluate(str(path), model=model, cfg=cfg).to_dict(include_schema=False)["sparsity"]["l0"])


def calibrate_l1(arch: str, targets: list[int], args: argparse.Namespace, hook: str, d_in: int, model) -> dict[int, float]:
    """L1 coefficient per target L0: a short run over L1_GRID, interpolated in log-log."""
    grid = [sae.SAEConfig(architecture=arch, d_in=d_in, d_sae=D_SAE, hook_name=hook, l1_coefficient=c, name=f"{arch}_l1_{c:g}")
            for c in L1_GRID]
    paths, _ = train_together(grid, args.cache, args.calibration_tokens, args.eval_tokens, args.out / f"calibrate_{arch}", model)
    points = [(math.log(c), math.log(max(held_out_l0(p, args.cache, args.eval_tokens, model), 1e-3))) for c, p in zip(L1_GRID, paths, strict=True)]
    print(f"  {arch} calibration (L1 -> held-out L0): " + ", ".join(f"{math.exp(a):g} -> {math.exp(b):.1f}" for a, b in points))
    chosen = {}
    for target in targets:
        chosen[target] = math.exp(_interpolate(points, math.log(target)))
    return chosen


def _interpolate(points: list[tuple[float, float]], y: float) -> float:
    """x at which the piecewise-linear y(x) through `points` (y falling with x) reaches y; clamped to the grid."""
    pts = sorted(points, key=lambda p: p[1])  # by log L0, ascending
    if y <= pts[0][1]:
        return pts[0][0]
    if y >= pts[-1][1]:
        return pts[-1][0]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if y0 <= y <= y1:
            return x0 + (x1 - x0) * (y - y0) / (y1 - y0) if y1 != y0 else x0
    return pts[-1][0]


def train_speed(cfg: sae.SAEConfig, x_BD: torch.Tensor, steps: int) -> float:
    """Training tokens/s of this SAE alone on a fixed batch (median of `steps` timed steps)."""
    trainer = sae.Trainer(sae.TrainConfig(out_dir="/tmp/saekit-bench-unused", saes=[cfg], progress=False, log_every_steps=10**9))
    trainer.total_steps, trainer.batch_size = 10**6, x_BD.shape[0]
    times = timed_in_turn({"step": lambda: trainer.step(x_BD)}, steps)["step"]
    return x_BD.shape[0] / sorted(times)[len(times) // 2]


def evaluate_row(path: Path, args: argparse.Namespace, model) -> dict[str, Any]:
    cfg = sae.EvalConfig(sae_path=str(path), cache_dir=str(args.cache), n_tokens=args.eval_tokens, ce_batches=args.ce_batches,
                         save_png=False, probing=args.quality, absorption=args.quality)
    d = sae.evaluate(str(path), model=model, cfg=cfg).to_dict(include_schema=False)
    row = _core_metrics(d)
    probing, absorption = d.get("sparse_probing") or {}, d.get("absorption") or {}
    row["probing"] = {k: probing.get(k) for k in ("mean_residual_accuracy", "mean_sae_accuracy", "ks")}
    row["absorption"] = {k: absorption.get(k) for k in ("mean_absorption_rate", "ci_low", "ci_high", "mean_absorption_fraction")}
    return row


def second_source_row(path: Path, cache: Path, args: argparse.Namespace, model) -> dict[str, Any]:
    """L0 / FVU / CE recovered / dead % on another text's cache (its last `--eval-tokens`; CE on the
    text that follows the cached part of the same source)."""
    source = (sae.CacheManifest.read(cache).config.get("data") or {}).get("source")
    if not source:
        raise SystemExit(f"{cache}'s manifest names no text source; re-cache it with `saekit cache --source FILE`")
    cfg = sae.EvalConfig(sae_path=str(path), cache_dir=str(cache), n_tokens=args.eval_tokens, ce_batches=args.ce_batches,
                         save_png=False, data=sae.DataConfig(source=source))
    d = sae.evaluate(str(path), model=model, cfg=cfg).to_dict(include_schema=False)
    return {"source": source, **_core_metrics(d)}


def _core_metrics(d: dict[str, Any]) -> dict[str, Any]:
    """L0, FVU, dead % and CE recovered of an evaluation's JSON."""
    return {"l0": d["sparsity"]["l0"], "fvu": d["reconstruction"]["fvu"], "dead_pct": 100 * d["sparsity"]["dead_fraction"],
            "ce_recovered": (d.get("downstream") or {}).get("ce_loss_recovered")}


def print_second_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n| SAE | setting | builtin FVU | builtin CE recovered | {rows[0]['second']['source']}: L0 | FVU | CE recovered | dead % |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["second"]
        print(f"| {r['arch']} | {r['setting']} | {_fmt(r['fvu'])} | {_fmt(r['ce_recovered'])} | {_fmt(s['l0'], '.1f')} | "
              f"{_fmt(s['fvu'])} | {_fmt(s['ce_recovered'])} | {_fmt(s['dead_pct'], '.2f')} |")


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| SAE | setting | L0 | FVU | CE recovered | dead % | probing k=1 / 2 / 5 (residual) | absorption [95% CI] | abs. fraction | train tokens/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p, a = r.get("probing") or {}, r.get("absorption") or {}
        sparse = p.get("mean_sae_accuracy") or []
        probing = " / ".join(_fmt(v, ".2f") for v in sparse) + f" ({_fmt(p.get('mean_residual_accuracy'), '.2f')})" if sparse else "-"
        absorbed = (f"{_fmt(a.get('mean_absorption_rate'))} [{_fmt(a.get('ci_low'))}, {_fmt(a.get('ci_high'))}]"
                    if a.get("mean_absorption_rate") is not None else "-")
        print(f"| {r['arch']} | {r['setting']} | {_fmt(r['l0'], '.1f')} | {_fmt(r['fvu'])} | {_fmt(r['ce_recovered'])} | "
              f"{_fmt(r['dead_pct'], '.2f')} | {probing} | {absorbed} | {_fmt(a.get('mean_absorption_fraction'))} | "
              f"{_fmt(r['tokens_per_s'], ',.0f')} |")


def _parse_l1(items: list[str]) -> dict[tuple[str, int], float]:
    out = {}
    for item in items:
        try:
            key, value = item.split("=")
            arch, l0 = key.split(":")
            out[(arch, int(l0))] = float(value)
        except ValueError:
            raise SystemExit(f"--l1 {item!r} must look like ARCH:L0=VALUE (e.g. gated:32=1.5)") from None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True, help="activation cache of one hook (`saekit cache`)")
    ap.add_argument("--tokens", type=int, default=500_000, help="training tokens per SAE")
    ap.add_argument("--calibration-tokens", type=int, default=150_000, help="training tokens of the L1 calibration runs")
    ap.add_argument("--eval-tokens", type=int, default=11_776, help="held-out tokens (the cache's tail)")
    ap.add_argument("--ce-batches", type=int, default=4)
    ap.add_argument("--l0", type=int, nargs="+", default=[32, 64], help="target L0s")
    ap.add_argument("--archs", nargs="+", default=None, help="default: every registered architecture")
    ap.add_argument("--l1", nargs="*", default=[], metavar="ARCH:L0=VALUE", help="L1 coefficients to use instead of calibrating")
    ap.add_argument("--speed-steps", type=int, default=5)
    ap.add_argument("--no-quality", dest="quality", action="store_false", help="skip sparse probing and absorption")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_architectures")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--speed-only", action="store_true",
                    help="only the training tokens/s of each architecture on one batch (no training, no evaluation)")
    ap.add_argument("--second-cache", type=Path, default=None,
                    help="also evaluate every SAE on this cache of another text (e.g. Python's docs, "
                         "scripts/make_python_docs_text.py); with --from-json, only that")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="reuse the SAEs and rows of an earlier run's --json instead of training")
    args = ap.parse_args()
    if args.from_json:
        return second_source_only(args)
    manifest = sae.CacheManifest.read(args.cache)
    hook = manifest.hooks[0]
    d_in = manifest.d_in[hook] if isinstance(manifest.d_in, dict) else manifest.d_in
    archs = args.archs or sae.architecture_names()
    unknown = set(archs) - set(sae.architecture_names())
    if unknown:
        raise SystemExit(f"unknown architecture(s) {sorted(unknown)}; known: {sae.architecture_names()}")
    if args.speed_only:
        return print_speeds(archs, args, hook, d_in)
    model = sae.load_model(manifest.model)
    l1 = _parse_l1(args.l1)
    for arch in archs:
        missing = [t for t in args.l0 if (arch, t) not in l1]
        if sparsity_field(arch) == "l1_coefficient" and missing:
            l1.update({(arch, t): c for t, c in calibrate_l1(arch, missing, args, hook, d_in, model).items()})
    configs = [configure(a, t, hook, d_in, l1.get((a, t))) for a in archs for t in args.l0 if sparsity_field(a)]
    print(f"training {len(configs)} SAEs together on {args.tokens:,} tokens of {hook} ...")
    paths, seconds = train_together(configs, args.cache, args.tokens, args.eval_tokens, args.out, model)
    x = _speed_batch(args.cache, hook)
    rows = []
    for cfg, path in zip(configs, paths, strict=True):
        row = {"arch": cfg.architecture, "setting": sae.get_architecture(cfg.architecture).name_detail(cfg) or "-",
               "path": str(path), **evaluate_row(path, args, model), "tokens_per_s": train_speed(cfg, x, args.speed_steps)}
        if args.second_cache:
            row["second"] = second_source_row(path, args.second_cache, args, model)
        rows.append(row)
        print(json.dumps(row))
    print(f"\n{len(paths)} SAEs, {args.tokens:,} tokens each, trained together in {seconds:.0f} s; {torch.get_num_threads()} threads")
    print_table(rows)
    if args.second_cache:
        print_second_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))
    return 0


def second_source_only(args: argparse.Namespace) -> int:
    """`--from-json` + `--second-cache`: evaluate an earlier run's SAEs on another text; rewrite its JSON."""
    if args.second_cache is None:
        raise SystemExit("--from-json needs --second-cache (the cache of the other text to evaluate on)")
    doc = json.loads(args.from_json.read_text())
    model = sae.load_model(sae.CacheManifest.read(args.second_cache).model)
    for row in doc["rows"]:
        row["second"] = second_source_row(Path(row["path"]), args.second_cache, args, model)
        print(json.dumps({"path": row["path"], **row["second"]}), flush=True)
    print_table(doc["rows"])
    print_second_table(doc["rows"])
    args.from_json.write_text(json.dumps(doc, indent=1))
    return 0


def print_speeds(archs: list[str], args: argparse.Namespace, hook: str, d_in: int) -> int:
    """Training tokens/s per architecture at the first target L0 (L1-set ones at their default L1)."""
    x = _speed_batch(args.cache, hook)
    print(f"| SAE | train tokens/s (batch {BATCH:,}, d_sae {D_SAE:,}, {torch.get_num_threads()} threads) |\n|---|---|")
    for arch in archs:
        if sparsity_field(arch):
            cfg = configure(arch, args.l0[0], hook, d_in, sae.SAEConfig().l1_coefficient)
            print(f"| {arch} | {train_speed(cfg, x, args.speed_steps):,.0f} |", flush=True)
    return 0


def _speed_batch(cache: Path, hook: str) -> torch.Tensor:
    store = sae.ActivationStore.from_cache(cache, hook, sae.StoreConfig(batch_size=BATCH, normalize=True, shuffle=False))
    return next(iter(store)).float()


if __name__ == "__main__":
    raise SystemExit(main())
