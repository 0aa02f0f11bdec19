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
from steering.benchmark_report import concept_table, samples_table, sycophancy_tables


def _fmt(x: Any, spec: str = ".3f") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


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


def _pct(iv: dict[str, float]) -> str:
    return f"{iv['point']:.0%} [{iv['low']:.0%}, {iv['high']:.0%}]"


def _golden_gate_section(gg: dict[str, Any], root: Path) -> list[str]:
    lines = ["## Golden Gate: SAE clamp vs CAA vs prompting", ""]
    if not gg:
        return lines + ["(stage not run)", ""]
    rows = {r["method"]: r for r in gg["evaluation"]}
    clamp, base, caa, prompt = rows["clamp"], rows["unsteered"], rows["caa"], rows["prompting"]
    lines += [
        f"**Golden Gate mention rate** on {clamp['n']} held-out prompts (95% bootstrap intervals): clamp of "
        f"feature {gg['feature']} at x{clamp['setting']:g} its max activation {_pct(clamp['concept_rate'])}, text "
        f"perplexity {clamp['text_perplexity_median']:.1f} vs {base['text_perplexity_median']:.1f} unsteered; "
        f"unsteered {_pct(base['concept_rate'])}; CAA at the clamp's edit size {_pct(caa['concept_rate'])}; "
        f"prompting (\"{prompt.get('instruction', '')}\") {_pct(prompt['concept_rate'])}.",
        "",
        *_by_rate_line(rows, base),
        "Each method's setting was chosen by the combined score (harmonic mean of concept, fluency and "
        "relevance) on separate selection prompts. Edit size: mean added norm over mean residual norm.",
        "",
        *concept_table({"golden_gate": gg}),
        "",
        "Side by side (held-out prompts):",
        "",
        *samples_table(gg.get("samples", [])),
        "",
        f"- all numbers: [{Path(gg['results']).name}]({_rel(gg['results'], root)})",
        "",
    ]
    return lines


def _by_rate_line(rows: dict[str, dict[str, Any]], base: dict[str, Any]) -> list[str]:
    """The clamp chosen by the issue's target rule, when the benchmark chose one."""
    r = rows.get("clamp_by_rate")
    if r is None:
        return []
    return [f"Chosen instead for the highest mention rate whose text perplexity stays within 2x unsteered "
            f"(the target rule): x{r['setting']:g} max, {_pct(r['concept_rate'])}, text perplexity "
            f"{r['text_perplexity_median']:.1f} vs {base['text_perplexity_median']:.1f}, relevance "
            f"{r['relevance']['point']:.2f} vs {base['relevance']['point']:.2f} unsteered.", ""]


def _sycophancy_section(sy: dict[str, Any], root: Path) -> list[str]:
    lines = ["## Sycophancy: SAE clamp vs CAA vs prompting", ""]
    if not sy:
        return lines + ["(stage not run)", ""]
    return lines + [
        "Forced choice: the probability the model puts on the option that agrees with a user's wrong "
        "belief; free text: replies scored for agreement and for correction separately (a negation-aware "
        "scorer: \"No, that's not correct\" is a correction).",
        "",
        *sycophancy_tables(sy),
        "",
        "Side by side (free text, evaluation items):",
        "",
        *samples_table(sy.get("samples", [])),
        "",
        f"- all numbers: [{Path(sy['results']).name}]({_rel(sy['results'], root)})",
        "",
    ]


def _rel(path: str, root: Path) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(root.resolve())) if p.is_relative_to(root.resolve()) else str(p)


def _failure_section(failure: dict[str, Any] | None) -> list[str]:
    if not failure:
        return []
    return [f"## Failed stage: {failure['stage']}", "",
            f"**{failure['title']}** failed its check: {failure['reason']}", "",
            "The stages after it did not run. Fix the cause and run `saekit demo` again: finished stages "
            "are kept and this one is retried.", ""]


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
    lines += _golden_gate_section(gg, root)
    lines += _sycophancy_section(sy, root)
    timing = ", ".join(f"{k} {v.get('seconds', 0):.0f} s" for k, v in stages.items())
    lines += ["## Stages", "", timing, "", "Open the explorer:", "", "```bash",
              f"saekit explore {db_path}", "```", ""]
    path = root / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
