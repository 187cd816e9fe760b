#!/usr/bin/env bash
# The main job: set up .venv if needed (scripts/setup.sh), then run `graphattn demo`.
# Extra arguments go to the demo, e.g.  bash scripts/demo.sh --n 2048 --out /tmp/demo
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
exec .venv/bin/graphattn demo "$@"
