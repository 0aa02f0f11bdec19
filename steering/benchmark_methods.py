"""The benchmark's building blocks: generation with a measured edit size, features, CAA at a given size.

Edit size: a condition's mean ||added vector|| over its mean ||residual||, both at the SAE's hook
over generated positions. Methods that write into the residual (SAE clamp, CAA) are only
comparable at equal edit size: a CAA vector swept at "x2, x4, x8 its raw norm" and a clamp at
"x2, x4 the feature's max" cover different ranges, which is how CAA got 0% everywhere before.
"""

from __future__ import annotations

import copy
import json
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from steering.fluency import fluent, judge, measure, require_fluent
from steering.generation import generate
from steering.interventions import Clamp, FeatureSteering, Intervention, VectorSteering
from steering.positions import tracker_for
from steering.reference_experiments import ExperimentConfig, select_by_steering
from steering.rendering import Prompt
from steering.reply_quality import ScoreCache
from steering.search import FeatureHit, contrastive_features, logit_lens, rank_by_output_score

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sae import SparseAutoencoder


class BenchmarkError(ValueError):
    """The benchmark's output would mean nothing (NaN scores, all-zero sweeps, degenerate baseline)."""


@dataclass
class GenSettings:
    """How every condition generates: the same for all methods, so only the intervention differs."""

    max_new_tokens: int = 48
    batch_size: int = 16
    seed: int = 0


@dataclass
class Measured:
    """One condition's replies on a prompt set and its measured edit size."""

    replies: list[str]
    ids: list[list[int]]
    edit_size: float  # mean ||added|| / mean ||residual|| over generated positions
    residual_norm: float  # mean ||residual|| (before the edit) over generated positions
    positions: int  # how many generated positions were measured


@dataclass
class _Meter:
    """Sums of ||delta|| and ||x|| over the positions an intervention sees during decode steps."""

    added: float = 0.0
    resid: float = 0.0
    n: int = 0
    _extra: dict[str, Any] = field(default_factory=dict)

    def wrap(self, iv: Intervention, model: TransformerBridge) -> None:
        """Replace `iv.apply` (on this instance only) by one that also measures. Only KV-cached
        decode steps are counted (their first column is past the prompt): those are exactly the
        generated positions; the prompt forward is the prompt. Rows that already stopped are fed
        padding and still counted, for every method alike."""
        inner = iv.apply
        tracker = tracker_for(model)

        def apply(x_ND: Tensor) -> Tensor:
            out = inner(x_ND)
            if tracker.col0 >= tracker.prompt_cols > 0:
                self.added += float((out.float() - x_ND.float()).norm(dim=-1).sum())
                self.resid += float(x_ND.float().norm(dim=-1).sum())
                self.n += int(x_ND.shape[0])
            return out

        iv.apply = apply  # type: ignore[method-assign]


def zero_vector(sae: SparseAutoencoder) -> VectorSteering:
    """An intervention that adds nothing: the unsteered and prompting conditions are measured
    through it, so their residual norm comes from the same hook as everyone else's."""
    return VectorSteering(torch.zeros(int(sae.W_dec.shape[1])), hook_of(sae), 0.0, label="none")


def hook_of(sae: SparseAutoencoder) -> str:
    hook = getattr(getattr(sae, "cfg", None), "hook_name", None)
    if not hook:
        raise BenchmarkError("the SAE's config names no hook (cfg.hook_name); load it with sae.load_sae")
    return str(hook)


def run_generation(model: TransformerBridge, prompts: Sequence[Prompt], iv: Intervention,
                   gen: GenSettings) -> Measured:
    """Greedy replies to `prompts` under `iv`, with the edit size measured at iv's hook.
    `use_cache=True` is required by the meter: decode steps are how it finds generated positions."""
    meter = _Meter()
    iv = copy.copy(iv)  # the meter wraps this copy's apply; the caller's object stays as it was
    meter.wrap(iv, model)
    gens = generate(model, list(prompts), iv, compare=False, seed=gen.seed, max_new_tokens=gen.max_new_tokens,
                    batch_size=gen.batch_size, use_cache=True)
    if meter.n == 0 or meter.resid <= 0:
        raise BenchmarkError("no generated position was measured: every reply stopped at once; raise "
                             "max_new_tokens or check the model's chat template")
    return Measured([g.steered for g in gens], [list(g.steered_ids) for g in gens],
                    meter.added / meter.resid, meter.resid / meter.n, meter.n)


@dataclass
class RunMemo:
    """What does not depend on an SAE's features, computed once per benchmark run: the replies
    generated without an edit (unsteered, or with the prompting baseline's instruction), by hook and
    prompts, and every raw score (`ScoreCache`). Greedy decoding makes a second computation of
    either an exact repeat; with three SAEs and eleven concepts this halves the run."""

    generations: dict[tuple[str, str], Measured] = field(default_factory=dict)
    scores: ScoreCache = field(default_factory=ScoreCache)


def unedited_generation(model: TransformerBridge, sae: SparseAutoencoder, prompts: Sequence[Prompt],
                        gen: GenSettings, memo: RunMemo) -> Measured:
    """`run_generation` through `zero_vector(sae)`, remembered in `memo` (the replies and the
    residual norm at the hook depend only on the hook and the prompts)."""
    key = (hook_of(sae), json.dumps(list(prompts), sort_keys=True))
    if key not in memo.generations:
        memo.generations[key] = run_generation(model, prompts, zero_vector(sae), gen)
    return memo.generations[key]


