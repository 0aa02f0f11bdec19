"""A steered model as an lm-evaluation-harness model (`--model saekit`): benchmark any intervention.

`SteeredLM` wraps a TransformerBridge and any steering intervention (`(sae, {feature: Clamp(...)})`,
a `FeatureSteering`, a CAA `VectorSteering`, a list of them) and applies it, through the same
hooks as `steering.steer`, to every forward lm-eval asks for: each scored context + continuation,
and each KV-cached decode step of `generate_until` (it samples with `steering.generation`).

    import sae, steering
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from steering.lm_eval_model import SteeredLM

    model = sae.load_model()                                   # the embedded SmolLM2
    tiny = TaskManager(include_path="tests/data/lm_eval_tiny", include_defaults=False)
    clamp = (sae.random_sae(layer=3), {5: steering.Clamp(100)})  # or your SAE and feature
    for lm in (SteeredLM(model), SteeredLM(model, clamp)):     # unsteered, steered
        out = simple_evaluate(model=lm, tasks=["saekit_tiny"], task_manager=tiny)
        print(out["results"]["saekit_tiny"]["acc,none"])        # 0.875, then 0.375

From the command line (run from the repository root; this module registers `saekit` with lm-eval
and then runs lm-eval's own CLI, so every lm-eval flag works):

    python -m steering.lm_eval_model run --model saekit \
        --model_args sae=runs/steer_seeds/seed0,feature=2993,clamp=5,unit=max \
        --tasks saekit_tiny --include_path tests/data/lm_eval_tiny --device cpu

model_args: `model` (hub id or local dir; default the embedded SmolLM2), `dtype`; `sae` (checkpoint
dir), `feature`, one of `clamp=V` / `add=A` / `scale=C` / `ablate=true`, and optionally `unit`
(abs|max), `positions`, `hook`, `feature_db`; the adapter's own `batch_size`, `max_length`,
`max_gen_toks`, `add_bos_token`, `seed`. Several features, several SAEs or CAA vectors: build
the intervention in Python. The prompting baseline is lm-eval's own `--system_instruction`.

Scoring follows lm-eval's HFLM: lm-eval's `TemplateLM` splits context and continuation tokens,
the continuation's log-probability is the sum over its tokens of log_softmax of the logits one
position earlier, `is_greedy` says whether argmax matches every token, and a context too long
for `max_length` loses tokens on the left. Two choices are saekit's: rows start with BOS (as
the SAEs were trained; `add_bos_token=False` leaves it out), and for position modes the context
is the prompt and the continuation is what is "generated" (`positions="generated"` steers the
continuation's own tokens, as steered generation would have steered them had it written them).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

try:
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as e:  # lm-eval is an optional extra
    raise ImportError(
        "steering.lm_eval_model needs lm-evaluation-harness, which is not installed; "
        "install it with: pip install 'saekit[lm-eval]'"
    ) from e

from sae import model_device
from steering.generation import SamplingConfig, _start_batch, row_seed, sample_rows
from steering.interventions import SteeringError, as_interventions
from steering.lm_eval_args import steered_lm_kwargs
from steering.positions import generation_header_ids, last_occurrence, tracker_for
from steering.steer_hooks import Steering, prepare

if TYPE_CHECKING:
    from lm_eval.api.instance import Instance
    from transformer_lens.model_bridge import TransformerBridge

# (request key for lm-eval's cache or None, context ids, continuation ids)
TokenRequest = tuple[Any, list[int], list[int]]
GEN_KWARGS = ("until", "max_gen_toks", "max_new_tokens", "do_sample", "temperature", "top_p", "top_k")


@register_model("saekit")
class SteeredLM(TemplateLM):
    """lm-eval model: `model` (a TransformerBridge, a hub id / local dir, or None for the embedded
    SmolLM2) steered by `intervention` (anything `steering.generate` accepts; None: unsteered).
    `device` and `dtype` apply only when the model is loaded here."""

    def __init__(
        self,
        model: TransformerBridge | str | None = None,
        intervention: Any = None,
        *,
        batch_size: int | str = 8,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        add_bos_token: bool = True,
        seed: int = 0,
        device: str | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        if model is None or isinstance(model, str):
            import sae as saelib

            name = {"name": model} if model else {}  # None: load_model's default, the embedded SmolLM2
            model = saelib.load_model(**name, device=device, dtype=dtype)
        self.model = model
        self.tokenizer = model.tokenizer
        self.interventions = as_interventions(intervention)
        prepare(model, self.interventions)  # bad hooks, widths or unit="max" scans fail here, once
        self.batch_size = _batch_size(batch_size)
        if max_length is not None and int(max_length) < 2:
            raise SteeringError(f"max_length must be >= 2 tokens, got {max_length}")
        self._max_length = None if max_length is None else int(max_length)
        if int(max_gen_toks) < 1:
            raise SteeringError(f"max_gen_toks must be >= 1, got {max_gen_toks}")
        self._max_gen_toks = int(max_gen_toks)
        self.add_bos_token = bool(add_bos_token)
        self.seed = int(seed)
        self._device = model_device(model)

    # ------------------------------------------------------------------ construction from lm-eval

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> SteeredLM:
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict | None = None) -> SteeredLM:
        return cls(**steered_lm_kwargs(arg_dict, additional_config))

    # ------------------------------------------------------------------ what lm-eval asks of a model

    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return int(bos) if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        if self._max_length is not None:
            return self._max_length
        return int(getattr(self.model.original_model.config, "max_position_embeddings", 2048))

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "saekit")).replace("/", "__")

    def get_model_info(self) -> dict[str, Any]:
        """Recorded in lm-eval's results config: what the model was steered with."""
        return {"steering": [iv.describe() for iv in self.interventions]}

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        ids = self.tokenizer.encode(string, add_special_tokens=False)
        want_bos = self.add_bos_token if add_special_tokens is None else add_special_tokens
        bos = self.tokenizer.bos_token_id
        if want_bos and bos is not None and ids[:1] != [bos]:
            ids = [int(bos), *ids]
        return ids

    def tok_decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------ scoring

    @contextlib.contextmanager
    def _steering(self) -> Iterator[Any]:
        """The interventions installed, the position tracker told each batch's layout by us."""
        tracker = tracker_for(self.model)
        with Steering(self.model, self.interventions):
            was, tracker.explicit = tracker.explicit, True
            try:
                yield tracker
            finally:
                tracker.explicit = was
                tracker.reset()

    def _fit(self, ctx: list[int], cont: list[int]) -> tuple[list[int], list[int]]:
        """Left-truncate the context so context + continuation[:-1] fits max_length (as HFLM)."""
        if not cont:
            raise SteeringError("an empty continuation cannot be scored")
        if len(cont) > self.max_length:
            raise SteeringError(
                f"a continuation of {len(cont)} tokens exceeds max_length {self.max_length}"
            )
        return ctx[-(self.max_length + 1 - len(cont)) :], cont

    @torch.inference_mode()
    def _score(self, pairs: list[tuple[list[int], list[int]]], tracker: Any) -> list[tuple[float, bool]]:
        """(log P(continuation | context), is_greedy) for one batch, in one forward.

        Contexts are left-padded so that all end at column C and continuations right-padded after
        it: the logits at columns C-1 .. C+L-2 predict the continuations' tokens, the last L columns.
        """
        C = max(len(ctx) for ctx, _ in pairs)
        L = max(len(cont) for _, cont in pairs)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids_BT = torch.full((len(pairs), C + L - 1), pad_id, dtype=torch.long)
        mask_BT = torch.zeros_like(ids_BT)
        for b, (ctx, cont) in enumerate(pairs):
            row = ctx + cont[:-1]
            ids_BT[b, C - len(ctx) : C - len(ctx) + len(row)] = torch.tensor(row)
            mask_BT[b, C - len(ctx) : C - len(ctx) + len(row)] = 1
        ids_BT, mask_BT = ids_BT.to(self.device), mask_BT.to(self.device)
        header = generation_header_ids(self.tokenizer)
        after = [last_occurrence(ctx, header) if header else -1 for ctx, _ in pairs]
        # generation's own way of telling the tracker a left-padded batch: position modes mean the same
        _start_batch(tracker, [ctx for ctx, _ in pairs], C, after, self.device)
        tracker.begin_forward(0)
        out = self.model.original_model(
            input_ids=ids_BT, attention_mask=mask_BT, position_ids=(mask_BT.cumsum(-1) - 1).clamp(min=0),
            use_cache=False, logits_to_keep=L,
        )
        logp_BLV = torch.log_softmax(out.logits[:, -L:].float(), dim=-1)
        results = []
        for b, (_, cont) in enumerate(pairs):
            cont_L = torch.tensor(cont, device=logp_BLV.device)
            lp_LV = logp_BLV[b, : len(cont)]
            total = lp_LV.gather(-1, cont_L[:, None]).sum()
            results.append((float(total), bool((lp_LV.argmax(-1) == cont_L).all())))
        return results

    def _loglikelihood_tokens(
        self, requests: list[TokenRequest], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        # Longest first, as HFLM: similar lengths share a batch, and memory runs out at once if at all.
        order = sorted(range(len(requests)), key=lambda i: -(len(requests[i][1]) + len(requests[i][2])))
        results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        with self._steering() as tracker:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                scored = self._score([self._fit(requests[i][1], requests[i][2]) for i in idx], tracker)
                for i, answer in zip(idx, scored, strict=True):
                    results[i] = answer
                    if requests[i][0] is not None:
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
        return results

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """log P(text) token by token after BOS, in windows of max_length (lm-eval's rolling windows)."""
        windows: list[TokenRequest] = []
        owner: list[int] = []
        for r, (text,) in enumerate(req.args for req in requests):
            ids = self.tok_encode(text, add_special_tokens=False)  # BOS is the prefix, not a token to predict
            for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=ids, prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                    context_len=1)):
                windows.append((None, ctx, cont))
                owner.append(r)
        totals = [0.0] * len(requests)
        for r, (logp, _) in zip(owner, self._loglikelihood_tokens(windows), strict=True):
            totals[r] += logp
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ------------------------------------------------------------------ generation

    def _sampling(self, gen_kwargs: dict[str, Any]) -> tuple[SamplingConfig, list[str]]:
        """lm-eval's generation kwargs as a SamplingConfig and stop strings (HF generate's meaning)."""
        unknown = sorted(set(gen_kwargs) - set(GEN_KWARGS))
        if unknown:
            raise SteeringError(
                f"generation kwargs {unknown} are not supported by the saekit model; it takes {', '.join(GEN_KWARGS)}"
            )
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = gen_kwargs.get("max_gen_toks", gen_kwargs.get("max_new_tokens", self.max_gen_toks))
        sample = bool(gen_kwargs.get("do_sample", False))
        temperature = float(gen_kwargs.get("temperature", 1.0)) if sample else 0.0
        cfg = SamplingConfig(
            max_new_tokens=int(max_new), temperature=temperature,
            top_p=float(gen_kwargs.get("top_p", 1.0)), top_k=int(gen_kwargs.get("top_k", 0) or 0),
        )
        return cfg, until

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Steered generation (KV cache on, steering on every new token), cut at the first stop string."""
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):  # one SamplingConfig per distinct gen_kwargs
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        header = generation_header_ids(self.tokenizer)
        texts = [""] * len(requests)
        for idx in groups.values():
            cfg, until = self._sampling(dict(requests[idx[0]].args[1]))
            keep = max(1, self.max_length - cfg.max_new_tokens)
            rows = [self.tok_encode(requests[i].args[0])[-keep:] or [self.prefix_token_id] for i in idx]
            after = [last_occurrence(r, header) if header else -1 for r in rows]
            with self._steering():
                for s in range(0, len(idx), self.batch_size):
                    sl = slice(s, s + self.batch_size)
                    seeds = [row_seed(self.seed, r) for r in rows[sl]]
                    new_ids = sample_rows(self.model, rows[sl], seeds, cfg, after[sl])
                    for i, ids in zip(idx[sl], new_ids, strict=True):
                        texts[i] = _cut(self.tok_decode(ids), until)
                        self.cache_hook.add_partial("generate_until", requests[i].args, texts[i])
        return texts


def _cut(text: str, until: list[str]) -> str:
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


def _batch_size(value: int | str) -> int:
    """An int >= 1; lm-eval's "auto" (and "auto:N") become 8: this adapter does not probe memory."""
    if isinstance(value, str) and value.startswith("auto"):
        return 8
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise SteeringError(f"batch_size must be a positive integer or 'auto', got {value!r}") from None
    if size < 1:
        raise SteeringError(f"batch_size must be >= 1, got {size}")
    return size


if __name__ == "__main__":  # python -m steering.lm_eval_model run --model saekit ...
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
