"""What splicing an SAE into the model costs: CE and KL, clean vs SAE vs zero-ablated.

`splice_ce` runs the model on token rows three times: clean, with the SAE's reconstruction
spliced in at `sae.cfg.hook_name`, and with that activation zero-ablated.
Splice policy: positions holding a special token (BOS, separators) or whose activation norm
exceeds `max_norm_ratio` x its row's median keep their ORIGINAL activation in both the SAE and
the zero-ablation runs. SAELens splices every position; but the BOS residual has norm ~23,000
(median ~170), the SAE never saw such tokens in training (the cache drops them), and replacing
them ruins the loss for reasons that say nothing about the SAE. The loss is still scored on
every next-token prediction of the row. The counts of kept positions are in the result.
`ce_rows` gives the rows: `cfg.data` after the rows the cache was built from (`skip_rows`).

A transcoder is spliced in place of what it reconstructs: in the same forward pass its input is read
at `hook_name` and its output replaces the activation at `hook_name_out` (e.g. the MLP's output
computed from the MLP's input), and the baseline zero-ablates `hook_name_out`. Positions are spliced
where both hooks' filters keep them, as the paired store trains on them.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sae.config import EvalConfig, to_dict
from sae.devices import model_device
from sae.eval_metrics import DownstreamMetrics, kl_per_position, next_token_ce, recovered

if TYPE_CHECKING:
    from sae.architectures.base import SparseAutoencoder
    from sae.token_filter import TokenFilter

log = logging.getLogger(__name__)

SPLICE_POLICY = (
    "all positions except special tokens (residual hooks) and tokens whose norm exceeds "
    "max_norm_ratio x their row's median (those keep their original activation); loss over "
    "every next-token prediction"
)


def check_width(width: int, sae: SparseAutoencoder) -> None:
    """A reshape to d_in would silently turn activations of another width into garbage metrics."""
    if width != sae.d_in:
        raise ValueError(
            f"the activations at {sae.cfg.hook_name!r} have width {width} but the SAE expects d_in={sae.d_in}: "
            f"it was trained on another model or hook (its cfg.json says model {sae.cfg.model_name!r}). "
            "Evaluate it with that model (`saekit eval SAE model.name=NAME`) or pick the SAE of this model's hook"
        )


@torch.no_grad()
def splice_ce(
    model: Any,
    sae: SparseAutoencoder,
    batches: Iterable[Tensor],
    cfg: EvalConfig,
    progress: bool = False,
) -> DownstreamMetrics:
    """CE and KL of the model clean, with the SAE spliced in, and zero-ablated (module doc)."""
    from tqdm.auto import tqdm

    from sae.model import validate_hook

    hooks = [validate_hook(model, h) for h in dict.fromkeys([sae.cfg.hook_name, sae.output_hook])]
    filters = [_token_filter(model, h, cfg) for h in hooks]
    device = model_device(model)
    totals: Counter[str] = Counter()
    for tokens_BT in tqdm(batches, desc="CE", unit="batch", disable=not progress):
        totals.update(_splice_batch(model, sae, hooks, filters, tokens_BT.to(device)))
    if totals["rows"] == 0:
        raise ValueError("the CE pass got no token rows; give tokens= or a data source with text")
    return _downstream(totals)


def _splice_batch(
    model: Any, sae: SparseAutoencoder, hooks: list[str], filters: list[TokenFilter], tokens_BT: Tensor
) -> dict[str, float]:
    """Summed CE / KL of one batch under the three runs, and the position counts. `hooks`: the SAE's
    hook, or a transcoder's input and output hooks (the output is the one replaced)."""
    captured: dict[str, Tensor] = {}

    def capture(name: str) -> Any:
        def fn(act: Tensor, hook: Any) -> None:
            captured[name] = act.detach()

        return fn

    clean = model.run_with_hooks(tokens_BT, fwd_hooks=[(h, capture(h)) for h in hooks], return_type="logits")
    for h in hooks:
        if h not in captured:
            raise RuntimeError(f"hook {h!r} never fired during the forward pass; is it a hook of this model?")
    x_in, out_hook = captured[hooks[0]], hooks[-1]
    check_width(math.prod(x_in.shape[2:]), sae)  # [B, T, ...]
    masks = [f(tokens_BT, captured[h]) for f, h in zip(filters, hooks, strict=True)]
    keep = masks[0].keep if len(masks) == 1 else masks[0].keep & masks[1].keep
    mask = keep.view(*keep.shape, *[1] * (captured[out_hook].dim() - 2))
    reading: dict[str, Tensor] = {}

    def read(act: Tensor, hook: Any) -> None:  # a transcoder's input, upstream of what it replaces
        reading["x"] = act

    def splice(act: Tensor, hook: Any) -> Tensor:
        x = reading.pop("x", act) if len(hooks) > 1 else act
        recon = sae.reconstruct(x.reshape(-1, sae.d_in).to(sae.device, sae.dtype))
        return torch.where(mask, recon.reshape(act.shape).to(act.device, act.dtype), act)

    def zero(act: Tensor, hook: Any) -> Tensor:
        return torch.where(mask, torch.zeros_like(act), act)

    clean_logp = torch.log_softmax(clean.float(), dim=-1)
    sums = {"clean": next_token_ce(clean, tokens_BT).sum().item()}
    del clean
    readers = [(hooks[0], read)] if len(hooks) > 1 else []
    for name, fn in (("sae", splice), ("zero", zero)):
        logits = model.run_with_hooks(tokens_BT, fwd_hooks=[*readers, (out_hook, fn)], return_type="logits")
        sums[name] = next_token_ce(logits, tokens_BT).sum().item()
        sums[f"kl_{name}"] = kl_per_position(clean_logp, logits).sum().item()
        del logits
    B, T = tokens_BT.shape
    special = masks[-1].n_special  # at the replaced hook; a transcoder's other unspliced positions count as outliers
    outlier = masks[0].n_outlier if len(masks) == 1 else B * T - int(keep.sum()) - special
    counts = {"rows": B, "pred": B * (T - 1), "pos": B * T, "spliced": int(keep.sum()),
              "special": special, "outlier": outlier}
    return {**sums, **counts}


