"""The feature database's SQLite schema: the one place it is written down.

One file per (SAE, token stream) pass, written by `build_feature_db` and read by `FeatureDB`.
Every table is keyed by `feature` (the latent index, 0..d_sae-1). Dead latents (never fired
in the pass) keep their row in `features` with `dead = 1`; they just have no examples.

Tables
------
meta(key TEXT PRIMARY KEY, value TEXT)
    JSON-encoded values. Keys: `schema_version` (int), `saekit_version`, `created` (ISO time),
    `sae_path`, `sae_cfg` (the SAE's SAEConfig as a dict), `sae_fingerprint` (sha256 of W_dec
    in float32, to notice a changed SAE), `model_name`, `hook_name`, `d_in`, `d_sae`,
    `n_tokens` (tokens analysed: the denominator of `density`), `n_rows`, `context_size`,
    `n_excluded_tokens` (special tokens and massive-norm outliers skipped), `config`
    (the FeaturesConfig), `hist_bins` (grid size G, see below), `cooccurrence` (how it was
    counted, or why not), `logit_lens` (how, or why not), `timings` (seconds per stage).

features(id INTEGER PRIMARY KEY, n_fired, density, max_act, mean_act, dead, dec_norm,
         hist_bin_width, hist BLOB, logit_lo, logit_hi, logit_hist BLOB)
    `n_fired`: tokens where the latent's activation is > 0; `density` = n_fired / n_tokens;
    `mean_act`: mean over the tokens where it fired; `dec_norm`: |W_dec[i]|.
    `hist`: int64 counts of non-zero activations in bins of width `hist_bin_width` starting at
    0 (bin j covers [j*w, (j+1)*w)); it covers [0, max_act] with between 33 and G bins. The
    counts are exact (see `reservoir.py` for how one pass achieves that).
    `logit_hist`: int64 counts of the logit-lens logits over the whole vocabulary, in equal
    bins from `logit_lo` to `logit_hi`.

examples(feature, kind, bucket, slot, act, row, pos, center, tokens BLOB, acts BLOB, text)
    kind 0: top activations, `bucket` = rank (0 = highest), `slot` = 0.
    kind 1: interval samples, `bucket` = interval index, `slot` = 0..examples_per_interval-1.
    `act`: the latent's activation on the centre token; `row`, `pos`: where in the analysed
    stream (row index, position in the row); `tokens`: int32 little-endian ids of the window
    (up to +-context_window tokens, clipped at the row's ends); `acts`: float32 little-endian
    activations of THIS latent on every window token (0 on skipped tokens such as BOS);
    `center`: index of the centre token in the window; `text`: the decoded window (for search).

intervals(feature, idx, lo, hi, n_events)
    `n_intervals` linearly spaced activation intervals over [0, max_act]; edges are snapped to
    the histogram grid (each edge within half a bin, i.e. < max_act/64, of the exact linear
    edge) so that the samples are an exact uniform sample of each interval; `n_events` = how
    many activations fell into it. The last interval includes `hi`.

logits(feature, rank, token_id, value)
    Logit lens of the decoder direction (through the final norm's weight and the unembedding):
    rank 1..n = the most positive logits, rank -1..-n = the most negative.

neighbours(feature, rank, other, cosine)      nearest latents by decoder cosine (rank 1 = closest)
cooccurrence(feature, rank, other, n_both, jaccard)
    latents that fire on the same tokens, ranked by Jaccard = n_both / (n_i + n_j - n_both).

vocab(id INTEGER PRIMARY KEY, token TEXT)    every token id decoded on its own (for display)

explanations(feature, run_key, explainer, judge, explanation, detection, fuzzing, detection_auc,
             fuzzing_auc, n_detection, n_fuzzing, n_unparsable, seconds, created, config)
    Written by `saekit autointerp` (`sae/autointerp/`), one row per (feature, run): `run_key`
    is a hash of the explainer id, the judge id and the autointerp settings, so a re-run with
    the same ones skips the feature and other explainers add rows beside it. `detection` and
    `fuzzing` are balanced accuracies (0.5 = chance) of the judge's yes/no answers; the `_auc`
    columns are the ROC AUC of its yes-probabilities where the judge gives them (local models),
    else NULL; `n_detection` / `n_fuzzing` count the judged contexts, `n_unparsable` the answers
    that could not be read (each counted as wrong); `seconds` the wall time of the feature;
    `config` the settings as JSON. Schema version 2 added this table: a version-1 file opens
    read-only as before (no explanations), and the table is added, and `schema_version` set to 2,
    the first time autointerp writes into it.

Size: 12-15 KB per feature with the defaults (measured by `scripts/bench_features.py`: 4,608
latents, 4k-16k tokens of the builtin corpus): ~80% is `examples` (up to 20 top + 50 interval
windows of 17 tokens: int32 ids, float32 activations and the text), ~0.8 KB `features` (stats,
histograms), ~0.9 KB `logits` with its index, ~0.5 KB neighbours and co-occurrence; plus
~1.5 MB for the vocabulary once. A 4,608-latent SAE gives a 55-70 MB file.
"""

