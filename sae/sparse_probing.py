"""Sparse probing: do a few SAE latents carry what a probe on the whole residual reads?

    metrics = run_sparse_probing(model, sae, EvalConfig(probing=True))   # SparseProbingMetrics

The builtin corpus labels each document with a topic group (`category`) and a `format`
(`sae/corpus/recipe.json`). Each task is one label against the rest (`TASKS`). For every
document: the activations at the SAE's hook over its first `probing_max_tokens` tokens, the
positions `sae.token_filter` drops removed, mean-pooled, for the raw residual and for the SAE's
codes. Documents are split into train and test once, disjointly, for all tasks. Per task, on the
train split, the k latents with the largest |mean(codes | label) - mean(codes | rest)| are chosen
(k = 1, 2, 5; SAEBench's selection) and a logistic-regression probe is fitted on them, on every
latent, and on the residual's d_in dimensions; each reports held-out accuracy.
"""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sae.config import EvalConfig, to_dict
from sae.eval_metrics import SparseProbingMetrics
from sae.linear_probe import fit_probe

if TYPE_CHECKING:
    from sae.architectures.base import SparseAutoencoder

# (field, label): label vs the rest. Topic groups and formats that are each a few percent to a
# third of the corpus, so a balanced sample exists for every one.
TASKS: tuple[tuple[str, str], ...] = (
    ("category", "code"),
    ("category", "science"),
    ("category", "golden_gate"),
    ("format", "chat"),
    ("format", "story"),
    ("format", "qa"),
)
KS: tuple[int, ...] = (1, 2, 5)
TEST_FRACTION = 0.3
_BATCH_DOCS = 16  # documents per forward


@dataclass
class ProbingData:
    """Mean-pooled activations of the documents, their labels and the train/test split."""

    resid_ND: Tensor  # [N, d_in] fp32
    codes_NF: Tensor  # [N, d_sae] fp32
    labels: list[dict[str, str]]  # per document: {field: label}
    is_train_N: Tensor  # bool [N]
    task_docs: dict[str, Tensor]  # task name -> indices of its (balanced) documents


def task_name(field: str, label: str) -> str:
    return f"{field}={label}"


