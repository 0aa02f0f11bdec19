"""sae.density: dead / dense latents over their own token budget, and the `saekit eval` flags."""

from __future__ import annotations

import argparse

import pytest
import torch

from sae.config import DataConfig, EvalConfig
from sae.density import count_firing
from sae.evaluation import evaluate
from sae.features.demo_db import random_sae
from tests.sae.test_evaluation import _tiny_sae


def test_counts_match_hand_computation_and_stop_at_the_budget() -> None:
    # codes of [2,0],[0,3],[1,1],[4,2] under the tiny SAE: latents 0 and 1 fire on 3 of 4, latent 2 never
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [4.0, 2.0], [9.0, 9.0]])
    s = count_firing(_tiny_sae(), [x[:3], x[3:]], n_tokens=4, source="acts", dense_threshold=0.5)
    assert (s.n_tokens, s.source, s.n_dead, s.n_dense) == (4, "acts", 1, 2)
    assert s.l0 == pytest.approx(1.5) and s.l1 == pytest.approx(13 / 4)  # the 5th row is past the budget
    with pytest.raises(ValueError, match="no activations"):
        count_firing(_tiny_sae(), [], n_tokens=4, source="nowhere")


def test_evaluate_counts_dead_and_dense_over_density_tokens(model) -> None:
    s = random_sae(d_sae=128, layer=3, k=4, dead=5)
    cfg = EvalConfig(ce_batches=0, n_tokens=100, density_tokens=700, data=DataConfig(context_size=64))
    res = evaluate(s, model, cfg)
    assert res.reconstruction.n_tokens == 100 and res.reconstruction.source == "model"
    assert res.sparsity.n_tokens == 700 and res.sparsity.source == "model"
    assert res.sparsity.n_dead >= 5 and res.sparsity.l0 == pytest.approx(4.0)
    assert res.to_dict()["sparsity"]["n_tokens"] == 700
    with pytest.raises(ValueError, match="density_tokens must be >= 0"):
        evaluate(s, model, EvalConfig(density_tokens=-1))


def test_cli_flags_build_the_config(tmp_path) -> None:
    from app.commands import eval as eval_cmd

    p = argparse.ArgumentParser()
    eval_cmd.add_arguments(p)
    cfg = eval_cmd.build_config(p.parse_args([str(tmp_path), "absorption_max_words=300", "--probing", "--absorption",
                                              "--density-tokens", "500000"]))
    assert (cfg.probing, cfg.absorption, cfg.density_tokens, cfg.absorption_max_words) == (True, True, 500000, 300)
    assert cfg.out_path == str(tmp_path / "eval.json")
    plain = eval_cmd.build_config(p.parse_args([str(tmp_path)]))
    assert (plain.probing, plain.absorption, plain.density_tokens) == (False, False, 0)  # the default stays fast
