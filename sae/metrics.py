"""The numbers an SAE evaluation reports, what each one means, and how each is accumulated.

`EvalResult` gathers the groups; its `to_dict()` / `save()` are the eval JSON.
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
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sae.atomic_io import atomic_write_json, atomic_write_with

if TYPE_CHECKING:
    import plotly.graph_objects as go

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


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
    splice_policy: str = _m("Which positions were spliced (see sae.evaluate's module doc).", "")


GROUPS: dict[str, type] = {
    "reconstruction": ReconstructionMetrics,
    "sparsity": SparsityMetrics,
    "downstream": DownstreamMetrics,
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
        density = self.feature_density()
        alive = density > 0
        n_dead = int((~alive).sum())
        n_dense = int((density > dense_threshold).sum())
        log_density = density[alive].log10()
        edges, counts = density_histogram(log_density, n_bins)
        sparsity = SparsityMetrics(
            n_tokens=n,
            d_sae=self.d_sae,
            l0=self.l0_sum / n,
            l1=self.l1_sum / n,
            dead_fraction=n_dead / self.d_sae,
            n_dead=n_dead,
            dense_threshold=dense_threshold,
            dense_fraction=n_dense / self.d_sae,
            n_dense=n_dense,
            mean_log10_density=log_density.mean().item() if alive.any() else math.nan,
            density_hist_edges=edges,
            density_hist_counts=counts,
        )
        return recon, sparsity


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


# --------------------------------------------------------------------------- the result


@dataclass
class EvalResult:
    """Everything `evaluate` measured. `to_dict()` / `save()` give the documented JSON."""

    sae: dict[str, Any]
    reconstruction: ReconstructionMetrics
    sparsity: SparsityMetrics
    downstream: DownstreamMetrics | None = None
    config: dict[str, Any] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    feature_density: Tensor | None = field(default=None, repr=False)  # [d_sae]; not in the JSON

    def to_dict(self, include_schema: bool = True) -> dict[str, Any]:
        def group(g: Any) -> dict[str, Any] | None:
            if g is None:
                return None
            return {
                k: finite_or_none(v) if isinstance(v, float) else v
                for k, v in dataclasses.asdict(g).items()
            }

        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "sae": self.sae,
            "reconstruction": group(self.reconstruction),
            "sparsity": group(self.sparsity),
            "downstream": group(self.downstream),
            "config": self.config,
            "plots": self.plots,
            "seconds": round(self.seconds, 2),
        }
        if include_schema:
            out["schema"] = schema()
        return out

    def save(self, path: str | Path) -> Path:
        """Write the JSON atomically (a crash never leaves half a file)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(p, self.to_dict(), allow_nan=False)

    def summary(self) -> str:
        """A short human-readable table of the headline numbers."""
        r, s, d = self.reconstruction, self.sparsity, self.downstream
        rows = [
            ("tokens (reconstruction)", f"{r.n_tokens:,} from {r.source}"),
            ("L0", f"{s.l0:.1f}"),
            ("FVU / explained variance", f"{r.fvu:.4f} / {r.explained_variance:.4f}"),
            ("MSE per element", f"{r.mse:.4g}"),
            ("cosine similarity", f"{r.cosine_similarity:.4f}"),
            ("l2 ratio", f"{r.l2_ratio:.4f}"),
            (
                "dead / dense latents",
                f"{s.n_dead} ({s.dead_fraction:.1%}) / {s.n_dense} ({s.dense_fraction:.1%})",
            ),
        ]
        if d is not None:
            rec = "n/a" if d.ce_loss_recovered is None else f"{d.ce_loss_recovered:.4f}"
            kl_rec = "n/a" if d.kl_div_recovered is None else f"{d.kl_div_recovered:.4f}"
            rows += [
                (
                    "CE clean / SAE / zero",
                    f"{d.ce_loss_clean:.4f} / {d.ce_loss_sae:.4f} / {d.ce_loss_zero:.4f}",
                ),
                ("CE loss recovered", rec),
                (
                    "KL SAE / zero (recovered)",
                    f"{d.kl_div_sae:.4f} / {d.kl_div_zero:.4f} ({kl_rec})",
                ),
            ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def density_figure(self) -> go.Figure:
        """Plotly histogram of log10 feature density (dead latents noted in the title)."""
        import plotly.graph_objects as go

        s = self.sparsity
        edges, counts = s.density_hist_edges or [], s.density_hist_counts or []
        centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=False)]
        width = (edges[1] - edges[0]) if len(edges) > 1 else 0.1
        fig = go.Figure(go.Bar(x=centers, y=counts, width=width, marker_color="#4C78A8"))
        name = self.sae.get("path") or self.sae.get("hook_name", "SAE")
        fig.update_layout(
            title=f"Feature density — {name}<br><sup>{s.n_dead} dead of {s.d_sae} latents "
            f"over {s.n_tokens:,} tokens; {s.n_dense} dense (> {s.dense_threshold:g})</sup>",
            xaxis_title="log10 firing frequency",
            yaxis_title="latents",
            bargap=0.02,
            template="plotly_white",
        )
        if s.n_dense:
            fig.add_vline(x=math.log10(s.dense_threshold), line_dash="dash", line_color="#E45756")
        return fig


def load_eval(path: str | Path) -> dict[str, Any]:
    """Read an eval JSON written by `EvalResult.save` (a plain dict; `schema` describes it)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist; run `saekit eval SAE_DIR` to write it")
    return json.loads(p.read_text())


def save_density_plot(result: EvalResult, stem: str | Path, png: bool = True) -> dict[str, str]:
    """Write `<stem>.html` (self-contained, opens offline) and, if kaleido can, `<stem>.png`."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig = result.density_figure()
    html = stem.with_suffix(".html")
    atomic_write_with(html, lambda tmp: fig.write_html(str(tmp), include_plotlyjs=True))
    out = {"density_html": str(html)}
    if png:
        for name in ("kaleido", "choreographer"):  # their INFO lines narrate Chromium's lifecycle
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            atomic_write_with(stem.with_suffix(".png"), lambda tmp: fig.write_image(str(tmp), width=900, height=500))
            out["density_png"] = str(stem.with_suffix(".png"))
        except Exception as e:  # kaleido needs a Chrome/Chromium; HTML is enough without one
            log.warning(
                "density plot PNG skipped (%s: %s); the HTML version is at %s",
                type(e).__name__,
                e,
                html,
            )
    return out
