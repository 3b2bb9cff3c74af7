#!/usr/bin/env bash
# Run the serve/deploy/batch tests N times in a row while another process keeps one core busy,
# and print how many runs passed and failed. A flaky test is a bug: this is how to find one.
#
#   scripts/flaky-loop.sh [N] [pytest paths or -k/-m options...]
#
# Defaults: N=20 and every serve, deploy and batch test file (docker-marked tests excluded). The busy
# loop is one Python process started here, bounded in time (BUSY_MAX_S, default 3 h) and
# stopped when the script ends. Logs of failed runs are kept in $LOG_DIR (printed at the end).
set -u
cd "$(dirname "$0")/.."

N="${1:-20}"
shift $(( $# > 0 ? 1 : 0 ))
if [ "$#" -gt 0 ]; then
    TESTS=("$@")
else
    # every serve, deploy and batch test file (issue 27), whatever new ones are added
    TESTS=(
        tests/unit/test_deploy_*.py tests/unit/test_serving_*.py tests/unit/test_batch_*.py
        tests/integration/test_deploy_*.py tests/integration/test_serve_*.py tests/integration/test_batch*.py
        -m "not docker"
    )
fi
LOG_DIR="${LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/flaky-loop.XXXXXX")}"
mkdir -p "$LOG_DIR"
BUSY_MAX_S="${BUSY_MAX_S:-10800}"

python3 -c "import time
end = time.monotonic() + $BUSY_MAX_S
while time.monotonic() < end:
    pass" &
BUSY=$!
trap 'kill "$BUSY" 2>/dev/null' EXIT

passed=0
failed=0
for i in $(seq 1 "$N"); do
    log="$LOG_DIR/run-$i.log"
    if timeout 1800 uv run --quiet pytest -q -p no:cacheprovider "${TESTS[@]}" >"$log" 2>&1; then
        passed=$((passed + 1))
        rm -f "$log"
        echo "run $i/$N: passed (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    else
        failed=$((failed + 1))
        echo "run $i/$N: FAILED, load average $(cut -d' ' -f1-3 /proc/loadavg) ($(grep -E '^(FAILED|ERROR)' "$log" | head -3 | tr '\n' ' '))"
    fi
done
echo "flaky-loop: $N runs, $passed passed, $failed failed (other core busy; failed logs in $LOG_DIR)"
[ "$failed" -eq 0 ]
