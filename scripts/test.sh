#!/usr/bin/env bash
# Run the test suite: set up .venv if needed (scripts/setup.sh), then pytest.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh tests/test_cli.py -k version
# GRAPHATTN_TEST_WORKERS=N (or auto) runs pytest-xdist workers; the default, 0, runs serially:
# on the 2-core CI machine two workers were no faster (27 s either way) and use both cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
WORKERS="${GRAPHATTN_TEST_WORKERS:-0}"
XDIST=()
if [ "$WORKERS" != 0 ]; then
    XDIST=(-n "$WORKERS")
fi
echo "[test] .venv/bin/python -m pytest -q ${XDIST[*]} $*"
# pytest's exit status is this script's: nonzero on failures and when no test was collected (5).
exec .venv/bin/python -m pytest -q "${XDIST[@]}" "$@"
