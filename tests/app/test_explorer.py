"""Every explorer page through Streamlit's AppTest, including missing, corrupt and mismatched databases."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import sae
from app.explorer import resources
from sae.features.demo_db import build_demo_db, random_sae

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "explorer" / "main.py")
PAGES = ["views/features.py", "views/feature.py", "views/live.py", "views/playground.py", "views/evaluation.py"]


@pytest.fixture(scope="module")
def demo(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("explorer")
    db_path, sae_dir = build_demo_db(out, model, d_sae=256, layer=2, n_tokens=1024, context_size=64)
    resources.preload(model=model)  # the pages would load the same model by name; reuse the session's
    return db_path, sae_dir


_SHARED: dict = {}


def _new_app(timeout: float = 120) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=timeout)
    # Each AppTest scans every installed package for Streamlit components on its first run (~1 s);
    # they are the same for all of ours. (Harmless if a Streamlit version drops this attribute.)
    if _SHARED.get("components") is not None:
        at._bidi_component_manager = _SHARED["components"]
    return at


def _app(db_path, monkeypatch, page: str | None = None, **params) -> AppTest:
    monkeypatch.setenv("SAEKIT_DB", str(db_path))
    at = _new_app()
    if page:
        at.switch_page(page)
    for k, v in params.items():
        at.query_params[k] = str(v)
    at.run()
    _SHARED.setdefault("components", getattr(at, "_bidi_component_manager", None))
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _html(at: AppTest) -> str:
    return "".join(h.value for h in at.get("html"))


def test_feature_list_filters_and_search(demo, monkeypatch):
    db = sae.FeatureDB(demo[0])
    at = _app(demo[0], monkeypatch)
    _ok(at)
    assert at.title[0].value == "Features"
    assert len(at.dataframe) == 1
    n_live = int((~db.summaries()["dead"]).sum())
    assert any(f"{n_live} of 256 latents shown" in c.value for c in at.caption)
    at.checkbox[0].check().run()  # show dead latents too
    assert any("256 of 256 latents shown" in c.value for c in at.caption)
    at.selectbox[0].set_value("density ↓").run()
    _ok(at)
    token = db.feature(5).top_logits[0][1]
    at.text_input(key="q_logit").set_value(token).run()
    _ok(at)
    assert any("latents promote" in m.value for m in at.markdown)
    at.text_input(key="q_text").set_value("Eiffel").run()
    _ok(at)
    assert any("in their examples" in m.value for m in at.markdown)


def test_deep_link_from_root_redirects_to_the_feature_page(demo, monkeypatch):
    at = _app(demo[0], monkeypatch, feature=7)
    _ok(at)
    assert at.title[0].value == "Feature 7"


def test_feature_page(demo, monkeypatch):
    db = sae.FeatureDB(demo[0])
    i = int(db.summaries()["density"].argmax())
    f = db.feature(i)
    at = _app(demo[0], monkeypatch, "views/feature.py", feature=i)
    _ok(at)
    assert at.title[0].value == f"Feature {i}"
    html = _html(at)
    spans = re.findall(r'<span class="saekit-tok[^"]*" data-act="([^"]+)" title="activation ([0-9.]+)[^"]*" '
                       r'style="[^"]*background-color:rgba\(255,110,0,([0-9.]+)\)', html)
    assert len(spans) >= sum(len(e.tokens) for e in f.top_examples)
    for _, act, alpha in spans:  # colour proportional to activation / max activation
        assert float(alpha) == pytest.approx(min(1.0, float(act) / f.max_act), abs=2e-3)
    assert max(float(a) for _, _, a in spans) == pytest.approx(1.0)
    assert len(at.get("plotly_chart")) == 2
    labels = [p.proto.label for p in at.get("page_link")]
    assert sum(lab.startswith("#") and "cos" in lab for lab in labels) == 10
    at.button(key="next").click().run()
    _ok(at)
    assert at.title[0].value == f"Feature {i + 1}"


def test_dead_and_bad_feature_numbers(demo, monkeypatch):
    at = _app(demo[0], monkeypatch, "views/feature.py", feature=0)
    _ok(at)
    assert "never fired" in at.warning[0].value
    for bad, msg in ((999, "does not exist"), ("abc", "not a feature number")):
        at = _app(demo[0], monkeypatch, "views/feature.py", feature=bad)
        assert not at.exception
        assert msg in at.error[0].value


def test_live_text(demo, monkeypatch):
    at = _app(demo[0], monkeypatch, "views/live.py", feature=5)
    _ok(at)
    at.text_area(key="live_text").set_value("def add(a, b): return a + b").run()
    _ok(at)
    html = _html(at)
    assert "saekit-skip" in html and "add" in html  # BOS shown as not encoded, the text's tokens highlighted
    assert len(at.dataframe) == 2  # top features per token; what drives the next token
    drivers = at.dataframe[1].value
    assert len(drivers) == 10 and (drivers["effect of ablating"] != 0).all()
    assert not (drivers["pos"] == 0).any()  # BOS is not spliced, so never a driver
    at.text_input(key="live_target").set_value(" sum").run()
    _ok(at)
    assert any("' sum'" in m.value for m in at.markdown)


def test_steering_playground(demo, monkeypatch):
    at = _app(demo[0], monkeypatch, "views/playground.py", feature=5)
    _ok(at)
    at.slider(key="max_new").set_value(8)
    at.number_input(key="s0").set_value(20.0)
    at.button(key="generate").click().run()
    _ok(at)
    texts = [t.value for t in at.text]
    assert len(texts) == 2 and all(texts)
    assert any("5:clamp(20xmax)" in c.value for c in at.caption)


def test_evaluation_page(demo, monkeypatch):
    from sae.eval_metrics import AbsorptionMetrics, SparseProbingMetrics

    sae_dir = demo[1]
    out = sae_dir / "eval.json"
    out.unlink(missing_ok=True)
    at = _app(demo[0], monkeypatch, "views/evaluation.py")
    _ok(at)
    assert "No evaluation at" in at.info[0].value and f"saekit eval {sae_dir}" in at.info[0].value
    try:
        res = sae.evaluate(random_sae(), cfg=sae.EvalConfig(ce_batches=0, save_png=False), acts=torch.randn(64, 576))
        res.sparse_probing = SparseProbingMetrics(
            n_documents=40, max_tokens=16, ks=[1, 2, 5], mean_residual_accuracy=0.9,
            mean_sae_accuracy=[0.6, 0.7, 0.8], mean_sae_all_accuracy=0.85,
            tasks=[{"name": "format=chat", "n_train": 28, "n_test": 12, "residual_accuracy": 0.9,
                    "sae_accuracy": [0.6, 0.7, 0.8], "sae_all_accuracy": 0.85, "latents": [[3], [3, 4], [3, 4, 5, 6, 7]]}])
        res.absorption = AbsorptionMetrics(
            prompt_template="{word} has the first letter:", n_words=40, n_train_words=28, n_test_words=12,
            probe_test_accuracy=0.95, n_letters=2, mean_absorption_rate=0.25, ci_low=0.1, ci_high=0.4,
            mean_absorption_fraction=0.3, mean_main_latents=1.5,
            per_letter=[{"letter": "a", "n_true_positives": 6, "n_absorbed": 1, "absorption_rate": 1 / 6,
                         "absorption_fraction": 0.2, "main_latents": [9]},
                        {"letter": "b", "n_true_positives": 6, "n_absorbed": 2, "absorption_rate": 1 / 3,
                         "absorption_fraction": 0.4, "main_latents": [10, 11]}])
        res.save(out)
        at = _app(demo[0], monkeypatch, "views/evaluation.py")
        _ok(at)
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["absorption rate"] == "0.250" and metrics["95% interval"] == "0.100 – 0.400"
        assert metrics["FVU"] == f"{res.reconstruction.fvu:.4f}"
        probing = at.dataframe[0].value
        assert list(probing["task"]) == ["format=chat", "mean"] and list(probing["k=2"]) == [0.7, 0.7]
        assert list(at.dataframe[1].value["letter"]) == ["a", "b"]
        doc = json.loads(out.read_text())  # a schema-1 file: no quality groups, the page says how to add them
        for group in ("sparse_probing", "absorption", "schema"):
            doc.pop(group)
        out.write_text(json.dumps({**doc, "schema_version": 1}))
        at = _app(demo[0], monkeypatch, "views/evaluation.py")
        _ok(at)
        assert any("--probing" in c.value for c in at.caption) and any("--absorption" in c.value for c in at.caption)
        out.write_text("{ not json")
        at = _app(demo[0], monkeypatch, "views/evaluation.py")
        assert not at.exception and at.error and "saekit eval" in at.error[0].value
    finally:
        out.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def bad_dbs(demo, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    junk = d / "junk.sqlite"
    junk.write_bytes(b"\x00garbage" * 100)
    old = d / "old.sqlite"
    old.write_bytes(demo[0].read_bytes())
    con = sqlite3.connect(old)
    con.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    return {"missing": (d / "missing.sqlite", "No feature database"),
            "junk": (junk, "not a SQLite file"),
            "old schema": (old, "schema version 0")}


@pytest.mark.parametrize("page", PAGES)
def test_bad_databases_show_an_error_not_a_traceback(bad_dbs, monkeypatch, page):
    for path, msg in bad_dbs.values():
        at = _app(path, monkeypatch, page, feature=1)
        assert not at.exception
        assert at.error and msg in at.error[0].value and "saekit analyze" in at.error[0].value


def test_no_database_chosen(monkeypatch):
    monkeypatch.delenv("SAEKIT_DB", raising=False)
    at = _new_app(60).run()
    assert not at.exception
    assert "No feature database chosen" in at.error[0].value


@pytest.mark.parametrize("page", ["views/live.py", "views/playground.py"])
def test_mismatched_or_missing_sae(demo, tmp_path, monkeypatch, page):
    other = sae.save_sae(random_sae(seed=1), tmp_path / "other_sae")  # same shape, other weights
    swapped = tmp_path / "swapped.sqlite"
    swapped.write_bytes(demo[0].read_bytes())
    con = sqlite3.connect(swapped)
    con.execute("UPDATE meta SET value = ? WHERE key = 'sae_path'", (json.dumps(str(other)),))
    con.commit()
    con.close()
    at = _app(swapped, monkeypatch, page)
    assert not at.exception
    assert "has changed" in at.error[0].value

    gone = tmp_path / "gone.sqlite"
    gone.write_bytes(demo[0].read_bytes())
    con = sqlite3.connect(gone)
    con.execute("UPDATE meta SET value = ? WHERE key = 'sae_path'", (json.dumps(str(tmp_path / "nowhere")),))
    con.commit()
    con.close()
    at = _app(gone, monkeypatch, page)
    assert not at.exception
    assert "is not at" in at.error[0].value

    import types

    import torch

    tiny = types.SimpleNamespace(hook_dict={}, cfg=types.SimpleNamespace(n_layers=2, d_model=64),
                                 parameters=lambda: iter([torch.zeros(1)]))
    resources.preload(model=tiny, model_name="tiny-other-model")
    other_model = tmp_path / "other_model.sqlite"
    other_model.write_bytes(demo[0].read_bytes())
    con = sqlite3.connect(other_model)
    con.execute("UPDATE meta SET value = ? WHERE key = 'model_name'", (json.dumps("tiny-other-model"),))
    con.commit()
    con.close()
    at = _app(other_model, monkeypatch, page)
    assert not at.exception
    assert "Model/SAE mismatch" in at.error[0].value and "blocks.2.hook_resid_post" in at.error[0].value


def test_explore_command_line(demo):
    import argparse

    from app.commands.explore import command

    cmd = command(argparse.Namespace(db=str(demo[0]), port=8600, address="localhost", no_browser=True))
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("main.py")
    assert cmd[-2:] == ["--db", str(demo[0].resolve())] and "8600" in cmd


def test_explanations_on_the_feature_page_and_search(demo, tmp_path, monkeypatch):
    import shutil

    from sae.autointerp.results_table import open_for_write, save_result

    path = tmp_path / "explained.sqlite"
    shutil.copy(demo[0], path)
    con = open_for_write(path)
    save_result(con, dict(feature=7, run_key="k", explainer="embedded:smollm2-135m-instruct", judge="j",
                          explanation="Eiffel Tower and **Paris**", detection=0.75, fuzzing=0.6, detection_auc=0.8,
                          fuzzing_auc=None, n_detection=20, n_fuzzing=20, n_unparsable=1, seconds=3.0,
                          config={"explainer_weak": True}))
    con.close()
    at = _app(path, monkeypatch, "views/feature.py", feature=7)
    _ok(at)
    [box] = at.info
    assert "Eiffel Tower and" in box.value and "detection 0.75 (AUC 0.80)" in box.value and "weak" in box.value
    assert "1 unparsable" in box.value
    at = _app(path, monkeypatch)
    at.text_input(key="q_expl").set_value("eiffel").run()
    _ok(at)
    assert any("explanations mention 'eiffel'" in m.value for m in at.markdown)
    at.text_input(key="q_expl").set_value("zebra").run()
    assert any("No explanation contains 'zebra'" in m.value for m in at.markdown)
    at = _app(demo[0], monkeypatch)  # a database with no explanations says how to make them
    at.text_input(key="q_expl").set_value("eiffel").run()
    _ok(at)
    assert any("saekit autointerp --db" in m.value for m in at.markdown)
