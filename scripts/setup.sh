#!/usr/bin/env bash
# Set up graphattn for development: a virtual environment in .venv with torch and the package
# (editable, with the `dev` extras). Safe to run again: it reuses what is already there.
#
# torch: on a machine without an NVIDIA GPU the CPU build is installed (never the multi-GB CUDA
# build from PyPI): first from local wheels (pip's find-links), then from the PyTorch CPU index.
# With a GPU, the default PyPI build (CUDA) is installed.
#
# Environment overrides:
#   PYTHON=python3.12      interpreter that creates the venv (default: python3; needs >= 3.10)
#   GRAPHATTN_TORCH=cpu    force the CPU build (or =cuda for the default PyPI build)
#   GRAPHATTN_REINSTALL=1  re-run `pip install -e .[dev]` even if nothing changed
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
TORCH_SPEC="torch>=2.5,<2.14"   # keep in sync with pyproject.toml
CPU_INDEX="https://download.pytorch.org/whl/cpu"
STAMP="$VENV/.graphattn-setup"

say() { echo "[setup] $*"; }
die() { echo "[setup] ERROR: $*" >&2; exit 1; }

# ---- 1. the virtual environment -------------------------------------------------------------
if [ -x "$PY" ] && "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    say "reusing virtual environment $VENV ($("$PY" -V 2>&1))"
else
    BASE="${PYTHON:-python3}"
    command -v "$BASE" >/dev/null 2>&1 || die "'$BASE' not found; install Python >= 3.10 or set PYTHON=/path/to/python3"
    "$BASE" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "graphattn needs Python >= 3.10, '$BASE' is $("$BASE" -V 2>&1); set PYTHON=/path/to/python3.10+"
    say "creating virtual environment $VENV with $("$BASE" -V 2>&1)"
    rm -rf "$VENV"
    "$BASE" -m venv "$VENV" \
        || die "'$BASE -m venv' failed; on Debian/Ubuntu install it with: apt-get install python3-venv"
fi
PIP=("$PY" -m pip --disable-pip-version-check)
pip_install() {  # pip install "$@", without the noise of index folders that lack a project
    "${PIP[@]}" install "$@" 2>&1 \
        | awk '!/^WARNING: Location .* is ignored: it is neither a file nor a directory/ { print; fflush() }'
}

# Everything below is skipped when this pyproject.toml (and this script) already set up .venv.
WANT="$(cat pyproject.toml scripts/setup.sh | "$PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ -z "${GRAPHATTN_REINSTALL:-}" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] \
    && VERSIONS="$("$PY" -c 'import graphattn, torch; print("graphattn", graphattn.__version__, "| torch", torch.__version__)' 2>/dev/null)"; then
    say "already set up: $VERSIONS (GRAPHATTN_REINSTALL=1 forces a reinstall)"
    exit 0
fi

# ---- 2. torch --------------------------------------------------------------------------------
torch_status() {  # prints the installed torch version if it satisfies TORCH_SPEC, else fails
    "$PY" - <<'EOF' 2>/dev/null
import sys
import torch
major, minor = (int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
if not (2, 5) <= (major, minor) < (2, 14):
    sys.exit(1)
print(torch.__version__, "(CUDA " + torch.version.cuda + ")" if torch.version.cuda else "(CPU build)")
EOF
}

case "${GRAPHATTN_TORCH:-}" in
    cpu) HAVE_GPU=0; WHY="GRAPHATTN_TORCH=cpu" ;;
    cuda) HAVE_GPU=1; WHY="GRAPHATTN_TORCH=cuda" ;;
    "")
        if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
            HAVE_GPU=1; WHY="nvidia-smi lists a GPU"
        else
            HAVE_GPU=0; WHY="no NVIDIA GPU found (nvidia-smi -L failed)"
        fi ;;
    *) die "GRAPHATTN_TORCH must be 'cpu' or 'cuda', got '${GRAPHATTN_TORCH}'" ;;
esac

if INSTALLED="$(torch_status)"; then
    say "torch $INSTALLED already installed: keeping it"
elif [ "$HAVE_GPU" = 1 ]; then
    say "$WHY: installing the default (CUDA) torch build from PyPI: $TORCH_SPEC"
    pip_install "$TORCH_SPEC"
else
    say "$WHY: installing the CPU build of torch ($TORCH_SPEC)"
    # (a) a wheel already on this machine (pip's find-links). --no-deps because the local wheel
    #     folder need not hold torch's small pure-Python dependencies; the second command gets
    #     those from the normal index (torch itself is then already satisfied and kept).
    if "${PIP[@]}" install -q --no-index --no-deps "$TORCH_SPEC" >/dev/null 2>&1; then
        say "installed torch from local wheels (no download); adding its dependencies"
        pip_install -q "$TORCH_SPEC"
    # (b) the PyTorch CPU wheel index (a ~200 MB download instead of several GB).
    elif say "no local torch wheel; trying $CPU_INDEX" \
        && pip_install --timeout 15 --retries 1 --index-url "$CPU_INDEX" "$TORCH_SPEC"; then
        say "installed torch from $CPU_INDEX"
    else
        die "could not install a CPU build of torch ($TORCH_SPEC).
  This machine has no NVIDIA GPU, so the default PyPI torch (a multi-GB CUDA build) is not installed.
  Install the CPU build into the virtual environment yourself, then run this script again:
    $PY -m pip install --index-url $CPU_INDEX '$TORCH_SPEC'
  or from a downloaded wheel (https://download.pytorch.org/whl/cpu/torch/):
    $PY -m pip install ./torch-<version>+cpu-<python>-<platform>.whl
  To install the default CUDA build anyway: GRAPHATTN_TORCH=cuda bash scripts/setup.sh"
    fi
fi
TORCH_NOW="$(torch_status)" || die "torch was installed but does not import in $VENV"

# ---- 3. graphattn and the rest of its dependencies ------------------------------------------
say "installing graphattn (editable) with its dev extras; keeping torch $TORCH_NOW"
pip_install -q -e ".[dev]"
[ "$(torch_status)" = "$TORCH_NOW" ] || die "pip replaced torch $TORCH_NOW by $(torch_status || echo '?'); please report this"
"$PY" -c 'import graphattn' || die "graphattn does not import after installation"
echo "$WANT" > "$STAMP"
say "done: $PY ($("$PY" -c 'import graphattn, torch; print("graphattn", graphattn.__version__, "| torch", torch.__version__)'))"
