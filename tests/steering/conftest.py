"""Steering test fixtures: random-weight SAEs (every architecture) at a shallow hook."""

from __future__ import annotations

import pytest
import torch

import sae as saelib

HOOK = "blocks.3.hook_resid_post"
ARCHS = ["relu", "topk", "batchtopk", "jumprelu"]


def make_sae(arch: str = "relu", d_in: int = 576, d_sae: int = 256, hook: str = HOOK, seed: int = 0,
             dtype: str = "float32", k: int = 8):
    torch.manual_seed(seed)
    cfg = saelib.SAEConfig(architecture=arch, d_in=d_in, d_sae=d_sae, k=k, hook_name=hook, dtype=dtype)
    s = saelib.build_sae(cfg)
    with torch.no_grad():
        s.b_enc.normal_(0, 0.05)
        s.b_dec.normal_(0, 0.05)
    return s.eval()


@pytest.fixture
def relu_sae():
    return make_sae("relu")


@pytest.fixture
def topk_sae():
    return make_sae("topk", seed=1)
