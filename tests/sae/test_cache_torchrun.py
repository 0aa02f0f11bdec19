"""Caching under torchrun: 2 CPU processes (gloo) write the same cache as 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sae.activation_cache import build_cache, read_manifest, verify_cache
from sae.config import CacheConfig, DataConfig, to_dict

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "data" / "tiny_corpus.jsonl"

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)  # two processes on two cores
    from sae.activation_cache import build_cache
    from sae.config import CacheConfig, from_dict
    build_cache(from_dict(CacheConfig, json.load(open(sys.argv[1]))), progress=False)
    """
)


def cache_config(out: Path) -> CacheConfig:
    return CacheConfig(
        out_dir=str(out),
        hooks=["blocks.2.hook_resid_post", "blocks.2.hook_mlp_out"],
        n_tokens=9 * 32,  # 9 rows -> shards of 2, 2, 2, 2, 1 rows: ranks get 3 and 2 shards
        shard_tokens=2 * 32,
        batch_size=2,
        data=DataConfig(source=str(CORPUS), context_size=32),
    )


@pytest.mark.slow
def test_two_process_torchrun_equals_one_process(tmp_path: Path, model) -> None:
    one = build_cache(cache_config(tmp_path / "one"), model=model, progress=False)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(to_dict(cache_config(tmp_path / "two"))))
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(tmp_path / "worker.py"), str(cfg_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]

    two = tmp_path / "two"
    m1, m2 = verify_cache(one), verify_cache(two)
    assert m2["complete"] and m2["world_size"] == 2
    assert [e["rank"] for e in m2["shards"]] == [0, 1, 0, 1, 0]  # each rank wrote its own shards
    assert m2["n_rows"] == m1["n_rows"] == 9 and m2["fingerprint"] == m1["fingerprint"]
    assert m2["hook_stats"] == m1["hook_stats"]
    for e1, e2 in zip(m1["shards"], m2["shards"], strict=True):
        assert (e1["file"], e1["rows"], e1["n_kept"]) == (e2["file"], e2["rows"], e2["n_kept"])
        t1, t2 = load_file(one / e1["file"]), load_file(two / e2["file"])
        for key in t1:
            if key.startswith("acts."):
                assert torch.allclose(t1[key], t2[key], rtol=1e-4, atol=1e-3), key
            else:
                assert torch.equal(t1[key], t2[key]), key
    assert read_manifest(two)["config"]["data"] == m1["config"]["data"]
