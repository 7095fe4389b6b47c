# Source me: creates/updates the project virtualenv (.venv) and activates it.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SCIDL_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "scidl needs Python 3.11; $PYTHON is $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
STAMP="$VENV/.scidl-installed"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    echo "[setup] installing pinned dependencies into $VENV (first run takes a few minutes)"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]" 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -c "import scidl, torch, papermill, nbval" \
        || { echo "[setup] install failed" >&2; exit 1; }
    echo "$WANT" > "$STAMP"
fi
# The project's kernel: a "python3" kernelspec inside the venv, searched first (JUPYTER_PATH), so a
# user-level python3 kernelspec cannot make papermill, nbval or JupyterLab start another Python.
export JUPYTER_PATH="$VENV/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
if [ ! -f "$VENV/share/jupyter/kernels/python3/kernel.json" ] \
        || ! grep -q "\"$VENV/bin/python" "$VENV/share/jupyter/kernels/python3/kernel.json"; then
    "$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 \
        --display-name "Python 3 (scidl)" > /dev/null
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
unset MPLBACKEND  # Agg would drop figures from executed notebooks
# One MKL code path on every AVX-512 machine, so training is bit-identical across CPU generations
# (lib/scidl/_numerics.py says why); nbval compares the committed outputs bit for bit.
if grep -qw avx512f /proc/cpuinfo 2> /dev/null; then
    export MKL_CBWR="${MKL_CBWR:-AVX512}"
else
    echo "[setup] warning: this CPU has no AVX-512; training takes another MKL code path, so nbval may" \
         "find numbers that differ from the committed outputs (computed on the AVX-512 path)" >&2
fi
export PYTHONHASHSEED=0
