"""`sae.hub`: push and pull SAEs with huggingface_hub's real client, against a stub of the Hub's HTTP API.

No network: `StubHub` is an `http.server` on 127.0.0.1 answering the endpoints huggingface_hub 2.x
calls (read from its source: hf_api.create_repo / upload_folder -> _upload_pipeline, _commit_api,
snapshot_download -> repo_info, list_repo_tree, hf_hub_download's HEAD + GET). Every file is
offered "regular" upload mode, so content travels base64 in the commit's ndjson (no LFS/xet).
The Hugging Face cache the offline tests read is written by snapshot_download itself, from the
stub, so its layout (refs, snapshots, blobs, tree listing) is the library's, not a hand-made copy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import huggingface_hub.constants as hf_constants
import pytest
import torch
import yaml
from safetensors.torch import load_file

import sae
from app.cli import main
from sae.eval_metrics import DownstreamMetrics, ReconstructionMetrics, SparsityMetrics
from sae.eval_result import EvalResult

TOKEN = "hf_stub_token"
REPO = "stub-org/smollm2-saes"
HOOK = "blocks.2.hook_resid_post"


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class StubHub(ThreadingHTTPServer):
    """The Hub's HTTP API, as much as pushing and downloading a model repository needs.
    `commits[sha]` is the full file tree at that commit; `refs["owner/name"]["main"]` its head."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.refs: dict[str, dict[str, str]] = {}
        self.private: dict[str, bool] = {}
        self.commits: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        self.lock = threading.Lock()

    def files(self, repo: str, rev: str = "main") -> dict[str, bytes]:
        return self.commits[self.refs[repo][rev]]

    def commit(self, repo: str, tree: dict[str, bytes], summary: str) -> str:
        sha = hashlib.sha1(json.dumps([repo, summary, len(self.commits)]).encode()).hexdigest()
        self.commits[sha] = tree
        self.refs[repo]["main"] = sha
        return sha


