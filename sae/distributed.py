"""Running under `torchrun`, for caching and training: NCCL on GPUs, gloo on CPUs.

`init_distributed` joins the process group torchrun describes (or returns a single-process
`DistInfo`); `release` leaves it again when this process created it.

Caching: rank ``r`` computes shards ``r, r + world, ...`` and rank 0 writes the manifest after a
`barrier` (see `sae.activation_cache`).

Training: every rank reads the same global batch from the activation stream and trains on its own
contiguous slice of it; gradients are averaged with one all-reduce per SAE before clipping and
the optimizer step, so every rank applies the same update and the weights stay identical
(bit-for-bit up to the all-reduce's summation order). Because the loss is a mean over tokens,
averaging the slices' gradients equals the gradient on the whole batch: N processes reach the
weights one process reaches on the same global batches (the 2-process test checks this).

Exceptions: a loss that is not a mean over tokens (JumpReLU's `target_l0` form) and
BatchTopK's batch-level selection are computed per slice, so they match only approximately.

Reading the full global batch on every rank costs I/O but keeps the data order exactly the
single-process one and needs nothing from the store but the batches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created: bool = field(default=False, compare=False)  # this process started the group

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def slice_rows(self, x_BD: Tensor) -> Tensor:
        """This rank's contiguous share of a global batch (the batch must divide evenly)."""
        if not self.enabled:
            return x_BD
        B = x_BD.shape[0]
        if B % self.world_size:
            raise ValueError(
                f"batch of {B} tokens does not split evenly over {self.world_size} processes; "
                f"use a store batch_size that is a multiple of {self.world_size}"
            )
        n = B // self.world_size
        return x_BD[self.rank * n : (self.rank + 1) * n]


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun set up (WORLD_SIZE > 1), or return a single-process info."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    created = not dist.is_initialized()
    if created:
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    return DistInfo(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, created=created
    )


def release(info: DistInfo) -> None:
    """Leave the process group if `init_distributed` created it (a caller's group stays)."""
    if info.enabled and info.created and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean_(tensors: list[Tensor], info: DistInfo) -> None:
    """Average tensors across ranks in place, with one collective (flattened)."""
    if not info.enabled or not tensors:
        return
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t).to(t.dtype))
        offset += n


def all_reduce_sum_(t: Tensor, info: DistInfo) -> Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True if `flag` is true on any rank (so all ranks stop together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
