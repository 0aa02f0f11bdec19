"""Benchmark: activation caching vs a bare transformers forward truncated at the same layer.

    python scripts/bench_cache.py                      # layer 15, batch 32 x 128, fp32 and bf16
    python scripts/bench_cache.py --device cuda --bf16-batch 32

Rows are timed interleaved (bare, cache path, bridge, ...) and the median of `--repeats` is
reported, so background load hits every variant alike. Columns:

* bare       — `AutoModelForCausalLM` with its layer list cut after the layer (no final norm)
* cache path — what `saekit cache` runs per batch: `ActivationExtractor` (forward to the hook,
               outlier filtering, copy of the kept activations to CPU in the storage dtype)
* bridge     — TransformerBridge `run_with_hooks(..., stop_at_layer=...)`, for reference
* end-to-end — `build_cache` itself (tokenising, forward, shard writing and hashing), fp32 only

Targets: cache path >= 0.90 x bare; bf16 >= 2.5 x fp32 where the CPU has bf16 matrix units
(AVX512-BF16 / AMX) or on a GPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def cpu_capability() -> tuple[str, bool]:
    """(description, has bf16 matrix units)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16") if f in flags]
    has_bf16 = bool({"avx512_bf16", "amx_bf16", "bf16"} & flags)
    torch_cap = torch.backends.cpu.get_cpu_capability()
    desc = f"{model}; {os.cpu_count()} cores; flags: {', '.join(simd) or 'none of note'}; torch kernels: {torch_cap}"
    return desc, has_bf16


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def sample_rows(tokenizer, batch: int, context: int) -> torch.Tensor:
    from sae.config import DataConfig
    from sae.data import BUILTIN_CORPUS, DataError, token_rows

    sources = [str(BUILTIN_CORPUS), str(Path(__file__).resolve().parents[1] / "tests/data/tiny_corpus.jsonl")]
    for src in sources:
        if not Path(src).exists():
            continue
        try:
            rows = []
            for row in token_rows(DataConfig(source=src, context_size=context), tokenizer):
                rows.append(row)
                if len(rows) == batch:
                    return torch.stack(rows)
        except DataError:
            continue
    g = torch.Generator().manual_seed(0)
    x = torch.randint(3, tokenizer.vocab_size, (batch, context), generator=g)
    x[:, 0] = tokenizer.bos_token_id
    return x


def bare_model(dtype: torch.dtype, layer: int, device: torch.device):
    from transformers import AutoModelForCausalLM

    from sae.embedded import embedded_model_dir

    m = AutoModelForCausalLM.from_pretrained(str(embedded_model_dir()), dtype=dtype).to(device).eval()
    m.model.layers = m.model.layers[: layer + 1]
    m.model.norm = torch.nn.Identity()
    return m


def measure(
    args: argparse.Namespace, dtype_name: str, hook: str, device: torch.device, fast_bf16: bool
) -> dict:
    """Tokens/s of each variant for one dtype (median of interleaved repeats)."""
    import sae
    from sae.activation_cache import build_cache
    from sae.config import CacheConfig, DataConfig
    from sae.extract import ActivationExtractor

    dtype = sae.parse_dtype(dtype_name)
    full = dtype == torch.float32 or fast_bf16
    batch = args.batch if full else args.bf16_batch
    repeats = args.repeats if full else 1
    model = sae.load_model(device=str(device), dtype=dtype_name)
    bare = bare_model(dtype, args.layer, device)
    x = sample_rows(model.tokenizer, batch, args.context).to(device)
    cache_ex = ActivationExtractor(model, [hook])
    bridge_ex = ActivationExtractor(model, [hook], engine="bridge")
    variants = {
        "bare": lambda: bare.model(input_ids=x, use_cache=False),
        "cache": lambda: cache_ex(x, out_dtype=dtype),
        "bridge": lambda: bridge_ex(x, out_dtype=dtype),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.inference_mode():
        for fn in variants.values():  # warm-up (and the fast path's self-check)
            fn()
        for _ in range(repeats):
            for name, fn in variants.items():
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                times[name].append(time.perf_counter() - t0)
    n_tok = batch * args.context
    row: dict = {k: n_tok / statistics.median(v) for k, v in times.items()}
    row.update(dtype=dtype_name, batch=f"{batch}x{args.context}", engine=cache_ex.engine)
    if dtype == torch.float32 and args.e2e_batches > 0:
        data = DataConfig(context_size=args.context)
        if args.source:
            data.source = args.source
        with tempfile.TemporaryDirectory() as tmp:
            cfg = CacheConfig(
                out_dir=tmp, hooks=[hook], n_tokens=args.e2e_batches * n_tok, batch_size=batch,
                shard_tokens=2 * n_tok, data=data, dtype=dtype_name,
            )
            t0 = time.perf_counter()
            try:
                out = build_cache(cfg, model=model, progress=False)
                row["e2e"] = sae.read_manifest(out)["n_tokens"] / (time.perf_counter() - t0)
            except Exception as e:  # e.g. no builtin corpus yet
                print(f"(end-to-end skipped: {e})")
    return row


def bench(args: argparse.Namespace) -> None:
    import sae

    if args.threads:
        torch.set_num_threads(args.threads)
    device = sae.pick_device(args.device)
    desc, has_bf16 = cpu_capability()
    fast_bf16 = has_bf16 or device.type == "cuda"
    print(f"device: {device}   threads: {torch.get_num_threads()}")
    print(f"CPU: {desc}")
    if device.type == "cpu" and not has_bf16:
        print(
            "  -> no bf16 matrix units (AVX512-BF16/AMX): bf16 matmuls are emulated and run far slower\n"
            "     than fp32 here, so bf16 cannot be fast on this machine; its rows use a tiny batch."
        )
    hook = sae.resid_hook(args.layer)
    results = [measure(args, name, hook, device, fast_bf16) for name in ("float32", "bfloat16")]

    print()
    head = f"{'dtype':9} {'batch':>8} {'bare tok/s':>11} {'cache tok/s':>12} {'cache/bare':>11} {'bridge tok/s':>13} {'e2e tok/s':>10}"
    print(head)
    print("-" * len(head))
    for r in results:
        e2e = f"{r['e2e']:10.0f}" if "e2e" in r else f"{'-':>10}"
        print(
            f"{r['dtype']:9} {r['batch']:>8} {r['bare']:11.0f} {r['cache']:12.0f} "
            f"{r['cache'] / r['bare']:11.2f} {r['bridge']:13.0f} {e2e}"
        )
    fp32, bf16 = results
    print()
    ratio = fp32["cache"] / fp32["bare"]
    print(f"target cache path >= 0.90 x bare forward (fp32): {ratio:.2f}  {'PASS' if ratio >= 0.9 else 'FAIL'}")
    speedup = bf16["cache"] / fp32["cache"]
    if fast_bf16:
        print(f"target bf16 >= 2.5 x fp32: {speedup:.2f}  {'PASS' if speedup >= 2.5 else 'FAIL'}")
    else:
        print(f"target bf16 >= 2.5 x fp32: n/a on this CPU (measured {speedup:.3f}x: no bf16 matrix units)")
    print(f"fast path engine in use: {fp32['engine']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--batch", type=int, default=32, help="rows per forward pass")
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--bf16-batch", type=int, default=1, help="rows for bf16 on CPUs without bf16 units")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--e2e-batches", type=int, default=4, help="batches for the end-to-end build_cache row")
    p.add_argument("--source", default=None, help="text for the end-to-end row (default: builtin)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    bench(p.parse_args())


if __name__ == "__main__":
    main()
