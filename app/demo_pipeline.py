"""`saekit demo`: the whole story on the embedded default, in one resumable run folder.

    cache -> train -> eval -> features -> golden gate -> sycophancy -> report

The two steering stages are the steering benchmark's (`steering.run_benchmark`): the SAE clamp
against CAA at equal edit size and against prompting, settings chosen on selection prompts and
reported on held-out ones with 95% bootstrap intervals.

Each stage writes its artifact and a `stages/<name>.json` marker with its seconds; a second run
skips every stage whose marker exists (delete a marker, or its artifact, to redo a stage).
The stages call only the public APIs of `sae` and `steering`.

Each stage's output is checked: non-finite metrics, unsteered text that fails the fluency
gate, or a steering sweep with no effect stop the run. The failed stage leaves no marker (a
re-run retries it), the report is still written with what was done and names the failure,
and `Demo.run` raises `DemoFailed` (`saekit demo` exits non-zero).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sae
from sae import (
    CacheConfig,
    DataConfig,
    EvalConfig,
    FeaturesConfig,
    SAEConfig,
    StoreConfig,
    TrainConfig,
)


@dataclass
class DemoConfig:
    """Sizes of every stage; `fast()` shrinks them for a first look in a few minutes."""

    out_dir: str = "runs/demo"
    layer: int = 15
    cache_tokens: int = 400_000
    train_tokens: int = 2_000_000
    d_sae: int = 4608
    k: int = 32
    eval_tokens: int = 40_000
    ce_batches: int = 4
    analyze_tokens: int = 100_000
    # the steering benchmark's Golden Gate and sycophancy passes (steering.benchmark); the defaults are
    # those of the README's rows, so the demo reproduces its seed-0 row
    n_selection: int = 12  # prompts each method's setting is chosen on
    n_evaluation: int = 60  # held-out prompts the chosen settings are reported on
    strengths: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0])  # Golden Gate clamp, x max
    sycophancy_strengths: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0])
    n_unrelated: int = 4  # relevance foils per reply
    max_new_tokens: int = 32
    small_benchmark: bool = False  # BenchmarkConfig.fast's feature search and sycophancy sizes
    device: str | None = None
    seed: int = 0

    @classmethod
    def fast(cls, **overrides: Any) -> DemoConfig:
        small = dict(
            cache_tokens=24_000,
            train_tokens=200_000,
            d_sae=1152,
            eval_tokens=4_000,
            ce_batches=1,
            analyze_tokens=8_000,
            n_selection=4,
            n_evaluation=6,
            strengths=[2.0, 4.0],
            sycophancy_strengths=[2.0, 4.0],
            n_unrelated=2,
            max_new_tokens=16,
            small_benchmark=True,
        )
        small.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**small)

    @property
    def hook(self) -> str:
        return sae.resid_hook(self.layer)


@dataclass
class Stage:
    name: str
    title: str
    run: Callable[[], dict[str, Any]]  # returns a small summary saved in the marker


class StageCheckError(RuntimeError):
    """A stage ran but its output failed a check; `partial` is what it produced, for the report."""

    def __init__(self, message: str, partial: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.partial = partial


class DemoFailed(RuntimeError):
    """A stage failed; the report says which and why."""


@dataclass
class StageFailure:
    stage: str
    title: str
    reason: str
    partial: dict[str, Any] | None = None


class Demo:
    def __init__(self, cfg: DemoConfig, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.root = Path(cfg.out_dir)
        self.log = log
        self._model: Any = None
        self._sae: Any = None
        self.failure: StageFailure | None = None

    # ---------------------------------------------------------------- paths

    @property
    def acts_dir(self) -> Path:
        return self.root / "acts"

    @property
    def sae_dir(self) -> Path:
        return self.root / "sae"

    @property
    def eval_path(self) -> Path:
        return self.root / "eval.json"

    @property
    def db_path(self) -> Path:
        return self.root / "features.sqlite"

    def marker(self, name: str) -> Path:
        return self.root / "stages" / f"{name}.json"

    # ---------------------------------------------------------------- shared objects

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = sae.load_model(device=self.cfg.device)
        return self._model

    @property
    def sae(self) -> Any:
        if self._sae is None:
            self._sae = sae.load_sae(self.sae_dir, device=str(sae.pick_device(self.cfg.device)))
        return self._sae

    # ---------------------------------------------------------------- stages

    def stages(self) -> list[Stage]:
        return [
            Stage("cache", f"caching {self.cfg.cache_tokens:,} tokens of {self.cfg.hook}", self.stage_cache),
            Stage("train", f"training a TopK SAE ({self.cfg.d_sae} latents, k={self.cfg.k})", self.stage_train),
            Stage("eval", "evaluating the SAE (L0, FVU, CE-loss recovered)", self.stage_eval),
            Stage("features", f"building the feature database ({self.cfg.analyze_tokens:,} tokens)", self.stage_features),
            Stage("golden_gate", "Golden Gate: clamp vs CAA vs prompting, held-out prompts", self.stage_golden_gate),
            Stage("sycophancy", "Sycophancy: clamp vs CAA vs prompting, forced choice and free text",
                  self.stage_sycophancy),
            Stage("report", "writing the report", self.stage_report),
        ]

    @property
    def held_out_tokens(self) -> int:
        """The cache's tail that training never sees and evaluation uses: at most a tenth of the
        cache, which holds fewer tokens than asked when the corpus runs out."""
        cached = self.cfg.cache_tokens
        if (self.acts_dir / "manifest.json").exists():
            cached = min(cached, sae.CacheManifest.read(self.acts_dir).n_tokens or cached)
        return min(self.cfg.eval_tokens, cached // 10)

    def stage_cache(self) -> dict[str, Any]:
        cfg = CacheConfig(
            out_dir=str(self.acts_dir),
            hooks=[self.cfg.hook],
            n_tokens=self.cfg.cache_tokens,
            data=DataConfig(source="builtin"),
            seed=self.cfg.seed,
        )
        sae.build_cache(cfg, model=self.model)
        manifest = sae.CacheManifest.read(self.acts_dir)
        return {"tokens": manifest.n_tokens, "hooks": list(manifest.hooks)}

    def stage_train(self) -> dict[str, Any]:
        sae_cfg = SAEConfig(architecture="topk", d_in=int(self.model.cfg.d_model), d_sae=self.cfg.d_sae,
                            k=self.cfg.k, hook_name=self.cfg.hook)
        cfg = TrainConfig(
            out_dir=str(self.sae_dir),
            cache_dir=str(self.acts_dir),
            saes=[sae_cfg],
            store=StoreConfig(batch_size=4096, held_out_tokens=self.held_out_tokens,
                              seed=self.cfg.seed, device=self.cfg.device),
            n_tokens=self.cfg.train_tokens,
            device=self.cfg.device,
            seed=self.cfg.seed,
        )
        paths = sae.train(cfg)
        _replace_dir(Path(paths[0]), self.sae_dir)
        return {"checkpoint": str(self.sae_dir)}

    def stage_eval(self) -> dict[str, Any]:
        cfg = EvalConfig(
            sae_path=str(self.sae_dir),
            cache_dir=str(self.acts_dir),
            n_tokens=self.held_out_tokens,
            ce_batches=self.cfg.ce_batches,
            out_path=str(self.eval_path),
            device=self.cfg.device,
        )
        result = sae.evaluate(self.sae, model=self.model, cfg=cfg)
        return _eval_headline(result.to_dict(include_schema=False))

    def stage_features(self) -> dict[str, Any]:
        cfg = FeaturesConfig(
            sae_path=str(self.sae_dir),
            out_path=str(self.db_path),
            n_tokens=self.cfg.analyze_tokens,
            device=self.cfg.device,
            seed=self.cfg.seed,
        )
        sae.build_feature_db(cfg, model=self.model, sae=self.sae)
        return {"db": str(self.db_path)}

    def _benchmark(self, name: str, **over: Any) -> dict[str, Any]:
        """One pass of the steering benchmark on the demo's SAE, written to `root/name/`; the SAE's
        results (a benchmark stopped by a check raises, and the stage fails with its message)."""
        from steering import BenchmarkConfig, run_benchmark

        c = self.cfg
        sizes = dict(out_dir=str(self.root / name), n_selection=c.n_selection, n_evaluation=c.n_evaluation,
                     max_new_tokens=c.max_new_tokens, n_unrelated=c.n_unrelated, **over)
        cfg = BenchmarkConfig.fast(**sizes) if c.small_benchmark else BenchmarkConfig(**sizes)
        return run_benchmark(self.model, [("demo", self.sae)], cfg)["saes"]["demo"]

    def stage_golden_gate(self) -> dict[str, Any]:
        res = self._benchmark("golden_gate", concepts=["golden_gate"], sycophancy=False, strengths=self.cfg.strengths)
        gg = res["concepts"]["golden_gate"]
        return {"feature": gg["feature"], "chosen": gg["chosen"], "evaluation": gg["evaluation"],
                "samples": gg["samples"], "results": str(self.root / "golden_gate" / "results.json")}

    def stage_sycophancy(self) -> dict[str, Any]:
        res = self._benchmark("sycophancy", concepts=[], sycophancy=True, strengths=self.cfg.sycophancy_strengths)
        syc = res["sycophancy"]
        keep = ("feature", "strength", "caa_scale", "instruction", "n_items", "forced_choice", "free_text", "samples")
        return {**{k: syc[k] for k in keep}, "results": str(self.root / "sycophancy" / "results.json")}

    def stage_report(self) -> dict[str, Any]:
        from app.report import write_report

        stages = self.stage_summaries()
        cached = stages.get("cache", {}).get("tokens") or self.cfg.cache_tokens
        headline = (
            f"Model: SmolLM2-135M-Instruct (embedded), hook `{self.cfg.hook}`; TopK SAE with {self.cfg.d_sae} "
            f"latents, k={self.cfg.k}, trained on {self.cfg.train_tokens:,} tokens (epochs over {cached:,} cached "
            f"tokens of the builtin corpus, the last {self.held_out_tokens:,} held out for evaluation)."
        )
        failure = dataclasses.asdict(self.failure) if self.failure else None
        path = write_report(self.root, stages, headline=headline, sae_dir=self.sae_dir, db_path=self.db_path,
                            failure=failure)
        return {"report": str(path)}

    # ---------------------------------------------------------------- driver

    def run(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        sae.atomic_write_json(self.root / "demo_config.json", dataclasses.asdict(self.cfg))
        stages = self.stages()
        self.failure = None
        for i, stage in enumerate(stages, 1):
            marker = self.marker(stage.name)
            head = f"[{i}/{len(stages)}] {stage.title}"
            if self.failure is not None and stage.name != "report":
                continue  # later stages build on the failed one's output
            if marker.exists() and stage.name != "report":
                self.log(f"{head}: done already ({marker} exists), skipping")
                continue
            self.log(f"{head} ...")
            start = time.perf_counter()
            try:
                summary = _checked(stage.run())
            except (ValueError, RuntimeError, OSError) as e:  # readable failures; a bug keeps its traceback
                self.failure = StageFailure(stage.name, stage.title, str(e), getattr(e, "partial", None))
                self.log(f"{head}: FAILED: {e}")
                continue
            seconds = time.perf_counter() - start
            marker.parent.mkdir(parents=True, exist_ok=True)
            sae.atomic_write_json(marker, {"seconds": round(seconds, 1), **summary}, default=str)
            self.log(f"{head}: done in {seconds:.0f} s")
        report = self.root / "report.md"
        if self.failure is not None:
            raise DemoFailed(f"stage {self.failure.stage!r} failed its check: {self.failure.reason}\n"
                             f"{report} says what was done; a re-run keeps finished stages and retries this one.")
        return report

    def stage_summaries(self) -> dict[str, dict[str, Any]]:
        out = {}
        for stage in self.stages():
            m = self.marker(stage.name)
            if m.exists():
                out[stage.name] = json.loads(m.read_text())
        return out


def _replace_dir(src: Path, dst: Path) -> None:
    import shutil

    if src.resolve() == dst.resolve():
        return
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


def _eval_headline(d: dict[str, Any]) -> dict[str, Any]:
    """The four numbers the report leads with, wherever the eval JSON keeps them."""
    recon = d.get("reconstruction", {})
    sparsity = d.get("sparsity", {})
    down = d.get("downstream") or {}
    return {
        "l0": sparsity.get("l0"),
        "fvu": recon.get("fvu"),
        "ce_loss_recovered": down.get("ce_loss_recovered"),
        "dead_fraction": sparsity.get("dead_fraction"),
    }


def _non_finite(obj: Any, path: str = "") -> list[str]:
    """Where `obj` holds a NaN or infinite number (dotted paths)."""
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [path or "value"]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _non_finite(v, f"{path}.{k}" if path else str(k))]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in _non_finite(v, f"{path}[{i}]")]
    return []


def _checked(summary: dict[str, Any]) -> dict[str, Any]:
    """A stage's summary, unless a metric in it is NaN or infinite (a broken run, not a result)."""
    bad = _non_finite(summary)
    if bad:
        raise StageCheckError(f"non-finite metrics: {', '.join(bad[:5])}", partial=summary)
    return summary
