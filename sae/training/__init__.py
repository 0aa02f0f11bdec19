"""Training: the trainer loop, pure schedules, logging (progress bar, wandb, metrics.jsonl), DDP."""

from sae.training.schedules import coefficient_at, lr_at

__all__ = ["lr_at", "coefficient_at"]