from __future__ import annotations

SCHEMA_VERSION = 2
# Versions `FeatureDB` opens: 1 lacks only the `explanations` table (read as empty).
READABLE_VERSIONS = (1, 2)

# Kinds of rows in `examples`.
KIND_TOP = 0
KIND_INTERVAL = 1

# Schema 2's one addition; `IF NOT EXISTS` so that autointerp can add it to a version-1 file.
EXPLANATIONS = """
CREATE TABLE IF NOT EXISTS explanations (
    feature INTEGER NOT NULL,
    run_key TEXT NOT NULL,
    explainer TEXT NOT NULL,
    judge TEXT NOT NULL,
    explanation TEXT NOT NULL,
    detection REAL,
    fuzzing REAL,
    detection_auc REAL,
    fuzzing_auc REAL,
    n_detection INTEGER NOT NULL,
    n_fuzzing INTEGER NOT NULL,
    n_unparsable INTEGER NOT NULL,
    seconds REAL NOT NULL,
    created TEXT NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (feature, run_key)
) WITHOUT ROWID;
"""

TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE features (
    id INTEGER PRIMARY KEY,
    n_fired INTEGER NOT NULL,
    density REAL NOT NULL,
    max_act REAL NOT NULL,
    mean_act REAL NOT NULL,
    dead INTEGER NOT NULL,
    dec_norm REAL NOT NULL,
    hist_bin_width REAL NOT NULL,
    hist BLOB NOT NULL,
    logit_lo REAL,
    logit_hi REAL,
    logit_hist BLOB
);
CREATE TABLE examples (
    feature INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    act REAL NOT NULL,
    row INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    center INTEGER NOT NULL,
    tokens BLOB NOT NULL,
    acts BLOB NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (feature, kind, bucket, slot)
) WITHOUT ROWID;
CREATE TABLE intervals (
    feature INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    lo REAL NOT NULL,
    hi REAL NOT NULL,
    n_events INTEGER NOT NULL,
    PRIMARY KEY (feature, idx)
) WITHOUT ROWID;
CREATE TABLE logits (
    feature INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    token_id INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (feature, rank)
) WITHOUT ROWID;
CREATE TABLE neighbours (
    feature INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    other INTEGER NOT NULL,
    cosine REAL NOT NULL,
    PRIMARY KEY (feature, rank)
) WITHOUT ROWID;
CREATE TABLE cooccurrence (
    feature INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    other INTEGER NOT NULL,
    n_both INTEGER NOT NULL,
    jaccard REAL NOT NULL,
    PRIMARY KEY (feature, rank)
) WITHOUT ROWID;
CREATE TABLE vocab (id INTEGER PRIMARY KEY, token TEXT NOT NULL);
""" + EXPLANATIONS

# Built after the bulk insert (faster than maintaining them row by row).
INDEXES = """
CREATE INDEX features_density ON features(density);
CREATE INDEX features_max_act ON features(max_act);
CREATE INDEX logits_token ON logits(token_id, value);
CREATE INDEX vocab_token ON vocab(token);
"""

REQUIRED_TABLES = ("meta", "features", "examples", "intervals", "logits", "neighbours", "cooccurrence", "vocab")
