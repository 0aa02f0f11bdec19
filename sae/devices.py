"""Devices and dtypes, decided the same way by every stage."""

from __future__ import annotations

from typing import Any

import torch

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float64": torch.float64,
    "fp64": torch.float64,
    "double": torch.float64,
}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """`torch.float32` from "float32", "fp32", "torch.float32", ... (or a dtype, returned as is)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).lower().removeprefix("torch.")
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(
            f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16, float64"
        ) from None


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The requested device, or the best available one: cuda > mps > cpu."""
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available; use --device cpu")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def model_device(model: Any) -> torch.device:
    """Where a model's weights live: a TransformerBridge (its wrapped HF model), an SAE or any module."""
    inner = getattr(model, "original_model", model)
    for p in inner.parameters():
        return p.device
    return torch.device("cpu")
