"""Held-out evaluation of an SAE: reconstruction, sparsity, and what splicing it in costs the model.

    result = sae.evaluate(sae_or_path, model=None, cfg=EvalConfig(...), acts=None)
    result.to_dict()   # JSON-ready, with a `schema` block that describes every field
    print(result.summary())

Reconstruction and sparsity metrics (`sae.metrics` defines each) come from, in order of
preference: `acts` (a tensor [N, d_in] or an iterable of batches), the activation cache
`cfg.cache_dir` (its last `n_tokens`: the tail a trainer with `store.held_out_tokens` never
trains on; raw activations, since a saved SAE has the normalisation folded into its weights),
or the model run on the fly over `cfg.data` with the cache's own extractor and token filter
(special tokens and norm outliers dropped). Everything is computed in fp32, whatever the SAE's
dtype. `sae.metrics` defines every number and `EvalResult`, the JSON it becomes.

CE / KL (`cfg.ce_batches` > 0): the model runs on token rows three times: clean, with the
SAE's reconstruction spliced in at `sae.cfg.hook_name`, and with that activation zero-ablated.
Splice policy: positions holding a special token (BOS, separators) or whose activation norm
exceeds `max_norm_ratio` x its row's median keep their ORIGINAL activation in both the SAE and
the zero-ablation runs. SAELens splices every position; but the BOS residual has norm ~23,000
(median ~170), the SAE never saw such tokens in training (the cache drops them), and replacing
them ruins the loss for reasons that say nothing about the SAE. The loss is still scored on
every next-token prediction of the row. The counts of kept positions are in the result.
Rows come from `cfg.data`, after skipping the rows the cache was built from (`skip_rows`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sae.config import DEFAULT_MODEL, EvalConfig, StoreConfig, to_dict
from sae.devices import model_device
from sae.metrics import (
    DownstreamMetrics,
    EvalResult,
    ReconstructionAccumulator,
    kl_per_position,
    load_eval,
    next_token_ce,
    recovered,
    save_density_plot,
)

if TYPE_CHECKING:
    from sae.architectures.base import SparseAutoencoder
    from sae.token_filter import TokenFilter

__all__ = ["EvalResult", "evaluate", "load_eval", "save_density_plot", "splice_ce"]

log = logging.getLogger(__name__)

_ROWS_PER_FORWARD = (
    32  # rows per forward when activations come from the model (the cache's default)
)
SPLICE_POLICY = (
    "all positions except special tokens (residual hooks) and tokens whose norm exceeds "
    "max_norm_ratio x their row's median (those keep their original activation); loss over "
    "every next-token prediction"
)


# --------------------------------------------------------------------------- entry point


def evaluate(
    sae: SparseAutoencoder | str | Path | None = None,
    model: Any = None,
    cfg: EvalConfig | None = None,
    *,
    acts: Tensor | Iterable[Tensor] | None = None,
    tokens: Tensor | None = None,
    progress: bool = False,
) -> EvalResult:
    """Evaluate an SAE (object or checkpoint folder; None: `cfg.sae_path`). See the module doc.

    `tokens` ([rows, T] LongTensor) replaces `cfg.data` as the text of the CE pass. When
    `cfg.out_path` is set, the JSON and the density plot (HTML, PNG if possible) are written.
    """
    cfg = dataclasses.replace(cfg) if cfg is not None else EvalConfig()  # filled-in copy, reported
    start = time.perf_counter()
    sae_obj, sae_path = _resolve_sae(sae, cfg)
    sae_obj.eval()

    acc = ReconstructionAccumulator(sae_obj.d_in, sae_obj.d_sae, device=sae_obj.device)
    if acts is not None:
        source, batches = "acts", _batches_from_acts(acts, cfg.batch_size, cfg.n_tokens)
    elif cfg.cache_dir is not None or _auto_cache(cfg, sae_path):
        train_cache, held = _training_split(sae_path)
        held_by_training = held if _same_dir(train_cache, cfg.cache_dir) else None
        source, batches = _cache_batches(cfg, sae_obj, held_by_training)
    else:
        model = model if model is not None else _load_model(cfg, sae_obj)
        source, batches = "model", _model_batches(model, sae_obj, cfg)
    for x in _progress(batches, progress, "reconstruction"):
        _reconstruct_into(acc, sae_obj, x)
    recon, sparsity = acc.results(source, cfg.dense_threshold)

    downstream = None
    if cfg.ce_batches > 0:
        model = model if model is not None else _load_model(cfg, sae_obj)
        rows = _ce_rows(model, cfg, tokens)
        downstream = splice_ce(model, sae_obj, rows, cfg, progress=progress)

    result = EvalResult(
        sae=_sae_info(sae_obj, sae_path),
        reconstruction=recon,
        sparsity=sparsity,
        downstream=downstream,
        config=to_dict(cfg),
        feature_density=acc.feature_density(),
    )
    result.seconds = time.perf_counter() - start
    if cfg.out_path:
        out = Path(cfg.out_path)
        result.plots = save_density_plot(
            result, out.with_name(out.stem + "_density"), png=cfg.save_png
        )
        result.save(out)
    return result


# --------------------------------------------------------------------------- reconstruction


def _auto_cache(cfg: EvalConfig, sae_path: str | None) -> bool:
    """No cache given: use the training cache's held-out tail when the run reserved one."""
    train_cache, held = _training_split(sae_path)
    if held <= 0 or train_cache is None or not (Path(train_cache) / "manifest.json").exists():
        return False
    cfg.cache_dir = train_cache
    if cfg.n_tokens > held:
        log.info(
            "evaluating on the %d held-out tokens training reserved (asked for %d)",
            held,
            cfg.n_tokens,
        )
        cfg.n_tokens = held
    return True


