#!/usr/bin/env bash
# Install saekit into ./.venv with the embedded model, offline-ready.
#   scripts/install.sh         runtime only
#   scripts/install.sh --dev   + test tools and the headless browser for the explorer's e2e test
# torch is pinned first: an unpinned torch pulls several GB of CUDA wheels; on a GPU machine,
# install your CUDA build of torch into .venv before running this and the pin is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0"
if [[ $DEV == 1 ]]; then
    pip install -q -e ".[dev]"
    if ! command -v chromium >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
            || echo "warning: could not install chromium; the browser test will be skipped" >&2
    fi
else
    pip install -q -e .
fi
saekit setup
