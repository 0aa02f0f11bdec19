"""Architectures: planted-dictionary recovery, sparse kernels vs dense autograd, the interface."""

from __future__ import annotations

import pytest
import torch

from sae.architectures.base import (
    SparseAutoencoder,
    architectures,
    build_sae,
    get_architecture,
    register,
)
from sae.architectures.sparse_ops import gathered_pre_acts, select_topk, sparse_decode
from sae.config import SAEConfig, TrainConfig
from sae.training.trainer import Trainer

D_IN, N_ATOMS, ACTIVE = 32, 64, 3


def planted_stream(batch: int = 512, seed: int = 0):
    """x = sum of ACTIVE random unit atoms with coefficients in [0.5, 1.5]; returns (atoms, iterator)."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(N_ATOMS, D_IN, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)

    def batches():
        while True:
            idx = torch.rand(batch, N_ATOMS, generator=g).argsort(1)[:, :ACTIVE]
            coef = torch.rand(batch, ACTIVE, generator=g) + 0.5
            yield torch.zeros(batch, N_ATOMS).scatter_(1, idx, coef) @ atoms

    return atoms, batches()


def mean_max_cosine(atoms: torch.Tensor, W_dec: torch.Tensor) -> float:
    W = W_dec / W_dec.norm(dim=1, keepdim=True)
    return float((atoms @ W.T).max(dim=1).values.mean())


PLANTED = {
    "topk": dict(k=ACTIVE),
    "batchtopk": dict(k=ACTIVE),
    "relu": dict(l1_coefficient=0.3),
    "jumprelu": dict(target_l0=ACTIVE, l0_coefficient=1.0),
}


def train_planted(sae_cfg: SAEConfig, stream, tmp_path, steps: int = 200) -> SparseAutoencoder:
    """Train one SAE on a planted stream with the settings every recovery test uses."""
    cfg = TrainConfig(
        out_dir=str(tmp_path),
        saes=[sae_cfg],
        n_tokens=512 * steps,
        lr=1e-2,
        lr_warmup_steps=10,
        sparsity_warmup_steps=30,
        checkpoint_every_tokens=10**9,
        progress=False,
    )
    trainer = Trainer(cfg)
    trainer.fit(stream)
    return trainer.saes[0]


@pytest.mark.parametrize("arch", sorted(PLANTED))
def test_recovers_planted_dictionary(arch: str, tmp_path) -> None:
    atoms, stream = planted_stream()
    sae = train_planted(SAEConfig(architecture=arch, d_in=D_IN, d_sae=128, **PLANTED[arch]), stream, tmp_path)
    score = mean_max_cosine(atoms, sae.W_dec.detach())
    print(f"{arch}: mean max cosine {score:.3f}")
    assert score > 0.9, f"{arch}: mean max cosine to the planted atoms {score:.3f}"


def assert_sparse_path_matches_dense(sae: SparseAutoencoder, coefficients: dict[str, float],
                                     x: torch.Tensor | None = None) -> dict[str, float]:
    """Run the sparse and the dense training paths on one batch (AuxK active); both must give the
    same losses, gradients, output and firing counts. Returns the losses."""
    torch.manual_seed(0)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3)
        sae.b_dec.normal_(0, 0.3)
    x = torch.randn(200, sae.d_in) if x is None else x
    dead = torch.zeros(sae.d_sae, dtype=torch.bool)
    dead[::5] = True
    results = []
    for sparse in (True, False):
        sae.zero_grad()
        out = sae.training_forward(x, dead, sparse=sparse)
        sae.loss(out, coefficients).backward()
        results.append(({k: float(v.detach()) for k, v in out.losses.items()}, [p.grad.clone() for p in sae.parameters()], out))
    (l_s, g_s, o_s), (l_d, g_d, o_d) = results
    assert l_s.keys() == l_d.keys() and l_s["auxk"] > 0
    for k in l_s:
        assert l_s[k] == pytest.approx(l_d[k], rel=1e-4), k
    for a, b in zip(g_s, g_d, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(o_s.sae_out, o_d.sae_out, rtol=1e-5, atol=1e-5)
    assert torch.equal(o_s.fire_counts, o_d.fire_counts)
    return l_s


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_training_path_matches_dense(arch: str) -> None:
    """The sparse kernels give the dense autograd's losses and gradients (with AuxK active)."""
    torch.manual_seed(0)
    assert_sparse_path_matches_dense(build_sae(SAEConfig(architecture=arch, d_in=24, d_sae=96, k=4, aux_k=6)), {"auxk": 0.5})


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka_batchtopk"])
def test_batchtopk_tokens_that_win_most_latents_get_extra_rows_not_wider_ones(arch: str) -> None:
    """A few high-norm tokens win far more than k latents each: the selection stays as wide as an
    ordinary token's (those tokens own several rows) and is still the exact batch top-k."""
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(architecture=arch, d_in=24, d_sae=96, k=4, aux_k=6))
    x = torch.randn(200, 24)
    x[[3, 50, 51]] *= 40
    sel, keep, _ = sae._select(x, None)
    n_cand = sae.candidate_factor * 4
    assert sel.rows is not None and sel.idx_BK.shape[1] == 4  # rows k wide
    kept_per_token = torch.zeros(200).index_add(0, sel.rows, keep.sum(1))
    assert kept_per_token[[3, 50, 51]].min() > n_cand  # they won more latents than a row holds
    assert kept_per_token.sum() == 200 * 4
    assert_sparse_path_matches_dense(sae, {"auxk": 0.5}, x)


