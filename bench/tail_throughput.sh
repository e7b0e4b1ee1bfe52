#!/usr/bin/env bash
# Read + frame throughput of the tailer on a 200 MB file from the page cache, next to
# `cat file > /dev/null` on the same file and machine. Prints the medians.
#   bench/tail_throughput.sh            (uses $TMPDIR/pillion-bench-200MB.log, made on first run)
set -euo pipefail
cd "$(dirname "$0")/.."
export PILLION_BENCH_FILE="${PILLION_BENCH_FILE:-${TMPDIR:-/tmp}/pillion-bench-200MB.log}"

# The criterion bench creates the file if needed, warms the page cache and measures.
cargo bench --bench tail_read -- --noplot 2>&1 | grep -E "bench file|time:|thrpt:|^tail_read" || true

runs=()
for _ in 1 2 3 4 5 6 7; do
  start=$(date +%s%N)
  cat "$PILLION_BENCH_FILE" > /dev/null
  end=$(date +%s%N)
  runs+=($(( (end - start) / 1000 )))
done
median_us=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n 4p)
size=$(stat -c %s "$PILLION_BENCH_FILE")
awk -v us="$median_us" -v size="$size" 'BEGIN {
  printf "cat > /dev/null: median %.1f ms, %.0f MiB/s (7 runs)\n", us / 1000, size / 1048576 / (us / 1e6)
}'
