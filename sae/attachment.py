"""SAEs spliced into the model, with their insides as hook points (issue 16, item 1).

    with sae.attached(model, [sae_a, sae_b], use_error_term=True) as m:
        logits, cache = m.run_with_cache("The Golden Gate Bridge")
        cache["blocks.15.hook_resid_post.hook_sae_acts_post"]          # [batch, pos, d_sae]
        with m.hooks([("blocks.15.hook_resid_post.hook_sae_acts_post", ablate_feature_7)]):
            logits = m("The Golden Gate Bridge")

Each SAE replaces the activation at its `cfg.hook_name` by its reconstruction and exposes, under
that name plus a suffix (SAELens's names): `hook_sae_input`, `hook_sae_acts_pre`,
`hook_sae_acts_post`, `hook_sae_recons`, `hook_sae_error`, `hook_sae_output`. A hook on one of
them takes `(tensor [batch, pos, ...], hook)` and returns a replacement or None, as a
TransformerLens hook does; an edit of `acts_pre` goes through the activation function.

`use_error_term=True` adds the SAE's error, x - decode(encode(x)) of the UNEDITED input, so the
model's output is unchanged until a feature is edited, and an edit changes it by exactly its own
decoded effect (an error term recomputed after the edit would cancel the edit). Without it the
model runs on the reconstruction; `token_filter` (a `sae.TokenFilter`, as `evaluate` builds it)
keeps the original activation where it drops a position, which is how `evaluate` splices.

A transcoder (`cfg.hook_name_out`) reads its input at `hook_name` (left unchanged) and replaces the
activation at `hook_name_out` by its output in the same forward pass; its hook points keep the
input hook's name (`<hook_name>.hook_sae_acts_post`, ...), `hook_sae_recons` / `hook_sae_error` /
`hook_sae_output` being in the output's space, and the error term is the target's activation less
the unedited output. `token_filter` then judges positions at `hook_name_out`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sae.architectures.base import SparseAutoencoder
    from sae.token_filter import TokenFilter

SAE_HOOKS = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_error",
             "hook_sae_output")
HookFn = Callable[[Tensor, Any], Tensor | None]


class AttachError(ValueError):
    """SAEs that cannot be spliced as asked (two on one hook, a width that does not match, ...)."""


@dataclass
class _Slot:
    sae: SparseAutoencoder
    hook: str  # the model's hook the SAE reads (and, unless it is a transcoder, replaces)
    out_hook: str | None = None  # a transcoder's: the hook it replaces
    user_hooks: dict[str, list[HookFn]] = field(default_factory=dict)  # by SAE hook name


class Attached:
    """The model with SAEs spliced in; made by `attached(...)` (see the module docstring)."""

    def __init__(self, model: TransformerBridge, saes: Sequence[SparseAutoencoder], use_error_term: bool,
                 token_filter: TokenFilter | None) -> None:
        from sae.model import validate_hook

        self.model = model
        self.use_error_term = use_error_term
        self.token_filter = token_filter
        self.slots: list[_Slot] = []
        for s in saes:
            hook = validate_hook(model, s.cfg.hook_name)
            out_hook = validate_hook(model, s.cfg.hook_name_out) if s.cfg.hook_name_out is not None else None
            replaced = out_hook or hook
            if any(slot.hook == hook or (slot.out_hook or slot.hook) == replaced for slot in self.slots):
                raise AttachError(f"two SAEs on {hook!r}; attach one per hook (or splice them one after another)")
            self.slots.append(_Slot(s, hook, out_hook))
        self._inputs: dict[int, Tensor] = {}  # a transcoder's input, read upstream of what it replaces
        self._recording: dict[str, Tensor] | None = None
        self._tokens: Tensor | None = None
        self._hooks: Any = None  # the model's hook context while the block runs

    # ------------------------------------------------------------------ names

    @property
    def hook_names(self) -> list[str]:
        """Every SAE hook point's name (`<model hook>.<SAE hook>`)."""
        return [f"{slot.hook}.{h}" for slot in self.slots for h in SAE_HOOKS]

    def _slot_of(self, name: str) -> tuple[_Slot, str]:
        for slot in self.slots:
            prefix, _, suffix = name.rpartition(".")
            if prefix == slot.hook and suffix in SAE_HOOKS:
                return slot, suffix
        raise AttachError(f"no SAE hook point {name!r}; the attached SAEs have: {', '.join(self.hook_names)}")

    # ------------------------------------------------------------------ running

    def _as_tokens(self, inputs: str | list[str] | Tensor) -> Tensor:
        if isinstance(inputs, Tensor):
            return inputs if inputs.ndim == 2 else inputs[None]
        return self.model.to_tokens(inputs)

    def __call__(self, inputs: str | list[str] | Tensor, **kwargs: Any) -> Tensor:
        """The model's logits with the SAEs spliced in (`kwargs` go to the model's forward)."""
        tokens = self._as_tokens(inputs)
        self._tokens = tokens
        try:
            return self.model(tokens, **kwargs)
        finally:
            self._tokens = None

    def run_with_cache(self, inputs: str | list[str] | Tensor, names_filter: Callable[[str], bool] | None = None,
                       **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """(logits, cache): the model's own cached activations and every SAE hook point's, by name."""
        tokens = self._as_tokens(inputs)
        self._recording, self._tokens = {}, tokens
        try:
            logits, model_cache = self.model.run_with_cache(tokens, names_filter=names_filter, **kwargs)
            ours = {k: v for k, v in self._recording.items() if names_filter is None or names_filter(k)}
        finally:
            self._recording, self._tokens = None, None
        return logits, {**dict(model_cache.items()), **ours}

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[Attached]:
        """Hooks on SAE hook points for the `with` block; hooks on the model's own hook points may
        be mixed in (they go to `model.hooks`)."""
        ours = [(n, f) for n, f in fwd_hooks if n in self.hook_names or n.rpartition(".")[2] in SAE_HOOKS]
        theirs = [(n, f) for n, f in fwd_hooks if (n, f) not in ours]
        added = []
        for name, fn in ours:
            slot, suffix = self._slot_of(name)
            slot.user_hooks.setdefault(suffix, []).append(fn)
            added.append((slot, suffix, fn))
        try:
            with self.model.hooks(fwd_hooks=theirs) if theirs else contextlib.nullcontext():
                yield self
        finally:
            for slot, suffix, fn in added:
                slot.user_hooks[suffix].remove(fn)

    # ------------------------------------------------------------------ the splice

    def _point(self, slot: _Slot, suffix: str, value: Tensor, shape: tuple[int, ...]) -> Tensor:
        """Run the user hooks of one SAE hook point on `value` (shaped [batch, pos, ...]) and record it."""
        name = f"{slot.hook}.{suffix}"
        v = value.reshape(*shape[:-1], value.shape[-1])
        fns = slot.user_hooks.get(suffix, [])
        for fn in fns:
            out = fn(v, SimpleNamespace(name=name))
            if out is not None:
                v = out
        if self._recording is not None:
            self._recording[name] = v.detach()
        return v.reshape(-1, value.shape[-1]) if fns else value  # unhooked: the same tensor (`is` holds)

    def _read_fn(self, slot: _Slot) -> HookFn:
        """A transcoder's input hook: remember the activation, change nothing."""

        def read(x: Tensor, hook: Any) -> None:
            self._inputs[id(slot)] = x

        return read

    def _splice_fn(self, slot: _Slot) -> HookFn:
        s = slot.sae

        def splice(target: Tensor, hook: Any) -> Tensor:
            x = target
            if slot.out_hook is not None:
                x = self._inputs.pop(id(slot), None)  # type: ignore[assignment]
                if x is None:
                    raise AttachError(f"the transcoder's input {slot.hook!r} did not fire before {slot.out_hook!r}: "
                                      "its input hook must come earlier in the forward pass than its output hook")
            if x.shape[-1] != s.d_in:
                from sae.splice import check_width

                check_width(int(x.shape[-1]), s)  # raises, naming the model and hook the SAE is for
            shape = tuple(x.shape)
            x_ND = self._point(slot, "hook_sae_input", x.reshape(-1, s.d_in).to(s.device, s.dtype), shape)
            pre = s.pre_acts(x_ND)
            edited_pre = self._point(slot, "hook_sae_acts_pre", pre, shape)
            clean_acts = s.activation(pre)
            acts = self._point(slot, "hook_sae_acts_post",
                               clean_acts if edited_pre is pre else s.activation(edited_pre), shape)
            skip = s.skip_term(x_ND)  # a skip transcoder's linear term: part of every reconstruction
            clean_recons = s.decode(clean_acts) if skip is None else s.decode(clean_acts) + skip
            edited = clean_recons if acts is clean_acts else (s.decode(acts) if skip is None else s.decode(acts) + skip)
            recons = self._point(slot, "hook_sae_recons", edited, shape)
            # The error of the unedited input: recomputed from the edited codes it would undo the edit.
            y_ND = target.reshape(-1, s.d_out).to(s.device, s.dtype) if slot.out_hook is not None else x_ND
            clean_error = y_ND - clean_recons
            error = self._point(slot, "hook_sae_error", clean_error, shape)
            if self.use_error_term:  # recons + error, written so that no edit returns the target bit for bit
                out = y_ND + (recons - clean_recons) + (error - clean_error)
            else:
                out = recons
            out = self._point(slot, "hook_sae_output", out, shape).reshape(target.shape).to(target.device, target.dtype)
            return self._keep_dropped(target, out, slot)

        return splice

    def _keep_dropped(self, x: Tensor, out: Tensor, slot: _Slot) -> Tensor:
        """The original activation where the token filter drops a position (as `evaluate` splices)."""
        if self.token_filter is None or self._tokens is None or x.ndim != 3:
            return out
        if tuple(self._tokens.shape) != tuple(x.shape[:2]):
            return out  # a forward on other rows than the ones given (e.g. a KV-cached step)
        keep = self.token_filter(self._tokens.to(x.device), x).keep
        return torch.where(keep[..., None], out, x)

    # ------------------------------------------------------------------ context

    def __enter__(self) -> Attached:
        readers = [(slot.hook, self._read_fn(slot)) for slot in self.slots if slot.out_hook is not None]
        splices = [(slot.out_hook or slot.hook, self._splice_fn(slot)) for slot in self.slots]
        self._inputs.clear()
        self._hooks = self.model.hooks(fwd_hooks=[*readers, *splices])
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        hooks, self._hooks = self._hooks, None
        if hooks is not None:
            hooks.__exit__(*exc)


def attached(model: TransformerBridge, saes: SparseAutoencoder | Sequence[SparseAutoencoder], *,
             use_error_term: bool = False, token_filter: TokenFilter | None = None) -> Attached:
    """A context manager: inside it the model runs with `saes` spliced in (module docstring)."""
    if not isinstance(saes, Sequence):
        saes = [saes]
    if not saes:
        raise AttachError("no SAEs to attach; pass one SAE or a list of them")
    return Attached(model, list(saes), use_error_term, token_filter)
