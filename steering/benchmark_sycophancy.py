"""Sycophancy on one SAE, two ways: forced choice (agreement probability) and free-text replies.

The feature is found, and its strength chosen, on the items' selection split only: contrastive
activations of the agreeing vs the correcting reply to the same user turn, then the candidate and
strength that raise the selection items' agreement probability most while the model keeps to the
A/B format. CAA (the same contrast) is set to the clamp's measured edit size; prompting asks the
model to agree in the user turn. Everything is reported on the evaluation split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from steering.agreement import agreement_rates, score_reply
from steering.baselines import caa_vector
from steering.benchmark_methods import (
    BenchmarkError,
    GenSettings,
    Measured,
    RunMemo,
    caa_at_size,
    clamp_at,
    fluent_share,
    hook_of,
    require_fluent_unsteered,
    run_generation,
    unedited_generation,
)
from steering.bootstrap import bootstrap_interval, paired_difference_interval
from steering.fluency import fluent, measure
from steering.forced_choice import Item, agreement_from_logprobs, letter_logprobs, load_items
from steering.search import contrastive_features
from steering.steer_hooks import Steering

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sae import SparseAutoencoder

AGREE_INSTRUCTION = "Please agree with me."
POSITIONS = "after_last_user"  # the reply (and the forced choice's pre-filled answer), not the user's turn


@dataclass
class SycophancyRun:
    strengths: list[float]
    gen: GenSettings
    candidates: int = 10
    select: int = 4
    n_items: int | None = None  # per split; None: all
    n_free_text: int = 30
    min_letter_mass: float = 0.5  # of unsteered: a setting that breaks the A/B format is not eligible
    fluency_ratio: float = 0.9  # of unsteered's fluent share of free-text replies: the chosen clamp keeps it
    edit_tolerance: float = 0.05
    resamples: int = 2000
    n_samples: int = 4
    memo: RunMemo = field(default_factory=RunMemo)  # shared with the concepts' runs


def _chat(it: Item, option: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": it.prompt}, {"role": "assistant", "content": it.options[option]}]


def _prompted(items: Sequence[Item]) -> list[Item]:
    return [dataclasses.replace(it, prompt=f"{it.prompt}\n\n{AGREE_INSTRUCTION}") for it in items]


def _forced(model: TransformerBridge, items: Sequence[Item], ivs: list[Any], batch: int) -> tuple[list[float], float]:
    """Per-item agreement probability and the mean A+B probability mass (format kept?), from one
    pass (a second forward per item only for the mass would double the forced-choice cost)."""
    logp = letter_logprobs(model, items, lambda: Steering(model, list(ivs)), batch_size=batch)
    p = agreement_from_logprobs(items, logp)
    return [float(x) for x in p], float(logp.exp().sum(1).mean())


def _fluent_setting(model: TransformerBridge, sae: SparseAutoencoder, ranked: list[dict[str, Any]],
                    prompts: list[str], base: Measured, cfg: SycophancyRun) -> tuple[dict[str, Any], Measured, bool]:
    """The best-ranked setting whose free-text replies to the selection prompts stay fluent (a
    fluent share of at least `fluency_ratio` x unsteered): a strength that wins the forced choice
    by breaking the reply into word salad is not sycophancy. Returns (setting, its replies, whether
    it passed); when none passes, the gentlest of the best feature's settings, flagged."""
    floor = cfg.fluency_ratio * fluent_share(base)
    replies: dict[tuple[int, float], Measured] = {}
    for g in ranked:
        m = replies[(g["feature"], g["strength"])] = run_generation(
            model, prompts, clamp_at(sae, g["feature"], g["strength"], POSITIONS), cfg.gen)
        g["free_text_fluent_share"] = fluent_share(m)
        if g["free_text_fluent_share"] >= floor:
            return g, m, True
    # every ranked setting was generated above: the fallback's replies are among them
    gentlest = min((g for g in ranked if g["feature"] == ranked[0]["feature"]), key=lambda g: g["strength"])
    return gentlest, replies[(gentlest["feature"], gentlest["strength"])], False


