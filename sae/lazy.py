"""Package attributes that import their module on first use, so `import sae` stays fast.

    __getattr__, __dir__ = lazy_exports(__name__, {"load_model": "sae.model", ...})

A module whose name equals an export (a package attribute `generate` and a module
`generate.py`) would be replaced by the module on import; saekit names no module after an export.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`: `exports` maps a name to the module defining it."""
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # resolve once
        return value

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__
