"""The steering benchmark (issue 14): SAE clamp vs CAA vs prompting, per concept, across SAE seeds.

    from steering import BenchmarkConfig, run_benchmark
    result = run_benchmark(model, [("seed0", sae0), ("seed1", sae1), ("seed2", sae2)], BenchmarkConfig())

Per SAE and concept (`steering.benchmark_concepts`): the feature is found automatically; the clamp
is swept over `strengths` (x the feature's max activation), CAA over the clamp's measured edit
sizes, prompting adds the concept's instruction; each method's setting is chosen on selection
prompts and evaluated on disjoint evaluation prompts. Sycophancy (`steering.benchmark_sycophancy`)
is measured by forced choice and in free text. Written to `out_dir`: config.json, results.json
(after every SAE, so a long run keeps what it finished) and results.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sae import atomic_write_json, atomic_write_text, read_json, versions_line
from steering import benchmark_concepts as bc
from steering import benchmark_sycophancy as bs
from steering.benchmark_methods import BenchmarkError, GenSettings, RunMemo, SearchSettings
from steering.benchmark_report import markdown

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from sae import SparseAutoencoder

log = logging.getLogger(__name__)

__all__ = ["BenchmarkConfig", "BenchmarkError", "run_benchmark"]


@dataclass
class BenchmarkConfig:
    """Sizes and settings of one benchmark run (saved as config.json beside the results)."""

    concepts: list[str] | None = None  # None: every concept in steering.concepts.CONCEPTS; []: none
    # The defaults are the README's Golden Gate rows (about 9 minutes per concept and SAE on 2 CPU cores)
    n_selection: int = 12  # prompts to choose each method's setting on
    n_evaluation: int = 60  # held-out prompts the chosen settings are reported on
    max_new_tokens: int = 32
    strengths: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0])  # clamp, x max activation
    batch_size: int = 16
    seed: int = 0
    out_dir: str = "runs/steer_bench"
    # feature search (the reference experiments' three steps)
    search: SearchSettings = field(default_factory=SearchSettings)
    # equal edit size: CAA's measured size may differ from the clamp's by this share at most
    edit_tolerance: float = 0.05
    resamples: int = 2000  # bootstrap resamples per interval
    n_samples: int = 4  # replies shown side by side per concept
    # relevance compares each reply under its question with it under this many unrelated ones (None:
    # all of steering.concepts.UNRELATED_QUESTIONS); each costs one forward per reply, the bulk of scoring
    n_unrelated: int | None = 4
    # also evaluate clamp and CAA at the setting with the highest concept rate whose median text
    # perplexity stays within this many times the unsteered one (issue 14's target); None: skip
    rate_rule_ppl: float | None = 2.0
    # sycophancy
    sycophancy: bool = True
    n_items: int | None = None  # forced-choice items per split; None: all
    n_free_text: int = 30
    min_letter_mass: float = 0.5  # a clamp keeping less than this x unsteered's A+B mass is not eligible
    fluency_ratio: float = 0.9  # the sycophancy clamp keeps this x unsteered's fluent share of free text

    def __post_init__(self) -> None:
        if not self.strengths or any(not s > 0 for s in self.strengths):
            raise BenchmarkError(f"strengths must be positive multiples of the max activation, got {self.strengths}")
        if self.concepts == [] and not self.sycophancy:
            raise BenchmarkError("nothing to run: no concepts and sycophancy off; name concepts or turn sycophancy on")
        if self.n_selection < 2 or self.n_evaluation < 2:
            raise BenchmarkError("n_selection and n_evaluation must be >= 2: an interval needs several prompts")

    @classmethod
    def fast(cls, **overrides: Any) -> BenchmarkConfig:
        """A smoke run (minutes on a CPU): two concepts, few prompts, short replies. Its numbers
        are too noisy to report; it checks that the pipeline runs end to end."""
        base: dict[str, Any] = dict(concepts=["golden_gate", "cooking"], n_selection=6, n_evaluation=8,
                                    max_new_tokens=16, strengths=[2.0, 4.0],
                                    search=SearchSettings(candidates=4, score_prompts=2, select=2, select_prompts=3,
                                                          select_tokens=12), resamples=500, n_samples=2,
                                    n_items=8, n_free_text=4, n_unrelated=4)
        base.update(overrides)
        return cls(**base)

    def gen(self) -> GenSettings:
        return GenSettings(self.max_new_tokens, self.batch_size, self.seed)


def _prompt_sets(cfg: BenchmarkConfig) -> tuple[list[str], list[str], list[str]]:
    from steering.concepts import EVALUATION_PROMPTS, SELECTION_PROMPTS, UNRELATED_QUESTIONS

    if cfg.n_selection > len(SELECTION_PROMPTS) or cfg.n_evaluation > len(EVALUATION_PROMPTS):
        raise BenchmarkError(f"asked for {cfg.n_selection} selection / {cfg.n_evaluation} evaluation prompts; "
                             f"steering.concepts has {len(SELECTION_PROMPTS)} / {len(EVALUATION_PROMPTS)}")
    sel, ev = list(SELECTION_PROMPTS[: cfg.n_selection]), list(EVALUATION_PROMPTS[: cfg.n_evaluation])
    if set(sel) & set(ev):
        raise BenchmarkError("steering.concepts' SELECTION_PROMPTS and EVALUATION_PROMPTS share prompts; "
                             "make them disjoint")
    return sel, ev, list(UNRELATED_QUESTIONS[: cfg.n_unrelated])


def concept_run(cfg: BenchmarkConfig, memo: RunMemo | None = None) -> bc.ConceptRun:
    sel, ev, unrelated = _prompt_sets(cfg)
    return bc.ConceptRun(sel, ev, unrelated, list(cfg.strengths), cfg.gen(), cfg.search, cfg.edit_tolerance,
                         cfg.resamples, cfg.n_samples, cfg.rate_rule_ppl, memo or RunMemo())


def sycophancy_run(cfg: BenchmarkConfig, memo: RunMemo | None = None) -> bs.SycophancyRun:
    return bs.SycophancyRun(
        strengths=list(cfg.strengths), gen=cfg.gen(), candidates=cfg.search.candidates, select=cfg.search.select,
        n_items=cfg.n_items, n_free_text=cfg.n_free_text, min_letter_mass=cfg.min_letter_mass,
        fluency_ratio=cfg.fluency_ratio, edit_tolerance=cfg.edit_tolerance, resamples=cfg.resamples,
        n_samples=cfg.n_samples, memo=memo or RunMemo())


def _concepts(cfg: BenchmarkConfig) -> list[Any]:
    from steering.concepts import CONCEPTS, get_concept

    return [get_concept(n) for n in (cfg.concepts if cfg.concepts is not None else list(CONCEPTS))]


def benchmark_sae(model: TransformerBridge, sae: SparseAutoencoder, cfg: BenchmarkConfig,
                  memo: RunMemo | None = None, partial: dict[str, Any] | None = None,
                  save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every concept (and sycophancy) on one SAE; features are found afresh for it. `memo` carries
    what does not depend on the SAE's features from one SAE to the next; `partial`, this SAE's
    unfinished results from an earlier run (its finished concepts are kept); `save` is called
    with the results after every concept, so a stopped run loses one concept at most."""
    memo = memo or RunMemo()
    run = concept_run(cfg, memo)
    fp = fingerprint(sae)
    out: dict[str, Any] = {"fingerprint": fp, "concepts": {}, "seconds": {}, "complete": False}
    if partial and partial.get("fingerprint") == fp:
        out.update({k: dict(partial.get(k) or {}) for k in ("concepts", "seconds")})
        out.update({k: partial[k] for k in ("sycophancy",) if k in partial})
    for concept in _concepts(cfg):
        if concept.name in out["concepts"]:
            log.info("concept %s: finished in an earlier run, kept", concept.name)
            continue
        t = time.perf_counter()
        log.info("concept %s", concept.name)
        out["concepts"][concept.name] = bc.concept_benchmark(model, sae, concept, run)
        out["seconds"][concept.name] = time.perf_counter() - t
        if save is not None:
            save(out)
    if cfg.sycophancy and "sycophancy" not in out:
        t = time.perf_counter()
        log.info("sycophancy")
        out["sycophancy"] = bs.sycophancy_benchmark(model, sae, sycophancy_run(cfg, memo))
        out["seconds"]["sycophancy"] = time.perf_counter() - t
    out["complete"] = True
    return out


