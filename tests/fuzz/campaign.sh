#!/usr/bin/env bash
# Tandem fuzz campaign for a 16-core Linux box without a package registry (issue 17); also
# /tmp/device-queue/fuzz.sh.
# Run from the repository root. Needs (carried): build/fuzz/device/ made by
#   tests/fuzz/package_device.sh  (fuzz binaries built with the `fuzz` preset, the shared
#   libraries they need from ldd in lib/, glibc and its loader in glibc/ as a fallback).
# Seeds: tests/fuzz/corpus/<target> (tracked). Each target runs JOBS libFuzzer jobs at once for
# SECONDS each (default 5 x 190 s = 15.8 CPU-minutes per target, ~3.3 min wall for all three
# together on 16 cores). Writes into $OUT: crashes/<target>/ (crash-*, leak-*, timeout-*,
# oom-* inputs), logs/<target>/fuzz-N.log, corpus/<target>/ (the grown corpus), summary.tsv;
# prints a table last.
set -uo pipefail
JOBS=${JOBS:-5}
SECONDS_PER_JOB=${SECONDS_PER_JOB:-190}
OUT=${OUT:-/tmp/tandem-fuzz-out}
PKG=build/fuzz/device
TARGETS=(http wire config)
mkdir -p "$OUT"
[ -d "$PKG/bin" ] || { echo "fuzz.sh: $PKG/bin missing (carry build/fuzz/device)"; exit 2; }
nproc_=$(nproc)
echo "fuzz.sh: $(uname -srm), $nproc_ cores, $JOBS jobs x ${SECONDS_PER_JOB}s per target"

# Can the box's own loader and libc run the binaries with our libraries? Otherwise use the
# bundled glibc through its loader, and start the jobs ourselves (libFuzzer's -jobs re-executes
# argv[0] without the loader).
export LD_LIBRARY_PATH="$PWD/$PKG/lib"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
mode=native
if [ "${FORCE_LOADER:-0}" = 1 ] || ! "$PKG/bin/tandem_fuzz_wire" -runs=0 "$PKG/empty" >"$OUT/probe.log" 2>&1; then
    mode=loader
    if ! "$PKG/glibc/ld-linux-x86-64.so.2" --library-path "$PKG/glibc:$PKG/lib" \
         "$PKG/bin/tandem_fuzz_wire" -runs=0 "$PKG/empty" >>"$OUT/probe.log" 2>&1; then
        echo "fuzz.sh: the binaries run neither natively nor with the bundled glibc:"
        tail -20 "$OUT/probe.log"
        exit 1
    fi
fi
echo "fuzz.sh: mode $mode"

run_target() {
    local t=$1
    local bin="$PWD/$PKG/bin/tandem_fuzz_$t"
    local corpus="$OUT/corpus/$t" crashes="$OUT/crashes/$t/" logs="$OUT/logs/$t"
    mkdir -p "$corpus" "$crashes" "$logs"
    cp -n tests/fuzz/corpus/$t/* "$corpus/" 2>/dev/null
    local common=(-max_total_time="$SECONDS_PER_JOB" -timeout=25 -rss_limit_mb=4096
                  -artifact_prefix="$crashes" -print_final_stats=1)
    if [ "$mode" = native ]; then
        (cd "$logs" && "$bin" "${common[@]}" -jobs="$JOBS" -workers="$JOBS" "$corpus" \
             >"$logs/driver.log" 2>&1)
    else
        local pids=()
        for i in $(seq 0 $((JOBS - 1))); do
            "$PWD/$PKG/glibc/ld-linux-x86-64.so.2" --library-path "$PWD/$PKG/glibc:$PWD/$PKG/lib" \
                "$bin" "${common[@]}" -seed=$((1000 + i)) "$corpus" >"$logs/fuzz-$i.log" 2>&1 &
            pids+=($!)
        done
        for p in "${pids[@]}"; do wait "$p"; done
    fi
}

start=$(date +%s)
for t in "${TARGETS[@]}"; do run_target "$t" & done
wait
wall=$(( $(date +%s) - start ))

# Per target: jobs, CPU seconds (each job is one thread: the sum of "Done N runs in S second(s)"),
# executions, crash/leak/timeout/oom inputs, the largest coverage reached.
printf "target\tjobs\tcpu_s\tcpu_min\texecs\tcrashes\tcov\tcorpus\n" >"$OUT/summary.tsv"
for t in "${TARGETS[@]}"; do
    logs="$OUT/logs/$t"
    jobs=$(ls "$logs"/fuzz-*.log 2>/dev/null | wc -l)
    cpu=$(cat "$logs"/fuzz-*.log 2>/dev/null | sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' |
          awk '{s+=$1} END {print s+0}')
    execs=$(cat "$logs"/fuzz-*.log 2>/dev/null | sed -n 's/^Done \([0-9]*\) runs.*/\1/p' |
            awk '{s+=$1} END {print s+0}')
    crashes=$(ls "$OUT/crashes/$t" 2>/dev/null | wc -l)
    cov=$(cat "$logs"/fuzz-*.log 2>/dev/null | sed -n 's/.* cov: \([0-9]*\) .*/\1/p' | sort -n | tail -1)
    corpus=$(ls "$OUT/corpus/$t" | wc -l)
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$t" "$jobs" "$cpu" \
        "$(awk -v c="$cpu" 'BEGIN {printf "%.1f", c / 60}')" \
        "$execs" "$crashes" "${cov:-?}" "$corpus" >>"$OUT/summary.tsv"
done
# First lines of each crash report, for the note.
for t in "${TARGETS[@]}"; do
    grep -h -A3 -E "^==[0-9]+==ERROR|runtime error|deadly signal|ERROR: libFuzzer" \
        "$OUT/logs/$t"/fuzz-*.log 2>/dev/null | head -40 >"$OUT/crashes/$t.first-lines.txt"
done
echo "fuzz.sh: wall ${wall}s, mode $mode"
column -t -s $'\t' "$OUT/summary.tsv" 2>/dev/null || cat "$OUT/summary.tsv"
