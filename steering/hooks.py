"""Hook steering interventions into a TransformerBridge, position by position.

Every intervention runs as a forward hook on its hook point. The hard part is *which
positions* a given hook call covers: with the KV cache on, the prompt is one call over
[B, P, d] and every later decode step is a call over [B, 1, d]. A hook that slices
`x[:, prompt_len:]` steers nothing on those steps (the classic "steers only the prompt"
bug). So a `PositionTracker` per model knows, for each forward, the absolute column of the
first position it covers and, per row, where padding, the prompt, and the last assistant
header are. `steering.generate` sets it explicitly (it knows the left padding); any other
caller (model(...), TransformerBridge.generate, HF generate) is tracked from the token ids
seen at `embed.hook_in`: a 1-token call continues the sequence (KV cache), a call that
starts with the whole previous sequence re-feeds it (no cache), anything else starts a new
one. `handle.reset()` forces a new sequence.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from steering.interventions import (
    Edit,
    FeatureSteering,
    Intervention,
    SteeringError,
    VectorSteering,
    as_interventions,
)

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

log = logging.getLogger(__name__)

_TRACKER_ATTR = "_saekit_position_tracker"
_WIDTH_ATTR = "_saekit_hook_widths"


def generation_header_ids(tokenizer: Any) -> list[int] | None:
    """Token ids the chat template appends to open the assistant's turn, or None without one."""
    cached = getattr(tokenizer, "_saekit_gen_header", False)
    if cached is not False:
        return cached
    header: list[int] | None = None
    if getattr(tokenizer, "chat_template", None):
        msgs = [{"role": "user", "content": "x"}]
        try:
            with_gen = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            without = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
            if with_gen.startswith(without) and len(with_gen) > len(without):
                header = tokenizer.encode(with_gen[len(without) :], add_special_tokens=False) or None
        except Exception:  # noqa: BLE001  (a template that cannot render a bare user turn)
            header = None
    try:
        tokenizer._saekit_gen_header = header
    except AttributeError:
        pass
    return header


def last_occurrence(row: list[int], pattern: list[int]) -> int:
    """Start index of the last occurrence of `pattern` in `row`, or -1."""
    n = len(pattern)
    for start in range(len(row) - n, -1, -1):
        if row[start : start + n] == pattern:
            return start
    return -1


