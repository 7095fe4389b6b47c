#!/usr/bin/env bash
# The main job: execute every notebook in notebooks/ headlessly with papermill.
# Usage: bash ci/main.sh [OUT_DIR]   (default: out/)  -> OUT_DIR/*.ipynb and OUT_DIR/figures/*.png
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/ci/setup_env.sh"
python "$ROOT/ci/run_notebooks.py" --out "${1:-$ROOT/out}"
