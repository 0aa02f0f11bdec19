"""The Neuronpedia export (`sae/features/neuronpedia_export.py`): every file valid under plain jsonschema
against the shipped schema, the values equal to the feature DB's, the schema not vacuous (broken
batches fail it), the fast path in `neuronpedia_validate.py` never passing what jsonschema rejects,
and the bad inputs."""

from __future__ import annotations

import copy
import json
import shutil
import sqlite3

import pytest
from jsonschema import Draft202012Validator

import sae
from sae.features.db import FeatureDB, FeatureDBError
from sae.features.demo_db import build_demo_db
from sae.features.neuronpedia_validate import NeuronpediaExportError, _prover, load_schema, validate

KINDS = {"batch-": "dashboardBatch", "upload-batch-": "uploadBatch", "skipped_indexes": "skippedIndexes",
         "run_settings": "runSettings"}
EXPLAINED = "the Eiffel Tower"


class Scripted:
    """An explainer/judge that always says the same: enough to store real explanation rows."""

    id, weak, takes_prefix = "scripted:test", False, False

    def generate(self, messages, *, max_new_tokens: int = 48, prefix: str = "") -> str:
        return "Yes" if "Excerpt: " in messages[-1]["content"] else EXPLAINED

    def yes_probability(self, prompts):
        return None


def _kind(name: str) -> str:
    return next(k for p, k in sorted(KINDS.items(), key=lambda kv: -len(kv[0])) if name.startswith(p))


def _plain(kind: str) -> Draft202012Validator:
    """jsonschema on its own (not saekit's faster `items`): the independent check."""
    return Draft202012Validator({**load_schema(), "$ref": f"#/$defs/{kind}"})


