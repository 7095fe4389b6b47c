#!/usr/bin/env bash
# The main job: execute every notebook in notebooks/ headlessly with papermill, then write the report.
# Usage: bash ci/main.sh [--paper] [OUT_DIR]
#   default OUT_DIR: out/ (quick defaults) or out/paper/ (--paper: each notebook's
#   notebooks/NN_*.paper.yaml). A quick and a paper run never share a folder: their hypotheses have
#   other scopes, so one ledger cannot hold both.
#   -> OUT_DIR/index.html (every notebook's question, Verdict lines, time, link), OUT_DIR/html/*.html
#      (the executed notebooks rendered, figures inline), OUT_DIR/*.ipynb, OUT_DIR/figures/*.png,
#      OUT_DIR/kernels.log, and the run store and hypothesis ledger the notebooks wrote
#      (OUT_DIR/runs/, OUT_DIR/ledger.jsonl) unless SCIDL_STORE / SCIDL_LEDGER point elsewhere.
# A fresh OUT_DIR trains everything and preregisters anew; rerunning into the same OUT_DIR reuses
# its runs and ledger. The committed data/ledger.jsonl is never read or written.
# --paper first installs Fashion-MNIST where it can (ci/setup_fashion_mnist.sh; the lottery notebook's
# paper scale reads it) and warns where it cannot; the quick defaults never need it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCALE=() OUT_ARG=""
for arg in "$@"; do
    case "$arg" in
        --paper) SCALE=(--paper) ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "ci/main.sh: option $arg is not allowed: only --paper (and an output folder); see --help" >&2; exit 2 ;;
        *) if [ -n "$OUT_ARG" ]; then
               echo "ci/main.sh: a second output folder $arg is not allowed (first: $OUT_ARG); see --help" >&2; exit 2
           fi
           OUT_ARG="$arg" ;;
    esac
done
if [ -z "$OUT_ARG" ]; then
    if [ ${#SCALE[@]} -gt 0 ]; then OUT_ARG="$ROOT/out/paper"; else OUT_ARG="$ROOT/out"; fi
fi
MARK="quick"
if [ ${#SCALE[@]} -gt 0 ]; then MARK="paper"; fi
if [ -f "$OUT_ARG/.scale" ] && [ "$(cat "$OUT_ARG/.scale")" != "$MARK" ]; then
    echo "ci/main.sh: OUT_DIR=$OUT_ARG is not allowed: it holds a $(cat "$OUT_ARG/.scale")-scale run and" \
         "this is a $MARK-scale one; give another folder (see --help)" >&2
    exit 2
fi
source "$ROOT/ci/setup_env.sh"
mkdir -p "$OUT_ARG"
OUT="$(cd "$OUT_ARG" && pwd)"
echo "$MARK" > "$OUT/.scale"
# absolute, so the kernels (started in notebooks/) and this shell mean the same folders
SCIDL_STORE="$(realpath -m "${SCIDL_STORE:-$OUT/runs}")"
SCIDL_LEDGER="$(realpath -m "${SCIDL_LEDGER:-$OUT/ledger.jsonl}")"
export SCIDL_STORE SCIDL_LEDGER
if [ ${#SCALE[@]} -gt 0 ] && ! bash "$ROOT/ci/setup_fashion_mnist.sh"; then
    echo "ci/main.sh: warning: Fashion-MNIST is not installed (above), so the paper-scale lottery notebook's" \
         "Fashion-MNIST part will fail; the other notebooks run as usual" >&2
fi
python "$ROOT/ci/run_notebooks.py" ${SCALE[@]+"${SCALE[@]}"} --out "$OUT"
