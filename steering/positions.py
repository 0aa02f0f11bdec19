"""Which sequence positions a hook call covers, during the prompt and KV-cached decode steps.

Steering hooks (`steering.steer_hooks`) and activation capture (`steering.capture`) share it.
With the KV cache on, the prompt is one call over [B, P, d] and every later decode step is a
call over [B, 1, d]. A hook that slices `x[:, prompt_len:]` steers nothing on those steps (the
classic "steers only the prompt" bug). So a `PositionTracker` per model knows, for each forward,
the absolute column of the first position it covers and, per row, where padding, the prompt, and
the last assistant header are. `steering.generate` sets it explicitly (it knows the left
padding); any other caller (model(...), TransformerBridge.generate, HF generate) is tracked from
the token ids seen at `embed.hook_in`: a 1-token call continues the sequence (KV cache), a call
that starts with the whole previous sequence re-feeds it (no cache), anything else starts a new
one. `handle.reset()` forces a new sequence.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from steering.interventions import SteeringError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

# One tracker per model object and one assistant header per tokenizer object, kept beside the
# objects rather than on them; weak keys, so they go when the model or tokenizer goes.
_TRACKERS: weakref.WeakKeyDictionary[Any, PositionTracker] = weakref.WeakKeyDictionary()
_HEADERS: weakref.WeakKeyDictionary[Any, list[int] | None] = weakref.WeakKeyDictionary()


def generation_header_ids(tokenizer: Any) -> list[int] | None:
    """Token ids the chat template appends to open the assistant's turn, or None without one."""
    try:
        if tokenizer in _HEADERS:
            return _HEADERS[tokenizer]
    except TypeError:  # a tokenizer that cannot be weakly referenced: computed on every call
        pass
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
        _HEADERS[tokenizer] = header
    except TypeError:
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
    tracker = _TRACKERS.get(model)
    if tracker is None:
        tracker = PositionTracker(getattr(model, "tokenizer", None))
        _TRACKERS[model] = tracker
    return tracker
