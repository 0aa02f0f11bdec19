"""Steering language models with SAE features (and steering vectors), and measuring it.

    import steering
    from steering import Clamp

    with steering.steer(model, sae, {123: Clamp(10, unit="max")}):
        ...                                        # every forward is steered
    steering.generate(model, prompts, (sae, {123: Clamp(10, unit="max")}))  # steered vs unsteered

Names resolve lazily, except `generate`: the function shares its name with its module, and
importing the module would otherwise replace the package attribute with the module.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # interventions
    "Clamp": "steering.interventions",
    "Scale": "steering.interventions",
    "Add": "steering.interventions",
    "Ablate": "steering.interventions",
    "FeatureSteering": "steering.interventions",
    "VectorSteering": "steering.interventions",
    "SteeringError": "steering.interventions",
    "POSITION_MODES": "steering.interventions",
    "make_edit": "steering.interventions",
    "edit_codes": "steering.interventions",
    # hooks
    "steer": "steering.hooks",
    "Steering": "steering.hooks",
    # generation
    "generate": "steering.generate",
    "Generation": "steering.generate",
    "Generations": "steering.generate",
    "SamplingConfig": "steering.generate",
    # activations
    "max_activations": "steering.activations",
    "hook_activations": "steering.activations",
    # finding features
    "top_features": "steering.search",
    "contrastive_features": "steering.search",
    "output_features": "steering.search",
    "output_score": "steering.search",
    "logit_lens": "steering.search",
    "rank_by_output_score": "steering.search",
    "FeatureHit": "steering.search",
    # baseline
    "caa_vector": "steering.baselines",
    # metrics
    "concept_score": "steering.metrics",
    "keyword_scorer": "steering.metrics",
    "perplexity": "steering.metrics",
    "distinct_n": "steering.metrics",
    # fluency gate
    "GateConfig": "steering.fluency",
    "Verdict": "steering.fluency",
    "judge": "steering.fluency",
    "measure": "steering.fluency",
    "DegenerateTextError": "steering.fluency",
    # experiments
    "SweepConfig": "steering.experiments",
    "run_sweep": "steering.experiments",
    "plot_sweep": "steering.experiments",
    "sweep_figure": "steering.experiments",
    "best_condition": "steering.summary",
    "NoEffect": "steering.summary",
    "format_summary": "steering.summary",
    # prompts
    "prompts": "steering",
}

__all__ = sorted(_EXPORTS)

from steering.generate import generate  # noqa: E402, F401  (see the module docstring)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'steering' has no attribute {name!r}")
    if name == "prompts":
        value = importlib.import_module("steering.prompts")
    else:
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
