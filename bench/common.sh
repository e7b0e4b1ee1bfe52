# Shared by the bench scripts (sourced, not run): a scratch directory, the processes to stop on
# exit, and an nginx with one worker for upstreams, sinks and comparison proxies.
work="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

start_nginx() { # name, server blocks
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
