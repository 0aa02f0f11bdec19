"""lm-eval's model_args for the `saekit` model (`steering.lm_eval_model`) as SteeredLM's arguments.

    --model_args sae=runs/steer_seeds/seed0,feature=2993,clamp=30

One SAE feature edit: `sae` (a checkpoint dir), `feature`, exactly one of `clamp=V`, `add=A`,
`scale=C`, `ablate=true`, and optionally `unit` (abs|max), `positions`, `hook`, `feature_db`.
No steering keys: the model runs unsteered. `model` (hub id or local dir, or from Python a loaded
TransformerBridge), `device`, `dtype` choose the model (default: the embedded SmolLM2);
`batch_size`, `max_length`, `max_gen_toks`, `add_bos_token`, `seed` go to the adapter. Plain parsing: lm-eval itself is imported only by `steering.lm_eval_model`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from steering.interventions import Edit, FeatureSteering, SteeringError, make_edit

EDIT_KEYS = ("clamp", "add", "scale", "ablate")
STEER_KEYS = ("sae", "feature", *EDIT_KEYS, "unit", "positions", "hook", "feature_db")
MODEL_KEYS = ("model", "device", "dtype")
ADAPTER_KEYS = ("batch_size", "max_length", "max_gen_toks", "add_bos_token", "seed")
# What lm-eval adds from its own flags (--batch_size, --device); model_args win over them.
# max_batch_size caps batch_size=auto's memory probe, which this adapter does not run.
LM_EVAL_KEYS = ("batch_size", "device")

log = logging.getLogger(__name__)


def steered_lm_kwargs(args: Mapping[str, Any], additional: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """SteeredLM(**kwargs) for lm-eval's parsed model_args (and its additional_config)."""
    args = dict(args)
    unknown = sorted(set(args) - {*STEER_KEYS, *MODEL_KEYS, *ADAPTER_KEYS})
    if unknown:
        raise SteeringError(
            f"unknown model_args {unknown} for --model saekit; it takes {', '.join(MODEL_KEYS + STEER_KEYS + ADAPTER_KEYS)}"
        )
    extra = {k: v for k, v in (additional or {}).items() if k in LM_EVAL_KEYS and v is not None}
    if str(extra.get("device", "")).startswith("cuda") and not torch.cuda.is_available():
        # lm-eval's CLI asks for cuda:0 unless told otherwise; HFLM then falls back, and so do we
        log.info("lm-eval asked for device %s but CUDA is not available; using the default", extra.pop("device"))
    for key, value in extra.items():
        args.setdefault(key, value)
    edit = _feature_edit(args)  # checked before the model loads: a typo fails in a second, not a minute
    import sae as saelib

    model = args.get("model")
    if model is None or isinstance(model, str):  # from Python (model_args as a dict) a loaded model works too
        load = {"name": model} if model else {}
        model = saelib.load_model(**load, device=args.get("device"), dtype=args.get("dtype", "float32"))
    intervention = None
    if edit is not None:
        intervention = FeatureSteering(
            saelib.load_sae(str(args["sae"]), device=saelib.model_device(model)), {edit[0]: edit[1]},
            positions=str(args.get("positions", "all")), hook=args.get("hook"), feature_db=args.get("feature_db"),
        )
    return {"model": model, "intervention": intervention, **{k: args[k] for k in ADAPTER_KEYS if k in args}}


def _feature_edit(args: Mapping[str, Any]) -> tuple[int, Edit] | None:
    """(feature, edit) from the steering keys, or None without any."""
    if not any(k in args for k in STEER_KEYS):
        return None
    usage = "steering from model_args takes sae=<checkpoint dir>,feature=<index>,clamp=<value> (or add=, scale=, ablate=true)"
    if "sae" not in args or "feature" not in args:
        raise SteeringError(f"missing {'sae' if 'sae' not in args else 'feature'}: {usage}")
    edits = [k for k in EDIT_KEYS if k in args]
    if len(edits) != 1:
        raise SteeringError(f"give exactly one of {', '.join(EDIT_KEYS)} (got {edits or 'none'}): {usage}")
    method = edits[0]
    if method == "ablate" and args["ablate"] is not True:
        raise SteeringError(f"ablate takes true (ablate=true), got {args['ablate']!r}")
    feature = args["feature"]
    if isinstance(feature, bool) or not isinstance(feature, int):
        raise SteeringError(
            f"feature must be one integer index, got {feature!r}; for several, build the intervention in Python"
        )
    strength = 0.0 if method == "ablate" else args[method]
    return feature, make_edit(method, strength, str(args.get("unit", "abs")))
