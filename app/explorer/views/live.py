"""Live text: type text, see one feature's activation on every token, the top features per token, and
which (token, feature) pairs drive the next-token logit (`sae.attribute`).

The model and the SAE are loaded once per server (`st.cache_resource`) and checked against the
database (same SAE, same hook), so live values are comparable with the stored examples.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

import sae
from app.explorer import render, resources

db = resources.require_db()
i = resources.feature_param(db)
st.title("Live text")
model, sae_obj = resources.require_model_and_sae(db)

text = st.text_area("Text", value="The Eiffel Tower is in Paris, the capital of France.",
                    height=110, key="live_text")
feature = int(st.number_input("Feature to highlight", min_value=0, max_value=db.n_features - 1, value=i, step=1))
if feature != i:
    st.query_params["feature"] = str(feature)

if not text.strip():
    st.info("Type some text above.")
    st.stop()
try:
    acts = sae.text_activations(model, sae_obj, text)
except Exception as e:  # a page never shows a traceback
    st.error(f"Could not run the model on this text: {type(e).__name__}: {e}")
    st.stop()

values = acts.feature(feature)
scale = max(db.max_activation(feature), max(values, default=0.0))
st.markdown(f"**Feature {feature}** on your text (colour relative to {scale:.3g}; hover a token for its value) · "
            f"max here {max(values, default=0.0):.3g}, max in the database {db.max_activation(feature):.3g}")
st.html(render.examples_html([render.tokens_html(acts.tokens, values, scale, skipped=acts.skipped)]))
st.page_link("views/feature.py", label=f"open feature {feature}", icon=":material/search:", query_params={"feature": feature})

st.subheader("Most active features in this text")
top = acts.top_overall(10)
if not top:
    st.caption("no feature fired")
cols = st.columns(5)
for k, (j, v) in enumerate(top):
    cols[k % 5].page_link("views/feature.py", label=f"#{j} · {v:.3g}", query_params={"feature": j})

st.subheader("Top features on each token")
rows = []
for p, tok in enumerate(acts.tokens):
    tops = acts.top_features(p, 5)
    rows.append({
        "pos": p,
        "token": repr(tok),
        f"feature {feature}": values[p],
        "top features": "  ".join(f"#{j} ({v:.2g})" for j, v in tops) or ("(not encoded)" if acts.skipped[p] else "-"),
    })
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

st.subheader("What drives the next token")
st.caption("Gradient x activation of the next token's logit at every (token, feature) of the SAE, spliced in with "
           "its error term: the first-order estimate of what zero-ablating that feature there would change. "
           "Tokens shown as not encoded are not spliced and get none.")
target = st.text_input("Next token to explain (empty: the model's top prediction)", value="", key="live_target")
try:
    if not target:
        import torch

        with torch.no_grad():
            target = model.tokenizer.decode([int(model(model.to_tokens(text))[0, -1].argmax())])
    result = sae.attribute(model, sae_obj, text, sae.logit_metric(model, target))
except Exception as e:  # a page never shows a traceback
    st.error(f"Could not attribute {target!r}: {type(e).__name__}: {e}")
    st.stop()
st.markdown(f"logit of **{target!r}** after the text: {result.metric:.3g}")
drivers = [{"pos": p, "token": repr(tok), "feature": f, "effect of ablating": round(e, 4)}
           for p, tok, f, e in result.top(10)]
st.dataframe(pd.DataFrame(drivers), hide_index=True, width="stretch")
cols = st.columns(5)
for k, d in enumerate(drivers):
    cols[k % 5].page_link("views/feature.py", label=f"#{d['feature']} at {d['token']}",
                          query_params={"feature": d["feature"]})
