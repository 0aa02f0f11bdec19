"""The GPU path, proven and measured in one run (issue 18): what to run first when a GPU is lent.

    bash scripts/bench_gpu.sh                         # on a CUDA machine: installs from the lock, then this
    python scripts/bench_gpu.py --device cpu --tiny   # every step at toy sizes (the test suite runs it)

Steps, each one row of `<out>/bench_gpu.json` and of the printed table (a failed step is a row
with its error, and the run exits 1 after the others ran):
  cache     layer-L activations of the embedded model on the device: build_cache tokens/s beside a
            bare transformers forward over the same rows
  train     TopK / BatchTopK / JumpReLU, fp32 and bf16 autocast: tokens/s, held-out FVU evaluated
            in fp32 (`sae.evaluate`), peak device memory
  sparsify  EleutherAI sparsify's TopK on the same activations and device (`--sparsify-python`,
            a venv with eai-sparsify; skipped with the reason when it is missing)
  ddp       `torchrun --nproc_per_node 2` training against one process on the same cache: largest
            weight difference
  kv        a feature clamped during greedy generation, KV cache on vs off: identical text
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import sae  # noqa: E402

ARCHS = ("topk", "batchtopk", "jumprelu")


def sizes(tiny: bool) -> dict[str, int]:
    if tiny:
        return {"cache_tokens": 4096, "train_tokens": 12_288, "d_sae": 256, "k": 16, "batch": 1024, "eval": 512,
                "layer": 3, "rows": 8}
    return {"cache_tokens": 400_000, "train_tokens": 2_000_000, "d_sae": 4608, "k": 32, "batch": 4096,
            "eval": 40_000, "layer": 15, "rows": 32}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_memory(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def step_cache(model: Any, s: dict[str, int], out: Path, device: str) -> dict[str, Any]:
    cache = out / "acts"
    t = time.perf_counter()
    sae.build_cache(sae.CacheConfig(out_dir=str(cache), hooks=[sae.resid_hook(s["layer"])], n_tokens=s["cache_tokens"],
                                    batch_size=s["rows"], data=sae.DataConfig(source="builtin")),
                    model=model, progress=False)
    _sync(device)
    cached = sae.CacheManifest.read(cache).n_tokens
    cache_rate = cached / (time.perf_counter() - t)
    rows = next(iter(sae.token_rows(sae.DataConfig(source="builtin"), model.tokenizer)))[None].repeat(s["rows"], 1)
    base = model.original_model.model  # the decoder stack without the LM head
    layers = base.layers
    base.layers = layers[: s["layer"] + 1]  # the bare forward stops where the cache's does
    try:
        with torch.no_grad():
            base(input_ids=rows.to(device))  # warm-up
            _sync(device)
            t = time.perf_counter()
            for _ in range(3):
                base(input_ids=rows.to(device))
            _sync(device)
    finally:
        base.layers = layers
    bare_rate = 3 * rows.numel() / (time.perf_counter() - t)
    return {"step": "cache", "tokens_per_s": round(cache_rate), "bare_forward_tokens_per_s": round(bare_rate),
            "ratio": round(cache_rate / bare_rate, 3),
            "note": f"build_cache end to end vs a bare transformers forward through layer {s['layer']}"}


def _train_one(arch: str, precision: str, s: dict[str, int], out: Path, device: str, model: Any) -> dict[str, Any]:
    cache = out / "acts"
    held = min(s["eval"], sae.CacheManifest.read(cache).n_tokens // 10)
    hook = sae.resid_hook(s["layer"])
    cfg = sae.TrainConfig(
        out_dir=str(out / f"sae_{arch}_{precision}"), cache_dir=str(cache),
        saes=[sae.SAEConfig(architecture=arch, d_in=int(model.cfg.d_model), d_sae=s["d_sae"], k=s["k"],
                            target_l0=float(s["k"]) if arch == "jumprelu" else None, hook_name=hook)],
        store=sae.StoreConfig(batch_size=s["batch"], held_out_tokens=held, device=device),
        n_tokens=s["train_tokens"], device=device, progress=False,
        autocast_dtype="bfloat16" if precision == "bf16" else None,
    )
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    (path,) = sae.train(cfg)
    _sync(device)
    rate = s["train_tokens"] / (time.perf_counter() - t)
    ev = sae.evaluate(sae.load_sae(path, device=device), model=model,
                      cfg=sae.EvalConfig(sae_path=str(path), cache_dir=str(cache), n_tokens=held, ce_batches=0,
                                         device=device)).to_dict(include_schema=False)
    return {"step": "train", "arch": arch, "precision": precision, "tokens_per_s": round(rate),
            "fvu_fp32": round(ev["reconstruction"]["fvu"], 4), "l0": round(ev["sparsity"]["l0"], 1),
            "peak_gib": _peak_memory(device)}


def step_sparsify(s: dict[str, int], out: Path, device: str, python: str) -> dict[str, Any]:
    if not Path(python).exists():
        return {"step": "sparsify", "skipped": f"no sparsify venv at {python} (see scripts/sparsify_baseline.py)"}
    cmd = [python, str(ROOT / "scripts" / "sparsify_baseline.py"), "--acts", str(out / "acts"),
           "--tokens", str(s["train_tokens"]), "--d-sae", str(s["d_sae"]), "--k", str(s["k"]),
           "--batch", str(s["batch"]), "--holdout", str(s["eval"]), "--device", device]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"sparsify_baseline.py failed: {res.stderr[-800:]}")
    line = json.loads(res.stdout.strip().splitlines()[-1])
    return {"step": "sparsify", **{k: line[k] for k in ("tokens_per_s", "fvu") if k in line}}


def _cli_train(out: Path, s: dict[str, int], device: str, nproc: int) -> Path:
    folder = out / f"ddp{nproc}"
    args = ["-m", "app.cli", "train", "--cache", str(out / "acts"), "--out", str(folder), "--arch", "topk",
            "--k", str(s["k"]), "--d-sae", str(s["d_sae"]), "--tokens", str(4 * s["batch"]),
            "--batch-size", str(s["batch"]), "--device", device, "--no-progress"]
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                     "--nproc_per_node", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([*launcher, *args], cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env,
                         check=False)
    if res.returncode != 0:
        raise RuntimeError(f"training with {nproc} process(es) failed: {res.stderr[-800:]}")
    return folder


def step_ddp(s: dict[str, int], out: Path, device: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    one, two = (load_file(_cli_train(out, s, device, n) / "sae_weights.safetensors") for n in (1, 2))
    diff = max(float((one[k] - two[k]).abs().max()) for k in one)
    return {"step": "ddp", "max_weight_difference": diff, "equal": diff < 1e-4}


def step_kv(model: Any, s: dict[str, int], out: Path) -> dict[str, Any]:
    import steering

    my_sae = sae.load_sae(out / "sae_topk_fp32", device=str(sae.model_device(model)))
    prompts = ["Tell me about yourself.", "Describe a perfect weekend."]
    texts = {}
    for cache in (True, False):
        gens = steering.generate(model, prompts, (my_sae, {0: steering.Clamp(4.0, unit="max")}), compare=False,
                                 max_new_tokens=12, use_cache=cache)
        texts[cache] = [g.steered for g in gens]
    return {"step": "kv", "identical": texts[True] == texts[False], "sample": texts[True][0][:80]}


def run_steps(args: argparse.Namespace) -> list[dict[str, Any]]:
    s = sizes(args.tiny)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = str(sae.pick_device(args.device))
    model = sae.load_model(device=device)
    precisions = ["fp32", "bf16"] if (device.startswith("cuda") or args.bf16) else ["fp32"]
    steps: list[tuple[str, Callable[[], dict[str, Any] | list[dict[str, Any]]]]] = [
        ("cache", lambda: step_cache(model, s, out, device)),
        ("train", lambda: [_train_one(a, p, s, out, device, model) for a in ARCHS for p in precisions]),
        ("sparsify", lambda: step_sparsify(s, out, device, args.sparsify_python)),
        ("ddp", lambda: step_ddp(s, out, device)),
        ("kv", lambda: step_kv(model, s, out)),
    ]
    rows: list[dict[str, Any]] = []
    for name, fn in steps:
        if name in args.skip:
            rows.append({"step": name, "skipped": "--skip"})
            continue
        t = time.perf_counter()
        try:
            got = fn()
        except Exception as e:  # one broken step must not hide the others' numbers
            traceback.print_exc()
            got = {"step": name, "error": f"{type(e).__name__}: {e}"[:500]}
        for r in got if isinstance(got, list) else [got]:
            rows.append({**r, "seconds": round(time.perf_counter() - t, 1)})
    return rows


def table(rows: list[dict[str, Any]], device_name: str) -> str:
    lines = [f"device: {device_name}; {sae.versions_line()}", "", "| step | result |", "|---|---|"]
    for r in rows:
        rest = ", ".join(f"{k} {v}" for k, v in r.items() if k != "step")
        lines.append(f"| {r['step']} | {rest} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cuda | cpu | mps (default: the best available)")
    p.add_argument("--tiny", action="store_true", help="toy sizes: every step in a minute or two on a CPU")
    p.add_argument("--bf16", action="store_true", help="also train in bf16 autocast off CUDA")
    p.add_argument("--skip", nargs="*", default=[], choices=["cache", "train", "sparsify", "ddp", "kv"])
    p.add_argument("--sparsify-python", default="/work/venv-sparsify/bin/python")
    p.add_argument("--out", default="runs/bench_gpu")
    args = p.parse_args(argv)
    rows = run_steps(args)
    device = str(sae.pick_device(args.device))
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"{device} ({os.cpu_count()} cores)"
    doc = {"device": name, "tiny": args.tiny, "versions": sae.versions_line(), "rows": rows}
    sae.atomic_write_json(Path(args.out) / "bench_gpu.json", doc)
    print(table(rows, name))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
