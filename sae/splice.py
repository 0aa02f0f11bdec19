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

    hook = validate_hook(model, sae.cfg.hook_name)
    token_filter = _token_filter(model, hook, cfg)
    device = model_device(model)
    totals: Counter[str] = Counter()
    for tokens_BT in tqdm(batches, desc="CE", unit="batch", disable=not progress):
        totals.update(_splice_batch(model, sae, hook, token_filter, tokens_BT.to(device)))
    if totals["rows"] == 0:
        raise ValueError("the CE pass got no token rows; give tokens= or a data source with text")
    return _downstream(totals)


def _splice_batch(
    model: Any, sae: SparseAutoencoder, hook: str, token_filter: TokenFilter, tokens_BT: Tensor
) -> dict[str, float]:
    """Summed CE / KL of one batch under the three runs, and the position counts."""
    captured: dict[str, Tensor] = {}

    def capture(act: Tensor, hook: Any) -> None:
        captured["act"] = act.detach()

    clean = model.run_with_hooks(tokens_BT, fwd_hooks=[(hook, capture)], return_type="logits")
    if "act" not in captured:
        raise RuntimeError(f"hook {hook!r} never fired during the forward pass; is it a hook of this model?")
    check_width(math.prod(captured["act"].shape[2:]), sae)  # [B, T, ...]
    kept = token_filter(tokens_BT, captured["act"])
    mask = kept.keep.view(*kept.keep.shape, *[1] * (captured["act"].dim() - 2))

    def splice(act: Tensor, hook: Any) -> Tensor:
        flat = act.reshape(-1, sae.d_in).to(sae.device, sae.dtype)
        recon = sae.decode(sae.encode(flat)).reshape(act.shape).to(act.device, act.dtype)
        return torch.where(mask, recon, act)

    def zero(act: Tensor, hook: Any) -> Tensor:
        return torch.where(mask, torch.zeros_like(act), act)

    clean_logp = torch.log_softmax(clean.float(), dim=-1)
    sums = {"clean": next_token_ce(clean, tokens_BT).sum().item()}
    del clean
    for name, fn in (("sae", splice), ("zero", zero)):
        logits = model.run_with_hooks(tokens_BT, fwd_hooks=[(hook, fn)], return_type="logits")
        sums[name] = next_token_ce(logits, tokens_BT).sum().item()
        sums[f"kl_{name}"] = kl_per_position(clean_logp, logits).sum().item()
        del logits
    B, T = tokens_BT.shape
    counts = {"rows": B, "pred": B * (T - 1), "pos": B * T, "spliced": int(kept.keep.sum()),
              "special": kept.n_special, "outlier": kept.n_outlier}
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
