"""DDP under torchrun: 2 CPU processes (gloo) reach the weights 1 process reaches on the same global batches."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, REPO)
from safetensors.torch import save_file  # noqa: E402

from sae.config import SAEConfig, TrainConfig  # noqa: E402
from sae.training.trainer import Trainer  # noqa: E402


class Stream:
    """Global batch i is a pure function of i: every rank reads the same global batch."""

    def __init__(self):
        self.pos = 0
        g = torch.Generator().manual_seed(0)
        self.atoms = torch.nn.functional.normalize(torch.randn(40, 16, generator=g), dim=1)

    def __iter__(self):
        return self

    def __next__(self):
        g = torch.Generator().manual_seed(1000 + self.pos)
        self.pos += 1
        idx = torch.rand(128, 40, generator=g).argsort(1)[:, :3]
        return torch.zeros(128, 40).scatter_(1, idx, torch.rand(128, 3, generator=g) + 0.5) @ self.atoms


def run(out: str) -> Trainer:
    cfg = TrainConfig(
        out_dir=out,
        saes=[SAEConfig(architecture="topk", d_in=16, d_sae=48, k=3, dead_after_tokens=256),
              SAEConfig(architecture="relu", d_in=16, d_sae=48, l1_coefficient=0.3)],
        n_tokens=128 * 10, lr=3e-3, lr_warmup_steps=2, sparsity_warmup_steps=3,
        checkpoint_every_tokens=10**9, progress=False,
    )
    trainer = Trainer(cfg)
    trainer.fit(Stream())
    if trainer.dist.is_main:
        tensors = {f"{i}.{k}": v.detach().clone() for i, s in enumerate(trainer.saes) for k, v in s.state_dict().items()}
        save_file(tensors, str(Path(out) / "final.safetensors"))
    return trainer


if __name__ == "__main__":
    t = run(sys.argv[1])
    assert t.dist.world_size == 2, t.dist
'''


def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT.replace("REPO)", f"{str(REPO)!r})", 1))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    spec = importlib.util.spec_from_file_location("ddp_train", script)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    single = module.run(str(tmp_path / "single"))
    assert single.dist.world_size == 1

    ddp = load_file(str(tmp_path / "ddp" / "final.safetensors"))
    ref = load_file(str(tmp_path / "single" / "final.safetensors"))
    assert ddp.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(ddp[name], ref[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    # and training did something (the comparison is not between two untouched inits)
    assert not torch.allclose(ref["0.W_dec"], torch.nn.functional.normalize(ref["0.W_enc"].T, dim=1), atol=1e-3)
    for f in ("cfg.json", "sae_weights.safetensors"):
        assert (tmp_path / "ddp" / "topk_48_k3" / f).exists()


@pytest.mark.parametrize("world", [2])
def test_uneven_batch_split_is_a_clear_error(world: int) -> None:
    from sae.distributed import DistInfo

    with pytest.raises(ValueError, match="multiple of 2"):
        DistInfo(rank=0, world_size=world).slice_rows(torch.zeros(7, 4))
