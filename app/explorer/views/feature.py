"""One feature: stats, top examples, interval samples, histograms, logit lens, neighbours.

Deep link: `/feature?feature=123`. Everything comes from one indexed query per table, so the
page renders in well under a second on a 4,608-latent database (`scripts/bench_features.py`).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.explorer import render, resources

db = resources.require_db()
i = resources.feature_param(db)

nav = st.columns([1, 1, 3, 7], vertical_alignment="center")
if nav[0].button("◀", help="previous feature", disabled=i == 0, key="prev"):
    st.query_params["feature"] = str(i - 1)
    st.rerun()
if nav[1].button("▶", help="next feature", disabled=i >= db.n_features - 1, key="next"):
    st.query_params["feature"] = str(i + 1)
    st.rerun()
picked = nav[2].number_input("Go to feature", min_value=0, max_value=db.n_features - 1, value=i, step=1,
                             label_visibility="collapsed")
if int(picked) != i:
    st.query_params["feature"] = str(int(picked))
    st.rerun()

f = db.feature(i)
st.title(f"Feature {i}")
m = st.columns(5)
m[0].metric("density", render.fmt_density(f.density))
m[1].metric("max activation", f"{f.max_act:.3g}")
m[2].metric("mean activation", f"{f.mean_act:.3g}")
m[3].metric("fired on", f"{f.n_fired:,} tok")
m[4].metric("decoder norm", f"{f.dec_norm:.3g}")
if f.dead:
    st.warning(f"Feature {i} never fired in the {db.meta.get('n_tokens', 0):,} tokens analysed (dead): "
               "no examples; its logit lens and neighbours are still shown.")
for e in db.explanations(i)[:3]:  # best detection score first
    st.info(render.explanation_md(e), icon=":material/psychology:")
links = st.columns(4)
links[0].page_link("views/live.py", label="Try it on your text", icon=":material/keyboard:", query_params={"feature": i})
links[1].page_link("views/playground.py", label="Steer with it", icon=":material/explore:", query_params={"feature": i})

left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader("Top activations")
    if f.top_examples:
        st.html(render.examples_html(
            [render.tokens_html(e.tokens, e.acts, f.max_act, e.center) for e in f.top_examples],
            [f"{e.act:.3g}" for e in f.top_examples],
        ))
    else:
        st.caption("no examples (the feature never fired)")
    st.subheader("Interval samples")
    shown = [iv for iv in reversed(f.intervals) if iv.examples]
    if not shown:
        st.caption("no interval samples")
    for iv in shown:
        with st.expander(f"[{iv.lo:.3g}, {iv.hi:.3g})  ·  {iv.n_events:,} activations", expanded=iv is shown[0]):
            st.html(render.examples_html(
                [render.tokens_html(e.tokens, e.acts, f.max_act, e.center) for e in iv.examples],
                [f"{e.act:.3g}" for e in iv.examples],
            ))

with right:
    if f.hist_counts:
        st.plotly_chart(render.histogram_figure(f.hist_edges, f.hist_counts, "Activations (non-zero)", "activation"),
                        width="stretch", key="act_hist")
    if f.logit_counts:
        st.plotly_chart(render.histogram_figure(f.logit_edges, f.logit_counts, "Logit lens over the vocabulary",
                                                "logit", color="#4080c0"), width="stretch", key="logit_hist")
    if f.top_logits:
        pos, neg = st.columns(2)
        pos.markdown("**Promotes**")
        pos.dataframe(pd.DataFrame([(repr(s), v) for _, s, v in f.top_logits], columns=["token", "logit"]),
                      hide_index=True, width="stretch")
        neg.markdown("**Suppresses**")
        neg.dataframe(pd.DataFrame([(repr(s), v) for _, s, v in f.bottom_logits], columns=["token", "logit"]),
                      hide_index=True, width="stretch")
    else:
        st.caption(f"logit lens: {db.meta.get('logit_lens', 'not computed')}")
    nb, co = st.columns(2)
    with nb:
        st.markdown("**Decoder neighbours**")
        for j, cos in f.neighbours:
            st.page_link("views/feature.py", label=f"#{j}  ·  cos {cos:.2f}", query_params={"feature": j})
    with co:
        st.markdown("**Fires together with**")
        if not f.cooccurring:
            st.caption(db.meta.get("cooccurrence", "none"))
        for j, n_both, jac in f.cooccurring:
            st.page_link("views/feature.py", label=f"#{j}  ·  J {jac:.2f} ({n_both})", query_params={"feature": j})
