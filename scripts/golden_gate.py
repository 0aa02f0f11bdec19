"""Golden Gate demo: find the Golden Gate Bridge / San Francisco feature(s) of an SAE and clamp them.

    python scripts/golden_gate.py --sae runs/demo/sae
    python scripts/golden_gate.py --sae runs/demo/sae --strengths 1 2 4 --n-prompts 20

1. contrastive search: Golden Gate / San Francisco texts vs other landmarks and cities, ranked by
   mean and by max activation difference; candidates' top examples are printed;
2. candidates are re-ranked by how much clamping them raises the next-token probability of the
   concept's words on neutral prompts (an output score after Arad et al. 2025);
3. a sweep clamps the best on 20 neutral prompts over strengths (x max activation) beside the
   unsteered model and a CAA vector, and reports the mention rate (bridge / Golden Gate /
   San Francisco) and the perplexity of the steered text under the unsteered model.
Targets: mention rate >= 70% at the best strength with perplexity <= 2x unsteered; unsteered <= 5%.
"""

from __future__ import annotations

import sys

from _experiment import run

from steering.reference_experiments import golden_gate


def main(argv: list[str] | None = None) -> int:
    return run(__doc__, golden_gate, "mention rate", argv, out_dir="runs/golden_gate")


if __name__ == "__main__":
    sys.exit(main())
