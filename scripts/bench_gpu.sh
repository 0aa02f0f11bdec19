#!/usr/bin/env bash
# The GPU benchmark (issue 18): run this first whenever a CUDA machine is lent; the steps and the
# table are scripts/bench_gpu.py's. Not yet run on a GPU (none has been lent so far).
#   bash scripts/bench_gpu.sh                       # full sizes on the best device
#   bash scripts/bench_gpu.sh --device cpu --tiny   # every step at toy sizes (the test suite runs the .py)
# Python: ./.venv when it exists (scripts/install.sh, from the lock); otherwise the machine's python3
# with the wheels in ./.whl installed to /tmp/site (a machine with no package index: carry .whl/ with
# what its python3 lacks, e.g. transformer-lens, gguf and their needs, as wheels for its Python).
# Model: the embedded GGUF from ~/.cache/saekit, or reassembled from ./.model/*.part-* (split with
# `split -b 60M SmolLM2-135M-Instruct.Q4_1.gguf .model/SmolLM2-135M-Instruct.Q4_1.gguf.part-` where
# one transfer is capped below its 98 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
elif [[ -d .whl ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
    PY=python3
else
    scripts/install.sh
    PY=.venv/bin/python
fi
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
CACHE="${SAEKIT_CACHE:-$HOME/.cache/saekit}/gguf"
if compgen -G ".model/$GGUF.part-*" >/dev/null && [[ ! -f "$CACHE/$GGUF" ]]; then
    mkdir -p "$CACHE"
    cat .model/"$GGUF".part-* > "$CACHE/$GGUF.tmp" && mv "$CACHE/$GGUF.tmp" "$CACHE/$GGUF"
fi
export PYTHONUNBUFFERED=1
exec "$PY" scripts/bench_gpu.py "$@"
