"""Shared fixtures: the real embedded model, loaded once per test session."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores: more threads than cores only adds contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

LAYER = 6  # a shallow layer keeps model-backed tests fast; the cache stops here


@pytest.fixture(scope="session")
def model():
    import sae

    return sae.load_model(device="cpu")


@pytest.fixture(scope="session")
def tokenizer(model):
    return model.tokenizer
