#!/usr/bin/env bash
# Runs the crash tests (copies killed with SIGKILL at many points, see
# tests/suite/crash.rs) over and over: every kill lands somewhere else, so
# a long run covers far more points than the test command's one pass.
#
#   scripts/crash.sh          # 50 rounds
#   scripts/crash.sh 500
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-50}
cargo test --quiet --test tests --no-run
for i in $(seq 1 "$rounds"); do
  if ! cargo test --quiet --test tests -- suite::crash:: >/tmp/imgsync-crash.log 2>&1; then
    echo "crash: round $i failed; see /tmp/imgsync-crash.log" >&2
    exit 1
  fi
done
echo "crash: $rounds rounds passed"
