"""Export a feature database in the JSON layout Neuronpedia ingests, validated against a shipped schema.

    export_neuronpedia("runs/x/features.sqlite", "runs/x/neuronpedia", model_id="smollm2-135m-instruct")
    saekit neuronpedia runs/x/features.sqlite runs/x/neuronpedia

Which layout, and where it is written down
------------------------------------------
Neuronpedia publishes no schema for its uploads; the layout is what its tools write and read:

* `batch-<n>.json`: the dashboard batches SAEDashboard's `NeuronpediaRunner` writes, i.e.
  `NeuronpediaDashboardBatch/Feature/Activation.to_dict()` in PyPI `sae-dashboard` 0.8.0
  (`sae_dashboard/neuronpedia/neuronpedia_dashboard.py`, values as in `neuronpedia_converter.py`),
  and the keys Neuronpedia's importer reads from them (github.com/hijohnnylin/neuronpedia,
  `utils/neuronpedia-utils/neuronpedia_utils/convert-saedashboard-to-neuronpedia-export.py`, read
  at commit 4d6d6c6de4a3c94486b75b7aa6121a0c7e0c9860 of a fork).
  They carry activations with tokens, both histograms, the logit lens and the density.
* `skipped_indexes.json` and `run_settings.json`: the two other files `NeuronpediaRunner` writes
  (`neuronpedia_runner.py`, 0.8.0): latents without a batch, and the run's settings. saekit's
  `run_settings.json` adds a `saekit` block: the export's identity, and what each Neuronpedia
  field was filled from or why it is empty.
* `upload-batch-<n>.json`: the request body PyPI `neuronpedia` 1.2.1 POSTs to
  `/api/feature/upload-batch` (`neuronpedia/requests/feature_request.py`, `upload_batch`; at most
  128 features). The dashboard batches have no place for explanations; this body does, so it
  carries the DB's autointerp explanations beside the activations, logit lens and density.

`neuronpedia_schema.json` (beside this file) states all four as JSON Schema; every file is checked
against it with jsonschema, and for the equal lengths JSON Schema cannot express, before it is
written (`neuronpedia_validate.py`). Checked once by hand as well: a `batch-<n>.json` read into
sae-dashboard 0.8.0's own classes and written back out is identical, and the upload payload that
neuronpedia 1.2.1's `upload_batch` builds from an `upload-batch-<n>.json` equals the file.

What the feature DB does not hold is left at the empty value the reference writer uses (`[]`,
`null`), never made up; `run_settings.json` lists each such field and why (`LEFT_EMPTY`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sae.atomic_io import atomic_write_json, remove_stale_temps
from sae.features.db import Example, Explanation, Feature, FeatureDB
from sae.features.neuronpedia_validate import NeuronpediaExportError, validate

MAX_UPLOAD_FEATURES = 128  # neuronpedia 1.2.1 feature_request.MAX_FEATURES_PER_BATCH
LAYOUT = ("SAEDashboard 0.8.0 NeuronpediaRunner batches (sae_dashboard/neuronpedia/neuronpedia_dashboard.py) "
          "+ neuronpedia 1.2.1 FeatureRequest.upload_batch bodies (neuronpedia/requests/feature_request.py)")

# Neuronpedia fields the feature DB has nothing for, and why; exported as [] (SAEDashboard's default).
LEFT_EMPTY = {
    "neuron_alignment_indices/values/l1": "the decoder's largest entries per neuron: the DB does not store W_dec",
    "correlated_neurons_indices/l1/pearson": "correlation with the model's neurons: the DB records no neuron activations",
    "correlated_features_indices/l1/pearson": "activation cosine / Pearson correlation with other latents: the DB "
                                              "holds decoder-cosine neighbours and Jaccard co-occurrence, other "
                                              "quantities, which have no Neuronpedia field",
    "decoder_weights_dist": "attention-head allocation of the decoder (hook_z SAEs only): not computed",
    "vector": "the decoder row for steering: the DB does not store W_dec",
    "dfa_values/dfa_maxValue/dfa_targetIndex": "direct feature attribution: not computed (optional fields, omitted)",
    "upload methodName": "saekit's autointerp is not one of Neuronpedia's explanation types (null)",
}
MAPPED = {
    "activations (top)": "the top examples by rank: tokens, this latent's activation on each, the centre token as "
                         "qualifying_token_index; bin_min = bin_contains = -1, bin_max = max activation (SAEDashboard's "
                         "TOP ACTIVATIONS group); upload: quantileMin/Max/Fraction null",
    "activations (intervals)": "the interval samples, highest interval first: bin_min/bin_max = the interval, "
                               "bin_contains = its events / tokens analysed (quantileMin/Max/Fraction in the upload)",
    "frac_nonzero / density": "density = tokens where the latent fired / tokens analysed",
    "freq_hist_data_bar_heights/values": "the exact histogram of non-zero activations: counts, bin centres",
    "logits_hist_data_bar_heights/values": "the logit-lens logits over the vocabulary: counts, bin centres",
    "pos_str/pos_values, neg_str/neg_values (topLogits/bottomLogits)": "the logit lens's most positive / negative tokens",
    "n_prompts_total / n_tokens_in_prompt": "token rows analysed / their length",
    "explanations (upload only)": "every autointerp explanation, best detection score first: text, modelName = explainer",
}
# One exported window: (example, bin_min, bin_max, bin_contains), bin_contains None for the top group.
ExportWindow = tuple[Example, float, float, float | None]
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _r(x: float) -> float:
    """6 significant digits: all a float32 activation holds, and half the JSON of a full repr."""
    return float(f"{x:.6g}")


def _centres(edges: list[float]) -> list[float]:
    return [_r((a + b) / 2) for a, b in zip(edges[:-1], edges[1:], strict=False)]


# ---------------------------------------------------------------------- one feature


def _windows(f: Feature, n_tokens: int) -> list[ExportWindow]:
    """The top windows first, then the interval samples from the highest interval down, as SAEDashboard."""
    out: list[ExportWindow] = [(e, -1.0, f.max_act, None) for e in f.top_examples]
    for iv in reversed(f.intervals):
        out += [(e, iv.lo, iv.hi, iv.n_events / max(n_tokens, 1)) for e in iv.examples]
    return out


def _dashboard_feature(f: Feature, windows: list[ExportWindow], ctx: dict[str, Any]) -> dict[str, Any]:
    fired = f.n_fired > 0  # SAEDashboard's histogram of a latent that never fired is empty
    return {
        "feature_index": f.id,
        "neuron_alignment_indices": [], "neuron_alignment_values": [], "neuron_alignment_l1": [],
        "correlated_neurons_indices": [], "correlated_neurons_l1": [], "correlated_neurons_pearson": [],
        "correlated_features_indices": [], "correlated_features_l1": [], "correlated_features_pearson": [],
        "neg_str": [t for _, t, _ in f.bottom_logits], "neg_values": [_r(v) for _, _, v in f.bottom_logits],
        "pos_str": [t for _, t, _ in f.top_logits], "pos_values": [_r(v) for _, _, v in f.top_logits],
        "frac_nonzero": _r(f.density),
        "freq_hist_data_bar_values": _centres(f.hist_edges) if fired else [],
        "freq_hist_data_bar_heights": list(f.hist_counts) if fired else [],
        "logits_hist_data_bar_heights": list(f.logit_counts),
        "logits_hist_data_bar_values": _centres(f.logit_edges),
        "n_prompts_total": ctx["n_rows"], "n_tokens_in_prompt": ctx["context_size"], "dataset": ctx["dataset"],
        "decoder_weights_dist": [],
        "activations": [{
            "bin_min": _r(lo), "bin_max": _r(hi), "bin_contains": -1.0 if share is None else _r(share),
            "tokens": e.tokens, "values": [_r(v) for v in e.acts], "qualifying_token_index": e.center,
        } for e, lo, hi, share in windows],
        "vector": [],
    }


def _upload_feature(f: Feature, windows: list[ExportWindow], explanations: list[Explanation]) -> dict[str, Any]:
    def logits(items: list[tuple[int, str, float]]) -> list[dict[str, Any]] | None:
        return [{"token": t, "value": _r(v)} for _, t, v in items] if items else None

    return {
        "index": f.id,
        "density": _r(f.density),
        "activations": [{
            "tokens": e.tokens, "values": [_r(v) for v in e.acts],
            "quantileMax": None if share is None else _r(hi), "quantileMin": None if share is None else _r(lo),
            "quantileFraction": None if share is None else _r(share),
        } for e, lo, hi, share in windows],
        "explanations": [{"text": x.explanation, "methodName": None, "modelName": x.explainer} for x in explanations],
        "topLogits": logits(f.top_logits),
        "bottomLogits": logits(f.bottom_logits),
    }


# ---------------------------------------------------------------------- options and the output folder


def _layer_of(hook: str) -> int | None:
    m = re.search(r"(?:^|\.)(\d+)\.", hook or "")
    return int(m.group(1)) if m else None


def _options(db: FeatureDB, model_id: str | None, sae_set: str | None, layer: int | None,
             batch_size: int, features: list[int] | None) -> tuple[str, str, int, list[int]]:
    meta = db.meta
    # a hub id or a local path: its last part, as Neuronpedia's ids are (gpt2-small, gemma-2-2b)
    model_id = model_id or str(meta.get("model_name") or "").rstrip("/").rsplit("/", 1)[-1].lower()
    hook = str(meta.get("hook_name") or "")
    kind = hook.rsplit(".", 1)[-1].removeprefix("hook_").replace("_", "-") or "sae"
    sae_set = sae_set or f"saekit-{kind}-{db.n_features}"
    for name, value, flag in (("model id", model_id, "--model-id"), ("SAE set", sae_set, "--sae-set")):
        if not _SLUG.match(value):
            raise NeuronpediaExportError(
                f"{name} {value!r} cannot be part of a Neuronpedia id (letters, digits, '.', '_', '-' only, starting "
                f"with a letter or digit); pass {flag}, e.g. {flag} " + ("gpt2-small" if flag == "--model-id" else "res-16k"))
    layer = _layer_of(hook) if layer is None else layer
    if layer is None or layer < 0:
        raise NeuronpediaExportError(f"no layer number in the hook {hook!r}: Neuronpedia files every SAE under a layer; "
                                     "pass --layer N")
    if not 1 <= batch_size <= MAX_UPLOAD_FEATURES:
        raise NeuronpediaExportError(f"batch size {batch_size} is outside 1..{MAX_UPLOAD_FEATURES} (Neuronpedia's "
                                     f"upload takes at most {MAX_UPLOAD_FEATURES} features at a time)")
    if features is None:
        return model_id, sae_set, layer, list(range(db.n_features))
    ids = sorted({int(i) for i in features})
    bad = [i for i in ids if not 0 <= i < db.n_features]
    if not ids or bad:
        what = f"features {bad} do not exist" if bad else "no features chosen"
        raise NeuronpediaExportError(f"{what}: {db.path} has features 0..{db.n_features - 1}; pass e.g. "
                                     "--features 0,1,2, or none for all")
    return model_id, sae_set, layer, ids


def _claim(out: Path, export_id: dict[str, Any]) -> None:
    """Make `out`, or accept it if empty or holding this same export; never write over anything else."""
    if out.exists() and not out.is_dir():
        raise NeuronpediaExportError(f"{out} is a file; give a folder for the export")
    out.mkdir(parents=True, exist_ok=True)
    if not any(p for p in out.iterdir() if not p.name.startswith(".")):
        return
    try:
        old = json.loads((out / "run_settings.json").read_text())["saekit"]["export_id"]
    except (OSError, ValueError, KeyError, TypeError):
        old = None
    if old != export_id:
        what = (f"another saekit export (different {', '.join(k for k in export_id if old.get(k) != export_id[k])})"
                if isinstance(old, dict) else "files that are not a saekit Neuronpedia export")
        raise NeuronpediaExportError(f"{out} already holds {what}; nothing was written. Export into a new folder, "
                                     f"or delete {out} first")
    remove_stale_temps(out)  # the same export, interrupted before: its leftovers go, the files are rewritten


def _run_settings(db: FeatureDB, out: Path, ctx: dict[str, Any], export_id: dict[str, Any], files: list[str],
                  notes: list[str], complete: bool) -> dict[str, Any]:
    cfg = db.meta.get("config") or {}
    return {
        "sae_set": export_id["sae_set"], "sae_path": str(db.meta.get("sae_path") or ""), "outputs_dir": str(out),
        "np_sae_id_suffix": None, "huggingface_dataset_path": ctx["dataset"],
        "n_prompts_total": ctx["n_rows"], "n_tokens_in_prompt": ctx["context_size"],
        "n_features_at_a_time": export_id["batch_size"], "n_quantiles": int(cfg.get("n_intervals", 0)),
        "top_acts_group_size": int(cfg.get("top_k", 0)), "quantile_group_size": int(cfg.get("examples_per_interval", 0)),
        "model_id": export_id["model_id"], "layer": export_id["layer"],
        "saekit": {"export_id": export_id, "complete": complete, "layout": LAYOUT, "files": files,
                   "mapped": MAPPED, "left_empty": LEFT_EMPTY, "notes": notes},
    }


def _write_settings(out: Path, settings: dict[str, Any]) -> Path:
    validate("runSettings", settings, "run_settings.json")
    return atomic_write_json(out / "run_settings.json", settings)


def _context(db: FeatureDB) -> tuple[dict[str, Any], list[str]]:
    meta, cfg = db.meta, db.meta.get("config") or {}
    notes = ["tokens are each token id decoded on its own (the DB's vocabulary), not raw BPE pieces",
             "numbers are rounded to 6 significant digits"]
    dataset = "" if cfg.get("cache_dir") else str((cfg.get("data") or {}).get("source") or "")
    if not dataset:
        notes.append("dataset left empty: the DB was built from an activation cache or names no text source")
    lens = str(meta.get("logit_lens") or "")
    if lens.startswith("skipped"):
        notes.append(f"logit lens {lens}: neg/pos tokens and the logits histogram are empty, top/bottomLogits null")
    if not db.has_explanations_table:
        notes.append("no explanations: the DB predates autointerp (schema 1); run `saekit autointerp --db DB` first")
    ctx = {"n_rows": int(meta.get("n_rows") or 0), "context_size": int(meta.get("context_size") or 0),
           "dataset": dataset, "n_tokens": int(meta.get("n_tokens") or 0)}
    return ctx, notes


# ---------------------------------------------------------------------- the export


def export_neuronpedia(db_path: str | Path, out_dir: str | Path, *, model_id: str | None = None,
                       sae_set: str | None = None, layer: int | None = None, batch_size: int = 128,
                       features: list[int] | None = None) -> list[Path]:
    """Write the feature DB at `db_path` into `out_dir` in Neuronpedia's layout; returns the files written.

    Defaults: `model_id` = the DB's model name, `sae_set` = "saekit-<hook kind>-<d_sae>", `layer` =
    the number in the hook name, every feature. Each file is validated, then written atomically;
    `run_settings.json` is written first with `complete: false` and last with `true`, so an
    interrupted export shows as such and the same command finishes it. A folder holding anything
    else (another export, other files) is refused, never overwritten.
    """
    out = Path(out_dir).expanduser()
    with FeatureDB(db_path) as db:
        model_id, sae_set, layer, ids = _options(db, model_id, sae_set, layer, batch_size, features)
        export_id = {"db": str(db.path.resolve()), "sae_fingerprint": db.meta.get("sae_fingerprint"),
                     "db_created": db.meta.get("created"), "model_id": model_id, "sae_set": sae_set, "layer": layer,
                     "batch_size": batch_size, "features": "all" if features is None else ids}
        _claim(out, export_id)
        ctx, notes = _context(db)
        chunks = [ids[k:k + batch_size] for k in range(0, len(ids), batch_size)]
        names = ["skipped_indexes.json"] + [f"{p}batch-{n}.json" for n in range(len(chunks)) for p in ("", "upload-")]
        written = [_write_settings(out, _run_settings(db, out, ctx, export_id, names, notes, complete=False))]
        chosen = set(ids)
        skipped = {"model_id": model_id, "layer": str(layer), "sae_set": sae_set, "log_sparsity": None,
                   "skipped_indexes": [i for i in range(db.n_features) if i not in chosen]}
        validate("skippedIndexes", skipped, "skipped_indexes.json")
        written.append(atomic_write_json(out / "skipped_indexes.json", skipped))
        n_explained = 0
        for n, chunk in enumerate(chunks):
            dash, upload = [], []
            for i in chunk:
                f, expl = db.feature(i), db.explanations(i)
                n_explained += bool(expl)
                w = _windows(f, ctx["n_tokens"])
                dash.append(_dashboard_feature(f, w, ctx))
                upload.append(_upload_feature(f, w, expl))
            batch = {"model_id": model_id, "layer": layer, "sae_set": sae_set, "sae_id_suffix": None, "features": dash}
            body = {"modelId": model_id, "source": f"{layer}-{sae_set}", "features": upload}
            validate("dashboardBatch", batch, f"batch-{n}.json")
            validate("uploadBatch", body, f"upload-batch-{n}.json")
            written.append(atomic_write_json(out / f"batch-{n}.json", batch, indent=None))
            written.append(atomic_write_json(out / f"upload-batch-{n}.json", body, indent=None))
        notes.append(f"{len(ids)} features in {len(chunks)} batches; {n_explained} of them with explanations")
        _write_settings(out, _run_settings(db, out, ctx, export_id, names, notes, complete=True))
    return written
