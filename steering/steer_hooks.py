"""Hook steering interventions into a TransformerBridge, position by position.

Every intervention runs as a forward hook on its hook point, on every forward: the prompt
and each KV-cached decode step alike; `steering.positions` says which positions a call covers.
A transcoder's runs as two: one reads the codes at its input hook, one edits its output hook.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sae import model_device
from steering.capture import max_activations
from steering.interventions import (
    Edit,
    FeatureSteering,
    Intervention,
    SteeringError,
    VectorSteering,
    as_interventions,
)
from steering.positions import PositionTracker, tracker_for

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

log = logging.getLogger(__name__)

# Per model object: the width of each hook probed so far (a probe runs a forward). Weak keys,
# so a dropped model takes its widths with it.
_HOOK_WIDTHS: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------- validation


class _Probe(Exception):
    def __init__(self, width: int) -> None:
        self.width = width


def hook_width(model: TransformerBridge, hook: str) -> int:
    """The last dimension of a hook's activation (runs one token, stopping at the hook)."""
    widths = _HOOK_WIDTHS.setdefault(model, {})
    if hook in widths:
        return widths[hook]

    def probe(x: Tensor, hook: Any) -> None:
        raise _Probe(int(x.shape[-1]))

    tracker = tracker_for(model)
    was_enabled, tracker.enabled = tracker.enabled, False
    tok = getattr(model, "tokenizer", None)
    first = getattr(tok, "bos_token_id", None) or 0
    device = model_device(model)
    try:
        with torch.no_grad(), model.hooks(fwd_hooks=[(hook, probe)]):
            model.original_model(input_ids=torch.tensor([[first]], device=device))
    except _Probe as p:
        widths[hook] = p.width
    finally:
        tracker.enabled = was_enabled
    if hook not in widths:
        raise SteeringError(f"hook {hook!r} did not fire on a forward pass; it cannot be steered")
    return widths[hook]


def canonical_hook(model: TransformerBridge, hook: str) -> str:
    """The hook point's own name (aliases such as hook_resid_post resolve to blocks.L.hook_out)."""
    import sae as saelib

    saelib.validate_hook(model, hook)
    hp = model.hook_dict[hook]
    return hp.name or hook


def _check_width(model: TransformerBridge, iv: Intervention) -> None:
    width = hook_width(model, iv.hook)  # type: ignore[arg-type]
    if isinstance(iv, FeatureSteering) and iv.hook_out is not None:
        if iv.d_in != width:
            raise SteeringError(
                f"transcoder d_in is {iv.d_in} but its input hook {iv.hook!r} has width {width}; use the "
                "transcoder trained on this model (or pass hook= the hook it reads)"
            )
        canonical_hook(model, iv.hook_out)
        width_out = hook_width(model, iv.hook_out)
        if iv.d_out != width_out:
            raise SteeringError(
                f"transcoder d_out is {iv.d_out} but its output hook {iv.hook_out!r} (cfg.hook_name_out) has "
                f"width {width_out}; use the transcoder trained on this model, or set hook_name_out in its "
                "cfg.json to the hook it reconstructs"
            )
    elif iv.d_in != width:
        what = "SAE d_in" if isinstance(iv, FeatureSteering) else "steering vector length"
        raise SteeringError(
            f"{what} is {iv.d_in} but hook {iv.hook!r} has width {width}; use the SAE trained "
            "on this hook (or pass hook= the hook it was trained on)"
        )


def prepare(model: TransformerBridge, interventions: list[Intervention]) -> None:
    """Check every intervention against the model before anything runs; resolve unit='max'."""
    for iv in interventions:
        if not isinstance(iv, (FeatureSteering, VectorSteering)):
            raise SteeringError(f"not an intervention: {iv!r}")
        assert iv.hook is not None
        canonical_hook(model, iv.hook)
        _check_width(model, iv)
        if isinstance(iv, FeatureSteering) and iv.needs_max and iv._max_acts is None:
            # A transcoder's maxima are its codes' at the input hook (cfg.hook_name), as in its feature DB.
            maxes = max_activations(model, iv.sae, db=iv.feature_db, features=iv.features)
            bad = [f for f, m in zip(iv.features, maxes.tolist(), strict=True) if not m > 0]
            if bad:
                log.warning("features %s never fired in the max-activation scan; unit='max' is 0 for them", bad)
            iv._max_acts = maxes


