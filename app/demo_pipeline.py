"""`saekit demo`: the whole story on the embedded default, in one resumable run folder.

    cache -> train -> eval -> features -> golden gate -> sycophancy -> report

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
    n_prompts: int = 20
    strengths: list[float] = field(default_factory=lambda: [1.5, 2.0, 3.0, 4.0])
    praise_strengths: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0])
    candidates: int = 10
    fast_steering: bool = False  # one CAA scale instead of three
    max_new_tokens: int = 48
    allow_zero_sweep: bool = False  # report a sweep where nothing scored as "no effect" instead of stopping
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
            n_prompts=6,
            strengths=[2.0, 4.0],
            praise_strengths=[2.0],
            candidates=4,
            fast_steering=True,
            max_new_tokens=24,
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
            Stage("golden_gate", "Golden Gate: find the feature, clamp it, measure", self.stage_golden_gate),
            Stage("sycophancy", "Sycophancy: find a praise feature, clamp it vs CAA", self.stage_sycophancy),
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

    def _experiment(self, name: str, strengths: list[float]) -> Any:
        from steering.reference_experiments import ExperimentConfig

        return ExperimentConfig(
            out_dir=str(self.root / name),
            sae_path=str(self.sae_dir),
            feature_db=str(self.db_path) if self.db_path.exists() else None,
            strengths=strengths,
            caa_scales=[2.0, 4.0, 8.0] if not self.cfg.fast_steering else [4.0],
            n_prompts=self.cfg.n_prompts,
            max_new_tokens=self.cfg.max_new_tokens,
            candidates=self.cfg.candidates,
        )

    def stage_golden_gate(self) -> dict[str, Any]:
        from steering.reference_experiments import golden_gate

        result = golden_gate(self.model, self.sae, self._experiment("golden_gate", self.cfg.strengths))
        result.pop("summary")  # already in golden_gate/summary.json
        return _check_sweep(result, "Golden Gate clamp", allow_zero=self.cfg.allow_zero_sweep)

    def stage_sycophancy(self) -> dict[str, Any]:
        from steering.reference_experiments import sycophancy

        result = sycophancy(self.model, self.sae, self._experiment("sycophancy", self.cfg.praise_strengths))
        result.pop("summary")  # already in sycophancy/summary.json
        return _check_sweep(result, "praise clamp", allow_zero=self.cfg.allow_zero_sweep)

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


def _check_sweep(result: dict[str, Any], what: str, *, allow_zero: bool = False) -> dict[str, Any]:
    """A steering stage shows an effect on fluent text or says plainly that it found none (the
    report carries its "no effect found" line). A sweep in which no condition, steered or not,
    scored anything at all is another matter: that is how a broken run looks (the dashes of a
    mismatched transformers scored 0% everywhere), so it stops the demo unless allowed."""
    rates = [v for row in result.get("table") or [] for k, v in row.items()
             if k.endswith("_rate") and v is not None]
    if result.get("no_effect") and rates and not any(rates) and not allow_zero:
        raise StageCheckError(
            f"{what}: every condition, unsteered included, scored 0 ({result['no_effect']}); a sweep "
            "that measures nothing is not a result. Read the samples in the stage's folder; "
            "--allow-zero-sweep reports it as no effect and goes on", partial=result)
    return result
