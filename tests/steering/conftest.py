"""Steering test fixtures: random-weight SAEs (every architecture) at a shallow hook."""

from __future__ import annotations

import pytest
import torch

import sae as saelib
from steering import generation

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


def emit_dashes(monkeypatch: pytest.MonkeyPatch, tokenizer) -> list[int]:
    """Make every generated reply `I` and a run of dashes, as KV-cached decoding did under
    transformers 5.24, whatever version is installed. The model still runs every decode step (so
    steering hooks and edit meters see them, as they did then); only the picked token is forced.
    Returns the batch sizes generated."""

    first = tokenizer.encode("I", add_special_tokens=False)[0]
    dash = tokenizer.encode("----", add_special_tokens=False)[0]
    batches: list[int] = []
    real_rows, step = generation.sample_rows, [0]

    def forced(logits_BV, gens, cfg):
        step[0] += 1
        return torch.full((logits_BV.shape[0],), first if step[0] == 1 else dash, device=logits_BV.device)

    def dashes(model, rows, seeds, cfg, after_cols=None):
        batches.append(len(rows))
        step[0] = 0
        return real_rows(model, rows, seeds, cfg, after_cols)

    monkeypatch.setattr(generation, "_pick", forced)
    monkeypatch.setattr(generation, "sample_rows", dashes)
    return batches
