"""Top-k selection on CPU: why a TopK step cannot reach 80% of its encoder-matmul bound here.

    python scripts/bench_topk.py            # B 4,096 x d_sae 4,608, k 32 (bench_train's step)
    python scripts/bench_topk.py --rounds 9

Every exact way to pick each row's k largest pre-activations that PyTorch offers, timed alternately
(this VM's speed drifts within the hour, so only side-by-side numbers compare) beside the encoder
matmul that produces them, on Gaussian pre-activations of the step's shape:

- `topk` (ATen's partial sort; what `sae.architectures.sparse_ops.select_topk` uses), sorted or not;
- the matmul and top-k in row chunks, each chunk selected while it is still in cache;
- a threshold prefilter: the smallest of k block maxima bounds each row's k-th value from below,
  so only the values above it compete (exact; the compaction is the cost);
- `kthvalue` (quickselect), then a mask; `topk` with a larger k (ATen switches to nth_element).

Each candidate's selections are checked equal to `topk`'s as sets before it is timed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from _timing import timed_in_turn

B, D_IN, D_SAE, K = 4096, 576, 4608, 32


def prefilter_topk(pre_BF: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k: values at least the smallest of k block maxima, then top-k among those."""
    n_rows, n_cols = pre_BF.shape
    floor_B1 = pre_BF.view(n_rows, k, n_cols // k).amax(dim=2).amin(dim=1, keepdim=True)
    mask = pre_BF >= floor_B1
    counts = mask.sum(1)
    flat = mask.view(-1).nonzero().squeeze(1)
    rows = flat // n_cols
    starts = torch.zeros(n_rows + 1, dtype=torch.long)
    starts[1:] = counts.cumsum(0)
    slot = torch.arange(flat.numel()) - starts[rows]
    width = int(counts.max())
    cand_vals = torch.full((n_rows, width), float("-inf"))
    cand_idx = torch.zeros((n_rows, width), dtype=torch.long)
    cand_vals[rows, slot] = pre_BF.view(-1)[flat]
    cand_idx[rows, slot] = flat - rows * n_cols
    vals, pos = cand_vals.topk(k, dim=1, sorted=False)
    return vals, cand_idx.gather(1, pos)


def kth_mask_topk(pre_BF: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    kth_B1 = pre_BF.kthvalue(pre_BF.shape[1] - k + 1, dim=1, keepdim=True).values
    idx = (pre_BF >= kth_B1).nonzero()[:, 1].view(-1, k)  # Gaussian values: no ties
    return pre_BF.gather(1, idx), idx


def wide_then_narrow(pre_BF: torch.Tensor, k: int, wide: int = 73) -> tuple[torch.Tensor, torch.Tensor]:
    vals, idx = pre_BF.topk(wide, dim=1, sorted=False)
    v, pos = vals.topk(k, dim=1, sorted=False)
    return v, idx.gather(1, pos)


def chunked(x_BD: torch.Tensor, W_DF: torch.Tensor, b_F: torch.Tensor, out_BF: torch.Tensor, rows: int) -> Callable[[], None]:
    def run() -> None:
        for start in range(0, x_BD.shape[0], rows):
            chunk = torch.addmm(b_F, x_BD[start : start + rows], W_DF, out=out_BF[: min(rows, x_BD.shape[0] - start)])
            chunk.topk(K, dim=1, sorted=False)
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    torch.manual_seed(0)
    x_BD, W_DF = torch.randn(B, D_IN), torch.randn(D_IN, D_SAE) / D_IN**0.5
    b_F = torch.randn(D_SAE) * 0.1
    out_BF = torch.empty(B, D_SAE)
    pre_BF = torch.addmm(b_F, x_BD, W_DF)
    reference = pre_BF.topk(K, dim=1, sorted=False).indices.sort(1).values
    selections = {
        "topk (sorted=False)": lambda: pre_BF.topk(K, dim=1, sorted=False),
        "topk (sorted=True)": lambda: pre_BF.topk(K, dim=1),
        "threshold prefilter + topk": lambda: prefilter_topk(pre_BF, K),
        "kthvalue + mask": lambda: kth_mask_topk(pre_BF, K),
        "topk 73 (nth_element) + topk 32": lambda: wide_then_narrow(pre_BF, K),
    }
    for name, fn in selections.items():
        got = fn()[1].sort(1).values
        if not torch.equal(got, reference):
            raise SystemExit(f"{name} selects other latents than topk: a bug in this benchmark")
    cases: dict[str, Callable[[], object]] = {"encoder matmul": lambda: torch.addmm(b_F, x_BD, W_DF, out=out_BF)}
    cases.update(selections)
    for rows in (512, 1024, B):
        cases[f"matmul + topk in chunks of {rows} rows"] = chunked(x_BD, W_DF, b_F, out_BF, rows)
    times = timed_in_turn(cases, args.rounds)
    matmul = sorted(times["encoder matmul"])[len(times["encoder matmul"]) // 2]
    print(f"B {B} x d_sae {D_SAE}, k {K}, d_in {D_IN}, {torch.get_num_threads()} threads, median of {args.rounds} "
          "alternating rounds\n")
    print("| method | ms (median) | x the encoder matmul |\n|---|---|---|")
    for name, ts in times.items():
        med = sorted(ts)[len(ts) // 2]
        print(f"| {name} | {1e3 * med:.1f} | {med / matmul:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
