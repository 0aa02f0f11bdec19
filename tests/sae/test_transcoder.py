"""Transcoders: any architecture reading one hook and reconstructing another (SAEConfig.hook_name_out),
with an optional linear skip term. Planted recovery, the sparse path, checkpoints, paired stores,
the CE splice on the embedded model, and the errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from sae.architectures.base import build_sae
from sae.checkpoint import CheckpointError, load_sae, save_sae
from sae.config import SAEConfig
from tests.sae.test_architectures import (
    ACTIVE,
    D_IN,
    N_ATOMS,
    assert_sparse_path_matches_dense,
    mean_max_cosine,
    train_planted,
)

D_OUT = 24
D_DENSE = 8  # input dimensions holding dense noise, which no code predicts: only a skip term can carry it


def planted_pairs(skip: bool, batch: int = 512, seed: int = 0):
    """(atoms_in, atoms_out, skip matrix [D_OUT, D_IN] or None, iterator of (x, y)).
    x = [code @ atoms_in, dense noise] (D_IN - D_DENSE and D_DENSE dimensions), y = code @ atoms_out
    (+ x @ S^T, S reading the noise). On the code's dimensions a skip term trades off freely against
    the decoder (it learns the linear part of the map there, as on a real MLP), so S is planted where
    it is identifiable: on what no code predicts and only a linear map of the input can carry."""
    g = torch.Generator().manual_seed(seed)
    atoms_in = torch.randn(N_ATOMS, D_IN - D_DENSE, generator=g)
    atoms_in /= atoms_in.norm(dim=1, keepdim=True)
    atoms_out = torch.randn(N_ATOMS, D_OUT, generator=g)
    atoms_out /= atoms_out.norm(dim=1, keepdim=True)
    S = None
    if skip:
        S = torch.zeros(D_OUT, D_IN)
        S[:, -D_DENSE:] = torch.randn(D_OUT, D_DENSE, generator=g) / D_DENSE**0.5

    def batches():
        while True:
            idx = torch.rand(batch, N_ATOMS, generator=g).argsort(1)[:, :ACTIVE]
            code = torch.zeros(batch, N_ATOMS).scatter_(1, idx, torch.rand(batch, ACTIVE, generator=g) + 0.5)
            x = torch.cat([code @ atoms_in, torch.randn(batch, D_DENSE, generator=g) / D_DENSE**0.5], dim=1)
            y = code @ atoms_out + (x @ S.T if S is not None else 0)
            yield x, y

    return atoms_in, atoms_out, S, batches()


def transcoder_cfg(arch: str = "topk", skip: bool = False, **kw) -> SAEConfig:
    return SAEConfig(architecture=arch, d_in=D_IN, d_out=D_OUT, d_sae=128, k=ACTIVE, hook_name="blocks.3.ln2.hook_normalized",
                     hook_name_out="blocks.3.hook_mlp_out", skip_connection=skip, **kw)


@pytest.mark.parametrize("skip", [False, True])
def test_recovers_planted_dictionary_and_skip_matrix(skip: bool, tmp_path: Path) -> None:
    atoms_in, atoms_out, S, stream = planted_pairs(skip)
    tc = train_planted(transcoder_cfg(skip=skip), stream, tmp_path)
    assert tc.W_dec.shape == (128, D_OUT) and tc.b_dec.shape == (D_OUT,) and not tc.cfg.apply_b_dec_to_input
    with torch.no_grad():
        # what one planted input atom does to the output, through the codes and the skip term
        pure_atoms = torch.cat([atoms_in, torch.zeros(N_ATOMS, D_DENSE)], dim=1)
        effect = tc.reconstruct(pure_atoms) - tc.b_dec
        effect_cos = float(torch.nn.functional.cosine_similarity(effect, atoms_out, dim=1).mean())
    print(f"skip={skip}: decoder rows' mean max cosine {mean_max_cosine(atoms_out, tc.W_dec.detach()):.3f}, "
          f"atoms' effects' cosine {effect_cos:.3f}")
    assert effect_cos > 0.9
    if skip:
        err = float((tc.W_skip.detach()[:, -D_DENSE:] - S[:, -D_DENSE:]).norm() / S.norm())
        print(f"W_skip relative error where identifiable {err:.3f}")
        assert err < 0.15, f"W_skip relative error {err:.3f}"
    else:  # no skip term to share the work: the decoder rows are the planted output atoms
        assert mean_max_cosine(atoms_out, tc.W_dec.detach()) > 0.9
    x, y = next(stream)
    with torch.no_grad():
        fvu = float((y - tc.reconstruct(x)).pow(2).sum() / (y - y.mean(0)).pow(2).sum())
    assert fvu < 0.3, fvu  # 1.0: predicting the mean


def test_sparse_path_matches_dense_for_a_skip_transcoder() -> None:
    """The sparse kernels reconstruct the target (less the skip term) exactly as dense autograd does."""
    torch.manual_seed(0)
    tc = build_sae(transcoder_cfg(skip=True, aux_k=6))
    target = torch.randn(200, D_OUT)
    orig = tc.training_forward
    with torch.no_grad():
        tc.W_skip.normal_(0, 0.1)
    # what forward_for_training hands the architecture: the target less the (differentiable) skip term
    tc.training_forward = lambda x, dead, sparse=True: orig(x, dead, sparse, target=target - tc.skip_term(x))  # type: ignore[method-assign]
    losses = assert_sparse_path_matches_dense(tc, {"auxk": 0.5})
    assert losses["mse"] > 0


# --------------------------------------------------------------------------- paired stores


def paired_cache(d: Path, n_shards: int = 3, rows: int = 4, T: int = 8, d_in: int = 16, d_out: int = 8) -> Path:
    """A cache of hooks "in" and "out" whose keep masks differ; column 0 of every activation is the
    global id of its token position, so a pair's two halves can be checked to share a position."""
    from sae.atomic_io import atomic_write_json
    from sae.shards import FORMAT, MANIFEST, write_shard

    d.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    entries = []
    for i in range(n_shards):
        pos_id = (torch.arange(rows * T) + i * rows * T).float().view(rows, T)
        tensors = {"tokens": torch.zeros(rows, T, dtype=torch.int32), "rows": torch.arange(rows) + i * rows}
        keeps = {"in": torch.rand(rows, T, generator=g) > 0.2, "out": torch.rand(rows, T, generator=g) > 0.3}
        keeps["in"][:, 0] = False  # e.g. BOS
        if i == 1:
            keeps["out"] = keeps["in"].clone()  # identical masks: the direct path
        for h, width in (("in", d_in), ("out", d_out)):
            acts = torch.randn(int(keeps[h].sum()), width, generator=g)
            acts[:, 0] = pos_id[keeps[h]]
            tensors[f"acts.{h}"], tensors[f"keep.{h}"] = acts, keeps[h]
        info = {"rows": rows, "row_start": i * rows, "n_kept": {h: int(k.sum()) for h, k in keeps.items()}, "rank": 0}
        entries.append(write_shard(d, i, tensors, info))
    atomic_write_json(d / MANIFEST, {"format": FORMAT, "version": 1, "complete": True, "hooks": ["in", "out"],
                                     "d_in": {"in": d_in, "out": d_out}, "fingerprint": "paired", "shards": entries})
    return d


