# Source me (after setup_env.sh): makes sure Debian's chromium is there for the browser tests
# (tests/test_browser.py drives it with Python playwright; playwright's own browser download does
# not work here). Installs it with apt-get when missing and run as root; otherwise says what to do.
# It never fails the setup: without a browser the browser tests fail with the same message.
SCIDL_CHROMIUM="${SCIDL_CHROMIUM:-$(command -v chromium || true)}"
if [ -z "$SCIDL_CHROMIUM" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        echo "[setup] installing Debian's chromium for the browser tests (apt-get, about a minute)"
        export DEBIAN_FRONTEND=noninteractive
        LOG="$(mktemp)"
        if apt-get install -y -q chromium > "$LOG" 2>&1 \
                || { apt-get update -q >> "$LOG" 2>&1 && apt-get install -y -q chromium >> "$LOG" 2>&1; }; then
            SCIDL_CHROMIUM="$(command -v chromium)"
            rm -f "$LOG"
        else
            echo "[setup] apt-get install chromium failed (log: $LOG); the browser tests will fail" >&2
        fi
    else
        echo "[setup] chromium is missing and only root can apt-get it: run 'sudo apt-get install chromium'" \
             "or set SCIDL_CHROMIUM=/path/to/chromium; the browser tests fail without it" >&2
    fi
fi
export SCIDL_CHROMIUM
