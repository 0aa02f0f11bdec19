"""The numbers an SAE evaluation reports, what each one means, and how each is accumulated.

`sae.eval_result.EvalResult` gathers the groups; its `to_dict()` / `save()` are the eval JSON.
Every metric group is a dataclass whose fields carry a `description` (and a `unit` where it
helps) in their metadata, so the JSON written by `sae.evaluate` documents itself: its `schema`
block is generated from these fields (SAEBench-style). `schema()` returns that block.

Accumulation is streaming (batch after batch, constant memory) and always in fp32 with
float64 sums, whatever the SAE's dtype: a bf16 SAE is judged by what it does to fp32 numbers.

Definitions (x: an activation, x_hat: its reconstruction, both fp32; sums over held-out tokens):

    FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2      explained variance = 1 - FVU
    CE recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean)
    KL recovered = (KL_zero - KL_sae) / KL_zero,   KL_* = KL(p_clean || p_*) per token
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

# 2: optional `sparse_probing` and `absorption` groups, `sparsity.source` (v1 files still load:
#    `sae.load_eval` fills the missing groups with null).
SCHEMA_VERSION = 2


def _m(description: str, default: Any = None, unit: str | None = None) -> Any:
    meta = {"description": description}
    if unit:
        meta["unit"] = unit
    return field(default=default, metadata=meta)


@dataclass
class ReconstructionMetrics:
    """How faithfully the SAE reconstructs held-out activations."""

    n_tokens: int = _m("Held-out activation vectors evaluated.", 0, "tokens")
    source: str = _m(
        "Where the activations came from: acts (given) | cache-held-out (the cache's tail, reserved by training) | cache-tail (the cache's tail; training may have seen it) | model (run on the fly).",
        "",
    )
    fvu: float = _m(
        "Fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (fp32). Lower is better.",
        math.nan,
    )
    explained_variance: float = _m("1 - FVU. Higher is better; 1 is perfect.", math.nan)
    mse: float = _m(
        "Mean squared error per element: mean over tokens and dimensions of (x - x_hat)^2.",
        math.nan,
    )
    mse_per_token: float = _m(
        "Squared error summed over d_in, averaged over tokens (the training loss's scale).",
        math.nan,
    )
    cosine_similarity: float = _m("Mean over tokens of cos(x, x_hat). 1 is perfect.", math.nan)
    l2_ratio: float = _m(
        "Mean over tokens of ||x_hat|| / ||x||; below 1 means shrinkage (typical of L1 SAEs).",
        math.nan,
    )
    mean_input_norm: float = _m(
        "Mean ||x|| of the evaluated activations (raw, unnormalised).", math.nan
    )


@dataclass
class SparsityMetrics:
    """How sparse the codes are, and how the latents share the work."""

    n_tokens: int = _m("Tokens the firing statistics were counted over.", 0, "tokens")
    source: str = _m(
        "Where those tokens came from (as reconstruction.source; with EvalConfig.density_tokens set, its own pass).",
        "",
    )
    d_sae: int = _m("Number of latents.", 0)
    l0: float = _m("Mean number of latents active (non-zero) per token.", math.nan, "latents")
    l1: float = _m("Mean sum of |feature activation| per token.", math.nan)
    dead_fraction: float = _m(
        "Fraction of latents that never fired over the evaluated tokens.", math.nan
    )
    n_dead: int = _m("Latents that never fired over the evaluated tokens.", 0)
    dense_threshold: float = _m("Firing frequency above which a latent counts as dense.", 0.1)
    dense_fraction: float = _m(
        "Fraction of latents firing on more than dense_threshold of tokens.", math.nan
    )
    n_dense: int = _m("Latents firing on more than dense_threshold of tokens.", 0)
    mean_log10_density: float = _m(
        "Mean of log10(firing frequency) over latents that fired at least once.", math.nan
    )
    density_hist_edges: list[float] = _m(
        "Bin edges (log10 firing frequency) of the feature-density histogram; dead latents are counted in n_dead, not here.",
        None,
    )
    density_hist_counts: list[int] = _m("Latents per histogram bin.", None)


@dataclass
class DownstreamMetrics:
    """What splicing the SAE into the model does to its next-token predictions."""

    n_tokens: int = _m("Next-token predictions scored (rows x (context_size - 1)).", 0, "tokens")
    n_rows: int = _m("Token rows run through the model.", 0)
    n_spliced: int = _m(
        "Positions whose activation was replaced (by the reconstruction, or by zeros for the ablation).",
        0,
    )
    n_kept_special: int = _m(
        "Positions kept at their original activation because the token is special (BOS, separators).",
        0,
    )
    n_kept_outlier: int = _m(
        "Positions kept at their original activation because their norm exceeded max_norm_ratio x their row's median.",
        0,
    )
    ce_loss_clean: float = _m(
        "Mean next-token cross-entropy of the unmodified model.", math.nan, "nats"
    )
    ce_loss_sae: float = _m(
        "Mean next-token cross-entropy with the SAE reconstruction spliced in.", math.nan, "nats"
    )
    ce_loss_zero: float = _m(
        "Mean next-token cross-entropy with the activation zero-ablated at the same positions.",
        math.nan,
        "nats",
    )
    ce_loss_increase: float = _m("ce_loss_sae - ce_loss_clean. Lower is better.", math.nan, "nats")
    ce_loss_recovered: float | None = _m(
        "(CE_zero - CE_sae) / (CE_zero - CE_clean): 1 = as good as the clean model, 0 = as bad as zero-ablation. Null when CE_zero == CE_clean.",
        None,
    )
    kl_div_sae: float = _m(
        "Mean per-token KL(p_clean || p_sae) of the next-token distributions.", math.nan, "nats"
    )
    kl_div_zero: float = _m("Mean per-token KL(p_clean || p_zero_ablated).", math.nan, "nats")
    kl_div_recovered: float | None = _m(
        "(KL_zero - KL_sae) / KL_zero: 1 = no change to the model's predictions. Null when KL_zero == 0.",
        None,
    )
    splice_policy: str = _m("Which positions were spliced (see sae.splice's module doc).", "")


@dataclass
class SparseProbingMetrics:
    """Sparse probing (`sae.sparse_probing`): can a few latents classify a document's topic or format?"""

    n_documents: int = _m("Distinct builtin-corpus documents probed (every task's train and test together).", 0)
    max_tokens: int = _m("Tokens of each document mean-pooled (after BOS; the token filter applies).", 0, "tokens")
    ks: list[int] = _m("Latent counts k of the sparse probes.", None)
    tasks: list[dict[str, Any]] = _m(
        "Per binary task (label vs rest): name, n_train, n_test (documents, disjoint), residual_accuracy "
        "(probe on all d_in mean-pooled residual dims), sae_accuracy (one per k: probe on the k latents with the "
        "largest |mean difference| between classes on the train split), sae_all_accuracy (probe on every latent), "
        "latents (the chosen latents, one list per k).",
        None,
    )
    mean_residual_accuracy: float = _m("Held-out accuracy of the residual probe, mean over tasks.", math.nan)
    mean_sae_accuracy: list[float] = _m("Held-out accuracy of the k-latent probe, mean over tasks, one per k.", None)
    mean_sae_all_accuracy: float = _m("Held-out accuracy of the all-latent probe, mean over tasks.", math.nan)
    seconds: float = _m("Wall time of the probing pass.", 0.0, "s")


