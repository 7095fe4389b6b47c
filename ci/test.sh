#!/usr/bin/env bash
# Every test: library tests (incl. papermill reruns with small parameters, the HTML report and
# JupyterLab driven by a real browser), then nbval strict on the committed notebooks, which retrain
# everything into a fresh run store and ledger.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/ci/setup_env.sh"
source "$ROOT/ci/setup_browser.sh"
cd "$ROOT"
export SCIDL_PROGRESS=0  # no progress bars in test logs, nor in the outputs nbval compares
echo "[test] library tests, papermill reruns, report and browser tests"
python -m pytest tests -q
echo "[test] nbval (strict) on the committed notebooks, fresh run store and ledger"
FRESH="$(mktemp -d)"
trap 'rm -rf "$FRESH"' EXIT
SCIDL_STORE="$FRESH/runs" SCIDL_LEDGER="$FRESH/ledger.jsonl" \
    python -m pytest -q -p no:cacheprovider --nbval --nbval-current-env \
    --nbval-sanitize-with ci/nbval_sanitize.cfg notebooks
