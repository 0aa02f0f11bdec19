"""`saekit explore DB`: open a feature database in the Streamlit explorer."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

NAME = "explore"
HELP = "browse a feature database in the Streamlit explorer (list, feature pages, live text, steering)"

MAIN = Path(__file__).resolve().parents[1] / "explorer" / "main.py"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", help="feature database written by `saekit analyze` (.sqlite)")
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument("--address", default="localhost", help="address to bind (0.0.0.0 to serve your network)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")


def command(args: argparse.Namespace) -> list[str]:
    """The streamlit command line `run` executes (the DB path goes after `--` to the app)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(MAIN),
        "--server.port", str(args.port),
        "--server.address", args.address,
        "--server.headless", "true" if args.no_browser else "false",
        "--browser.gatherUsageStats", "false",
        "--", "--db", str(Path(args.db).expanduser().resolve()),
    ]


def run(args: argparse.Namespace) -> int:
    from sae import FeatureDB, FeatureDBError

    try:
        FeatureDB(args.db).close()  # say what is wrong here too, not only in the page
    except FeatureDBError as e:
        print(f"saekit explore: warning: {e}\n(the explorer will show this message too)", file=sys.stderr)
    print(f"serving the explorer on http://{args.address}:{args.port}  (Ctrl-C to stop)")
    try:
        return subprocess.call(command(args))
    except KeyboardInterrupt:
        return 0
