"""Pure rendering helpers: highlighted tokens (HTML) and histograms (plotly). No Streamlit state.

Token highlighting: one `<span class="saekit-tok">` per token, its background opacity
proportional to activation / scale, the exact value in the `title` (shown on hover) and in
`data-act`. Styles are inline (st.html sanitises `<style>` blocks away). Everything is
HTML-escaped, and characters Markdown would interpret are entities, so the same HTML is safe
in `st.markdown` too and a token such as `**` or `$` renders as itself.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

_MD_SPECIAL = {c: f"&#{ord(c)};" for c in "*_`$~#[]\\|<>{}"}
_EX_STYLE = ("font-family:ui-monospace,monospace;font-size:0.85rem;line-height:1.9;white-space:pre-wrap;"
             "word-break:break-word;margin:0 0 0.35rem 0;padding:0.2rem 0.4rem;border-left:3px solid #f0a060;")


def token_text(tok: str) -> str:
    """A token as safe HTML, with whitespace made visible where it would vanish."""
    shown = tok.replace("\n", "↵\n").replace("\t", "→")
    if shown == "":
        shown = "∅"
    return _escape_md(html.escape(shown, quote=True))


def _escape_md(s: str) -> str:
    # keep the entities html.escape produced (&amp; &lt; ...), escape the remaining markdown characters
    out = []
    i = 0
    while i < len(s):
        if s[i] == "&":
            j = s.find(";", i)
            out.append(s[i : j + 1])
            i = j + 1
            continue
        out.append(_MD_SPECIAL.get(s[i], s[i]))
        i += 1
    return "".join(out)


def tokens_html(
    tokens: Sequence[str],
    acts: Sequence[float],
    scale: float,
    centre: int | None = None,
    skipped: Sequence[bool] | None = None,
) -> str:
    """One example as a line of highlighted tokens (colour ~ activation / scale)."""
    scale = scale if scale and scale > 0 else 1.0
    parts = []
    for k, (tok, a) in enumerate(zip(tokens, acts, strict=True)):
        alpha = max(0.0, min(1.0, float(a) / scale))
        cls, extra = "saekit-tok", ""
        if centre is not None and k == centre:
            cls, extra = cls + " saekit-centre", "outline:1px solid #c04000;"
        if skipped is not None and skipped[k]:
            cls, extra = cls + " saekit-skip", extra + "color:#999;"
        title = f"activation {a:.3f}" + (" (not encoded: special token / outlier)" if skipped and skipped[k] else "")
        parts.append(
            f'<span class="{cls}" data-act="{a:.4g}" title="{title}" '
            f'style="border-radius:3px;{extra}background-color:rgba(255,110,0,{alpha:.3f})">{token_text(tok)}</span>'
        )
    return "".join(parts)


def examples_html(rows: Sequence[str], labels: Sequence[str] | None = None) -> str:
    """Several highlighted lines, each optionally prefixed by a label (e.g. the activation)."""
    body = []
    for k, r in enumerate(rows):
        label = f'<b style="color:#a04000">{html.escape(labels[k])}</b> ' if labels else ""
        body.append(f'<div class="saekit-ex" style="{_EX_STYLE}">{label}{r}</div>')
    return "".join(body)


def histogram_figure(edges: Sequence[float], counts: Sequence[int], title: str, x_title: str, color: str = "#f08030"):
    """A bar histogram with given bin edges (plotly)."""
    import plotly.graph_objects as go

    centres = [(edges[i] + edges[i + 1]) / 2 for i in range(len(counts))]
    widths = [edges[i + 1] - edges[i] for i in range(len(counts))]
    fig = go.Figure(go.Bar(x=centres, y=list(counts), width=widths, marker_color=color,
                           hovertemplate="%{x:.3g}: %{y} tokens<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title="count", height=260,
                      margin=dict(l=10, r=10, t=40, b=10), bargap=0.02)
    return fig


def fmt_density(d: float) -> str:
    if d <= 0:
        return "0 (dead)"
    return f"{d:.2e}" if d < 1e-3 else f"{d:.4f}"


def explanation_md(e) -> str:
    """One autointerp explanation with its scores, as Markdown (the explanation text escaped)."""
    weak = " · *weak: the embedded 135M explainer*" if e.config.get("explainer_weak") else ""
    auc = f" (AUC {e.detection_auc:.2f})" if e.detection_auc is not None else ""
    unparsable = f" · {e.n_unparsable} unparsable answers" if e.n_unparsable else ""
    return (f"**{_escape_md(html.escape(e.explanation))}**  \n"
            f"detection {e.detection:.2f}{auc} · fuzzing {e.fuzzing:.2f} (balanced accuracy, 0.5 = chance; "
            f"{e.n_detection} + {e.n_fuzzing} contexts judged{unparsable}) · by `{e.explainer}`{weak}")
