"""SAE architectures: one file each; importing this package registers them all."""

from sae.architectures import base  # noqa: F401

for _name in ("relu", "topk", "batchtopk", "jumprelu"):
    try:
        __import__(f"sae.architectures.{_name}")
    except ModuleNotFoundError as _e:  # an architecture file not written yet
        if _e.name != f"sae.architectures.{_name}":
            raise