@dataclass
class AbsorptionMetrics:
    """First-letter feature absorption (`sae.absorption`; Chanin et al. 2024, SAEBench's definition)."""

    prompt_template: str = _m("Prompt each word is read in ({word}: the word; read at its position).", "")
    n_words: int = _m("Single-token words used (leading space, ASCII letters).", 0)
    n_train_words: int = _m("Words the letter probe and the main-latent choice saw.", 0)
    n_test_words: int = _m("Held-out words absorption is measured on.", 0)
    probe_test_accuracy: float = _m("Held-out accuracy of the 26-way first-letter probe on the residual.", math.nan)
    n_letters: int = _m("Letters with at least one held-out word the probe gets right.", 0)
    mean_absorption_rate: float = _m(
        "Full absorption rate, mean over letters: of the held-out words the probe classifies right, the "
        "fraction where no main latent fires and the latent with the largest probe projection (activation x "
        "decoder row along the probe) has cosine >= 0.025 with the probe and carries >= 0.4 of the probe "
        "projection of the residual less b_dec. Lower is better.",
        math.nan,
    )
    ci_low: float = _m("2.5th percentile of mean_absorption_rate over bootstrap resamples of words.", math.nan)
    ci_high: float = _m("97.5th percentile of mean_absorption_rate over bootstrap resamples of words.", math.nan)
    mean_absorption_fraction: float = _m(
        "SAEBench's partial-absorption score, mean over letters: the share of the probe projection carried "
        "by up to 3 probe-aligned (cos >= 0.1) non-main latents instead of the main latents.",
        math.nan,
    )
    mean_main_latents: float = _m(
        "Main latents per letter (feature splitting: more than one means the letter is split).", math.nan
    )
    per_letter: list[dict[str, Any]] = _m(
        "Per letter: letter, n_true_positives, n_absorbed, absorption_rate, absorption_fraction, main_latents.",
        None,
    )
    seconds: float = _m("Wall time of the absorption pass.", 0.0, "s")


