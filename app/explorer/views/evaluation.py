"""The SAE's evaluation: `eval.json` beside the SAE the database was built from (`saekit eval`).

Headline numbers (L0, FVU, CE recovered, dead / dense), then the opt-in quality evaluations when
the file has them: sparse probing per task and first-letter absorption per letter. A file of an
older schema version shows what it has and says which command adds the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

import sae
from app.explorer import resources


def _fmt(v: Any, spec: str = ".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def headline(doc: dict[str, Any]) -> None:
    r, s, d = doc["reconstruction"] or {}, doc["sparsity"] or {}, doc.get("downstream") or {}
    c = st.columns(5)
    c[0].metric("L0", _fmt(s.get("l0"), ".1f"))
    c[1].metric("FVU", _fmt(r.get("fvu")))
    c[2].metric("CE loss recovered", _fmt(d.get("ce_loss_recovered")))
    c[3].metric("dead latents", _fmt(s.get("dead_fraction"), ".1%"))
    c[4].metric("dense latents", _fmt(s.get("dense_fraction"), ".1%"))
    st.caption(f"reconstruction over {r.get('n_tokens', 0):,} tokens ({r.get('source')}); dead / dense over "
               f"{s.get('n_tokens', 0):,} tokens (`--density-tokens` counts them over their own budget)")


def probing_section(p: dict[str, Any] | None, sae_dir: str) -> None:
    st.subheader("Sparse probing")
    if p is None:
        st.caption(f"Not run. `saekit eval {sae_dir} --probing` adds it.")
        return
    ks = p.get("ks") or []
    rows = [{"task": t["name"], "train / test docs": f"{t['n_train']} / {t['n_test']}",
             "residual": t["residual_accuracy"], **{f"k={k}": a for k, a in zip(ks, t["sae_accuracy"], strict=True)},
             "all latents": t["sae_all_accuracy"], "k=1 latent": (t["latents"][0] or [None])[0]}
            for t in p.get("tasks") or []]
    rows.append({"task": "mean", "train / test docs": "", "residual": p["mean_residual_accuracy"],
                 **{f"k={k}": a for k, a in zip(ks, p["mean_sae_accuracy"], strict=True)},
                 "all latents": p["mean_sae_all_accuracy"], "k=1 latent": None})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption(f"Held-out accuracy of logistic-regression probes on mean-pooled documents "
               f"({p['n_documents']} builtin-corpus documents, first {p['max_tokens']} tokens; train and test "
               f"documents disjoint): the k latents with the largest class-mean difference vs the raw residual.")


def absorption_section(a: dict[str, Any] | None, sae_dir: str) -> None:
    st.subheader("Feature absorption (first letter)")
    if a is None:
        st.caption(f"Not run. `saekit eval {sae_dir} --absorption` adds it.")
        return
    c = st.columns(4)
    c[0].metric("absorption rate", _fmt(a["mean_absorption_rate"], ".3f"),
                help="mean over letters; lower is better")
    c[1].metric("95% interval", f"{_fmt(a['ci_low'], '.3f')} – {_fmt(a['ci_high'], '.3f')}")
    c[2].metric("absorption fraction", _fmt(a["mean_absorption_fraction"], ".3f"))
    c[3].metric("main latents per letter", _fmt(a["mean_main_latents"], ".2f"))
    st.caption(f"{a['n_test_words']} held-out words of {a['n_words']}; letter probe accuracy "
               f"{_fmt(a['probe_test_accuracy'], '.3f')}; prompt `{a['prompt_template']}`.")
    letters = pd.DataFrame(a.get("per_letter") or [])
    if len(letters):
        st.bar_chart(letters.set_index("letter")["absorption_rate"], height=220)
        st.dataframe(letters, hide_index=True, width="stretch")


db = resources.require_db()
st.title("Evaluation")
sae_dir = str(db.meta.get("sae_path") or "SAE_DIR")
path = Path(sae_dir) / "eval.json"
if not path.exists():
    st.info(f"No evaluation at `{path}`. Write one with `saekit eval {sae_dir}` (add `--probing --absorption "
            f"--density-tokens 500000` for the quality evaluations).")
    st.stop()
try:
    doc = sae.load_eval(path)
except (ValueError, FileNotFoundError) as e:
    st.error(f"{e}")
    st.stop()
st.caption(f"`{path}` · schema version {doc.get('schema_version')} · {doc.get('seconds', 0):.0f} s")
headline(doc)
probing_section(doc.get("sparse_probing"), sae_dir)
absorption_section(doc.get("absorption"), sae_dir)
