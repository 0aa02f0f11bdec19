"""Held-out evaluation of an SAE: reconstruction, sparsity, and what splicing it in costs the model.

    result = sae.evaluate(sae_or_path, model=None, cfg=EvalConfig(...), acts=None)
    result.to_dict()   # JSON-ready, with a `schema` block that describes every field
    print(result.summary())

Reconstruction and sparsity metrics (`sae.eval_metrics` defines each) come from, in order of
preference: `acts` (a tensor [N, d_in] or an iterable of batches), the activation cache
`cfg.cache_dir` (its last `n_tokens`: the tail a trainer with `store.held_out_tokens` never
trains on; raw activations, since a saved SAE has the normalisation folded into its weights),
or the model run on the fly over `cfg.data` with the cache's own extractor and token filter
(special tokens and norm outliers dropped). Everything is computed in fp32, whatever the SAE's
dtype. CE / KL (`cfg.ce_batches` > 0) come from `sae.splice`.

A transcoder is measured against its target: batches are (input, target) pairs (`acts` may be one
pair of tensors or an iterable of pairs; the cache and the model give pairs of the same positions),
FVU and the other reconstruction metrics compare `sae.reconstruct(input)` with the target, and the
CE pass splices its output in place of `hook_name_out` (`sae.splice`).

Opt-in, slower: `cfg.density_tokens` counts dead / dense latents over their own budget
(`sae.density`); `cfg.probing` adds sparse probing (`sae.sparse_probing`) and `cfg.absorption`
first-letter absorption (`sae.absorption`), both of which run the model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sae.absorption import run_absorption
from sae.config import DEFAULT_MODEL, EvalConfig, StoreConfig, to_dict
from sae.density import count_firing, density_batches, model_batches
from sae.eval_metrics import ReconstructionAccumulator
from sae.eval_result import EvalResult, save_density_plot
from sae.sparse_probing import run_sparse_probing
from sae.splice import ce_rows, check_width, splice_ce

if TYPE_CHECKING:
    from sae.architectures.base import SparseAutoencoder

log = logging.getLogger(__name__)



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
    start = time.perf_counter()
    if cfg is not None and cfg.density_tokens < 0:
        raise ValueError(f"density_tokens must be >= 0 (0: count dead / dense latents over n_tokens), "
                         f"got {cfg.density_tokens}; e.g. --density-tokens 500000")
    sae_obj, sae_path = _resolve_sae(sae, cfg or EvalConfig())
    if sae_obj.is_transcoder and cfg is not None and cfg.absorption:
        raise ValueError("first-letter absorption reads decoder rows in the input's space; a transcoder's decode "
                         f"into {sae_obj.cfg.hook_name_out!r}: evaluate it without --absorption")
    sae_obj.eval()
    cfg = _with_training_held_out(cfg or EvalConfig(), sae_path, given_acts=acts is not None)
    if acts is not None:
        source, batches = "acts", _batches_from_acts(acts, cfg.batch_size, cfg.n_tokens)
    elif cfg.cache_dir is not None:
        source, batches = _cache_batches(cfg, sae_obj, _held_by_training(sae_path, cfg.cache_dir))
    else:
        model = model if model is not None else _load_model(cfg, sae_obj)
        source, batches = "model", model_batches(model, sae_obj, cfg, targets=sae_obj.is_transcoder)
    acc = ReconstructionAccumulator(sae_obj.d_out, sae_obj.d_sae, device=sae_obj.device)
    for x in _bar(batches, progress, "reconstruction"):
        _reconstruct_into(acc, sae_obj, x)
    recon, sparsity = acc.results(source, cfg.dense_threshold)
    the_model = _ModelOnce(model, cfg, sae_obj)
    if cfg.density_tokens > 0:
        density_source, density = density_batches(cfg, sae_obj, the_model)
        sparsity = count_firing(sae_obj, _bar(density, progress, "density"), cfg.density_tokens,
                                density_source, cfg.dense_threshold)
    downstream = None
    if cfg.ce_batches > 0:
        downstream = splice_ce(the_model(), sae_obj, ce_rows(the_model(), cfg, tokens), cfg, progress=progress)
    probing = run_sparse_probing(the_model(), sae_obj, cfg) if cfg.probing else None
    absorbed = run_absorption(the_model(), sae_obj, cfg) if cfg.absorption else None
    result = EvalResult(
        sae={"path": sae_path, **sae_obj.summary()},
        reconstruction=recon,
        sparsity=sparsity,
        downstream=downstream,
        sparse_probing=probing,
        absorption=absorbed,
        config=to_dict(cfg),
        feature_density=acc.feature_density(),
    )
    result.seconds = time.perf_counter() - start
    if cfg.out_path:
        out = Path(cfg.out_path)
        result.plots = save_density_plot(result, out.with_name(out.stem + "_density"), png=cfg.save_png)
        result.save(out)
    return result


# --------------------------------------------------------------------------- where the tokens come from


def _with_training_held_out(cfg: EvalConfig, sae_path: str | None, *, given_acts: bool) -> EvalConfig:
    """The config to run (a copy, reported in the result): with no cache given, the training
    cache's held-out tail when the run that trained the SAE reserved one (and no more of it)."""
    if given_acts or cfg.cache_dir is not None:
        return dataclasses.replace(cfg)
    train_cache, held = _training_split(sae_path)
    if held <= 0 or train_cache is None or not (Path(train_cache) / "manifest.json").exists():
        return dataclasses.replace(cfg)
    if cfg.n_tokens > held:
        log.info("evaluating on the %d held-out tokens training reserved (asked for %d)", held, cfg.n_tokens)
    return dataclasses.replace(cfg, cache_dir=train_cache, n_tokens=min(cfg.n_tokens, held))


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


