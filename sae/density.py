"""Dead and dense latents over their own token budget (`EvalConfig.density_tokens`).

Reconstruction metrics settle within tens of thousands of tokens; whether a rare latent is dead
does not: a latent firing once in 100k tokens looks dead in a 50k-token evaluation. So the
sparsity group can come from a separate, cheaper pass (encode only, no decode) over more tokens:

* the activation cache, read in order, when it holds at least `density_tokens` kept tokens
  (raw activations; these may include tokens the SAE trained on, which is fine for counting
  firing: it is a property of the latents, not a generalisation test);
* otherwise the model, run on the fly over `cfg.data` with the cache's extractor and filter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sae.config import EvalConfig, StoreConfig, to_dict
from sae.eval_metrics import SparsityMetrics, sparsity_metrics

if TYPE_CHECKING:
    from sae.architectures.base import SparseAutoencoder

log = logging.getLogger(__name__)

_ROWS_PER_FORWARD = 32  # rows per forward when activations come from the model (the cache's default)


@torch.no_grad()
def count_firing(sae: SparseAutoencoder, batches: Iterable[Tensor], n_tokens: int, source: str,
                 dense_threshold: float = 0.1) -> SparsityMetrics:
    """The sparsity group from at most `n_tokens` activation rows of `batches`."""
    fire_F = torch.zeros(sae.d_sae, dtype=torch.long, device=sae.device)
    seen, l0_sum, l1_sum = 0, 0.0, 0.0
    for x in batches:
        x = x.reshape(-1, sae.d_in)[: n_tokens - seen].to(sae.device, sae.dtype)
        codes = sae.encode(x)
        active = codes != 0
        fire_F += active.sum(0)
        l0_sum += active.sum(dtype=torch.float64).item()
        l1_sum += codes.float().abs().sum(dtype=torch.float64).item()
        seen += x.shape[0]
        if seen >= n_tokens:
            break
    if seen == 0:
        raise ValueError(f"the density pass read no activations from {source}; check the cache or text source")
    if seen < n_tokens:
        log.warning("the density pass read %d tokens (asked for %d): the source ran out", seen, n_tokens)
    return sparsity_metrics(fire_F, seen, l0_sum, l1_sum, source, dense_threshold)


def density_batches(cfg: EvalConfig, sae: SparseAutoencoder, model_fn: Any) -> tuple[str, Iterator[Tensor]]:
    """(source name, batches) for `cfg.density_tokens` tokens; `model_fn()` gives the model if needed."""
    n = cfg.density_tokens
    if cfg.cache_dir is not None:
        from sae.manifest import CacheManifest
        from sae.store import ActivationStore

        manifest = CacheManifest.read(cfg.cache_dir)
        hook = manifest.hook_or_only(sae.cfg.hook_name or None)
        if hook is not None and manifest.n_kept(hook) >= n:
            store_cfg = StoreConfig(batch_size=cfg.batch_size, shuffle=False, normalize=False,
                                    device=str(sae.device), dtype="float32", held_out_tokens=0)
            store = ActivationStore.from_cache(cfg.cache_dir, hook=hook, cfg=store_cfg, manifest=manifest)
            return "cache", store.batches(n)
        log.info("the cache %s holds fewer than %d tokens at the SAE's hook; the density pass runs the model",
                 cfg.cache_dir, n)

    return "model", model_batches(model_fn(), sae, cfg, n)


def model_batches(model: Any, sae: SparseAutoencoder, cfg: EvalConfig,
                  n_tokens: int | None = None, targets: bool = False) -> Iterator[Any]:
    """Activations at the SAE's hook (`n_tokens` of them; None: cfg.n_tokens), run on the fly with
    the cache's extractor and filter. `targets`: a transcoder's (input, target) pairs of the positions
    both hooks keep (`sae.activation_sources.paired_positions`), as its store trains on them."""
    from sae.activation_sources import paired_positions
    from sae.data import special_ids, token_rows
    from sae.extract import ActivationExtractor
    from sae.model import validate_hook

    extractor = ActivationExtractor(
        model,
        [sae.cfg.hook_name, *([sae.cfg.hook_name_out] if targets else [])],
        **to_dict(cfg.token_filter),
        extra_special_ids=list(special_ids(model.tokenizer, cfg.data)),
    )
    hook = extractor.hooks[0]
    out = validate_hook(model, sae.output_hook) if targets else None
    rows = token_rows(cfg.data, model.tokenizer)
    n_tokens = cfg.n_tokens if n_tokens is None else n_tokens
    seen = 0
    while seen < n_tokens:
        batch = [row for _, row in zip(range(_ROWS_PER_FORWARD), rows, strict=False)]
        if not batch:
            log.warning("text ran out after %d tokens (asked for %d)", seen, n_tokens)
            break
        res = extractor(torch.stack(batch))
        if out is None:
            x = res.acts[hook][: n_tokens - seen]
            seen += x.shape[0]
            yield x
            continue
        maps = paired_positions(res.keep[hook], res.keep[out])
        x, y = (res.acts[hook], res.acts[out]) if maps is None else (res.acts[hook][maps[0]], res.acts[out][maps[1]])
        x, y = x[: n_tokens - seen], y[: n_tokens - seen]
        seen += x.shape[0]
        yield x, y
