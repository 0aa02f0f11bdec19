"""The demo's two steering stages: thin calls into `steering.demos` with the demo's sizes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.demo import Demo


def _experiment_config(demo: Demo, name: str, strengths: list[float]) -> Any:
    from steering.demos import ExperimentConfig

    return ExperimentConfig(
        out_dir=str(demo.root / name),
        sae_path=str(demo.sae_dir),
        feature_db=str(demo.db_path) if demo.db_path.exists() else None,
        strengths=strengths,
        caa_scales=[2.0, 4.0, 8.0] if not demo.cfg.fast_steering else [4.0],
        n_prompts=demo.cfg.n_prompts,
        max_new_tokens=demo.cfg.max_new_tokens,
        candidates=demo.cfg.candidates,
    )


def golden_gate(demo: Demo) -> dict[str, Any]:
    from steering.demos import golden_gate as run

    result = run(demo.model, demo.sae, _experiment_config(demo, "golden_gate", demo.cfg.strengths))
    result.pop("summary")  # already in golden_gate/summary.json
    return result


def sycophancy(demo: Demo) -> dict[str, Any]:
    from steering.demos import sycophancy as run

    result = run(demo.model, demo.sae, _experiment_config(demo, "sycophancy", demo.cfg.praise_strengths))
    result.pop("summary")  # already in sycophancy/summary.json
    return result
