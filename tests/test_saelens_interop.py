"""SAELens itself loads saekit's checkpoints of every architecture and encodes real activations as
saekit does; saekit loads what SAELens saves. Runs SAELens in .venv-saelens (built by
`scripts/install.sh --dev` from requirements-saelens.lock), through scripts/check_saelens_interop.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scripts.check_saelens_interop import (
    failures,
    real_activations,
    saekit_to_saelens,
    saelens_to_saekit,
    shipped_architectures,
    transcoders,
)

SAELENS_PYTHON = Path(os.environ.get("SAEKIT_SAELENS_PYTHON", Path(__file__).resolve().parents[1] / ".venv-saelens/bin/python"))
pytestmark = pytest.mark.skipif(
    not SAELENS_PYTHON.exists(), reason=f"no SAELens venv at {SAELENS_PYTHON}: run scripts/install.sh --dev (CI does)"
)


@pytest.fixture(scope="module")
def acts(model):
    return real_activations(model)


def test_saelens_loads_every_saekit_architecture(acts, tmp_path: Path) -> None:
    rows = saekit_to_saelens(acts, str(SAELENS_PYTHON), tmp_path)
    shipped = shipped_architectures()
    assert sorted(r["sae"] for r in rows) == shipped and {"topk", "gated", "matryoshka_batchtopk"} <= set(shipped)
    assert not failures(rows), failures(rows)
    # the codes compared are not trivially empty or full
    assert all(0 < r["active"] < 0.9 for r in rows), rows


def test_saelens_loads_saekit_transcoders(acts, tmp_path: Path) -> None:
    """Every saekit transcoder SAELens has a class for (ReLU: transcoder / skip_transcoder; JumpReLU and
    what saves as it: jumprelu_(skip_)transcoder) encodes, decodes and outputs (skip term included) alike."""
    shared = transcoders()
    assert ("relu", True) in shared and ("jumprelu", False) in shared and ("topk", False) not in shared
    rows = [r for r in saekit_to_saelens(acts, str(SAELENS_PYTHON), tmp_path, with_transcoders=True) if "transcoder" in r["sae"]]
    assert len(rows) == len(shared) and not failures(rows), failures(rows)
    assert all(0 < r["active"] < 0.9 for r in rows) and any(r["saelens_class"] == "SkipTranscoder" for r in rows), rows


def test_saekit_loads_what_saelens_saves(acts, tmp_path: Path) -> None:
    rows = saelens_to_saekit(acts, str(SAELENS_PYTHON), tmp_path)
    assert {r["sae"] for r in rows} == {"saelens_standard", "saelens_topk", "saelens_jumprelu", "saelens_gated",
                                        "saelens_transcoder", "saelens_skip_transcoder", "saelens_jumprelu_transcoder",
                                        "saelens_jumprelu_skip_transcoder"}
    assert not failures(rows), failures(rows)
    assert all(0 < r["active"] < 0.9 for r in rows), rows


def test_bf16_thresholds_mean_the_same_to_saelens(acts, tmp_path: Path) -> None:
    """SAELens casts every tensor to the file's dtype: saekit stores bf16-representable thresholds,
    so only bf16 rounding of the pre-activations themselves (x @ W + b vs addmm) can flip a latent
    (measured: 1-6 of 78k codes; 4 for JumpReLU before thresholds were rounded)."""
    rows = [r for r in saekit_to_saelens(acts, str(SAELENS_PYTHON), tmp_path, "bfloat16") if r.get("saelens_class") == "JumpReLUSAE"]
    assert rows and all("error" not in r for r in rows), rows
    n_codes = acts.shape[0] * 4 * acts.shape[1]
    for r in rows:
        assert r["codes_error"] < 1e-2 and r["active_set_differs"] <= 1e-4 * n_codes, r
