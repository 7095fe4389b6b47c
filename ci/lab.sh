#!/usr/bin/env bash
# Interactive work: JupyterLab on 127.0.0.1 in notebooks/, with the project's .venv and kernel.
# Usage: bash ci/lab.sh [jupyter lab options]
#   SCIDL_LAB_PORT (default: a free port), SCIDL_LAB_TOKEN (default: random), SCIDL_LAB_DIR (default:
#   notebooks/) choose the port, token and folder.
# Prints the URL with its token. The run store and ledger are the ones papermill and nbval use
# ($SCIDL_STORE / $SCIDL_LEDGER, made absolute here, else data/runs/ and its ledger.jsonl).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/ci/setup_env.sh"
if [ -n "${SCIDL_STORE:-}" ]; then export SCIDL_STORE="$(realpath -m "$SCIDL_STORE")"; fi
if [ -n "${SCIDL_LEDGER:-}" ]; then export SCIDL_LEDGER="$(realpath -m "$SCIDL_LEDGER")"; fi
PORT="${SCIDL_LAB_PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
TOKEN="${SCIDL_LAB_TOKEN:-$(python -c 'import secrets; print(secrets.token_hex(24))')}"
if [ "${#TOKEN}" -lt 32 ]; then  # the token is the only lock on a server that runs code
    echo "SCIDL_LAB_TOKEN (${#TOKEN} characters) is not allowed: a token must have at least 32 characters;" \
         "unset it for a random one" >&2
    exit 2
fi
AS_ROOT=()
if [ "$(id -u)" = 0 ]; then AS_ROOT=(--allow-root); fi
python - <<PY
from scidl.hypotheses import default_ledger_path
from scidl.store import default_root
print("[lab] run store: " + str(default_root()) + "\n[lab] ledger:    " + str(default_ledger_path()))
PY
echo "[lab] kernel:    $(python -c 'import sys; print(sys.executable)') (kernelspec python3, 'Python 3 (scidl)')"
echo "[lab] open http://127.0.0.1:$PORT/lab?token=$TOKEN   (Ctrl-C stops the server)"
# offline machine: no "get notified about Jupyter news?" prompt (JupyterLab's admin-level overrides)
SETTINGS="$VIRTUAL_ENV/share/jupyter/lab/settings"
if [ ! -f "$SETTINGS/overrides.json" ]; then
    mkdir -p "$SETTINGS"
    echo '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' \
        > "$SETTINGS/overrides.json"
fi
LAB_DIR="$(realpath "${SCIDL_LAB_DIR:-$ROOT/notebooks}")"
cd "$LAB_DIR"
exec python -m jupyterlab --no-browser --ip=127.0.0.1 --port="$PORT" --port-retries=0 \
    --IdentityProvider.token="$TOKEN" --ServerApp.root_dir="$LAB_DIR" \
    --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
    "${AS_ROOT[@]}" "$@"
