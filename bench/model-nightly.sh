#!/usr/bin/env bash
# The long run of the engine model (tests/engine_model.rs): many seeds, in
# chunks run side by side at low priority, with more of the costly cases
# (deep and wide trees, a crash after every call of a plan) than CI runs.
# Run by hand; CI runs the default 500 cases.
#
#   bench/model-nightly.sh [CASES] [JOBS]
#
# CASES   how many seeds (default 100000)
# JOBS    chunks run at once (default: the number of CPUs)
#
# Environment: FIRST_SEED (default random), CHUNK (cases per chunk, default
# 500), OUT (where the chunks' logs go, default a new folder under /tmp),
# and the model's own rates, passed through with these defaults:
# PRISM_MODEL_SYSTEMATIC_EVERY=20, PRISM_MODEL_DEEP_EVERY=15,
# PRISM_MODEL_MAX_DEEP=300, PRISM_MODEL_WIDE_EVERY=40. A deep case costs
# about the square of its depth: 500 levels fit 100,000 cases in a few
# hours only at a much lower rate.
#
# Prints each chunk as it ends, then the cases per second, every failure
# with its replay line and the shrunk case to keep, and a summary. Exits 1
# when a case failed.
set -euo pipefail

cases=${1:-100000}
jobs=${2:-$(nproc)}
chunk=${CHUNK:-500}
first=${FIRST_SEED:-$(od -An -N6 -tu8 /dev/urandom | tr -d ' ')}
out=${OUT:-$(mktemp -d /tmp/prism-model-nightly.XXXXXX)}
mkdir -p "$out"
export PRISM_MODEL_SYSTEMATIC_EVERY=${PRISM_MODEL_SYSTEMATIC_EVERY:-20}
export PRISM_MODEL_DEEP_EVERY=${PRISM_MODEL_DEEP_EVERY:-15}
export PRISM_MODEL_MAX_DEEP=${PRISM_MODEL_MAX_DEEP:-300}
export PRISM_MODEL_WIDE_EVERY=${PRISM_MODEL_WIDE_EVERY:-40}
export PRISM_MODEL_KEEP_GOING=1

cd "$(dirname "$0")/.."
echo "building the model in release mode..."
binary=$(cargo test --release --test engine_model --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
if [[ ! -x "$binary" ]]; then
    echo "could not build the engine model test" >&2
    exit 2
fi

echo "engine model: $cases cases from seed $first, chunks of $chunk, $jobs at once, logs in $out"
echo "rates: systematic 1 in $PRISM_MODEL_SYSTEMATIC_EVERY, deep (to $PRISM_MODEL_MAX_DEEP levels) 1 in $PRISM_MODEL_DEEP_EVERY, wide 1 in $PRISM_MODEL_WIDE_EVERY"
started=$(date +%s)

run_chunk() {
    local start=$1 count=$2 log="$out/chunk-$1.log"
    # The seeds of a chunk follow each other from its first.
    if PRISM_MODEL_SEED=$start PRISM_MODEL_CASES=$count nice -n 10 \
        "$binary" random_multi_device --nocapture --test-threads 1 >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
    fi
    echo "chunk $start: $(grep -o '[0-9]* cases and [0-9]* crash replays in [^,]*' "$log" || echo 'no summary') $result"
}
export -f run_chunk
export binary out

for ((offset = 0; offset < cases; offset += chunk)); do
    count=$((cases - offset < chunk ? cases - offset : chunk))
    # Seeds wrap around like the test's own (u64 arithmetic).
    printf '%s %s\n' "$(python3 -c "print(($first + $offset) % 2**64)")" "$count"
done | xargs -P "$jobs" -L 1 bash -c 'run_chunk "$0" "$1"'

elapsed=$(($(date +%s) - started))
elapsed=$((elapsed > 0 ? elapsed : 1))
summaries=$(cat "$out"/chunk-*.log | grep -h '^engine model: [0-9]* cases and' || true)
done_cases=$(awk '{s += $3} END {print s + 0}' <<<"$summaries")
replays=$(awk '{s += $6} END {print s + 0}' <<<"$summaries")
failed=$(awk -F', ' '{split($NF, f, " "); s += f[1]} END {print s + 0}' <<<"$summaries")
crashed=$(grep -L '^engine model: [0-9]* cases and' "$out"/chunk-*.log || true)
# What went off, summed over the chunks: the six counts of each chunk's
# "went off at local calls: ...; at remote calls: ..." line, in order.
disturbed=$({ grep -h '^engine model: went off' "$out"/chunk-*.log || true; } | awk '{
    n = 0; line = $0
    while (match(line, /[0-9]+/)) { s[++n] += substr(line, RSTART, RLENGTH); line = substr(line, RSTART + RLENGTH) }
} END {
    printf "local calls: %d I/O errors, %d crashes, %d racing edits; remote calls: %d, %d, %d\n", s[1], s[2], s[3], s[4], s[5], s[6]
}')

echo
if [[ $failed -gt 0 || -n $crashed ]]; then
    echo "== failures"
    grep -h -A3 '^engine model: FAILED' "$out"/chunk-*.log | grep -E 'FAILED|^replay:' || true
    grep -h -E '^(shrunk in|replay:|keep in)' "$out"/chunk-*.log | sort -u || true
    for log in $crashed; do
        echo "a chunk ended without its summary (a crash of the test itself?): $log"
    done
    echo
fi
echo "== summary"
echo "cases:          $done_cases of $cases ($replays more runs with a placed crash)"
echo "failed:         $failed"
echo "went off at:    $disturbed"
echo "wall time:      ${elapsed} s with $jobs at once"
awk -v c="$done_cases" -v r="$replays" -v t="$elapsed" 'BEGIN {
    printf "cases/s:        %.1f (%.1f runs/s with the crash replays)\n", c / t, (c + r) / t
    if (c > 0) printf "100000 cases:   about %.1f h at this rate\n", 100000 / (c / t) / 3600
}'
echo "logs:           $out"
[[ $failed -eq 0 && -z $crashed ]]
