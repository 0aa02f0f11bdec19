"""The file format of trainer checkpoints: safetensors for tensors, JSON for the rest, never pickle.

What a checkpoint holds, and whether it fits a run, is the trainer's business
(`Trainer.state_dict` / `Trainer.load_state_dict`); this module writes, finds and reads the
folders and splits nested state into tensors and JSON.

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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import Tensor

from sae.atomic_io import atomic_dir, atomic_write_bytes, atomic_write_json, remove_stale_temps

log = logging.getLogger(__name__)

LATEST = "latest.json"


class ResumeError(RuntimeError):
    """A trainer checkpoint that cannot be read or does not fit this run."""


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
    """Every RNG a training step may draw from: torch CPU, Python, CUDA once CUDA is in use."""
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
    """The folder `latest.json` names, None when there is none; ResumeError when it is damaged."""
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


def set_aside(ckpt_root: Path) -> Path:
    """Move a previous run's checkpoints to `checkpoints.old-<time>` beside them (resume=false)."""
    aside = ckpt_root.with_name(f"checkpoints.old-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(str(ckpt_root), str(aside))
    log.warning("resume=false: moved the previous run's checkpoints to %s", aside)
    return aside
