"""Autointerp (`sae/autointerp/`): judges scored against known answers, the OpenAI client against a
local fake server, and a real run of the embedded model on a small feature database (stored,
resumed, an old schema-1 database upgraded, the CLI)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

import sae
from sae.autointerp import (
    AutointerpConfig,
    LocalClient,
    OpenAIClient,
    parse_yes_no,
    pick_features,
    score_explanation,
)
from sae.autointerp.clients import AutointerpError
from sae.autointerp.excerpts import clean_explanation, mark
from sae.autointerp.samples import FeatureSamples, Window, fuzzed
from sae.features.demo_db import build_demo_db

# ---------------------------------------------------------------------- judges with known answers


def _samples(n: int = 6) -> FeatureSamples:
    pos = [Window(["The", " Eiffel", " Tower", f" {k}"], [False, True, True, False], [1, 2, 3, 4]) for k in range(n)]
    neg = [Window(["Some", " soup", f" {k}"], [False, False, False], [5, 6, 7]) for k in range(n)]
    return FeatureSamples([], pos, neg)


class Scripted:
    """A judge that answers by a rule over the prompt's excerpt (free text, or probabilities)."""

    id, weak, takes_prefix = "scripted", False, False

    def __init__(self, rule, probs: bool = False) -> None:
        self.rule, self.probs, self.asked = rule, probs, 0

    def _excerpt(self, messages) -> str:
        return messages[-1]["content"].split("Excerpt: ", 1)[-1]

    def generate(self, messages, *, max_new_tokens: int = 48, prefix: str = "") -> str:
        self.asked += 1
        return self.rule(self._excerpt(messages))

    def yes_probability(self, prompts):
        if not self.probs:
            return None
        return [float(self.rule(self._excerpt(m))) for m in prompts]


def _perfect(excerpt: str) -> str:
    # detection: yes on the Eiffel texts; fuzzing: yes only where the marks sit on "Eiffel Tower"
    if "<<" in excerpt:
        return "Yes" if "<<Eiffel Tower>>" in excerpt else "No."
    return "Yes, it is." if "Eiffel" in excerpt else "no"


def test_perfect_judge_scores_one_and_always_yes_scores_one_half():
    s = _samples()
    perfect = score_explanation(Scripted(_perfect), "the Eiffel Tower", s)
    assert perfect.detection.accuracy == 1.0 and perfect.fuzzing.accuracy == 1.0
    assert perfect.detection.n == 12 and perfect.fuzzing.n == 12 and perfect.detection.n_unparsable == 0
    yes = score_explanation(Scripted(lambda e: "Yes"), "the Eiffel Tower", s)
    assert yes.detection.accuracy == 0.5 and yes.fuzzing.accuracy == 0.5
    assert yes.detection.hit_rate == 1.0 and yes.detection.reject_rate == 0.0
    inverted = score_explanation(Scripted(lambda e: "No" if _perfect(e).startswith("Y") else "Yes"), "x", s)
    assert inverted.detection.accuracy == 0.0


def test_unparsable_answers_count_as_wrong_and_are_counted():
    s = _samples()
    babble = score_explanation(Scripted(lambda e: "I think the excerpt is about towers"), "x", s)
    assert babble.detection.n_unparsable == 12 and babble.fuzzing.n_unparsable == 12
    assert babble.detection.accuracy == 0.0  # never skipped: a judge that cannot answer scores nothing
    half = score_explanation(Scripted(lambda e: _perfect(e) if "Eiffel" in e else "hmm"), "x", s)
    assert half.detection.n_unparsable == 6 and half.detection.accuracy == 0.5


def test_probability_judges_are_calibrated_at_the_median():
    s = _samples()
    perfect = score_explanation(Scripted(lambda e: _perfect(e).startswith("Y"), probs=True), "x", s)
    assert perfect.detection.accuracy == 1.0 and perfect.detection.auc == 1.0 and perfect.fuzzing.auc == 1.0
    constant = score_explanation(Scripted(lambda e: True, probs=True), "x", s)  # always "Yes", with certainty
    assert constant.detection.accuracy == 0.5 and constant.detection.auc == 0.5


@pytest.mark.parametrize("text, answer", [
    ("Yes", True), (" no.", False), ("**Yes**, the feature fires", True), ("1", True), ("0", False),
    ("No, it is not active", False), ("The feature is not active here.", False), ("Active.", True),
    ("", None), ("Maybe", None), ("I cannot tell", None), ("Nothing here", None),
])
def test_parse_yes_no(text, answer):
    assert parse_yes_no(text) is answer


