"""Training metrics: a tqdm bar, `metrics.jsonl` beside the outputs, and (optionally) wandb.

wandb is used when `TrainConfig.wandb_project` is set: `wandb.init(project, name=run_name,
config=<the full TrainConfig>, mode=wandb_mode)`; `WANDB_MODE=offline` / `disabled` and
`WANDB_DIR` are honoured (an offline run writes `<WANDB_DIR>/wandb/offline-run-*`).

Metric names (logged every `log_every_steps`; with several SAEs each name is prefixed by the
SAE's name, e.g. `topk_4608_k32/train/fvu`):

| name | meaning |
|---|---|
| `train/loss` | weighted total loss that was minimised |
| `loss/<term>` | each unweighted loss term: `mse`, `auxk`, `l1`, `l0` |
| `train/mse` | squared error summed over d_in, mean over tokens (normalised units) |
| `train/fvu` | fraction of variance unexplained on the batch: sum (x - x_hat)^2 / sum (x - mean x)^2 |
| `train/l0` | mean active latents per token |
| `train/dead_frac` | fraction of latents that have not fired for `dead_after_tokens` tokens |
| `lr`, `sparsity_coef` | current learning rate and sparsity-loss coefficient |
| `density_histogram` | histogram of log10 firing frequency per latent since the last one |
| `tokens`, `tokens_per_s` | tokens trained on so far, throughput since the last log (no prefix) |

`metrics.jsonl` gets the same scalars (not the histogram), one JSON object per log step. A run
that continues from step N (`keep_through_step=N`) first drops the rows after step N, which a
killed run logged after its last checkpoint, so every step appears once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sae.atomic_io import atomic_write_text
from sae.config import TrainConfig, to_dict

log = logging.getLogger(__name__)

HIST_EVERY_LOGS = 10  # density histogram every 10th log step


class RunLogger:
    """Fan-out of metrics to tqdm, metrics.jsonl and wandb; does nothing on non-main ranks."""

    def __init__(self, cfg: TrainConfig, out_dir: Path, *, total_tokens: int, initial_tokens: int, enabled: bool,
                 keep_through_step: int | None = None) -> None:
        self.enabled = enabled
        self._n_logs, self._t_last, self._tok_last = 0, time.perf_counter(), initial_tokens
        self._bar = None
        self._wandb_run = None
        self._jsonl = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        if keep_through_step is not None:
            _drop_rows_after(out_dir / "metrics.jsonl", keep_through_step)
        self._jsonl = open(out_dir / "metrics.jsonl", "a")  # noqa: SIM115  (closed in close())
        if cfg.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total_tokens, initial=initial_tokens, unit="tok", unit_scale=True, desc="train", dynamic_ncols=True
            )
        if cfg.wandb_project:
            self._wandb_run = _init_wandb(cfg, out_dir)

    def advance(self, n_tokens: int) -> None:
        if self._bar is not None:
            self._bar.update(n_tokens)

    def postfix(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def log_step(self, metrics: dict[str, float], step: int, tokens: int,
                 histograms: Callable[[], dict[str, Tensor]]) -> None:
        """Log a step's scalars with the tokens seen and the throughput since the last call; every
        `HIST_EVERY_LOGS`th call adds `histograms()` (called on every rank: it resets counters)."""
        now = time.perf_counter()
        metrics["tokens"] = tokens
        metrics["tokens_per_s"] = (tokens - self._tok_last) / max(now - self._t_last, 1e-9)
        self._t_last, self._tok_last = now, tokens
        self._n_logs += 1
        self.log(metrics, step, histograms() if self._n_logs % HIST_EVERY_LOGS == 0 else None)

    def log(self, metrics: dict[str, float], step: int, histograms: dict[str, Tensor] | None = None) -> None:
        if not self.enabled:
            return
        if self._jsonl is not None and metrics:
            self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
            self._jsonl.flush()
        if self._wandb_run is not None:
            payload: dict[str, Any] = dict(metrics)
            if histograms:
                import wandb

                for name, values in histograms.items():
                    payload[name] = wandb.Histogram(values.detach().float().cpu().numpy())
            self._wandb_run.log(payload, step=step)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._jsonl is not None:
            # each line is flushed as logged; one fsync at the end makes the finished log durable
            self._jsonl.flush()
            os.fsync(self._jsonl.fileno())
            self._jsonl.close()
            self._jsonl = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None


def _drop_rows_after(path: Path, step: int) -> None:
    """Keep the rows of `path` up to `step`; a torn last line (the process killed mid-write) goes too."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.endswith("\n") and _row_step(line) <= step]
    if len(kept) != len(lines):
        log.info("metrics.jsonl: dropped %d rows logged after step %d by the run that stopped", len(lines) - len(kept), step)
        atomic_write_text(path, "".join(kept))


def _row_step(line: str) -> float:
    """The row's step; infinity (dropped) for a line that is not a complete row."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


def _init_wandb(cfg: TrainConfig, out_dir: Path) -> Any:
    try:
        import wandb
    except ImportError as e:  # pragma: no cover - wandb is a dependency
        raise RuntimeError("wandb_project is set but wandb is not installed; pip install wandb") from e
    mode = cfg.wandb_mode or os.environ.get("WANDB_MODE") or None
    if mode not in (None, "online", "offline", "disabled"):
        raise ValueError(f"wandb_mode must be online, offline or disabled, got {mode!r}")
    wandb_dir = os.environ.get("WANDB_DIR") or str(out_dir)
    Path(wandb_dir).mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=cfg.wandb_project,
        name=cfg.run_name,
        config=to_dict(cfg),
        mode=mode,
        dir=wandb_dir,
        reinit="finish_previous",
    )


def density_log10(counts_F: Tensor, n_tokens: int) -> Tensor:
    """log10 of each latent's firing frequency (never-firing latents at -10)."""
    freq = counts_F.double() / max(n_tokens, 1)
    return torch.log10(freq.clamp_min(1e-10)).float()