def test_sparse_ops_exclude_live_latents_from_aux() -> None:
    torch.manual_seed(1)
    x, W, b_enc, b_dec = torch.randn(64, 16), torch.randn(16, 40), torch.randn(40), torch.randn(16)
    dead = torch.tensor([1, 3, 7, 8, 20, 33])
    main, aux = select_topk(x, W, b_enc, b_dec, 5, dead_idx=dead, k_aux=3)
    pre = (x - b_dec) @ W + b_enc
    assert torch.equal(main.idx_BK.sort(1).values, pre.topk(5).indices.sort(1).values)
    assert aux is not None and bool(torch.isin(aux.idx_BK, dead).all())
    for row in range(64):
        assert not set(main.idx_BK[row].tolist()) & set(aux.idx_BK[row].tolist())
    # decode and gathered values are plain linear algebra
    W_dec = torch.randn(40, 16)
    vals = gathered_pre_acts(x, W, b_enc, b_dec, main)
    torch.testing.assert_close(vals, pre.gather(1, main.idx_BK))
    dense = torch.zeros(64, 40).scatter(1, main.idx_BK, vals)
    torch.testing.assert_close(sparse_decode(vals, main.idx_BK, W_dec), dense @ W_dec, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_interface_shapes_and_errors(arch: str) -> None:
    sae = build_sae(SAEConfig(architecture=arch, d_in=16, d_sae=48, k=4))
    x = torch.randn(2, 5, 16)
    codes = sae.encode(x)
    assert codes.shape == (2, 5, 48)
    assert sae.decode(codes).shape == (2, 5, 16)
    out = sae(x)
    assert out.sae_out.shape == x.shape and out.feature_acts.shape == (2, 5, 48) and "mse" in out.losses
    assert {n for n, _ in sae.named_parameters()} >= {"W_enc", "b_enc", "W_dec", "b_dec"}
    assert sae.W_enc.shape == (16, 48) and sae.W_dec.shape == (48, 16)
    with pytest.raises(ValueError, match="d_in=16"):
        sae.encode(torch.randn(3, 17))
    if arch == "topk":
        assert int((codes != 0).sum(-1).max()) <= 4


def test_registry_unknown_and_one_file_extension() -> None:
    assert {"relu", "topk", "batchtopk", "jumprelu"} <= set(architectures())
    with pytest.raises(ValueError, match="known:"):
        get_architecture("gatedd")

    @register("test_identity_relu")
    class _Tiny(SparseAutoencoder):
        def activation(self, pre_acts: torch.Tensor) -> torch.Tensor:
            return pre_acts.relu()

    sae = build_sae(SAEConfig(architecture="test_identity_relu", d_in=8, d_sae=16))
    assert isinstance(sae, _Tiny) and sae.encode(torch.randn(4, 8)).shape == (4, 16)


def test_jumprelu_thresholds_move_under_adam() -> None:
    """Straight-through gradients reach the raw fp32 thresholds and Adam moves them ~lr per step."""
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(architecture="jumprelu", d_in=16, d_sae=32, jumprelu_init_threshold=0.5))
    assert sae.threshold.dtype == torch.float32
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    start = sae.threshold.detach().clone()
    for _ in range(20):
        out = sae.training_forward(torch.randn(256, 16))
        opt.zero_grad()
        sae.loss(out, {"l0": 1.0}).backward()
        assert sae.threshold.grad is not None and sae.threshold.grad.abs().sum() > 0
        opt.step()
    moved = (sae.threshold.detach() - start).abs()
    assert float(moved.max()) > 0.1  # a log-parameterised threshold would move ~1% here


