"""`FeatureDB`: read a feature database (schema in `schema.py`) without torch.

Opening checks everything a reader could trip on (missing file, not SQLite, not a saekit
database, another schema version, an unfinished build) and raises `FeatureDBError` with what
is wrong and the command that fixes it. One instance may be shared across threads (the
explorer caches it): the connection is read-only and guarded by a lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sae.features import schema


class FeatureDBError(ValueError):
    """A feature database that cannot be read, or that does not match the SAE or model."""


def _fix(path: Path, sae_path: str | None = None) -> str:
    sae = sae_path or "SAE_DIR"
    return f"build it with `saekit analyze {sae} --tokens 200000 --out {path}`"


def _elsewhere(path: Path) -> str:
    """The fix for a file that is not ours: never suggest writing over it."""
    new = path.with_name("features.sqlite" if path.name != "features.sqlite" else "features-new.sqlite")
    return f"it was left untouched. Open the file `saekit analyze` wrote, or {_fix(new)}"


@dataclass
class Example:
    """One context window: its tokens, and the latent's activation on each of them."""

    feature: int
    kind: str  # "top" or "interval"
    bucket: int  # rank (top) or interval index
    act: float  # activation on the centre token
    row: int
    pos: int
    center: int  # index of the centre token in `tokens`
    token_ids: list[int]
    tokens: list[str]
    acts: list[float]
    text: str


@dataclass
class Interval:
    index: int
    lo: float
    hi: float
    n_events: int
    examples: list[Example] = field(default_factory=list)


@dataclass
class FeatureSummary:
    id: int
    n_fired: int
    density: float
    max_act: float
    mean_act: float
    dead: bool
    dec_norm: float


@dataclass
class Feature(FeatureSummary):
    """Everything the database knows about one latent."""

    top_examples: list[Example] = field(default_factory=list)
    intervals: list[Interval] = field(default_factory=list)
    hist_edges: list[float] = field(default_factory=list)  # len(hist_counts) + 1
    hist_counts: list[int] = field(default_factory=list)
    logit_edges: list[float] = field(default_factory=list)
    logit_counts: list[int] = field(default_factory=list)
    top_logits: list[tuple[int, str, float]] = field(default_factory=list)  # (token id, token, logit)
    bottom_logits: list[tuple[int, str, float]] = field(default_factory=list)
    neighbours: list[tuple[int, float]] = field(default_factory=list)  # (latent, decoder cosine)
    cooccurring: list[tuple[int, int, float]] = field(default_factory=list)  # (latent, n_both, jaccard)


@dataclass
class LogitHit:
    feature: int
    token_id: int
    token: str
    value: float
    rank: int


@dataclass
class TextHit:
    feature: int
    act: float
    text: str
    kind: str


@dataclass
class Explanation:
    """One autointerp result for a latent (see `schema.py`, table `explanations`)."""

    feature: int
    explainer: str
    judge: str
    explanation: str
    detection: float | None  # balanced accuracy, 0.5 = chance
    fuzzing: float | None
    detection_auc: float | None
    fuzzing_auc: float | None
    n_detection: int
    n_fuzzing: int
    n_unparsable: int
    seconds: float
    created: str
    config: dict[str, Any]


_EXPLANATION_COLS = ("feature, explainer, judge, explanation, detection, fuzzing, detection_auc, fuzzing_auc, "
                     "n_detection, n_fuzzing, n_unparsable, seconds, created, config")


_SUMMARY_COLS = "id, n_fired, density, max_act, mean_act, dead, dec_norm"


