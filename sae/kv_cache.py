"""The model's KV cache through transformers' public Cache API, on every version we support.

transformers 5.24 renamed the forward's `past_key_values` argument and output field to `cache`
(the old argument is deprecated until 5.40). A decode loop that reads `out.past_key_values`
gets None there and silently restarts from a single token: every continuation became one word
and a run of dashes. So we never read the cache back from the output. We make a `DynamicCache`
ourselves (documented API, filled in place by the forward), pass it under whichever name this
version's forward takes, and check after every forward that it grew by exactly the tokens fed:
a version that changes the contract again fails loudly here instead of generating garbage.

TransformerLens 4.3's attention bridges re-implement attention and look for the cache only
under `past_key_values` (or `layer_past`): under transformers 5.24 they receive it as `cache`
and skip the update, so the cache stays empty (HF's own `generate` and the bridge's break the
same way). `bridge_cache_compat` gives them the same object under the old name too, per module,
only for models whose forward takes `cache`; `sae.load_model` applies it to every model it loads.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any

from torch import Tensor

from sae.environment import versions_line

_CACHE_KWARGS = ("cache", "past_key_values")  # newest first


class KVCacheError(RuntimeError):
    """The installed transformers does not fill the KV cache it is given (its API changed)."""


def _forward_params(hf_model: Any) -> Any:
    return inspect.signature(hf_model.forward).parameters


def cache_kwarg(hf_model: Any) -> str:
    """The forward argument that takes the KV cache in the installed transformers."""
    params = _forward_params(hf_model)
    for name in _CACHE_KWARGS:
        if name in params:
            return name
    raise KVCacheError(
        f"{type(hf_model).__name__}.forward takes none of {_CACHE_KWARGS} ({versions_line()}): "
        "this transformers passes the KV cache some other way. Generate with use_cache=False for now, "
        "and install the tested versions with scripts/install.sh (it installs from the lock)"
    )


def cache_kwargs(hf_model: Any, cache: Any) -> dict[str, Any]:
    """`{name: cache}` to splat into a forward call, for a cache object the caller owns."""
    return {cache_kwarg(hf_model): cache, "use_cache": True}


# Attention modules already given the alias hook (weak: a module freed with its model leaves).
_ALIASED: weakref.WeakSet[Any] = weakref.WeakSet()


def _alias_cache(module: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
        kwargs = {**kwargs, "past_key_values": kwargs["cache"]}
    return args, kwargs


def bridge_cache_compat(hf_model: Any) -> None:
    """Let bridge attention modules that read only `past_key_values` see a cache passed as `cache`
    (a no-op where the forward takes no `cache`: loading a model never fails here; a decode loop
    on a model that takes neither name fails in `cache_kwarg`)."""
    if "cache" not in _forward_params(hf_model):
        return
    for module in hf_model.modules():
        if hasattr(module, "_update_kv_cache") and module not in _ALIASED:
            module.register_forward_pre_hook(_alias_cache, with_kwargs=True)
            _ALIASED.add(module)


class KVCache:
    """A KV cache the caller owns; `forward` feeds new tokens and checks the cache grew with them."""

    def __init__(self, hf_model: Any) -> None:
        from transformers import DynamicCache

        self.model = hf_model
        bridge_cache_compat(hf_model)  # for bridges booted without sae.load_model
        self.cache = DynamicCache(config=hf_model.config)
        self._kwargs = cache_kwargs(hf_model, self.cache)
        self.length = 0  # positions the cache holds, padding columns included

    def forward(self, input_ids: Tensor, **kwargs: Any) -> Any:
        """One forward over `input_ids` [B, T] after the cached positions; returns the model output."""
        out = self.model(input_ids=input_ids, **self._kwargs, **kwargs)
        self.length += int(input_ids.shape[1])
        held = int(self.cache.get_seq_length())
        if held != self.length:
            raise KVCacheError(
                f"the KV cache passed to {type(self.model).__name__} holds {held} positions after a "
                f"forward, expected {self.length} ({versions_line()}): this transformers no longer "
                "fills the cache it is given. Generate with use_cache=False for now, and install the "
                "tested versions with scripts/install.sh (it installs from the lock)"
            )
        return out