@pytest.fixture(scope="module")
def demo(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("neuronpedia")
    db_path, _ = build_demo_db(out, model, d_sae=64, layer=2, n_tokens=1024, context_size=64)
    with FeatureDB(db_path) as db:
        busiest = sorted(range(64), key=lambda i: -db.summary(i).n_fired)[:2]  # enough windows to score
    sae.run_autointerp(db_path, Scripted(), features=busiest, cfg=sae.AutointerpConfig(n_score=2), progress=False)
    files = sae.export_neuronpedia(db_path, out / "np", batch_size=25)
    return db_path, out / "np", files, busiest


def _load(folder, name):
    return json.loads((folder / name).read_text())


def test_every_file_matches_the_schema_and_the_db(demo):
    db_path, folder, files, explained = demo
    settings = _load(folder, "run_settings.json")
    assert sorted(p.name for p in folder.iterdir()) == sorted(settings["saekit"]["files"] + ["run_settings.json"])
    assert sorted(p.name for p in files) == sorted(p.name for p in folder.iterdir())
    for p in folder.iterdir():
        errors = list(_plain(_kind(p.name)).iter_errors(json.loads(p.read_text())))
        assert errors == [], (p.name, errors[:1])
    assert settings["saekit"]["complete"] and settings["layer"] == 2 and settings["n_features_at_a_time"] == 25
    batches = [_load(folder, f"batch-{n}.json") for n in range(3)]
    uploads = [_load(folder, f"upload-batch-{n}.json") for n in range(3)]
    assert [len(b["features"]) for b in batches] == [25, 25, 14] and not (folder / "batch-3.json").exists()
    dash = {f["feature_index"]: f for b in batches for f in b["features"]}
    up = {f["index"]: f for b in uploads for f in b["features"]}
    assert sorted(dash) == sorted(up) == list(range(64))
    assert _load(folder, "skipped_indexes.json")["skipped_indexes"] == []
    assert uploads[0]["source"] == f"2-{batches[0]['sae_set']}" and batches[0]["model_id"] == "smollm2-135m-instruct"

    db = FeatureDB(db_path)
    i = max(range(64), key=lambda j: db.summary(j).n_fired)
    f, d, u = db.feature(i), dash[i], up[i]
    top = f.top_examples[0]
    first = d["activations"][0]
    assert first["tokens"] == top.tokens and first["qualifying_token_index"] == top.center
    assert first["values"] == pytest.approx(top.acts, rel=1e-5, abs=1e-9)
    assert (first["bin_min"], first["bin_contains"]) == (-1, -1) and first["bin_max"] == pytest.approx(f.max_act, rel=1e-5)
    n_interval = sum(len(iv.examples) for iv in f.intervals)
    assert len(d["activations"]) == len(u["activations"]) == len(f.top_examples) + n_interval
    last_iv = next(iv for iv in f.intervals if iv.examples)  # the lowest interval is exported last
    tail = d["activations"][-1]
    assert tail["tokens"] == last_iv.examples[-1].tokens and tail["bin_min"] == pytest.approx(last_iv.lo, abs=1e-6)
    assert tail["bin_contains"] == pytest.approx(last_iv.n_events / db.meta["n_tokens"], rel=1e-5)
    assert u["activations"][-1]["quantileFraction"] == tail["bin_contains"] and u["activations"][0]["quantileMax"] is None
    assert d["freq_hist_data_bar_heights"] == f.hist_counts and sum(d["freq_hist_data_bar_heights"]) == f.n_fired
    assert d["freq_hist_data_bar_values"][0] == pytest.approx((f.hist_edges[0] + f.hist_edges[1]) / 2, rel=1e-5)
    assert d["logits_hist_data_bar_heights"] == f.logit_counts and len(d["logits_hist_data_bar_values"]) == len(f.logit_counts)
    assert d["pos_str"] == [t for _, t, _ in f.top_logits] == [x["token"] for x in u["topLogits"]]
    assert d["neg_values"] == pytest.approx([v for _, _, v in f.bottom_logits], rel=1e-5)
    assert d["frac_nonzero"] == pytest.approx(f.density, rel=1e-5) and u["density"] == d["frac_nonzero"]
    assert d["n_prompts_total"] == db.meta["n_rows"] and d["n_tokens_in_prompt"] == 64
    dead = dash[0]  # the demo SAE's latent 0 never fires: no windows, no histogram, but its logit lens
    assert dead["activations"] == [] and dead["freq_hist_data_bar_heights"] == [] and dead["frac_nonzero"] == 0
    assert len(dead["pos_str"]) == len(db.feature(0).top_logits) > 0
    for j in range(64):
        want = [{"text": e.explanation, "methodName": None, "modelName": "scripted:test"} for e in db.explanations(j)]
        assert up[j]["explanations"] == want
    assert [up[j]["explanations"][0]["text"] for j in explained] == [EXPLAINED] * 2
    assert "2 of them with explanations" in " ".join(settings["saekit"]["notes"])


def _broken(batch: dict, upload: dict) -> list[tuple[str, dict]]:
    """Batches each with one thing wrong that Neuronpedia's importer would trip on."""
    out = []

    def edit(kind, doc, fn):
        doc = copy.deepcopy(doc)
        fn(doc)
        out.append((kind, doc))

    edit("dashboardBatch", batch, lambda b: b["features"][0].pop("neg_str"))
    edit("dashboardBatch", batch, lambda b: b["features"][0]["activations"][0]["values"].__setitem__(1, "0.5"))
    edit("dashboardBatch", batch, lambda b: b["features"][0]["activations"][0]["tokens"].__setitem__(0, 7))
    edit("dashboardBatch", batch, lambda b: b["features"][0]["activations"][0].update(valeus=[1.0]))
    edit("dashboardBatch", batch, lambda b: b["features"][0]["activations"][0].update(values=[]))
    edit("dashboardBatch", batch, lambda b: b["features"][1].update(frac_nonzero=1.5))
    edit("dashboardBatch", batch, lambda b: b.update(layer="2"))
    edit("dashboardBatch", batch, lambda b: b.update(features=[]))
    edit("dashboardBatch", batch, lambda b: b.update(sae_set="no spaces"))
    edit("dashboardBatch", batch, lambda b: b.pop("sae_id_suffix"))
    edit("uploadBatch", upload, lambda b: b["features"][0]["activations"][-1].update(quantileFraction=-1))
    edit("uploadBatch", upload, lambda b: b["features"][0].update(topLogits=[{"token": "a"}]))
    edit("uploadBatch", upload, lambda b: b["features"][0].update(explanations=[{"text": ""}]))
    edit("uploadBatch", upload, lambda b: b.update(features=[dict(b["features"][0], activations=[])] * 129))
    edit("uploadBatch", upload, lambda b: b["features"][0].update(density=True))
    return out


def test_schema_rejects_broken_batches_and_the_fast_path_agrees(demo):
    _, folder, _, _ = demo
    batch, upload = _load(folder, "batch-0.json"), _load(folder, "upload-batch-0.json")
    live = [k for k, f in enumerate(batch["features"]) if f["activations"]][:2]  # two with windows: small, fast
    batch["features"] = [batch["features"][k] for k in live]
    upload["features"] = [upload["features"][k] for k in live]
    for kind, doc in (("dashboardBatch", batch), ("uploadBatch", upload)):
        assert _prover({"$ref": f"#/$defs/{kind}"})(doc)  # the real files are proven valid (fast)
        validate(kind, doc)
    for n, (kind, doc) in enumerate(_broken(batch, upload)):
        assert list(_plain(kind).iter_errors(doc)), n  # the schema is not vacuous
        assert not _prover({"$ref": f"#/$defs/{kind}"})(doc), n  # never "proven" when jsonschema says no
        with pytest.raises(NeuronpediaExportError, match=f"does not match Neuronpedia's layout \\({kind}"):
            validate(kind, doc, "x.json")
    # equal lengths: beyond JSON Schema, checked beside it
    odd = copy.deepcopy(batch)
    odd["features"][0]["activations"][0]["tokens"].append("extra")
    assert not list(_plain("dashboardBatch").iter_errors(odd))
    with pytest.raises(NeuronpediaExportError, match="tokens but .* values"):
        validate("dashboardBatch", odd)
    odd = copy.deepcopy(batch)
    odd["features"][0]["pos_values"].pop()
    with pytest.raises(NeuronpediaExportError, match="pos_str and pos_values differ in length"):
        validate("dashboardBatch", odd)


def _copy_db(src, dst, *sql):
    shutil.copy(src, dst)
    con = sqlite3.connect(dst)
    for s in sql:
        con.execute(s)
    con.commit()
    con.close()
    return dst


def test_subsets_reruns_and_bad_inputs(demo, tmp_path):
    db_path = demo[0]
    out = tmp_path / "sub"
    files = sae.export_neuronpedia(db_path, out, sae_set="demo-set", features=[3, 1, 3])
    assert [f["feature_index"] for f in _load(out, "batch-0.json")["features"]] == [1, 3]
    skipped = _load(out, "skipped_indexes.json")
    assert skipped["skipped_indexes"] == [i for i in range(64) if i not in (1, 3)] and skipped["layer"] == "2"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert [p.name for p in sae.export_neuronpedia(db_path, out, sae_set="demo-set", features=[1, 3])] == [p.name for p in files]
    with pytest.raises(NeuronpediaExportError, match="another saekit export \\(different sae_set, features\\)"):
        sae.export_neuronpedia(db_path, out, features=[1, 2])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written over
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(NeuronpediaExportError, match="not a saekit Neuronpedia export; nothing was written"):
        sae.export_neuronpedia(db_path, tmp_path / "mine", features=[1])
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    with pytest.raises(NeuronpediaExportError, match="is a file"):
        sae.export_neuronpedia(db_path, tmp_path / "mine" / "notes.txt", features=[1])
    for kwargs, match in (({"features": [999]}, "features \\[999\\] do not exist.*0..63"),
                          ({"features": []}, "no features chosen"),
                          ({"batch_size": 129}, "outside 1..128"),
                          ({"model_id": "my model"}, "--model-id"),
                          ({"sae_set": "-x"}, "--sae-set")):
        with pytest.raises(NeuronpediaExportError, match=match):
            sae.export_neuronpedia(db_path, tmp_path / "new", **kwargs)
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())
    with pytest.raises(FeatureDBError, match="no feature database.*saekit analyze"):
        sae.export_neuronpedia(tmp_path / "missing.sqlite", tmp_path / "x")
    lacking = _copy_db(db_path, tmp_path / "lacking.sqlite", "DROP TABLE intervals")
    with pytest.raises(FeatureDBError, match="missing tables \\['intervals'\\]"):
        sae.export_neuronpedia(lacking, tmp_path / "x")
    no_layer = _copy_db(db_path, tmp_path / "nolayer.sqlite", "UPDATE meta SET value = '\"encoder.out\"' WHERE key = 'hook_name'")
    with pytest.raises(NeuronpediaExportError, match="no layer number.*--layer"):
        sae.export_neuronpedia(no_layer, tmp_path / "x", features=[1])
    sae.export_neuronpedia(no_layer, tmp_path / "x", features=[1], layer=7)
    assert _load(tmp_path / "x", "batch-0.json")["layer"] == 7
    old = _copy_db(db_path, tmp_path / "v1.sqlite", "DROP TABLE explanations",
                   "UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    sae.export_neuronpedia(old, tmp_path / "v1", features=[1, 2])
    assert any("schema 1" in n for n in _load(tmp_path / "v1", "run_settings.json")["saekit"]["notes"])
    assert all(f["explanations"] == [] for f in _load(tmp_path / "v1", "upload-batch-0.json")["features"])


def test_cli(demo, tmp_path, capsys):
    from app.cli import main

    db_path = str(demo[0])
    assert main(["neuronpedia", db_path, str(tmp_path / "a"), "--features", "1,x"]) == 2
    assert "--features '1,x' is not a comma-separated list" in capsys.readouterr().err
    assert main(["neuronpedia", db_path, str(tmp_path / "a"), "--features", "1,2", "--sae-set", "demo"]) == 0
    out = capsys.readouterr().out
    assert "wrote 4 files" in out and "source 2-demo" in out and "left empty" in out and "neuron_alignment" in out
    assert main(["neuronpedia", db_path, str(tmp_path / "a"), "--features", "1,2,3", "--sae-set", "demo"]) == 2
    assert "different features" in capsys.readouterr().err
