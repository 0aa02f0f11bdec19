"""Train EleutherAI sparsify's TopK SAE on saekit activations; report tokens/s and held-out FVU.

Runs INSIDE a separate venv with `eai-sparsify` (not a saekit dependency):

    python3 -m venv /work/venv-sparsify
    /work/venv-sparsify/bin/pip install torch==2.13.0   # first: the CPU wheel
    /work/venv-sparsify/bin/pip install eai-sparsify
    /work/venv-sparsify/bin/python scripts/sparsify_baseline.py --acts acts.safetensors \
        --tokens 200000 --d-sae 4608 --k 32 --batch 4096

Same CLI, inputs and JSON line as `scripts/saelens_baseline.py` (whose loaders it reuses).

sparsify's `Trainer` only trains from a live model forward (module hooks), so this runs the
step its `fit()` runs on each hooked batch, with its own pieces and defaults: `SparseCoder`
(fused TopK encoder, sparse decoder), b_dec = batch mean on the first step, decoder rows
renormalised every step, loss = the FVU it returns, gradient parallel to decoder rows
removed, `ScheduleFreeWrapper(SignSGD)` ("signum", its default optimizer) at its default
lr 5e-3 / sqrt(d_sae / 2^14), no AuxK (auxk_alpha defaults to 0), no input normalisation.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from saelens_baseline import batches, fvu, train_eval_split  # noqa: E402


class _Reconstruct(torch.nn.Module):
    """Adapts sparsify's SparseCoder (returns a tuple) to `fvu()`'s x -> x_hat interface."""

    def __init__(self, coder: torch.nn.Module) -> None:
        super().__init__()
        self.coder = coder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.coder(x).sae_out


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--acts", type=Path, required=True, help=".safetensors [N, d_in] or a cache dir")
    p.add_argument(
        "--eval-acts", type=Path, default=None, help="held-out activations (else a tail of --acts)"
    )
    p.add_argument("--hook", default=None)
    p.add_argument("--tokens", type=int, default=200_000)
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument(
        "--lr", type=float, default=None, help="default: sparsify's 5e-3/sqrt(d_sae/2^14)"
    )
    p.add_argument("--holdout", type=int, default=16_384)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    if not args.device.startswith("cuda"):
        os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")  # its Triton decoder is GPU-only
    with contextlib.redirect_stdout(
        sys.stderr
    ):  # sparsify prints on import; stdout is the JSON line
        import schedulefree
        import sparsify
        from sparsify import SparseCoder, SparseCoderConfig
        from sparsify.sign_sgd import SignSGD

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train_ND, eval_ND = train_eval_split(args)
    d_in = int(train_ND.shape[1])

    coder = SparseCoder(
        d_in,
        SparseCoderConfig(num_latents=args.d_sae, k=args.k),
        device=args.device,
        dtype=torch.float32,
    )
    lr = args.lr or 5e-3 / (args.d_sae / 2**14) ** 0.5
    opt = schedulefree.ScheduleFreeWrapper(
        SignSGD([{"params": coder.parameters(), "lr": lr}]), momentum=0.95
    )
    opt.train()

    n_steps = max(1, args.tokens // args.batch)
    data = batches(train_ND.to(args.device), args.batch, args.seed)
    start = time.perf_counter()
    for step in range(n_steps):
        x = next(data)
        if step == 0:
            coder.b_dec.data = x.mean(0).to(coder.b_dec.dtype)
        coder.set_decoder_norm_to_unit_norm()
        total_variance = (x - x.mean(0)).pow(2).sum()
        out = coder(x=x, y=x, dead_mask=None, total_variance=total_variance)
        out.fvu.backward()
        coder.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start

    opt.eval()  # schedule-free: evaluate at the averaged weights, as sparsify's checkpoints do
    result = {
        "library": "sparsify",
        "version": getattr(sparsify, "__version__", "unknown"),
        "tokens_per_s": round(n_steps * args.batch / elapsed, 1),
        "fvu": round(fvu(_Reconstruct(coder), eval_ND.to(args.device)), 5),
        "n_tokens": n_steps * args.batch,
        "n_eval_tokens": int(eval_ND.shape[0]),
        "d_sae": args.d_sae,
        "k": args.k,
        "batch": args.batch,
        "seconds": round(elapsed, 2),
        "torch": torch.__version__,
        "device": args.device,
        "optimizer": "signum (schedule-free SignSGD)",
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
