#!/usr/bin/env bash
# Proxy overhead, side by side in one run: the same trivial upstream (nginx `return 200`)
# reached directly; through pillion with RED metrics and a span per request exported over
# OTLP/HTTP (sample_ratio 1.0); through pillion with RED metrics only; through nginx
# (proxy_pass, keep-alive pool); and through Caddy (reverse_proxy with `servers { metrics }`, a
# peer that records RED too). Each proxy runs one worker (nginx worker_processes 1, pillion
# worker_threads 1, Caddy GOMAXPROCS=1).
#
# Per contestant: latency at a fixed request rate (oha with --latency-correction, so a stalled
# response cannot hide the requests it delayed), saturation throughput (h2load, as fast as the
# proxy answers), CPU time per request at saturation (user+system of the proxy process from
# /proc, robust when the machine is shared) and peak RSS. Loopback only; every run stops by itself.
#
# Usage: bench/proxy.sh      env: RATE=2000 DURATION=10 REPS=3 CONNS=32
#        PILLION_BIN=path/to/pillion to measure a given build (default: build this tree)
#        PORT_BASE=18080: eight ports from here (change it to run two benches side by side)
# Needs: oha (cargo install oha), h2load (apt-get install nghttp2-client), nginx
#        (apt-get install nginx-light), caddy (apt-get install caddy; skipped when absent), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${RATE:-2000}" DURATION="${DURATION:-10}" REPS="${REPS:-3}" CONNS="${CONNS:-32}"
RATE_CLIENTS=20
command -v oha >/dev/null || { echo "oha not found: cargo install oha" >&2; exit 2; }
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client" >&2; exit 2; }
command -v nginx >/dev/null || { echo "nginx not found: apt-get install nginx-light" >&2; exit 2; }
have_caddy=1
command -v caddy >/dev/null || { echo "caddy not found (apt-get install caddy): measuring without it" >&2; have_caddy=0; }

if [ -n "${PILLION_BIN:-}" ]; then
    bin="$(realpath "$PILLION_BIN")"
else
    cargo build --release --quiet
    bin="${CARGO_TARGET_DIR:-target}/release/pillion"
fi
# shellcheck source=bench/common.sh
. bench/common.sh

PORT_BASE="${PORT_BASE:-18080}"
UP=$PORT_BASE SINK=$((PORT_BASE + 1)) NGINX=$((PORT_BASE + 2)) PILLION=$((PORT_BASE + 3))
ADMIN=$((PORT_BASE + 4)) RED=$((PORT_BASE + 5)) RED_ADMIN=$((PORT_BASE + 6)) CADDY=$((PORT_BASE + 7))
CADDY_ADMIN=$((PORT_BASE + 8))


# The upstream app, and on a second port an OTLP/HTTP sink that accepts and discards spans.
start_nginx upstream "
    server { listen 127.0.0.1:$UP; location / { return 200 'ok\n'; } }
    server { listen 127.0.0.1:$SINK; client_max_body_size 64m; location / { return 200; } }"
# nginx as the proxy to compare with: keep-alive pool to the upstream.
start_nginx proxy "
    upstream app { server 127.0.0.1:$UP; keepalive 64; }
    server { listen 127.0.0.1:$NGINX; location / {
        proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ''; } }"

