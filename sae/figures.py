"""Saving a plotly figure the way every saekit report does: HTML always, PNG when it can."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sae.atomic_io import atomic_write_with

if TYPE_CHECKING:
    import plotly.graph_objects as go

log = logging.getLogger(__name__)


def save_figure(
    fig: go.Figure, stem: str | Path, *, png: bool = True, width: int = 900, height: int = 500
) -> dict[str, str]:
    """Write `<stem>.html` (self-contained, opens offline) and, if kaleido can, `<stem>.png`.

    Returns {"html": path} plus {"png": path} when the PNG was written. A PNG needs kaleido and a
    Chrome/Chromium; without them the HTML is enough, so a failure is a warning, not an error.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    html = stem.with_suffix(".html")
    atomic_write_with(html, lambda tmp: fig.write_html(str(tmp), include_plotlyjs=True))
    out = {"html": str(html)}
    if not png:
        return out
    for name in ("kaleido", "choreographer"):  # their INFO lines narrate Chromium's lifecycle
        logging.getLogger(name).setLevel(logging.WARNING)
    path = stem.with_suffix(".png")
    try:
        atomic_write_with(path, lambda tmp: fig.write_image(str(tmp), width=width, height=height))
        out["png"] = str(path)
    except Exception as e:  # noqa: BLE001 - kaleido fails in many ways; the HTML still stands
        log.warning("PNG of %s skipped (%s: %s); the HTML version is at %s", stem.name, type(e).__name__, e, html)
    return out
