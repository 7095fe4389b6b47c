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
# One numeric code path on every x86-64 CPU with AVX2 (MKL's branch, ATen's and oneDNN's ISA, OpenBLAS'
# kernels), so training is bit-identical on AMD AVX2 and Intel AVX-512 hosts; nbval compares the
# committed outputs bit for bit. lib/scidl/_numerics.py says why each; a value already set is kept.
NUMERIC_PINS="$(python "$ROOT/lib/scidl/_numerics.py" --exports)"  # fails on a bad SCIDL_NUMERICS
eval "$NUMERIC_PINS"
if [ "${MKL_CBWR:-}" = "AVX2" ]; then
    # MKL honours the AVX2 branch only on a CPU it takes for Intel's: answer its question (ci/mkl_intel_branch.c)
    SHIM="$VENV/lib/scidl_mkl_intel_branch.so"
    if [ ! -f "$SHIM" ] || [ "$ROOT/ci/mkl_intel_branch.c" -nt "$SHIM" ]; then
        if ${CC:-cc} -shared -fPIC -O2 -o "$SHIM.tmp" "$ROOT/ci/mkl_intel_branch.c" 2> /dev/null; then
            mv "$SHIM.tmp" "$SHIM"
        else
            rm -f "$SHIM.tmp"
            echo "[setup] warning: no C compiler (${CC:-cc}) to build ci/mkl_intel_branch.c; on a CPU that is" \
                 "not Intel's, MKL then ignores MKL_CBWR=AVX2 and nbval is skipped (README: Numerics)" >&2
        fi
    fi
    if [ -f "$SHIM" ]; then
        case ":${LD_PRELOAD:-}:" in *":$SHIM:"*) ;; *) export LD_PRELOAD="$SHIM${LD_PRELOAD:+:$LD_PRELOAD}" ;; esac
    fi
fi
export PYTHONHASHSEED=0