def test_store_pairs_input_and_target_from_the_same_positions(tmp_path: Path) -> None:
    from safetensors import safe_open

    from sae.config import StoreConfig
    from sae.store import ActivationPair, ActivationStore

    cache = paired_cache(tmp_path / "acts")
    both = set()
    for f in sorted(cache.glob("shard-*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            a = set(h.get_tensor("acts.in")[:, 0].long().tolist())
            both |= a & set(h.get_tensor("acts.out")[:, 0].long().tolist())
    store = ActivationStore.from_cache(cache, "in", StoreConfig(batch_size=5, buffer_tokens=16, device="cpu", seed=1),
                                       target_hook="out")
    assert (store.d_in, store.d_out, store.n_tokens) == (16, 8, len(both))
    assert store.normalization_scale != store.target_scale  # each side has its own
    seen: list[int] = []
    for batch in store.batches(len(both)):
        assert isinstance(batch, ActivationPair) and batch.input.shape[1] == 16 and batch.target.shape[1] == 8
        ids_in = (batch.input[:, 0] / store.normalization_scale).round().long()
        ids_out = (batch.target[:, 0] / store.target_scale).round().long()
        assert torch.equal(ids_in, ids_out)  # one shuffle for both
        seen += ids_in.tolist()
    assert sorted(seen[: len(both)]) == sorted(both)  # every paired position once per epoch, shuffled
    assert seen[: len(both)] != sorted(seen[: len(both)])
    # resume mid-epoch continues the pairs exactly
    state = store.state_dict()
    nxt = next(iter(store))
    again = ActivationStore.from_cache(cache, "in", StoreConfig(batch_size=5, buffer_tokens=16, device="cpu", seed=1),
                                       target_hook="out")
    again.load_state_dict(state)
    other = next(iter(again))
    assert torch.equal(nxt.input, other.input) and torch.equal(nxt.target, other.target)


def test_store_names_the_cache_command_when_the_target_hook_is_missing(tmp_path: Path) -> None:
    from sae.store import ActivationStore, StoreError

    cache = paired_cache(tmp_path / "acts")
    with pytest.raises(StoreError, match=r"saekit cache --hook in --hook blocks.3.hook_mlp_out"):
        ActivationStore.from_cache(cache, "in", target_hook="blocks.3.hook_mlp_out")


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(("arch", "skip", "saved_as"), [
    ("topk", True, "topk_skip_transcoder"), ("relu", False, "transcoder"), ("relu", True, "skip_transcoder"),
    ("jumprelu", True, "jumprelu_skip_transcoder"), ("batchtopk", False, "jumprelu_transcoder"),
])
def test_checkpoint_round_trip_folds_both_scales(arch: str, skip: bool, saved_as: str, tmp_path: Path) -> None:
    import json

    from safetensors.torch import load_file

    torch.manual_seed(0)
    tc = build_sae(transcoder_cfg(arch, skip=skip))
    with torch.no_grad():
        for name, p in [*tc.named_parameters(), *tc.named_buffers()]:  # BatchTopK's threshold is a buffer
            p.add_(torch.randn_like(p) * 0.1) if name != "threshold" else p.fill_(0.5)
    tc.eval()
    s, t = 2.5, 0.4  # the store's input and target factors: the trained SAE saw s x and t y
    save_sae(tc, tmp_path, normalization_scale=s, target_scale=t)
    doc = json.loads((tmp_path / "cfg.json").read_text())
    assert doc["architecture"] == saved_as and doc["d_out"] == D_OUT and doc["apply_b_dec_to_input"] is False
    assert doc["metadata"]["hook_name_out"] == "blocks.3.hook_mlp_out"
    assert doc["saekit"]["target_normalization_scale"] == t
    tensors = load_file(str(tmp_path / "sae_weights.safetensors"))
    assert tensors["W_dec"].shape == (128, D_OUT) and tensors["b_dec"].shape == (D_OUT,)
    assert ("W_skip" in tensors) == skip and (not skip or tensors["W_skip"].shape == (D_OUT, D_IN))
    loaded = load_sae(tmp_path)
    assert loaded.is_transcoder and loaded.cfg.hook_name_out == "blocks.3.hook_mlp_out" and loaded.d_out == D_OUT
    x_raw = torch.randn(64, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x_raw), tc.encode(s * x_raw), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(loaded.reconstruct(x_raw), tc.reconstruct(s * x_raw) / t, rtol=1e-4, atol=1e-5)


def test_checkpoint_errors(tmp_path: Path) -> None:
    import json

    tc = build_sae(transcoder_cfg())
    with pytest.raises(CheckpointError, match="target_scale"):
        save_sae(tc, tmp_path / "a", normalization_scale=2.0)
    save_sae(tc, tmp_path / "b")
    doc = json.loads((tmp_path / "b" / "cfg.json").read_text())
    doc["d_out"] = D_OUT + 1
    (tmp_path / "b" / "cfg.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="d_out"):
        load_sae(tmp_path / "b")
    with pytest.raises(ValueError, match="skip_connection=True is a transcoder's setting"):
        build_sae(SAEConfig(d_in=D_IN, skip_connection=True))
    with pytest.raises(ValueError, match="d_out=24"):
        tc.forward_for_training(torch.randn(4, D_IN), torch.randn(4, D_OUT + 1))
    with pytest.raises(ValueError, match="needs target activations"):
        tc.forward_for_training(torch.randn(4, D_IN))


def test_train_from_a_two_hook_cache_folds_the_stores_scales(tmp_path: Path) -> None:
    """`sae.train` builds the paired store from the config, takes d_out from the cache and saves a
    transcoder that works on raw activations (both factors folded)."""
    from sae.config import ConfigError, StoreConfig, TrainConfig
    from sae.store import ActivationStore
    from sae.training.run import train

    cache = paired_cache(tmp_path / "acts", n_shards=6, rows=16)
    scfg = SAEConfig(architecture="topk", d_in=16, d_sae=32, k=4, hook_name="in", hook_name_out="out")
    store_cfg = StoreConfig(batch_size=32, buffer_tokens=128, device="cpu")
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), cache_dir=str(cache), saes=[scfg], n_tokens=32 * 20, store=store_cfg,
                      progress=False, checkpoint_every_tokens=10**9)
    (path,) = train(cfg)
    tc = load_sae(path)
    assert tc.d_out == 8 and tc.cfg.hook_name_out == "out"
    store = ActivationStore.from_cache(cache, "in", store_cfg, target_hook="out")
    import json

    saved = json.loads((path / "cfg.json").read_text())["saekit"]
    assert saved["normalization_scale"] == pytest.approx(store.normalization_scale)
    assert saved["target_normalization_scale"] == pytest.approx(store.target_scale)
    with pytest.raises(ConfigError, match="d_out=5 but the activations"):
        train(TrainConfig(out_dir=str(tmp_path / "bad"), cache_dir=str(cache), store=store_cfg, progress=False,
                          saes=[SAEConfig(d_in=16, d_out=5, d_sae=32, hook_name="in", hook_name_out="out")]))
    with pytest.raises(ConfigError, match="saekit cache --hook in --hook nowhere"):
        train(TrainConfig(out_dir=str(tmp_path / "bad2"), cache_dir=str(cache), store=store_cfg, progress=False,
                          saes=[SAEConfig(d_in=16, d_sae=32, hook_name="in", hook_name_out="nowhere")]))


# --------------------------------------------------------------------------- the embedded model

IN_HOOK, OUT_HOOK = "blocks.15.mlp.hook_in", "blocks.15.hook_mlp_out"


def test_splice_replaces_the_mlp_output_computed_from_its_input(model) -> None:
    """On the embedded model: pairs from the live model (`from_model(..., target_hook=)`), a skip
    transcoder holding the least-squares linear map from the MLP's input to its output, evaluated
    against the target (FVU = the regression's residual share) and spliced in place of the MLP's output
    (CE recovered well above zero-ablation's 0); with an all-zero output the splice is zero-ablation."""
    from sae.config import DataConfig, EvalConfig, StoreConfig
    from sae.evaluation import evaluate
    from sae.store import ActivationPair, ActivationStore

    store = ActivationStore.from_model(model, DataConfig(context_size=64), IN_HOOK,
                                       StoreConfig(batch_size=1500, buffer_tokens=1664, device="cpu", normalize=False),
                                       n_tokens=1664, target_hook=OUT_HOOK)
    pair = next(iter(store))
    assert isinstance(pair, ActivationPair) and pair.input.shape == pair.target.shape == (1500, 576)
    d = pair.input.shape[1]
    tc = build_sae(SAEConfig(architecture="relu", d_in=d, d_sae=16, hook_name=IN_HOOK, hook_name_out=OUT_HOOK,
                             skip_connection=True))
    with torch.no_grad():
        tc.b_enc.fill_(-1e4)  # no latent ever fires: the output is the linear term
        ones = torch.ones(pair.input.shape[0], 1)
        sol = torch.linalg.lstsq(torch.cat([pair.input, ones], 1), pair.target).solution
        tc.W_skip.copy_(sol[:-1].T)
        tc.b_dec.copy_(sol[-1])
    tc.eval()
    cfg = EvalConfig(n_tokens=500, ce_batches=1, ce_batch_size=4, save_png=False, data=DataConfig(context_size=64))
    res = evaluate(tc, model, cfg)
    with torch.no_grad():
        fit = pair.target - pair.input @ tc.W_skip.T - tc.b_dec
    train_fvu = float(fit.pow(2).sum() / (pair.target - pair.target.mean(0)).pow(2).sum())
    down = res.downstream
    print(f"linear MLP: FVU {res.reconstruction.fvu:.3f} (fit {train_fvu:.3f}), CE clean {down.ce_loss_clean:.3f} "
          f"linear {down.ce_loss_sae:.3f} zero {down.ce_loss_zero:.3f}, recovered {down.ce_loss_recovered:.3f}")
    assert 0.05 < res.reconstruction.fvu < 1.0 and res.sae["hook_name_out"] == OUT_HOOK
    # well above zero-ablation's 0 (measured 0.86 on 3000 pairs; 4 rows of text are a noisy estimate)
    assert down.ce_loss_recovered > 0.5 and down.ce_loss_sae < down.ce_loss_zero and down.n_spliced > 0
    with torch.no_grad():
        tc.W_skip.zero_()
        tc.b_dec.zero_()
    zero = evaluate(tc, model, dataclasses.replace(cfg, n_tokens=64)).downstream
    assert zero.ce_loss_sae == pytest.approx(zero.ce_loss_zero, abs=1e-6)


def test_attached_transcoder_reads_its_input_and_replaces_its_output(model) -> None:
    """`sae.attached`: with the error term the model is unchanged; an edit of the codes moves the MLP's
    output by exactly its decoded effect; without it the MLP's output is the transcoder's."""
    from sae.attachment import attached

    torch.manual_seed(0)
    tc = build_sae(SAEConfig(architecture="topk", d_in=576, d_sae=64, k=4, hook_name=IN_HOOK, hook_name_out=OUT_HOOK,
                             skip_connection=True))
    with torch.no_grad():
        tc.W_skip.normal_(0, 0.01)
    tc.eval()
    text = "The Golden Gate Bridge is painted orange."
    clean, cache = model.run_with_cache(text, names_filter=[IN_HOOK, OUT_HOOK])
    with attached(model, tc, use_error_term=True) as m:
        logits, ours = m.run_with_cache(text)
        torch.testing.assert_close(logits, clean, rtol=1e-4, atol=1e-4)
        assert ours[f"{IN_HOOK}.hook_sae_acts_post"].shape[-1] == 64
        feature = int(ours[f"{IN_HOOK}.hook_sae_acts_post"][0, 3].argmax())

        def boost(acts: torch.Tensor, hook) -> torch.Tensor:
            acts = acts.clone()
            acts[..., feature] += 5.0
            return acts

        with m.hooks([(f"{IN_HOOK}.hook_sae_acts_post", boost)]):
            _, edited = m.run_with_cache(text)
    delta = edited[OUT_HOOK] - cache[OUT_HOOK]
    torch.testing.assert_close(delta, (5.0 * tc.W_dec[feature]).detach().expand_as(delta), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(edited[IN_HOOK], cache[IN_HOOK])  # the input hook is read, never changed
    with attached(model, tc) as m:
        _, spliced = m.run_with_cache(text)
    with torch.no_grad():
        want = tc.reconstruct(cache[IN_HOOK])
    torch.testing.assert_close(spliced[OUT_HOOK], want, rtol=1e-4, atol=1e-4)


def test_feature_db_reads_transcoder_latents_and_steering_uses_them(model, tmp_path: Path) -> None:
    """The feature DB encodes the input hook (max activations = the codes' maxima there; the logit lens
    reads the decoder rows in the MLP output's space, the residual width); steering's unit="max" reads
    the transcoder's maxima from it (tests/steering/test_transcoder_steering.py tests the edits)."""
    import steering
    from sae.config import DataConfig, FeaturesConfig, StoreConfig
    from sae.features.build import build_feature_db
    from sae.features.db import FeatureDB
    from sae.store import ActivationStore

    torch.manual_seed(0)
    tc = build_sae(SAEConfig(architecture="topk", d_in=576, d_sae=32, k=4, hook_name=IN_HOOK, hook_name_out=OUT_HOOK))
    tc.eval()
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"Paragraph {i}. The Eiffel Tower is in Paris; rivers flow to the sea." for i in range(40)))
    data = DataConfig(source=str(text), context_size=32)
    path = build_feature_db(FeaturesConfig(out_path=str(tmp_path / "f.sqlite"), n_tokens=256, batch_size=4, data=data,
                                           cooccurrence=False), model=model, sae=tc, progress=False)
    db = FeatureDB(path)
    store = ActivationStore.from_model(model, data, IN_HOOK, StoreConfig(batch_size=256, device="cpu", normalize=False,
                                       shuffle=False), n_tokens=256)
    with torch.no_grad():
        codes = tc.encode(next(iter(store)))
    top = int(codes.max(0).values.argmax())
    assert db.max_activation(top) == pytest.approx(float(codes[:, top].max()), rel=1e-3)
    assert db.feature(top).top_logits  # the lens ran: decoder rows have the residual's width
    from steering.steer_hooks import prepare

    iv = steering.FeatureSteering(tc, {top: steering.Clamp(5.0, unit="max")}, feature_db=db)
    prepare(model, [iv])
    assert iv.hook_out == OUT_HOOK and float(iv._max_acts[0]) == pytest.approx(db.max_activation(top))
