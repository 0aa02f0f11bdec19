"""What every explorer page shares: which database, the open database, the model and the SAE.

Heavy objects are loaded once per server process (`st.cache_resource`) and shared by all
sessions. Every failure becomes an `st.error` that says what is wrong and how to fix it, then
`st.stop()`: the pages never show a traceback.

The database path comes from, in order: the sidebar field (this session), `--db PATH` after
`--` on the streamlit command line (what `saekit explore DB` passes), or `SAEKIT_DB`.
Objects registered with `preload(...)` (a notebook's model, a test's SAE) are used instead of
loading from disk.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import streamlit as st

import sae

_PRELOADED: dict[tuple[str, str], Any] = {}


def preload(*, model: Any = None, model_name: str | None = None, sae_obj: Any = None, sae_path: str | None = None) -> None:
    """Make an already-loaded model (under `model_name`) or SAE (under `sae_path`) available to the pages."""
    if model is not None:
        _PRELOADED[("model", model_name or getattr(model, "saekit_name", "model"))] = model
    if sae_obj is not None:
        if sae_path is None:
            raise ValueError("preload(sae_obj=...) needs the sae_path the database records")
        _PRELOADED[("sae", str(sae_path))] = sae_obj


def _argv_db() -> str | None:
    argv = sys.argv[1:]
    for i, a in enumerate(argv):
        if a == "--db" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--db="):
            return a.split("=", 1)[1]
    return None


def db_path() -> str | None:
    return st.session_state.get("db_path") or _argv_db() or os.environ.get("SAEKIT_DB")


@st.cache_resource(show_spinner=False, max_entries=4)
def _open_db(path: str, mtime: float, size: int) -> sae.FeatureDB:
    # mtime/size are part of the cache key: a rebuilt database is reopened
    return sae.FeatureDB(path)


def open_db(path: str | None) -> tuple[sae.FeatureDB | None, str | None]:
    """(db, None) or (None, a message saying what is wrong and what to run)."""
    if not path:
        return None, ("No feature database chosen. Start the explorer with `saekit explore features.sqlite`, "
                      "or type a database path in the sidebar. Build one with `saekit analyze SAE_DIR --tokens 200000`.")
    p = Path(path).expanduser()
    try:
        st_ = p.stat()
        return _open_db(str(p), st_.st_mtime, st_.st_size), None
    except FileNotFoundError:
        return None, (f"No feature database at `{p}`. Build one with `saekit analyze SAE_DIR --tokens 200000 "
                      f"--out {p}`, or type another path in the sidebar.")
    except sae.FeatureDBError as e:
        return None, str(e)
    except Exception as e:  # never a traceback in the page
        return None, f"Could not open `{p}`: {type(e).__name__}: {e}"


def sidebar() -> None:
    """The database chooser and a summary of the open database."""
    current = db_path() or ""
    with st.sidebar:
        new = st.text_input("Feature database", value=current, key="db_input",
                            help="a .sqlite file written by `saekit analyze`")
        if new != current:
            st.session_state["db_path"] = new
            st.rerun()
        db, _ = open_db(current)
        if db is not None:
            m = db.meta
            st.caption(f"{db.n_features} latents · `{m.get('hook_name')}` · {m.get('model_name')} · "
                       f"{m.get('n_tokens'):,} tokens")


def require_db() -> sae.FeatureDB:
    """The open database, or an error box and the end of this page run."""
    db, err = open_db(db_path())
    if db is None:
        st.error(err)
        st.stop()
    return db


def feature_param(db: sae.FeatureDB, default: int = 0) -> int:
    """The `?feature=` query parameter, validated (an error box for a bad one)."""
    raw = st.query_params.get("feature")
    if raw is None:
        return default
    try:
        i = int(raw)
    except ValueError:
        st.error(f"`?feature={raw}` is not a feature number; use 0..{db.n_features - 1}.")
        st.stop()
    if not 0 <= i < db.n_features:
        st.error(f"Feature {i} does not exist: this database has features 0..{db.n_features - 1}.")
        st.stop()
    return i


@st.cache_resource(show_spinner="Loading the model...", max_entries=2)
def _load_model(name: str) -> Any:
    return sae.load_model(name)


@st.cache_resource(show_spinner="Loading the SAE...", max_entries=2)
def _load_sae(path: str, device: str) -> Any:
    return sae.load_sae(path, device=device)


def require_model_and_sae(db: sae.FeatureDB) -> tuple[Any, Any]:
    """The model and SAE the database was built from (loaded once), checked against the database."""
    name = db.meta.get("model_name") or "smollm2-135m-instruct"
    sae_path = str(db.meta.get("sae_path", ""))
    try:
        model = _PRELOADED.get(("model", name))
        if model is None:
            model = _load_model(name)
    except Exception as e:
        st.error(f"Could not load the model `{name}` this database was built with: {e}")
        st.stop()
    sae_obj = _PRELOADED.get(("sae", sae_path))
    if sae_obj is None:
        if not sae_path or not Path(sae_path).exists():
            st.error(f"The SAE this database was built from is not at `{sae_path}` any more. Move it back, or "
                     f"rebuild the database: `saekit analyze SAE_DIR --tokens 200000 --out {db.path}`.")
            st.stop()
        try:
            device = str(sae.model_device(model))
            sae_obj = _load_sae(sae_path, device)
        except Exception as e:
            st.error(f"Could not load the SAE at `{sae_path}`: {e}")
            st.stop()
    try:
        db.check_sae(sae_obj)
    except sae.FeatureDBError as e:
        st.error(str(e))
        st.stop()
    try:
        sae.validate_hook(model, sae_obj.cfg.hook_name)
        if int(model.cfg.d_model) != sae_obj.cfg.d_in and "resid" in sae_obj.cfg.hook_name:
            raise ValueError(f"`{name}` has d_model={model.cfg.d_model} but the SAE reads d_in={sae_obj.cfg.d_in}")
    except ValueError as e:  # HookError is a ValueError
        st.error(f"Model/SAE mismatch: {e}. Use the model the SAE was trained on, and rebuild the database: "
                 f"`saekit analyze SAE_DIR --tokens 200000 --out {db.path}`.")
        st.stop()
    return model, sae_obj