def spread_over_saes(per_sae: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """min / median / max over SAEs of every headline number (concept x method, sycophancy x method)."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for res in per_sae.values():
        heads = {name: bc.headline(r) for name, r in res["concepts"].items()}
        if "sycophancy" in res:
            heads["sycophancy"] = bs.headline(res["sycophancy"])
        for name, methods in heads.items():
            for method, nums in methods.items():
                for metric, v in nums.items():
                    values.setdefault((name, method, metric), []).append(float(v))
    out: dict[str, Any] = {}
    for (name, method, metric), vs in values.items():
        out.setdefault(name, {}).setdefault(method, {})[metric] = {**bc.spread(vs), "n_saes": len(vs)}
    return out


def fingerprint(sae: SparseAutoencoder) -> str:
    """The SAE's decoder bytes, hashed: a resumed run reuses a finished SAE's results only for the
    same weights, whatever its label."""
    import hashlib

    w = sae.W_dec.detach().float().cpu().contiguous()
    return f"{tuple(w.shape)}:{hashlib.sha256(w.numpy().tobytes()).hexdigest()[:16]}"


def _finished(out: Path, cfg: BenchmarkConfig) -> dict[str, Any]:
    """The per-SAE results an earlier run of this config left in `out` (by label): a run stopped
    after two of three SAEs picks up at the third. A different config starts afresh, and says so."""
    path = out / "results.json"
    if not path.exists():
        return {}
    old = read_json(path, what="an earlier benchmark's results", fix="delete it to start afresh")
    mine, theirs = asdict(cfg), dict(old.get("config") or {})
    mine.pop("out_dir"), theirs.pop("out_dir", None)
    if mine != theirs:
        changed = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k))
        log.warning("%s holds results of another config (%s differ); they will be overwritten", path,
                    ", ".join(changed))
        return {}
    return dict(old.get("saes") or {})


def run_benchmark(model: TransformerBridge, saes: Sequence[tuple[str, SparseAutoencoder]],
                  cfg: BenchmarkConfig | None = None) -> dict[str, Any]:
    """Run every SAE (labelled) through the benchmark; write and return the results. An SAE whose
    results `out_dir/results.json` already holds under the same config and weights is not rerun."""
    cfg = cfg or BenchmarkConfig()
    if not saes:
        raise BenchmarkError("no SAEs given; pass [(label, sae), ...] (>= 3 seeds for a claim about steering)")
    labels = [label for label, _ in saes]
    if len(set(labels)) != len(labels):
        raise BenchmarkError(f"SAE labels must be unique, got {labels}")
    concept_run(cfg)  # checks the prompt sets before anything runs
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", asdict(cfg))
    done = _finished(out, cfg)
    result: dict[str, Any] = {"config": asdict(cfg), "versions": versions_line(), "saes": {}, "seconds": 0.0}
    memo = RunMemo()
    def write(label: str, entry: dict[str, Any]) -> None:
        result["saes"][label] = entry
        result["spread"] = spread_over_saes(result["saes"])
        atomic_write_json(out / "results.json", result)  # after every concept: a long run keeps what it finished

    for label, sae in saes:
        earlier = done.get(label, {})
        if earlier.get("fingerprint") == fingerprint(sae) and earlier.get("complete", True):
            log.info("SAE %s: finished in %s already, kept", label, out / "results.json")
            entry = earlier
        else:
            log.info("SAE %s", label)
            entry = benchmark_sae(model, sae, cfg, memo, partial=earlier,
                                  save=lambda e, label=label: write(label, e))
        result["seconds"] += sum(entry.get("seconds", {}).values())
        write(label, entry)
    atomic_write_text(out / "results.md", markdown(result))
    return result
