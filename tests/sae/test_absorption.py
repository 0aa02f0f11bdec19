"""sae.absorption: planted absorption (the rate equals the planted fraction), a planted split,
a clean SAE (no absorption), the vocabulary and a small run on the real model."""

from __future__ import annotations

import math

import pytest
import torch

from sae.absorption import (
    absorption_from_acts,
    bootstrap_mean_rate,
    letter_words,
    run_absorption,
    split_words,
)
from sae.architectures.base import build_sae
from sae.config import EvalConfig, SAEConfig
from sae.features.demo_db import random_sae

LETTERS = "abcd"
PER_LETTER = 60


def _words() -> list[str]:
    return [f" {c}w{i}" for c in LETTERS for i in range(PER_LETTER)]


def _planted(absorbed: set[int], split: set[int] = frozenset()) -> tuple[torch.Tensor, object]:
    """Activations x_w = 2 e_letter + u_w (orthonormal e, u) and a ReLU SAE on them.

    Latent L (< 4) reads and writes e_L, except that it is switched off on the words in `absorbed`
    (encoder -10 u_w) whose own token latent writes u_w + 2 e_L instead: it absorbed the letter.
    A word in `split` is read by a second letter latent (4 + L), the first one switched off there."""
    n_l, n_w = len(LETTERS), len(LETTERS) * PER_LETTER
    d = n_l + n_w
    x = torch.zeros(n_w, d)
    sae = build_sae(SAEConfig(architecture="relu", d_in=d, d_sae=2 * n_l + n_w, hook_name="x"))
    with torch.no_grad():
        for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec):
            p.zero_()
        for L in range(n_l):
            sae.W_enc[L, L], sae.W_dec[L, L] = 1.0, 1.0  # the letter latent
            sae.W_enc[L, n_l + L], sae.W_dec[n_l + L, L] = 1.0, 1.0  # its twin: same direction,
            sae.b_enc[n_l + L] = -2.5  # ... silent unless a split word's u_w adds to e_L
        for w in range(n_w):
            L, u, tok = w // PER_LETTER, n_l + w, 2 * n_l + w
            x[w, L], x[w, u] = 2.0, 1.0
            if w in absorbed or w in split:
                sae.W_enc[u, L] = -10.0  # the letter latent stays silent on this word
            if w in split:
                sae.W_enc[u, n_l + L] = 1.0  # ... and its twin fires instead
            sae.W_enc[u, tok] = math.sqrt(5.0) if w in absorbed else 1.0
            sae.W_dec[tok, u] = 1.0
            if w in absorbed:  # the token latent writes the letter too: it absorbed it
                sae.W_dec[tok] = (sae.W_dec[tok] + 2.0 * torch.eye(d)[L]) / math.sqrt(5.0)
    return x, sae.eval()


def _test_words() -> list[int]:
    return [i for i, t in enumerate(split_words(len(LETTERS) * PER_LETTER, seed=0).tolist()) if not t]


@pytest.mark.parametrize("every", [4, 3])
def test_planted_absorption_rate_equals_the_planted_fraction(every: int) -> None:
    absorbed = set(range(0, len(LETTERS) * PER_LETTER, every))
    x, sae = _planted(absorbed)
    m = absorption_from_acts(sae, x, _words(), seed=0)
    assert m.probe_test_accuracy == 1.0 and m.n_letters == 4
    test = _test_words()
    want = {}
    for L, c in enumerate(LETTERS):
        mine = [w for w in test if w // PER_LETTER == L]
        want[c] = sum(w in absorbed for w in mine) / len(mine)
    got = {p["letter"]: p["absorption_rate"] for p in m.per_letter}
    assert got == pytest.approx(want)
    assert m.mean_absorption_rate == pytest.approx(sum(want.values()) / 4)
    assert m.ci_low <= m.mean_absorption_rate <= m.ci_high and m.ci_high - m.ci_low < 0.3
    assert all(p["main_latents"] == [L] for L, p in enumerate(m.per_letter))  # the letter latent
    assert m.mean_absorption_fraction == pytest.approx(m.mean_absorption_rate)  # all-or-nothing here


def test_decoder_scale_and_b_dec_do_not_change_the_rate() -> None:
    # saekit folds activation normalisation into W_dec (rows of norm ~7 at layer 15) and has a
    # large b_dec: the same SAE with rows x7, codes / 7 and everything shifted by b_dec must agree.
    absorbed = set(range(0, len(LETTERS) * PER_LETTER, 4))
    x, sae = _planted(absorbed)
    want = absorption_from_acts(sae, x, _words(), seed=0)
    shift = torch.randn(x.shape[1], generator=torch.Generator().manual_seed(0)) * 5
    with torch.no_grad():
        sae.W_dec *= 7.0
        sae.W_enc /= 7.0
        sae.b_enc /= 7.0
        sae.b_dec.copy_(shift)
    got = absorption_from_acts(sae, x + shift, _words(), seed=0)
    assert got.mean_absorption_rate == pytest.approx(want.mean_absorption_rate) and want.mean_absorption_rate > 0.2
    assert [p["n_absorbed"] for p in got.per_letter] == [p["n_absorbed"] for p in want.per_letter]


def test_a_clean_sae_absorbs_nothing() -> None:
    x, sae = _planted(set())
    m = absorption_from_acts(sae, x, _words(), seed=0)
    assert m.mean_absorption_rate == 0.0 and (m.ci_low, m.ci_high) == (0.0, 0.0)
    assert m.mean_main_latents == 1.0


def test_a_split_letter_has_two_main_latents_and_is_not_absorbed() -> None:
    split = {w for w in range(len(LETTERS) * PER_LETTER) if w % 2}
    x, sae = _planted(set(), split)
    m = absorption_from_acts(sae, x, _words(), seed=0)
    assert m.mean_main_latents == 2.0
    assert [sorted(p["main_latents"]) for p in m.per_letter] == [[L, 4 + L] for L in range(4)]
    assert m.mean_absorption_rate == 0.0


def test_bootstrap_interval_covers_and_narrows() -> None:
    gen = torch.Generator().manual_seed(0)
    small = [torch.rand(20, generator=gen) < 0.3 for _ in range(5)]
    big = [torch.rand(2000, generator=gen) < 0.3 for _ in range(5)]
    lo_s, hi_s = bootstrap_mean_rate(small, seed=0)
    lo_b, hi_b = bootstrap_mean_rate(big, seed=0)
    assert lo_b < 0.3 < hi_b and hi_b - lo_b < hi_s - lo_s


def test_vocabulary_words(tokenizer) -> None:
    ids, words = letter_words(tokenizer)
    assert len(words) > 20_000 and all(w[0] == " " and w[1:].isalpha() and len(w) >= 3 for w in words)
    assert all(tokenizer.encode(w, add_special_tokens=False) == [i] for i, w in zip(ids[:200], words[:200], strict=True))
    few_ids, few = letter_words(tokenizer, max_words=100, seed=3)
    assert len(few) == 100 and set(few) <= set(words) and few == letter_words(tokenizer, 100, 3)[1]


def test_small_real_run(model) -> None:
    s = random_sae(d_sae=256, layer=3, k=8)
    m = run_absorption(model, s, EvalConfig(absorption_max_words=260))
    assert m.n_words == 260 and m.n_test_words == 78
    assert m.probe_test_accuracy > 3 / 26  # well above chance, even at layer 3
    assert m.n_letters > 0 and 0.0 <= m.ci_low <= m.mean_absorption_rate <= m.ci_high <= 1.0
    assert all(len(p["main_latents"]) >= 1 for p in m.per_letter)
