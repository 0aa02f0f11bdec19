"""The demo's report: `report.md` plus its plotly figures (HTML, PNG where kaleido works).

It reads only what the stages wrote (eval JSON, training metrics, steering summaries), so it can
be re-written at any time without recomputing anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sae import atomic_write_text, save_figure


def _fmt(x: Any, spec: str = ".3f") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def training_curves(metrics_jsonl: Path) -> go.Figure | None:
    if not metrics_jsonl.exists():
        return None
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    if not rows:
        return None

    def series(suffix: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for r in rows:
            key = next((k for k in r if k == suffix or k.endswith("/" + suffix)), None)
            if key is not None and "tokens" in r:
                xs.append(r["tokens"])
                ys.append(r[key])
        return xs, ys

    fig = make_subplots(rows=1, cols=3, subplot_titles=("FVU (train batches)", "L0", "dead fraction"))
    for col, name in enumerate(("train/fvu", "train/l0", "train/dead_frac"), 1):
        xs, ys = series(name)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name), row=1, col=col)
        fig.update_xaxes(title_text="tokens", row=1, col=col)
    fig.update_layout(showlegend=False, title="Training curves")
    return fig


def _generations_table(samples: list[dict[str, Any]], limit: int = 6) -> list[str]:
    lines = ["| prompt | unsteered | steered |", "|---|---|---|"]
    for s in samples[:limit]:
        cells = [str(s.get(k, "")).replace("\n", " ").replace("|", "\\|")[:300] for k in ("prompt", "unsteered", "steered")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _steering_section(title: str, summary: dict[str, Any], figures: list[str], root: Path) -> list[str]:
    lines = [f"## {title}", ""]
    if not summary:
        return lines + ["(stage not run)", ""]
    for key in ("feature", "features", "feature_examples", "headline"):
        if key in summary:
            lines.append(f"- **{key.replace('_', ' ')}**: {summary[key]}")
    for key, who in (("no_effect", "clamp"), ("caa_no_effect", "CAA")):
        if summary.get(key):
            lines.append(f"- **{who}**: {summary[key]}")
    table = summary.get("table")
    if table:
        cols = list(table[0].keys())
        lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for row in table:
            lines.append("| " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
    if summary.get("samples"):
        which = "best strength" if not summary.get("no_effect") else f"no effect; `{summary.get('samples_condition')}`"
        lines += ["", f"Side by side ({which}):", ""] + _generations_table(summary["samples"])
    for f in figures:
        p = Path(f).resolve()
        link = p.relative_to(root.resolve()) if p.is_relative_to(root.resolve()) else p
        lines.append(f"- figure: [{p.name}]({link})")
    return lines + [""]


def _failure_section(failure: dict[str, Any] | None) -> list[str]:
    if not failure:
        return []
    return [f"## Failed stage: {failure['stage']}", "",
            f"**{failure['title']}** failed its check: {failure['reason']}", "",
            "The stages after it did not run. Fix the cause and run `saekit demo` again: finished stages "
            "are kept and this one is retried.", ""]


def _golden_gate_line(gg: dict[str, Any]) -> list[str]:
    if not gg:
        return []
    if gg.get("no_effect"):
        return [f"**Golden Gate mention rate**: {gg['no_effect']} (unsteered "
                f"{_fmt(gg.get('unsteered_rate'), '.0%')}).", ""]
    return [
        f"**Golden Gate mention rate**: steered {_fmt(gg.get('best_rate'), '.0%')} "
        f"(strength {gg.get('best_strength')}) vs unsteered {_fmt(gg.get('unsteered_rate'), '.0%')}; "
        f"perplexity {_ratio(gg.get('best_perplexity'), gg.get('unsteered_perplexity'))} unsteered given the "
        f"prompt, {_ratio(gg.get('best_text_perplexity'), gg.get('unsteered_text_perplexity'))} as text alone "
        f"(the best strength whose text passes the fluency gate and whose {gg.get('fluency', 'perplexity')} "
        "stays within 2x unsteered).",
        "",
    ]


def write_report(root: Path, stages: dict[str, dict[str, Any]], *, headline: str, sae_dir: Path,
                 db_path: Path, failure: dict[str, Any] | None = None) -> Path:
    """`root/report.md` from the demo's stage summaries (the JSON markers in `root/stages/`);
    `failure` (stage, title, reason, partial) names a stage that failed its check, and its
    partial output, if any, is shown in that stage's section."""
    if failure and failure.get("partial"):
        stages = {**stages, failure["stage"]: failure["partial"]}
    figs_dir = root / "figures"
    ev = stages.get("eval", {})

    fig_paths: dict[str, list[Path]] = {}
    metrics = next(iter(sorted(sae_dir.glob("**/metrics.jsonl"))), None)
    curves = training_curves(metrics) if metrics else None
    if curves is not None:
        fig_paths["training"] = [Path(p) for p in save_figure(curves, figs_dir / "training_curves").values()]

    def rel(paths: list[Path] | list[str]) -> list[str]:
        return [str(Path(p).resolve().relative_to(root.resolve())) for p in paths if Path(p).exists()]

    gg = stages.get("golden_gate", {})
    sy = stages.get("sycophancy", {})
    lines = [
        "# saekit demo report",
        "",
        headline,
        "",
        *_failure_section(failure),
        "## The SAE",
        "",
        "| L0 | FVU | CE-loss recovered | dead fraction |",
        "|---|---|---|---|",
        f"| {_fmt(ev.get('l0'), '.1f')} | {_fmt(ev.get('fvu'))} | {_fmt(ev.get('ce_loss_recovered'))} | "
        f"{_fmt(ev.get('dead_fraction'), '.2%')} |",
        "",
        "Full metrics: [eval.json](eval.json). Feature database: [features.sqlite](features.sqlite).",
    ]
    density = sorted(root.glob("eval_density.*"))
    for p in density + fig_paths.get("training", []):
        lines.append(f"- figure: [{p.name}]({rel([p])[0]})")
    lines.append("")
    lines += _golden_gate_line(gg)
    lines += _steering_section("Golden Gate", gg, gg.get("figures", []), root)
    lines += _steering_section("Sycophancy", sy, sy.get("figures", []), root)
    timing = ", ".join(f"{k} {v.get('seconds', 0):.0f} s" for k, v in stages.items())
    lines += ["## Stages", "", timing, "", "Open the explorer:", "", "```bash",
              f"saekit explore {db_path}", "```", ""]
    path = root / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
