"""Load a causal LM into TransformerLens's `TransformerBridge`, and name its hook points.

`load_model()` with no argument gives the embedded SmolLM2-135M-Instruct (offline); any
other name is a hub id or a local HF directory. Hook names are TransformerLens's
(`blocks.15.hook_resid_post`, ...); `validate_hook` turns a typo into an error that lists
the nearest valid names, and `stop_layer` says how far the model must run for a set of hooks.
"""

from __future__ import annotations

import difflib
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sae.config import DEFAULT_MODEL
from sae.devices import parse_dtype, pick_device
from sae.embedded import embedded_model_dir, is_embedded
from sae.kv_cache import bridge_cache_compat

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

log = logging.getLogger(__name__)

_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")


class HookError(ValueError):
    """A hook name or layer that the model does not have."""


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = "float32",
) -> TransformerBridge:
    """A TransformerBridge (with `.tokenizer`) for the embedded default, a hub id or a local dir."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = pick_device(device)
    torch_dtype = parse_dtype(dtype)
    if is_embedded(name):
        source: str = str(embedded_model_dir())
    else:
        source = name
        if Path(name).expanduser().exists():
            source = str(Path(name).expanduser())
        elif "/" not in name:
            raise ValueError(
                f"model {name!r} is neither the embedded default ({DEFAULT_MODEL!r}), a local "
                "directory, nor a hub id (owner/name)"
            )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except OSError as e:
        raise OSError(
            f"could not load model {name!r}: {e}. Offline, use the embedded default "
            f"({DEFAULT_MODEL!r}) or a local HF directory."
        ) from e
    hf_model = hf_model.to(dev).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    bridge = TransformerBridge.boot_transformers(source, hf_model=hf_model, tokenizer=tokenizer)
    bridge_cache_compat(bridge.original_model)  # any decode loop, ours or HF's, fills its KV cache
    bridge.eval()
    bridge.saekit_name = name  # type: ignore[attr-defined]  # the name it was loaded by
    return bridge


def n_layers(model: TransformerBridge) -> int:
    return int(model.cfg.n_layers)


def list_hooks(model: TransformerBridge) -> list[str]:
    """All hook names of the model, in the model's order."""
    return list(model.hook_dict.keys())


def hook_layer(hook: str) -> int | None:
    """The block index a hook belongs to (`blocks.15.hook_resid_post` -> 15), None outside blocks."""
    m = _LAYER_RE.match(hook)
    return int(m.group(1)) if m else None


def resid_hook(layer: int, where: str = "post") -> str:
    """The residual-stream hook name of a layer: `where` in pre | mid | post."""
    if where not in ("pre", "mid", "post"):
        raise HookError(f"residual position {where!r} must be pre, mid or post")
    return f"blocks.{layer}.hook_resid_{where}"


def validate_hook(model: TransformerBridge, hook: str) -> str:
    """Return the hook if the model has it; else raise with the nearest valid names."""
    hooks = model.hook_dict
    if hook in hooks:
        return hook
    layer = hook_layer(hook)
    if layer is not None and layer >= n_layers(model):
        raise HookError(
            f"hook {hook!r} asks for layer {layer}, but the model has {n_layers(model)} layers "
            f"(0..{n_layers(model) - 1}); choose a layer in that range (`saekit hooks` lists every hook)"
        )
    near = difflib.get_close_matches(hook, list(hooks), n=5, cutoff=0.5)
    hint = f"; nearest valid hooks: {', '.join(near)}" if near else ""
    raise HookError(
        f"unknown hook {hook!r}{hint}. List them all with `saekit hooks` or sae.list_hooks(model)"
    )


def hf_module_of(model: TransformerBridge, hook: str) -> str | None:
    """The transformers module whose OUTPUT the hook reads (`blocks.15.hook_resid_post` ->
    `model.layers.15`, `blocks.15.hook_mlp_out` -> `model.layers.15.mlp`; SAELens's
    `hf_hook_name`), or None for a hook that is not a module's output."""
    canonical = model.hook_dict[validate_hook(model, hook)].name or hook
    *parts, last = canonical.split(".")
    if last != "hook_out" or not parts:
        return None
    obj: Any = model
    path = ""
    for part in parts:
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part, None)
        name = getattr(obj, "name", None)
        if obj is None:
            return None
        if isinstance(name, str) and name:
            path = name if not path or name.startswith("model.") else f"{path}.{name}"
    return path or None


def stop_layer(hooks: list[str], model: TransformerBridge) -> int | None:
    """How many blocks must run to reach every hook (for `stop_at_layer`); None = the full model."""
    layers = []
    for h in hooks:
        layer = hook_layer(h)
        if layer is None:
            if h.startswith(("embed", "hook_embed", "pos_embed")):
                layers.append(0)
                continue
            return None  # e.g. ln_final / unembed: needs the whole model
        layers.append(layer + 1)
    deepest = max(layers)
    return None if deepest >= n_layers(model) else deepest


def special_token_ids(model: TransformerBridge) -> list[int]:
    """Ids of the tokenizer's special tokens (BOS, EOS, chat markers, padding)."""
    tok = model.tokenizer
    ids = set(tok.all_special_ids)
    return sorted(i for i in ids if i is not None)