def labelled_documents(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Records of the builtin corpus (text or chat messages, topic, category, format), in file order."""
    import zstandard

    from sae.data import BUILTIN_CORPUS

    p = Path(path) if path is not None else BUILTIN_CORPUS
    if not p.exists():
        raise FileNotFoundError(f"the builtin corpus is missing ({p}); reinstall saekit (it ships in sae/corpus/)")
    with open(p, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
        return [json.loads(line) for line in io.TextIOWrapper(reader, encoding="utf-8") if line.strip()]


def document_text(record: dict[str, Any], tokenizer: Any) -> str:
    """A record as the cache reads it: its text, or its chat rendered with the chat template."""
    from sae.data import render_chat

    if "text" in record:
        return str(record["text"])
    if "messages" in record:
        return render_chat(record["messages"], tokenizer)
    raise ValueError(f"a probing document has neither `text` nor `messages` (fields: {sorted(record)}); "
                     "give records with one of them")


def choose_documents(records: Sequence[dict[str, Any]], tasks: Sequence[tuple[str, str]], per_class: int,
                     seed: int) -> tuple[list[int], dict[str, list[int]]]:
    """(record indices to run, task -> its documents as positions in that list), balanced per task:
    up to `per_class` documents with the label and as many without it."""
    rng = random.Random(seed)
    chosen: dict[int, int] = {}  # record index -> position
    per_task: dict[str, list[int]] = {}
    for field, label in tasks:
        pos = [i for i, r in enumerate(records) if r.get(field) == label]
        neg = [i for i, r in enumerate(records) if r.get(field) not in (label, None)]
        if len(pos) < 4 or len(neg) < 4:
            raise ValueError(f"probing task {field}={label}: only {len(pos)} documents have it and {len(neg)} "
                             f"do not; the corpus needs at least 4 of each (check the task list against "
                             f"sae/corpus/stats.json)")
        n = min(per_class, len(pos), len(neg))
        picked = rng.sample(pos, n) + rng.sample(neg, n)
        per_task[task_name(field, label)] = [chosen.setdefault(i, len(chosen)) for i in picked]
    return list(chosen), per_task


def split_documents(n_docs: int, seed: int, test_fraction: float = TEST_FRACTION) -> Tensor:
    """bool [n_docs]: True for train. One split for every task, so train and test never share a document."""
    gen = torch.Generator().manual_seed(seed)
    is_train = torch.ones(n_docs, dtype=torch.bool)
    is_train[torch.randperm(n_docs, generator=gen)[: round(n_docs * test_fraction)]] = False
    return is_train


@torch.no_grad()
def pooled_activations(model: Any, sae: SparseAutoencoder, texts: Sequence[str], max_tokens: int,
                       token_filter: dict[str, Any] | None = None) -> tuple[Tensor, Tensor]:
    """(residual [N, d_in], codes [N, d_sae]): each document's mean over its kept positions.

    A document is BOS + its first `max_tokens` tokens; a batch is right-padded (causal attention:
    padding never changes the positions before it) and the padding is no position of the filter's."""
    from sae.extract import ActivationExtractor

    hook = sae.cfg.hook_name
    extractor = ActivationExtractor(model, [hook], **(token_filter or {}))
    tok = model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else 0
    ids = [[bos, *tok(t, add_special_tokens=False).input_ids[:max_tokens]] for t in texts]
    resid, codes = torch.zeros(len(ids), sae.d_in), torch.zeros(len(ids), sae.d_sae)
    for b0 in range(0, len(ids), _BATCH_DOCS):
        batch = ids[b0 : b0 + _BATCH_DOCS]
        T = max(len(r) for r in batch)
        tokens_BT = torch.full((len(batch), T), bos, dtype=torch.long)
        valid_BT = torch.zeros(len(batch), T, dtype=torch.bool)
        for i, r in enumerate(batch):
            tokens_BT[i, : len(r)] = torch.tensor(r)
            valid_BT[i, : len(r)] = True
        acts_BTD = extractor.raw(tokens_BT)[hook]
        keep_BT = extractor.filters[hook](tokens_BT.to(acts_BTD.device), acts_BTD, valid_BT.to(acts_BTD.device)).keep
        doc_K = torch.arange(len(batch), device=acts_BTD.device)[:, None].expand_as(keep_BT)[keep_BT]
        x_KD = acts_BTD[keep_BT].float()
        c_KF = sae.encode(x_KD.to(sae.device, sae.dtype)).float().to(x_KD.device)
        count_B = torch.bincount(doc_K, minlength=len(batch)).clamp_min(1)[:, None].float()
        resid[b0 : b0 + len(batch)] = (torch.zeros(len(batch), sae.d_in, device=x_KD.device)
                                       .index_add_(0, doc_K, x_KD) / count_B).cpu()
        codes[b0 : b0 + len(batch)] = (torch.zeros(len(batch), sae.d_sae, device=x_KD.device)
                                       .index_add_(0, doc_K, c_KF) / count_B).cpu()
    return resid, codes


def top_latents(codes_NF: Tensor, y_N: Tensor, k: int) -> list[int]:
    """The k latents whose mean differs most between the classes (|mean | y=1 - mean | y=0|)."""
    diff_F = codes_NF[y_N == 1].mean(0) - codes_NF[y_N == 0].mean(0)
    return diff_F.abs().topk(min(k, diff_F.numel())).indices.tolist()


def probe_task(resid_ND: Tensor, codes_NF: Tensor, y_N: Tensor, is_train_N: Tensor,
               ks: Sequence[int] = KS) -> dict[str, Any]:
    """One binary task: held-out accuracies of the residual, k-latent and all-latent probes."""
    tr, te = is_train_N, ~is_train_N
    if len(set(y_N[tr].tolist())) < 2:
        raise ValueError("a probing task's train split holds one class only; give more documents "
                         "(EvalConfig.probing_docs_per_class)")

    def accuracy(x: Tensor) -> float:
        return fit_probe(x[tr], y_N[tr], 2).accuracy(x[te], y_N[te])

    latents = [top_latents(codes_NF[tr], y_N[tr], k) for k in ks]
    return {
        "n_train": int(tr.sum()),
        "n_test": int(te.sum()),
        "residual_accuracy": accuracy(resid_ND),
        "sae_accuracy": [accuracy(codes_NF[:, chosen]) for chosen in latents],
        "sae_all_accuracy": accuracy(codes_NF),
        "latents": latents,
    }


def probing_data(model: Any, sae: SparseAutoencoder, cfg: EvalConfig,
                 records: Sequence[dict[str, Any]] | None = None,
                 tasks: Sequence[tuple[str, str]] = TASKS) -> ProbingData:
    """Choose, run and pool the documents of every task (the slow part: one forward per batch)."""
    if cfg.probing_docs_per_class < 4 or cfg.probing_max_tokens < 1:
        raise ValueError(f"probing needs probing_docs_per_class >= 4 (got {cfg.probing_docs_per_class}) and "
                         f"probing_max_tokens >= 1 (got {cfg.probing_max_tokens}); raise them")
    records = labelled_documents() if records is None else records
    order, per_task = choose_documents(records, tasks, cfg.probing_docs_per_class, cfg.quality_seed)
    texts = [document_text(records[i], model.tokenizer) for i in order]
    resid, codes = pooled_activations(model, sae, texts, cfg.probing_max_tokens, to_dict(cfg.token_filter))
    return ProbingData(
        resid_ND=resid,
        codes_NF=codes,
        labels=[{f: str(records[i].get(f)) for f, _ in tasks} for i in order],
        is_train_N=split_documents(len(order), cfg.quality_seed),
        task_docs={name: torch.tensor(docs) for name, docs in per_task.items()},
    )


def probe_all(data: ProbingData, tasks: Sequence[tuple[str, str]] = TASKS, ks: Sequence[int] = KS,
              max_tokens: int = 0) -> SparseProbingMetrics:
    """Every task's probes on pooled data, and their means."""
    rows = []
    for field, label in tasks:
        name = task_name(field, label)
        docs = data.task_docs[name]
        y = torch.tensor([int(data.labels[i][field] == label) for i in docs.tolist()])
        rows.append({"name": name, **probe_task(data.resid_ND[docs], data.codes_NF[docs], y,
                                                 data.is_train_N[docs], ks)})
    n = len(rows)
    return SparseProbingMetrics(
        n_documents=data.resid_ND.shape[0],
        max_tokens=max_tokens,
        ks=list(ks),
        tasks=rows,
        mean_residual_accuracy=sum(r["residual_accuracy"] for r in rows) / n,
        mean_sae_accuracy=[sum(r["sae_accuracy"][j] for r in rows) / n for j in range(len(ks))],
        mean_sae_all_accuracy=sum(r["sae_all_accuracy"] for r in rows) / n,
    )


def run_sparse_probing(model: Any, sae: SparseAutoencoder, cfg: EvalConfig | None = None, *,
                   records: Sequence[dict[str, Any]] | None = None,
                   tasks: Sequence[tuple[str, str]] = TASKS, ks: Sequence[int] = KS) -> SparseProbingMetrics:
    """The whole pass (module doc). `records` replaces the builtin corpus (dicts with `text` and each task's field)."""
    start = time.perf_counter()
    cfg = cfg or EvalConfig()
    data = probing_data(model, sae, cfg, records, tasks)
    metrics = probe_all(data, tasks, ks, cfg.probing_max_tokens)
    metrics.seconds = time.perf_counter() - start
    return metrics
