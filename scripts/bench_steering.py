"""Steering overhead: generation time with an SAE clamp vs without, same decode loop.

    python scripts/bench_steering.py                       # random TopK SAE, d_sae 4608, layer 15
    python scripts/bench_steering.py --sae runs/demo/sae --batch-sizes 1 8 --new-tokens 64

Runs are interleaved (unsteered, steered, unsteered, ...) so machine noise hits both alike;
the table reports the median of `--repeats`. On a busy machine the wall-clock difference is
noise-dominated, so the hook time is also measured directly: the time spent inside the
steering hooks as a share of the steered generation's time. Target: <= 15%.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import sae as saelib  # noqa: E402
import steering  # noqa: E402
import steering.steer_hooks as steering_hooks  # noqa: E402
from steering import Clamp, FeatureSteering  # noqa: E402
from steering.prompts import NEUTRAL_PROMPTS  # noqa: E402

HOOK_SECONDS = [0.0]


def _timed_hooks() -> None:
    """Wrap every steering hook so the time spent inside it is summed (synchronised on CUDA)."""
    make = steering_hooks._make_hook

    def timed_make(iv, tracker):
        fn = make(iv, tracker)

        def timed(x, hook):
            if x.is_cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = fn(x, hook)
            if x.is_cuda:
                torch.cuda.synchronize()
            HOOK_SECONDS[0] += time.perf_counter() - t
            return out

        return timed

    steering_hooks._make_hook = timed_make


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sae", default=None, help="trained SAE dir (default: random TopK at --hook)")
    ap.add_argument("--hook", default="blocks.15.hook_resid_post")
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--n-features", type=int, default=1, help="features clamped at once")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = saelib.load_model(device=args.device)
    dev = str(next(model.original_model.parameters()).device)
    if args.sae:
        sae = saelib.load_sae(args.sae, device=dev)
    else:
        sae = saelib.build_sae(saelib.SAEConfig(architecture="topk", d_in=576, d_sae=args.d_sae, k=32,
                                                hook_name=args.hook)).to(dev).eval()
    iv = FeatureSteering(sae, {i: Clamp(20.0) for i in range(args.n_features)})
    _timed_hooks()
    print(f"device {dev}, torch threads {torch.get_num_threads()}, SAE {sae.cfg.architecture} "
          f"d_sae={sae.cfg.d_sae} at {sae.cfg.hook_name}, {args.new_tokens} new tokens (no early stop)")
    head = (f"{'batch':>5} {'unsteered s':>12} {'steered s':>10} {'tok/s unst.':>12} {'tok/s steer':>12} "
            f"{'wall overhead':>14} {'in hooks':>9}")
    print(head)
    print("-" * len(head))
    for bs in args.batch_sizes:
        prompts = (NEUTRAL_PROMPTS * ((bs // len(NEUTRAL_PROMPTS)) + 1))[:bs]
        kw = dict(compare=False, max_new_tokens=args.new_tokens, batch_size=bs, stop_at_eos=False)
        steering.generate(model, prompts[:1], iv, **{**kw, "max_new_tokens": 2})  # warm-up (+ width probe)
        un, st, share = [], [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            steering.generate(model, prompts, None, **kw)
            un.append(time.perf_counter() - t)
            HOOK_SECONDS[0] = 0.0
            t = time.perf_counter()
            steering.generate(model, prompts, iv, **kw)
            st.append(time.perf_counter() - t)
            share.append(HOOK_SECONDS[0] / st[-1])
        u, s = statistics.median(un), statistics.median(st)
        n = bs * args.new_tokens
        print(f"{bs:>5} {u:>12.2f} {s:>10.2f} {n / u:>12.1f} {n / s:>12.1f} {100 * (s - u) / u:>13.1f}% "
              f"{100 * statistics.median(share):>8.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
