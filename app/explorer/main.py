"""Streamlit entry point of the feature explorer: `streamlit run app/explorer/main.py -- --db DB`.

The pages live in `views/` (not `pages/`: Streamlit would also list a `pages/` folder itself).

`saekit explore DB` runs exactly that. Pages: the feature list (filters and search), a feature
page (deep link: `/feature?feature=123`; `/?feature=123` redirects there), live text, the
steering playground, and the SAE's evaluation (its `eval.json`: FVU, dead / dense, sparse probing,
absorption).
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:  # `streamlit run` puts only this folder on sys.path
    sys.path.insert(0, str(ROOT))

from app.explorer import resources  # noqa: E402

st.set_page_config(page_title="saekit explorer", page_icon="🔎", layout="wide")
PAGES = [
    st.Page(str(HERE / "views" / "features.py"), title="Features", icon=":material/list:", default=True),
    st.Page(str(HERE / "views" / "feature.py"), title="Feature", icon=":material/search:", url_path="feature"),
    st.Page(str(HERE / "views" / "live.py"), title="Live text", icon=":material/keyboard:", url_path="live"),
    st.Page(str(HERE / "views" / "playground.py"), title="Steering", icon=":material/explore:", url_path="playground"),
    st.Page(str(HERE / "views" / "evaluation.py"), title="Evaluation", icon=":material/analytics:", url_path="evaluation"),
]
page = st.navigation(PAGES)
resources.sidebar()
page.run()
