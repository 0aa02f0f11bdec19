"""The training loop: one activation stream (or one per hook), one or more SAEs, exact resume.

    trainer = Trainer(cfg)                       # builds the SAEs in cfg.saes
    paths = trainer.fit(batches)                 # any iterator of [B, d_in] tensors (transcoders:
                                                 # of (input [B, d_in], target [B, d_out]) pairs)
    paths = train(cfg)                           # builds the ActivationStore(s) from cfg

Per step and per SAE: lr and sparsity coefficient from `schedules` (pure functions of the step),
`training_forward` under optional bf16 autocast (fp32 master weights, no GradScaler), loss
check (a non-finite loss stops the run with `TrainingDivergedError` before the weights are
touched, the last checkpoint intact), backward, DDP gradient average, decoder-gradient
projection for unit-norm architectures, gradient clipping, fused Adam, decoder renormalisation,
dead-latent bookkeeping (tokens since each latent last fired).

On the first batch of a fresh run, b_dec is set from the data (mean or geometric median) and
each architecture may initialise from data (JumpReLU's thresholds). Checkpoints (every
`checkpoint_every_tokens` and at the end) hold everything needed to continue bit-exactly:
weights, Adam state, counters, the store's position, RNG states. The trainer gathers and checks
them (`state_dict` / `load_state_dict`, each SAE's part from its `SAESlot`); `resume.py` is only
the file format.

Outputs: `<out_dir>/` (one SAE) or `<out_dir>/<name>/` (several), each `sae_weights.safetensors`
+ `cfg.json`; `<out_dir>/train_config.json`, `metrics.jsonl`, `checkpoints/`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sae import distributed as ddp
from sae.architectures.base import SparseAutoencoder, TrainOutput
from sae.config import ConfigError, TrainConfig, save_config, to_dict
from sae.training.logger import RunLogger
from sae.training.resume import (
    latest_checkpoint,
    read_checkpoint,
    rng_state,
    set_aside,
    set_rng_state,
    write_checkpoint,
)
from sae.training.sae_slot import SAESlot, build_slots, diverged_message, split_batch, stream_key
from sae.training.schedules import coefficient_at, lr_at, total_steps

log = logging.getLogger(__name__)

# Config keys that may change between a run and its resumption.
_RESUMABLE_KEYS = {
    "n_tokens", "log_every_steps", "checkpoint_every_tokens", "progress", "wandb_project",
    "wandb_mode", "run_name", "resume", "device", "out_dir", "cache_dir",
}


class TrainingDivergedError(RuntimeError):
    """A loss became NaN/inf; the run stopped before applying that step."""


class Trainer:
    """Trains every SAE in `cfg.saes` on a shared activation stream (or one stream per hook)."""

    def __init__(self, cfg: TrainConfig, *, normalization_scale: float | dict[str, float] | None = None) -> None:
        if not cfg.saes:
            raise ConfigError("TrainConfig.saes is empty; give at least one SAEConfig")
        if cfg.autocast_dtype not in (None, "bfloat16", "bf16"):
            raise ConfigError(
                f"autocast_dtype={cfg.autocast_dtype!r}: use null (fp32) or bfloat16; float16 would need "
                "a GradScaler, which silently skips steps"
            )
        from sae.devices import pick_device

        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.dist = ddp.init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.out_dir = Path(cfg.out_dir)
        self.scales = normalization_scale
        self.step_idx = 0
        self.tokens_seen = 0
        self.total_steps = 0
        self.batch_size: int | None = None
        self._saved_step: int | None = None  # the step whose state is on disk
        torch.manual_seed(cfg.seed)
        self.slots = build_slots(cfg, self.device, self.out_dir)
        self._autocast = cfg.autocast_dtype is not None

    @property
    def saes(self) -> list[SparseAutoencoder]:
        return [s.sae for s in self.slots]

    # ------------------------------------------------------------------ one step

    def step(self, batches: Any) -> dict[str, float]:
        """One optimizer step for every SAE on a global batch (a tensor, an (input, target) pair for
        transcoders, or {stream: either}). Returns scalar metrics."""
        metrics: dict[str, float] = {}
        n_global = 0
        var_cache: dict[str, Tensor] = {}
        local: dict[str, tuple[Tensor, Tensor | None]] = {}
        for slot in self.slots:
            if slot.stream not in local:
                x_global, y_global = split_batch(batches[slot.stream] if isinstance(batches, Mapping) else batches)
                n_global = x_global.shape[0]
                local[slot.stream] = self._local(x_global), None if y_global is None else self._local(y_global)
            metrics.update(self._step_slot(slot, *local[slot.stream], var_cache))
        self.step_idx += 1
        self.tokens_seen += n_global
        return metrics

    def _local(self, t_global: Tensor) -> Tensor:
        return self.dist.slice_rows(t_global).to(self.device, torch.float32, non_blocking=True)

    def _step_slot(self, slot: SAESlot, x: Tensor, y: Tensor | None, var_cache: dict[str, Tensor]) -> dict[str, float]:
        """One step of one SAE on x (and a transcoder's target y; None for an autoencoder)."""
        if slot.sae.is_transcoder and y is None:
            raise ConfigError(f"SAE {slot.name!r} is a transcoder ({slot.sae.cfg.hook_name} -> "
                              f"{slot.sae.cfg.hook_name_out}) but its stream gives no target; feed it (input, "
                              "target) pairs (`ActivationStore.from_cache(..., target_hook=...)`)")
        target = y if slot.sae.is_transcoder else None
        sae, cfg = slot.sae, self.cfg
        lr = lr_at(self.step_idx, self.total_steps or 1, slot.lr, cfg.lr_warmup_steps, cfg.lr_decay_fraction)
        for g in slot.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        coefs = sae.coefficients()
        sparsity = sae.sparsity_loss
        if sparsity is not None:
            coefs[sparsity] = coefficient_at(self.step_idx, coefs[sparsity], cfg.sparsity_warmup_steps)
        dead_mask = slot.tokens_since_fired >= slot.dead_after
        ctx = (
            torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
            if self._autocast
            else contextlib.nullcontext()
        )
        with ctx:
            out = sae.forward_for_training(x, target, dead_mask, sparse=cfg.sparse_decoder)
        loss = sae.loss(out, coefs)  # the one weighted sum (SparseAutoencoder.loss)
        bad = not bool(torch.isfinite(loss.detach()))
        if ddp.any_rank(bad, self.dist):
            data = x if target is None else torch.cat([x, target], dim=1)
            raise TrainingDivergedError(diverged_message(
                slot, float(loss.detach()), data, self.step_idx, self.tokens_seen, self.out_dir / "checkpoints"))
        slot.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in sae.parameters() if p.grad is not None]
        ddp.all_reduce_mean_([p.grad for p in params], self.dist)  # type: ignore[misc]
        if sae.unit_norm_decoder:
            sae.remove_parallel_decoder_grad()
        if cfg.grad_clip and cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        slot.optimizer.step()
        if sae.unit_norm_decoder:
            sae.normalize_decoder()
        sae.after_step(out)
        if self.dist.enabled:
            ddp.all_reduce_mean_([b for b in sae.buffers() if b.is_floating_point()], self.dist)
        counts = ddp.all_reduce_sum_(out.fire_counts.detach().clone(), self.dist)
        slot.count_firing(counts, x.shape[0] * self.dist.world_size)
        y_true = x if target is None else target  # FVU is measured against what the SAE reconstructs
        return self._metrics(slot, y_true, out, loss, lr, coefs.get(sparsity, 0.0) if sparsity else None, dead_mask,
                             var_cache)

    @torch.no_grad()
    def _metrics(self, slot: SAESlot, x: Tensor, out: TrainOutput, loss: Tensor, lr: float, coef: float | None,
                 dead_mask: Tensor, var_cache: dict[str, Tensor]) -> dict[str, float]:
        if (self.step_idx + 1) % max(1, self.cfg.log_every_steps) != 0 and self.step_idx + 1 < self.total_steps:
            return {}
        stats = slot.batch_stats(x, out, loss, dead_mask, var_cache)
        if self.dist.enabled:
            ddp.all_reduce_mean_([stats], self.dist)
        prefix = f"{slot.name}/" if len(self.slots) > 1 else ""
        return slot.metrics(stats.tolist(), list(out.losses), lr, coef, prefix)

    # ------------------------------------------------------------------ the loop

    def fit(
        self,
        batches: Iterable[Tensor] | Mapping[str, Iterable[Tensor]],
        n_tokens: int | None = None,
    ) -> list[Path]:
        """Train on `batches` (one iterable, or {hook_name: iterable}) for n_tokens (default cfg.n_tokens)."""
        n_tokens = n_tokens or self.cfg.n_tokens
        streams = self._bind_streams(batches)
        ckpt_root = self.out_dir / "checkpoints"
        resumed = self._resume(ckpt_root, streams)
        if self.batch_size:
            self.total_steps = total_steps(n_tokens, self.batch_size)
        if resumed and self.tokens_seen >= n_tokens:
            log.info("run in %s already trained on %d tokens; exporting", self.out_dir, self.tokens_seen)
            return self._export(streams)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.out_dir / "train_config.json")
        # With resume on, rows past the step we continue from belong to a run that died after
        # logging them; they would be logged again.
        logger = RunLogger(self.cfg, self.out_dir, total_tokens=n_tokens, initial_tokens=self.tokens_seen,
                           enabled=self.dist.is_main, keep_through_step=self.step_idx if self.cfg.resume else None)
        try:
            self._loop(streams, n_tokens, logger)
            self._checkpoint(streams, n_tokens)
            logger.log({}, self.step_idx, self._histograms())
        finally:
            logger.close()
        return self._export(streams)

    def _bind_streams(self, batches: Iterable[Tensor] | Mapping[str, Iterable[Tensor]]) -> dict[str, Any]:
        """{stream key: stream}, each slot pointed at its SAE's (`sae_slot.stream_key`: the hook, or
        "input->target" for a transcoder); {"": stream} for a single stream."""
        if not isinstance(batches, Mapping):
            return {"": batches}
        streams = dict(batches)
        for slot in self.slots:
            slot.stream = stream_key(slot.sae.cfg)
            if slot.stream not in streams:
                raise ConfigError(f"SAE {slot.name!r} wants stream {slot.stream!r}; streams given: {sorted(streams)}")
        return streams

    def _loop(self, streams: Mapping[str, Iterable[Tensor]], n_tokens: int, logger: RunLogger) -> None:
        """Step until n_tokens are seen or a stream ends, logging and checkpointing on the way."""
        iters: dict[str, Iterator[Tensor]] = {k: iter(v) for k, v in streams.items()}
        every = self.cfg.checkpoint_every_tokens
        next_ckpt = (self.tokens_seen // every + 1) * every
        while self.tokens_seen < n_tokens:
            try:
                batch = {k: next(it) for k, it in iters.items()}
            except StopIteration:
                log.warning("activation stream ended after %d tokens (wanted %d)", self.tokens_seen, n_tokens)
                break
            if self.batch_size is None:
                self.batch_size = split_batch(next(iter(batch.values())))[0].shape[0]
                self.total_steps = total_steps(n_tokens, self.batch_size)
            if self.step_idx == 0:
                self._init_from_data(batch)
            metrics = self.step(batch)  # a single stream's slots read key ""
            logger.advance(self.batch_size)
            if metrics:
                logger.log_step(metrics, self.step_idx, self.tokens_seen, self._histograms)
                logger.postfix(self._postfix())
            if self.tokens_seen >= next_ckpt:
                self._checkpoint(streams, n_tokens)
                next_ckpt += every

    def _postfix(self) -> str:
        return " | ".join(text for text in (slot.postfix() for slot in self.slots[:3]) if text)

    def _histograms(self) -> dict[str, Tensor]:
        multi = len(self.slots) > 1
        return {f"{slot.name}/density_histogram" if multi else "density_histogram": slot.take_histogram()
                for slot in self.slots}

    @torch.no_grad()
    def _init_from_data(self, batch: dict[str, Any]) -> None:
        for slot in self.slots:
            x, y = (None if t is None else t.to(self.device, torch.float32) for t in split_batch(batch[slot.stream]))
            slot.init_from_data(x, self.cfg.b_dec_init, y if slot.sae.is_transcoder else None)

    # ------------------------------------------------------------------ own state

    def state_dict(self, streams: Mapping[str, Any], n_tokens: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(meta, state) of a checkpoint (`resume.write_checkpoint` stores them): JSON facts about
        the run, and every SAE's weights, Adam state and counters, each stream's position, RNG."""
        state: dict[str, Any] = {
            "rng": rng_state(),
            "slots": {slot.name: slot.state_dict() for slot in self.slots},
            "stores": {key: s.state_dict() for key, s in streams.items() if hasattr(s, "state_dict")},
        }
        meta = {
            "step": self.step_idx, "tokens_seen": self.tokens_seen, "n_tokens": n_tokens,
            "batch_size": self.batch_size, "total_steps": self.total_steps,
            "world_size": self.dist.world_size, "config": to_dict(self.cfg),
            "slots": [slot.name for slot in self.slots],
        }
        return meta, state

    def load_state_dict(self, meta: Mapping[str, Any], state: Mapping[str, Any], streams: Mapping[str, Any]) -> None:
        """Continue from a checkpoint's (meta, state), streams included; ConfigError when it was
        written under another config."""
        self._check_fits(meta)
        for slot in self.slots:
            slot.load_state_dict(state["slots"][slot.name], self.device)
        for key, stream in streams.items():
            if key in state["stores"]:
                if not hasattr(stream, "load_state_dict"):
                    raise ConfigError("the checkpoint has a store position but this stream cannot restore one")
                stream.load_state_dict(state["stores"][key])
            else:
                log.warning("resuming without a stream position (the iterator has no state_dict); data may repeat")
        set_rng_state(state["rng"])
        self.step_idx, self.tokens_seen = int(meta["step"]), int(meta["tokens_seen"])
        self.batch_size, self.total_steps = meta["batch_size"], int(meta["total_steps"])

    def _check_fits(self, meta: Mapping[str, Any]) -> None:
        saved = meta.get("config", {})
        now = to_dict(self.cfg)
        diff = sorted(k for k in set(saved) | set(now) if k not in _RESUMABLE_KEYS and saved.get(k) != now.get(k))
        if diff:
            details = "; ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}" for k in diff[:5])
            raise ConfigError(
                f"{self.out_dir}/checkpoints was written by a run with a different config ({details}). "
                "Use a new out_dir, or set resume=false to start over (the old checkpoints are moved aside)."
            )
        if meta.get("world_size", 1) != self.dist.world_size:
            log.warning("resuming with %d processes (checkpoint had %s)", self.dist.world_size, meta.get("world_size"))
        if meta.get("n_tokens") != self.cfg.n_tokens:
            log.warning("n_tokens changed (%s -> %s): the lr schedule is rescaled from here",
                        meta.get("n_tokens"), self.cfg.n_tokens)

    def _checkpoint(self, streams: Mapping[str, Any], n_tokens: int) -> None:
        # A run often ends on a checkpoint step; rewriting that folder in place would open a
        # window in which latest.json names a folder that is being swapped.
        if self._saved_step == self.step_idx:
            return
        if self.dist.is_main:
            write_checkpoint(self.out_dir / "checkpoints", self.step_idx, *self.state_dict(streams, n_tokens))
        ddp.barrier(self.dist)
        self._saved_step = self.step_idx

    def _resume(self, root: Path, streams: Mapping[str, Any]) -> bool:
        """Continue from `root`'s latest checkpoint if there is one (and resume is on); True if resumed."""
        if not root.exists():
            return False
        if not self.cfg.resume:
            if self.dist.is_main:
                set_aside(root)
            ddp.barrier(self.dist)
            return False
        path = latest_checkpoint(root)
        if path is None:
            return False
        self.load_state_dict(*read_checkpoint(path), streams)
        self._saved_step = self.step_idx
        log.info("resumed from %s at step %d (%d tokens)", path, self.step_idx, self.tokens_seen)
        return True

    # ------------------------------------------------------------------ outputs

    def _scale_for(self, stream: str, streams: Mapping[str, Any]) -> tuple[float | None, float | None]:
        """(input scale, target scale) the stream applied, to fold into the saved weights: given to
        the Trainer (a number, or {stream: number or (input, target)}), else the store's own."""
        given = self.scales.get(stream) if isinstance(self.scales, Mapping) else self.scales
        if given is not None:
            return (float(given), float(given)) if isinstance(given, (int, float)) else tuple(given)  # type: ignore[return-value]
        source = streams.get(stream)
        if getattr(getattr(source, "cfg", None), "normalize", True) is False:
            return None, None  # the store reports a scale but did not apply it: nothing to fold
        scale = getattr(source, "normalization_scale", None)
        return scale, getattr(source, "target_scale", None) or scale

    def _export(self, streams: Mapping[str, Any]) -> list[Path]:
        if self.dist.is_main:
            for slot in self.slots:
                inputs = getattr(streams.get(slot.stream), "provenance", None)
                slot.export(*self._scale_for(slot.stream, streams), self.tokens_seen, self.step_idx, inputs)
        ddp.barrier(self.dist)
        return [slot.out_dir for slot in self.slots]
