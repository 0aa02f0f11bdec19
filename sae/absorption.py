"""First-letter feature absorption (Chanin et al. 2024, "A is for Absorption"; SAEBench's metric).

    metrics = run_absorption(model, sae, EvalConfig(absorption=True))   # AbsorptionMetrics

1. Words: vocabulary tokens that are a leading space and >= 2 ASCII letters (one token each), up
   to `absorption_max_words`, split into train and held-out test words.
2. Each word is read in a fixed prompt (a few in-context examples, then `PROMPT`); the residual at
   the SAE's hook at the word's position is its activation.
3. A 26-way logistic-regression probe on the train words' activations (an isotropic L2 penalty,
   as SAEBench's probe, so its rows are geometric directions) gives each letter a direction:
   the ground truth for "this token starts with L".
4. Main latents of a letter: among the latents whose decoder direction is closest (cosine) to the
   probe's, picked greedily by F1 of "any of them fires" for the letter on train words, while a
   latent adds >= 0.03 F1 (SAEBench's feature-split rule; more than one = the letter is split).
5. On each test word the probe classifies right: full absorption when no main latent fires, and the
   latent with the largest probe projection (activation x its decoder row along the probe) has
   cosine >= 0.025 and carries >= 0.4 of the activation's own projection on the probe direction
   (the activation less b_dec: the part the latents have to carry; SAEBench takes the raw
   activation, which differs by b_dec's projection). The
   letter's rate is the fraction of such words; the headline is the mean over letters, with a
   bootstrap 95% interval (words resampled within each letter). SAEBench's partial score
   (`absorption_fraction`) is reported beside it.
"""

from __future__ import annotations

import random
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sae.config import EvalConfig
from sae.eval_metrics import AbsorptionMetrics
from sae.linear_probe import fit_probe

if TYPE_CHECKING:
    from sae.architectures.base import SparseAutoencoder

LETTERS = string.ascii_lowercase
PROMPT = "{word} has the first letter:"
ICL_WORDS = (" tiger", " moon", " apple")  # fixed examples, so every prompt has the same length
TEST_FRACTION = 0.3
FULL_COS = 0.025  # top absorbing latent's cosine with the probe (SAEBench)
FRACTION_COS = 0.1  # cosine of each latent counted in the partial absorption fraction (SAEBench)
PROJ_SHARE = 0.4  # share of the probe projection the absorbing latent(s) must carry (SAEBench)
MAX_ABSORBERS = 3  # latents that may share a partial absorption (SAEBench)
F1_JUMP = 0.03  # a further main latent must add this much F1 (SAEBench's split rule)
MAX_MAIN = 10
N_CANDIDATES = 20  # latents closest to the probe direction considered as main latents
MIN_WORDS = 3  # a letter needs this many correctly probed test words to count in the mean
N_BOOTSTRAP = 1000
_EPS = 1e-8
_BATCH = 64


@dataclass
class LetterResult:
    letter: str
    main_latents: list[int]
    absorbed_W: Tensor  # bool, one per correctly probed test word
    fraction_W: Tensor  # float, SAEBench's partial absorption fraction per word


def letter_words(tokenizer: Any, max_words: int = 0, seed: int = 0) -> tuple[list[int], list[str]]:
    """(token ids, words): single tokens that decode to a space and >= 2 ASCII letters."""
    vocab = sorted(tokenizer.get_vocab().values())
    pairs = []
    for i in vocab:
        text = tokenizer.decode([i])
        if len(text) >= 3 and text[0] == " " and text[1:].isascii() and text[1:].isalpha():
            pairs.append((i, text))
    if max_words and len(pairs) > max_words:
        pairs = sorted(random.Random(seed).sample(pairs, max_words))
    if not pairs:
        raise ValueError("the tokenizer has no single-token words (a space and ASCII letters); absorption "
                         "needs an English vocabulary: turn it off (EvalConfig.absorption=False)")
    return [i for i, _ in pairs], [w for _, w in pairs]


def split_words(n: int, seed: int, test_fraction: float = TEST_FRACTION) -> Tensor:
    """bool [n]: True for a train word."""
    gen = torch.Generator().manual_seed(seed + 1)
    is_train = torch.ones(n, dtype=torch.bool)
    is_train[torch.randperm(n, generator=gen)[: max(1, round(n * test_fraction))]] = False
    return is_train


