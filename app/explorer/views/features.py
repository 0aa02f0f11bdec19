"""The feature list: filter by density and max activation, sort, search by logit token or text."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app.explorer import render, resources


def show_hits(hits: list, found: str, none: str, label: Callable[[Any], str]) -> None:
    """A heading and links to the first 20 hits' feature pages."""
    st.markdown(f"**{len(hits)} {found}**" if hits else none)
    for h in hits[:20]:
        st.page_link("views/feature.py", label=label(h), query_params={"feature": h.feature})


db = resources.require_db()
if "feature" in st.query_params:  # `/?feature=123` deep links land on the feature page
    st.switch_page("views/feature.py", query_params={"feature": st.query_params["feature"]})

st.title("Features")
m = db.meta
st.caption(f"`{db.path}` · {db.n_features} latents of `{m.get('hook_name')}` ({m.get('model_name')}) · "
           f"{m.get('n_tokens', 0):,} tokens analysed")


@st.cache_data(show_spinner=False, max_entries=4)
def feature_table(path: str, mtime: float) -> pd.DataFrame:  # (path, mtime): the cache key
    s = db.summaries()
    logits = db.top_logit_tokens(3)
    df = pd.DataFrame({
        "feature": s["id"],
        "density": s["density"],
        "max act": s["max_act"],
        "mean act": s["mean_act"],
        "fired": s["n_fired"],
        "dead": s["dead"],
        "top logits": [" ".join(repr(t) for t in logits.get(int(i), [])) for i in s["id"]],
    })
    best: dict[int, str] = {}
    for e in db.all_explanations():  # each feature's best-scoring explanation (listed first)
        best.setdefault(e.feature, e.explanation)
    if best:
        df["explanation"] = [best.get(int(i), "") for i in s["id"]]
    df["open"] = [f"feature?feature={int(i)}" for i in s["id"]]
    return df


df = feature_table(str(db.path), db.path.stat().st_mtime)

go = st.columns([2, 1, 5])
target = go[0].number_input("Open feature", min_value=0, max_value=db.n_features - 1, value=0, step=1)
if go[1].button("Open", key="open_feature"):
    st.switch_page("views/feature.py", query_params={"feature": int(target)})

search_logit, search_text, search_expl = st.columns(3)
token = search_logit.text_input("Search by logit token", placeholder="e.g.  Paris", key="q_logit",
                                help="latents whose logit lens promotes this token (exact, then ignoring case/spaces)")
text = search_text.text_input("Search by text in examples", placeholder="e.g. def __init__", key="q_text")
about = search_expl.text_input("Search by explanation", placeholder="e.g. numbers", key="q_expl",
                               help="latents whose autointerp explanation contains this text (`saekit autointerp`)")


if token:
    show_hits(db.search_logit(token), f"latents promote {token!r}", f"No latent has {token!r} among its top logits.",
              lambda h: f"#{h.feature}: {h.token!r} logit {h.value:.2f} (rank {h.rank})")
if text:
    show_hits(db.search_text(text), f"latents have {text!r} in their examples", f"No stored example contains {text!r}.",
              lambda h: f"#{h.feature} ({h.act:.3g}): {h.text.strip()[:80]!r}")

if about:
    none = (f"No explanation contains {about!r}." if db.has_explanations_table and db.all_explanations() else
            f"No feature is explained yet: run `saekit autointerp --db {db.path}`.")
    show_hits(db.search_explanations(about), f"explanations mention {about!r}", none,
              lambda h: f"#{h.feature} (detection {h.detection:.2f}): {h.explanation[:80]}")

with st.expander("Filter and sort", expanded=True):
    c = st.columns(4)
    live = df.loc[~df["dead"], "density"]
    lo_d = min(math.floor(math.log10(live.min())), -1) if len(live) else -6
    dens = c[0].slider("log10 density", min_value=float(lo_d), max_value=0.0, value=(float(lo_d), 0.0), step=0.1)
    max_max = float(df["max act"].max()) if len(df) else 0.0
    min_act = c[1].number_input("min max-activation", min_value=0.0, max_value=max(max_max, 0.0), value=0.0)
    show_dead = c[2].checkbox("show dead latents", value=False)
    sort = c[3].selectbox("sort by", ["max act ↓", "density ↓", "density ↑", "mean act ↓", "feature"])

view = df
with np.errstate(divide="ignore"):
    logd = np.log10(view["density"].to_numpy())
keep = (view["max act"] >= min_act) & (((logd >= dens[0] - 1e-9) & (logd <= dens[1] + 1e-9)) | view["dead"])
if not show_dead:
    keep &= ~view["dead"]
view = view[keep]
col, asc = {"max act ↓": ("max act", False), "density ↓": ("density", False), "density ↑": ("density", True),
            "mean act ↓": ("mean act", False), "feature": ("feature", True)}[sort]
view = view.sort_values(col, ascending=asc, kind="stable")
n_dead = int(df["dead"].sum())
st.caption(f"{len(view)} of {db.n_features} latents shown · {n_dead} dead")
st.dataframe(
    view.assign(density=view["density"].map(render.fmt_density)),
    hide_index=True,
    width="stretch",
    height=520,
    column_config={
        "open": st.column_config.LinkColumn("open", display_text="open ↗"),
        "max act": st.column_config.NumberColumn(format="%.3g"),
        "mean act": st.column_config.NumberColumn(format="%.3g"),
    },
)