GROUPS: dict[str, type] = {
    "reconstruction": ReconstructionMetrics,
    "sparsity": SparsityMetrics,
    "downstream": DownstreamMetrics,
    "sparse_probing": SparseProbingMetrics,
    "absorption": AbsorptionMetrics,
}


def schema() -> dict[str, dict[str, Any]]:
    """{group: {"description": ..., "fields": {name: {"description", "unit"?}}}} for the JSON."""
    out: dict[str, dict[str, Any]] = {}
    for name, cls in GROUPS.items():
        fields = {f.name: dict(f.metadata) for f in dataclasses.fields(cls)}
        out[name] = {"description": (cls.__doc__ or "").strip(), "fields": fields}
    return out


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN/inf: report them as null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


# --------------------------------------------------------------------------- accumulation


class ReconstructionAccumulator:
    """Streams batches of (x, codes, x_hat); `results()` gives both metric groups."""

    def __init__(self, d_in: int, d_sae: int, device: torch.device | str = "cpu") -> None:
        self.d_in = d_in
        self.d_sae = d_sae
        self.n = 0
        self.sum_x = torch.zeros(d_in, dtype=torch.float64, device=device)
        self.sum_x2 = torch.zeros(d_in, dtype=torch.float64, device=device)
        self.fire_counts = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.sse = 0.0
        self.cos_sum = 0.0
        self.ratio_sum = 0.0
        self.norm_sum = 0.0
        self.l0_sum = 0.0
        self.l1_sum = 0.0

    @torch.no_grad()
    def update(self, x_BD: Tensor, codes_BF: Tensor, x_hat_BD: Tensor) -> None:
        x = x_BD.reshape(-1, self.d_in).float()
        x_hat = x_hat_BD.reshape(-1, self.d_in).float()
        codes = codes_BF.reshape(-1, self.d_sae)
        if x.shape[0] == 0:
            return
        err = x - x_hat
        self.n += x.shape[0]
        self.sum_x += x.sum(0, dtype=torch.float64)
        self.sum_x2 += x.double().pow(2).sum(0)
        self.sse += err.pow(2).sum(dtype=torch.float64).item()
        x_norm = x.norm(dim=-1)
        x_hat_norm = x_hat.norm(dim=-1)
        eps = torch.finfo(torch.float32).tiny
        self.cos_sum += (
            ((x * x_hat).sum(-1) / (x_norm * x_hat_norm).clamp_min(eps))
            .sum(dtype=torch.float64)
            .item()
        )
        self.ratio_sum += (x_hat_norm / x_norm.clamp_min(eps)).sum(dtype=torch.float64).item()
        self.norm_sum += x_norm.sum(dtype=torch.float64).item()
        active = codes != 0
        self.fire_counts += active.sum(0)
        self.l0_sum += active.sum(dtype=torch.float64).item()
        self.l1_sum += codes.float().abs().sum(dtype=torch.float64).item()

    def feature_density(self) -> Tensor:
        """Per-latent firing frequency over the tokens seen (float64, [d_sae])."""
        return self.fire_counts.double().cpu() / max(self.n, 1)

    def results(
        self, source: str, dense_threshold: float = 0.1, n_bins: int = 50
    ) -> tuple[ReconstructionMetrics, SparsityMetrics]:
        if self.n == 0:
            raise ValueError(
                "no activations were evaluated; give more tokens (n_tokens) or a non-empty cache"
            )
        n = self.n
        mean = self.sum_x / n
        total_var = (self.sum_x2 - n * mean.pow(2)).sum().item()
        fvu = self.sse / total_var if total_var > 0 else math.nan
        recon = ReconstructionMetrics(
            n_tokens=n,
            source=source,
            fvu=fvu,
            explained_variance=1.0 - fvu,
            mse=self.sse / (n * self.d_in),
            mse_per_token=self.sse / n,
            cosine_similarity=self.cos_sum / n,
            l2_ratio=self.ratio_sum / n,
            mean_input_norm=self.norm_sum / n,
        )
        sparsity = sparsity_metrics(self.fire_counts, n, self.l0_sum, self.l1_sum, source, dense_threshold, n_bins)
        return recon, sparsity