@torch.no_grad()
def word_activations(model: Any, hook: str, word_ids: Sequence[int]) -> Tensor:
    """[N, d_in] fp32: the residual at `hook` at each word's position in the prompt."""
    from sae.extract import ActivationExtractor

    tok = model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else 0
    icl = "".join(PROMPT.format(word=w) + f" {w.strip()[0].upper()}\n" for w in ICL_WORDS)
    prefix = [bos, *tok(icl, add_special_tokens=False).input_ids]
    before, _after = PROMPT.split("{word}")
    prefix += tok(before, add_special_tokens=False).input_ids if before else []
    # The rest of the prompt (`after`) comes later than the word: a causal model's residual at the
    # word cannot see it, so it is not run.
    extractor = ActivationExtractor(model, [hook])
    out = []
    for b0 in range(0, len(word_ids), _BATCH):
        ids = word_ids[b0 : b0 + _BATCH]
        tokens_BT = torch.tensor([[*prefix, i] for i in ids])
        out.append(extractor.raw(tokens_BT)[hook][:, len(prefix)].float().cpu())
    return torch.cat(out)


def _f1(pred_N: Tensor, y_N: Tensor) -> float:
    tp = float((pred_N & y_N).sum())
    return 2 * tp / max(float(pred_N.sum() + y_N.sum()), 1.0)


def main_latents(fires_NF: Tensor, y_N: Tensor, cos_F: Tensor) -> list[int]:
    """The letter's main latents (module doc, step 4), from train words' firing [N, F] and labels."""
    candidates = cos_F.topk(min(N_CANDIDATES, cos_F.numel())).indices.tolist()
    chosen: list[int] = []
    covered, best = torch.zeros_like(y_N), 0.0
    while len(chosen) < MAX_MAIN:
        gains = [(_f1(covered | fires_NF[:, c], y_N), c) for c in candidates if c not in chosen]
        if not gains:
            break
        f1, c = max(gains)
        if chosen and f1 - best < F1_JUMP:
            break
        chosen.append(c)
        covered, best = covered | fires_NF[:, c], f1
    return chosen


def score_words(codes_WF: Tensor, x_WD: Tensor, probe_dir_D: Tensor, dec_FD: Tensor,
                main: list[int]) -> tuple[Tensor, Tensor]:
    """(full absorption [W] bool, partial absorption fraction [W]) for one letter's words.

    `x_WD` is the activation less the SAE's b_dec: the part its latents have to carry."""
    cos_F = torch.nn.functional.normalize(dec_FD, dim=-1) @ probe_dir_D
    # Each latent's share of the probe projection: activation x its decoder row along the probe.
    # (SAEBench writes activation x cosine, the same for unit-norm decoder rows; saekit folds the
    # activation normalisation into W_dec, so its rows are not unit.)
    proj_WF = codes_WF * (dec_FD @ probe_dir_D)
    x_proj_W = x_WD @ probe_dir_D
    main_fires_W = (codes_WF[:, main] > _EPS).any(-1)
    top_W, top_F = proj_WF.max(-1)
    full_W = (~main_fires_W & (cos_F[top_F] >= FULL_COS) & (x_proj_W > 0)
              & (top_W >= PROJ_SHARE * x_proj_W))
    main_proj_W = proj_WF[:, main].sum(-1)
    others_WF = proj_WF.clone()
    others_WF[:, main] = 0
    others_WF[:, cos_F < FRACTION_COS] = 0
    absorbers_W = others_WF.clamp_min(0).topk(min(MAX_ABSORBERS, others_WF.shape[1]), dim=-1).values.sum(-1)
    enough_W = (absorbers_W >= PROJ_SHARE * x_proj_W) & (main_proj_W < x_proj_W)
    partial_W = torch.minimum(absorbers_W, x_proj_W - main_proj_W)
    fraction_W = (partial_W / (partial_W + main_proj_W).clamp_min(_EPS)).clamp(0, 1)
    fraction_W = torch.where(main_proj_W <= 0, torch.ones_like(fraction_W), fraction_W)
    return full_W, torch.where(enough_W, fraction_W, torch.zeros_like(fraction_W))


