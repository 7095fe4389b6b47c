#!/usr/bin/env bash
# Fashion-MNIST (Xiao et al. 2017) for the lottery-ticket task's dataset='fashion' (paper scale only;
# the quick defaults and ci/test.sh never need it): installs Debian's dataset-fashion-mnist package,
# which puts its four IDX files in /usr/share/datasets/fashion-mnist (task.py's FASHION_DIR), where
# they are missing and this is root with apt-get. Idempotent: where the files are present it only
# prints their folder. Exits non-zero with what to do instead where it cannot install them.
# Usage: bash ci/setup_fashion_mnist.sh   (SCIDL_FASHION_MNIST=DIR: check DIR instead, install nothing)
set -uo pipefail
PACKAGE_DIR=/usr/share/datasets/fashion-mnist
DIR="${SCIDL_FASHION_MNIST:-$PACKAGE_DIR}"
FILES="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"
present() {
    for name in $FILES; do
        [ -f "$DIR/$name" ] || [ -f "$DIR/$name.gz" ] || return 1
    done
}
instead="put the four IDX files ($FILES, each raw or .gz) in a folder and set SCIDL_FASHION_MNIST to it"
if present; then
    echo "[fashion-mnist] the IDX files are in $DIR"
    exit 0
fi
if [ -n "${SCIDL_FASHION_MNIST:-}" ]; then
    echo "[fashion-mnist] SCIDL_FASHION_MNIST=$DIR lacks some of the four IDX files ($FILES, each raw or .gz):" \
         "put them there, or unset it to use Debian's dataset-fashion-mnist package ($PACKAGE_DIR)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "[fashion-mnist] cannot install: no apt-get on this machine (Debian's dataset-fashion-mnist" \
         "package is not available here); $instead" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "[fashion-mnist] cannot install: not root; run \`apt-get install dataset-fashion-mnist\` as root," \
         "or $instead" >&2
    exit 1
fi
echo "[fashion-mnist] installing Debian's dataset-fashion-mnist (about 30 MB) into $PACKAGE_DIR"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends dataset-fashion-mnist; then
    echo "[fashion-mnist] install failed; updating the package lists and trying again"
    if ! { apt-get update && apt-get install -y --no-install-recommends dataset-fashion-mnist; }; then
        echo "[fashion-mnist] cannot install: \`apt-get install dataset-fashion-mnist\` failed (above); $instead" >&2
        exit 1
    fi
fi
if ! present; then
    echo "[fashion-mnist] dataset-fashion-mnist is installed but $DIR lacks some of its IDX files" \
         "(\`dpkg -L dataset-fashion-mnist\` lists where they went); $instead" >&2
    exit 1
fi
echo "[fashion-mnist] the IDX files are in $DIR"
