"""Steering language models with SAE features (and steering vectors), and measuring it.

    import steering
    from steering import Clamp

    with steering.steer(model, sae, {123: Clamp(10, unit="max")}):
        ...                                        # every forward is steered
    steering.generate(model, prompts, (sae, {123: Clamp(10, unit="max")}))  # steered vs unsteered

Names resolve lazily (`sae.lazy_exports`), so `import steering` loads no torch; `steering.prompts`,
the prompt sets (plain data), is a submodule imported with the package.
"""

from __future__ import annotations

from sae import lazy_exports
from steering import prompts as prompts  # the alias marks a re-export

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
    "steer": "steering.steer_hooks",
    "Steering": "steering.steer_hooks",
    # generation
    "generate": "steering.generation",
    "Generation": "steering.generation",
    "Generations": "steering.generation",
    "SamplingConfig": "steering.generation",
    # activation capture
    "max_activations": "steering.capture",
    "hook_activations": "steering.capture",
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
    "concept_score": "steering.scoring",
    "keyword_scorer": "steering.scoring",
    "perplexity": "steering.scoring",
    "distinct_n": "steering.scoring",
    # fluency gate
    "GateConfig": "steering.fluency",
    "Verdict": "steering.fluency",
    "judge": "steering.fluency",
    "measure": "steering.fluency",
    "DegenerateTextError": "steering.fluency",
    # per-reply scores: concept, fluency, relevance, combined
    "ReplyQuality": "steering.reply_quality",
    "score_replies": "steering.reply_quality",
    "harmonic_mean": "steering.reply_quality",
    "ScoreCache": "steering.reply_quality",
    # experiments
    "SweepConfig": "steering.experiments",
    "CAAConfig": "steering.experiments",
    "run_sweep": "steering.experiments",
    "plot_sweep": "steering.sweep_charts",
    "sweep_figure": "steering.sweep_charts",
    "best_condition": "steering.summary",
    "NoEffect": "steering.summary",
    "format_summary": "steering.summary",
    # sycophancy: forced choice, free-text agreement, intervals
    "load_items": "steering.forced_choice",
    "agreement_probability": "steering.forced_choice",
    "letter_logprobs": "steering.forced_choice",
    "ForcedChoiceError": "steering.forced_choice",
    "score_reply": "steering.agreement",
    "agreement_rates": "steering.agreement",
    "ReplyScore": "steering.agreement",
    "bootstrap_interval": "steering.bootstrap",
    "paired_difference_interval": "steering.bootstrap",
    "Interval": "steering.bootstrap",
    # benchmark: SAE clamp vs CAA vs prompting, per concept, across SAE seeds
    "BenchmarkConfig": "steering.benchmark",
    "run_benchmark": "steering.benchmark",
    # concepts to steer towards (steering.concepts also holds the benchmark's prompt sets)
    "Concept": "steering.concepts",
    "CONCEPTS": "steering.concepts",
    "get_concept": "steering.concepts",
    # a steered model as an lm-evaluation-harness model (the lm-eval extra; imported on first use)
    "SteeredLM": "steering.lm_eval_model",
}

__all__ = sorted([*_EXPORTS, "prompts"])
__getattr__ = lazy_exports(__name__, _EXPORTS)[0]


def __dir__() -> list[str]:
    return __all__
