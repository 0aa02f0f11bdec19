"""SAE checkpoints: bit-exact round trip, normalisation fold, SAELens-layout files, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sae.architectures.base import build_sae
from sae.checkpoint import CheckpointError, load_sae, save_sae
from sae.config import SAEConfig

ARCHS = ["relu", "topk", "batchtopk", "jumprelu"]


def _trained_like(arch: str, d_in: int = 16, d_sae: int = 48):
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(architecture=arch, d_in=d_in, d_sae=d_sae, k=4, hook_name="blocks.3.hook_resid_post"))
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        if arch == "jumprelu":
            sae.threshold.uniform_(0.05, 0.3)
        if arch == "batchtopk":
            sae.threshold.fill_(0.2)
    return sae


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_is_bit_exact(arch: str, tmp_path: Path) -> None:
    sae = _trained_like(arch)
    save_sae(sae, tmp_path / "sae")
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    loaded = load_sae(tmp_path / "sae")
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(loaded, name), getattr(sae, name)), name
    x = torch.randn(32, 16)
    assert torch.equal(loaded.encode(x), sae.encode(x))
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
    if arch == "batchtopk":  # stored and reloaded as the JumpReLU it behaves like at inference
        assert cfg["architecture"] == "jumprelu" and loaded.architecture == "jumprelu"
        assert cfg["saekit"]["trained_architecture"] == "batchtopk"
    else:
        assert loaded.cfg == sae.cfg


@pytest.mark.parametrize("arch", ARCHS)
def test_normalisation_scale_is_folded(arch: str, tmp_path: Path) -> None:
    """The saved SAE takes raw activations: same codes as the trained SAE on scaled ones."""
    sae = _trained_like(arch)
    scale = 0.037
    save_sae(sae, tmp_path, normalization_scale=scale)
    loaded = load_sae(tmp_path)
    raw = torch.randn(64, 16) * 30
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(raw), sae.encode(raw * scale), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(loaded(raw).sae_out, sae(raw * scale).sae_out / scale, rtol=1e-4, atol=1e-3)
    assert json.loads((tmp_path / "cfg.json").read_text())["normalize_activations"] == "none"


def _write_saelens(folder: Path, cfg: dict, tensors: dict) -> Path:
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def _saelens_tensors(d_in: int, d_sae: int, threshold: bool = False) -> dict:
    g = torch.Generator().manual_seed(1)
    t = {
        "W_enc": torch.randn(d_in, d_sae, generator=g),
        "b_enc": torch.randn(d_sae, generator=g),
        "W_dec": torch.randn(d_sae, d_in, generator=g),
        "b_dec": torch.randn(d_in, generator=g),
    }
    if threshold:
        t["threshold"] = torch.rand(d_sae, generator=g)
    return t


def test_loads_saelens_v6_layout(tmp_path: Path) -> None:
    """A fixture following SAELens 6's documented cfg.json (architecture + metadata block)."""
    base = {"d_in": 8, "d_sae": 24, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
            "normalize_activations": "none", "reshape_activations": "none"}
    meta = {"model_name": "gpt2", "hook_name": "blocks.4.hook_resid_pre", "context_size": 256,
            "sae_lens_version": "6.5.0", "sae_lens_training_version": "6.5.0", "prepend_bos": True}
    x = torch.randn(10, 8)
    # standard (ReLU)
    t = _saelens_tensors(8, 24)
    sae = load_sae(_write_saelens(tmp_path / "std", {**base, "architecture": "standard", "metadata": meta}, t))
    assert sae.architecture == "relu" and sae.cfg.hook_name == "blocks.4.hook_resid_pre" and sae.cfg.model_name == "gpt2"
    torch.testing.assert_close(sae.encode(x), torch.relu((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]))
    # topk
    sae = load_sae(_write_saelens(tmp_path / "topk", {**base, "architecture": "topk", "k": 5, "metadata": meta}, t))
    assert sae.architecture == "topk" and sae.cfg.k == 5
    assert int((sae.encode(x) != 0).sum(-1).max()) <= 5
    # jumprelu, Gemma-Scope style: no b_dec subtraction before encoding
    tj = _saelens_tensors(8, 24, threshold=True)
    cfg = {**base, "architecture": "jumprelu", "apply_b_dec_to_input": False, "metadata": meta}
    sae = load_sae(_write_saelens(tmp_path / "jr", cfg, tj))
    pre = x @ tj["W_enc"] + tj["b_enc"]
    torch.testing.assert_close(sae.encode(x), torch.relu(pre) * (pre > tj["threshold"]))


def test_loads_cfg_as_written_by_saelens_6_54(tmp_path: Path) -> None:
    """Verbatim cfg.json that SAELens 6.54 `TopKSAE.save_model` writes (no hook metadata at all)."""
    cfg = {"d_in": 8, "d_sae": 24, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"sae_lens_version": "6.54.12", "sae_lens_training_version": "6.54.12"},
           "k": 5, "rescale_acts_by_decoder_norm": False, "architecture": "topk"}
    sae = load_sae(_write_saelens(tmp_path / "a", cfg, _saelens_tensors(8, 24)))
    assert sae.architecture == "topk" and sae.cfg.k == 5 and sae.cfg.model_name == "unknown"
    with pytest.raises(CheckpointError, match="rescale_acts_by_decoder_norm"):
        load_sae(_write_saelens(tmp_path / "b", {**cfg, "rescale_acts_by_decoder_norm": True}, _saelens_tensors(8, 24)))


