"""An architecture is one class in one file: the trainer, checkpoints, evaluation and the CLI
ask the registry and the class, and name none of the architectures themselves."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import sae
from sae.architectures.base import (
    SAELENS_TENSORS,
    SparseAutoencoder,
    architecture_names,
    from_saelens,
    mse_loss,
    register,
    saelens_names,
)
from sae.checkpoint import load_sae
from sae.config import EvalConfig, SAEConfig, TrainConfig
from sae.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
NAME = "test_gain_relu"
D_IN, D_SAE, BATCH = 16, 32, 64


# The whole new architecture: what a new file in sae/architectures/ would hold.
@register(NAME)
class GainReLUSAE(SparseAutoencoder):
    """ReLU codes times a learned per-latent gain: one extra tensor, kept in fp32, with its own lr."""

    unit_norm_decoder = False
    sparsity_loss = "l1"
    config_fields = ("l1_coefficient",)
    keep_fp32 = ("gain",)
    GAIN_LR_SCALE = 0.5

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.gain = nn.Parameter(torch.ones(cfg.d_sae, dtype=torch.float32))

    def activation(self, pre_acts: Tensor) -> Tensor:
        return torch.relu(pre_acts) * self.gain.to(pre_acts.dtype)

    def losses(self, x: Tensor, pre_acts: Tensor, feature_acts: Tensor, sae_out: Tensor) -> dict[str, Tensor]:
        return {"mse": mse_loss(sae_out, x), "l1": feature_acts.float().abs().sum(-1).mean()}

    def coefficients(self) -> dict[str, float]:
        return {"mse": 1.0, "l1": self.cfg.l1_coefficient}

    def param_groups(self, train_cfg: TrainConfig) -> list[dict]:
        rest = [p for n, p in self.named_parameters() if n != "gain"]
        return [{"params": rest, "lr_scale": 1.0}, {"params": [self.gain], "lr_scale": self.GAIN_LR_SCALE}]

    @classmethod
    def name_detail(cls, cfg: SAEConfig) -> str:
        return f"l1_{cfg.l1_coefficient:g}"

    def export(self) -> tuple[str, dict[str, Tensor], dict]:
        name, tensors, extra = super().export()
        tensors["gain"] = self.gain.detach()
        return name, tensors, extra


class Stream:
    """Batch i is a pure function of i, so a resumed run sees the same data."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.pos, self.crash_at = 0, crash_at

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Tensor:
        if self.pos == self.crash_at:
            raise RuntimeError("simulated crash")
        g = torch.Generator().manual_seed(self.pos)
        self.pos += 1
        return torch.randn(BATCH, D_IN, generator=g) * torch.linspace(0.5, 2.0, D_IN)

    def state_dict(self) -> dict:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pos = int(state["pos"])


def _cfg(out: Path) -> TrainConfig:
    return TrainConfig(out_dir=str(out), saes=[SAEConfig(architecture=NAME, d_in=D_IN, d_sae=D_SAE, l1_coefficient=0.05)],
                       n_tokens=BATCH * 8, lr=1e-2, lr_warmup_steps=2, sparsity_warmup_steps=2,
                       checkpoint_every_tokens=BATCH * 3, log_every_steps=2, progress=False)


def test_new_architecture_trains_saves_loads_and_evaluates(tmp_path: Path) -> None:
    trainer = Trainer(_cfg(tmp_path / "run"))
    model = trainer.saes[0]
    assert isinstance(model, GainReLUSAE) and trainer.slots[0].name == f"{NAME}_{D_SAE}_l1_0.05"
    assert [g["lr_scale"] for g in trainer.slots[0].optimizer.param_groups] == [1.0, GainReLUSAE.GAIN_LR_SCALE]
    [path] = trainer.fit(Stream())
    assert not torch.equal(model.gain.detach(), torch.ones(D_SAE))  # the extra tensor trained

    doc = json.loads((path / "cfg.json").read_text())
    assert doc["architecture"] == NAME and doc["saekit"]["trained_architecture"] == NAME
    loaded = load_sae(path)
    assert isinstance(loaded, GainReLUSAE)
    x = Stream().__next__()
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), model.eval().encode(x))
    assert load_sae(path, dtype="bfloat16").gain.dtype == torch.float32  # keep_fp32 is honoured

    res = sae.evaluate(path, cfg=EvalConfig(ce_batches=0, save_png=False), acts=torch.cat([x, x]))
    assert res.sae["architecture"] == NAME and res.sae["d_sae"] == D_SAE and res.sae["k"] is None
    assert 0 <= res.reconstruction.fvu < 1.5


