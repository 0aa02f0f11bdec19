"""scripts/bench_gpu.py --device cpu --tiny: every step of the GPU benchmark runs (issue 18)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_gpu.py"

pytestmark = pytest.mark.slow


def test_every_step_runs_on_cpu_at_toy_sizes(tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(["--device", "cpu", "--tiny", "--out", str(tmp_path), "--sparsify-python", str(tmp_path / "none")])
    doc = json.loads((tmp_path / "bench_gpu.json").read_text())
    rows = {(r["step"], r.get("arch")): r for r in doc["rows"]}
    assert rc == 0, [r for r in doc["rows"] if "error" in r]
    assert rows[("cache", None)]["tokens_per_s"] > 0 and rows[("cache", None)]["ratio"] > 0
    for arch in ("topk", "batchtopk", "jumprelu"):
        r = rows[("train", arch)]
        assert r["tokens_per_s"] > 0 and 0 < r["fvu_fp32"] < 1.5 and r["l0"] > 0
    assert "no sparsify venv" in rows[("sparsify", None)]["skipped"]
    assert rows[("ddp", None)]["equal"] is True
    assert rows[("kv", None)]["identical"] is True
    assert "| ddp |" in capsys.readouterr().out
