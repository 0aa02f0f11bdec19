"""Finding features to steer: by text, by contrast between prompt sets, and by output.

- `top_features`: the features most active on (a span of) one prompt.
- `contrastive_features`: mean activation on a positive set minus a negative set, ranked,
  each with its top examples (from a feature DB, else from the positive prompts).
- `output_features`: features whose decoder direction promotes given tokens through the
  final norm and the unembedding (the logit lens of W_dec[i], `sae.feature_lens`: the same
  lens the feature database and the explorer show).
- `output_score`: after Arad et al. (2025), "SAEs are good for steering, if you select the
  right features": clamp the feature high on neutral prompts and measure how much next-token
  probability its own top logit-lens tokens gain. Input-only features score ~0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sae import model_device
from steering.capture import (
    PromptActs,
    encode_acts,
    hook_activations,
    open_feature_db,
    prompt_set_activations,
)
from steering.interventions import Clamp, FeatureSteering, SteeringError
from steering.positions import tracker_for
from steering.rendering import Prompt, pad_left, render
from steering.steer_hooks import Steering

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sae import SparseAutoencoder


@dataclass
class FeatureHit:
    """A feature found by a search, its score, and evidence."""

    feature: int
    score: float
    details: dict[str, float] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def __repr__(self) -> str:
        d = ", ".join(f"{k}={v:.3g}" for k, v in self.details.items())
        return f"FeatureHit(feature={self.feature}, score={self.score:.4g}{', ' + d if d else ''})"


def _hook(sae: SparseAutoencoder, hook: str | None) -> str:
    h = hook or getattr(sae.cfg, "hook_name", None)
    if not h:
        raise SteeringError("the SAE's config names no hook; pass hook=")
    return h


def _context(tok: Any, ids: list[int], pos: int, left: int = 10, right: int = 4) -> str:
    before = tok.decode(ids[max(0, pos - left) : pos])
    here = tok.decode(ids[pos : pos + 1])
    after = tok.decode(ids[pos + 1 : pos + 1 + right])
    return f"{before}[[{here}]]{after}"


# --------------------------------------------------------------------------- by text


def _span_columns(tok: Any, ids: list[int], span: str | tuple[int, int] | None) -> list[int] | None:
    """Token indices of `ids` that overlap `span` (a substring of the decoded text, its last
    occurrence, or (start, end) characters); None for no span."""
    if span is None:
        return None
    rendered = tok.decode(ids)
    if isinstance(span, str):
        start = rendered.rfind(span)
        if start < 0:
            raise SteeringError(f"span {span!r} does not occur in the prompt text")
        span = (start, start + len(span))
    # Character offset of every token in the decoded text (robust for any tokenizer).
    cols, pos = [], 0
    for j in range(len(ids)):
        end = len(tok.decode(ids[: j + 1]))
        if end > span[0] and pos < span[1]:
            cols.append(j)
        pos = end
    return cols


@torch.no_grad()
def top_features(
    model: TransformerBridge,
    sae: SparseAutoencoder,
    text: Prompt,
    span: str | tuple[int, int] | None = None,
    *,
    k: int = 10,
    chat: bool = False,
    reduce: str = "max",
    hook: str | None = None,
) -> list[FeatureHit]:
    """The k features most active on the tokens of `span` (a substring, or (start, end)
    characters of the rendered text; None = every non-special token). reduce: max | mean."""
    if reduce not in ("max", "mean"):
        raise SteeringError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    import sae as saelib

    tok = model.tokenizer
    h = _hook(sae, hook)
    ids = render(tok, text, chat=chat, add_generation_prompt=False)
    in_span = _span_columns(tok, ids, span)
    device = model_device(model)
    ids_t = torch.tensor([ids], device=device)
    mask = torch.ones_like(ids_t)
    acts = hook_activations(model, ids_t, [h], mask)[h]
    keep = saelib.TokenFilter(model, h)(ids_t, acts, mask).keep[0]
    cols = [j for j in (range(len(ids)) if in_span is None else in_span) if bool(keep[j])]
    if not cols:
        raise SteeringError("no usable tokens in the span (only special tokens or outliers)")
    codes = encode_acts(sae, acts[0, cols])
    red = codes.max(0).values if reduce == "max" else codes.mean(0)
    vals, idx = red.topk(min(k, red.numel()))
    hits = []
    for v, f in zip(vals.tolist(), idx.tolist(), strict=True):
        j = int(codes[:, f].argmax())
        hits.append(FeatureHit(f, v, {}, [{"text": _context(tok, ids, cols[j]), "activation": float(codes[j, f])}]))
    return hits


# --------------------------------------------------------------------------- contrastive


def contrastive_from_acts(
    sae: SparseAutoencoder,
    positive: Sequence[Tensor],
    negative: Sequence[Tensor],
    *,
    k: int = 20,
    reduce: str = "mean",
) -> list[FeatureHit]:
    """Rank features by mean activation on positive minus negative sets of activations.

    Each element of a set is one prompt's token activations [n_tokens, d_in]; a prompt is
    reduced over its tokens first (mean or max) so long prompts do not dominate.
    """
    if reduce not in ("mean", "max"):
        raise SteeringError(f"reduce must be 'mean' or 'max', got {reduce!r}")
    if not positive or not negative:
        raise SteeringError("contrastive search needs at least one positive and one negative prompt")

    def per_prompt(acts: Sequence[Tensor]) -> Tensor:
        rows = [encode_acts(sae, a) for a in acts]
        return torch.stack([r.mean(0) if reduce == "mean" else r.max(0).values for r in rows])

    pos_PF, neg_PF = per_prompt(positive), per_prompt(negative)
    diff = pos_PF.mean(0) - neg_PF.mean(0)
    vals, idx = diff.topk(min(k, diff.numel()))
    frac_pos = (pos_PF > 0).float().mean(0)
    frac_neg = (neg_PF > 0).float().mean(0)
    return [
        FeatureHit(
            f,
            v,
            {
                "pos_mean": float(pos_PF[:, f].mean()),
                "neg_mean": float(neg_PF[:, f].mean()),
                "pos_frac": float(frac_pos[f]),
                "neg_frac": float(frac_neg[f]),
            },
        )
        for v, f in zip(vals.tolist(), idx.tolist(), strict=True)
    ]


@torch.no_grad()
def contrastive_features(
    model: TransformerBridge,
    sae: SparseAutoencoder,
    positive: Sequence[Prompt],
    negative: Sequence[Prompt],
    *,
    k: int = 20,
    chat: bool = False,
    region: str = "all",
    reduce: str = "mean",
    db: Any = None,
    n_examples: int = 5,
    batch_size: int = 8,
    hook: str | None = None,
) -> list[FeatureHit]:
    """Features more active on `positive` than on `negative` prompts, best first, with examples.

    Examples come from the feature DB (`db`: FeatureDB or path) when given, else from the
    tokens of the positive prompts where the feature fires most.
    """
    h = _hook(sae, hook)
    pos = prompt_set_activations(model, positive, h, chat=chat, region=region, batch_size=batch_size)
    neg = prompt_set_activations(model, negative, h, chat=chat, region=region, batch_size=batch_size)
    hits = contrastive_from_acts(sae, [p.acts for p in pos], [n.acts for n in neg], k=k, reduce=reduce)
    _attach_examples(model, sae, hits, pos, db, n_examples)
    return hits


def _attach_examples(model: TransformerBridge, sae: SparseAutoencoder, hits: list[FeatureHit],
                     pos: list[PromptActs], db: Any, n: int) -> None:
    if db is not None:
        fdb = open_feature_db(db)
        if hasattr(fdb, "check_sae"):
            fdb.check_sae(sae)
        for hit in hits:
            rec = fdb.feature(hit.feature)
            hit.examples = [
                {"text": getattr(e, "text", str(e)), "activation": float(getattr(e, "act", float("nan")))}
                for e in (getattr(rec, "top_examples", None) or [])[:n]
            ]
        return
    tok = model.tokenizer
    feats = torch.tensor([h.feature for h in hits])
    cands: list[list[tuple[float, int, int]]] = [[] for _ in hits]
    for pi, p in enumerate(pos):
        codes = encode_acts(sae, p.acts)[:, feats]  # [n_tokens, n_hits]
        for j in range(len(hits)):
            t = int(codes[:, j].argmax())
            if codes[t, j] > 0:
                cands[j].append((float(codes[t, j]), pi, t))
    for j, hit in enumerate(hits):
        best = sorted(cands[j], reverse=True)[:n]
        hit.examples = [
            {"text": _context(tok, pos[pi].ids, pos[pi].positions[t]), "activation": a} for a, pi, t in best
        ]


# --------------------------------------------------------------------------- by output


def _token_ids(tok: Any, tokens: str | Sequence[str | int]) -> list[int]:
    items = [tokens] if isinstance(tokens, str) else list(tokens)
    out: list[int] = []
    for t in items:
        if isinstance(t, int):
            out.append(t)
            continue
        for variant in (t, " " + t.lstrip()):  # a word usually appears with its leading space
            ids = tok.encode(variant, add_special_tokens=False)
            if ids:
                out.append(ids[0])
    if not out:
        raise SteeringError(f"no token ids for {tokens!r}")
    return sorted(set(out))


@torch.no_grad()
def logit_lens(model: TransformerBridge, sae: SparseAutoencoder, feature: int, k: int = 10) -> list[tuple[str, float]]:
    """The tokens a feature's decoder direction promotes most: the feature database's lens."""
    import sae as saelib

    lens = saelib.feature_lens(model, sae.W_dec[int(feature)][None], n=k)
    tok = model.tokenizer
    return [(tok.decode([i]), v) for i, v in zip(lens.top_ids[0].tolist(), lens.top_vals[0].tolist(), strict=True)]


@torch.no_grad()
def output_features(
    model: TransformerBridge,
    sae: SparseAutoencoder,
    tokens: str | Sequence[str | int],
    *,
    k: int = 20,
) -> list[FeatureHit]:
    """Features whose (unit) decoder direction raises the logits of `tokens` the most through
    the logit lens, relative to their mean effect over the vocabulary."""
    import sae as saelib

    W_U, norm_w, centre = saelib.unembedding(model)
    ids = _token_ids(model.tokenizer, tokens)
    W = sae.W_dec.detach().float()
    W = W / W.norm(dim=1, keepdim=True).clamp(min=1e-8)
    target = saelib.lens_logits(W, W_U[:, ids], norm_w, centre).mean(1)  # [F]
    # The lens is linear, so the mean over the vocabulary is the lens of W_U's mean column.
    mean = saelib.lens_logits(W, W_U.float().mean(1, keepdim=True), norm_w, centre)[:, 0]
    score = (target - mean).cpu()
    vals, idx = score.topk(min(k, score.numel()))
    return [FeatureHit(f, v, {"target_logit": float(target[f])}) for f, v in zip(idx.tolist(), vals.tolist(), strict=True)]


@torch.no_grad()
def next_token_probs(model: TransformerBridge, rows: list[list[int]]) -> Tensor:
    """Next-token probabilities [B, V] after each prompt row (left-padded batch)."""
    tok = model.tokenizer
    ids, mask = pad_left(rows, tok.pad_token_id if tok.pad_token_id is not None else 0, model_device(model))
    tracker = tracker_for(model)
    tracker.set_batch(mask.shape[1] - mask.sum(1), ids.shape[1], torch.full((len(rows),), -1, device=ids.device))
    tracker.begin_forward(0)
    out = model.original_model(
        input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), logits_to_keep=1
    )
    return torch.softmax(out.logits[:, -1].float(), dim=-1)


@torch.no_grad()
def output_score(
    model: TransformerBridge,
    sae: SparseAutoencoder,
    features: Sequence[int],
    *,
    prompts: Sequence[Prompt] | None = None,
    strength: float = 4.0,
    unit: str = "max",
    n_tokens: int = 10,
    concept_tokens: Sequence[str | int] | None = None,
    chat: bool = True,
    feature_db: Any = None,
) -> dict[int, float]:
    """Per feature: the next-token probability its top `n_tokens` logit-lens tokens gain when it
    is clamped to `strength` (x max activation by default) at every position of neutral prompts,
    averaged over prompts. Near 0 for features that only read their input.

    `concept_tokens` (words or ids) replaces the logit-lens tokens by a fixed set, e.g. the words
    of the concept to steer towards: in middle layers the logit lens of a decoder row is mostly
    noise, while the gain on the concept's own tokens still says whether the feature writes it."""
    from steering.prompts import NEUTRAL_PROMPTS

    tok = model.tokenizer
    prompts = list(prompts or NEUTRAL_PROMPTS[:5])
    rows = [render(tok, p, chat=chat) for p in prompts]
    tracker = tracker_for(model)
    was = tracker.explicit
    tracker.explicit = True
    try:
        with Steering(model, []) as s:
            with s.paused():
                base = next_token_probs(model, rows)
        scores: dict[int, float] = {}
        fixed = torch.tensor(_token_ids(tok, concept_tokens), device=base.device) if concept_tokens else None
        for f in features:
            top = fixed if fixed is not None else _lens_top_ids(model, sae, int(f), n_tokens).to(base.device)
            iv = FeatureSteering(sae, {int(f): Clamp(strength, unit=unit)}, feature_db=feature_db)  # type: ignore[arg-type]
            with Steering(model, [iv]):
                steered = next_token_probs(model, rows)
            gain = steered[:, top].sum(1) - base[:, top].sum(1)
            scores[int(f)] = float(gain.mean())
    finally:
        tracker.explicit = was
        tracker.reset()
    return scores


def _lens_top_ids(model: TransformerBridge, sae: SparseAutoencoder, feature: int, n: int) -> Tensor:
    import sae as saelib

    return saelib.feature_lens(model, sae.W_dec[feature][None], n=n).top_ids[0]


def rank_by_output_score(
    model: TransformerBridge,
    sae: SparseAutoencoder,
    hits: list[FeatureHit],
    **kwargs: Any,
) -> list[FeatureHit]:
    """Add `details["output_score"]` to each hit and sort by it (Arad et al.'s selection:
    among features that match the concept, steer with the ones that act on the output)."""
    scores = output_score(model, sae, [h.feature for h in hits], **kwargs)
    for h in hits:
        h.details["output_score"] = scores[h.feature]
    return sorted(hits, key=lambda h: -h.details["output_score"])
