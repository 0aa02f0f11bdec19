"""SAE architectures: one file each; importing this package registers them all.

Every module in this folder is imported, so adding an architecture means adding one file
that defines a `@register("name")` subclass of `base.SparseAutoencoder`.
"""

import importlib
import pkgutil

from sae.architectures import base  # noqa: F401

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")
