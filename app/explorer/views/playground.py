"""Steering playground: pick features and strengths, compare steered and unsteered generations.

Uses `steering.generate` with `FeatureSteering` edits (the SAE error term is kept, so only the
chosen features change); "x max" strengths are multiples of each feature's max activation in
this database. Both columns share their random numbers, so they differ only by the steering.
"""

from __future__ import annotations

import streamlit as st

import steering
from app.explorer import resources

METHODS = ["clamp", "add", "scale", "ablate"]

db = resources.require_db()
first = resources.feature_param(db)
st.title("Steering playground")
model, sae_obj = resources.require_model_and_sae(db)

prompt = st.text_area("Prompt", value="Tell me about your weekend.", height=80, key="steer_prompt")
n_rows = int(st.number_input("Features to steer", min_value=1, max_value=6, value=1, step=1, key="n_rows"))
edits: dict[int, object] = {}
problems = []
for r in range(n_rows):
    c = st.columns([2, 2, 2, 2])
    f = int(c[0].number_input("feature", 0, db.n_features - 1, value=first if r == 0 else 0, step=1, key=f"f{r}"))
    method = c[1].selectbox("method", METHODS, key=f"m{r}")
    strength = float(c[2].number_input("strength", value=5.0 if method in ("clamp", "add") else 2.0, step=0.5,
                                       key=f"s{r}", disabled=method == "ablate"))
    unit = c[3].selectbox("unit", ["x max", "abs"], key=f"u{r}", disabled=method in ("scale", "ablate"))
    if f in edits:
        problems.append(f"feature {f} is listed twice; each feature takes one edit")
    try:
        edits[f] = steering.make_edit(method, strength, "max" if unit == "x max" else "abs")
    except steering.SteeringError as e:
        problems.append(str(e))

s = st.columns(4)
max_new = int(s[0].slider("new tokens", 8, 128, 40, step=8, key="max_new"))
temperature = float(s[1].slider("temperature (0 = greedy)", 0.0, 1.5, 0.0, step=0.1, key="temp"))
seed = int(s[2].number_input("seed", value=0, step=1, key="seed"))
positions = s[3].selectbox("steer at", steering.POSITION_MODES, key="positions",
                           help="all tokens, only the prompt, only generated tokens, or after the last user turn")

for p in problems:
    st.error(p)
if st.button("Generate", type="primary", disabled=bool(problems) or not prompt.strip(), key="generate"):
    try:
        iv = steering.FeatureSteering(sae_obj, edits, positions=positions, feature_db=db)
        with st.spinner("Generating..."):
            st.session_state["steer_result"] = steering.generate(
                model, [prompt], iv, compare=True, seed=seed, max_new_tokens=max_new, temperature=temperature,
            )[0]
        st.session_state["steer_desc"] = iv.describe()
    except Exception as e:  # a page never shows a traceback
        st.session_state.pop("steer_result", None)
        st.error(f"Steering failed: {type(e).__name__}: {e}")

result = st.session_state.get("steer_result")
if result is not None:
    st.caption(st.session_state.get("steer_desc", ""))
    left, right = st.columns(2)
    left.subheader("Unsteered")
    left.text(result.unsteered or "")
    right.subheader("Steered")
    right.text(result.steered)
