#!/usr/bin/env bash
# The long fuzz run, by hand: the fuzz targets of tests/fuzz/ with many
# cases each, built with the `fuzz` profile (optimised, with overflow
# checks and debug assertions). Each target prints its cases, time,
# cases per second and failures; failing inputs are saved (see
# docs/fuzzing.md for replaying one).
#
#   tests/fuzz/run.sh                       # every target, 1,000,000 cases each
#   tests/fuzz/run.sh 200000 propfind       # one target (a name or a part of it)
#   PRISM_FUZZ_SEED=7 tests/fuzz/run.sh     # another sequence of cases
#
# Targets run one after another, at nice 10: the machine stays usable.
set -euo pipefail
cd "$(dirname "$0")/../.."

cases="${1:-1000000}"
shift || true
filters=("$@")
if [ ${#filters[@]} -eq 0 ]; then
    filters=(fuzz_)
fi

export PRISM_FUZZ_CASES="$cases"
export PRISM_FUZZ_CRASH_DIR="${PRISM_FUZZ_CRASH_DIR:-${CARGO_TARGET_DIR:-target}/fuzz-crashes}"
echo "fuzz: $cases cases per target, seed ${PRISM_FUZZ_SEED:-1}, failures saved in $PRISM_FUZZ_CRASH_DIR"
nice -n 10 cargo test --profile fuzz --locked --test fuzz -- \
    --nocapture --test-threads=1 "${filters[@]}"