class _Handler(BaseHTTPRequestHandler):
    server: StubHub

    def log_message(self, *args: Any) -> None:  # quiet test output
        pass

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _missing(self, code: str) -> None:
        self._send(404, {"error": code}, {"X-Error-Code": code})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _route(self) -> None:
        hub, path = self.server, unquote(urlsplit(self.path).path)
        with hub.lock:
            hub.requests.append((self.command, path, self.headers.get("Authorization")))
        parts = path.strip("/").split("/")
        if path == "/api/repos/create":
            return self._create(json.loads(self._body()))
        if path == "/api/validate-yaml":
            content = json.loads(self._body())["content"]
            yaml.safe_load(content.split("---")[1])  # a card whose front matter is not YAML fails here
            return self._send(200, {"warnings": [], "errors": []})
        if parts[:2] == ["api", "models"] and len(parts) >= 5:
            return self._api(f"{parts[2]}/{parts[3]}", parts[4], parts[5] if len(parts) > 5 else "main")
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        self._send(404, {"error": f"stub: no route {self.command} {path}"})

    do_GET = do_POST = do_HEAD = _route

    def _create(self, req: dict[str, Any]) -> None:
        hub, repo = self.server, f"{req['organization']}/{req['name']}"
        if repo in hub.refs:
            return self._send(409, {"error": "You already created this model repo"})
        hub.refs[repo], hub.private[repo] = {}, req.get("visibility") == "private"
        hub.commit(repo, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}, "initial")
        self._send(200, {"url": f"{hub.url}/{repo}", "name": repo})

    def _sha(self, repo: str, rev: str) -> str | None:
        refs = self.server.refs.get(repo, {})
        return refs.get(rev) or (rev if rev in self.server.commits and repo in self.server.refs else None)

    def _api(self, repo: str, action: str, rev: str) -> None:
        hub = self.server
        if repo not in hub.refs:
            return self._missing("RepoNotFound")
        sha = self._sha(repo, rev)
        if action == "preupload":
            files = json.loads(self._body())["files"]
            return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                               "oid": None} for f in files]})
        if action == "commit":
            lines = [json.loads(ln) for ln in self._body().splitlines() if ln.strip()]
            tree = dict(hub.files(repo, rev))
            for line in lines[1:]:
                if line["key"] != "file":
                    return self._send(400, {"error": f"stub handles regular files only, got {line['key']}"})
                tree[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            new = hub.commit(repo, tree, lines[0]["value"]["summary"])
            return self._send(200, {"commitUrl": f"{hub.url}/{repo}/commit/{new}", "commitOid": new,
                                    "pullRequestUrl": None})
        if sha is None:
            return self._missing("RevisionNotFound")
        files = hub.commits[sha]
        if action == "revision":
            return self._send(200, {"id": repo, "sha": sha, "private": hub.private[repo],
                                    "siblings": [{"rfilename": p} for p in files]})
        if action == "tree":
            return self._send(200, [{"type": "file", "path": p, "size": len(b), "oid": _git_blob_sha1(b)}
                                    for p, b in files.items()])
        self._send(404, {"error": f"stub: no action {action}"})

    def _resolve(self, repo: str, rev: str, file: str) -> None:
        sha = self._sha(repo, rev)
        if sha is None:
            return self._missing("RepoNotFound" if repo not in self.server.refs else "RevisionNotFound")
        data = self.server.commits[sha].get(file)
        if data is None:
            return self._missing("EntryNotFound")
        self._send(200, data, {"Content-Type": "application/octet-stream", "X-Repo-Commit": sha,
                               "ETag": f'"{_git_blob_sha1(data)}"'})


@pytest.fixture
def hub() -> Iterator[StubHub]:
    server = StubHub()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty Hugging Face cache; online unless a test says otherwise. huggingface_hub reads
    HF_HOME / HF_HUB_CACHE once, at import, so its constants are set as well as the environment."""
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return cache


def _sae_dir(tmp_path: Path, with_eval: bool = True) -> Path:
    """A small saekit checkpoint (random TopK, nothing trained) with an eval.json in saekit's format."""
    folder = sae.save_sae(sae.random_sae(d_sae=64, layer=2, k=8, seed=3), tmp_path / "sae",
                          extra={"train": {"tokens": 123456, "steps": 30, "name": "stub"}})
    if with_eval:
        EvalResult(sae={}, reconstruction=ReconstructionMetrics(n_tokens=4096, source="cache-held-out", fvu=0.1234),
                   sparsity=SparsityMetrics(d_sae=64, l0=8.0, dead_fraction=0.015625),
                   downstream=DownstreamMetrics(ce_loss_recovered=0.9321)).save(folder / "eval.json")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "state.safetensors").write_bytes(b"optimizer state: never uploaded")
    return folder


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as a user sets it; sae.hub reads it at call time


# --------------------------------------------------------------------------- push


def test_push_uploads_checkpoint_and_card_through_the_real_client(hub: StubHub, tmp_path: Path) -> None:
    folder = _sae_dir(tmp_path)
    spec = sae.push_sae(folder, REPO, subfolder="layer_2", token=TOKEN, private=True, endpoint=hub.url)

    files = hub.files(REPO)
    assert spec == f"hf://{REPO}/layer_2@{hub.refs[REPO]['main']}"
    assert sorted(files) == [".gitattributes", "layer_2/README.md", "layer_2/cfg.json", "layer_2/eval.json",
                             "layer_2/sae_weights.safetensors"]  # not checkpoints/
    assert files["layer_2/sae_weights.safetensors"] == (folder / "sae_weights.safetensors").read_bytes()
    assert json.loads(files["layer_2/cfg.json"])["hook_name"] == HOOK
    assert hub.private[REPO] is True
    writes = [r for r in hub.requests if r[0] == "POST"]
    assert {p.rsplit("/", 1)[0] for _, p, _ in writes} >= {"/api/repos", f"/api/models/{REPO}/preupload",
                                                          f"/api/models/{REPO}/commit"}
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in writes)

    card = files["layer_2/README.md"].decode()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "saekit" and {"sparse-autoencoder", "saelens"} <= set(front["tags"])
    for fact in (HOOK, "`topk`", "| d_in | 576 |", "| d_sae | 64", "| k (latents per token) | 8 |", "123,456",
                 "0.1234", "| L0 (latents active per token) | 8.00 |", "0.9321", "1.56 %",
                 f'sae.load_sae("hf://{REPO}/layer_2")', "SAE.load_from_disk"):
        assert fact in card, fact
    meta = json.loads((folder / "cfg.json").read_text())["metadata"]
    assert meta["model_source"] == "gguf"  # the embedded model: the card names the GGUF it really was
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in card and "dequantised" in card
    assert (meta["gguf_sha256"] or "its sha256 was not recorded") in card


