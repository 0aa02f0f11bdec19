"""What is installed: the versions an error or a report names when a result depends on them."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# The libraries whose releases have changed saekit's results (generation broke on transformers 5.24).
KEY_PACKAGES = ("torch", "transformers", "transformer-lens")


def installed_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    """{package: version} for each name, "not installed" where absent."""
    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def versions_line(names: tuple[str, ...] = KEY_PACKAGES) -> str:
    """"torch 2.13.0, transformers 5.24.0, ..." for error messages."""
    return ", ".join(f"{k} {v}" for k, v in installed_versions(names).items())