def test_marks_and_explanations():
    assert mark([" the", " Golden", " Gate", " Bridge", "\n"], [False, True, True, False, False]) == "the <<Golden Gate>> Bridge\\n"
    assert clean_explanation("The marked words are \"numbers\". They also ...\nmore") == "numbers"
    w = Window(["a", " b", " c", " d", " e"], [False, True, False, False, False], [1, 2, 3, 4, 5])
    import random

    f = fuzzed(w, random.Random(0))
    assert sum(f.active) == 1 and not f.active[1]


# ---------------------------------------------------------------------- OpenAI-compatible endpoint


@pytest.fixture
def fake_endpoint():
    seen: list[dict] = []
    replies = iter([(500, {"error": "warming up"})])  # first call fails: the client retries

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            code, data = next(replies, (200, None))
            if data is None:
                answer = "Yes" if "Eiffel" in body["messages"][-1]["content"].split("Excerpt:")[-1] else "No"
                data = {"choices": [{"message": {"role": "assistant", "content": answer}}]}
            if body["model"] == "refused":
                code, data = 401, {"error": {"message": "bad key"}}
            raw = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1", seen
    server.shutdown()


def test_openai_client_against_a_local_server(fake_endpoint, monkeypatch):
    url, seen = fake_endpoint
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_MODEL", "tiny-judge")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    client = sae.make_client("openai")
    assert isinstance(client, OpenAIClient) and client.id == f"openai:tiny-judge@{url}"
    sc = score_explanation(client, "the Eiffel Tower", _samples(3))
    assert sc.detection.accuracy == 1.0 and sc.detection.auc is None and sc.detection.n_unparsable == 0
    assert seen[0]["path"] == "/v1/chat/completions" and seen[0]["auth"] == "Bearer sk-test"
    assert seen[0]["body"]["model"] == "tiny-judge" and seen[0]["body"]["temperature"] == 0
    assert len(seen) == 1 + 6 + 6  # the 500 was retried once
    with pytest.raises(AutointerpError, match="HTTP 401.*OPENAI_MODEL"):
        OpenAIClient(url, "refused", retries=0).generate([{"role": "user", "content": "hi"}])


