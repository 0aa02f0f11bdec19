"""The training-step timing of `scripts/bench_train.py` (its section 1): each step case timed
alternately with the encoder's forward matmul as the step runs it, the matmul + top-k floor, and
torch.profiler's table of the fp32 sparse step. The step's shape is fixed here: TopK d_sae 4,608
(8 x 576), k 32, batch 4,096, on layer-15 activations of the embedded model.
"""

from __future__ import annotations

import torch
from _timing import timed_in_turn

from sae.config import SAEConfig, TrainConfig

D_IN, D_SAE, K, BATCH = 576, 4608, 32, 4096


def _timed_beside(fn, reference, repeat: int) -> tuple[float, float]:
    """Best times of `fn` and `reference`, run in turn (only a ratio measured side by side is reliable here)."""
    times = timed_in_turn({"fn": fn, "reference": reference}, repeat)
    return min(times["fn"]), min(times["reference"])


def _encoder_fns(x: torch.Tensor) -> tuple:
    """The encoder's forward matmul as the sparse step runs it (into a reused buffer), and that
    matmul followed by the top-k selection: the part of any exact TopK step that cannot be skipped."""
    sae = _step_trainer(x).saes[0]
    out = torch.empty(BATCH, D_SAE)

    @torch.no_grad()
    def encoder() -> torch.Tensor:
        return torch.addmm(sae.b_enc, x - sae.b_dec, sae.W_enc, out=out)

    @torch.no_grad()
    def encoder_topk() -> None:
        encoder().topk(K, dim=1, sorted=False)

    return encoder, encoder_topk


def _step_batch(acts_BD: torch.Tensor) -> torch.Tensor:
    """One batch as the store serves it (normalised to mean norm sqrt(d_in))."""
    return acts_BD[:BATCH] * (D_IN**0.5 / acts_BD[:BATCH].norm(dim=1).mean())


def _step_trainer(x: torch.Tensor, sparse: bool = True, autocast: str | None = None):
    """A trainer of the benchmark's TopK SAE, b_dec initialised on `x`, ready to time `step(x)`."""
    from sae.training.init import init_b_dec
    from sae.training.trainer import Trainer

    trainer = Trainer(TrainConfig(out_dir="/tmp/saekit-bench-unused", saes=[SAEConfig(d_in=D_IN, d_sae=D_SAE, k=K)],
                                  sparse_decoder=sparse, autocast_dtype=autocast, progress=False, log_every_steps=10**9))
    trainer.total_steps, trainer.batch_size = 10**6, BATCH
    with torch.no_grad():
        trainer.slots[0].sae.b_dec.copy_(init_b_dec(x, "mean"))
    return trainer


def throughput(acts_BD: torch.Tensor, steps: int, machine_fp32: float, machine_bf16: float) -> list[dict]:
    """Each case's step time beside the encoder matmul's (both best of `steps`, alternating)."""
    x = _step_batch(acts_BD)
    encoder, encoder_topk = _encoder_fns(x)
    rows = []
    cases = [("fp32", False, False), ("fp32", True, False), ("fp32", True, True), ("bf16", False, False), ("bf16", True, False)]
    for precision, sparse, aux in cases:
        label = f"{precision:5s} {'sparse' if sparse else 'dense ':6s}{' +AuxK(10% dead)' if aux else ''}"
        if precision == "bf16" and machine_bf16 < machine_fp32 / 4:
            rows.append({"case": label, "skipped": f"no bf16 matmul units: bf16 {machine_bf16:.1f} vs fp32 {machine_fp32:.0f} GFLOP/s"})
            continue
        trainer = _step_trainer(x, sparse, "bfloat16" if precision == "bf16" else None)
        if aux:
            trainer.slots[0].tokens_since_fired[: D_SAE // 10] = 10**12
        step_s, enc_s = _timed_beside(lambda t=trainer: t.step(x), encoder, steps)
        rows.append({"case": label, "ms_per_step": 1e3 * step_s, "tokens_per_s": BATCH / step_s, "encoder_ms": 1e3 * enc_s})
    floor_s, enc_s = _timed_beside(encoder_topk, encoder, steps)
    rows.append({"case": "floor: encoder + top-k only", "ms_per_step": 1e3 * floor_s, "tokens_per_s": BATCH / floor_s,
                 "encoder_ms": 1e3 * enc_s})
    return rows


def print_throughput(rows: list[dict], machine_fp32: float, machine_bf16: float) -> None:
    flop = 2 * BATCH * D_IN * D_SAE
    enc_ms = min(r["encoder_ms"] for r in rows if "encoder_ms" in r)
    print(f"\n## 1. Training-step throughput: TopK d_sae={D_SAE}, k={K}, batch {BATCH}, layer 15 ({torch.get_num_threads()} threads)")
    print(f"machine fp32 matmul: {machine_fp32:.1f} GFLOP/s; bf16: {machine_bf16:.1f} GFLOP/s")
    print(f"encoder matmul (x @ W_enc into a reused buffer, {flop / 1e9:.1f} GFLOP): best {flop / enc_ms / 1e6:.1f} GFLOP/s "
          f"= {100 * flop / enc_ms / 1e6 / machine_fp32:.0f}% of the square matmul's rate")
    print("% of bound: the encoder matmul's time over the step's, the two timed alternately (the bound is the "
          "encoder's forward at the rate it ran beside the step; the last row is the most any exact TopK step can reach)\n")
    print(f"| {'case':30s} | {'ms/step':>8s} | {'tokens/s':>9s} | {'encoder ms':>10s} | {'% of bound':>10s} |")
    print(f"|{'-' * 32}|{'-' * 10}|{'-' * 11}|{'-' * 12}|{'-' * 12}|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['case']:30s} | {'-':>8s} | {'-':>9s} | {'-':>10s} | {'-':>10s} |  skipped: {r['skipped']}")
        else:
            print(f"| {r['case']:30s} | {r['ms_per_step']:8.0f} | {r['tokens_per_s']:9,.0f} | {r['encoder_ms']:10.0f} | "
                  f"{100 * r['encoder_ms'] / r['ms_per_step']:9.0f}% |")


def profile_step(acts_BD: torch.Tensor, steps: int) -> None:
    """torch.profiler's operators by self time over `steps` fp32 sparse steps (after 3 warm-up steps)."""
    from torch.profiler import ProfilerActivity, profile

    x = _step_batch(acts_BD)
    trainer = _step_trainer(x)
    for _ in range(3):
        trainer.step(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            trainer.step(x)
    print(f"\n## torch.profiler: {steps} fp32 sparse steps, operators by self time")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
