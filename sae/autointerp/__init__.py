"""Autointerp: explanations of features written by a language model, scored by detection and fuzzing.

    run = run_autointerp("features.sqlite", make_client("embedded"), n_features=50)

`excerpts.py` (excerpts with marked tokens, the prompts), `clients.py` (local models and
OpenAI-compatible endpoints), `samples.py` (which windows the explainer and the judge see),
`judging.py` (answers, balanced accuracy, AUC), `explanation.py` (one feature), `runner.py` (many, resumable),
`results_table.py` (the `explanations` table of the feature database). `saekit autointerp` is the CLI.
"""

from __future__ import annotations

from sae.lazy import lazy_exports

_EXPORTS = {
    "run_autointerp": "sae.autointerp.runner",
    "autointerp_feature": "sae.autointerp.runner",
    "pick_features": "sae.autointerp.runner",
    "AutointerpConfig": "sae.autointerp.runner",
    "AutointerpRun": "sae.autointerp.runner",
    "FeatureResult": "sae.autointerp.runner",
    "make_client": "sae.autointerp.clients",
    "LocalClient": "sae.autointerp.clients",
    "OpenAIClient": "sae.autointerp.clients",
    "AutointerpError": "sae.autointerp.clients",
    "explain": "sae.autointerp.explanation",
    "score_explanation": "sae.autointerp.explanation",
    "inactive_check": "sae.autointerp.samples",
    "parse_yes_no": "sae.autointerp.judging",
    "balanced_accuracy": "sae.autointerp.judging",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
