"""Write the accumulated statistics into one SQLite file (schema in `schema.py`), atomically.

The file is built under a temporary name and renamed over the destination only once it is
complete (`sae.atomic_io`), so a crash, a kill or Ctrl-C never leaves a half-written database
behind, and an existing database is replaced only when the caller allows it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae.atomic_io import atomic_write_with
from sae.features import schema
from sae.features.accumulate import FeatureAccumulator
from sae.features.lens import LogitLens
from sae.features.reservoir import Intervals
from sae.features.window import PAD


def _window_rows(
    feature: np.ndarray, bucket: np.ndarray, slot: np.ndarray, act: np.ndarray, row: np.ndarray,
    pos: np.ndarray, tok: np.ndarray, acts: np.ndarray, kind: int, vocab: Sequence[str],
) -> Iterator[tuple[Any, ...]]:
    """Rows for `examples`: drop window padding (outside the row) and record the centre index."""
    W = tok.shape[1]
    centre_full = W // 2
    for i in range(len(feature)):
        valid = tok[i] != PAD
        ids = tok[i][valid].astype("<i4")
        centre = int(centre_full - (~valid[:centre_full]).sum())
        text = "".join(vocab[t] if 0 <= t < len(vocab) else "" for t in ids.tolist())
        yield (
            int(feature[i]), kind, int(bucket[i]), int(slot[i]), float(act[i]), int(row[i]), int(pos[i]),
            centre, ids.tobytes(), acts[i][valid].astype("<f4").tobytes(), text,
        )


def write_feature_db(
    out_path: Path,
    acc: FeatureAccumulator,
    intervals: Intervals,
    dec_norm: torch.Tensor,
    lens: LogitLens | None,
    neighbours: tuple[torch.Tensor, torch.Tensor],
    cooc: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    vocab: Sequence[str],
    meta: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise FileExistsError(
            f"{out_path} already exists; pass --force (overwrite=True) to replace it, or choose another --out"
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "schema_version": schema.SCHEMA_VERSION, "hist_bins": int(acc.intervals.hist.shape[1])}

    def build(tmp: Path) -> None:
        # journal and sync off: the file is private until atomic_write_with fsyncs and renames it
        con = sqlite3.connect(tmp)
        try:
            con.execute("PRAGMA journal_mode=OFF")
            con.execute("PRAGMA synchronous=OFF")
            con.executescript(schema.TABLES)
            # the tables in the order the single writer always used, so row ids stay as before
            _write_features(con, acc, dec_norm, lens)
            _write_examples(con, acc, intervals, vocab)
            _write_intervals(con, acc, intervals)
            _write_decoder_tables(con, acc.d_sae, lens, neighbours, cooc)
            con.executemany("INSERT INTO vocab VALUES (?, ?)", enumerate(vocab))
            con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
            con.executescript(schema.INDEXES)
            con.execute("INSERT INTO meta VALUES ('complete', 'true')")
            con.commit()
        finally:
            con.close()

    return atomic_write_with(out_path, build)


def _write_decoder_tables(
    con: sqlite3.Connection,
    F: int,
    lens: LogitLens | None,
    neighbours: tuple[torch.Tensor, torch.Tensor],
    cooc: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
) -> None:
    """Logit lens, decoder neighbours and co-occurrence rankings."""
    if lens is not None:
        con.executemany("INSERT INTO logits VALUES (?,?,?,?)", _logit_rows(lens, F))
    nb_ids, nb_cos = (t.numpy() for t in neighbours)
    con.executemany(
        "INSERT INTO neighbours VALUES (?,?,?,?)",
        ((f, r + 1, int(nb_ids[f, r]), float(nb_cos[f, r])) for f in range(F) for r in range(nb_ids.shape[1])),
    )
    if cooc is not None:
        o, b, j = (t.cpu().numpy() for t in cooc)
        con.executemany(
            "INSERT INTO cooccurrence VALUES (?,?,?,?,?)",
            ((f, r + 1, int(o[f, r]), int(b[f, r]), float(j[f, r]))
             for f in range(F) for r in range(o.shape[1]) if o[f, r] >= 0),
        )


def _write_features(con: sqlite3.Connection, acc: FeatureAccumulator, dec_norm: torch.Tensor,
                    lens: LogitLens | None) -> None:
    n_fired = acc.n_fired.cpu().numpy()
    max_act = acc.max_act.cpu().numpy()
    mean_act = acc.mean_act().cpu().numpy()
    density = acc.density().cpu().numpy()
    width = acc.intervals.bin_width().cpu().numpy()
    used = acc.intervals.used_bins(acc.max_act).cpu().numpy()
    hist = acc.intervals.hist.cpu().numpy().astype("<i8")
    dnorm = dec_norm.float().cpu().numpy()
    rows = []
    for i in range(acc.d_sae):
        lens_cols: tuple[Any, ...] = (None, None, None)
        if lens is not None:
            lens_cols = (float(lens.hist_lo[i]), float(lens.hist_hi[i]), lens.hist[i].numpy().astype("<i8").tobytes())
        rows.append((
            i, int(n_fired[i]), float(density[i]), float(max_act[i]), float(mean_act[i]), int(n_fired[i] == 0),
            float(dnorm[i]), float(width[i]), hist[i, : used[i]].tobytes(), *lens_cols,
        ))
    con.executemany("INSERT INTO features VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)


def _write_examples(con: sqlite3.Connection, acc: FeatureAccumulator, intervals: Intervals,
                    vocab: Sequence[str]) -> None:
    """Top examples, then interval samples."""
    tk = {k: v.cpu().numpy() for k, v in acc.topk.sorted().items()}
    f_idx, r_idx = np.nonzero(np.isfinite(tk["act"]))
    con.executemany(
        "INSERT INTO examples VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        _window_rows(
            f_idx, r_idx, np.zeros_like(r_idx), tk["act"][f_idx, r_idx], tk["row"][f_idx, r_idx],
            tk["pos"][f_idx, r_idx], tk["ctx_tok"][f_idx, r_idx], tk["ctx_act"][f_idx, r_idx],
            schema.KIND_TOP, vocab,
        ),
    )
    iv_act = intervals.act.cpu().numpy()
    f_idx, b_idx, s_idx = np.nonzero(~np.isnan(iv_act))
    con.executemany(
        "INSERT INTO examples VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        _window_rows(
            f_idx, b_idx, s_idx, iv_act[f_idx, b_idx, s_idx], intervals.row.cpu().numpy()[f_idx, b_idx, s_idx],
            intervals.pos.cpu().numpy()[f_idx, b_idx, s_idx], intervals.ctx_tok.cpu().numpy()[f_idx, b_idx, s_idx],
            intervals.ctx_act.cpu().numpy()[f_idx, b_idx, s_idx], schema.KIND_INTERVAL, vocab,
        ),
    )


def _write_intervals(con: sqlite3.Connection, acc: FeatureAccumulator, intervals: Intervals) -> None:
    lo, hi, nev = (t.cpu().numpy() for t in (intervals.lo, intervals.hi, intervals.n_events))
    live = np.nonzero(acc.n_fired.cpu().numpy() > 0)[0]
    con.executemany(
        "INSERT INTO intervals VALUES (?,?,?,?,?)",
        ((int(f), j, float(lo[f, j]), float(hi[f, j]), int(nev[f, j])) for f in live for j in range(lo.shape[1])),
    )


def _logit_rows(lens: LogitLens, F: int) -> Iterator[tuple[int, int, int, float]]:
    """(feature, rank: +1.. for the top tokens, -1.. for the bottom ones, token id, value)."""
    for sign, ids, vals_ in ((1, lens.top_ids, lens.top_vals), (-1, lens.bottom_ids, lens.bottom_vals)):
        ids_np, vals_np = ids.numpy(), vals_.numpy()
        for f in range(F):
            for r in range(ids_np.shape[1]):
                yield f, sign * (r + 1), int(ids_np[f, r]), float(vals_np[f, r])