class FeatureDB:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._vocab: list[str] | None = None
        p = self.path
        if not p.exists():
            raise FeatureDBError(f"no feature database at {p}: {_fix(p)}")
        if p.is_dir():
            raise FeatureDBError(f"{p} is a folder, not a feature database file; {_fix(p / 'features.sqlite', str(p))}")
        with open(p, "rb") as fh:
            header = fh.read(16)
        if header != b"SQLite format 3\x00":
            raise FeatureDBError(f"{p} is not a SQLite file (is it the right path?); {_elsewhere(p)}")
        try:
            self._con = sqlite3.connect(p.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
            tables = {r[0] for r in self._con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as e:
            raise FeatureDBError(f"{p} is a damaged SQLite file ({e}); {_fix(p)}") from e
        missing = [t for t in schema.REQUIRED_TABLES if t not in tables]
        if "meta" not in tables:
            raise FeatureDBError(f"{p} is a SQLite file but not a saekit feature database; {_elsewhere(p)}")
        self.meta: dict[str, Any] = self._read_meta()
        sae_path = self.meta.get("sae_path")
        version = self.meta.get("schema_version")
        if version not in schema.READABLE_VERSIONS:
            newer = isinstance(version, int) and version > schema.SCHEMA_VERSION
            raise FeatureDBError(
                f"{p} has feature-database schema version {version}, but this saekit reads versions "
                f"{', '.join(map(str, schema.READABLE_VERSIONS))}: " + ("upgrade saekit, or re-" if newer else "re-")
                + _fix(p, sae_path)
            )
        # version 1 lacks only `explanations`: it reads as "no explanations yet"
        self.has_explanations_table = "explanations" in tables
        if missing:
            raise FeatureDBError(f"{p} is missing tables {missing} (damaged?); re-{_fix(p, sae_path)}")
        if self.meta.get("complete") is not True:
            raise FeatureDBError(f"{p} was not finished (the build stopped early); re-{_fix(p, sae_path)}")
        self.n_features = int(self._one("SELECT COUNT(*) FROM features")[0])
        if self.n_features != int(self.meta.get("d_sae", -1)):
            raise FeatureDBError(
                f"{p} lists {self.n_features} latents but its SAE has d_sae={self.meta.get('d_sae')} (damaged?); "
                f"re-{_fix(p, sae_path)}"
            )

    # ------------------------------------------------------------------ plumbing

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._con.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as e:
                raise FeatureDBError(f"reading {self.path} failed ({e}); the file may be damaged: "
                                     f"re-{_fix(self.path, self.meta.get('sae_path') if hasattr(self, 'meta') else None)}") from e

    def _one(self, sql: str, args: tuple = ()) -> tuple:
        rows = self._query(sql, args)
        return rows[0] if rows else ()

    def _read_meta(self) -> dict[str, Any]:
        out = {}
        for k, v in self._query("SELECT key, value FROM meta"):
            try:
                out[k] = json.loads(v)
            except (TypeError, json.JSONDecodeError):
                out[k] = v
        return out

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> FeatureDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"FeatureDB({str(self.path)!r}: {self.n_features} latents of {self.meta.get('hook_name')} "
                f"on {self.meta.get('n_tokens')} tokens)")

    # ------------------------------------------------------------------ vocabulary

    @property
    def vocab(self) -> list[str]:
        if self._vocab is None:
            rows = self._query("SELECT id, token FROM vocab ORDER BY id")
            self._vocab = [t for _, t in rows]
        return self._vocab

    def token_str(self, token_id: int) -> str:
        v = self.vocab
        return v[token_id] if 0 <= token_id < len(v) else f"<{token_id}>"

    # ------------------------------------------------------------------ one feature

    def _check_id(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < self.n_features:
            raise FeatureDBError(f"feature {i} does not exist: this database has features 0..{self.n_features - 1}")
        return i

    def summary(self, i: int) -> FeatureSummary:
        r = self._one(f"SELECT {_SUMMARY_COLS} FROM features WHERE id = ?", (self._check_id(i),))
        return FeatureSummary(int(r[0]), int(r[1]), r[2], r[3], r[4], bool(r[5]), r[6])

    def max_activation(self, i: int) -> float:
        return float(self._one("SELECT max_act FROM features WHERE id = ?", (self._check_id(i),))[0])

    def _examples(self, i: int, kind: int) -> list[Example]:
        rows = self._query(
            "SELECT bucket, slot, act, row, pos, center, tokens, acts, text FROM examples "
            "WHERE feature = ? AND kind = ? ORDER BY bucket, slot", (i, kind),
        )
        out = []
        for bucket, _slot, act, row, pos, center, tok_b, act_b, text in rows:
            ids = np.frombuffer(tok_b, dtype="<i4").tolist()
            out.append(Example(
                i, "top" if kind == schema.KIND_TOP else "interval", bucket, act, row, pos, center, ids,
                [self.token_str(t) for t in ids], np.frombuffer(act_b, dtype="<f4").tolist(), text,
            ))
        return out

    def examples(self, i: int, kind: str = "top") -> list[Example]:
        """Latent i's stored windows of one kind: "top" (by rank) or "interval" (by interval)."""
        if kind not in ("top", "interval"):
            raise FeatureDBError(f"example kind {kind!r} does not exist; use 'top' or 'interval'")
        return self._examples(self._check_id(i), schema.KIND_TOP if kind == "top" else schema.KIND_INTERVAL)

    def feature(self, i: int) -> Feature:
        i = self._check_id(i)
        r = self._one(
            f"SELECT {_SUMMARY_COLS}, hist_bin_width, hist, logit_lo, logit_hi, logit_hist FROM features WHERE id = ?",
            (i,),
        )
        f = Feature(int(r[0]), int(r[1]), r[2], r[3], r[4], bool(r[5]), r[6])
        width, hist_b, lo, hi, lhist_b = r[7:]
        f.hist_counts = np.frombuffer(hist_b, dtype="<i8").tolist()
        f.hist_edges = [k * width for k in range(len(f.hist_counts) + 1)]
        if lhist_b is not None:
            f.logit_counts = np.frombuffer(lhist_b, dtype="<i8").tolist()
            n = len(f.logit_counts)
            f.logit_edges = [lo + (hi - lo) * k / n for k in range(n + 1)]
        f.top_examples = self._examples(i, schema.KIND_TOP)
        samples = self._examples(i, schema.KIND_INTERVAL)
        for idx, lo_, hi_, n_ev in self._query(
            "SELECT idx, lo, hi, n_events FROM intervals WHERE feature = ? ORDER BY idx", (i,)
        ):
            f.intervals.append(Interval(idx, lo_, hi_, n_ev, [e for e in samples if e.bucket == idx]))
        for rank, tid, value in self._query("SELECT rank, token_id, value FROM logits WHERE feature = ? ORDER BY rank", (i,)):
            (f.top_logits if rank > 0 else f.bottom_logits).append((tid, self.token_str(tid), value))
        f.top_logits.sort(key=lambda t: -t[2])
        f.bottom_logits.sort(key=lambda t: t[2])
        f.neighbours = [(o, c) for o, c in self._query(
            "SELECT other, cosine FROM neighbours WHERE feature = ? ORDER BY rank", (i,))]
        f.cooccurring = [(o, n, j) for o, n, j in self._query(
            "SELECT other, n_both, jaccard FROM cooccurrence WHERE feature = ? ORDER BY rank", (i,))]
        return f

    # ------------------------------------------------------------------ many features

    def summaries(self) -> dict[str, np.ndarray]:
        """Column arrays over all latents (id, n_fired, density, max_act, mean_act, dead, dec_norm)."""
        rows = self._query(f"SELECT {_SUMMARY_COLS} FROM features ORDER BY id")
        cols = list(zip(*rows, strict=True)) if rows else [[]] * 7
        names = [c.strip() for c in _SUMMARY_COLS.split(",")]
        out = {n: np.asarray(c) for n, c in zip(names, cols, strict=True)}
        out["dead"] = out["dead"].astype(bool)
        return out

    def top_logit_tokens(self, n: int = 3) -> dict[int, list[str]]:
        """Each latent's n most positive logit-lens tokens (for tables)."""
        out: dict[int, list[str]] = {}
        for f, tid in self._query("SELECT feature, token_id FROM logits WHERE rank BETWEEN 1 AND ? ORDER BY feature, rank", (n,)):
            out.setdefault(f, []).append(self.token_str(tid))
        return out

    def search_logit(self, token: str, *, limit: int = 50, positive: bool = True) -> list[LogitHit]:
        """Latents whose logit lens promotes (or, positive=False, suppresses) a token.

        Matches token strings exactly first; if none match, ignoring case and surrounding spaces.
        """
        ids = [r[0] for r in self._query("SELECT id FROM vocab WHERE token = ?", (token,))]
        if not ids:
            ids = [r[0] for r in self._query("SELECT id FROM vocab WHERE lower(trim(token)) = lower(trim(?))", (token,))]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        cond, order = ("rank > 0", "value DESC") if positive else ("rank < 0", "value ASC")
        rows = self._query(
            f"SELECT feature, token_id, value, rank FROM logits WHERE token_id IN ({marks}) AND {cond} "
            f"ORDER BY {order} LIMIT ?", (*ids, limit),
        )
        return [LogitHit(f, t, self.token_str(t), v, r) for f, t, v, r in rows]

    def search_text(self, text: str, *, limit: int = 50) -> list[TextHit]:
        """Latents whose stored examples contain `text` (case-insensitive), by best activation."""
        if not text:
            return []
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._query(
            "SELECT feature, MAX(act), text, kind FROM examples WHERE text LIKE ? ESCAPE '\\' "
            "GROUP BY feature ORDER BY MAX(act) DESC LIMIT ?", (pattern, limit),
        )
        return [TextHit(f, a, t, "top" if k == schema.KIND_TOP else "interval") for f, a, t, k in rows]

    # ------------------------------------------------------------------ autointerp

    def _explanation_rows(self, where: str, args: tuple) -> list[Explanation]:
        if not self.has_explanations_table:
            return []
        rows = self._query(f"SELECT {_EXPLANATION_COLS} FROM explanations {where}", args)
        return [Explanation(*r[:-1], json.loads(r[-1])) for r in rows]

    def explanations(self, i: int) -> list[Explanation]:
        """Latent i's autointerp explanations, best detection score first (empty if none)."""
        return self._explanation_rows("WHERE feature = ? ORDER BY detection DESC, created DESC",
                                      (self._check_id(i),))

    def all_explanations(self) -> list[Explanation]:
        """Every stored explanation, by feature."""
        return self._explanation_rows("ORDER BY feature, detection DESC", ())

    def search_explanations(self, text: str, *, limit: int = 50) -> list[Explanation]:
        """Explanations containing `text` (case-insensitive), best detection score first."""
        if not text:
            return []
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return self._explanation_rows("WHERE explanation LIKE ? ESCAPE '\\' ORDER BY detection DESC LIMIT ?",
                                      (pattern, limit))

    # ------------------------------------------------------------------ consistency

    def check_sae(self, sae) -> None:
        """Raise FeatureDBError unless `sae` is the SAE this database was built from."""
        from sae.features.build import sae_fingerprint

        where = self.meta.get("sae_path", "the SAE")
        if sae.cfg.d_sae != self.meta.get("d_sae") or sae.cfg.d_in != self.meta.get("d_in"):
            raise FeatureDBError(
                f"SAE/database mismatch: the SAE has d_in={sae.cfg.d_in}, d_sae={sae.cfg.d_sae}, the database "
                f"d_in={self.meta.get('d_in')}, d_sae={self.meta.get('d_sae')}; re-{_fix(self.path, where)}"
            )
        if sae.cfg.hook_name != self.meta.get("hook_name"):
            raise FeatureDBError(
                f"SAE/database mismatch: the SAE reads {sae.cfg.hook_name}, the database was built on "
                f"{self.meta.get('hook_name')}; re-{_fix(self.path, where)}"
            )
        if sae_fingerprint(sae) != self.meta.get("sae_fingerprint"):
            raise FeatureDBError(
                f"SAE/database mismatch: the SAE at {where} has changed since {self.path} was built "
                f"(its decoder weights differ); re-{_fix(self.path, where)}"
            )
