#!/usr/bin/env bash
# Read + frame throughput of the tailer on a 200 MB file from the page cache, next to
# `cat file > /dev/null` on the same file and machine. Prints the medians.
#   bench/tail_throughput.sh            (uses $TMPDIR/pillion-bench-200MB.log, made on first run)
set -euo pipefail
cd "$(dirname "$0")/.."
export PILLION_BENCH_FILE="${PILLION_BENCH_FILE:-${TMPDIR:-/tmp}/pillion-bench-200MB.log}"

# The criterion bench creates the file if needed, warms the page cache and measures.
cargo bench --bench tail_read -- --noplot 2>&1 | grep -E "bench file|time:|thrpt:|^tail_read" || true

size=$(stat -c %s "$PILLION_BENCH_FILE")
lines=$(wc -l < "$PILLION_BENCH_FILE")
criterion="${CARGO_TARGET_DIR:-target}/criterion"
for bench in tail_read_bytes/read_only tail_read_bytes/read_and_frame; do
  ns=$(sed -E 's/.*"median":\{"confidence_interval":\{[^}]*\},"point_estimate":([0-9.e+]+).*/\1/' \
    "$criterion/$bench/new/estimates.json")
  awk -v ns="$ns" -v size="$size" -v lines="$lines" -v name="$bench" 'BEGIN {
    s = ns / 1e9
    printf "%s: median %.1f ms, %.0f MiB/s, %.2f M lines/s\n", name, s * 1000, size / 1048576 / s, lines / s / 1e6
  }'
done

runs=()
for _ in 1 2 3 4 5 6 7; do
  start=$(date +%s%N)
  cat "$PILLION_BENCH_FILE" > /dev/null
  end=$(date +%s%N)
  runs+=($(( (end - start) / 1000 )))
done
median_us=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n 4p)
awk -v us="$median_us" -v size="$size" 'BEGIN {
  printf "cat > /dev/null: median %.1f ms, %.0f MiB/s (7 runs)\n", us / 1000, size / 1048576 / (us / 1e6)
}'
