#!/usr/bin/env bash
# Proxy overhead, side by side in one run: the same trivial upstream reached directly, through
# pillion (RED metrics and tracing on, spans exported over OTLP/HTTP), and through nginx, each
# proxy with one worker. Measures p50/p99 latency at a fixed request rate and saturation
# throughput with oha, and the proxies' peak RSS. Loopback only; every run stops by itself.
#
# Usage: bench/proxy.sh            env: RATE=2000 DURATION=10 REPS=3 CONNS=32
# Needs: oha (cargo install oha), nginx (apt-get install nginx-light), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${RATE:-2000}" DURATION="${DURATION:-10}" REPS="${REPS:-3}" CONNS="${CONNS:-32}"
command -v oha >/dev/null || { echo "oha not found: cargo install oha" >&2; exit 2; }
command -v nginx >/dev/null || { echo "nginx not found: apt-get install nginx-light" >&2; exit 2; }

cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/pillion"
work="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

UP=18080 SINK=18081 NGINX=18082 PILLION=18083 ADMIN=18084

nginx_conf() { # name, body
    mkdir -p "$work/$1"
    cat >"$work/$1/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/$1; proxy_temp_path $work/$1; fastcgi_temp_path $work/$1;
    uwsgi_temp_path $work/$1; scgi_temp_path $work/$1;
    keepalive_requests 1000000;
    $2
}
CONF
    nginx -c "$work/$1/nginx.conf" -e "$work/$1/error.log" &
    pids+=($!)
}

# The upstream app (and, on a second port, an OTLP/HTTP sink that accepts and discards spans).
nginx_conf upstream "
    server { listen 127.0.0.1:$UP; location / { return 200 'ok\n'; } }
    server { listen 127.0.0.1:$SINK; client_max_body_size 64m; location / { return 200; } }"
# nginx as the proxy to compare with: pooled keep-alive to the upstream.
nginx_conf proxy "
    upstream app { server 127.0.0.1:$UP; keepalive 64; }
    server { listen 127.0.0.1:$NGINX; location / {
        proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ''; } }"

cat >"$work/pillion.yaml" <<CONF
admin: { listen: "127.0.0.1:$ADMIN" }
worker_threads: 1
logs: { data_dir: "$work/data" }
proxy:
  inbound:
    listen: "127.0.0.1:$PILLION"
    upstream: "http://127.0.0.1:$UP"
    routes: ["/api/users/{id}"]
tracing:
  otlp: { endpoint: "http://127.0.0.1:$SINK", protocol: http/protobuf }
  sample_ratio: 1.0
CONF
"$bin" run --config "$work/pillion.yaml" >"$work/pillion.out" 2>"$work/pillion.err" &
pillion_pid=$!
pids+=("$pillion_pid")

for port in $UP $NGINX $PILLION; do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.05; done
    curl -sf "http://127.0.0.1:$port/" >/dev/null || { echo "nothing on port $port" >&2; cat "$work"/*.err "$work"/*/error.log >&2; exit 1; }
done
nginx_worker="$(pgrep -P "$(cat "$work/proxy/nginx.pid")" | head -1)"

run() { # label port mode rep
    local args=(-z "${DURATION}s" -c "$CONNS" --no-tui --output-format json)
    if [ "$3" = rate ]; then args+=(-q "$RATE" --latency-correction); fi
    oha "${args[@]}" "http://127.0.0.1:$2/api/users/42" >"$work/$1-$3-$4.json"
}

for target in direct:$UP pillion:$PILLION nginx:$NGINX; do
    oha -z 2s -c "$CONNS" --no-tui "http://127.0.0.1:${target#*:}/" >/dev/null # warm up
done
for rep in $(seq "$REPS"); do
    for target in direct:$UP pillion:$PILLION nginx:$NGINX; do
        run "${target%%:*}" "${target#*:}" rate "$rep"
        run "${target%%:*}" "${target#*:}" max "$rep"
    done
done

hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
pillion_kib="$(hwm "$pillion_pid")" nginx_kib="$(hwm "$nginx_worker")"
spans="$(curl -sf "http://127.0.0.1:$ADMIN/metrics" | grep -E '^pillion_spans_(exported|dropped)_total' | tr '\n' ' ')"

python3 - "$work" "$REPS" "$RATE" "$CONNS" "$DURATION" "$pillion_kib" "$nginx_kib" "$spans" <<'PY'
import json, statistics, sys
work, reps, rate, conns, duration, pillion_kib, nginx_kib, spans = sys.argv[1:9]
def load(label, mode, rep):
    with open(f"{work}/{label}-{mode}-{rep}.json") as f:
        return json.load(f)
def median(values):
    return statistics.median(values)
rows = {}
for label in ("direct", "pillion", "nginx"):
    runs = [load(label, "rate", r) for r in range(1, int(reps) + 1)]
    maxes = [load(label, "max", r) for r in range(1, int(reps) + 1)]
    p50 = median([r["latencyPercentiles"]["p50"] * 1e6 for r in runs])
    p99 = median([r["latencyPercentiles"]["p99"] * 1e6 for r in runs])
    rps = median([m["summary"]["requestsPerSec"] for m in maxes])
    ok = all(m["summary"]["successRate"] == 1.0 for m in runs + maxes)
    rows[label] = (p50, p99, rps, ok)
print(f"\n{reps} runs of {duration}s each, {conns} connections; medians. Fixed rate: {rate} req/s.\n")
print("| path | p50 @ %s/s | p99 @ %s/s | added p99 | saturation req/s | vs nginx | peak RSS | errors |" % (rate, rate))
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
base = rows["direct"]
for label in ("direct", "pillion", "nginx"):
    p50, p99, rps, ok = rows[label]
    added = "" if label == "direct" else f"{p99 - base[1]:.0f} us"
    ratio = f"{rps / rows['nginx'][2]:.2f}x"
    rss = {"pillion": f"{int(pillion_kib) / 1024:.1f} MiB", "nginx": f"{int(nginx_kib) / 1024:.1f} MiB (worker)"}.get(label, "")
    print(f"| {label} | {p50:.0f} us | {p99:.0f} us | {added} | {rps:.0f} | {ratio} | {rss} | {'none' if ok else 'SOME'} |")
print(f"\npillion span export: {spans}")
PY