def _check_width(width: int, sae: SparseAutoencoder) -> None:
    """A reshape to d_in would silently turn activations of another width into garbage metrics."""
    if width != sae.d_in:
        raise ValueError(
            f"the activations at {sae.cfg.hook_name!r} have width {width} but the SAE expects d_in={sae.d_in}: "
            f"it was trained on another model or hook (its cfg.json says model {sae.cfg.model_name!r}). "
            "Evaluate it with that model (`saekit eval SAE model.name=NAME`) or pick the SAE of this model's hook"
        )


@torch.no_grad()
def _reconstruct_into(acc: ReconstructionAccumulator, sae: SparseAutoencoder, x: Tensor) -> None:
    _check_width(math.prod(x.shape[1:]), sae)
    x = x.reshape(-1, sae.d_in).to(sae.device)
    codes = sae.encode(x.to(sae.dtype))
    x_hat = sae.decode(codes)
    acc.update(x.float(), codes, x_hat.float())


def _batches_from_acts(
    acts: Tensor | Iterable[Tensor], batch_size: int, n_tokens: int
) -> Iterator[Tensor]:
    """Batches of at most `batch_size` rows from a tensor or an iterable; all of a given tensor."""
    if isinstance(acts, Tensor):
        flat = acts.reshape(-1, acts.shape[-1])
        for i in range(0, flat.shape[0], batch_size):
            yield flat[i : i + batch_size]
        return
    seen = 0
    for batch in acts:
        yield batch
        seen += batch.reshape(-1, batch.shape[-1]).shape[0]
        if seen >= n_tokens:
            return


def _cache_batches(
    cfg: EvalConfig, sae: SparseAutoencoder, held_by_training: int | None
) -> tuple[str, Iterator[Tensor]]:
    """The LAST `n_tokens` of the cache: the part a trainer with `store.held_out_tokens` never saw."""
    from sae.shards import read_manifest
    from sae.store import ActivationStore

    hook = sae.cfg.hook_name or None
    manifest = read_manifest(cfg.cache_dir)
    stats = manifest.get("hook_stats", {}).get(hook or (manifest.get("hooks") or [""])[0], {})
    total = int(stats.get("n_kept", cfg.n_tokens + 1))
    n = min(cfg.n_tokens, max(total - 1, 1))
    store_cfg = StoreConfig(
        batch_size=cfg.batch_size,
        shuffle=False,
        normalize=False,
        device=str(sae.device),
        dtype="float32",
        held_out_tokens=n,
    )
    store = ActivationStore.from_cache(cfg.cache_dir, hook=hook, cfg=store_cfg)
    if store.d_in != sae.d_in:
        raise ValueError(
            f"cache {cfg.cache_dir} holds d_in={store.d_in} activations at {store.hook!r} but the SAE has "
            f"d_in={sae.d_in} (trained on {sae.cfg.hook_name!r}); point --cache at a cache of that hook"
        )
    x = store.held_out(n, raw=True)
    if held_by_training is not None and n <= held_by_training:
        source = "cache-held-out"
    else:
        source = "cache-tail"
        log.warning(
            "evaluating on the last %d tokens of %s; the SAE's checkpoint does not show that training held "
            "them out (train with store.held_out_tokens >= %d for a clean held-out evaluation)",
            n,
            cfg.cache_dir,
            n,
        )
    return source, _batches_from_acts(x, cfg.batch_size, n)