def test_round_trip_push_download_load(hub: StubHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _sae_dir(tmp_path, with_eval=False)
    original = sae.load_sae(folder)
    spec = sae.push_sae(folder, REPO, subfolder="layer_2", token=TOKEN, endpoint=hub.url)
    assert "No `eval.json` was pushed" in hub.files(REPO)["layer_2/README.md"].decode()

    local = sae.pull_sae(f"hf://{REPO}/layer_2", endpoint=hub.url)  # online: into the HF cache
    assert load_file(str(local / "sae_weights.safetensors")).keys() == load_file(
        str(folder / "sae_weights.safetensors")).keys()
    _offline(monkeypatch)  # from here on the cache must do: nothing may reach the (still running) hub
    monkeypatch.setattr(hf_constants, "ENDPOINT", hub.url)
    hub.requests.clear()
    for address in (f"hf://{REPO}/layer_2", spec, f"hf://{REPO}@main/layer_2"):
        loaded = sae.load_sae(address)
        for name, tensor in original.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor), (address, name)
        x_BD = torch.randn(16, 576, generator=torch.Generator().manual_seed(0))
        assert torch.equal(loaded.encode(x_BD), original.encode(x_BD)), address
    assert hub.requests == []


def test_unreachable_hub_falls_back_to_the_cache(hub: StubHub, tmp_path: Path) -> None:
    """Online (HF_HUB_OFFLINE unset) but the Hub does not answer: the cached copy loads."""
    folder = _sae_dir(tmp_path, with_eval=False)
    sae.push_sae(folder, REPO, token=TOKEN, endpoint=hub.url)  # at the repository's root
    sae.pull_sae(f"hf://{REPO}", endpoint=hub.url)
    hub.shutdown()
    hub.server_close()  # connection refused from now on
    loaded = sae.load_sae(sae.pull_sae(f"hf://{REPO}", endpoint=hub.url))
    assert torch.equal(loaded.W_enc, sae.load_sae(folder).W_enc)


def test_pull_names_the_sae_folders_a_repo_holds(hub: StubHub, tmp_path: Path) -> None:
    sae.push_sae(_sae_dir(tmp_path, with_eval=False), REPO, subfolder="layer_2", token=TOKEN, endpoint=hub.url)
    with pytest.raises(sae.HubError, match=f"no SAE in folder 'layer_9'.*hf://{REPO}/layer_2"):
        sae.pull_sae(f"hf://{REPO}/layer_9", endpoint=hub.url)
    with pytest.raises(sae.HubError, match="no repository stub-org/other.*token"):
        sae.pull_sae("hf://stub-org/other", endpoint=hub.url)
    with pytest.raises(sae.HubError, match="has no revision 'v9'"):
        sae.pull_sae(f"hf://{REPO}/layer_2@v9", endpoint=hub.url)


# --------------------------------------------------------------------------- bad inputs


def test_uncached_repo_offline_says_neither_cached_nor_reachable(monkeypatch: pytest.MonkeyPatch,
                                                                  hf_cache: Path) -> None:
    _offline(monkeypatch)
    with pytest.raises(sae.HubError) as e:
        sae.load_sae("hf://stub-org/never-pulled/layer_2")
    msg = str(e.value)
    for part in ("stub-org/never-pulled", "neither in the local Hugging Face cache", str(hf_cache),
                 "HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE"):
        assert part in msg, part


def test_uncached_repo_unreachable_hub(hub: StubHub) -> None:
    url = hub.url
    hub.shutdown()
    hub.server_close()
    with pytest.raises(sae.HubError, match="neither in the local Hugging Face cache .* nor reachable .*did not answer"):
        sae.pull_sae("hf://stub-org/never-pulled", endpoint=url)


