"""Train SAELens's TopK SAE on saekit activations and report tokens/s and held-out FVU.

Runs INSIDE a separate venv that has `sae-lens` installed (it is not a saekit dependency):

    python3 -m venv /work/venv-saelens
    /work/venv-saelens/bin/pip install torch==2.13.0   # first: the CPU wheel, not GBs of CUDA
    /work/venv-saelens/bin/pip install sae-lens
    /work/venv-saelens/bin/python scripts/saelens_baseline.py --acts acts.safetensors \
        --tokens 200000 --d-sae 4608 --k 32 --batch 4096

`--acts` is either a `.safetensors` file holding one activation tensor [N, d_in] (what
`scripts/bench_train.py` exports), or a saekit activation-cache directory (its shards are
read with safetensors directly, so saekit itself is never imported here).

Training uses SAELens's own `TopKTrainingSAE` and `SAETrainer.fit()` (its Adam, LR schedule,
grad clipping, dead-latent tracking and AuxK loss) with SAELens's runner defaults, fed by a
plain shuffled in-memory iterator. The timed region is `fit()` alone; the activation-norm
scale is estimated beforehand (SAELens's `ActivationScaler`) and folded into the weights by
`fit()` so the SAE works on raw activations.

Held-out FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 in fp32 on raw activations that
training never saw: `--eval-acts FILE` when given, else the last `--holdout` rows of `--acts`.

Prints one JSON line:
    {"library": "sae_lens", "version": ..., "tokens_per_s": ..., "fvu": ..., "n_tokens": ...}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # output stays one JSON line, not progress bars

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402


def load_acts(path: Path, hook: str | None = None) -> torch.Tensor:
    """All activations [N, d_in] from a .safetensors file or a saekit cache directory, fp32."""
    if not path.exists():
        raise SystemExit(f"--acts {path} does not exist; export activations or build a cache first")
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            key = "acts" if "acts" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise SystemExit(f"{path} holds tensors {keys}; name the activations 'acts'")
            return f.get_tensor(key).float()
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise SystemExit(f"{path} has no manifest.json; is it a saekit activation cache?")
    manifest = json.loads(manifest_path.read_text())
    hooks = manifest["hooks"]
    if hook is None and len(hooks) != 1:
        raise SystemExit(f"{path} caches several hooks {hooks}; pass --hook")
    hook = hook or hooks[0]
    if hook not in hooks:
        raise SystemExit(f"{path} has no hook {hook!r}; it holds {hooks}")
    parts: list[torch.Tensor] = []
    # Shards in stream order: the last rows are the cache's tail, which saekit holds out.
    for entry in sorted(manifest["shards"], key=lambda e: e["index"]):
        with safe_open(str(path / entry["file"]), framework="pt") as f:
            parts.append(f.get_tensor(f"acts.{hook}").float())
    return torch.cat(parts)


def train_eval_split(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """Training rows and held-out rows: `--eval-acts` if given, else the tail of `--acts`."""
    acts_ND = load_acts(args.acts, args.hook)
    if args.eval_acts is not None:
        return acts_ND, load_acts(args.eval_acts, args.hook)
    holdout = min(args.holdout, acts_ND.shape[0] // 5)
    train_ND, eval_ND = acts_ND[:-holdout], acts_ND[-holdout:]
    if train_ND.shape[0] < args.batch:
        raise SystemExit(f"only {train_ND.shape[0]} training rows for batch {args.batch}; pass more activations")
    return train_ND, eval_ND


def batches(acts_ND: torch.Tensor, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless shuffled batches, a fresh permutation each epoch (like any SAE activation store)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(acts_ND.shape[0], generator=gen).to(acts_ND.device)
        for start in range(0, acts_ND.shape[0] - batch + 1, batch):
            yield acts_ND[perm[start : start + batch]]


@torch.no_grad()
def fvu(sae: torch.nn.Module, x_ND: torch.Tensor, batch: int = 4096) -> float:
    """Fraction of variance unexplained over all of x, accumulated in fp32 (float64 sums)."""
    sae.eval()
    mean_D = x_ND.double().mean(0)
    resid = total = 0.0
    for start in range(0, x_ND.shape[0], batch):
        x = x_ND[start : start + batch].float()
        x_hat = sae(x).float()
        resid += (x - x_hat).double().pow(2).sum().item()
        total += (x.double() - mean_D).pow(2).sum().item()
    return resid / total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--acts", type=Path, required=True, help=".safetensors [N, d_in] or a cache dir")
    p.add_argument(
        "--eval-acts", type=Path, default=None, help="held-out activations (else a tail of --acts)"
    )
    p.add_argument("--hook", default=None, help="cache dir with several hooks: which one")
    p.add_argument("--tokens", type=int, default=200_000, help="training tokens")
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--lr", type=float, default=3e-4, help="SAELens's runner default")
    p.add_argument(
        "--holdout", type=int, default=16_384, help="tail rows kept for FVU (no --eval-acts)"
    )
    p.add_argument(
        "--normalize",
        default="expected_average_only_in",
        choices=["none", "expected_average_only_in"],
    )
    p.add_argument(
        "--b-dec-init",
        default="zeros",
        choices=["zeros", "mean"],
        help="zeros: SAELens 6 (its default); mean: SAELens <= 5's b_dec_init_method='mean'",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import sae_lens
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train_ND, eval_ND = train_eval_split(args)
    d_in = int(train_ND.shape[1])

    sae_cfg = TopKTrainingSAEConfig(
        d_in=d_in,
        d_sae=args.d_sae,
        k=args.k,
        dtype="float32",
        device=args.device,
        normalize_activations=args.normalize,
    )
    sae = TopKTrainingSAE(sae_cfg)
    n_steps = max(1, args.tokens // args.batch)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=n_steps * args.batch,
        train_batch_size_samples=args.batch,
        lr=args.lr,
        lr_end=args.lr,
        device=args.device,
    )
    data = batches(train_ND.to(args.device), args.batch, args.seed)
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=data)
    if args.normalize == "expected_average_only_in":
        # Estimated outside the timed region (saekit's store also estimates its scale up front).
        trainer.activation_scaler.estimate_scaling_factor(
            d_in=d_in, data_provider=data, n_batches_for_norm_estimate=max(1, 32_768 // args.batch)
        )

    if args.b_dec_init == "mean":
        with torch.no_grad():
            sample = train_ND[:65_536].to(args.device)
            scale = trainer.activation_scaler.scaling_factor or 1.0
            sae.b_dec.copy_(sample.mean(0) * scale)

    start = time.perf_counter()
    trainer.fit()  # folds the scale into the weights: the SAE now takes raw activations
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start

    result = {
        "library": "sae_lens",
        "version": sae_lens.__version__,
        "tokens_per_s": round(n_steps * args.batch / elapsed, 1),
        "fvu": round(fvu(sae, eval_ND.to(args.device)), 5),
        "n_tokens": n_steps * args.batch,
        "n_eval_tokens": int(eval_ND.shape[0]),
        "d_sae": args.d_sae,
        "k": args.k,
        "batch": args.batch,
        "seconds": round(elapsed, 2),
        "torch": torch.__version__,
        "device": args.device,
        "normalize": args.normalize,
        "b_dec_init": args.b_dec_init,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