def _training_split(path: str | None) -> tuple[str | None, int]:
    """(cache_dir, held_out_tokens) of the run that trained the SAE at `path`, when recorded.

    The trainer writes `train_config.json` into its out_dir: the SAE's folder, or its parent
    when one run trained several SAEs.
    """
    if path is None:
        return None, 0
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    for candidate in (folder / "train_config.json", folder.parent / "train_config.json"):
        try:
            doc = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        held = (doc.get("store") or {}).get("held_out_tokens") or 0
        return doc.get("cache_dir"), int(held)
    return None, 0


def _same_dir(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def _token_filter(model: Any, hook: str, cfg: EvalConfig) -> TokenFilter:
    """The cache's filter at `hook`, with the data's BOS and separator counted as special too."""
    from sae.data import special_ids
    from sae.token_filter import TokenFilter

    return TokenFilter(
        model,
        hook,
        **to_dict(cfg.token_filter),
        extra_special_ids=special_ids(model.tokenizer, cfg.data),
    )


def _model_batches(model: Any, sae: SparseAutoencoder, cfg: EvalConfig) -> Iterator[Tensor]:
    """Activations at the SAE's hook, run on the fly with the cache's extractor and filter."""
    from sae.data import special_ids, token_rows
    from sae.extract import ActivationExtractor

    extractor = ActivationExtractor(
        model,
        [sae.cfg.hook_name],
        **to_dict(cfg.token_filter),
        extra_special_ids=list(special_ids(model.tokenizer, cfg.data)),
    )
    hook = extractor.hooks[0]
    rows = token_rows(cfg.data, model.tokenizer)
    seen = 0
    while seen < cfg.n_tokens:
        batch = [row for _, row in zip(range(_ROWS_PER_FORWARD), rows, strict=False)]
        if not batch:
            log.warning("text ran out after %d tokens (asked for %d)", seen, cfg.n_tokens)
            break
        x = extractor(torch.stack(batch)).acts[hook][: cfg.n_tokens - seen]
        seen += x.shape[0]
        yield x


# --------------------------------------------------------------------------- CE / KL


def _ce_rows(model: Any, cfg: EvalConfig, tokens: Tensor | None) -> Iterator[Tensor]:
    """Batches [ce_batch_size, T] of token rows for the CE pass."""
    n_rows = cfg.ce_batches * cfg.ce_batch_size
    if tokens is not None:
        if tokens.ndim != 2 or tokens.dtype != torch.long:
            raise ValueError(
                f"tokens must be a LongTensor [rows, T], got {tuple(tokens.shape)} {tokens.dtype}"
            )
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
        batch = [
            row for _, row in zip(range(min(cfg.ce_batch_size, n_rows - got)), rows, strict=False)
        ]
        if not batch:
            if got == 0 and cfg.cache_dir is not None and skip > 0:
                # The cache took the whole source: its own last rows are the held-out tail.
                log.info("no text after the cache's %d rows of %r; the CE pass uses the cache's last %d rows",
                         skip, cfg.data.source, n_rows)
                yield from _ce_rows(model, cfg, tail_token_rows(cfg.cache_dir, n_rows))
                return
            if got == 0:
                raise ValueError(
                    f"no text left for the CE pass after skipping {skip} rows of {cfg.data.source!r}; "
                    "set skip_rows=0 (evaluates on text the SAE may have trained on) or point data.source elsewhere"
                )
            log.warning("text ran out after %d CE rows (asked for %d)", got, n_rows)
            return
        got += len(batch)
        yield torch.stack(batch)


def _rows_used_by_cache(cache_dir: str | None) -> int:
    """Token rows the cache consumed, so the CE text is text the SAE never trained on."""
    if cache_dir is None:
        return 0
    try:
        from sae.cache import read_manifest

        manifest = read_manifest(cache_dir)
    except Exception as e:  # a missing or foreign manifest only costs held-out-ness
        log.warning(
            "could not read the cache manifest of %s (%s); CE text may overlap training",
            cache_dir,
            e,
        )
        return 0
    for key in ("n_rows", "rows", "rows_done", "n_rows_done"):
        if isinstance(manifest.get(key), int):
            return int(manifest[key])
    return 0


@torch.no_grad()
def splice_ce(
    model: Any,
    sae: SparseAutoencoder,
    batches: Iterable[Tensor],
    cfg: EvalConfig,
    progress: bool = False,
) -> DownstreamMetrics:
    """CE and KL of the model clean, with the SAE spliced in, and zero-ablated (module doc)."""
    from sae.model import validate_hook

    hook = validate_hook(model, sae.cfg.hook_name)
    token_filter = _token_filter(model, hook, cfg)
    device = model_device(model)
    sums = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "kl_sae": 0.0, "kl_zero": 0.0}
    n_pred = n_pos = n_rows = n_spliced = n_special = n_outlier = 0
    for tokens in _progress(batches, progress, "CE"):
        tokens = tokens.to(device)
        captured: dict[str, Tensor] = {}

        def capture(act: Tensor, hook: Any, captured: dict[str, Tensor] = captured) -> None:
            captured["act"] = act.detach()

        clean = model.run_with_hooks(tokens, fwd_hooks=[(hook, capture)], return_type="logits")
        if "act" not in captured:
            raise RuntimeError(
                f"hook {hook!r} never fired during the forward pass; is it a hook of this model?"
            )
        _check_width(math.prod(captured["act"].shape[2:]), sae)  # [B, T, ...]
        kept = token_filter(tokens, captured["act"])
        mask_BT = kept.keep
        mask = mask_BT.view(*mask_BT.shape, *[1] * (captured["act"].dim() - 2))

        def splice(act: Tensor, hook: Any, mask: Tensor = mask) -> Tensor:
            flat = act.reshape(-1, sae.d_in).to(sae.device, sae.dtype)
            recon = sae.decode(sae.encode(flat)).reshape(act.shape).to(act.device, act.dtype)
            return torch.where(mask, recon, act)

        def zero(act: Tensor, hook: Any, mask: Tensor = mask) -> Tensor:
            return torch.where(mask, torch.zeros_like(act), act)

        clean_logp = torch.log_softmax(clean.float(), dim=-1)
        sums["clean"] += next_token_ce(clean, tokens).sum().item()
        del clean
        for name, fn in (("sae", splice), ("zero", zero)):
            logits = model.run_with_hooks(tokens, fwd_hooks=[(hook, fn)], return_type="logits")
            sums[name] += next_token_ce(logits, tokens).sum().item()
            sums[f"kl_{name}"] += kl_per_position(clean_logp, logits).sum().item()
            del logits
        n_rows += tokens.shape[0]
        n_pred += tokens.shape[0] * (tokens.shape[1] - 1)
        n_pos += tokens.numel()
        n_spliced += int(mask_BT.sum())
        n_special += kept.n_special
        n_outlier += kept.n_outlier
    if n_rows == 0:
        raise ValueError("the CE pass got no token rows; give tokens= or a data source with text")
    ce = {k: sums[k] / n_pred for k in ("clean", "sae", "zero")}
    kl_sae, kl_zero = sums["kl_sae"] / n_pos, sums["kl_zero"] / n_pos
    return DownstreamMetrics(
        n_tokens=n_pred,
        n_rows=n_rows,
        n_spliced=n_spliced,
        n_kept_special=n_special,
        n_kept_outlier=n_outlier,
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


# --------------------------------------------------------------------------- helpers


def _resolve_sae(sae: Any, cfg: EvalConfig) -> tuple[SparseAutoencoder, str | None]:
    from sae.architectures.base import SparseAutoencoder

    if isinstance(sae, SparseAutoencoder):
        if cfg.device is not None:
            sae = sae.to(cfg.device)
        return sae, cfg.sae_path  # the folder it came from, if given: its training split
    path = sae if sae is not None else cfg.sae_path
    if not isinstance(path, (str, Path)):
        raise TypeError(
            f"sae must be a SparseAutoencoder or a checkpoint folder, got {type(sae).__name__}"
        )
    from sae.checkpoint import load_sae

    return load_sae(path, device=cfg.device), str(path)


def _load_model(cfg: EvalConfig, sae: SparseAutoencoder) -> Any:
    from sae.model import load_model

    name = cfg.model.name
    # The SAE knows the model it was trained on; an explicit non-default name wins.
    if name == DEFAULT_MODEL and sae.cfg.model_name not in ("", "unknown", None):
        name = sae.cfg.model_name
    log.info("loading model %s for evaluation", name)
    return load_model(name, device=cfg.model.device or cfg.device, dtype=cfg.model.dtype)


def _sae_info(sae: SparseAutoencoder, path: str | None) -> dict[str, Any]:
    return {"path": path, **sae.summary()}


def _progress(it: Iterable[Tensor], enabled: bool, desc: str) -> Iterable[Tensor]:
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, unit="batch")


class _CallableModule(type(os)):
    """`import sae.evaluate` binds the name `sae.evaluate` to this module, shadowing the function
    that `sae/__init__` exports under the same name; calling the module calls the function, so
    `sae.evaluate(...)` works whatever was imported first."""

    def __call__(self, *args: Any, **kwargs: Any) -> EvalResult:
        return evaluate(*args, **kwargs)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallableModule
