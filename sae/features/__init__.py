"""The feature database: one streaming pass over a token stream, stored as one SQLite file.

`build_feature_db(cfg, model, sae)` writes it (`saekit analyze`); `FeatureDB(path)` reads it
(the explorer, notebooks) without importing torch. The schema is documented in `schema.py`.
"""

from __future__ import annotations

from sae.lazy import lazy_exports

_EXPORTS = {
    "build_feature_db": "sae.features.build",
    "FeatureDB": "sae.features.db",
    "FeatureDBError": "sae.features.db",
    "Feature": "sae.features.db",
    "Example": "sae.features.db",
    "text_activations": "sae.features.token_activations",
    "TextActivations": "sae.features.token_activations",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
