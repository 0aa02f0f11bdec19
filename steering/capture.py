"""Capture activations at hooks (stopping the forward early), per prompt set, and scan feature maxima.

Shared by feature search, the CAA baseline and the unit="max" scan. Every read runs with
active steering paused: a search must see the model as it is.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from sae import model_device
from steering.interventions import SteeringError
from steering.positions import generation_header_ids, last_occurrence, tracker_for
from steering.rendering import Prompt, pad_left, render

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sae import SparseAutoencoder

# Per SAE object: (scan settings, maxima of every feature). Weak keys, so a dropped SAE takes its
# maxima with it; a scan with other settings replaces the entry.
_MAX_ACTS: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], Tensor]] = weakref.WeakKeyDictionary()


class _Stop(Exception):
    pass


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


def open_feature_db(db: Any) -> Any:
    """A `sae.FeatureDB` for a path; anything else (an open database) as given."""
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
    SAE (cached per SAE object), through the activation cache's token filter
    (`sae.TokenFilter`), so "max" means the same thing as in the DB.
    """
    if db is not None:
        fdb = open_feature_db(db)
        if hasattr(fdb, "check_sae"):  # max activations of another SAE would silently mis-scale
            fdb.check_sae(sae)
        idx = list(features) if features is not None else list(range(int(sae.W_dec.shape[0])))
        return torch.tensor([float(fdb.max_activation(int(i))) for i in idx])
    cache_key = (n_tokens, context_size, None if texts is None else hash(tuple(texts)))
    cached = _MAX_ACTS.get(sae)
    if cached is None or cached[0] != cache_key:
        full = _scan(model, sae, n_tokens, batch_size, context_size, texts)
        _MAX_ACTS[sae] = (cache_key, full)
    else:
        full = cached[1]
    return full[list(features)] if features is not None else full


def _scan(model: TransformerBridge, sae: SparseAutoencoder, n_tokens: int, batch_size: int,
          context_size: int, texts: Sequence[str] | None) -> Tensor:
    import sae as saelib

    tok = model.tokenizer
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
    best = torch.zeros(int(sae.W_dec.shape[0]))
    for _, _, acts, keep in _kept_batches(model, rows, sae.cfg.hook_name, batch_size):
        codes = encode_acts(sae, acts[keep])
        if codes.shape[0]:
            best = torch.maximum(best, codes.max(dim=0).values)
    return best


def _kept_batches(
    model: TransformerBridge, rows: list[list[int]], hook: str, batch_size: int
) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
    """Per left-padded batch of `rows`: (first row index, ids [B, P], activations at `hook`
    [B, P, d], the token filter's keep mask [B, P]), the filter of the activation cache."""
    import sae as saelib

    tok = model.tokenizer
    token_filter = saelib.TokenFilter(model, hook)
    device = model_device(model)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    for i in range(0, len(rows), batch_size):
        ids, mask = pad_left(rows[i : i + batch_size], pad_id, device)
        acts = hook_activations(model, ids, [hook], mask)[hook]
        yield i, ids, acts, token_filter(ids, acts, mask).keep


# --------------------------------------------------------------------------- prompt sets

REGIONS = ("all", "after_last_user", "last")


@dataclass
class PromptActs:
    """Kept-token activations of one prompt, with the ids and positions they came from."""

    ids: list[int]
    positions: list[int]  # index into ids of each kept token
    acts: Tensor  # [n_kept, d]


def _region_starts(tokenizer: Any, rows: list[list[int]], region: str) -> list[int]:
    """Per row: the first column of `region` (the reply after the last assistant header, or 0)."""
    if region != "after_last_user":
        return [0] * len(rows)
    header = generation_header_ids(tokenizer)
    starts = []
    for r in rows:
        at = last_occurrence(r, header) if header else -1
        if at < 0:
            raise SteeringError(
                "region='after_last_user' needs chat prompts (chat=True) that contain an assistant turn"
            )
        starts.append(at + len(header))  # type: ignore[arg-type]
    return starts


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
    if region not in REGIONS:
        raise SteeringError(f"unknown region {region!r}; use one of {', '.join(REGIONS)}")
    if not prompts:
        raise SteeringError("empty prompt set")
    tok = model.tokenizer
    rows = [render(tok, p, chat=chat, add_generation_prompt=False) for p in prompts]
    starts = _region_starts(tok, rows, region)
    out: list[PromptActs] = []
    for i, ids, acts, keep in _kept_batches(model, rows, hook, batch_size):
        P = ids.shape[1]
        for b, r in enumerate(rows[i : i + batch_size]):
            pad = P - len(r)
            cols = [c for c in range(pad + starts[i + b], P) if bool(keep[b, c])]
            if region == "last" and cols:
                cols = cols[-1:]
            if not cols:
                raise SteeringError(f"prompt {i + b} has no usable tokens in region {region!r}")
            out.append(PromptActs(r, [c - pad for c in cols], acts[b, cols].float().cpu()))
    return out