class PositionTracker:
    """Which absolute columns the current forward covers, and what each column is, per row."""

    def __init__(self, tokenizer: Any = None) -> None:
        self.tokenizer = tokenizer
        self.enabled = True  # False: every steering hook passes activations through
        self.explicit = False  # True while steering.generate drives the state
        self.col0 = 0  # column of the first position of the current forward
        self.pad_left: Tensor | None = None  # [B] left-padding columns per row
        self.prompt_cols = 0  # columns [0, prompt_cols) are prompt (incl. padding)
        self.after_cols: Tensor | None = None  # [B] first column after the last user turn (-1: none)
        self._ids: Tensor | None = None  # auto mode: every token id of the current sequences
        self.users = 0
        self._handle: Any = None
        self._hook_point: Any = None

    # ---------------------------------------------------------------- explicit (generate)

    def set_batch(self, pad_left: Tensor, prompt_cols: int, after_cols: Tensor) -> None:
        self.pad_left, self.prompt_cols, self.after_cols = pad_left, prompt_cols, after_cols
        self.col0 = 0

    def begin_forward(self, col0: int) -> None:
        self.col0 = col0

    # ---------------------------------------------------------------- auto (any caller)

    def reset(self) -> None:
        self._ids = None
        self.pad_left = None
        self.after_cols = None
        self.prompt_cols = 0
        self.col0 = 0

    def observe(self, ids_BS: Tensor) -> None:
        """Called with the input ids of every forward (from `embed.hook_in`)."""
        if self.explicit or not self.enabled or ids_BS.ndim != 2 or ids_BS.dtype not in (torch.long, torch.int):
            return
        ids_BS = ids_BS.detach()
        prev = self._ids
        if prev is not None and prev.shape[0] == ids_BS.shape[0] and prev.device == ids_BS.device:
            T, S = prev.shape[1], ids_BS.shape[1]
            if S == 1:  # a decode step on the KV cache
                self.col0 = T
                self._ids = torch.cat([prev, ids_BS], dim=1)
                return
            if S > T and torch.equal(ids_BS[:, :T], prev):  # the grown sequence, re-fed whole
                self.col0 = 0
                self._ids = ids_BS
                return
        self._new_sequence(ids_BS)

    def _new_sequence(self, ids_BS: Tensor) -> None:
        self._ids = ids_BS
        self.col0 = 0
        self.prompt_cols = ids_BS.shape[1]
        rows = ids_BS.tolist()
        pad_id = getattr(self.tokenizer, "pad_token_id", None)
        bos_id = getattr(self.tokenizer, "bos_token_id", None)
        pads = []
        for row in rows:
            n = 0
            if pad_id is not None and pad_id != bos_id:
                while n < len(row) - 1 and row[n] == pad_id:
                    n += 1
            pads.append(n)
        self.pad_left = torch.tensor(pads, device=ids_BS.device)
        header = generation_header_ids(self.tokenizer) if self.tokenizer is not None else None
        after = [last_occurrence(r, header) if header else -1 for r in rows]
        self.after_cols = torch.tensor(after, device=ids_BS.device)

    # ---------------------------------------------------------------- masks

    def mask(self, mode: str, B: int, S: int, device: torch.device) -> Tensor:
        """Bool [B, S]: which positions of the current hook call `mode` steers."""
        if self.pad_left is None or self.pad_left.shape[0] != B:
            if mode == "all":
                return torch.ones(B, S, dtype=torch.bool, device=device)
            raise SteeringError(
                f"positions={mode!r} needs to know where the prompt ends, but this forward was not "
                "seen from its token ids (inputs_embeds?); use steering.generate or positions='all'"
            )
        cols = torch.arange(self.col0, self.col0 + S, device=device)[None, :]
        real = cols >= self.pad_left.to(device)[:, None]
        if mode == "all":
            return real.expand(B, S)
        if mode == "prompt":
            return real & (cols < self.prompt_cols)
        if mode == "generated":
            return (cols >= self.prompt_cols).expand(B, S)
        if mode == "after_last_user":
            after = self.after_cols.to(device)[:, None]  # type: ignore[union-attr]
            if bool((after < 0).any()):
                raise SteeringError(
                    "positions='after_last_user' needs chat-formatted prompts (no assistant header "
                    "was found); use chat=True or positions='generated'"
                )
            return (cols >= after).expand(B, S)
        raise SteeringError(f"unknown position mode {mode!r}")

    # ---------------------------------------------------------------- installation

    def acquire(self, model: TransformerBridge) -> None:
        if self.users == 0:
            hp = model.hook_dict.get("embed.hook_in")
            if hp is not None:

                def observe_hook(ids: Any, hook: Any) -> None:
                    if isinstance(ids, Tensor):
                        self.observe(ids)

                self._hook_point = hp
                self._handle = hp.add_hook(observe_hook, dir="fwd", prepend=True)
            self.reset()
        self.users += 1

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self._handle is not None:
            self._handle.hook.remove()
            hooks = self._hook_point.fwd_hooks
            hooks[:] = [h for h in hooks if h is not self._handle]
            self._handle = self._hook_point = None


def tracker_for(model: TransformerBridge) -> PositionTracker:
    tracker = model.__dict__.get(_TRACKER_ATTR)
    if tracker is None:
        tracker = PositionTracker(getattr(model, "tokenizer", None))
        model.__dict__[_TRACKER_ATTR] = tracker
    return tracker


# --------------------------------------------------------------------------- validation


class _Probe(Exception):
    def __init__(self, width: int) -> None:
        self.width = width


def hook_width(model: TransformerBridge, hook: str) -> int:
    """The last dimension of a hook's activation (runs one token, stopping at the hook)."""
    widths: dict[str, int] = model.__dict__.setdefault(_WIDTH_ATTR, {})
    if hook in widths:
        return widths[hook]

    def probe(x: Tensor, hook: Any) -> None:
        raise _Probe(int(x.shape[-1]))

    tracker = tracker_for(model)
    was_enabled, tracker.enabled = tracker.enabled, False
    tok = getattr(model, "tokenizer", None)
    first = getattr(tok, "bos_token_id", None) or 0
    device = next(model.original_model.parameters()).device
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
            from steering.activations import max_activations

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