def _held_by_training(sae_path: str | None, cache_dir: str) -> int | None:
    """How many tail tokens of `cache_dir` the SAE's training held out (None: not this cache)."""
    train_cache, held = _training_split(sae_path)
    same = train_cache is not None and Path(train_cache).resolve() == Path(cache_dir).resolve()
    return held if same else None


@torch.no_grad()
def _reconstruct_into(acc: ReconstructionAccumulator, sae: SparseAutoencoder, batch: Tensor | tuple[Tensor, Tensor]) -> None:
    """Add one batch: the SAE's input, or a transcoder's (input, target) pair."""
    x, y = _split(batch, sae)
    check_width(math.prod(x.shape[1:]), sae)
    x = x.reshape(-1, sae.d_in).to(sae.device)
    y = x if y is None else y.reshape(-1, sae.d_out).to(sae.device)
    codes = sae.encode(x.to(sae.dtype))
    y_hat = sae.decode(codes)
    skip = sae.skip_term(x)
    if skip is not None:
        y_hat = y_hat + skip
    acc.update(y.float(), codes, y_hat.float())


def _split(batch: Tensor | tuple[Tensor, Tensor], sae: SparseAutoencoder) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, Tensor):
        if sae.is_transcoder:
            raise ValueError(
                f"a transcoder is measured against its target: give (input, target) pairs of {sae.cfg.hook_name!r} "
                f"and {sae.cfg.hook_name_out!r} activations (acts=(x, y)), or a cache holding both hooks"
            )
        return batch, None
    x, y = batch
    if x.reshape(-1, x.shape[-1]).shape[0] != y.reshape(-1, y.shape[-1]).shape[0]:
        raise ValueError(f"input and target hold different numbers of tokens ({tuple(x.shape)} vs {tuple(y.shape)})")
    if not sae.is_transcoder:
        raise ValueError(f"an (input, target) pair is for transcoders; this SAE reconstructs {sae.cfg.hook_name!r}: "
                         "give its activations alone")
    return x, y


def _batches_from_acts(acts: Any, batch_size: int, n_tokens: int) -> Iterator[Any]:
    """Batches of at most `batch_size` rows from a tensor (or an (input, target) pair of tensors) or
    an iterable of them; all of a given tensor or pair."""
    if isinstance(acts, Tensor) or (isinstance(acts, tuple) and len(acts) == 2 and isinstance(acts[0], Tensor)):
        parts = [acts] if isinstance(acts, Tensor) else list(acts)
        flat = [t.reshape(-1, t.shape[-1]) for t in parts]
        for i in range(0, flat[0].shape[0], batch_size):
            rows = [t[i : i + batch_size] for t in flat]
            yield rows[0] if isinstance(acts, Tensor) else tuple(rows)
        return
    seen = 0
    for batch in acts:
        yield batch
        first = batch if isinstance(batch, Tensor) else batch[0]
        seen += first.reshape(-1, first.shape[-1]).shape[0]
        if seen >= n_tokens:
            return


