"""Which contexts the explainer sees and which the judge is tested on, for one feature.

The explainer sees the feature's strongest windows (the first top examples) and a few interval
samples; the judge is tested on windows it never saw: the remaining top examples and interval
samples (activating), and windows stored for other latents (non-activating). A window of another
latent can still hold this one's activation: it is dropped when it overlaps one of this latent's
own stored windows, and, when a `check` is given (the subject model and SAE, see
`inactive_check`), when the latent fires anywhere in it. Without a check a latent of density d
is active in a 16-token window with probability about 16 d, which lowers the best detection
score reachable; the run's config records whether negatives were checked.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sae.features.db import Example, Feature, FeatureDB

Check = Callable[[int, list[list[int]]], list[bool]]  # (feature, windows' token ids) -> inactive?


@dataclass
class Window:
    """A context for the judge: token strings, and which tokens the feature is active on."""

    tokens: list[str]
    active: list[bool]
    token_ids: list[int]


@dataclass
class FeatureSamples:
    explain: list[Window]  # what the explainer reads
    positives: list[Window]  # held out: the feature is active in each
    negatives: list[Window]  # the feature is not active in any (checked or not, see above)


def _window(e: Example) -> Window:
    return Window(list(e.tokens), [a > 0 for a in e.acts], list(e.token_ids))


def split_examples(f: Feature, n_explain_top: int, n_explain_interval: int, n_score: int,
                   rng: random.Random) -> tuple[list[Window], list[Window]]:
    """(windows the explainer reads, held-out activating windows), no window in both."""
    intervals = [e for iv in reversed(f.intervals) for e in iv.examples if e.act > 0]  # strongest first
    explain = f.top_examples[:n_explain_top]
    # one sample from each of the strongest intervals: the explainer also sees weaker activations
    shown_iv: list[Example] = []
    for iv in reversed(f.intervals):
        if len(shown_iv) >= n_explain_interval:
            break
        if iv.examples:
            shown_iv.append(iv.examples[0])
    seen = {(e.row, e.pos) for e in explain + shown_iv}
    held = [e for e in f.top_examples[n_explain_top:] + intervals if (e.row, e.pos) not in seen]
    unique: dict[tuple[int, int], Example] = {}
    for e in held:
        unique.setdefault((e.row, e.pos), e)
    pool = list(unique.values())
    rng.shuffle(pool)
    return [_window(e) for e in explain + shown_iv], [_window(e) for e in pool[:n_score]]


def negative_windows(db: FeatureDB, f: Feature, n: int, live: list[int], rng: random.Random,
                     check: Check | None = None, max_tries: int = 200) -> list[Window]:
    """n windows stored for other latents that do not overlap this latent's windows (and pass `check`)."""
    span = max((len(e.token_ids) for e in f.top_examples), default=16)
    own = [(e.row, e.pos) for e in f.top_examples] + [(e.row, e.pos) for iv in f.intervals for e in iv.examples]
    own_rows: dict[int, list[int]] = {}
    for r, p in own:
        own_rows.setdefault(r, []).append(p)
    out: list[Window] = []
    others = [j for j in live if j != f.id]
    for _ in range(max_tries):
        if len(out) >= n or not others:
            break
        j = rng.choice(others)
        cands = db.examples(j, rng.choice(("top", "interval"))) or db.examples(j, "top")
        if not cands:
            continue
        e = rng.choice(cands)
        if any(abs(e.pos - p) <= span for p in own_rows.get(e.row, ())):
            continue
        if any(w.token_ids == e.token_ids for w in out):
            continue
        if check is not None and not check(f.id, [e.token_ids])[0]:
            continue
        out.append(Window(list(e.tokens), [False] * len(e.tokens), list(e.token_ids)))
    return out


def fuzzed(w: Window, rng: random.Random) -> Window:
    """The same window with as many tokens marked as it has active ones, but none of them active."""
    n = max(1, sum(w.active))
    idle = [k for k, a in enumerate(w.active) if not a and w.tokens[k].strip()]
    if not idle:
        idle = [k for k, a in enumerate(w.active) if not a]
    pick = set(rng.sample(idle, min(n, len(idle))))
    return Window(w.tokens, [k in pick for k in range(len(w.tokens))], w.token_ids)


def inactive_check(model: Any, sae_obj: Any) -> Check:
    """A check that runs the subject model and SAE on a window and says whether the latent stays at 0.

    The window is run on its own (no BOS, no preceding text), like the judge reads it; the same
    token filter as the database pass drops special tokens and the first token's norm outlier.
    """
    import torch

    from sae.features.source import extractor_for

    hook = sae_obj.cfg.hook_name
    extract = extractor_for(model, hook)

    def check(feature: int, windows: list[list[int]]) -> list[bool]:
        out = []
        with torch.no_grad():
            for ids in windows:
                res = extract(torch.tensor([ids]))
                acts = res.acts[hook]
                if acts.shape[0] == 0:
                    out.append(True)
                    continue
                codes = sae_obj.encode(acts.to(device=sae_obj.W_enc.device, dtype=sae_obj.W_enc.dtype))
                out.append(bool(codes[:, feature].max() <= 0))
        return out

    return check