@pytest.mark.parametrize("spec, problem", [
    ("hf://just-a-name", "namespace/name"),
    ("hf://datasets/org/data", "SAEs are model repositories"),
    ("hf://org/name/../etc", "not a plain relative path"),
    ("hf://org/name//sub", "empty segments"),
    ("hf://org/name@v1/sub@v2", "two revisions"),
    ("hf://org/na--me", "--"),
])
def test_malformed_spec(spec: str, problem: str, hub: StubHub) -> None:
    with pytest.raises(sae.HubError, match="expected hf://OWNER/NAME|not a plain relative path") as e:
        sae.load_sae(spec)
    assert problem in str(e.value)
    assert hub.requests == []


def test_spec_forms() -> None:
    from sae.hub import HubSpec, parse_spec

    assert parse_spec("hf://o/n") == HubSpec("o/n")
    assert parse_spec("hf://o/n/a/b@v1") == parse_spec("hf://o/n@v1/a/b") == HubSpec("o/n", "a/b", "v1")
    assert parse_spec("hf://o/n/sub@refs/pr/3") == HubSpec("o/n", "sub", "refs/pr/3")
    assert str(HubSpec("o/n", "a/b", "v1")) == "hf://o/n/a/b@v1"


def test_push_bad_folders_fail_before_any_request(hub: StubHub, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _sae_dir(tmp_path)
    cases = [
        (tmp_path / "nope", "does not exist"),
        (folder / "cfg.json", "is a file"),
        (folder / "checkpoints", "no cfg.json and no sae_weights.safetensors"),
        (tmp_path, r"SAE folders \['sae'\]: push one of them"),
    ]
    for path, problem in cases:
        with pytest.raises(sae.HubError, match=problem):
            sae.push_sae(path, REPO, endpoint=hub.url)
    with pytest.raises(sae.HubError, match="OWNER/NAME"):
        sae.push_sae(folder, "no-owner", endpoint=hub.url)
    weights = (folder / "sae_weights.safetensors").read_bytes()
    (folder / "sae_weights.safetensors").write_bytes(weights[: len(weights) // 2])  # a cut-off copy
    with pytest.raises(sae.CheckpointError, match="not a readable safetensors file"):
        sae.push_sae(folder, REPO, endpoint=hub.url)
    (folder / "sae_weights.safetensors").write_bytes(weights)
    (folder / "eval.json").write_text("{not json")
    with pytest.raises(sae.HubError, match="eval.json is unreadable.*saekit eval"):
        sae.push_sae(folder, REPO, endpoint=hub.url)
    (folder / "eval.json").unlink()
    _offline(monkeypatch)
    with pytest.raises(sae.HubError, match="HF_HUB_OFFLINE is set"):
        sae.push_sae(folder, REPO, endpoint=hub.url)
    assert hub.requests == []


def test_own_readme_is_kept(hub: StubHub, tmp_path: Path) -> None:
    folder = _sae_dir(tmp_path, with_eval=False)
    own = "---\nlibrary_name: saekit\n---\n# My SAE, described by me\n"
    (folder / "README.md").write_text(own)
    sae.push_sae(folder, REPO, token=TOKEN, endpoint=hub.url)
    assert hub.files(REPO)["README.md"].decode() == own == (folder / "README.md").read_text()


def test_cli_push(hub: StubHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  capsys: pytest.CaptureFixture) -> None:
    folder = _sae_dir(tmp_path)
    monkeypatch.setattr(hf_constants, "ENDPOINT", hub.url)  # HfApi reads it when created
    monkeypatch.setenv("MY_WRITE_TOKEN", "hf_cli_token")
    assert main(["push", str(folder), REPO, "--subfolder", "blocks.2", "--token-env", "MY_WRITE_TOKEN"]) == 0
    out = capsys.readouterr().out
    assert f"sae.load_sae('hf://{REPO}/blocks.2')" in out
    assert "blocks.2/sae_weights.safetensors" in hub.files(REPO)
    assert {auth for m, _, auth in hub.requests if m == "POST"} == {"Bearer hf_cli_token"}
    assert main(["push", str(folder), REPO, "--token-env", "UNSET_VAR_FOR_TEST"]) == 2
    assert "$UNSET_VAR_FOR_TEST is not set" in capsys.readouterr().err
