#!/usr/bin/env bash
# Install saekit into ./.venv from the committed lock, with the embedded model, offline-ready.
#   scripts/install.sh         runtime (requirements.lock)
#   scripts/install.sh --dev   + test tools (requirements-dev.lock), Debian's chromium for the
#                              explorer's browser test, and SAELens in .venv-saelens
#                              (requirements-saelens.lock) for the interop test
# Every package but torch comes from the lock, exact versions with sha256 hashes, installed
# without resolving (--no-deps): a new machine gets what the suite was run on, not whatever
# was released since. scripts/lock.sh refreshes the lock; scripts/check_latest.sh tries the
# newest releases. torch is pinned by version instead (an unpinned torch pulls several GB of
# CUDA wheels): on a GPU machine, install a CUDA build of this version into .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=2.13.0
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
LOCK=requirements.lock
[[ $DEV == 1 ]] && LOCK=requirements-dev.lock
PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
have_torch=$(python -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null || true)
if [[ "$have_torch" != "$TORCH_VERSION" ]]; then
    [[ -n "$have_torch" ]] && echo "replacing torch $have_torch with $TORCH_VERSION (the tested version)" >&2
    pip install -q "torch==$TORCH_VERSION"
fi
pip install -q --require-hashes --no-deps -r "$LOCK"
pip install -q --no-deps --no-build-isolation -e .
pip check || { echo "error: the installed packages are inconsistent (above); re-run scripts/install.sh" >&2; exit 1; }
if [[ $DEV == 1 ]] && ! command -v chromium >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: could not install chromium; the browser test will be skipped" >&2
fi
saekit setup
if [[ $DEV == 1 ]]; then
    # SAELens in its own venv (it pins transformer-lens < 4) for tests/test_saelens_interop.py;
    # rebuilt only when its lock changes.
    stamp=.venv-saelens/lock.sha256
    want=$(sha256sum requirements-saelens.lock | cut -d' ' -f1)
    if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
        rm -rf .venv-saelens
        "$PY" -m venv .venv-saelens
        .venv-saelens/bin/pip install -q "torch==$TORCH_VERSION"
        .venv-saelens/bin/pip install -q --require-hashes --no-deps -r requirements-saelens.lock
        echo "$want" > "$stamp"
    fi
fi