start_pillion() { # name, listen port, admin port, tracing section
    cat >"$work/$1.yaml" <<CONF
admin: { listen: "127.0.0.1:$3" }
worker_threads: 1
logs: { data_dir: "$work/$1-data" }
proxy:
  inbound:
    listen: "127.0.0.1:$2"
    upstream: "http://127.0.0.1:$UP"
    routes: ["/api/users/{id}"]
$4
CONF
    "$bin" run --config "$work/$1.yaml" >"$work/$1.out" 2>"$work/$1.err" &
    pids+=($!)
}
start_pillion pillion "$PILLION" "$ADMIN" "tracing:
  otlp: { endpoint: \"http://127.0.0.1:$SINK\", protocol: http/protobuf }
  sample_ratio: 1.0"
pillion_pid=${pids[-1]}
start_pillion pillion-red "$RED" "$RED_ADMIN" ""
red_pid=${pids[-1]}

caddy_pid=0
if [ "$have_caddy" = 1 ]; then
    cat >"$work/Caddyfile" <<CONF
{
    admin 127.0.0.1:$CADDY_ADMIN
    auto_https off
    servers {
        metrics
    }
}
http://127.0.0.1:$CADDY {
    reverse_proxy 127.0.0.1:$UP
}
CONF
    HOME="$work" XDG_DATA_HOME="$work" XDG_CONFIG_HOME="$work" GOMAXPROCS=1 \
        caddy run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.out" 2>"$work/caddy.err" &
    caddy_pid=$!
    pids+=("$caddy_pid")
fi

