"""Gated SAE: the two paths, where each loss sends its gradient, planted recovery, SAELens layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sae.architectures.base import build_sae
from sae.checkpoint import load_sae, save_sae
from sae.config import SAEConfig
from tests.sae.test_architectures import D_IN, mean_max_cosine, planted_stream, train_planted

SAELENS_TENSORS = {"W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"}


def _random_gated(d_in: int = 16, d_sae: int = 48):
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(architecture="gated", d_in=d_in, d_sae=d_sae, hook_name="blocks.3.hook_resid_post"))
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return sae


def test_codes_are_gate_times_magnitude() -> None:
    sae = _random_gated()
    x = torch.randn(64, 16)
    with torch.no_grad():
        centred = x - sae.b_dec
        gate = centred @ sae.W_enc + sae.b_enc
        mag = torch.relu(centred @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag)
        want = (gate > 0).float() * mag
        codes = sae.encode(x)
    torch.testing.assert_close(codes, want, rtol=1e-5, atol=1e-5)
    assert 0 < float((codes > 0).float().mean()) < 1


def test_each_loss_trains_its_own_path() -> None:
    """mse reaches the magnitudes but not the gate's bias; the aux loss reaches the gate but not W_dec."""
    sae = _random_gated()
    x = torch.randn(64, 16)
    out = sae.training_forward(x)
    assert set(out.losses) == {"mse", "l1", "aux"}
    grads = {}
    for name in ("mse", "aux", "l1"):
        sae.zero_grad()
        out.losses[name].backward(retain_graph=True)
        grads[name] = {n: (p.grad is not None and bool(p.grad.abs().sum() > 0)) for n, p in sae.named_parameters()}
    assert grads["mse"]["r_mag"] and grads["mse"]["b_mag"] and grads["mse"]["W_dec"]
    assert not grads["mse"]["b_enc"]  # the step 1[pi_gate > 0] has no gradient
    assert grads["aux"]["b_enc"] and grads["aux"]["W_enc"] and not grads["aux"]["W_dec"] and not grads["aux"]["r_mag"]
    assert grads["l1"]["b_enc"] and not grads["l1"]["b_mag"]


def test_recovers_planted_dictionary(tmp_path: Path) -> None:
    atoms, stream = planted_stream()
    sae = train_planted(SAEConfig(architecture="gated", d_in=D_IN, d_sae=128, l1_coefficient=1.0), stream, tmp_path)
    score = mean_max_cosine(atoms, sae.W_dec.detach())
    held_out = next(stream)
    held_out = held_out * (D_IN**0.5 / held_out.norm(dim=1).mean())  # the store's normalisation, as in training
    with torch.no_grad():
        l0 = float((sae.encode(held_out) > 0).sum(-1).float().mean())
        fvu = float((sae(held_out).sae_out - held_out).pow(2).sum() / (held_out - held_out.mean(0)).pow(2).sum())
    print(f"gated: cosine {score:.3f}, L0 {l0:.1f}, FVU {fvu:.3f}")
    # measured: cosine 0.992, L0 28, FVU 0.28 (L1 0.3: cosine 0.78, L0 43; L1 3: cosine 0.81, L0 20)
    assert score > 0.9 and fvu < 0.4 and l0 < 32, (score, l0, fvu)


def test_checkpoint_uses_saelens_gated_layout(tmp_path: Path) -> None:
    sae = _random_gated()
    save_sae(sae, tmp_path / "ours")
    raw = json.loads((tmp_path / "ours" / "cfg.json").read_text())
    tensors = load_file(str(tmp_path / "ours" / "sae_weights.safetensors"))
    assert raw["architecture"] == "gated" and set(tensors) == SAELENS_TENSORS
    loaded = load_sae(tmp_path / "ours")
    x = torch.randn(32, 16)
    assert loaded.cfg == sae.cfg and torch.equal(loaded.encode(x), sae.encode(x))
    # a file SAELens wrote (no saekit block) loads too
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    save_file(tensors, str(theirs / "sae_weights.safetensors"))
    (theirs / "cfg.json").write_text(json.dumps({
        "architecture": "gated", "d_in": 16, "d_sae": 48, "dtype": "float32", "apply_b_dec_to_input": True,
        "normalize_activations": "none", "metadata": {"hook_name": "blocks.3.hook_resid_post", "model_name": "m"},
    }))
    assert torch.equal(load_sae(theirs).encode(x), sae.encode(x))


def test_missing_magnitude_tensor_is_named(tmp_path: Path) -> None:
    sae = _random_gated()
    save_sae(sae, tmp_path)
    tensors = load_file(str(tmp_path / "sae_weights.safetensors"))
    del tensors["r_mag"]
    save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(Exception, match="r_mag"):
        load_sae(tmp_path)
