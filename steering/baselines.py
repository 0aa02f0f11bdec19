"""The supervised baseline: a contrastive steering vector (difference of means, as in CAA).

Rimsky et al. (2024) take the residual activation at the answer token of contrastive A/B
pairs; here the same idea works on any two prompt sets: the mean activation over the chosen
region of each positive prompt, averaged, minus the same for the negatives. The result is a
`VectorSteering` that goes through exactly the same hooks, positions and generation code as
SAE clamping, so every experiment can put the two side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from steering.capture import prompt_set_activations
from steering.interventions import VectorSteering
from steering.rendering import Prompt

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@torch.no_grad()
def caa_vector(
    model: TransformerBridge,
    hook: str,
    positive: Sequence[Prompt],
    negative: Sequence[Prompt],
    *,
    chat: bool = False,
    region: str = "all",
    scale: float = 1.0,
    positions: str = "all",
    batch_size: int = 8,
    label: str | None = None,
) -> VectorSteering:
    """mean(positive activations) - mean(negative activations) at `hook`, as a steering vector.

    region: "all" tokens, "after_last_user" (the assistant's reply in chat prompts, CAA's
    usual choice for behaviours), or "last" (the last token, CAA's A/B answer position).
    Special tokens and massive-activation outliers are left out. `scale` 1 adds the raw
    difference; sweep it like a clamp strength (`vec.with_scale(s)`).
    """
    import sae as saelib

    saelib.validate_hook(model, hook)
    pos = prompt_set_activations(model, positive, hook, chat=chat, region=region, batch_size=batch_size)
    neg = prompt_set_activations(model, negative, hook, chat=chat, region=region, batch_size=batch_size)
    mean_pos = torch.stack([p.acts.mean(0) for p in pos]).mean(0)
    mean_neg = torch.stack([n.acts.mean(0) for n in neg]).mean(0)
    return VectorSteering(mean_pos - mean_neg, hook, scale, positions, label or f"caa@{hook}")