def require_fluent_unsteered(m: Measured, what: str) -> None:
    """Raise `DegenerateTextError` when the unsteered replies fail the fluency gate: a broken
    generation stack, and every steered number beside it would be meaningless."""
    require_fluent(judge([measure(t, i) for t, i in zip(m.replies, m.ids, strict=True)]), m.replies, what)


def fluent_share(m: Measured) -> float:
    return statistics.fmean(fluent(measure(t, i)) for t, i in zip(m.replies, m.ids, strict=True))


# --------------------------------------------------------------------------- CAA at an edit size


def caa_at_size(model: TransformerBridge, prompts: Sequence[Prompt], vector: VectorSteering, size: float,
                reference_norm: float, gen: GenSettings, tolerance: float = 0.05,
                tries: int = 3) -> tuple[VectorSteering, Measured]:
    """CAA scaled so that its measured edit size is `size`: the unit vector times size x the
    unsteered residual norm, then corrected by the measured ratio (the residual norm under
    steering differs a little from the unsteered one, since the generated text differs)."""
    unit_norm = float(vector.vector.norm())
    if not unit_norm > 0:
        raise BenchmarkError("the CAA vector is zero: its positive and negative texts give the same mean "
                             "activation; use more contrastive texts")
    scale = size * reference_norm / unit_norm
    for _ in range(tries):
        iv = vector.with_scale(scale)
        m = run_generation(model, prompts, iv, gen)
        if size == 0 or abs(m.edit_size / size - 1) <= tolerance:
            break
        scale *= size / max(m.edit_size, 1e-12)
    return vector.with_scale(scale), m


# --------------------------------------------------------------------------- features


@dataclass
class SearchSettings:
    """The reference experiments' three steps: contrastive hits, output score, a steered generation."""

    candidates: int = 10
    score_prompts: int = 5
    score_strength: float = 2.0
    select: int = 4
    select_prompts: int = 6
    select_tokens: int = 24


def surface_words(patterns: Sequence[str], texts: Sequence[str]) -> list[str]:
    """The words the concept's keyword regexes match in its own positive texts ("cook(?:s|ed|ing)?"
    -> "cooking", "cooked"): the output score needs tokens and `select_by_steering` escapes its
    keywords, so both get real surface forms rather than regex source."""
    rx = re.compile(r"\b(?:" + "|".join(patterns) + r")\b", re.IGNORECASE)
    words = sorted({m.group(0).lower() for t in texts for m in rx.finditer(t)})
    if not words:
        raise BenchmarkError(f"the concept's keywords {list(patterns)[:5]} match none of its positive texts; "
                             "fix the keywords or the texts in steering.concepts")
    return words


def find_concept_feature(model: TransformerBridge, sae: SparseAutoencoder, positive: Sequence[str],
                         negative: Sequence[str], keywords: Sequence[str], selection_prompts: Sequence[str],
                         s: SearchSettings) -> tuple[int, list[dict[str, Any]]]:
    """The concept's feature, as `reference_experiments.find_golden_gate` finds the Golden Gate one:
    contrastive (max and mean over tokens), re-ranked by the gain of the concept's tokens when
    clamped, then by a short steered generation on selection prompts (keyword and fluent).
    `keywords` are regexes (steering.concepts); their matches in `positive` stand in for them."""
    keywords = surface_words(keywords, positive)
    hits: dict[int, FeatureHit] = {}
    for reduce in ("max", "mean"):
        for h in contrastive_features(model, sae, list(positive), list(negative), k=s.candidates, reduce=reduce,
                                      n_examples=2):
            hits.setdefault(h.feature, h)
    ranked = rank_by_output_score(model, sae, list(hits.values()), unit="max", strength=s.score_strength,
                                  concept_tokens=list(keywords), prompts=list(selection_prompts[: s.score_prompts]))
    exp = ExperimentConfig(select=s.select, select_tokens=s.select_tokens, score_strength=s.score_strength, unit="max")
    chosen = select_by_steering(model, sae, ranked, exp, list(selection_prompts[: s.select_prompts]),
                                list(keywords), "all")
    return chosen[0].feature, describe_hits(model, sae, chosen[: max(s.select, 1)])


def describe_hits(model: TransformerBridge, sae: SparseAutoencoder, hits: Sequence[FeatureHit]) -> list[dict[str, Any]]:
    return [{"feature": h.feature, "score": h.score, **h.details, "examples": h.examples[:2],
             "logit_lens": [t for t, _ in logit_lens(model, sae, h.feature, k=5)]} for h in hits]


def clamp_at(sae: SparseAutoencoder, feature: int, strength: float, positions: str = "all") -> FeatureSteering:
    return FeatureSteering(sae, {int(feature): Clamp(float(strength), unit="max")}, positions=positions,
                           label=f"clamp {feature} x{strength:g} max")


def best_by(rows: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
    """The row with the highest key; ties go to the smaller edit (the gentler intervention)."""
    if not rows:
        raise BenchmarkError("nothing to choose from: the sweep is empty; give at least one strength")
    return max(rows, key=lambda r: (key(r), -float(r.get("edit_size") or 0.0)))
