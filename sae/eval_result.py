"""`EvalResult`: everything an evaluation measured, as documented JSON and a density plot.

The metric groups and their definitions live in `sae.eval_metrics`; `to_dict()` adds the
`schema` block generated from their field metadata, so a saved eval JSON documents itself.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from sae.atomic_io import atomic_write_json, read_json
from sae.eval_metrics import (
    GROUPS,
    SCHEMA_VERSION,
    AbsorptionMetrics,
    DownstreamMetrics,
    ReconstructionMetrics,
    SparseProbingMetrics,
    SparsityMetrics,
    finite_or_none,
    schema,
)
from sae.figures import save_figure

if TYPE_CHECKING:
    import plotly.graph_objects as go


@dataclass
class EvalResult:
    """Everything `evaluate` measured. `to_dict()` / `save()` give the documented JSON."""

    sae: dict[str, Any]
    reconstruction: ReconstructionMetrics
    sparsity: SparsityMetrics
    downstream: DownstreamMetrics | None = None
    sparse_probing: SparseProbingMetrics | None = None
    absorption: AbsorptionMetrics | None = None
    config: dict[str, Any] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    feature_density: Tensor | None = field(default=None, repr=False)  # [d_sae]; not in the JSON

    def to_dict(self, include_schema: bool = True) -> dict[str, Any]:
        def group(g: Any) -> dict[str, Any] | None:
            if g is None:
                return None
            return {k: _json_ready(v) for k, v in dataclasses.asdict(g).items()}

        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "sae": self.sae,
            "reconstruction": group(self.reconstruction),
            "sparsity": group(self.sparsity),
            "downstream": group(self.downstream),
            "sparse_probing": group(self.sparse_probing),
            "absorption": group(self.absorption),
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
        rows += quality_rows(self.sparse_probing, self.absorption)
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


def _json_ready(v: Any) -> Any:
    """JSON has no NaN / inf (they become null), also inside the lists of per-task rows."""
    if isinstance(v, float):
        return finite_or_none(v)
    if isinstance(v, list):
        return [_json_ready(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_ready(x) for k, x in v.items()}
    return v


def quality_rows(probing: SparseProbingMetrics | None, absorbed: AbsorptionMetrics | None) -> list[tuple[str, str]]:
    """Summary lines of the opt-in quality evaluations (none when they did not run)."""
    rows = []
    if probing is not None:
        ks = " / ".join(f"k={k} {a:.3f}" for k, a in zip(probing.ks, probing.mean_sae_accuracy, strict=True))
        rows += [("sparse probing (SAE)", f"{ks} / all {probing.mean_sae_all_accuracy:.3f}"),
                 ("sparse probing (residual)", f"{probing.mean_residual_accuracy:.3f} "
                  f"({len(probing.tasks)} tasks, {probing.n_documents} docs)")]
    if absorbed is not None:
        rows += [("absorption rate (95% CI)", f"{absorbed.mean_absorption_rate:.3f} "
                  f"({absorbed.ci_low:.3f}-{absorbed.ci_high:.3f}; {absorbed.n_letters} letters, "
                  f"probe acc {absorbed.probe_test_accuracy:.3f})"),
                 ("absorption fraction / main latents", f"{absorbed.mean_absorption_fraction:.3f} / "
                  f"{absorbed.mean_main_latents:.2f}")]
    return rows


def load_eval(path: str | Path) -> dict[str, Any]:
    """Read an eval JSON written by `EvalResult.save` (a plain dict; `schema` describes it).

    Files of older schema versions load too: the groups they predate are null (version 1 had
    no `sparse_probing` / `absorption`); `schema_version` keeps the version the file was written with.
    """
    doc = read_json(
        path, fix="run `saekit eval SAE_DIR` to write it", error=FileNotFoundError, what="eval JSON"
    )
    if not isinstance(doc, dict) or "reconstruction" not in doc:
        raise ValueError(f"{path} is not an eval JSON (no `reconstruction` group); rewrite it with "
                         "`saekit eval SAE_DIR`")
    for name in GROUPS:
        doc.setdefault(name, None)
    doc.setdefault("schema_version", 1)
    return doc


def save_density_plot(result: EvalResult, stem: str | Path, png: bool = True) -> dict[str, str]:
    """Write `<stem>.html` (self-contained, opens offline) and, if kaleido can, `<stem>.png`."""
    files = save_figure(result.density_figure(), stem, png=png, width=900, height=500)
    return {f"density_{kind}": path for kind, path in files.items()}