targets=(direct:$UP:0 pillion:$PILLION:$pillion_pid pillion-red:$RED:$red_pid)
for port in $UP $NGINX $PILLION $RED; do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.05; done
    curl -sf "http://127.0.0.1:$port/" >/dev/null || { echo "nothing on port $port" >&2; cat "$work"/*.err >&2; exit 1; }
done
nginx_worker="$(pgrep -P "$(cat "$work/proxy/nginx.pid")" | head -1)"
targets+=(nginx:$NGINX:$nginx_worker)
if [ "$have_caddy" = 1 ]; then
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$CADDY/" >/dev/null 2>&1 && break; sleep 0.05; done
    curl -sf "http://127.0.0.1:$CADDY/" >/dev/null || { echo "caddy did not start" >&2; cat "$work/caddy.err" >&2; exit 1; }
    targets+=(caddy:$CADDY:$caddy_pid)
fi
cpu_ticks() { [ "$1" = 0 ] && { echo 0; return; }; awk '{print $14 + $15}' "/proc/$1/stat"; }
user_ticks() { [ "$1" = 0 ] && { echo 0; return; }; awk '{print $14}' "/proc/$1/stat"; }

url() { echo "http://127.0.0.1:$1/api/users/42"; }
for target in "${targets[@]}"; do # warm up
    IFS=: read -r _ port _ <<<"$target"
    h2load --h1 -D 2 -c "$CONNS" -t 1 "$(url "$port")" >/dev/null
done
for rep in $(seq "$REPS"); do
    for target in "${targets[@]}"; do
        IFS=: read -r label port pid <<<"$target"
        # Fixed rate over RATE_CLIENTS connections, latency corrected for coordinated omission.
        oha --no-tui --output-format json --latency-correction -z "${DURATION}s" -c "$RATE_CLIENTS" -q "$RATE" \
            "$(url "$port")" >"$work/$label-rate-$rep.json"
        # Saturation: CONNS connections as fast as the proxy answers; CPU ticks around it.
        before="$(cpu_ticks "$pid")" before_user="$(user_ticks "$pid")"
        h2load --h1 -D "$DURATION" -c "$CONNS" -t 1 "$(url "$port")" >"$work/$label-max-$rep.txt"
        echo "$(($(cpu_ticks "$pid") - before))" >"$work/$label-max-$rep.ticks"
        echo "$(($(user_ticks "$pid") - before_user))" >"$work/$label-max-$rep.user"
    done
done

hwm() { [ "$1" = 0 ] && { echo 0; return; }; awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
rss_line="pillion=$(hwm "$pillion_pid") pillion-red=$(hwm "$red_pid") nginx=$(hwm "$nginx_worker") caddy=$(hwm "$caddy_pid")"
# The binary's own pages (text, read-only data) count in RSS too: show what is anonymous.
rss_split="$(awk '/RssAnon|RssFile/ {printf "%s %.1f MiB ", $1, $2 / 1024}' "/proc/$pillion_pid/status")"
spans="$(curl -sf "http://127.0.0.1:$ADMIN/metrics" | grep -E '^pillion_spans_(exported|dropped)_total' | tr '\n' ' ')"
labels="$(for t in "${targets[@]}"; do echo "${t%%:*}"; done | tr '\n' ' ')"

python3 - "$work" "$REPS" "$RATE" "$CONNS" "$DURATION" "$(getconf CLK_TCK)" "$rss_line" "$spans" "$rss_split" "$labels" <<'PY'
import json, re, statistics, sys
work, reps, rate, conns, duration, clk_tck, rss_line, spans, rss_split, labels = sys.argv[1:11]
reps, clk_tck, labels = int(reps), int(clk_tck), labels.split()
rss = {k: int(v) / 1024 for k, v in (item.split("=") for item in rss_line.split())}
median = statistics.median
def rate_run(label, rep):
    data = json.load(open(f"{work}/{label}-rate-{rep}.json"))
    pct = data["latencyPercentiles"]
    codes = data.get("statusCodeDistribution", {})
    # Requests still in flight when the run's time is up are cut by oha itself, not failed.
    errors = {why: n for why, n in data.get("errorDistribution", {}).items() if "deadline" not in why}
    failed = sum(n for code, n in codes.items() if code != "200") + sum(errors.values())
    return {q: pct[q] * 1e6 for q in ("p50", "p90", "p99")}, failed
def max_run(label, rep):
    text = open(f"{work}/{label}-max-{rep}.txt").read()
    rps = float(re.search(r"finished in [0-9.]+s, ([0-9.]+) req/s", text).group(1))
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
    ticks = int(open(f"{work}/{label}-max-{rep}.ticks").read())
    user = int(open(f"{work}/{label}-max-{rep}.user").read())
    served = max(1, int(done.group(3)))
    return rps, ticks / clk_tck * 1e6 / served, user / clk_tck * 1e6 / served, int(done.group(4)) + int(done.group(5))
rows = {}
for label in labels:
    rates = [rate_run(label, r) for r in range(1, reps + 1)]
    maxes = [max_run(label, r) for r in range(1, reps + 1)]
    rows[label] = {
        **{q: median(r[0][q] for r in rates) for q in ("p50", "p90", "p99")},
        "rps": median(m[0] for m in maxes), "cpu": median(m[1] for m in maxes), "user": median(m[2] for m in maxes),
        "failed": sum(r[1] for r in rates) + sum(m[3] for m in maxes),
    }
print(f"\n{reps} runs of {duration}s per cell, medians; fixed rate {rate} req/s over 20 connections (oha, latency "
      f"corrected); saturation with {conns} connections (h2load); one worker per proxy.\n")
print("| path | p50 @ rate | p90 @ rate | added p90 | p99 @ rate | saturation req/s | vs nginx | vs caddy "
      "| CPU per request (user) | CPU vs nginx | peak RSS | failed |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
base = rows["direct"]
for label in labels:
    row = rows[label]
    proxy = label != "direct"
    added = f"{row['p90'] - base['p90']:+.0f} us" if proxy else ""
    vs_nginx = f"{row['rps'] / rows['nginx']['rps']:.2f}x" if proxy else ""
    vs_caddy = f"{row['rps'] / rows['caddy']['rps']:.2f}x" if proxy and "caddy" in rows else ""
    cpu = f"{row['cpu']:.1f} us ({row['user']:.1f})" if proxy else ""
    cpu_ratio = f"{row['cpu'] / rows['nginx']['cpu']:.2f}x" if proxy else ""
    peak = f"{rss[label]:.1f} MiB" if proxy and rss.get(label) else ""
    print(f"| {label} | {row['p50']:.0f} us | {row['p90']:.0f} us | {added} | {row['p99']:.0f} us | {row['rps']:.0f} "
          f"| {vs_nginx} | {vs_caddy} | {cpu} | {cpu_ratio} | {peak} | {row['failed']} |")
print(f"\npillion: {spans}")
print(f"pillion at the end: {rss_split}")
PY