def test_openai_client_names_what_is_missing(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_MODEL", "m")
    with pytest.raises(AutointerpError, match="needs OPENAI_BASE_URL: export"):
        sae.make_client("openai")
    with pytest.raises(AutointerpError, match="not an http"):
        OpenAIClient("localhost:8000", "m")
    with pytest.raises(AutointerpError, match="cannot use http://127.0.0.1:9/v1"):
        OpenAIClient("http://127.0.0.1:9/v1", "m", retries=0).generate([{"role": "user", "content": "hi"}])
    with pytest.raises(AutointerpError, match="is not `embedded`, `openai`"):
        sae.make_client("no/such/model")


# ---------------------------------------------------------------------- the embedded model, for real

CFG = dict(n_score=4)


@pytest.fixture(scope="module")
def demo(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("autointerp")
    db_path, sae_dir = build_demo_db(out, model, d_sae=256, layer=2, n_tokens=2048, context_size=64)
    return db_path, sae_dir


def _as_schema_1(src, dst):
    """A copy of `src` as `saekit analyze` wrote it before schema 2 (no `explanations`, version 1)."""
    shutil.copy(src, dst)
    con = sqlite3.connect(dst)
    con.execute("DROP TABLE IF EXISTS explanations")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.commit()
    con.close()


def test_embedded_run_stores_resumes_and_upgrades_a_schema_1_db(model, demo, tmp_path):
    path = tmp_path / "old.sqlite"
    _as_schema_1(demo[0], path)
    db = sae.FeatureDB(path)  # version 1 opens, read-only, with no explanations
    assert db.meta["schema_version"] == 1 and db.explanations(3) == [] and db.search_explanations("a") == []
    db.close()
    client = LocalClient.embedded(model)
    check = sae.inactive_check(model, sae.load_sae(demo[1]))
    feats = pick_features(sae.FeatureDB(path), None, 2, seed=0)
    run = sae.run_autointerp(path, client, features=feats, cfg=AutointerpConfig(**CFG), check=check, progress=False)
    assert [r.feature for r in run.results] == feats and any("weak" in n for n in run.notes)
    db = sae.FeatureDB(path)
    assert db.meta["schema_version"] == 2
    for r in run.results:
        assert r.explanation.strip() and not r.explanation.startswith("(no explanation")
        assert 0 <= r.detection <= 1 and 0 <= r.fuzzing <= 1 and 0 <= r.detection_auc <= 1
        assert r.n_detection == 8 and r.n_fuzzing == 8 and r.n_unparsable == 0
        [stored] = db.explanations(r.feature)
        assert stored.explanation == r.explanation and stored.detection == r.detection
        assert stored.explainer == "embedded:smollm2-135m-instruct" and stored.config["negatives_checked"]
        word = max(r.explanation.split(), key=len)
        assert r.feature in {e.feature for e in db.search_explanations(word.upper())}
    again = sae.run_autointerp(path, client, features=feats, cfg=AutointerpConfig(**CFG), check=check, progress=False)
    assert again.results == [] and again.skipped == feats
    other = AutointerpConfig(**CFG, seed=1).run_key(client.id, client.id, True)
    assert other != run.run_key  # other settings are another run, stored beside this one


def test_cli(model, demo, tmp_path, monkeypatch, capsys):
    from app.cli import main

    monkeypatch.setattr(sae, "load_model", lambda *a, **k: model)
    path = tmp_path / "cli.sqlite"
    shutil.copy(demo[0], path)
    assert main(["autointerp", "--db", str(path), "--features", "1,x"]) == 2
    assert "--features '1,x' is not a comma-separated list" in capsys.readouterr().err
    assert main(["autointerp", "--db", str(path), "--features", "0"]) == 2  # the demo SAE's latent 0 is dead
    assert "never fired" in capsys.readouterr().err
    monkeypatch.setenv("OPENAI_BASE_URL", "")
    assert main(["autointerp", "--db", str(path), "--features", "5", "--explainer", "openai", "--no-check"]) == 2
    assert "needs OPENAI_BASE_URL" in capsys.readouterr().err
    # the command's own work (parse, check negatives, run, print, resume) with a scripted model: the
    # embedded model's run is the test above
    fake = Scripted(lambda e: "Yes" if "<<" not in e else "No")
    fake.weak, fake.id = True, "embedded:smollm2-135m-instruct"
    monkeypatch.setattr(sae, "make_client", lambda spec, **k: fake)
    feat = pick_features(sae.FeatureDB(path), None, 1, seed=3)[0]
    assert main(["autointerp", "--db", str(path), "--features", str(feat), "--n-score", "4"]) == 0
    out = capsys.readouterr().out
    assert "weak" in out and f"#{feat}: detection 0.50, fuzzing 0.50" in out and "1 features explained" in out
    [stored] = sae.FeatureDB(path).explanations(feat)
    assert stored.config["negatives_checked"] and stored.n_detection == 8
    assert main(["autointerp", "--db", str(path), "--features", str(feat), "--n-score", "4"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_shared_prefix_gives_the_same_probabilities(model):
    from sae.autointerp.excerpts import detection_messages

    client = LocalClient.embedded(model)
    prompts = [detection_messages("numbers", t) for t in ("There were 29 battles", "Some soup, please.", "x")]
    shared = client.yes_probability(prompts)
    client.share_prefix = False
    full = client.yes_probability(prompts)
    assert shared == pytest.approx(full, abs=1e-4) and len(set(shared)) == 3
    import torch  # and both equal a plain forward of each prompt alone, read at its last position

    for m, p in zip(prompts, shared, strict=True):
        ids = torch.tensor([client.tokenizer(client._render(m), add_special_tokens=False).input_ids])
        with torch.no_grad():
            logp = torch.log_softmax(client.model(input_ids=ids).logits[0, -1].float(), dim=-1)
        direct = torch.sigmoid(logp[client._yes].logsumexp(0) - logp[client._no].logsumexp(0))
        assert p == pytest.approx(float(direct), abs=1e-4)


def test_a_gguf_file_is_a_client_equal_to_the_embedded_model(model, tmp_path):
    """A .gguf path (a model shipped in a PyPI package, as the embedded one is) loads as a judge."""
    from sae.embedded import find_gguf

    from_file = sae.make_client(str(find_gguf()))
    prompts = [[{"role": "user", "content": f"Is {w} a colour? Answer yes or no."}] for w in ("red", "soup")]
    assert from_file.id == "gguf:SmolLM2-135M-Instruct.Q4_1.gguf"
    assert from_file.yes_probability(prompts) == pytest.approx(LocalClient.embedded(model).yes_probability(prompts),
                                                                abs=1e-4)
    with pytest.raises(AutointerpError, match="does not exist"):
        sae.make_client(str(tmp_path / "missing.gguf"))
