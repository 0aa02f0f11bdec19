"""sae.sparse_probing: planted answers (a latent equal to the label, random codes), the document
split, pooling against a brute-force pass, and a small run on the real model."""

from __future__ import annotations

import pytest
import torch

from sae.config import EvalConfig
from sae.features.demo_db import random_sae
from sae.linear_probe import fit_probe
from sae.sparse_probing import (
    TASKS,
    choose_documents,
    labelled_documents,
    pooled_activations,
    probe_task,
    run_sparse_probing,
    split_documents,
)


def test_a_latent_equal_to_the_label_is_found_and_probes_perfectly() -> None:
    gen = torch.Generator().manual_seed(0)
    n, F, D = 400, 64, 32
    y = torch.randint(0, 2, (n,), generator=gen)
    codes = torch.rand(n, F, generator=gen)  # uninformative latents
    codes[:, 7] = y.float() * 3.0  # the planted one
    resid = torch.randn(n, D, generator=gen)  # a residual that knows nothing
    res = probe_task(resid, codes, y, split_documents(n, seed=0))
    assert res["latents"][0] == [7] and 7 in res["latents"][1] and 7 in res["latents"][2]
    assert res["sae_accuracy"] == [1.0, 1.0, 1.0]
    assert 0.38 < res["residual_accuracy"] < 0.62  # chance, on ~120 held-out documents
    assert res["n_train"] + res["n_test"] == n and res["n_test"] == 120


def test_random_codes_probe_at_chance() -> None:
    gen = torch.Generator().manual_seed(1)
    n = 600
    y = torch.randint(0, 2, (n,), generator=gen)
    res = probe_task(torch.randn(n, 16, generator=gen), torch.rand(n, 128, generator=gen), y,
                     split_documents(n, seed=1))
    assert all(0.38 < a < 0.62 for a in res["sae_accuracy"]), res["sae_accuracy"]


def test_probe_learns_a_linear_rule_and_reads_raw_inputs() -> None:
    # dims on wildly different scales: the standardisation is folded back, so raw inputs classify
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(500, 3, generator=gen) * torch.tensor([1000.0, 0.001, 1.0])
    y = (x[:, 1] * 1000 + x[:, 2] > 0).long()
    probe = fit_probe(x[:400], y[:400], 2)
    assert probe.accuracy(x[400:], y[400:]) > 0.95
    with pytest.raises(ValueError, match="same N"):
        fit_probe(x, y[:3])


def test_documents_are_balanced_and_train_test_disjoint() -> None:
    records = labelled_documents()
    assert len(records) == 5039
    order, per_task = choose_documents(records, TASKS, per_class=20, seed=0)
    assert len(set(order)) == len(order)
    for field, label in TASKS:
        docs = per_task[f"{field}={label}"]
        y = [records[order[i]][field] == label for i in docs]
        assert sum(y) == 20 and len(y) == 40  # balanced, every document distinct
    is_train = split_documents(len(order), seed=0)
    train = {order[i] for i in range(len(order)) if is_train[i]}
    test = {order[i] for i in range(len(order)) if not is_train[i]}
    assert not train & test and len(test) == round(0.3 * len(order))
    with pytest.raises(ValueError, match="at least 4"):
        choose_documents(records, [("format", "limerick")], per_class=5, seed=0)


def test_pooling_is_the_mean_over_kept_tokens(model) -> None:
    from sae.extract import ActivationExtractor

    s = random_sae(d_sae=64, layer=3, k=4)
    texts = ["The Eiffel Tower is in Paris.", "def add(a, b):\n    return a + b\n# a longer one, padded less"]
    resid, codes = pooled_activations(model, s, texts, max_tokens=16)
    ex = ActivationExtractor(model, [s.cfg.hook_name])
    for i, t in enumerate(texts):  # one document per forward: no padding at all
        ids = [model.tokenizer.bos_token_id, *model.tokenizer(t, add_special_tokens=False).input_ids[:16]]
        kept = ex(torch.tensor([ids])).acts[s.cfg.hook_name].float()
        assert resid[i] == pytest.approx(kept.mean(0), abs=2e-4)
        with torch.no_grad():
            want = s.encode(kept).mean(0)
        assert codes[i] == pytest.approx(want, abs=2e-4)


def test_small_real_run(model) -> None:
    s = random_sae(d_sae=256, layer=3, k=8)
    tasks = (("category", "code"), ("format", "chat"))
    cfg = EvalConfig(probing_docs_per_class=16, probing_max_tokens=24)
    m = run_sparse_probing(model, s, cfg, tasks=tasks)
    assert m.ks == [1, 2, 5] and len(m.tasks) == 2 and m.n_documents <= 64
    for row in m.tasks:
        accs = [row["residual_accuracy"], row["sae_all_accuracy"], *row["sae_accuracy"]]
        assert all(0.0 <= a <= 1.0 for a in accs)
        assert [len(x) for x in row["latents"]] == [1, 2, 5]
    assert m.mean_residual_accuracy > 0.7  # code and chat are easy to tell from the rest
    with pytest.raises(ValueError, match="probing_docs_per_class"):
        run_sparse_probing(model, s, EvalConfig(probing_docs_per_class=2))
