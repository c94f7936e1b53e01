#!/usr/bin/env bash
# Install incisive on a node whose network reaches only the platform: from a wheelhouse made by `make wheelhouse`
# (every wheel, PyTorch CPU included, sha256-pinned in requirements.txt), into a fresh virtual environment, with
# no package index at all; then run the readiness check. docs/deployment.md "Offline install".
#
#   scripts/install-offline.sh WHEELHOUSE [VENV]        (VENV default: /opt/incisive/venv)
#
# Exit status: 0 installed (whatever the readiness check found: its JSON report is printed, its verdict
# is on stderr), 2 bad arguments or wheelhouse, otherwise pip's or venv's own failure.
set -euo pipefail

usage() { echo "usage: $0 WHEELHOUSE [VENV]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
wheelhouse=$(cd "$1" 2>/dev/null && pwd) || { echo "no such wheelhouse: $1" >&2; exit 2; }
venv=${2:-/opt/incisive/venv}
python=${PYTHON:-python3.11}
[ -f "$wheelhouse/requirements.txt" ] || { echo "$wheelhouse has no requirements.txt (run 'make wheelhouse')" >&2; exit 2; }
command -v "$python" >/dev/null || { echo "need $python (Python 3.11) on PATH, or set PYTHON" >&2; exit 2; }
if [ -e "$venv" ] && [ -n "$(ls -A "$venv" 2>/dev/null)" ]; then
  echo "$venv exists and is not empty: give a new directory (upgrades install into a fresh venv)" >&2; exit 2
fi

# Only the wheelhouse: no index, no find-links or extra indexes from pip.conf or the environment.
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL || true

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-index --find-links "$wheelhouse" --require-hashes \
  --only-binary=:all: -r "$wheelhouse/requirements.txt"
"$venv/bin/incisive" --help >/dev/null
echo "installed incisive $("$venv/bin/python" -c 'import incisive; print(incisive.__version__)') in $venv" >&2

set +e
"$venv/bin/incisive" node check --json
rc=$?
set -e
case $rc in
  0) echo "readiness: every row passes" >&2 ;;
  1) echo "readiness: warnings (see the report above)" >&2 ;;
  2) echo "readiness: failures (see the report above)" >&2 ;;
  *) echo "incisive node check failed to run (exit $rc)" >&2; exit "$rc" ;;
esac