def bootstrap_mean_rate(flags: Sequence[Tensor], seed: int, n: int = N_BOOTSTRAP) -> tuple[float, float]:
    """95% interval of the mean over letters of each letter's rate, resampling words within letters."""
    gen = torch.Generator().manual_seed(seed)
    total_B = torch.zeros(n, dtype=torch.float64)
    for f in flags:
        idx = torch.randint(len(f), (n, len(f)), generator=gen)
        total_B += f.double()[idx].mean(1)
    mean_B = total_B / max(len(flags), 1)
    lo, hi = torch.quantile(mean_B, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return lo, hi


@torch.no_grad()
def absorption_from_acts(sae: SparseAutoencoder, x_ND: Tensor, words: Sequence[str], seed: int = 0,
                         is_train_N: Tensor | None = None) -> AbsorptionMetrics:
    """Steps 3-5 of the module doc on given activations ([N, d_in], one per word)."""
    y_N = torch.tensor([LETTERS.index(w.strip()[0].lower()) for w in words])
    is_train = split_words(len(words), seed) if is_train_N is None else is_train_N
    x = x_ND.float()
    probe = fit_probe(x[is_train], y_N[is_train], len(LETTERS), standardize=False)
    codes_NF = sae.encode(x.to(sae.device, sae.dtype)).float().cpu()
    dec_FD = sae.W_dec.detach().float().cpu()
    carried_ND = x - sae.b_dec.detach().float().cpu()  # what the latents must carry
    correct_N = (probe.predict(x) == y_N) & ~is_train
    letters = []
    for c, letter in enumerate(LETTERS):
        tp = correct_N & (y_N == c)
        if int(tp.sum()) < MIN_WORDS:
            continue
        probe_dir_D = torch.nn.functional.normalize(probe.weight_CD[c], dim=0)
        cos_F = torch.nn.functional.normalize(dec_FD, dim=-1) @ probe_dir_D
        main = main_latents(codes_NF[is_train] > _EPS, y_N[is_train] == c, cos_F)
        full_W, frac_W = score_words(codes_NF[tp], carried_ND[tp], probe_dir_D, dec_FD, main)
        letters.append(LetterResult(letter, main, full_W, frac_W))
    return _summarise(letters, probe.accuracy(x[~is_train], y_N[~is_train]), len(words),
                      int(is_train.sum()), seed)


def _summarise(letters: list[LetterResult], probe_acc: float, n_words: int, n_train: int,
               seed: int) -> AbsorptionMetrics:
    per_letter = [{
        "letter": r.letter,
        "n_true_positives": len(r.absorbed_W),
        "n_absorbed": int(r.absorbed_W.sum()),
        "absorption_rate": float(r.absorbed_W.float().mean()),
        "absorption_fraction": float(r.fraction_W.mean()),
        "main_latents": r.main_latents,
    } for r in letters]
    m = AbsorptionMetrics(prompt_template=PROMPT, n_words=n_words, n_train_words=n_train,
                          n_test_words=n_words - n_train, probe_test_accuracy=probe_acc,
                          n_letters=len(letters), per_letter=per_letter)
    if letters:
        m.mean_absorption_rate = sum(p["absorption_rate"] for p in per_letter) / len(letters)
        m.mean_absorption_fraction = sum(p["absorption_fraction"] for p in per_letter) / len(letters)
        m.mean_main_latents = sum(len(r.main_latents) for r in letters) / len(letters)
        m.ci_low, m.ci_high = bootstrap_mean_rate([r.absorbed_W for r in letters], seed)
    return m


def run_absorption(model: Any, sae: SparseAutoencoder, cfg: EvalConfig | None = None) -> AbsorptionMetrics:
    """The whole pass (module doc) at the SAE's hook."""
    start = time.perf_counter()
    cfg = cfg or EvalConfig()
    ids, words = letter_words(model.tokenizer, cfg.absorption_max_words, cfg.quality_seed)
    x_ND = word_activations(model, sae.cfg.hook_name, ids)
    metrics = absorption_from_acts(sae, x_ND, words, cfg.quality_seed)
    metrics.seconds = time.perf_counter() - start
    return metrics
