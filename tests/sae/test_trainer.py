"""Trainer: schedules, exact resume, NaN stop, logging (metrics.jsonl, wandb offline), configs, CLI."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from sae.checkpoint import load_sae
from sae.config import ConfigError, SAEConfig, TrainConfig
from sae.training.logger import RunLogger
from sae.training.resume import latest_checkpoint, read_checkpoint
from sae.training.run import train
from sae.training.schedules import coefficient_at, dead_after_tokens, lr_at, total_steps
from sae.training.trainer import Trainer, TrainingDivergedError

D_IN = 16


class SeededStream:
    """Batch i is a pure function of (seed, i), so the stream resumes exactly via state_dict."""

    def __init__(self, batch: int = 128, seed: int = 0, nan_at: int | None = None, crash_at: int | None = None,
                 d_in: int = D_IN, scale: float = 1.0) -> None:
        self.batch, self.seed, self.nan_at, self.crash_at = batch, seed, nan_at, crash_at
        self.d_in, self.normalization_scale, self.pos = d_in, scale, 0
        g = torch.Generator().manual_seed(seed)
        self.atoms = torch.nn.functional.normalize(torch.randn(48, d_in, generator=g), dim=1)

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        if self.crash_at is not None and self.pos == self.crash_at:
            raise RuntimeError("simulated crash")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.pos)
        idx = torch.rand(self.batch, 48, generator=g).argsort(1)[:, :3]
        x = torch.zeros(self.batch, 48).scatter_(1, idx, torch.rand(self.batch, 3, generator=g) + 0.5) @ self.atoms
        self.pos += 1
        if self.nan_at is not None and self.pos == self.nan_at:
            x[3, 2] = float("nan")
        return x

    def state_dict(self) -> dict:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pos = int(state["pos"])


def small_cfg(out: Path, **kw) -> TrainConfig:
    saes = kw.pop("saes", None) or [
        SAEConfig(architecture="topk", d_in=D_IN, d_sae=64, k=3, dead_after_tokens=256),
        SAEConfig(architecture="jumprelu", d_in=D_IN, d_sae=64, target_l0=3),
    ]
    base = dict(out_dir=str(out), saes=saes, n_tokens=128 * 12, lr=3e-3, lr_warmup_steps=3, sparsity_warmup_steps=4,
                checkpoint_every_tokens=128 * 3, log_every_steps=2, progress=False)
    base.update(kw)
    return TrainConfig(**base)


# --------------------------------------------------------------------------- schedules


def test_lr_schedule_warmup_constant_decay() -> None:
    lrs = [lr_at(s, 100, 1.0, 10, 0.2) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[50] == 1.0 and lrs[79] == 1.0
    assert lrs[80] == pytest.approx(1.0) and lrs[90] == pytest.approx(0.5) and lrs[99] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(lrs[80:], lrs[81:], strict=False))
    assert lr_at(5, 100, 2e-4, 0, 0.0) == 2e-4


def test_coefficient_and_step_helpers() -> None:
    assert coefficient_at(0, 5.0, 10) == pytest.approx(0.5)
    assert coefficient_at(9, 5.0, 10) == 5.0 and coefficient_at(500, 5.0, 10) == 5.0
    assert coefficient_at(0, 5.0, 0) == 5.0
    assert total_steps(1000, 300) == 4
    assert dead_after_tokens(None, 2_000_000) == 200_000 and dead_after_tokens(None, 10**10) == 10_000_000
    assert dead_after_tokens(5000, 10) == 5000


# --------------------------------------------------------------------------- resume, NaN


def test_resume_after_interruption_is_exact(tmp_path: Path) -> None:
    ref = Trainer(small_cfg(tmp_path / "ref"))
    ref.fit(SeededStream())

    cfg = small_cfg(tmp_path / "run")
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(cfg).fit(SeededStream(crash_at=8))  # checkpoints at steps 3 and 6, dies in step 8
    meta, _ = read_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert meta["step"] == 6

    resumed = Trainer(cfg)
    resumed.fit(SeededStream())  # picks up the checkpoint and the stream position
    assert resumed.step_idx == ref.step_idx == 12
    for a, b in zip(ref.saes, resumed.saes, strict=True):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(p, q), name
    for a, b in zip(ref.slots, resumed.slots, strict=True):
        assert torch.equal(a.tokens_since_fired, b.tokens_since_fired)
        assert a.optimizer.state_dict()["state"][0]["exp_avg"].equal(b.optimizer.state_dict()["state"][0]["exp_avg"])
    # the rows the killed run logged after its step-6 checkpoint (step 8) are not logged twice
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8, 10, 12]


def test_resume_drops_log_rows_after_the_checkpoint_and_a_torn_line(tmp_path: Path) -> None:
    cfg = small_cfg(tmp_path, saes=[SAEConfig(architecture="topk", d_in=D_IN, d_sae=32, k=3)], n_tokens=128 * 4)
    log = tmp_path / "metrics.jsonl"
    tmp_path.mkdir(exist_ok=True)
    log.write_text('{"step": 2, "a": 1}\n{"step": 4, "a": 2}\n{"step": 6, "a"')  # killed mid-row
    RunLogger(cfg, tmp_path, total_tokens=1, initial_tokens=0, enabled=True, keep_through_step=2).close()
    assert log.read_text() == '{"step": 2, "a": 1}\n'
    RunLogger(cfg, tmp_path, total_tokens=1, initial_tokens=0, enabled=True).close()  # resume=false: kept as is
    assert log.read_text() == '{"step": 2, "a": 1}\n'


def test_trainer_state_round_trips_in_memory(tmp_path: Path) -> None:
    """`state_dict` / `load_state_dict` without files: the second trainer continues as the first."""
    cfg = small_cfg(tmp_path, n_tokens=128 * 4)
    first, stream = Trainer(cfg), SeededStream()
    first.fit(stream, n_tokens=128 * 2)
    meta, state = first.state_dict({"": stream}, 128 * 4)
    assert meta["step"] == 2 and meta["slots"] == ["topk_64_k3", "jumprelu_64_l0_3"] and state["stores"][""] == {"pos": 2}
    second, other = Trainer(cfg), SeededStream()
    second.load_state_dict(meta, state, {"": other})
    assert other.pos == 2 and second.step_idx == 2 and second.tokens_seen == 256
    for a, b in zip(first.saes, second.saes, strict=True):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    with pytest.raises(ConfigError, match="lr: checkpoint 0.003 vs now 0.01"):
        Trainer(small_cfg(tmp_path, n_tokens=128 * 4, lr=1e-2)).load_state_dict(meta, state, {"": other})


def test_nan_stops_cleanly_and_keeps_checkpoint(tmp_path: Path) -> None:
    cfg = small_cfg(tmp_path, checkpoint_every_tokens=128 * 2)
    trainer = Trainer(cfg)
    with pytest.raises(TrainingDivergedError) as err:
        trainer.fit(SeededStream(nan_at=8))
    msg = str(err.value)
    assert "step 7" in msg and "topk_64_k3" in msg and "NaN/inf activations" in msg and "checkpoint" in msg
    assert all(torch.isfinite(p).all() for sae in trainer.saes for p in sae.parameters())  # step not applied
    meta, state = read_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert meta["step"] == 6
    for slot in state["slots"].values():
        assert all(torch.isfinite(t).all() for t in slot["sae"].values())


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    Trainer(small_cfg(tmp_path, n_tokens=128 * 3)).fit(SeededStream())
    with pytest.raises(ConfigError, match="lr: checkpoint 0.003 vs now 0.01"):
        Trainer(small_cfg(tmp_path, n_tokens=128 * 3, lr=1e-2)).fit(SeededStream())
    # resume=false starts over and keeps the old checkpoints aside
    Trainer(small_cfg(tmp_path, n_tokens=128 * 3, lr=1e-2, resume=False)).fit(SeededStream())
    assert list(tmp_path.glob("checkpoints.old-*"))


# --------------------------------------------------------------------------- outputs and logging


def test_outputs_metrics_and_several_saes(tmp_path: Path) -> None:
    paths = Trainer(small_cfg(tmp_path)).fit(SeededStream())
    assert [p.name for p in paths] == ["topk_64_k3", "jumprelu_64_l0_3"]
    for p in paths:
        sae = load_sae(p)
        assert sae.cfg.d_in == D_IN
    saved = json.loads((tmp_path / "train_config.json").read_text())
    assert saved["n_tokens"] == 128 * 12 and len(saved["saes"]) == 2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    for key in ("train/fvu", "train/l0", "train/dead_frac", "train/loss", "loss/mse", "lr"):
        assert f"topk_64_k3/{key}" in last, key
    assert "jumprelu_64_l0_3/loss/l0" in last and "topk_64_k3/loss/auxk" in last
    assert "tokens_per_s" in last and last["tokens"] == 128 * 12
    assert rows[0]["topk_64_k3/train/fvu"] > last["topk_64_k3/train/fvu"]
    assert math.isclose(last["topk_64_k3/train/l0"], 3.0)


def test_train_folds_the_store_scale_and_checks_d_in(tmp_path: Path) -> None:
    cfg = small_cfg(tmp_path, saes=[SAEConfig(architecture="topk", d_in=D_IN, d_sae=32, k=3)], n_tokens=128 * 2)
    [path] = train(cfg, store=SeededStream(scale=0.25))
    assert path == tmp_path
    doc = json.loads((path / "cfg.json").read_text())
    assert doc["saekit"]["normalization_scale"] == 0.25 and doc["architecture"] == "topk" and doc["k"] == 3
    unscaled = SeededStream(scale=0.25)
    unscaled.cfg = type("Cfg", (), {"normalize": False})()  # reports a scale it did not apply
    [path] = train(small_cfg(tmp_path / "raw", saes=cfg.saes, n_tokens=128 * 2), store=unscaled)
    assert json.loads((path / "cfg.json").read_text())["saekit"]["normalization_scale"] == 1.0
    bad = small_cfg(tmp_path / "bad", saes=[SAEConfig(architecture="topk", d_in=32, d_sae=32, k=3)])
    with pytest.raises(ConfigError, match="set saes.N.d_in=16"):
        train(bad, store=SeededStream())


def test_wandb_offline_writes_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = small_cfg(tmp_path / "out", n_tokens=128 * 4, wandb_project="saekit-test", run_name="t1",
                    saes=[SAEConfig(architecture="topk", d_in=D_IN, d_sae=32, k=3)])
    Trainer(cfg).fit(SeededStream())
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


# --------------------------------------------------------------------------- CLI


def test_cli_config_precedence(tmp_path: Path) -> None:
    from app.cli import build_parser
    from app.commands.train import build_config

    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump({"lr": 1e-3, "n_tokens": 5000, "saes": [{"architecture": "relu"}, {"architecture": "topk"}]}))
    args = build_parser().parse_args(
        ["train", "--config", str(cfg_file), "--k", "8", "--lr", "5e-4", "--set", "lr=2e-3", "--out", str(tmp_path / "o")]
    )
    cfg = build_config(args)
    assert cfg.lr == 2e-3 and cfg.n_tokens == 5000 and cfg.out_dir == str(tmp_path / "o")
    assert [s.k for s in cfg.saes] == [8, 8] and [s.architecture for s in cfg.saes] == ["relu", "topk"]
    with pytest.raises(ConfigError, match="unknown key"):
        build_config(build_parser().parse_args(["train", "--set", "saes.0.kk=3"]))


def test_cli_trains_on_a_real_cache_and_folds_normalisation(model, tmp_path: Path) -> None:
    """`saekit train` end to end: hook and d_in from the cache, output works on RAW activations."""
    from app.cli import main
    from sae.activation_cache import build_cache
    from sae.config import CacheConfig, DataConfig, StoreConfig
    from sae.store import ActivationStore

    corpus = Path(__file__).resolve().parents[1] / "data" / "tiny_corpus.jsonl"
    cache = tmp_path / "acts"
    build_cache(CacheConfig(out_dir=str(cache), hooks=["blocks.2.hook_resid_post"], n_tokens=24 * 64, shard_tokens=6 * 64,
                            batch_size=8, data=DataConfig(source=str(corpus), context_size=64)), model=model, progress=False)
    out = tmp_path / "sae"
    rc = main(["train", "--cache", str(cache), "--out", str(out), "--arch", "topk", "--k", "16", "--d-sae", "256",
               "--tokens", "6000", "--batch-size", "256", "--lr", "3e-3", "--no-progress"])
    assert rc == 0
    sae = load_sae(out)
    assert sae.cfg.hook_name == "blocks.2.hook_resid_post" and sae.cfg.d_in == 576
    assert json.loads((out / "train_config.json").read_text())["cache_dir"] == str(cache)
    # cfg.json says how the inputs were made and which model file they came from (issue 17)
    meta = json.loads((out / "cfg.json").read_text())["metadata"]
    assert meta["dataset_path"] == str(corpus) and meta["context_size"] == 64 and meta["prepend_bos"] is True
    assert meta["exclude_special_tokens"] is True and meta["max_norm_ratio"] == 10.0
    assert meta["hf_hook_name"] == "model.layers.2" and meta["model_from_pretrained_kwargs"] == {"dtype": "float32"}
    from sae.embedded import find_gguf

    assert meta["model_source"] == "gguf" and meta["gguf_sha256"] == hashlib.sha256(find_gguf().read_bytes()).hexdigest()
    assert "differ from the hub checkpoint" in meta["model_note"]
    raw = next(iter(ActivationStore.from_cache(cache, cfg=StoreConfig(batch_size=1024, normalize=False, shuffle=False))))
    assert float(raw.norm(dim=1).mean()) > 2 * 576**0.5 or float(raw.norm(dim=1).mean()) < 0.5 * 576**0.5  # scale matters
    with torch.no_grad():
        fvu = float((sae(raw).sae_out - raw).pow(2).sum() / (raw - raw.mean(0)).pow(2).sum())
    # FVU is scale-free: on raw activations the folded SAE must match what training saw on normalised ones
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_fvu = [r["train/fvu"] for r in rows if "train/fvu" in r][-1]
    assert fvu < 0.95 and abs(fvu - train_fvu) < 0.1, (fvu, train_fvu)


def test_learning_rate_defaults_per_architecture(tmp_path) -> None:
    saes = [SAEConfig(architecture=a, d_in=16, d_sae=32, k=4, target_l0=4) for a in ("topk", "batchtopk", "relu", "jumprelu")]
    slots = Trainer(TrainConfig(out_dir=str(tmp_path), saes=saes, progress=False)).slots
    assert [s.lr for s in slots] == [2e-3, 2e-3, 4e-3, 4e-4]
    assert all(s.optimizer.param_groups[0]["lr"] == s.lr for s in slots)
    pinned = Trainer(TrainConfig(out_dir=str(tmp_path), saes=saes, lr=1e-3, progress=False)).slots
    assert {s.lr for s in pinned} == {1e-3}