def _cache_batches(
    cfg: EvalConfig, sae: SparseAutoencoder, held_by_training: int | None
) -> tuple[str, Iterator[Tensor]]:
    """The LAST `n_tokens` of the cache: the part a trainer with `store.held_out_tokens` never saw."""
    from sae.manifest import CacheManifest
    from sae.store import ActivationStore

    manifest = CacheManifest.read(cfg.cache_dir)
    hook = manifest.hook_or_only(sae.cfg.hook_name or None)
    if hook is None:
        raise ValueError(
            f"the cache at {cfg.cache_dir} holds several hooks {list(manifest.hooks)} and the SAE names none; "
            "set its cfg.hook_name (or evaluate with a cache of one hook)"
        )
    # Leave at least one token for training: the store refuses a split with nothing to train on.
    n = min(cfg.n_tokens, max(manifest.n_kept(hook) - 1, 1))
    store_cfg = StoreConfig(batch_size=cfg.batch_size, shuffle=False, normalize=False,
                            device=str(sae.device), dtype="float32", held_out_tokens=n)
    store = ActivationStore.from_cache(cfg.cache_dir, hook=hook, cfg=store_cfg, manifest=manifest,
                                       target_hook=sae.cfg.hook_name_out)
    if store.d_in != sae.d_in:
        raise ValueError(
            f"cache {cfg.cache_dir} holds d_in={store.d_in} activations at {store.hook!r} but the SAE has "
            f"d_in={sae.d_in} (trained on {sae.cfg.hook_name!r}); point --cache at a cache of that hook"
        )
    x = store.held_out(n, raw=True)
    if held_by_training is not None and n <= held_by_training:
        return "cache-held-out", _batches_from_acts(x, cfg.batch_size, n)
    log.warning(
        "evaluating on the last %d tokens of %s; the SAE's checkpoint does not show that training held "
        "them out (train with store.held_out_tokens >= %d for a clean held-out evaluation)",
        n, cfg.cache_dir, n,
    )
    return "cache-tail", _batches_from_acts(x, cfg.batch_size, n)


# --------------------------------------------------------------------------- the SAE and the model


def _resolve_sae(sae: Any, cfg: EvalConfig) -> tuple[SparseAutoencoder, str | None]:
    from sae.architectures.base import SparseAutoencoder

    if isinstance(sae, SparseAutoencoder):
        if cfg.device is not None:
            sae = sae.to(cfg.device)
        return sae, cfg.sae_path  # the folder it came from, if given: its training split
    path = sae if sae is not None else cfg.sae_path
    if not isinstance(path, (str, Path)):
        raise TypeError(f"sae must be a SparseAutoencoder or a checkpoint folder, got {type(sae).__name__}")
    from sae.checkpoint import load_sae

    return load_sae(path, device=cfg.device), str(path)


class _ModelOnce:
    """The given model, or the SAE's loaded on first call: only the passes that need one load it."""

    def __init__(self, model: Any, cfg: EvalConfig, sae: SparseAutoencoder) -> None:
        self.model, self.cfg, self.sae = model, cfg, sae

    def __call__(self) -> Any:
        if self.model is None:
            self.model = _load_model(self.cfg, self.sae)
        return self.model


def _load_model(cfg: EvalConfig, sae: SparseAutoencoder) -> Any:
    from sae.model import load_model

    name = cfg.model.name
    # The SAE knows the model it was trained on; an explicit non-default name wins.
    if name == DEFAULT_MODEL and sae.cfg.model_name not in ("", "unknown", None):
        name = sae.cfg.model_name
    log.info("loading model %s for evaluation", name)
    return load_model(name, device=cfg.model.device or cfg.device, dtype=cfg.model.dtype)


def _bar(it: Iterable[Tensor], enabled: bool, desc: str) -> Iterable[Tensor]:
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, unit="batch", disable=not enabled)
