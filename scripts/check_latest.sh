#!/usr/bin/env bash
# Drift guard: saekit on the newest release of every dependency, before a user meets it.
#   scripts/check_latest.sh [--keep]     (--keep: leave the venv in .venv-latest for a look)
# A fresh venv gets the newest release of each runtime dependency in pyproject.toml, ignoring
# our upper bounds (eager upgrades, so their dependencies are the newest too), then runs the
# smoke set (scripts/smoke.py: model, generation with KV cache on = off, cache 2k tokens,
# train 50 steps, clamp a feature, explorer pages) and prints every version that differs from
# requirements.lock. torch stays at install.sh's pin (the newest torch is a multi-GB CUDA
# download on most machines; set CHECK_TORCH=1 to try it too). Exit 0: the newest releases
# work. Exit 1: a release broke saekit: fix the code, then move the lock with scripts/lock.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP=0
[[ "${1:-}" == "--keep" ]] && KEEP=1
start=$(date +%s)
if [[ $KEEP == 1 ]]; then venv=.venv-latest/venv; rm -rf .venv-latest; mkdir .venv-latest; else venv=$(mktemp -d)/venv; fi
cleanup() { [[ $KEEP == 1 ]] || rm -rf "$(dirname "$venv")"; }
trap cleanup EXIT
"${PYTHON:-python3}" -m venv "$venv"
pip=("$venv/bin/python" -m pip -q --disable-pip-version-check)
"${pip[@]}" install --upgrade pip
torch_version=$(grep -oE '^TORCH_VERSION=[0-9.]+' scripts/install.sh | cut -d= -f2)
# Eager upgrades would pull the newest torch in as a dependency: hold it with a constraint.
echo "torch==$torch_version" > "$(dirname "$venv")/torch-pin.txt"
hold=(-c "$(dirname "$venv")/torch-pin.txt")
if [[ "${CHECK_TORCH:-0}" == 1 ]]; then hold=(); "${pip[@]}" install --upgrade torch; else "${pip[@]}" install "${hold[@]}" torch; fi
# Dependency names without their version ranges: what pip resolves as newest today.
mapfile -t names < <("$venv/bin/python" - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for d in deps:
    name = re.match(r"[A-Za-z0-9_.\-]+(\[[^\]]*\])?", d).group(0)
    if name != "torch":
        print(name)
PY
)
"${pip[@]}" install --upgrade --upgrade-strategy eager "${hold[@]}" "${names[@]}"
"${pip[@]}" install --no-deps -e .
echo "== versions that differ from requirements.lock"
"$venv/bin/python" - <<'PY'
import re
from importlib.metadata import distributions
from packaging.markers import Marker
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
locked = {}  # the pins that apply to this interpreter (the lock is universal: markers split some)
pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)(?: ; ([^\\]+))?", open("requirements.lock").read(), re.M)
for name, ver, marker in pins:
    if not marker or Marker(marker.strip()).evaluate():
        locked[norm(name)] = ver
rows = []
for d in distributions():
    n = norm(d.metadata["Name"])
    if n in locked and locked[n] != d.version:
        rows.append((n, locked[n], d.version))
    elif n not in locked and n not in ("saekit", "torch") and not n.startswith(("nvidia-", "triton")):
        rows.append((n, "(not locked)", d.version))
for n, a, b in sorted(rows):
    print(f"  {n:32} {a:>14} -> {b}")
print(f"  ({len(rows)} differ)" if rows else "  none: the lock is the newest")
PY
echo "== smoke set (newest releases)"
status=0
timeout "${SMOKE_TIMEOUT:-420}" "$venv/bin/python" scripts/smoke.py || status=$?
echo "check_latest: $([[ $status == 0 ]] && echo passed || echo "FAILED (exit $status)") in $(( $(date +%s) - start )) s"
exit $status