def _downstream(t: Counter[str]) -> DownstreamMetrics:
    ce = {k: t[k] / t["pred"] for k in ("clean", "sae", "zero")}
    kl_sae, kl_zero = t["kl_sae"] / t["pos"], t["kl_zero"] / t["pos"]
    return DownstreamMetrics(
        n_tokens=int(t["pred"]),
        n_rows=int(t["rows"]),
        n_spliced=int(t["spliced"]),
        n_kept_special=int(t["special"]),
        n_kept_outlier=int(t["outlier"]),
        ce_loss_clean=ce["clean"],
        ce_loss_sae=ce["sae"],
        ce_loss_zero=ce["zero"],
        ce_loss_increase=ce["sae"] - ce["clean"],
        ce_loss_recovered=recovered(ce["zero"], ce["sae"], ce["clean"]),
        kl_div_sae=kl_sae,
        kl_div_zero=kl_zero,
        kl_div_recovered=recovered(kl_zero, kl_sae, 0.0),
        splice_policy=SPLICE_POLICY,
    )


def _token_filter(model: Any, hook: str, cfg: EvalConfig) -> TokenFilter:
    """The cache's filter at `hook`, with the data's BOS and separator counted as special too."""
    from sae.data import special_ids
    from sae.token_filter import TokenFilter

    return TokenFilter(
        model, hook, **to_dict(cfg.token_filter), extra_special_ids=special_ids(model.tokenizer, cfg.data)
    )


# --------------------------------------------------------------------------- the rows


def ce_rows(model: Any, cfg: EvalConfig, tokens: Tensor | None) -> Iterator[Tensor]:
    """Batches [ce_batch_size, T] of token rows for the CE pass."""
    n_rows = cfg.ce_batches * cfg.ce_batch_size
    if tokens is not None:
        if tokens.ndim != 2 or tokens.dtype != torch.long:
            raise ValueError(f"tokens must be a LongTensor [rows, T], got {tuple(tokens.shape)} {tokens.dtype}")
        for i in range(0, min(n_rows, tokens.shape[0]), cfg.ce_batch_size):
            yield tokens[i : min(i + cfg.ce_batch_size, n_rows)]
        return
    from sae.data import token_rows
    from sae.shards import tail_token_rows

    skip = cfg.skip_rows if cfg.skip_rows is not None else _rows_used_by_cache(cfg.cache_dir)
    rows = token_rows(cfg.data, model.tokenizer)
    for _ in zip(range(skip), rows, strict=False):
        pass
    got = 0
    while got < n_rows:
        batch = [row for _, row in zip(range(min(cfg.ce_batch_size, n_rows - got)), rows, strict=False)]
        if batch:
            got += len(batch)
            yield torch.stack(batch)
        elif got == 0 and cfg.cache_dir is not None and skip > 0:
            # The cache took the whole source: its own last rows are the held-out tail.
            log.info("no text after the cache's %d rows of %r; the CE pass uses the cache's last %d rows",
                     skip, cfg.data.source, n_rows)
            yield from ce_rows(model, cfg, tail_token_rows(cfg.cache_dir, n_rows))
            return
        elif got == 0:
            raise ValueError(
                f"no text left for the CE pass after skipping {skip} rows of {cfg.data.source!r}; "
                "set skip_rows=0 (evaluates on text the SAE may have trained on) or point data.source elsewhere"
            )
        else:
            log.warning("text ran out after %d CE rows (asked for %d)", got, n_rows)
            return


def _rows_used_by_cache(cache_dir: str | None) -> int:
    """Token rows the cache consumed, so the CE text is text the SAE never trained on."""
    if cache_dir is None:
        return 0
    from sae.manifest import CacheManifest
    from sae.shards import CacheError

    try:
        return CacheManifest.read(cache_dir).n_rows
    except CacheError as e:  # a missing or damaged manifest only costs held-out-ness
        log.warning("could not read the cache manifest of %s (%s); CE text may overlap training", cache_dir, e)
        return 0