def test_decoder_gradient_loses_only_its_part_along_each_row() -> None:
    """What the trainer does before each step of a unit-norm decoder: each W_dec row's gradient keeps
    its component orthogonal to the row (checked in float64), also for rows not of unit norm."""
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(architecture="topk", d_in=16, d_sae=32, k=4))
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(32, 1) * 3 + 0.1)
    sae.W_dec.grad = torch.randn(32, 16)
    w, g = sae.W_dec.detach().double(), sae.W_dec.grad.double()
    expected = g - (g * w).sum(1, keepdim=True) / w.pow(2).sum(1, keepdim=True) * w
    sae.remove_parallel_decoder_grad()
    assert torch.allclose(sae.W_dec.grad.double(), expected, atol=1e-5)
    assert float((sae.W_dec.grad.double() * w).sum(1).abs().max()) < 1e-4


def test_batchtopk_learns_inference_threshold() -> None:
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(architecture="batchtopk", d_in=16, d_sae=64, k=4))
    x = torch.randn(512, 16)
    out = sae.training_forward(x)
    assert float(out.l0) == pytest.approx(4.0, abs=0.05)  # B*k winners in the batch
    assert float(sae.threshold) > 0
    arch, tensors, _ = sae.export()
    assert arch == "jumprelu" and tensors["threshold"].shape == (64,)
    l0_infer = float((sae.encode(x) != 0).sum(-1).float().mean())
    assert 2.0 < l0_infer < 8.0


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_bf16_autocast_matches_fp32_training(arch: str, tmp_path) -> None:
    """bf16 autocast keeps fp32 master weights and reaches fp32's held-out FVU (judged in fp32)."""
    results = {}
    for autocast in (None, "bfloat16"):
        torch.manual_seed(0)
        _, stream = planted_stream(batch=256, seed=3)
        cfg = TrainConfig(
            out_dir=str(tmp_path / str(autocast)),
            saes=[SAEConfig(architecture=arch, d_in=D_IN, d_sae=64, k=ACTIVE, l1_coefficient=0.3)],
            n_tokens=256 * 80,
            lr=3e-3,
            lr_warmup_steps=5,
            sparsity_warmup_steps=10,
            autocast_dtype=autocast,
            checkpoint_every_tokens=10**9,
            progress=False,
        )
        trainer = Trainer(cfg)
        held_out = next(stream)
        sae = trainer.saes[0]
        with torch.no_grad():
            fvu0 = float((sae(held_out).sae_out - held_out).pow(2).sum() / (held_out - held_out.mean(0)).pow(2).sum())
        trainer.total_steps = 80
        for _ in range(80):
            trainer.step(next(stream))
        assert all(p.dtype == torch.float32 for p in sae.parameters())
        with torch.no_grad():
            fvu = float((sae(held_out).sae_out - held_out).pow(2).sum() / (held_out - held_out.mean(0)).pow(2).sum())
        results[autocast] = (fvu0, fvu)
    fvu0, fvu32 = results[None]
    _, fvu16 = results["bfloat16"]
    assert fvu32 < 0.8 * fvu0, results
    assert abs(fvu16 - fvu32) < 0.05, results
