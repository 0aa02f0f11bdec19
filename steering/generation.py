"""Steered generation: chat template, sampling, seeds, batching, steered beside unsteered.

Our own decode loop over the wrapped HF model (the bridge's hooks wrap its modules, so they
fire on every call) with the KV cache (`sae.KVCache`: owned by us, checked every step): we
need to know, at every step, which absolute positions each row's hook call covers (left padding
differs per row), and to seed every row on its own so that a prompt gives the same text alone or
in any batch. Each row's
seed is derived from (seed, the prompt's token ids); sampling uses one uniform draw per
step (inverse CDF), so steered and unsteered runs of a row share their random numbers and
differ only through the intervention.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sae import KVCache, model_device
from steering.interventions import SteeringError, as_interventions
from steering.positions import PositionTracker, generation_header_ids, last_occurrence, tracker_for
from steering.rendering import Prompt, pad_left, render
from steering.steer_hooks import Steering

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

_STOP_TEXTS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "</s>")


@dataclass
class SamplingConfig:
    """How tokens are drawn. temperature 0 = greedy."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    use_cache: bool = True
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise SteeringError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise SteeringError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise SteeringError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Generation:
    """One prompt's steered (and, with compare=True, unsteered) continuation."""

    prompt: Any
    seed: int
    steered: str
    unsteered: str | None = None
    steered_ids: list[int] = field(default_factory=list)
    unsteered_ids: list[int] | None = None
    prompt_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Generations(list):
    """A list of `Generation`s that prints (and renders in notebooks) side by side."""

    def __str__(self) -> str:
        lines = []
        for g in self:
            p = g.prompt if isinstance(g.prompt, str) else g.prompt[-1].get("content", "")
            lines.append(f"### {p}")
            if g.unsteered is not None:
                lines.append(f"  unsteered: {g.unsteered!r}")
            lines.append(f"  steered:   {g.steered!r}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = []
        for g in self:
            p = g.prompt if isinstance(g.prompt, str) else g.prompt[-1].get("content", "")
            un = html.escape(g.unsteered) if g.unsteered is not None else ""
            rows.append(
                f"<tr><td>{html.escape(p)}</td><td>{un}</td><td>{html.escape(g.steered)}</td></tr>"
            )
        return (
            "<table><tr><th>prompt</th><th>unsteered</th><th>steered</th></tr>" + "".join(rows) + "</table>"
        )


def row_seed(seed: int, prompt_ids: Sequence[int]) -> int:
    """A row's RNG seed: the same prompt and seed give the same draws in any batch."""
    h = hashlib.sha256(f"{int(seed)}:{','.join(map(str, prompt_ids))}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def stop_ids(model: TransformerBridge) -> set[int]:
    tok = model.tokenizer
    ids: set[int] = set()
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    gen_cfg = getattr(model.original_model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    vocab = tok.get_vocab()
    ids.update(vocab[t] for t in _STOP_TEXTS if t in vocab)
    return ids


def _pick(logits_BV: Tensor, gens: list[torch.Generator], cfg: SamplingConfig) -> Tensor:
    if cfg.temperature == 0:
        return logits_BV.argmax(dim=-1)
    logits = logits_BV.double() / cfg.temperature
    if cfg.top_k > 0:
        kth = logits.topk(min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if cfg.top_p < 1.0:
        sp, si = probs.sort(dim=-1, descending=True)
        drop = (sp.cumsum(-1) - sp) >= cfg.top_p  # keep the smallest prefix reaching top_p
        sp = sp.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, si, sp)
        probs = probs / probs.sum(-1, keepdim=True)
    cdf = probs.cumsum(-1).cpu()
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in gens])
    u = u * cdf[:, -1]
    picked = torch.searchsorted(cdf, u[:, None]).squeeze(1).clamp(max=cdf.shape[-1] - 1)
    return picked.to(logits_BV.device)


def _start_batch(
    tracker: PositionTracker, rows: list[list[int]], P: int, after_cols: list[int] | None, device: torch.device
) -> None:
    """Tell the tracker each row's left padding and where its last user turn ends, in batch columns."""
    pads = torch.tensor([P - len(r) for r in rows], device=device)
    after = torch.tensor(
        [(-1 if a < 0 else a + int(p)) for a, p in zip(after_cols or [-1] * len(rows), pads.tolist(), strict=True)],
        device=device,
    )
    tracker.set_batch(pads, P, after)


def _until_stop(out_BT: Tensor, stops: set[int], cfg: SamplingConfig) -> list[list[int]]:
    """Each row's new ids, cut before its first stop token (with stop_at_eos)."""
    result = []
    for b in range(out_BT.shape[0]):
        toks = out_BT[b].tolist()
        if cfg.stop_at_eos:
            for j, t in enumerate(toks):
                if t in stops:
                    toks = toks[:j]
                    break
        result.append(toks)
    return result


@torch.inference_mode()
def sample_rows(
    model: TransformerBridge,
    rows: list[list[int]],
    seeds: list[int],
    cfg: SamplingConfig,
    after_cols: list[int] | None = None,
) -> list[list[int]]:
    """New token ids for each prompt row (one batch, left-padded); steering hooks stay as installed."""
    tok = model.tokenizer
    device = model_device(model)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids_BP, attn_BP = pad_left(rows, pad_id, device)
    B, P = ids_BP.shape
    tracker = tracker_for(model)
    _start_batch(tracker, rows, P, after_cols, device)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    stops = torch.tensor(sorted(stop_ids(model)), device=device)
    hf = model.original_model
    kv = KVCache(hf) if cfg.use_cache else None
    out_BT = torch.empty(B, 0, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    attn = attn_BP
    cur_ids, cur_pos = ids_BP, (attn_BP.cumsum(-1) - 1).clamp(min=0)
    for _ in range(cfg.max_new_tokens):
        tracker.begin_forward(attn.shape[1] - cur_ids.shape[1])
        step = dict(attention_mask=attn, position_ids=cur_pos, logits_to_keep=1)
        if kv is not None:
            out = kv.forward(cur_ids, **step)
        else:
            out = hf(input_ids=cur_ids, use_cache=False, **step)
        nxt = _pick(out.logits[:, -1, :].float(), gens, cfg)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        out_BT = torch.cat([out_BT, nxt[:, None]], dim=1)
        if cfg.stop_at_eos:
            done |= torch.isin(nxt, stops)
            if bool(done.all()):
                break
        attn = torch.cat([attn, torch.ones(B, 1, dtype=attn.dtype, device=device)], dim=1)
        if kv is not None:
            cur_ids, cur_pos = nxt[:, None], cur_pos[:, -1:] + 1
        else:
            cur_ids = torch.cat([ids_BP, out_BT], dim=1)
            cur_pos = (attn.cumsum(-1) - 1).clamp(min=0)
    return _until_stop(out_BT, set(stops.tolist()), cfg)


def _as_prompt_list(prompts: Any) -> list[Prompt]:
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    if prompts and all(isinstance(p, dict) for p in prompts):  # one conversation
        return [prompts]
    if not prompts:
        raise SteeringError("no prompts given")
    return prompts


def _seeds(seed: int | Sequence[int], n: int) -> list[int]:
    seeds = [int(seed)] * n if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != n:
        raise SteeringError(f"got {len(seeds)} seeds for {n} prompts; pass one seed or one per prompt")
    return seeds


def _generate_rows(
    model: TransformerBridge,
    steering: Steering,
    plist: list[Prompt],
    seeds: list[int],
    rows: list[list[int]],
    after: list[int],
    cfg: SamplingConfig,
    *,
    compare: bool,
    batch_size: int,
) -> Generations:
    """Sample every row in batches, steered and (with compare) with `steering` paused."""
    tok = model.tokenizer
    rseeds = [row_seed(s, r) for s, r in zip(seeds, rows, strict=True)]
    results = Generations()
    for i in range(0, len(rows), batch_size):
        sl = slice(i, i + batch_size)
        steered = sample_rows(model, rows[sl], rseeds[sl], cfg, after[sl])
        unsteered: list[list[int]] | list[None] = [None] * len(steered)
        if compare:
            with steering.paused():
                unsteered = sample_rows(model, rows[sl], rseeds[sl], cfg, after[sl])
        for j, (s_ids, u_ids) in enumerate(zip(steered, unsteered, strict=True)):
            k = i + j
            results.append(
                Generation(
                    prompt=plist[k],
                    seed=seeds[k],
                    steered=tok.decode(s_ids, skip_special_tokens=True),
                    unsteered=None if u_ids is None else tok.decode(u_ids, skip_special_tokens=True),
                    steered_ids=s_ids,
                    unsteered_ids=u_ids,
                    prompt_ids=rows[k],
                )
            )
    return results


def generate(
    model: TransformerBridge,
    prompts: Any,
    interventions: Any = None,
    *,
    compare: bool = True,
    seed: int | Sequence[int] = 0,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    chat: bool = True,
    system_prompt: str | None = None,
    batch_size: int = 8,
    use_cache: bool = True,
    stop_at_eos: bool = True,
) -> Generations:
    """Generate with interventions (and, with compare=True, without them) for every prompt.

    `prompts`: a string, a list of strings, or chat conversations ([{"role","content"}...]).
    `interventions`: None, a FeatureSteering / VectorSteering, a list, or (sae, {feature: edit}).
    `seed`: one int for all prompts, or one per prompt. Everything is validated before the
    first token is generated. Steering already active through `steering.steer` applies too
    (and is paused for the unsteered column).
    """
    cfg = SamplingConfig(max_new_tokens, temperature, top_p, top_k, use_cache, stop_at_eos)
    if batch_size < 1:
        raise SteeringError(f"batch_size must be >= 1, got {batch_size}")
    plist = _as_prompt_list(prompts)
    seeds = _seeds(seed, len(plist))
    tok = model.tokenizer
    rows = [render(tok, p, chat=chat, system_prompt=system_prompt) for p in plist]
    header = generation_header_ids(tok)
    after = [last_occurrence(r, header) if header else -1 for r in rows]
    ivs = as_interventions(interventions)
    if any(iv.positions == "after_last_user" for iv in ivs) and min(after) < 0:
        raise SteeringError(
            "positions='after_last_user' needs chat prompts with an assistant turn; use chat=True "
            "or positions='generated'"
        )
    tracker = tracker_for(model)
    with Steering(model, ivs) as steering:  # validates every intervention first
        was_explicit, tracker.explicit = tracker.explicit, True
        try:
            return _generate_rows(model, steering, plist, seeds, rows, after, cfg, compare=compare,
                                  batch_size=batch_size)
        finally:
            tracker.explicit = was_explicit
            tracker.reset()
