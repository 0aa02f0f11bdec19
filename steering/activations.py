"""Read activations at hooks (stopping the forward early), tokenise prompt sets, and scan maxima.

Shared by feature search, the CAA baseline and the unit="max" scan. Every read runs with
active steering paused: a search must see the model as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from sae import model_device
from steering.interventions import SteeringError
from steering.positions import generation_header_ids, last_occurrence, tracker_for

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sae import SparseAutoencoder

Prompt = str | Sequence[dict]  # plain text, or chat messages [{"role", "content"}, ...]


class _Stop(Exception):
    pass


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


@torch.no_grad()
def hook_activations(
    model: TransformerBridge,
    ids_BS: Tensor,
    hooks: Sequence[str],
    attention_mask: Tensor | None = None,
) -> dict[str, Float[Tensor, "B S d"]]:
    """Activations at `hooks` for a (left-padded) batch; the forward stops after the last one."""
    got: dict[str, Tensor] = {}
    wanted = set(hooks)

    def make(name: str):
        def capture(x: Tensor, hook: Any) -> None:
            got[name] = x.detach()
            if wanted <= set(got):
                raise _Stop

        return capture

    tracker = tracker_for(model)
    was, tracker.enabled = tracker.enabled, False
    kwargs: dict[str, Any] = {}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
        kwargs["position_ids"] = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    try:
        with model.hooks(fwd_hooks=[(h, make(h)) for h in hooks]):
            model.original_model(input_ids=ids_BS, **kwargs)
    except _Stop:
        pass
    finally:
        tracker.enabled = was
    missing = wanted - set(got)
    if missing:
        raise SteeringError(f"hooks {sorted(missing)} did not fire on a forward pass")
    return got


@torch.no_grad()
def encode_acts(sae: SparseAutoencoder, acts_ND: Tensor, chunk: int = 4096) -> Tensor:
    out = []
    for i in range(0, acts_ND.shape[0], chunk):
        out.append(sae.encode(acts_ND[i : i + chunk].to(sae.W_dec.device, sae.W_dec.dtype)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, int(sae.W_dec.shape[0]))


# --------------------------------------------------------------------------- max activations


def _open_db(db: Any) -> Any:
    if isinstance(db, (str, Path)):
        import sae as saelib

        return saelib.FeatureDB(db)
    return db


@torch.no_grad()
def max_activations(
    model: TransformerBridge,
    sae: SparseAutoencoder,
    *,
    db: Any = None,
    features: Sequence[int] | None = None,
    n_tokens: int = 16_384,
    batch_size: int = 16,
    context_size: int = 128,
    texts: Sequence[str] | None = None,
) -> Tensor:
    """Each feature's maximum activation: from a feature DB when given, else a quick scan.

    The scan runs `n_tokens` of the builtin corpus (or `texts`) through the model once per
    SAE (cached on the SAE object), through the activation cache's token filter
    (`sae.TokenFilter`), so "max" means the same thing as in the DB.
    """
    if db is not None:
        fdb = _open_db(db)
        if hasattr(fdb, "check_sae"):  # max activations of another SAE would silently mis-scale
            fdb.check_sae(sae)
        idx = list(features) if features is not None else list(range(int(sae.W_dec.shape[0])))
        return torch.tensor([float(fdb.max_activation(int(i))) for i in idx])
    cache_key = (n_tokens, context_size, None if texts is None else hash(tuple(texts)))
    cached = sae.__dict__.get("_saekit_max_acts")
    if cached is None or cached[0] != cache_key:
        full = _scan(model, sae, n_tokens, batch_size, context_size, texts)
        sae.__dict__["_saekit_max_acts"] = (cache_key, full)
    else:
        full = cached[1]
    return full[list(features)] if features is not None else full


def _scan(model: TransformerBridge, sae: SparseAutoencoder, n_tokens: int, batch_size: int,
          context_size: int, texts: Sequence[str] | None) -> Tensor:
    import sae as saelib

    tok = model.tokenizer
    hook = sae.cfg.hook_name
    if texts is not None:
        rows = [render(tok, t, chat=False)[:context_size] for t in texts]
    else:
        data = saelib.DataConfig(context_size=context_size)
        rows = []
        total = 0
        for row in saelib.token_rows(data, tok):
            rows.append(row.tolist())
            total += len(rows[-1])
            if total >= n_tokens:
                break
    if not rows:
        raise SteeringError("the max-activation scan found no text; pass a feature DB (feature_db=...)")
    token_filter = saelib.TokenFilter(model, hook)
    device = model_device(model)
    best = torch.zeros(int(sae.W_dec.shape[0]))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    for i in range(0, len(rows), batch_size):
        ids, mask = pad_left(rows[i : i + batch_size], pad_id, device)
        acts = hook_activations(model, ids, [hook], mask)[hook]
        keep = token_filter(ids, acts, mask).keep
        codes = encode_acts(sae, acts[keep])
        if codes.shape[0]:
            best = torch.maximum(best, codes.max(dim=0).values)
    return best


# --------------------------------------------------------------------------- prompt sets

REGIONS = ("all", "after_last_user", "last")


@dataclass
class PromptActs:
    """Kept-token activations of one prompt, with the ids and positions they came from."""

    ids: list[int]
    positions: list[int]  # index into ids of each kept token
    acts: Tensor  # [n_kept, d]


@torch.no_grad()
def prompt_set_activations(
    model: TransformerBridge,
    prompts: Sequence[Prompt],
    hook: str,
    *,
    chat: bool = False,
    region: str = "all",
    batch_size: int = 8,
) -> list[PromptActs]:
    """Per prompt: activations at `hook` of the tokens in `region`, minus special/outlier tokens.

    region "all": every token; "after_last_user": the assistant's reply (chat prompts whose
    last turn is the assistant's, or the generation header onward); "last": the last kept token.
    """
    import sae as saelib

    if region not in REGIONS:
        raise SteeringError(f"unknown region {region!r}; use one of {', '.join(REGIONS)}")
    if not prompts:
        raise SteeringError("empty prompt set")
    tok = model.tokenizer
    rows = [render(tok, p, chat=chat, add_generation_prompt=False) for p in prompts]
    header = generation_header_ids(tok)
    starts = []
    for r in rows:
        if region == "after_last_user":
            at = last_occurrence(r, header) if header else -1
            if at < 0:
                raise SteeringError(
                    "region='after_last_user' needs chat prompts (chat=True) that contain an assistant turn"
                )
            starts.append(at + len(header))  # type: ignore[arg-type]
        else:
            starts.append(0)
    token_filter = saelib.TokenFilter(model, hook)
    device = model_device(model)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: list[PromptActs] = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        ids, mask = pad_left(chunk, pad_id, device)
        acts = hook_activations(model, ids, [hook], mask)[hook]
        keep = token_filter(ids, acts, mask).keep
        P = ids.shape[1]
        for b, r in enumerate(chunk):
            pad = P - len(r)
            cols = [c for c in range(pad + starts[i + b], P) if bool(keep[b, c])]
            if region == "last" and cols:
                cols = cols[-1:]
            if not cols:
                raise SteeringError(f"prompt {i + b} has no usable tokens in region {region!r}")
            out.append(PromptActs(r, [c - pad for c in cols], acts[b, cols].float().cpu()))
    return out
