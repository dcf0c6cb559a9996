#!/usr/bin/env bash
# Runs the fuzz targets under libFuzzer: every parser of outside input
# (see src/fuzz.rs). Needs the nightly toolchain (installed beside stable
# here) for the coverage instrumentation libFuzzer steers by; the test
# suite replays fuzz/corpus/ on stable without it.
#
#   scripts/fuzz.sh                  # every target, 60 s each
#   scripts/fuzz.sh 600 manifest     # one target, 10 minutes
#
# New inputs go to fuzz/corpus/<target>/ (kept local, see fuzz/.gitignore);
# a crash is written to fuzz/artifacts/<target>/ and the script fails.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(sed -n 's/^name = "\([a-z_]*\)"$/\1/p' Cargo.toml | grep -v '^imgsync-fuzz$')
fi
# The instrumentation cargo-fuzz adds, without needing cargo-fuzz itself.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# An explicit target keeps the instrumentation out of build scripts and
# procedural macros, as cargo-fuzz does.
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
cargo +nightly build --release --quiet --bins --target "$triple"
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "fuzz: $t for ${seconds}s"
  if ! "target/$triple/release/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
      -artifact_prefix="artifacts/$t/" -print_final_stats=1 "corpus/$t" 2> "artifacts/$t/log"; then
    echo "fuzz: $t FAILED; see fuzz/artifacts/$t/ (log and the input)" >&2
    failed=1
  fi
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)" "artifacts/$t/log" | tr '\n' ' '
  echo
done
exit $failed
