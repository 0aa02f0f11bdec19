"""Prompts as token ids: chat-templated or BOS + raw text, and left-padded batches of them.

Feature search, the CAA baseline, generation and the experiments all render prompts here, so a
prompt is the same token ids wherever it is read or steered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from steering.interventions import SteeringError

Prompt = str | Sequence[dict]  # plain text, or chat messages [{"role", "content"}, ...]


def render(tokenizer: Any, prompt: Prompt, *, chat: bool, add_generation_prompt: bool = True,
           system_prompt: str | None = None) -> list[int]:
    """Token ids of a prompt: chat-templated (str -> one user turn) or BOS + raw text."""
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise SteeringError("this tokenizer has no chat template; pass chat=False")
        msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if system_prompt is not None and not any(m.get("role") == "system" for m in msgs):
            msgs = [{"role": "system", "content": system_prompt}, *msgs]
        last_is_assistant = bool(msgs) and msgs[-1].get("role") == "assistant"
        text = tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=add_generation_prompt and not last_is_assistant
        )
        return tokenizer.encode(text, add_special_tokens=False)
    if not isinstance(prompt, str):
        raise SteeringError("chat=False needs plain-text prompts, got a message list")
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    bos = getattr(tokenizer, "bos_token_id", None)
    # SAEs are trained on rows that start with BOS; keep steering inputs in that distribution.
    return ([bos] if bos is not None and (not ids or ids[0] != bos) else []) + ids


def pad_left(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Left-padded ids [B, P] and attention mask [B, P]."""
    P = max(len(r) for r in rows)
    ids = torch.full((len(rows), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), P), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, P - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[b, P - len(r) :] = 1
    return ids.to(device), mask.to(device)
