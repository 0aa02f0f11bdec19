"""End to end in a real headless Chromium: serve the explorer, open a feature by deep link, look at it.

Uses Debian's `chromium` (apt-get install -y chromium) driven by Playwright's Python package
with `executable_path` (no browser download). Set SAEKIT_SCREENSHOT_DIR to keep the screenshot.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "app" / "explorer" / "main.py"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is absent: install Debian's browser with `apt-get install -y chromium`"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer on {url} within {timeout}s")


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    from sae.features.demo_db import build_demo_db

    out = tmp_path_factory.mktemp("browser")
    db_path, _ = build_demo_db(out, model, d_sae=256, layer=2, n_tokens=512, context_size=64)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(MAIN), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none", "--", "--db", str(db_path)],
        cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url, db_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_feature_page_by_deep_link(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
    import sae

    url, db_path = server
    db = sae.FeatureDB(db_path)
    i = int(db.summaries()["density"].argmax())
    with playwright.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = ctx.new_page()
            page.goto(f"{url}/feature?feature={i}", wait_until="domcontentloaded")
            page.wait_for_selector("span.saekit-tok", timeout=60_000)
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)
            assert page.get_by_role("heading", name=f"Feature {i}").count() >= 1
            tokens = page.locator("span.saekit-tok")
            assert tokens.count() >= sum(len(e.tokens) for e in db.feature(i).top_examples)
            hot = page.locator("span.saekit-centre").first
            assert "activation" in (hot.get_attribute("title") or "")
            colour = hot.evaluate("e => getComputedStyle(e).backgroundColor")
            assert colour.startswith("rgba(255, 110, 0") or colour == "rgb(255, 110, 0)", colour
            assert page.locator(".js-plotly-plot").count() == 2
            page.wait_for_timeout(500)  # let plotly finish drawing the bars for the screenshot
            shot = tmp_path / "feature.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            keep = os.environ.get("SAEKIT_SCREENSHOT_DIR")
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(keep) / "explorer_feature.png")
        finally:
            ctx.close()
