"""Trainer checkpoints for exact resume: safetensors for tensors, JSON for the rest, never pickle.

Layout under `<out_dir>/checkpoints/`:
    step_000123/state.safetensors   every tensor: SAE parameters and buffers, Adam moments and
                                    step counts, dead-latent counters, RNG states, the store's
                                    tensors
    step_000123/state.json          step, tokens seen, config, optimizer hyper-parameters, the
                                    store's position (JSON part), Python RNG state
    latest.json                     {"dir": "step_000123"}: replaced atomically once the step
                                    folder is complete, so a crash mid-write leaves the previous
                                    checkpoint current; older step folders are deleted after.

A step folder is filled under a hidden temp name and renamed whole (`sae.atomic_io.atomic_dir`);
the temp folder of a killed run is removed by the next checkpoint write.

Nested state (a store's `state_dict()`, an optimizer's) is split by `split_state`: tensors and
numpy arrays go to safetensors under a key, everything else must be JSON (tuples and bytes are
tagged so they come back as they were).
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import Tensor

from sae.atomic_io import atomic_dir, atomic_write_bytes, atomic_write_json, remove_stale_temps
from sae.config import ConfigError, to_dict
from sae import distributed as ddp

if TYPE_CHECKING:
    from sae.config import TrainConfig

log = logging.getLogger(__name__)

LATEST = "latest.json"
# Config keys that may change between a run and its resumption.
_RESUMABLE_KEYS = {
    "n_tokens", "log_every_steps", "checkpoint_every_tokens", "progress", "wandb_project",
    "wandb_mode", "run_name", "resume", "device", "out_dir", "cache_dir",
}


class ResumeError(RuntimeError):
    """A trainer checkpoint that cannot be read or does not fit this run."""


class Resumable(Protocol):
    """The trainer as resume sees it (a Protocol, so that this module stays below trainer.py)."""

    cfg: TrainConfig
    dist: ddp.DistInfo
    device: torch.device
    out_dir: Path
    slots: list[Any]  # each with .name, .sae, .optimizer, .tokens_since_fired
    step_idx: int
    tokens_seen: int
    batch_size: int | None
    total_steps: int


def split_state(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """JSON-ready copy of `obj`; tensors/arrays are moved into `tensors` and replaced by references."""
    if isinstance(obj, Tensor):
        key = prefix
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = prefix
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__ndarray__": key}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise ResumeError(f"state key {k!r} at {prefix} is not a str/int; cannot store it as JSON")
            out[str(k)] = split_state(v, f"{prefix}.{k}", tensors)
        if any(isinstance(k, int) for k in obj):
            return {"__intkeys__": out}
        return out
    if isinstance(obj, tuple):
        return {"__tuple__": [split_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [split_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, bytes):
        return {"__bytes__": base64.b64encode(obj).decode()}
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise ResumeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint (tensors, numbers, strings only)")


def join_state(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of `split_state`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy()
        if "__tuple__" in obj:
            return tuple(join_state(v, tensors) for v in obj["__tuple__"])
        if "__bytes__" in obj:
            return base64.b64decode(obj["__bytes__"])
        if "__intkeys__" in obj:
            return {int(k) if k.lstrip("-").isdigit() else k: join_state(v, tensors) for k, v in obj["__intkeys__"].items()}
        return {k: join_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_state(v, tensors) for v in obj]
    return obj


def rng_state() -> dict[str, Any]:
    import random

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def write_checkpoint(ckpt_root: Path, step: int, meta: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write one complete checkpoint folder, then point `latest.json` at it, then prune older ones."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(ckpt_root)  # the half-written folder of a killed run
    name = f"step_{step:09d}"
    tensors: dict[str, Tensor] = {}
    json_state = split_state(state, "s", tensors)
    with atomic_dir(ckpt_root / name) as tmp:
        atomic_write_bytes(tmp / "state.safetensors", save(tensors))
        atomic_write_json(tmp / "state.json", {"meta": meta, "state": json_state}, indent=1)
    atomic_write_json(ckpt_root / LATEST, {"dir": name, "step": step}, indent=None)
    for old in ckpt_root.glob("step_*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return ckpt_root / name


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    pointer = ckpt_root / LATEST
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["dir"]
    except (json.JSONDecodeError, KeyError) as e:
        raise ResumeError(f"{pointer} is unreadable ({e}); delete {ckpt_root} to start over") from e
    path = ckpt_root / name
    if not (path / "state.json").exists() or not (path / "state.safetensors").exists():
        raise ResumeError(f"{pointer} points at {path}, which is incomplete; delete {ckpt_root} to start over")
    return path


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(meta, state) of a checkpoint folder."""
    try:
        doc = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "state.safetensors"), device="cpu")
    except (OSError, json.JSONDecodeError, ValueError) as e:
        raise ResumeError(f"cannot read trainer checkpoint {path}: {e}") from e
    return doc["meta"], join_state(doc["state"], tensors)


