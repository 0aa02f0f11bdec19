"""One SAE under training: its optimizer, dead-latent and density counters, state and step report.

The trainer owns the loop and the processes; a slot owns what belongs to one SAE: building its
Adam optimizer, its part of a checkpoint (`state_dict` / `load_state_dict`), the firing counters
updated after each step, and the scalars and messages it reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sae.architectures.base import SparseAutoencoder, TrainOutput, build_sae, get_architecture
from sae.checkpoint import save_sae
from sae.config import SAEConfig, TrainConfig
from sae.training.init import init_b_dec
from sae.training.logger import density_log10
from sae.training.resume import ResumeError, latest_checkpoint
from sae.training.schedules import dead_after_tokens


@dataclass
class SAESlot:
    """One SAE being trained, with its optimizer and bookkeeping."""

    name: str
    sae: SparseAutoencoder
    optimizer: torch.optim.Optimizer
    stream: str  # key into the streams dict ("" = the single stream)
    out_dir: Path
    tokens_since_fired: Tensor
    dead_after: int
    hist_counts: Tensor
    lr: float  # peak learning rate: TrainConfig.lr, or the architecture's default
    hist_tokens: int = 0
    last: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(cls, name: str, scfg: SAEConfig, cfg: TrainConfig, device: torch.device, out_dir: Path) -> SAESlot:
        """A new SAE (initialised from torch's RNG) with a fresh Adam over the architecture's
        parameter groups and zeroed counters."""
        sae = build_sae(scfg).to(device)
        sae.train()
        groups = sae.param_groups(cfg)
        fused = device.type in ("cpu", "cuda")
        lr = cfg.lr if cfg.lr is not None else type(sae).default_lr
        opt = torch.optim.Adam(groups, lr=lr, betas=tuple(cfg.adam_betas), fused=fused)  # type: ignore[arg-type]
        return cls(
            name=name,
            sae=sae,
            optimizer=opt,
            stream="",  # fit() points it at its hook's stream when given several
            out_dir=out_dir,
            tokens_since_fired=torch.zeros(sae.d_sae, dtype=torch.long, device=device),
            dead_after=dead_after_tokens(sae.cfg.dead_after_tokens, cfg.n_tokens),
            hist_counts=torch.zeros(sae.d_sae, dtype=torch.long, device=device),
            lr=lr,
        )

    @torch.no_grad()
    def init_from_data(self, x: Tensor, b_dec_init: str, y: Tensor | None = None) -> None:
        """First batch of a fresh run: b_dec from the data (a transcoder's from its target y), then
        the architecture's own init."""
        if b_dec_init != "zeros":
            self.sae.b_dec.copy_(init_b_dec(x if y is None else y, b_dec_init).to(self.sae.b_dec.dtype))
        self.sae.init_from_data(x)

    def export(self, scale: float | None, target_scale: float | None, tokens: int, steps: int,
               inputs: dict[str, Any] | None = None) -> Path:
        """Save the SAE for inference (scales folded in: the input's, and a transcoder's target's)
        into its out_dir, with the run's counts and `inputs`, how its activations were made."""
        extra = {"train": {"tokens": tokens, "steps": steps, "name": self.name}}
        save_sae(self.sae, self.out_dir, normalization_scale=scale,
                 target_scale=target_scale if self.sae.is_transcoder else None, extra=extra, inputs=inputs)
        return self.out_dir

    # ------------------------------------------------------------------ checkpoint part

    def state_dict(self) -> dict[str, Any]:
        """Weights, Adam state and dead-latent counters (the density histogram restarts on resume)."""
        return {
            "sae": self.sae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "tokens_since_fired": self.tokens_since_fired,
        }

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        self.sae.load_state_dict({k: v.to(device) for k, v in state["sae"].items()})
        self.optimizer.load_state_dict(state["optimizer"])
        self.tokens_since_fired.copy_(state["tokens_since_fired"].to(device))

    # ------------------------------------------------------------------ counters and report

    def count_firing(self, counts: Tensor, n_tokens: int) -> None:
        """After a step: `counts` per latent over the global batch of `n_tokens` tokens."""
        self.tokens_since_fired += n_tokens
        self.tokens_since_fired[counts > 0] = 0
        self.hist_counts += counts
        self.hist_tokens += n_tokens

    def take_histogram(self) -> Tensor:
        """log10 firing frequency per latent since the last call; the counts start again."""
        hist = density_log10(self.hist_counts, self.hist_tokens)
        self.hist_counts.zero_()
        self.hist_tokens = 0
        return hist

    @torch.no_grad()
    def batch_stats(self, x: Tensor, out: TrainOutput, loss: Tensor, dead_mask: Tensor,
                    var_cache: dict[str, Tensor]) -> Tensor:
        """[err, var, l0, dead_frac, loss, *loss terms] on this rank's batch (sums and means, ready
        for one all-reduce); `var_cache` shares the batch variance among SAEs on one stream."""
        if self.stream not in var_cache:
            var_cache[self.stream] = (x - x.mean(0)).pow(2).sum()
        err = (x - out.sae_out.float()).pow(2).sum()
        return torch.stack([err, var_cache[self.stream], out.l0.float(), dead_mask.float().mean(), loss.detach().float(),
                            *[v.detach().float() for v in out.losses.values()]])

    def metrics(self, vals: list[float], loss_names: list[str], lr: float, coef: float | None,
                prefix: str) -> dict[str, float]:
        """Named scalars from `batch_stats` values (after the all-reduce); remembers the postfix's."""
        m = {
            f"{prefix}train/fvu": vals[0] / max(vals[1], 1e-12),
            f"{prefix}train/l0": vals[2],
            f"{prefix}train/dead_frac": vals[3],
            f"{prefix}train/loss": vals[4],
            f"{prefix}lr": lr,
        }
        for name, v in zip(loss_names, vals[5:], strict=True):
            m[f"{prefix}loss/{name}"] = v
        m[f"{prefix}train/mse"] = m[f"{prefix}loss/mse"]
        if coef is not None:
            m[f"{prefix}sparsity_coef"] = coef
        self.last = {"fvu": m[f"{prefix}train/fvu"], "l0": vals[2], "dead": vals[3]}
        return m

    def postfix(self) -> str:
        s = self.last
        return f"fvu={s['fvu']:.3f} L0={s['l0']:.1f} dead={100 * s['dead']:.1f}%" if s else ""


def stream_key(cfg: SAEConfig) -> str:
    """The activation stream an SAE trains on, as `Trainer.fit` and `sae.train` key them: its hook,
    or "<input hook>-><target hook>" for a transcoder (whose stream yields (input, target) pairs)."""
    return cfg.hook_name if cfg.hook_name_out is None else f"{cfg.hook_name}->{cfg.hook_name_out}"


def split_batch(batch: Any) -> tuple[Tensor, Tensor | None]:
    """(input, target) of a stream's batch: a tensor is an input alone; a pair (the store's
    `ActivationPair`, or any 2-tuple) is a transcoder's input and target."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, Tensor) for t in batch):
        if batch[0].shape[0] != batch[1].shape[0]:
            raise ValueError(f"an (input, target) batch needs as many target rows as input rows, got "
                             f"{batch[0].shape[0]} and {batch[1].shape[0]}")
        return batch[0], batch[1]
    raise TypeError(f"a training batch is a tensor [B, d_in] or an (input, target) pair of them, got {type(batch).__name__}")


def build_slots(cfg: TrainConfig, device: torch.device, out_dir: Path) -> list[SAESlot]:
    """One slot per SAE in `cfg.saes`, in order, named by `name` or the architecture's default
    (numbered where two coincide); with several SAEs each exports into `out_dir/<name>`."""
    base = [s.name or get_architecture(s.architecture).default_name(s) for s in cfg.saes]
    names = [f"{n}_{i}" if base.count(n) > 1 else n for i, n in enumerate(base)]
    return [SAESlot.build(name, scfg, cfg, device, out_dir / name if len(names) > 1 else out_dir)
            for name, scfg in zip(names, cfg.saes, strict=True)]


def diverged_message(slot: SAESlot, loss: float, x: Tensor, step: int, tokens: int, ckpt_root: Path) -> str:
    """What broke, what is safe on disk, and the fix: bad input data needs other advice than
    an optimisation that blew up."""
    kept = _checkpoint_note(ckpt_root)
    if not bool(torch.isfinite(x).all()):
        fix = (
            "The input batch itself holds NaN/inf activations, so the data is at fault, not the "
            "optimisation: rebuild them in float32 (`saekit cache --dtype float32 --set model.dtype=float32`)"
        )
    else:
        fix = (
            f"Fixes: lower lr (now {slot.lr:g}), keep grad_clip, check the activations for huge outliers "
            "(cache max_norm_ratio), or use fp32"
        )
    return (
        f"SAE {slot.name!r}: loss became {loss} at step {step} (tokens {tokens:,}); "
        f"the step was not applied and {kept}. {fix}."
    )


def _checkpoint_note(root: Path) -> str:
    try:
        ckpt = latest_checkpoint(root)
    except ResumeError:  # the divergence is the news here; a damaged pointer is reported on resume
        return f"nothing in {root} was changed"
    return f"the last checkpoint {ckpt} is intact" if ckpt is not None else "no checkpoint had been written yet"
