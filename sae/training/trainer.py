"""The training loop: one activation stream (or one per hook), one or more SAEs, exact resume.

    trainer = Trainer(cfg)                       # builds the SAEs in cfg.saes
    paths = trainer.fit(batches)                 # any iterator of [B, d_in] tensors
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
weights, Adam state, counters, the store's position, RNG states (see `resume.py`).

Outputs: `<out_dir>/` (one SAE) or `<out_dir>/<name>/` (several), each `sae_weights.safetensors`
+ `cfg.json`; `<out_dir>/train_config.json`, `metrics.jsonl`, `checkpoints/`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sae.architectures.base import SparseAutoencoder, build_sae, get_architecture
from sae.checkpoint import save_sae
from sae.config import ConfigError, TrainConfig, save_config
from sae import distributed as ddp
from sae.training.init import init_b_dec
from sae.training.logger import RunLogger, density_log10
from sae.training.resume import (
    ResumeError,
    latest_checkpoint,
    restore_trainer_state,
    save_trainer_state,
)
from sae.training.schedules import coefficient_at, dead_after_tokens, lr_at, total_steps

log = logging.getLogger(__name__)

_HIST_EVERY_LOGS = 10  # density histogram every 10th log step


class TrainingDivergedError(RuntimeError):
    """A loss became NaN/inf; the run stopped before applying that step."""


@dataclass
class _Slot:
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


def _default_name(cfg) -> str:
    return cfg.name or get_architecture(cfg.architecture).default_name(cfg)


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
        base = [_default_name(s) for s in cfg.saes]
        names = [f"{n}_{i}" if base.count(n) > 1 else n for i, n in enumerate(base)]
        self.slots: list[_Slot] = []
        for name, scfg in zip(names, cfg.saes, strict=True):
            sae = build_sae(scfg).to(self.device)
            sae.train()
            self.slots.append(self._make_slot(name, sae))
        self._autocast = cfg.autocast_dtype is not None

    def _make_slot(self, name: str, sae: SparseAutoencoder) -> _Slot:
        cfg = self.cfg
        groups = sae.param_groups(cfg)
        fused = self.device.type in ("cpu", "cuda")
        lr = cfg.lr if cfg.lr is not None else type(sae).default_lr
        opt = torch.optim.Adam(groups, lr=lr, betas=tuple(cfg.adam_betas), fused=fused)  # type: ignore[arg-type]
        multi = len(self.cfg.saes) > 1
        return _Slot(
            name=name,
            sae=sae,
            optimizer=opt,
            stream="",  # fit() points it at its hook's stream when given several
            out_dir=self.out_dir / name if multi else self.out_dir,
            tokens_since_fired=torch.zeros(sae.d_sae, dtype=torch.long, device=self.device),
            dead_after=dead_after_tokens(sae.cfg.dead_after_tokens, cfg.n_tokens),
            hist_counts=torch.zeros(sae.d_sae, dtype=torch.long, device=self.device),
            lr=lr,
        )

    @property
    def saes(self) -> list[SparseAutoencoder]:
        return [s.sae for s in self.slots]

    # ------------------------------------------------------------------ one step

    def step(self, batches: Tensor | Mapping[str, Tensor]) -> dict[str, float]:
        """One optimizer step for every SAE on a global batch. Returns scalar metrics."""
        metrics: dict[str, float] = {}
        n_global = 0
        var_cache: dict[str, Tensor] = {}
        local: dict[str, Tensor] = {}
        for slot in self.slots:
            if slot.stream not in local:
                x_global = batches[slot.stream] if isinstance(batches, Mapping) else batches
                n_global = x_global.shape[0]
                local[slot.stream] = self.dist.slice_rows(x_global).to(self.device, torch.float32, non_blocking=True)
            metrics.update(self._step_slot(slot, local[slot.stream], var_cache))
        self.step_idx += 1
        self.tokens_seen += n_global
        return metrics

    def _step_slot(self, slot: _Slot, x: Tensor, var_cache: dict[str, Tensor]) -> dict[str, float]:
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
            out = sae.training_forward(x, dead_mask, sparse=cfg.sparse_decoder)
        loss = sum(coefs.get(k, 1.0) * v for k, v in out.losses.items())
        bad = not bool(torch.isfinite(loss.detach()))
        if ddp.any_rank(bad, self.dist):
            raise TrainingDivergedError(self._diverged_message(slot, float(loss.detach()), x))
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
        n_tokens = x.shape[0] * self.dist.world_size
        slot.tokens_since_fired += n_tokens
        slot.tokens_since_fired[counts > 0] = 0
        slot.hist_counts += counts
        slot.hist_tokens += n_tokens
        return self._metrics(slot, x, out, loss, lr, coefs.get(sparsity, 0.0) if sparsity else None, dead_mask, var_cache)

    def _diverged_message(self, slot: _Slot, loss: float, x: Tensor) -> str:
        """What broke, what is safe on disk, and the fix: bad input data needs other advice than
        an optimisation that blew up."""
        kept = self._checkpoint_note()
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
            f"SAE {slot.name!r}: loss became {loss} at step {self.step_idx} (tokens {self.tokens_seen:,}); "
            f"the step was not applied and {kept}. {fix}."
        )

    def _checkpoint_note(self) -> str:
        root = self.out_dir / "checkpoints"
        try:
            ckpt = latest_checkpoint(root)
        except ResumeError:  # the divergence is the news here; a damaged pointer is reported on resume
            return f"nothing in {root} was changed"
        return f"the last checkpoint {ckpt} is intact" if ckpt is not None else "no checkpoint had been written yet"

    @torch.no_grad()
    def _metrics(self, slot, x, out, loss, lr, coef, dead_mask, var_cache) -> dict[str, float]:
        if (self.step_idx + 1) % max(1, self.cfg.log_every_steps) != 0 and self.step_idx + 1 < self.total_steps:
            return {}
        key = slot.stream
        if key not in var_cache:
            var_cache[key] = (x - x.mean(0)).pow(2).sum()
        err = (x - out.sae_out.float()).pow(2).sum()
        stats = torch.stack([err, var_cache[key], out.l0.float(), dead_mask.float().mean(), loss.detach().float(),
                             *[v.detach().float() for v in out.losses.values()]])
        if self.dist.enabled:
            ddp.all_reduce_mean_([stats], self.dist)
        vals = stats.tolist()
        p = f"{slot.name}/" if len(self.slots) > 1 else ""
        m = {
            f"{p}train/fvu": vals[0] / max(vals[1], 1e-12),
            f"{p}train/l0": vals[2],
            f"{p}train/dead_frac": vals[3],
            f"{p}train/loss": vals[4],
            f"{p}lr": lr,
        }
        for name, v in zip(out.losses, vals[5:], strict=True):
            m[f"{p}loss/{name}"] = v
        m[f"{p}train/mse"] = m[f"{p}loss/mse"]
        if coef is not None:
            m[f"{p}sparsity_coef"] = coef
        slot.last = {"fvu": m[f"{p}train/fvu"], "l0": vals[2], "dead": vals[3]}
        return m

    # ------------------------------------------------------------------ the loop

    def fit(
        self,
        batches: Iterable[Tensor] | Mapping[str, Iterable[Tensor]],
        n_tokens: int | None = None,
    ) -> list[Path]:
        """Train on `batches` (one iterable, or {hook_name: iterable}) for n_tokens (default cfg.n_tokens)."""
        cfg = self.cfg
        n_tokens = n_tokens or cfg.n_tokens
        streams = dict(batches) if isinstance(batches, Mapping) else {"": batches}
        if isinstance(batches, Mapping):
            for slot in self.slots:
                slot.stream = slot.sae.cfg.hook_name
                if slot.stream not in streams:
                    raise ConfigError(f"SAE {slot.name!r} wants hook {slot.stream!r}; streams given: {sorted(streams)}")
        ckpt_root = self.out_dir / "checkpoints"
        resumed = self._maybe_resume(ckpt_root, streams)
        if self.batch_size:
            self.total_steps = total_steps(n_tokens, self.batch_size)
        if resumed and self.tokens_seen >= n_tokens:
            log.info("run in %s already trained on %d tokens; exporting", self.out_dir, self.tokens_seen)
            return self._export(streams)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out_dir / "train_config.json")
        iters: dict[str, Iterator[Tensor]] = {k: iter(v) for k, v in streams.items()}
        logger = RunLogger(cfg, self.out_dir, total_tokens=n_tokens, initial_tokens=self.tokens_seen, enabled=self.dist.is_main)
        next_ckpt = (self.tokens_seen // cfg.checkpoint_every_tokens + 1) * cfg.checkpoint_every_tokens
        n_logs, t_last, tok_last = 0, time.perf_counter(), self.tokens_seen
        try:
            while self.tokens_seen < n_tokens:
                try:
                    batch = {k: next(it) for k, it in iters.items()}
                except StopIteration:
                    log.warning("activation stream ended after %d tokens (wanted %d)", self.tokens_seen, n_tokens)
                    break
                if self.batch_size is None:
                    self.batch_size = next(iter(batch.values())).shape[0]
                    self.total_steps = total_steps(n_tokens, self.batch_size)
                if self.step_idx == 0:
                    self._init_from_data(batch)
                metrics = self.step(batch if isinstance(batches, Mapping) else batch[""])
                logger.advance(self.batch_size)
                if metrics:
                    now = time.perf_counter()
                    metrics["tokens"] = self.tokens_seen
                    metrics["tokens_per_s"] = (self.tokens_seen - tok_last) / max(now - t_last, 1e-9)
                    t_last, tok_last = now, self.tokens_seen
                    n_logs += 1
                    hists = self._histograms() if n_logs % _HIST_EVERY_LOGS == 0 else None
                    logger.log(metrics, self.step_idx, hists)
                    logger.postfix(self._postfix())
                if self.tokens_seen >= next_ckpt:
                    self._checkpoint(ckpt_root, streams, n_tokens)
                    next_ckpt += cfg.checkpoint_every_tokens
            self._checkpoint(ckpt_root, streams, n_tokens)
            logger.log({}, self.step_idx, self._histograms())
        finally:
            logger.close()
        return self._export(streams)

    def _postfix(self) -> str:
        parts = []
        for slot in self.slots[:3]:
            s = slot.last
            if s:
                parts.append(f"fvu={s['fvu']:.3f} L0={s['l0']:.1f} dead={100 * s['dead']:.1f}%")
        return " | ".join(parts)

    def _histograms(self) -> dict[str, Tensor]:
        out = {}
        for slot in self.slots:
            p = f"{slot.name}/" if len(self.slots) > 1 else ""
            out[f"{p}density_histogram"] = density_log10(slot.hist_counts, slot.hist_tokens)
            slot.hist_counts.zero_()
            slot.hist_tokens = 0
        return out

    @torch.no_grad()
    def _init_from_data(self, batch: dict[str, Tensor]) -> None:
        for slot in self.slots:
            x = batch[slot.stream].to(self.device, torch.float32)
            if self.cfg.b_dec_init != "zeros":
                slot.sae.b_dec.copy_(init_b_dec(x, self.cfg.b_dec_init).to(slot.sae.b_dec.dtype))
            slot.sae.init_from_data(x)

    # ------------------------------------------------------------------ checkpoints

    def _scale_for(self, stream: str, streams: Mapping[str, Any]) -> float | None:
        if isinstance(self.scales, Mapping):
            return self.scales.get(stream)
        if self.scales is not None:
            return float(self.scales)
        source = streams.get(stream)
        if getattr(getattr(source, "cfg", None), "normalize", True) is False:
            return None  # the store reports a scale but did not apply it: nothing to fold
        return getattr(source, "normalization_scale", None)

    def _checkpoint(self, root: Path, streams: Mapping[str, Any], n_tokens: int) -> None:
        # A run often ends on a checkpoint step; rewriting that folder in place would open a
        # window in which latest.json names a folder that is being swapped.
        if self._saved_step != self.step_idx:
            save_trainer_state(self, root, streams, n_tokens)
            self._saved_step = self.step_idx

    def _maybe_resume(self, root: Path, streams: Mapping[str, Any]) -> bool:
        resumed = restore_trainer_state(self, root, streams)
        if resumed:
            self._saved_step = self.step_idx
        return resumed

    def _export(self, streams: Mapping[str, Any]) -> list[Path]:
        paths = []
        for slot in self.slots:
            if self.dist.is_main:
                scale = self._scale_for(slot.stream, streams)
                extra = {"train": {"tokens": self.tokens_seen, "steps": self.step_idx, "name": slot.name}}
                save_sae(slot.sae, slot.out_dir, normalization_scale=scale, extra=extra)
            paths.append(slot.out_dir)
        ddp.barrier(self.dist)
        return paths


# --------------------------------------------------------------------------- entry point


def train(cfg: TrainConfig, store: Any = None, model: Any = None) -> list[Path]:
    """Train every SAE in `cfg` and return one checkpoint folder per SAE.

    `store`: an ActivationStore / any iterator of [B, d_in] batches, or {hook: store}. When None,
    one `ActivationStore` per distinct hook is built from `cfg.cache_dir`, or on the fly from
    `model` (loaded from cfg.model when None) when there is no cache.
    """
    if store is None:
        store = _build_stores(cfg, model)
    streams = store if isinstance(store, Mapping) else {"": store}
    for scfg in cfg.saes:
        s = streams.get(scfg.hook_name, streams.get(""))
        d_in = getattr(s, "d_in", None)
        if d_in is not None and d_in != scfg.d_in:
            raise ConfigError(
                f"SAE d_in={scfg.d_in} but the activations ({getattr(s, 'hook', scfg.hook_name)}) have d_in={d_in}; "
                f"set saes.N.d_in={d_in} (`saekit train`: --d-in {d_in}, or leave --d-in out to take the cache's)"
            )
    trainer = Trainer(cfg, normalization_scale=None)
    if isinstance(store, Mapping):
        trainer.scales = {k: getattr(v, "normalization_scale", None) for k, v in store.items()}
    return trainer.fit(store)


def _build_stores(cfg: TrainConfig, model: Any) -> Any:
    from sae.store import ActivationStore

    hooks = list(dict.fromkeys(s.hook_name for s in cfg.saes))
    stores = {}
    for hook in hooks:
        if cfg.cache_dir:
            stores[hook] = ActivationStore.from_cache(cfg.cache_dir, hook=hook, cfg=cfg.store)
        else:
            if model is None:
                from sae.model import load_model

                model = load_model(cfg.model.name, device=cfg.model.device, dtype=cfg.model.dtype)
            stores[hook] = ActivationStore.from_model(model, cfg.data, hook, cfg.store, n_tokens=None)
    if cfg.cache_dir:
        _fill_from_manifest(cfg)
    return stores if len(stores) > 1 else stores[hooks[0]]


def _fill_from_manifest(cfg: TrainConfig) -> None:
    """Model name and context size are facts about the cached data: take them from the manifest."""
    try:
        from sae.cache import read_manifest

        manifest = read_manifest(cfg.cache_dir)
    except Exception as e:  # the store already validated the cache; this is best effort
        log.debug("could not read the cache manifest: %s", e)
        return
    model_cfg = manifest.get("config", {}).get("model", {}) if isinstance(manifest.get("config"), dict) else {}
    model_name = manifest.get("model") or manifest.get("model_name") or model_cfg.get("name")
    ctx = manifest.get("context_size") or (manifest.get("config", {}).get("data", {}) or {}).get("context_size")
    for scfg in cfg.saes:
        if isinstance(model_name, str):
            scfg.model_name = model_name
        if isinstance(ctx, int):
            scfg.context_size = ctx

