"""ActivationStore: each token once per epoch, shard mixing, determinism, resume, held-out, scale."""

from __future__ import annotations

import json
import math
import threading
import weakref
from pathlib import Path

import pytest
import torch

from sae.atomic_io import atomic_write_json
from sae.config import CacheConfig, DataConfig, StoreConfig
from sae.shards import FORMAT, MANIFEST, write_shard
from sae.store import ActivationStore, StoreError

D = 16
SIZES = [50, 37, 0, 61, 44]  # kept tokens per shard (one shard kept nothing)
N = sum(SIZES)


def synthetic_cache(
    d: Path, sizes: list[int] = SIZES, hooks: tuple[str, ...] = ("h",), tagged: bool = True
) -> Path:
    """A cache whose activations say where they come from: column 0 = global id, 1 = shard."""
    d.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    entries, start = [], 0
    for i, n in enumerate(sizes):
        tensors = {"tokens": torch.zeros(1, 4, dtype=torch.int32), "rows": torch.tensor([i])}
        for h in hooks:
            acts = torch.randn(n, D, generator=g) * 3
            if tagged:
                acts[:, 0] = torch.arange(start, start + n, dtype=torch.float32)
                acts[:, 1] = i
            tensors[f"acts.{h}"] = acts
            tensors[f"keep.{h}"] = torch.ones(1, 4, dtype=torch.bool)
        info = {"rows": 1, "row_start": i, "n_kept": dict.fromkeys(hooks, n), "rank": 0}
        entries.append(write_shard(d, i, tensors, info))
        start += n
    atomic_write_json(
        d / MANIFEST,
        {
            "format": FORMAT, "version": 1, "complete": True, "hooks": list(hooks),
            "d_in": dict.fromkeys(hooks, D), "fingerprint": "synthetic", "shards": entries,
        },
    )
    return d


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return synthetic_cache(tmp_path_factory.mktemp("syn") / "acts")


def cfg(**kw) -> StoreConfig:
    base = dict(batch_size=7, buffer_tokens=64, device="cpu", normalize=False, seed=0)
    base.update(kw)
    return StoreConfig(**base)


def ids(store: ActivationStore, n_batches: int) -> list[int]:
    out: list[int] = []
    it = iter(store)
    for _ in range(n_batches):
        out += next(it)[:, 0].long().tolist()
    return out


def test_every_token_once_per_epoch(cache: Path) -> None:
    store = ActivationStore.from_cache(cache, cfg=cfg())
    assert store.n_tokens == N and store.d_in == D and store.hook == "h"
    stream = ids(store, math.ceil(3 * N / 7))
    epochs = [stream[e * N : (e + 1) * N] for e in range(3)]
    for ep in epochs:
        assert sorted(ep) == list(range(N))
    assert epochs[0] != epochs[1] != epochs[2]  # a new order every epoch
    assert store.epoch == 3 or store.epoch == 2


def test_batches_mix_shards_and_positions(cache: Path) -> None:
    store = ActivationStore.from_cache(cache, cfg=cfg(batch_size=32, buffer_tokens=128))
    batch = next(iter(store))
    assert batch.shape == (32, D)
    assert len(set(batch[:, 1].long().tolist())) >= 3  # one batch spans several shards
    first = ids(store, 6)
    assert first != sorted(first)


def test_no_shuffle_reads_in_order(cache: Path) -> None:
    store = ActivationStore.from_cache(cache, cfg=cfg(shuffle=False))
    assert ids(store, math.ceil(N / 7))[:N] == list(range(N))


def test_deterministic_in_the_seed(cache: Path) -> None:
    a = ids(ActivationStore.from_cache(cache, cfg=cfg(seed=3)), 20)
    b = ids(ActivationStore.from_cache(cache, cfg=cfg(seed=3)), 20)
    c = ids(ActivationStore.from_cache(cache, cfg=cfg(seed=4)), 20)
    assert a == b and a != c


def test_state_dict_resumes_exactly(cache: Path) -> None:
    store = ActivationStore.from_cache(cache, cfg=cfg())
    it = iter(store)
    for _ in range(40):  # past the first epoch
        next(it)
    state = json.loads(json.dumps(store.state_dict()))  # checkpoints may hold it as JSON
    expected = [next(it) for _ in range(15)]
    fresh = ActivationStore.from_cache(cache, cfg=cfg(seed=99, buffer_tokens=32))
    fresh.load_state_dict(state)  # adopts the saved seed and buffer layout
    got = [b for b, _ in zip(fresh, range(15), strict=False)]
    assert all(torch.equal(x, y) for x, y in zip(expected, got, strict=True))
    assert fresh.epoch == store.epoch
    other = ActivationStore.from_cache(cache, cfg=cfg())
    other.hook = "other"
    with pytest.raises(StoreError, match="store state is for"):
        other.load_state_dict(state)


def test_state_dict_format_is_stable(cache: Path) -> None:
    """Trainer checkpoints hold this dict: its keys stay, and a saved state resumes in the same
    order (the ids below come from the store before its sources moved to one interface)."""
    store = ActivationStore.from_cache(cache, cfg=cfg())
    next(iter(store))
    state = store.state_dict()
    assert list(state) == [
        "version", "source", "hook", "fingerprint", "position", "seed", "buffer_tokens", "shuffle",
        "normalization_scale", "n_tokens",
    ]
    assert (state["source"], state["fingerprint"], state["position"], state["n_tokens"]) == (
        "cache", "synthetic", [0, 0, 7], N
    )
    saved = {**state, "position": [1, 2, 3], "seed": 4, "buffer_tokens": 32, "normalization_scale": 1.0}
    store.load_state_dict(saved)
    assert ids(store, 2) == [188, 56, 120, 141, 158, 119, 5, 108, 145, 142, 159, 4, 61, 106]


