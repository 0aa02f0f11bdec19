"""sae/model.py and sae/embedded.py on the real embedded model."""

from __future__ import annotations

import pytest
import torch

import sae
from sae.embedded import embedded_model_dir, find_gguf


def test_embedded_model_is_converted_once_to_safetensors():
    d = embedded_model_dir()
    assert (d / "model.safetensors").exists() and (d / "tokenizer.json").exists()
    assert find_gguf(download=False).name.endswith(".gguf")


def test_model_shape_and_tokenizer(model):
    assert model.cfg.n_layers == 30 and model.cfg.d_model == 576
    tok = model.tokenizer
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert {0, 1, 2} <= set(sae.special_token_ids(model))


def test_generates_with_chat_template(model):
    tok = model.tokenizer
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    hf = model.original_model
    with torch.inference_mode():
        out = hf.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    answer = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_bridge_generate_with_kv_cache_continues(model):
    """TransformerBridge.generate with its KV cache (broken by transformers 5.24 until
    sae.load_model aliased the cache for the bridge's attention) gives the no-cache text."""
    kw = dict(max_new_tokens=8, do_sample=False, verbose=False)
    cached = model.generate("The capital of France is", use_past_kv_cache=True, **kw)
    plain = model.generate("The capital of France is", use_past_kv_cache=False, **kw)
    assert cached == plain and "Paris" in cached, (cached, plain)


def test_hook_listing_and_residual_hooks(model):
    hooks = sae.list_hooks(model)
    for layer in (0, 15, 29):
        for where in ("pre", "mid", "post"):
            assert sae.resid_hook(layer, where) in hooks
    assert sae.hook_layer("blocks.15.hook_resid_post") == 15
    assert sae.hook_layer("embed.hook_out") is None


def test_hook_matches_hf_hidden_state(model):
    toks = model.tokenizer("The Golden Gate Bridge is in", return_tensors="pt").input_ids
    hook = "blocks.5.hook_resid_post"
    with torch.inference_mode():
        _, cache = model.run_with_cache(toks, names_filter=[hook], stop_at_layer=6)
        hidden = model.original_model(toks, output_hidden_states=True).hidden_states[6]
    torch.testing.assert_close(cache[hook], hidden, rtol=1e-4, atol=1e-3)
    # The first position is a massive-activation sink: the reason outliers are filtered.
    norms = hidden[0].norm(dim=-1)
    assert norms[0] > 5 * norms[1:].median()


def test_stop_layer(model):
    assert sae.stop_layer(["blocks.15.hook_resid_post"], model) == 16
    assert sae.stop_layer(["blocks.3.hook_resid_pre", "blocks.7.mlp.hook_out"], model) == 8
    assert sae.stop_layer(["blocks.29.hook_resid_post"], model) is None


def test_unknown_hook_lists_nearest(model):
    with pytest.raises(sae.HookError, match=r"nearest valid hooks: blocks\.15\.hook_resid_post"):
        sae.validate_hook(model, "blocks.15.hook_resid_pst")


def test_layer_beyond_model(model):
    with pytest.raises(sae.HookError, match="30 layers"):
        sae.validate_hook(model, "blocks.45.hook_resid_post")


def test_unknown_model_name():
    with pytest.raises(ValueError, match="neither the embedded default"):
        sae.load_model("no-such-model")


def test_pick_device_prefers_available():
    assert sae.pick_device(None).type in ("cuda", "mps", "cpu")
    assert sae.pick_device("cpu").type == "cpu"


def test_hf_module_of_names_the_transformers_module_a_hook_reads(model) -> None:
    from sae.model import hf_module_of

    assert hf_module_of(model, "blocks.15.hook_resid_post") == "model.layers.15"
    assert hf_module_of(model, "blocks.15.hook_mlp_out") == "model.layers.15.mlp"
    assert hf_module_of(model, "blocks.3.ln2.hook_normalized") is None  # not a module's output
