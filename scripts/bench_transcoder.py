"""Transcoders on the embedded model: layer 15's MLP input -> its output, TopK with and without a skip term.

    python scripts/bench_transcoder.py                       # cache ~1M tokens under runs/transcoder/
    python scripts/bench_transcoder.py --tokens 500000 --held-out 50000 --k 32

One activation cache holds both hooks (`blocks.15.mlp.hook_in`, `blocks.15.hook_mlp_out`), written in
one pass; its last `--held-out` tokens are never trained on. Two transcoders (TopK, d_sae 4608, k 32;
one with a linear skip term x W_skip^T) train together on the same paired stream, then each is
evaluated on the held-out pairs (`sae.evaluate`: FVU against the MLP's output, L0, dead latents) and
by CE-loss recovered with its output spliced in place of the MLP's output (zero-ablation of the MLP
output = 0, the clean model = 1). Two references: the least-squares linear map from the MLP's input to
its output (what the skip term alone can do), fitted on training pairs, evaluated the same way; and
the training speed of each transcoder alone over a few steps of a fixed batch. Prints a Markdown table;
`--json` keeps every number.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sae  # noqa: E402

IN_HOOK, OUT_HOOK = "blocks.15.mlp.hook_in", "blocks.15.hook_mlp_out"
D_SAE, BATCH = 4608, 4096


def build_cache(out: Path, tokens: int, model) -> Path:
    cfg = sae.CacheConfig(out_dir=str(out), hooks=[IN_HOOK, OUT_HOOK], n_tokens=tokens)
    return sae.build_cache(cfg, model=model)


def configs(k: int, d_in: int) -> list[sae.SAEConfig]:
    common = dict(architecture="topk", d_in=d_in, d_sae=D_SAE, k=k, hook_name=IN_HOOK, hook_name_out=OUT_HOOK)
    return [sae.SAEConfig(name=f"topk_transcoder_k{k}", **common),
            sae.SAEConfig(name=f"topk_skip_transcoder_k{k}", skip_connection=True, **common)]


def train(saes: list[sae.SAEConfig], cache: Path, tokens: int, held_out: int, out: Path, model) -> tuple[list[Path], float]:
    steps = max(1, tokens // BATCH)
    shutil.rmtree(out, ignore_errors=True)
    cfg = sae.TrainConfig(out_dir=str(out), cache_dir=str(cache), saes=saes, n_tokens=tokens, resume=False,
                          lr_warmup_steps=max(1, steps // 10), store=sae.StoreConfig(batch_size=BATCH, held_out_tokens=held_out),
                          checkpoint_every_tokens=10**12, progress=False)
    t = time.perf_counter()
    paths = sae.train(cfg, model=model)
    return paths, time.perf_counter() - t


def linear_reference(cache: Path, held_out: int, out: Path, d_in: int) -> Path:
    """The least-squares affine map input -> output on ~65k training pairs, saved as a skip transcoder
    whose latents never fire (so `sae.evaluate` measures it exactly like the others)."""
    store = sae.ActivationStore.from_cache(cache, IN_HOOK, sae.StoreConfig(batch_size=65_536, normalize=False,
                                           held_out_tokens=held_out, device="cpu"), target_hook=OUT_HOOK)
    x, y = next(iter(store))
    sol = torch.linalg.lstsq(torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], 1), y.double()).solution
    tc = sae.build_sae(sae.SAEConfig(architecture="relu", d_in=d_in, d_sae=16, hook_name=IN_HOOK, hook_name_out=OUT_HOOK,
                                     skip_connection=True))
    with torch.no_grad():
        tc.b_enc.fill_(-1e4)
        tc.W_skip.copy_(sol[:-1].T.float())
        tc.b_dec.copy_(sol[-1].float())
    return sae.save_sae(tc, out / "linear_map")


def evaluate_row(path: Path, cache: Path, eval_tokens: int, ce_batches: int, model) -> dict[str, Any]:
    cfg = sae.EvalConfig(sae_path=str(path), cache_dir=str(cache), n_tokens=eval_tokens, ce_batches=ce_batches,
                         save_png=False)
    d = sae.evaluate(str(path), model=model, cfg=cfg).to_dict(include_schema=False)
    down = d.get("downstream") or {}
    return {"l0": d["sparsity"]["l0"], "fvu": d["reconstruction"]["fvu"], "dead_pct": 100 * d["sparsity"]["dead_fraction"],
            "ce_recovered": down.get("ce_loss_recovered"), "ce_clean": down.get("ce_loss_clean"),
            "ce_sae": down.get("ce_loss_sae"), "ce_zero": down.get("ce_loss_zero"), "source": d["reconstruction"].get("source")}


def train_speed(scfg: sae.SAEConfig, cache: Path, steps: int = 5) -> float:
    """Tokens/s of one transcoder alone: `steps` optimizer steps on one fixed batch of real pairs."""
    store = sae.ActivationStore.from_cache(cache, IN_HOOK, sae.StoreConfig(batch_size=BATCH, device="cpu"), target_hook=OUT_HOOK)
    pair = next(iter(store))
    trainer = sae.Trainer(sae.TrainConfig(out_dir="/tmp/unused", saes=[scfg], n_tokens=BATCH * (steps + 1), progress=False))
    trainer.total_steps = steps + 1
    trainer._init_from_data({"": pair})
    trainer.step(pair)  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        trainer.step(pair)
    return BATCH * steps / (time.perf_counter() - t)


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def print_table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    print(f"{meta['train_tokens']:,} training tokens ({IN_HOOK} -> {OUT_HOOK}), {meta['eval_tokens']:,} held-out pairs; "
          f"CE over {meta['ce_tokens']:,} next-token predictions, clean {_fmt(meta['ce_clean'])}, MLP output zeroed "
          f"{_fmt(meta['ce_zero'])}; training both together {meta['train_seconds']:.0f} s")
    print("| transcoder | L0 | FVU (vs MLP output) | CE recovered | CE with it spliced | dead % | train tokens/s (alone) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {_fmt(r['l0'], '.1f')} | {_fmt(r['fvu'])} | {_fmt(r['ce_recovered'])} | {_fmt(r['ce_sae'])} | "
              f"{_fmt(r['dead_pct'], '.1f')} | {_fmt(r.get('tokens_per_s'), ',.0f')} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "transcoder")
    ap.add_argument("--tokens", type=int, default=1_000_000, help="training tokens (the cache holds these + --held-out)")
    ap.add_argument("--held-out", type=int, default=50_000)
    ap.add_argument("--eval-tokens", type=int, default=50_000)
    ap.add_argument("--ce-batches", type=int, default=8)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = sae.load_model()
    # positions dropped by a filter cost cache tokens: ask for ~8% more than the pairs needed
    cache = build_cache(args.out / "acts", int((args.tokens + args.held_out) * 1.08), model)
    d_in = sae.CacheManifest.read(cache).d_in_of(IN_HOOK)
    saes = configs(args.k, d_in)
    paths, seconds = train(saes, cache, args.tokens, args.held_out, args.out / "saes", model)
    paths.append(linear_reference(cache, args.held_out, args.out / "saes", d_in))
    rows = []
    for path, scfg in zip(paths, [*saes, None], strict=True):
        row = {"name": path.name, **evaluate_row(path, cache, min(args.eval_tokens, args.held_out), args.ce_batches, model)}
        if scfg is not None:
            row["tokens_per_s"] = train_speed(scfg, cache)
        rows.append(row)
    meta = {"train_tokens": args.tokens, "eval_tokens": min(args.eval_tokens, args.held_out), "train_seconds": seconds,
            "ce_tokens": args.ce_batches * 8 * 127, "ce_clean": rows[0]["ce_clean"], "ce_zero": rows[0]["ce_zero"]}
    print_table(rows, meta)
    if args.json:
        sae.atomic_write_json(args.json, {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
