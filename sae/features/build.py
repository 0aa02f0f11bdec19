"""`build_feature_db`: one streaming pass over N tokens -> one SQLite feature database.

Per batch of token rows: the model runs up to the SAE's hook (`stop_at_layer`), the SAE
encodes the valid tokens, and `FeatureAccumulator` updates its fixed-size state from the
firing events. At the end the decoder-only quantities (logit lens, decoder neighbours) and
co-occurrence rankings are computed and everything is written at once (`write.py`). Memory is
bounded by d_sae, never by N; see `schema.py` for what is stored and `reservoir.py` for how
exact histograms and interval samples come out of a single pass.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sae.config import FeaturesConfig, to_dict
from sae.devices import model_device
from sae.features.accumulate import FeatureAccumulator
from sae.features.lens import LogitLens, decoder_neighbours, logit_lens, unembedding
from sae.features.source import ForwardTimer, cache_batches, model_batches
from sae.features.write import write_feature_db

log = logging.getLogger(__name__)


def sae_fingerprint(sae) -> str:
    """sha256 of the decoder in float32: notices an SAE that changed since its database was built."""
    w = sae.W_dec.detach().float().cpu().contiguous().numpy()
    return hashlib.sha256(w.tobytes()).hexdigest()


_VOCAB_CACHE: dict[tuple, list[str]] = {}


def decode_vocab(tokenizer, vocab_size: int) -> list[str]:
    """Every token id decoded on its own (what the explorer shows for it); cached per tokenizer."""
    key = (getattr(tokenizer, "name_or_path", None), len(tokenizer), vocab_size)
    if key[0] is None or key not in _VOCAB_CACHE:
        texts = tokenizer.batch_decode([[i] for i in range(vocab_size)], skip_special_tokens=False)
        _VOCAB_CACHE[key] = [t if isinstance(t, str) else "" for t in texts]
    return _VOCAB_CACHE[key]


def _load_sae(cfg: FeaturesConfig, device: torch.device):
    try:
        from sae.checkpoint import load_sae
    except ImportError as e:
        raise RuntimeError(f"cannot load the SAE at {cfg.sae_path}: {e}; pass a loaded `sae=` instead") from e
    return load_sae(cfg.sae_path, device=device)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="tok", desc="features", smoothing=0.1)


def _model_and_sae(cfg: FeaturesConfig, model: Any, sae: Any) -> tuple[Any, Any, str]:
    """The model and SAE (loaded when not given, the SAE on the model's device), and the model's name."""
    import sae as sae_lib

    if model is None:
        model = sae_lib.load_model(cfg.model.name, device=cfg.device, dtype=cfg.model.dtype)
    dev = model_device(model)
    if sae is None:
        sae = _load_sae(cfg, dev)
    sae = sae.to(dev).eval()
    sae_lib.validate_hook(model, sae.cfg.hook_name)
    model_name = getattr(model, "saekit_name", cfg.model.name)
    if getattr(sae.cfg, "model_name", model_name) not in (model_name, None):
        log.warning("SAE was trained on %r but the model is %r", sae.cfg.model_name, model_name)
    return model, sae, model_name


def _batches(cfg: FeaturesConfig, model: Any, hook: str, rows: Iterable[Tensor] | None,
             timer: ForwardTimer) -> tuple[Iterable[Any], int]:
    """The batches of the pass (your rows, the activation cache, or the data source) and their row count."""
    import sae as sae_lib

    context = cfg.data.context_size
    if cfg.cache_dir is not None and rows is None:
        from sae.manifest import CacheManifest

        context = CacheManifest.read(cfg.cache_dir).context_size or context
    n_rows = max(1, math.ceil(cfg.n_tokens / context))
    filt = sae_lib.to_dict(cfg.token_filter)
    if rows is not None:
        return model_batches(model, hook, rows, cfg.batch_size, n_rows, timer, **filt), n_rows * context
    if cfg.cache_dir is not None:
        return cache_batches(cfg.cache_dir, hook, cfg.batch_size, n_rows, timer), n_rows * context
    token_rows = sae_lib.token_rows(cfg.data, model.tokenizer)
    return model_batches(model, hook, token_rows, cfg.batch_size, n_rows, timer, **filt), n_rows * context


def _accumulate(cfg: FeaturesConfig, sae: Any, batches: Iterable[Any], dev: torch.device, n_tokens: int,
                progress: bool) -> tuple[FeatureAccumulator, dict[str, float], int]:
    """Encode every batch and feed the accumulator: (accumulator, seconds, context size of the rows)."""
    hook = sae.cfg.hook_name
    acc = FeatureAccumulator(
        sae.cfg.d_sae,
        top_k=cfg.top_k,
        window=cfg.context_window,
        examples_per_interval=cfg.examples_per_interval,
        device=dev,
        seed=cfg.seed,
        cooccurrence=cfg.cooccurrence,
    )
    encode_s = 0.0
    t_start = time.perf_counter()
    bar = _progress(n_tokens, progress)
    context = 0
    for batch in batches:
        if batch.acts.shape[-1] != sae.cfg.d_in:
            raise ValueError(
                f"hook {hook} gives vectors of size {batch.acts.shape[-1]} but the SAE expects d_in={sae.cfg.d_in}: "
                f"the SAE was trained on another model or hook (its cfg.json says model {sae.cfg.model_name!r}); "
                "analyze it with that model (--set model.name=NAME) or pick the SAE of this model's hook"
            )
        t0 = time.perf_counter()
        codes = sae.encode(batch.acts.to(device=dev, dtype=sae.dtype))
        if codes.is_cuda:
            torch.cuda.synchronize()
        encode_s += time.perf_counter() - t0
        acc.update(batch.tokens.to(dev), batch.keep.to(dev), codes)
        context = int(batch.tokens.shape[1])
        if bar is not None:
            bar.update(batch.tokens.numel())
    if bar is not None:
        bar.close()
    if acc.n_rows == 0:
        raise ValueError("the data source yielded no token rows: check --data / the cache")
    return acc, {"encode_s": encode_s, "pass_s": time.perf_counter() - t_start}, context


def _lens(model: Any, W_dec: Tensor, n: int) -> tuple[LogitLens | None, str]:
    """The logit lens of every decoder row, or None and why it was skipped."""
    try:
        W_U, norm_w, centre = unembedding(model)
        if W_U.shape[0] != W_dec.shape[1]:
            return None, f"skipped: the SAE's d_in {W_dec.shape[1]} is not the model's d_model {W_U.shape[0]}"
        lens = logit_lens(W_dec, W_U, norm_w, centre, n=n)
        return lens, f"W_dec through the final norm's weight{' (centred)' if centre else ''} and W_U"
    except AttributeError as e:
        return None, f"skipped: the model has no unembedding ({e})"


def _meta(cfg: FeaturesConfig, sae: Any, model_name: str, acc: FeatureAccumulator, context: int,
          lens_note: str, timings: dict[str, float]) -> dict[str, Any]:
    return {
        "saekit_version": _version(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "sae_path": str(Path(cfg.sae_path).resolve()) if Path(cfg.sae_path).exists() else cfg.sae_path,
        "sae_cfg": to_dict(sae.cfg),
        "sae_fingerprint": sae_fingerprint(sae),
        "model_name": model_name,
        "hook_name": sae.cfg.hook_name,
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        "n_tokens": acc.n_tokens,
        "n_rows": acc.n_rows,
        "context_size": context,
        "n_excluded_tokens": acc.n_excluded,
        "config": to_dict(cfg),
        "cooccurrence": acc.cooccurrence_note,
        "logit_lens": lens_note,
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }


@torch.no_grad()
def build_feature_db(
    cfg: FeaturesConfig,
    model=None,
    sae=None,
    *,
    rows: Iterable[Tensor] | None = None,
    progress: bool = True,
) -> Path:
    """Run the feature pass described by `cfg` and write `cfg.out_path`; returns its path.

    `model`/`sae` default to loading `cfg.model` / `cfg.sae_path`. `rows` (optional) replaces the
    data source with your own token rows (1-D LongTensors of equal length, or [B, T] batches).
    """
    out_path = Path(cfg.out_path)
    if out_path.exists() and not cfg.overwrite:
        raise FileExistsError(f"{out_path} already exists; pass --force (overwrite=True) to replace it, or choose another --out")
    model, sae, model_name = _model_and_sae(cfg, model, sae)
    timer = ForwardTimer()
    batches, n_tokens = _batches(cfg, model, sae.cfg.hook_name, rows, timer)
    acc, pass_times, context = _accumulate(cfg, sae, batches, model_device(model), n_tokens, progress)

    t0 = time.perf_counter()
    intervals = acc.intervals.intervals(acc.max_act, cfg.n_intervals)
    W_dec = sae.W_dec.detach()
    t_lens = time.perf_counter()
    lens, lens_note = _lens(model, W_dec, cfg.n_logits)
    lens_s = time.perf_counter() - t_lens
    neighbours = decoder_neighbours(W_dec, n=cfg.n_neighbours)
    cooc = acc.cooc.top(cfg.n_neighbours) if acc.cooc is not None else None
    vocab = decode_vocab(model.tokenizer, int(getattr(model.cfg, "d_vocab", len(model.tokenizer))))
    timings = {"forward_s": timer.seconds, "encode_s": pass_times["encode_s"], "stats_s": acc.seconds,
               "pass_s": pass_times["pass_s"], "finalize_s": time.perf_counter() - t0, "logit_lens_s": lens_s}
    meta = _meta(cfg, sae, model_name, acc, context, lens_note, timings)
    t0 = time.perf_counter()
    path = write_feature_db(
        out_path, acc, intervals, W_dec.norm(dim=1), lens, neighbours, cooc, vocab, meta, overwrite=cfg.overwrite,
    )
    log.info("feature database: %s (%d latents, %d tokens, write %.1fs)", path, acc.d_sae, acc.n_tokens,
             time.perf_counter() - t0)
    return path


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("saekit")
    except Exception:
        return "0.1.0"
