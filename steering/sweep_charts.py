"""Charts of a steering sweep's summary: strength vs concept (or task) rate vs perplexity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sae import save_figure


def sweep_figure(summary: dict[str, Any]) -> Any:
    """Left: strength vs concept (or task) rate, perplexity on a second (log) axis.
    Right: rate vs perplexity, the trade-off that compares methods at equal fluency."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = summary["conditions"]
    base = next((r for r in rows if r["method"] == "none"), None)
    series: dict[str, list[dict]] = {}
    for r in rows:
        if r["method"] != "none":
            series.setdefault(f"{r['method']} {'+'.join(map(str, r['features']))}".strip(), []).append(r)
    metric = "task_rate" if any(r["task_rate"] is not None for r in rows) and not any(
        r["concept_rate"] is not None for r in rows) else "concept_rate"
    label = metric.replace("_", " ")
    fig = make_subplots(rows=1, cols=2, specs=[[{"secondary_y": True}, {}]],
                        subplot_titles=("strength sweep", f"{label} vs perplexity"))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for i, (name, rs) in enumerate(series.items()):
        rs = sorted(rs, key=lambda r: r["strength"])
        color = palette[i % len(palette)]
        xs = [r["strength"] for r in rs]
        ys = [r[metric] for r in rs]
        ppl = [r["perplexity_median"] for r in rs]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", line={"color": color},
                                 name=f"{name}: {label}"), row=1, col=1, secondary_y=False)
        fig.add_trace(go.Scatter(x=xs, y=ppl, mode="lines+markers", line={"color": color, "dash": "dot"},
                                 name=f"{name}: perplexity"), row=1, col=1, secondary_y=True)
        fig.add_trace(go.Scatter(x=ppl, y=ys, mode="lines+markers+text", text=[f"{x:g}" for x in xs],
                                 textposition="top center", line={"color": color}, name=name,
                                 showlegend=False), row=1, col=2)
    if base is not None and base[metric] is not None and base["perplexity_median"] is not None:
        fig.add_trace(go.Scatter(x=[base["perplexity_median"]], y=[base[metric]], mode="markers+text",
                                 text=["unsteered"], textposition="bottom center",
                                 marker={"color": "black", "size": 10}, name="unsteered"), row=1, col=2)
        fig.add_hline(y=base[metric], line_dash="dash", line_color="gray", row=1, col=1)
    fig.update_layout(title="Steering sweep: strength vs concept score vs fluency", template="plotly_white",
                      width=1200, height=500)
    fig.update_xaxes(title_text="strength (clamp/add: in units; caa: scale)", row=1, col=1)
    fig.update_yaxes(title_text=label, range=[0, 1.05], row=1, col=1, secondary_y=False)
    fig.update_yaxes(title_text="perplexity (median)", type="log", row=1, col=1, secondary_y=True)
    fig.update_xaxes(title_text="perplexity of steered text under the unsteered model (median)", type="log",
                     row=1, col=2)
    fig.update_yaxes(title_text=label, range=[0, 1.05], row=1, col=2)
    return fig


def plot_sweep(summary: dict[str, Any], out_dir: str | Path, *, png: bool = True) -> list[Path]:
    """Write `sweep_figure(summary)` as sweep.html (+ sweep.png)."""
    files = save_figure(sweep_figure(summary), Path(out_dir) / "sweep", png=png, width=700, height=500)
    return [Path(p) for p in files.values()]