def _make_hook(iv: Intervention, tracker: PositionTracker):
    def steer_hook(x: Tensor, hook: Any) -> Tensor:
        if not tracker.enabled or not isinstance(x, Tensor) or x.ndim != 3:
            return x
        B, S, D = x.shape
        m_BS = tracker.mask(iv.positions, B, S, x.device)
        if bool(m_BS.all()):
            return iv.apply(x.reshape(B * S, D)).reshape(B, S, D)
        if not bool(m_BS.any()):
            return x
        out = x.clone()
        out[m_BS] = iv.apply(x[m_BS])
        return out

    return steer_hook


def _make_transcoder_hooks(model: TransformerBridge, iv: FeatureSteering,
                           tracker: PositionTracker) -> list[tuple[str, Any]]:
    """(input hook, read) and (output hook, edit) for a transcoder: `read` encodes the positions
    `iv.positions` covers and leaves the activation alone; `edit` adds the decoded change of the
    codes to the output of the same forward (each forward's codes are used once, then dropped)."""
    stash: list[tuple[Tensor, Tensor | None]] = []  # this forward's (mask [B, S], codes [n, F])

    def read_hook(x: Tensor, hook: Any) -> Tensor:
        stash.clear()  # a forward stopped early (a capture) may have left one
        if not tracker.enabled or not isinstance(x, Tensor) or x.ndim != 3:
            return x
        B, S, D = x.shape
        m_BS = tracker.mask(iv.positions, B, S, x.device)
        f_NF = iv.read_codes(x[m_BS]) if bool(m_BS.any()) else None
        stash.append((m_BS, f_NF))
        return x

    def edit_hook(y: Tensor, hook: Any) -> Tensor:
        if not tracker.enabled or not isinstance(y, Tensor) or y.ndim != 3:
            return y
        if not stash or tuple(stash[0][0].shape) != tuple(y.shape[:2]):
            raise SteeringError(
                f"the transcoder's output hook {iv.hook_out!r} fired without codes from its input hook "
                f"{iv.hook!r} for the same positions in this forward: the input hook must come earlier in the "
                "forward than the output hook (e.g. blocks.L.mlp.hook_in -> blocks.L.hook_mlp_out); check the "
                "transcoder's hook_name / hook_name_out"
            )
        m_BS, f_NF = stash.pop()
        if not bool(m_BS.any()):
            return y
        out = y.clone()
        out[m_BS] = iv.apply_out(y[m_BS], f_NF)
        return out

    return [(canonical_hook(model, iv.hook), read_hook),  # type: ignore[arg-type]
            (canonical_hook(model, iv.hook_out), edit_hook)]  # type: ignore[arg-type]


def _hooks_for(model: TransformerBridge, iv: Intervention, tracker: PositionTracker) -> list[tuple[str, Any]]:
    if isinstance(iv, FeatureSteering) and iv.hook_out is not None:
        return _make_transcoder_hooks(model, iv, tracker)
    return [(canonical_hook(model, iv.hook), _make_hook(iv, tracker))]  # type: ignore[arg-type]


# --------------------------------------------------------------------------- context manager


class Steering:
    """Interventions installed on a model; use via `steering.steer(...)` as a context manager."""

    def __init__(self, model: TransformerBridge, interventions: list[Intervention]) -> None:
        self.model = model
        self.interventions = interventions
        self.tracker = tracker_for(model)
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> Steering:
        prepare(self.model, self.interventions)
        stack = contextlib.ExitStack()
        self.tracker.acquire(self.model)
        stack.callback(self.tracker.release)
        try:
            hooks = [h for iv in self.interventions for h in _hooks_for(self.model, iv, self.tracker)]
            if hooks:
                stack.enter_context(self.model.hooks(fwd_hooks=hooks))
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def reset(self) -> None:
        """Treat the next forward as the start of a new sequence (prompt) for position modes."""
        self.tracker.reset()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Run unsteered inside the `with` block (e.g. for a baseline)."""
        was, self.tracker.enabled = self.tracker.enabled, False
        try:
            yield
        finally:
            self.tracker.enabled = was


def steer(
    model: TransformerBridge,
    sae_or_interventions: Any,
    edits: Mapping[int, Edit] | None = None,
    *,
    positions: str = "all",
    hook: str | None = None,
    feature_db: Any = None,
) -> Steering:
    """Steer every forward inside a `with` block.

        with steering.steer(model, sae, {123: Clamp(10, unit="max")}):
            print(steering.generate(model, "Tell me about yourself.", compare=False))

    Also accepts a list of `FeatureSteering` / `VectorSteering` interventions (several SAEs,
    several hooks). Everything is validated when the block is entered, before any forward.
    """
    kwargs = {"positions": positions, "hook": hook, "feature_db": feature_db}
    return Steering(model, as_interventions(sae_or_interventions, edits, **kwargs))
