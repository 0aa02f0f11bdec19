"""Sycophancy demo: a praise/agreement feature vs a CAA vector, on mediocre work and wrong claims.

    python scripts/sycophancy.py --sae runs/demo/sae
    python scripts/sycophancy.py --sae runs/demo/sae --strengths 1 2 4 --caa-scales 1 2 4

1. contrastive chat turns: the same user message answered with praise vs with a neutral
   assessment; features are ranked by their mean activation difference over the assistant's
   reply, then by how much clamping raises praise words; the CAA vector is the difference of
   means over the same replies;
2. both are applied after the last user turn of held-out prompts where a user shares mediocre
   work or a wrong claim;
3. praise/agreement rate (keywords) and perplexity are reported per strength, and the two methods
   are compared at equal fluency (perplexity within --max-ppl-ratio x unsteered).
Target: the SAE clamp raises the praise rate at least as much as CAA at equal fluency.
"""

from __future__ import annotations

import sys

from _experiment import run

from steering.reference_experiments import sycophancy


def main(argv: list[str] | None = None) -> int:
    return run(__doc__, sycophancy, "praise rate", argv, out_dir="runs/sycophancy", score_prompts=6,
                 n_prompts=None, strengths=[0.5, 1.0, 1.5, 2.0, 3.0], caa_scales=[1.0, 2.0, 4.0, 8.0])


if __name__ == "__main__":
    sys.exit(main())
