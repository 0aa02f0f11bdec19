"""Matryoshka BatchTopK: nested prefixes each reconstruct, planted recovery, checkpoints, options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sae.architectures.base import build_sae
from sae.architectures.matryoshka import prefix_ends
from sae.checkpoint import load_sae, save_sae
from sae.config import SAEConfig
from tests.sae.test_architectures import (
    ACTIVE,
    D_IN,
    assert_sparse_path_matches_dense,
    mean_max_cosine,
    train_planted,
)

ARCH = "matryoshka_batchtopk"


def _train(arch: str, stream, tmp_path: Path, steps: int = 200) -> torch.nn.Module:
    return train_planted(SAEConfig(architecture=arch, d_in=D_IN, d_sae=128, k=ACTIVE), stream, tmp_path / arch, steps)


def _zipf_atoms(n_atoms: int = 64) -> torch.Tensor:
    atoms = torch.randn(n_atoms, D_IN, generator=torch.Generator().manual_seed(1234))
    return atoms / atoms.norm(dim=1, keepdim=True)


def _zipf_stream(seed: int = 0, batch: int = 512):
    """Atoms used with frequency ~ 1/rank: a dictionary's first latents should hold the common ones.
    The atoms are the same for every seed; the seed draws the samples."""
    atoms = _zipf_atoms()
    n_atoms = len(atoms)
    g = torch.Generator().manual_seed(seed)
    probs = 1.0 / torch.arange(1, n_atoms + 1)
    probs /= probs.sum()

    def batches():
        while True:
            idx = torch.multinomial(probs.expand(batch, -1), ACTIVE, replacement=False, generator=g)
            coef = torch.rand(batch, ACTIVE, generator=g) + 0.5
            yield torch.zeros(batch, n_atoms).scatter_(1, idx, coef) @ atoms

    return batches()


def _prefix_fvu(sae, x: torch.Tensor, end: int) -> float:
    with torch.no_grad():
        codes = sae.encode(x)
        recon = codes[:, :end] @ sae.W_dec[:end] + sae.b_dec
    return float((recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def test_recovers_planted_atoms_and_first_prefix_reconstructs_alone(tmp_path: Path) -> None:
    """The point of the architecture: the first 16 of 128 latents carry the common directions
    (BatchTopK's first 16 are as good as random), and the whole dictionary still finds the atoms."""
    held_out = next(_zipf_stream(seed=9))
    saes = {arch: _train(arch, _zipf_stream(), tmp_path, steps=150).eval() for arch in (ARCH, "batchtopk")}
    fvu = {arch: [_prefix_fvu(sae, held_out, end) for end in (16, 128)] for arch, sae in saes.items()}
    print(fvu)  # measured: matryoshka 0.41 / 0.12, batchtopk 1.05 / 0.09
    assert fvu[ARCH][0] < 0.6 * fvu["batchtopk"][0], fvu
    assert fvu[ARCH][1] < 0.3, fvu  # the whole dictionary still reconstructs
    common = _zipf_atoms()[:32]  # the rarest atoms show up too seldom in 150 steps to judge
    score = mean_max_cosine(common, saes[ARCH].W_dec.detach())
    assert score > 0.9, f"mean max cosine to the 32 most common planted atoms {score:.3f}"


def test_sparse_path_matches_dense_with_prefix_losses() -> None:
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(architecture=ARCH, d_in=24, d_sae=96, k=4, aux_k=6))
    losses = assert_sparse_path_matches_dense(sae, sae.coefficients())
    assert set(losses) == {"mse", "auxk", "prefix_mse"} and losses["prefix_mse"] > losses["mse"] > 0


def test_prefix_loss_is_the_sum_of_prefix_reconstruction_errors() -> None:
    torch.manual_seed(1)
    sae = build_sae(SAEConfig(architecture=ARCH, d_in=16, d_sae=48, k=6, options={"group_sizes": [8, 16, 24]}))
    assert sae.prefix_ends == [8, 24, 48]
    x = torch.randn(64, 16)
    out = sae.training_forward(x, None, sparse=True)
    with torch.no_grad():  # the batch's 6 x 64 largest pre-activations, written out by hand
        vals, idx = sae.pre_acts(x).relu().flatten().topk(6 * 64)
        codes = torch.zeros(64 * 48).scatter(0, idx, vals).view(64, 48)
        want = sum(float((codes[:, :e] @ sae.W_dec[:e] + sae.b_dec - x).pow(2).sum(-1).mean()) for e in (8, 24))
    assert float(out.losses["prefix_mse"].detach()) == pytest.approx(want, rel=1e-4)


def test_default_prefixes_halve_the_dictionary() -> None:
    assert prefix_ends(4608, None) == [288, 576, 1152, 2304, 4608]
    assert prefix_ends(6, None) == [1, 3, 6]
    assert prefix_ends(10, [4, 6]) == [4, 10]


def test_checkpoint_saves_a_jumprelu_and_keeps_the_groups(tmp_path: Path) -> None:
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(architecture=ARCH, d_in=16, d_sae=48, k=4, options={"group_sizes": [12, 36]}))
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        sae.threshold.fill_(0.2)
    save_sae(sae, tmp_path)
    raw = json.loads((tmp_path / "cfg.json").read_text())
    assert raw["architecture"] == "jumprelu" and raw["saekit"]["trained_architecture"] == ARCH
    assert raw["saekit"]["sae"]["options"] == {"group_sizes": [12, 36]}
    loaded = load_sae(tmp_path)
    assert loaded.architecture == "jumprelu" and loaded.cfg.options == {}
    x = torch.randn(32, 16)
    assert torch.equal(loaded.encode(x), sae.encode(x))


def test_bad_options_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"sum to d_sae=48.*--option group_sizes="):
        build_sae(SAEConfig(architecture=ARCH, d_sae=48, options={"group_sizes": [10, 10]}))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['groups'\].*group_sizes"):
        build_sae(SAEConfig(architecture=ARCH, d_sae=48, options={"groups": [24, 24]}))
    with pytest.raises(ValueError, match="topk takes no options"):
        build_sae(SAEConfig(architecture="topk", options={"group_sizes": [1]}))


def test_cli_option_flag_reaches_every_sae() -> None:
    from app.cli import build_parser
    from app.commands import train

    args = build_parser().parse_args(["train", "--arch", ARCH, "--d-sae", "64", "--option", "group_sizes=[16,48]"])
    cfg = train.build_config(args)
    assert cfg.saes[0].options == {"group_sizes": [16, 48]}
    build_sae(cfg.saes[0])  # valid as given
