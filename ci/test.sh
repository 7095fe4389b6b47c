#!/usr/bin/env bash
# Every test: library tests (incl. papermill reruns with small parameters, the HTML report and
# JupyterLab driven by a real browser), then nbval strict on the committed notebooks, which retrain
# everything into a fresh run store and ledger.
# Numerics (README: Numerics): nbval and the fingerprint test run on the pinned path that computed the
# committed outputs; the other library tests check properties that hold on any path, so they run on
# this CPU's fast path (SCIDL_NUMERICS=native). Where the pinned path cannot exist (no AVX2, not
# x86-64) nbval is skipped with the reason, since its numbers cannot match.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/ci/setup_env.sh"
source "$ROOT/ci/setup_browser.sh"
cd "$ROOT"
export SCIDL_PROGRESS=0  # no progress bars in test logs, nor in the outputs nbval compares
echo "[test] library tests, papermill reruns, report and browser tests (this CPU's fast numeric path)"
NATIVE=()
for name in $NUMERIC_PIN_NAMES; do NATIVE+=(-u "$name"); done  # the pins, from lib/scidl/_numerics.py
env "${NATIVE[@]}" SCIDL_NUMERICS=native python -m pytest tests -q
if ! WHY="$(python lib/scidl/_numerics.py --pinned)"; then
    echo "[test] nbval skipped: $WHY, so this machine cannot run the numeric path that computed the" \
         "committed notebook outputs and their numbers would differ (README: Numerics)"
    exit 0
fi
echo "[test] nbval (strict) on the committed notebooks, pinned numeric path, fresh run store and ledger"
FRESH="$(mktemp -d)"
trap 'rm -rf "$FRESH"' EXIT
SCIDL_STORE="$FRESH/runs" SCIDL_LEDGER="$FRESH/ledger.jsonl" \
    python -m pytest -q -p no:cacheprovider --nbval --nbval-current-env \
    --nbval-sanitize-with ci/nbval_sanitize.cfg notebooks
