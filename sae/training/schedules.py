"""Pure schedule functions of the step: learning rate, sparsity coefficient, dead-latent window.

They hold no state, so resuming a run needs nothing but the step number.
"""

from __future__ import annotations

import math


def lr_at(step: int, total_steps: int, base_lr: float, warmup_steps: int, decay_fraction: float) -> float:
    """Linear warmup from ~0 over `warmup_steps`, constant, then linear decay to 0 over the last
    `decay_fraction` of `total_steps`. `step` counts from 0."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warm = 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)
    decay_steps = int(round(decay_fraction * total_steps))
    decay_start = total_steps - decay_steps
    if decay_steps <= 0 or step < decay_start:
        decay = 1.0
    else:
        decay = max(0.0, (total_steps - step) / decay_steps)
    return base_lr * warm * decay


def coefficient_at(step: int, final: float, warmup_steps: int) -> float:
    """Sparsity coefficient: linear from final/warmup_steps to `final` over `warmup_steps`."""
    if warmup_steps <= 0:
        return final
    return final * min(1.0, (step + 1) / warmup_steps)


def total_steps(n_tokens: int, batch_size: int) -> int:
    """Optimizer steps needed to see `n_tokens` tokens in batches of `batch_size` (last one may be partial)."""
    return max(1, math.ceil(n_tokens / batch_size))


def dead_after_tokens(configured: int | None, n_tokens: int) -> int:
    """Tokens without firing after which a latent counts as dead (AuxK revives those).

    The literature's 10M tokens never triggers in a short run, so the default is
    min(10M, n_tokens / 10): a latent silent for a tenth of the run is dead.
    """
    if configured is not None:
        return max(1, int(configured))
    return max(1, min(10_000_000, n_tokens // 10))