def test_loads_pre_v6_saelens_layout(tmp_path: Path) -> None:
    t = _saelens_tensors(8, 24)
    cfg = {"d_in": 8, "d_sae": 24, "dtype": "torch.float32", "architecture": "standard", "activation_fn_str": "topk",
           "activation_fn_kwargs": {"k": 3}, "hook_point": "blocks.2.hook_resid_post", "model_name": "pythia-70m",
           "context_size": 128, "normalize_activations": False, "sae_lens_training_version": "3.1.0"}
    sae = load_sae(_write_saelens(tmp_path / "old", cfg, t))
    assert sae.architecture == "topk" and sae.cfg.k == 3 and sae.cfg.hook_name == "blocks.2.hook_resid_post"


def test_loads_gemma_scope_npz(tmp_path: Path) -> None:
    folder = tmp_path / "layer_12" / "width_16k" / "average_l0_41"
    folder.mkdir(parents=True)
    t = {k: v.numpy() for k, v in _saelens_tensors(8, 24, threshold=True).items()}
    np.savez(folder / "params.npz", **t)
    sae = load_sae(folder)
    assert sae.architecture == "jumprelu" and not sae.cfg.apply_b_dec_to_input
    assert sae.cfg.hook_name == "blocks.12.hook_resid_post"


def test_rejects_bad_checkpoints_with_clear_errors(tmp_path: Path) -> None:
    good = _write_saelens(tmp_path / "good", {"architecture": "standard", "d_in": 8, "d_sae": 24}, _saelens_tensors(8, 24))
    load_sae(good)
    # mismatched shapes
    bad = _write_saelens(tmp_path / "shape", {"architecture": "standard", "d_in": 8, "d_sae": 32}, _saelens_tensors(8, 24))
    with pytest.raises(CheckpointError, match=r"W_enc has shape \(8, 24\) but cfg.json says \(8, 32\)"):
        load_sae(bad)
    # unknown architecture
    unk = _write_saelens(tmp_path / "unk", {"architecture": "crosscoder", "d_in": 8, "d_sae": 24}, _saelens_tensors(8, 24))
    with pytest.raises(CheckpointError, match="'crosscoder' is not supported"):
        load_sae(unk)
    # malformed configs
    (good / "cfg.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_sae(good)
    (good / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": "8", "d_sae": 24}))
    with pytest.raises(CheckpointError, match="'d_in' must be a positive integer"):
        load_sae(good)
    topk_no_k = _write_saelens(tmp_path / "nok", {"architecture": "topk", "d_in": 8, "d_sae": 24}, _saelens_tensors(8, 24))
    with pytest.raises(CheckpointError, match="needs a positive 'k'"):
        load_sae(topk_no_k)
    missing = _write_saelens(tmp_path / "miss", {"architecture": "jumprelu", "d_in": 8, "d_sae": 24}, _saelens_tensors(8, 24))
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) \['threshold'\]"):
        load_sae(missing)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_sae(tmp_path / "nowhere")


def test_run_folder_with_several_saes_names_them(tmp_path: Path) -> None:
    for name in ("a", "b"):
        save_sae(_trained_like("topk"), tmp_path / name)
    with pytest.raises(CheckpointError, match=r"several SAEs: \['a', 'b'\]"):
        load_sae(tmp_path)


def test_weights_file_is_plain_safetensors(tmp_path: Path) -> None:
    save_sae(_trained_like("jumprelu"), tmp_path)
    tensors = load_file(str(tmp_path / "sae_weights.safetensors"))
    assert set(tensors) == {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}
    assert tensors["threshold"].dtype == torch.float32
    loaded = load_sae(tmp_path, dtype="bfloat16")
    assert loaded.W_enc.dtype == torch.bfloat16 and loaded.threshold.dtype == torch.float32


@pytest.mark.parametrize("arch", ["jumprelu", "batchtopk"])
def test_bf16_file_holds_thresholds_bf16_can_represent(arch: str, tmp_path: Path) -> None:
    """SAELens casts every tensor to cfg.json's dtype on load; saekit keeps thresholds in fp32. The
    file's thresholds are therefore bf16 values (in fp32), so both read the same numbers."""
    sae = _trained_like(arch)
    with torch.no_grad():
        sae.threshold.copy_(torch.rand_like(sae.threshold) * 0.4 + 0.3001)
    for name, p in sae.named_parameters():
        if name not in sae.keep_fp32:
            p.data = p.data.to(torch.bfloat16)
    sae.cfg.dtype = "bfloat16"
    save_sae(sae, tmp_path)
    stored = load_file(str(tmp_path / "sae_weights.safetensors"))["threshold"]
    assert stored.dtype == torch.float32
    assert torch.equal(stored, stored.to(torch.bfloat16).float())
    assert float((stored - sae.threshold.detach().float().expand_as(stored)).abs().max()) <= 0.004  # one bf16 step
    loaded = load_sae(tmp_path)
    assert loaded.dtype == torch.bfloat16 and loaded.threshold.dtype == torch.float32
    assert torch.equal(loaded.threshold, stored)