def test_new_architecture_resumes_bit_exactly(tmp_path: Path) -> None:
    """Its optimizer groups (and their Adam state) survive a crash and resume."""
    ref = Trainer(_cfg(tmp_path / "ref"))
    ref.fit(Stream())
    cfg = _cfg(tmp_path / "crash")
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(cfg).fit(Stream(crash_at=5))  # checkpoint after step 3
    resumed = Trainer(cfg)
    resumed.fit(Stream())
    for name, p in ref.saes[0].state_dict().items():
        assert torch.equal(p, resumed.saes[0].state_dict()[name]), name


def test_registry_answers_what_checkpoints_asked_before() -> None:
    """SAELens names resolve as the hard-coded table in checkpoint.py did."""
    expect = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "batchtopk"}
    for saelens, ours in expect.items():
        assert from_saelens(saelens).architecture == ours, saelens
    assert from_saelens("standard", "topk").architecture == "topk"  # SAELens < 6
    assert from_saelens("standard", "relu").architecture == "relu"
    assert from_saelens("crosscoder") is None and from_saelens(["not", "a", "name"]) is None
    assert from_saelens(NAME) is GainReLUSAE
    assert {"batchtopk", "topk"} <= set(architecture_names("k")) and "relu" not in architecture_names("k")
    assert {"relu", "topk", "batchtopk", "jumprelu", NAME} <= set(architecture_names())


def test_cli_help_comes_from_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert NAME in architecture_names() and "--arch ARCH " + " | ".join(architecture_names()) in out
    l1_users = architecture_names("l1_coefficient")
    assert {"relu", NAME} <= set(l1_users) and f"--l1-coefficient L1_COEFFICIENT {' / '.join(l1_users)} sparsity weight" in out
    assert f"--k K active latents per token ({' / '.join(architecture_names('k'))})" in out


# --------------------------------------------------------------------------- no names outside


def _banned() -> set[str]:
    """Every architecture name, SAELens alias and extra tensor name the registry knows."""
    names = set(architecture_names()) | set(saelens_names())
    for arch in architecture_names():
        with torch.device("meta"):
            model = sae.build_sae(SAEConfig(architecture=arch, d_in=4, d_sae=8, k=2))
        names |= set(model.expected_tensors()) - set(SAELENS_TENSORS)
    return names


# Modules that pick an architecture as a value (a default, the demo's choice) rather than branch on one.
CHOOSERS = {("sae/config.py", "topk"), ("sae/features/demo_db.py", "topk"), ("app/demo_pipeline.py", "topk")}


def _strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant in a module, docstrings and f-string parts included
    except docstrings themselves (they may describe the formats)."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_no_module_outside_the_architectures_names_one() -> None:
    banned = _banned()
    assert {"relu", "topk", "batchtopk", "jumprelu", "standard", "threshold"} <= banned
    word = re.compile(r"(?<![\w])(" + "|".join(sorted(map(re.escape, banned - {"standard", "threshold"}))) + r")(?![\w])")
    files = [p for d in ("sae", "steering", "app") for p in sorted((ROOT / d).rglob("*.py"))
             if "architectures" not in p.relative_to(ROOT).parts]
    assert len(files) > 40
    hits = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for line, text in _strings(path):
            if text in banned and (rel, text) not in CHOOSERS:
                hits.append(f"{rel}:{line}: {text!r}")
            elif text not in banned and word.search(text):
                hits.append(f"{rel}:{line}: {text!r} (names an architecture)")
    assert not hits, "ask the architecture's class instead (sae/architectures/base.py):\n" + "\n".join(hits)
