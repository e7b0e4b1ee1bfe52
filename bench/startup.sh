#!/usr/bin/env bash
# Startup-to-ready time and idle RSS of the release binary on the quickstart config.
# Usage: bench/startup.sh [runs]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-7}"
cargo build --release --quiet
bin="$PWD/target/release/pillion"
port=19977
ready_ms=(); rss_kib=()
for _ in $(seq "$runs"); do
    data="$(mktemp -d)"
    start=$(date +%s%N)
    PILLION_DATA_DIR="$data" PILLION_ADMIN_LISTEN="127.0.0.1:$port" "$bin" run --config config/quickstart.yaml >/dev/null 2>&1 &
    pid=$!
    until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
        sleep 0.001
        if [ $(( ($(date +%s%N) - start) / 1000000 )) -gt 10000 ]; then echo "not ready after 10s" >&2; kill "$pid"; exit 1; fi
    done
    ready_ms+=("$(( ($(date +%s%N) - start) / 1000 ))")
    sleep 3   # let it read the fixtures and go idle
    rss_kib+=("$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")")
    kill -TERM "$pid"; wait "$pid" || true
    rm -rf "$data"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "runs: $runs"
echo "startup to /readyz 200: median $(median "${ready_ms[@]}") us (all: ${ready_ms[*]})"
echo "idle RSS after reading fixtures: median $(median "${rss_kib[@]}") KiB (all: ${rss_kib[*]})"
