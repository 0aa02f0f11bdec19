"""The feature database: one streaming pass over a token stream, stored as one SQLite file.

`build_feature_db(cfg, model, sae)` writes it (`saekit analyze`); `FeatureDB(path)` reads it
(the explorer, notebooks) without importing torch. The schema is documented in `schema.py`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_feature_db": "sae.features.build",
    "FeatureDB": "sae.features.db",
    "FeatureDBError": "sae.features.db",
    "Feature": "sae.features.db",
    "Example": "sae.features.db",
    "text_activations": "sae.features.activations",
    "TextActivations": "sae.features.activations",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sae.features' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