def sparsity_metrics(fire_counts_F: Tensor, n: int, l0_sum: float, l1_sum: float, source: str,
                     dense_threshold: float = 0.1, n_bins: int = 50) -> SparsityMetrics:
    """The sparsity group from per-latent firing counts over `n` tokens (and the L0 / L1 sums)."""
    d_sae = fire_counts_F.numel()
    density = fire_counts_F.double().cpu() / max(n, 1)
    alive = density > 0
    n_dead = int((~alive).sum())
    n_dense = int((density > dense_threshold).sum())
    log_density = density[alive].log10()
    edges, counts = density_histogram(log_density, n_bins)
    return SparsityMetrics(
        n_tokens=n,
        source=source,
        d_sae=d_sae,
        l0=l0_sum / max(n, 1),
        l1=l1_sum / max(n, 1),
        dead_fraction=n_dead / d_sae,
        n_dead=n_dead,
        dense_threshold=dense_threshold,
        dense_fraction=n_dense / d_sae,
        n_dense=n_dense,
        mean_log10_density=log_density.mean().item() if alive.any() else math.nan,
        density_hist_edges=edges,
        density_hist_counts=counts,
    )


def density_histogram(log_density: Tensor, n_bins: int = 50) -> tuple[list[float], list[int]]:
    """Histogram of log10 firing frequencies on fixed-width bins spanning the data (and 0)."""
    if log_density.numel() == 0:
        return [], []
    lo = math.floor(log_density.min().item() * 4) / 4  # quarter-decade-aligned ends read better
    hi = 0.0
    if hi - lo < 1e-9:
        lo = hi - 1.0
    counts = torch.histc(log_density.double(), bins=n_bins, min=lo, max=hi)
    edges = torch.linspace(lo, hi, n_bins + 1, dtype=torch.float64)
    return [round(e, 6) for e in edges.tolist()], [int(c) for c in counts.tolist()]


# --------------------------------------------------------------------------- CE / KL


@torch.no_grad()
def next_token_ce(logits_BTV: Tensor, tokens_BT: Tensor) -> Tensor:
    """Per-position next-token cross-entropy [B, T-1] in fp32 (position t predicts token t+1)."""
    logp = torch.log_softmax(logits_BTV[:, :-1].float(), dim=-1)
    return -logp.gather(-1, tokens_BT[:, 1:, None]).squeeze(-1)


@torch.no_grad()
def kl_per_position(clean_logp_BTV: Tensor, logits_BTV: Tensor) -> Tensor:
    """KL(p_clean || p) per position [B, T], from clean log-probs and the other run's logits."""
    logp = torch.log_softmax(logits_BTV.float(), dim=-1)
    return (clean_logp_BTV.exp() * (clean_logp_BTV - logp)).sum(-1)


def recovered(bad: float, ours: float, good: float) -> float | None:
    """(bad - ours) / (bad - good): 1 when ours == good, 0 when ours == bad; None if undefined."""
    denom = bad - good
    if not math.isfinite(denom) or abs(denom) < 1e-12:
        return None
    return finite_or_none((bad - ours) / denom)