def test_batches_gives_exactly_enough(cache: Path) -> None:
    store = ActivationStore.from_cache(cache, cfg=cfg())
    got = list(store.batches(50))
    assert len(got) == 8 and all(b.shape == (7, D) for b in got)


def test_held_out_is_the_tail_and_never_trained_on(cache: Path) -> None:
    store = ActivationStore.from_cache(cache, cfg=cfg(held_out_tokens=20))
    assert store.n_tokens == N - 20
    assert sorted(ids(store, math.ceil((N - 20) / 7))[: N - 20]) == list(range(N - 20))
    held = store.held_out(20)
    assert held[:, 0].long().tolist() == list(range(N - 20, N))
    assert store.held_out(5).shape == (5, D)
    with pytest.raises(StoreError, match="only 20 are reserved"):
        store.held_out(21)
    with pytest.raises(StoreError, match="held_out_tokens"):
        ActivationStore.from_cache(cache, cfg=cfg()).held_out(10)


def test_reading_ahead_holds_two_buffers_at_most(tmp_path: Path) -> None:
    """The next buffer is read only once the consumer (holding its batch until it takes the next,
    as a training loop does) has let go of the buffer before the current one."""
    cache = synthetic_cache(tmp_path / "acts", sizes=[300, 300, 300], tagged=False)
    store = ActivationStore.from_cache(cache, cfg=cfg(batch_size=16, buffer_tokens=160))
    loaded: list[weakref.ref] = []
    alive_when_reading: list[int] = []
    lock = threading.Lock()
    read = store._load

    def counting_read(epoch: int, b: int) -> torch.Tensor | None:
        with lock:
            alive_when_reading.append(sum(ref() is not None for ref in loaded))
        buf = read(epoch, b)
        if buf is not None:
            with lock:
                loaded.append(weakref.ref(buf))
        return buf

    store._load = counting_read  # type: ignore[method-assign]
    n = 0
    for batch in store.batches(3 * 900):
        n += batch.shape[0]
    assert n >= 2700 and len(loaded) >= 15
    assert max(alive_when_reading) <= 1, alive_when_reading


def test_normalisation_scale(tmp_path: Path) -> None:
    cache = synthetic_cache(tmp_path / "plain", sizes=[500, 300, 700], tagged=False)
    N = 1500
    store = ActivationStore.from_cache(cache, cfg=cfg(normalize=True, batch_size=N))
    raw = ActivationStore.from_cache(cache, cfg=cfg(normalize=False, batch_size=N))
    assert store.normalization_scale == pytest.approx(raw.normalization_scale)
    batch = next(iter(store))
    assert batch.norm(dim=-1).mean().item() == pytest.approx(math.sqrt(D), rel=0.03)
    assert torch.allclose(batch, next(iter(raw)) * store.normalization_scale)


def test_dtype_and_autograd(cache: Path) -> None:
    batch = next(iter(ActivationStore.from_cache(cache, cfg=cfg(dtype="bfloat16"))))
    assert batch.dtype == torch.bfloat16 and batch.device.type == "cpu"
    w = torch.randn(D, 3, requires_grad=True)
    batch = next(iter(ActivationStore.from_cache(cache, cfg=cfg())))
    (batch @ w).square().sum().backward()  # plain tensors, usable in training
    assert w.grad is not None


def test_hook_choice(tmp_path: Path) -> None:
    d = synthetic_cache(tmp_path / "two", sizes=[10, 12], hooks=("a", "b"))
    with pytest.raises(StoreError, match=r"several hooks \['a', 'b'\]"):
        ActivationStore.from_cache(d, cfg=cfg())
    with pytest.raises(StoreError, match="no hook 'c'"):
        ActivationStore.from_cache(d, hook="c", cfg=cfg())
    assert ActivationStore.from_cache(d, hook="b", cfg=cfg()).n_tokens == 22


# --------------------------------------------------------------------------- from the model


def test_from_model_matches_the_cache(model, tmp_path: Path) -> None:
    from sae.activation_cache import build_cache

    corpus = Path(__file__).resolve().parents[1] / "data" / "tiny_corpus.jsonl"
    data = DataConfig(source=str(corpus), context_size=32)
    hook = "blocks.2.hook_resid_post"
    out = build_cache(
        CacheConfig(out_dir=str(tmp_path / "acts"), hooks=[hook], n_tokens=8 * 32, data=data,
                    batch_size=8),
        model=model, progress=False,
    )
    cached = ActivationStore.from_cache(out, cfg=cfg(batch_size=10_000, buffer_tokens=10_000))
    store_cfg = cfg(batch_size=16, buffer_tokens=4 * 32, model_batch_size=4)
    live = ActivationStore.from_model(model, data, hook, store_cfg, n_tokens=8 * 32)
    assert live.d_in == 576 and live.n_tokens is None  # known after one epoch
    n = cached.n_tokens
    it = iter(live)
    got = torch.cat([next(it) for _ in range(math.ceil(n / 16))])[:n]
    assert live.n_tokens == n
    ref = next(iter(cached))[:n]
    probe = torch.randn(576, generator=torch.Generator().manual_seed(0))
    a, b = (got @ probe).sort().values, (ref @ probe).sort().values
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-2)  # the same set of activations
    # exact resume on the fly
    state = live.state_dict()
    expected = next(it)
    again = ActivationStore.from_model(model, data, hook, store_cfg, n_tokens=8 * 32)
    again.load_state_dict(state)
    assert torch.equal(next(iter(again)), expected)
