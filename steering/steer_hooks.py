"""Hook steering interventions into a TransformerBridge, position by position.

Every intervention runs as a forward hook on its hook point, on every forward: the prompt
and each KV-cached decode step alike; `steering.positions` says which positions a call covers.
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


def prepare(model: TransformerBridge, interventions: list[Intervention]) -> None:
    """Check every intervention against the model before anything runs; resolve unit='max'."""
    for iv in interventions:
        if not isinstance(iv, (FeatureSteering, VectorSteering)):
            raise SteeringError(f"not an intervention: {iv!r}")
        assert iv.hook is not None
        canonical_hook(model, iv.hook)
        width = hook_width(model, iv.hook)
        if iv.d_in != width:
            what = "SAE d_in" if isinstance(iv, FeatureSteering) else "steering vector length"
            raise SteeringError(
                f"{what} is {iv.d_in} but hook {iv.hook!r} has width {width}; use the SAE trained "
                "on this hook (or pass hook= the hook it was trained on)"
            )
        if isinstance(iv, FeatureSteering) and iv.needs_max and iv._max_acts is None:
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
            hooks = [(canonical_hook(self.model, iv.hook), _make_hook(iv, self.tracker)) for iv in self.interventions]  # type: ignore[arg-type]
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