# --------------------------------------------------------------------------- the trainer's state


def save_trainer_state(trainer: Resumable, root: Path, streams: Mapping[str, Any], n_tokens: int) -> None:
    """Checkpoint every SAE, its optimizer and counters, the streams' positions and RNG (main rank writes)."""
    if trainer.dist.is_main:
        state: dict[str, Any] = {"rng": rng_state(), "slots": {}, "stores": {}}
        for slot in trainer.slots:
            state["slots"][slot.name] = {
                "sae": slot.sae.state_dict(),
                "optimizer": slot.optimizer.state_dict(),
                "tokens_since_fired": slot.tokens_since_fired,
            }
        for key, stream in streams.items():
            if hasattr(stream, "state_dict"):
                state["stores"][key] = stream.state_dict()
        meta = {
            "step": trainer.step_idx, "tokens_seen": trainer.tokens_seen, "n_tokens": n_tokens,
            "batch_size": trainer.batch_size, "total_steps": trainer.total_steps,
            "world_size": trainer.dist.world_size, "config": to_dict(trainer.cfg),
            "slots": [s.name for s in trainer.slots],
        }
        write_checkpoint(root, trainer.step_idx, meta, state)
    ddp.barrier(trainer.dist)


def restore_trainer_state(trainer: Resumable, root: Path, streams: Mapping[str, Any]) -> bool:
    """Continue from `root`'s latest checkpoint if there is one (and resume is on); True if resumed."""
    if not root.exists():
        return False
    if not trainer.cfg.resume:
        if trainer.dist.is_main:
            aside = root.with_name(f"checkpoints.old-{time.strftime('%Y%m%d-%H%M%S')}")
            shutil.move(str(root), str(aside))
            log.warning("resume=false: moved the previous run's checkpoints to %s", aside)
        ddp.barrier(trainer.dist)
        return False
    path = latest_checkpoint(root)
    if path is None:
        return False
    meta, state = read_checkpoint(path)
    _check_resumable(trainer, meta)
    for slot in trainer.slots:
        s = state["slots"][slot.name]
        slot.sae.load_state_dict({k: v.to(trainer.device) for k, v in s["sae"].items()})
        slot.optimizer.load_state_dict(s["optimizer"])
        slot.tokens_since_fired.copy_(s["tokens_since_fired"].to(trainer.device))
    for key, stream in streams.items():
        if key in state["stores"]:
            if not hasattr(stream, "load_state_dict"):
                raise ConfigError("the checkpoint has a store position but this stream cannot restore one")
            stream.load_state_dict(state["stores"][key])
        else:
            log.warning("resuming without a stream position (the iterator has no state_dict); data may repeat")
    set_rng_state(state["rng"])
    trainer.step_idx, trainer.tokens_seen = int(meta["step"]), int(meta["tokens_seen"])
    trainer.batch_size, trainer.total_steps = meta["batch_size"], int(meta["total_steps"])
    log.info("resumed from %s at step %d (%d tokens)", path, trainer.step_idx, trainer.tokens_seen)
    return True


def _check_resumable(trainer: Resumable, meta: dict[str, Any]) -> None:
    saved = meta.get("config", {})
    now = to_dict(trainer.cfg)
    diff = sorted(k for k in set(saved) | set(now) if k not in _RESUMABLE_KEYS and saved.get(k) != now.get(k))
    if diff:
        details = "; ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}" for k in diff[:5])
        raise ConfigError(
            f"{trainer.out_dir}/checkpoints was written by a run with a different config ({details}). "
            "Use a new out_dir, or set resume=false to start over (the old checkpoints are moved aside)."
        )
    if meta.get("world_size", 1) != trainer.dist.world_size:
        log.warning("resuming with %d processes (checkpoint had %s)", trainer.dist.world_size, meta.get("world_size"))
    if meta.get("n_tokens") != trainer.cfg.n_tokens:
        log.warning("n_tokens changed (%s -> %s): the lr schedule is rescaled from here", meta.get("n_tokens"), trainer.cfg.n_tokens)