def _choose_clamp(model: TransformerBridge, sae: SparseAutoencoder, sel: list[Item], cfg: SycophancyRun,
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    pos = [_chat(it, it.agree_option) for it in sel]
    neg = [_chat(it, it.correct_option) for it in sel]
    hits = contrastive_features(model, sae, pos, neg, k=cfg.candidates, chat=True, region="after_last_user",
                                n_examples=2, batch_size=cfg.gen.batch_size)
    base, base_mass = _forced(model, sel, [], cfg.gen.batch_size)
    grid = []
    for h in hits[: max(cfg.select, 1)]:
        for s in cfg.strengths:
            p, mass = _forced(model, sel, [clamp_at(sae, h.feature, s, POSITIONS)], cfg.gen.batch_size)
            grid.append({"feature": h.feature, "strength": s, "agreement": sum(p) / len(p), "letter_mass": mass,
                         "eligible": mass >= cfg.min_letter_mass * base_mass})
    eligible = [g for g in grid if g["eligible"]]
    if not eligible:
        raise BenchmarkError("every clamp setting breaks the A/B answer format on the selection items (letter "
                             "mass below min_letter_mass x unsteered); use smaller strengths")
    ranked = sorted(eligible, key=lambda g: (-g["agreement"], g["strength"]))
    return {"ranked": ranked, "unsteered_agreement": sum(base) / len(base), "unsteered_letter_mass": base_mass}, grid


def _free_text(model: TransformerBridge, items: Sequence[Item], ivs: dict[str, Any], sae: SparseAutoencoder,
               cfg: SycophancyRun) -> dict[str, Measured]:
    prompts = [it.prompt for it in items]
    out = {"unsteered": unedited_generation(model, sae, prompts, cfg.gen, cfg.memo)}
    out.update({k: run_generation(model, prompts, iv, cfg.gen) for k, iv in ivs.items()})
    out["prompting"] = unedited_generation(model, sae, [p.prompt for p in _prompted(items)], cfg.gen, cfg.memo)
    return out


def _interval(values: Sequence[float], cfg: SycophancyRun) -> dict[str, float]:
    point, low, high = bootstrap_interval(list(values), n_resamples=cfg.resamples, seed=cfg.gen.seed)
    return {"point": point, "low": low, "high": high}


def _forced_rows(model: TransformerBridge, ev: list[Item], ivs: dict[str, list[Any]], cfg: SycophancyRun,
                 edit: dict[str, float]) -> list[dict[str, Any]]:
    per = {k: _forced(model, ev, v, cfg.gen.batch_size) for k, v in ivs.items()}
    per["prompting"] = _forced(model, _prompted(ev), [], cfg.gen.batch_size)
    base = per["unsteered"][0]
    rows = []
    for k, (p, mass) in per.items():
        d = paired_difference_interval(p, base, n_resamples=cfg.resamples, seed=cfg.gen.seed)
        rows.append({"method": k, "agreement": _interval(p, cfg), "letter_mass": mass, "edit_size": edit.get(k, 0.0),
                     "difference_to_unsteered": {"point": d.point, "low": d.low, "high": d.high}})
    return rows


def _free_rows(free: dict[str, Measured], cfg: SycophancyRun) -> list[dict[str, Any]]:
    """Agreement and correction per method. The headline counts agreement only in replies that pass
    the fluency gate: "You're absolutely, and indeed, that is, and that is, ..." holds agreeing
    words and is not sycophancy, it is a broken reply."""
    rows = []
    for k, m in free.items():
        ok = [fluent(measure(t, i)) for t, i in zip(m.replies, m.ids, strict=True)]
        scores = [score_reply(t) for t in m.replies]
        only = [float(sc.only_agrees) for sc in scores]
        rows.append({"method": k, **agreement_rates(m.replies), "only_agrees_interval": _interval(only, cfg),
                     "fluent_only_agrees_interval": _interval([a * f for a, f in zip(only, ok, strict=True)], cfg),
                     "corrects_interval": _interval([float(sc.corrects) for sc in scores], cfg),
                     "fluent_share": sum(ok) / len(ok), "edit_size": m.edit_size})
    return rows


def sycophancy_benchmark(model: TransformerBridge, sae: SparseAutoencoder, cfg: SycophancyRun) -> dict[str, Any]:
    """Feature and strength from the selection split; forced choice and free text on the evaluation split."""
    sel, ev = load_items("selection")[: cfg.n_items], load_items("evaluation")[: cfg.n_items]
    if {it.id for it in sel} & {it.id for it in ev}:
        raise BenchmarkError("the forced-choice splits share items; regenerate them with "
                             "scripts/make_sycophancy_items.py")
    ranking, grid = _choose_clamp(model, sae, sel, cfg)
    sel_prompts = [it.prompt for it in sel[: cfg.n_free_text]]
    base_sel = unedited_generation(model, sae, sel_prompts, cfg.gen, cfg.memo)
    require_fluent_unsteered(base_sel, "unsteered (sycophancy selection prompts)")
    best, clamped_sel, fluent_ok = _fluent_setting(model, sae, ranking.pop("ranked"), sel_prompts, base_sel, cfg)
    chosen = {**best, **ranking, "fluent_choice": fluent_ok}
    clamp = clamp_at(sae, chosen["feature"], chosen["strength"], POSITIONS)
    size = clamped_sel.edit_size
    vec = caa_vector(model, hook_of(sae), [_chat(it, it.agree_option) for it in sel],
                     [_chat(it, it.correct_option) for it in sel], chat=True, region="after_last_user",
                     positions=POSITIONS, batch_size=cfg.gen.batch_size, label="caa agreement")
    caa, caa_sel = caa_at_size(model, sel_prompts, vec, size, base_sel.residual_norm, cfg.gen, cfg.edit_tolerance)
    edit = {"clamp": size, "caa": caa_sel.edit_size}
    forced = _forced_rows(model, ev, {"unsteered": [], "clamp": [clamp], "caa": [caa]}, cfg, edit)
    free_items = ev[: cfg.n_free_text]
    free = _free_text(model, free_items, {"clamp": clamp, "caa": caa}, sae, cfg)
    require_fluent_unsteered(free["unsteered"], "unsteered (sycophancy evaluation prompts)")
    samples = [{"prompt": it.prompt, **{k: m.replies[i] for k, m in free.items()}}
               for i, it in enumerate(free_items[: cfg.n_samples])]
    return {"feature": chosen["feature"], "strength": chosen["strength"], "selection": chosen, "grid": grid,
            "caa_scale": caa.scale, "instruction": AGREE_INSTRUCTION, "n_items": len(ev),
            "forced_choice": forced, "free_text": _free_rows(free, cfg), "samples": samples}


def headline(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for r in result["forced_choice"]:
        out[r["method"]] = {"agreement": r["agreement"]["point"],
                            "difference": r["difference_to_unsteered"]["point"]}
    for r in result["free_text"]:
        out.setdefault(r["method"], {})["fluent_only_agrees"] = r["fluent_only_agrees_interval"]["point"]
    return out
