"""Autointerp results into the feature database (table `explanations`, schema in `sae/features/schema.py`).

The database is otherwise written once, atomically, by `saekit analyze`; this is its one
incremental writer. Each feature's row is committed on its own, so an interrupted run keeps
every finished feature and a re-run with the same settings skips them. A version-1 file gets
the table and `schema_version` 2 on the first write (readers of version 1 see no difference).
"""

from __future__ import annotations

import datetime
import json
import sqlite3
from pathlib import Path
from typing import Any

from sae.features import schema
from sae.features.db import FeatureDB


def open_for_write(path: str | Path) -> sqlite3.Connection:
    """A read-write connection to a valid feature database, with the `explanations` table present."""
    FeatureDB(path).close()  # every check a reader makes (exists, is ours, finished, readable version)
    con = sqlite3.connect(Path(path).expanduser(), timeout=30.0)
    try:
        with con:  # table first: a version-1 file that already holds it is still a valid version 1
            con.execute(schema.EXPLANATIONS)
            con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (json.dumps(schema.SCHEMA_VERSION),))
    except sqlite3.OperationalError as e:
        con.close()
        raise PermissionError(f"cannot write autointerp results into {path} ({e}); make the file and its folder "
                              "writable, or copy the database somewhere writable and pass that --db") from e
    return con


def done_features(con: sqlite3.Connection, run_key: str) -> set[int]:
    """Features that already have a result of this run (same explainer, judge and settings)."""
    return {r[0] for r in con.execute("SELECT feature FROM explanations WHERE run_key = ?", (run_key,))}


def save_result(con: sqlite3.Connection, row: dict[str, Any]) -> None:
    """Insert (or replace) one feature's result and commit it."""
    row = {**row, "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "config": json.dumps(row["config"], sort_keys=True)}
    cols = ("feature", "run_key", "explainer", "judge", "explanation", "detection", "fuzzing", "detection_auc",
            "fuzzing_auc", "n_detection", "n_fuzzing", "n_unparsable", "seconds", "created", "config")
    with con:
        con.execute(f"INSERT OR REPLACE INTO explanations ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    tuple(row[c] for c in cols))
