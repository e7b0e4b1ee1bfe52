//! The proxy through the real binary: a test app behind `proxy.inbound`, OTLP receivers for
//! spans, and `/metrics` on the admin port. Everything on 127.0.0.1, ports chosen by the OS.

mod proxy_support;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_support::{Upstream, attributes, client, get, grpc_receiver, hex, http_receiver, log_address, runtime};
use support::{Pillion, eventually, http_get, write_config};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn inbound_config(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "admin: {{ listen: \"127.0.0.1:0\" }}\nproxy:\n  inbound:\n    listen: \"127.0.0.1:0\"\n    upstream: \"http://{upstream}\"\n    routes: [\"/api/users/{{id}}\"]\n{extra}"
    )
}

fn start(config: &str) -> (tempfile::TempDir, Pillion, SocketAddr, SocketAddr) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), config);
    let mut pillion = Pillion::start(dir.path(), &path);
    let admin = pillion.admin_address();
    let proxy = log_address(&mut pillion, "proxy listening");
    (dir, pillion, admin, proxy)
}

fn metrics(admin: SocketAddr) -> String {
    http_get(admin, "/metrics", &[]).2
}

fn traceparent_of(seen: &proxy_support::Seen) -> String {
    seen.headers.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn promtool_check(text: &str) {
    let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(std::env::var_os("CI").is_none(), "promtool is required in CI");
        eprintln!("skipping promtool: not installed");
        return;
    };
    promtool.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let output = promtool.wait_with_output().expect("promtool");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn trace_context_reaches_the_app_and_spans_reach_the_grpc_collector() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let (collector, received) = grpc_receiver(&rt);
    let extra = format!(
        "    access_log: true\ntracing:\n  otlp: {{ endpoint: \"http://{collector}\", protocol: grpc }}\nservice: {{ name: checkout }}\n"
    );
    let (_dir, pillion, admin, proxy) = start(&inbound_config(upstream.address, &extra));

    // A caller with a trace: the app sees the same trace, with pillion's span as its parent.
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let (status, _, body) =
        http_get(proxy, "/api/users/42", &[("traceparent", &traceparent), ("user-agent", "test-agent/1")]);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let seen = upstream.seen();
    let forwarded = traceparent_of(&seen[0]);
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE_ID, "01"), "{forwarded}");
    let pillion_span_id = parts[2].to_owned();
    assert_ne!(pillion_span_id, PARENT_ID);
    assert_eq!(seen[0].headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen[0].headers["x-forwarded-proto"], "http");

    // A malformed traceparent: a new trace, and the request succeeds.
    let (status, _, _) = http_get(proxy, "/orders/7", &[("traceparent", "00-not-a-trace-01")]);
    assert_eq!(status, 200);
    let new_trace = traceparent_of(&upstream.seen()[1]);
    let new_trace_id = new_trace.split('-').nth(1).unwrap_or_default().to_owned();
    assert_eq!(new_trace_id.len(), 32, "{new_trace}");
    assert_ne!(new_trace_id, TRACE_ID);

    // Both server spans reach the collector, with the semantic-convention attributes.
    let spans = eventually(Duration::from_secs(15), "2 spans at the collector", || {
        let spans = received.all();
        (spans.len() >= 2).then_some(spans)
    });
    let (resource, span) = spans.iter().find(|(_, s)| hex(&s.trace_id) == TRACE_ID).expect("continued span");
    assert!(resource.contains(&("service.name".into(), "checkout".into())), "{resource:?}");
    assert_eq!(span.name, "GET /api/users/{id}");
    assert_eq!(span.kind, 2, "SERVER");
    assert_eq!(hex(&span.parent_span_id), PARENT_ID);
    assert_eq!(hex(&span.span_id), pillion_span_id);
    let attrs = attributes(span);
    for expected in [
        ("http.request.method", "GET"),
        ("url.path", "/api/users/42"),
        ("http.route", "/api/users/{id}"),
        ("http.response.status_code", "200"),
        ("server.address", "127.0.0.1"),
        ("client.address", "127.0.0.1"),
        ("user_agent.original", "test-agent/1"),
    ] {
        assert!(attrs.contains(&(expected.0.into(), expected.1.into())), "{expected:?} not in {attrs:?}");
    }
    let (_, root) = spans.iter().find(|(_, s)| hex(&s.trace_id) == new_trace_id).expect("new trace span");
    assert!(root.parent_span_id.is_empty(), "a malformed header starts a root span");
    assert_eq!(root.name, "GET /orders/{id}");

    // /metrics counts what was sent, passes promtool, and carries exemplars for OpenMetrics.
    let text = eventually(Duration::from_secs(10), "spans counted as exported", || {
        let text = metrics(admin);
        text.contains("pillion_spans_exported_total 2").then_some(text)
    });
    for line in [
        r#"http_server_request_duration_seconds_count{http_request_method="GET",http_route="/api/users/{id}",http_response_status_code="200"} 1"#,
        r#"http_server_request_duration_seconds_count{http_request_method="GET",http_route="/orders/{id}",http_response_status_code="200"} 1"#,
        r#"http_server_request_duration_seconds_bucket{le="0.005",http_request_method="GET""#,
        r#"http_server_active_requests{http_request_method="GET"} 0"#,
        "pillion_spans_dropped_total 0",
    ] {
        assert!(text.contains(line) || text.contains(&line.replace("{le=\"0.005\",", "{")), "{line} missing:\n{text}");
    }
    promtool_check(&text);
    let (_, _, openmetrics) = http_get(admin, "/metrics", &[("accept", "application/openmetrics-text; version=1.0.0")]);
    assert!(openmetrics.contains(&format!("# {{trace_id=\"{TRACE_ID}\"}}")), "{openmetrics}");

    // The access log went into the log pipeline (stdout sink), joined on trace_id.
    let records = pillion.wait_for_records(2, Duration::from_secs(10));
    let record = records.iter().find(|r| r["trace_id"] == TRACE_ID).expect("access record");
    assert_eq!(record["span_id"], pillion_span_id.as_str());
    assert_eq!(record["attributes"]["http.route"], "/api/users/{id}");
    assert_eq!(record["attributes"]["http.response.status_code"], 200);
    assert_eq!(record["message"], "GET /api/users/42 200");
}

#[test]
fn spans_export_over_http_protobuf_to_v1_traces() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let (collector, received, paths) = http_receiver(&rt);
    let extra = format!("tracing:\n  otlp: {{ endpoint: \"http://{collector}\", protocol: http/protobuf }}\n");
    let (_dir, mut pillion, admin, proxy) = start(&inbound_config(upstream.address, &extra));
    let (status, _, _) = http_get(proxy, "/health", &[]);
    assert_eq!(status, 200);
    let spans = eventually(Duration::from_secs(15), "a span over HTTP", || {
        let spans = received.all();
        (!spans.is_empty()).then_some(spans)
    });
    assert_eq!(spans[0].1.name, "GET /health");
    assert_eq!(paths.lock().expect("lock")[0], "/v1/traces");
    eventually(Duration::from_secs(5), "export counted", || {
        metrics(admin).contains("pillion_spans_exported_total 1").then_some(())
    });

    // Spans still queued at shutdown are exported before pillion exits.
    assert_eq!(http_get(proxy, "/last", &[]).0, 200);
    pillion.signal("TERM");
    assert!(pillion.wait(Duration::from_secs(10)).success());
    assert!(received.all().iter().any(|(_, span)| span.name == "GET /last"), "the last span was flushed");
}

#[test]
fn an_unreachable_collector_drops_spans_and_requests_still_succeed() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let extra = format!("tracing:\n  otlp: {{ endpoint: \"http://{closed}\", protocol: grpc }}\n");
    let (_dir, _pillion, admin, proxy) = start(&inbound_config(upstream.address, &extra));
    for _ in 0..5 {
        assert_eq!(http_get(proxy, "/a", &[]).0, 200);
    }
    eventually(Duration::from_secs(20), "spans counted as dropped", || {
        metrics(admin).contains("pillion_spans_dropped_total 5").then_some(())
    });
}

#[test]
fn route_label_stays_bounded_under_ten_thousand_random_paths() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let (_dir, _pillion, admin, proxy) = start(&inbound_config(upstream.address, "    max_routes: 50\n"));
    let client = client();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for worker in 0..16u64 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut state = worker.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for i in 0..625u64 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let path = match i % 3 {
                        0 => format!("/items/{}", state % 1_000_000),
                        1 => format!("/p/{:x}/q", state),
                        _ => format!("/w{}", state % 100_000),
                    };
                    let response = client.request(get(format!("http://{proxy}{path}"), &[])).await.expect("request");
                    assert_eq!(response.status(), 200);
                    let _ = response.into_body().collect().await;
                }
            }));
        }
        for task in tasks {
            task.await.expect("worker");
        }
    });
    let text = metrics(admin);
    let routes: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count"))
        .filter_map(|l| l.split("http_route=\"").nth(1)?.split('"').next())
        .collect();
    assert!(routes.len() <= 51, "{} routes: {routes:?}", routes.len());
    assert!(routes.contains("other") && routes.contains("/items/{id}"), "{routes:?}");
    let total: u64 = text
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(total, 10_000);
}

#[test]
fn unreachable_app_is_502_and_slow_app_is_504() {
    let rt = runtime();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let (_dir, _pillion, admin, proxy) = start(&inbound_config(closed, ""));
    let (status, _, body) = http_get(proxy, "/x", &[]);
    assert_eq!(status, 502);
    assert!(body.starts_with("bad gateway"), "{body}");

    let upstream = Upstream::start(&rt);
    let timeouts = "    timeouts: { header_read: 5s, request: 300ms, idle: 5s }\n";
    let (_dir2, _pillion2, admin2, proxy2) = start(&inbound_config(upstream.address, timeouts));
    let started = Instant::now();
    let (status, _, body) = http_get(proxy2, "/slow?ms=3000", &[]);
    assert_eq!(status, 504);
    assert!(body.starts_with("gateway timeout"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let text = metrics(admin);
    assert!(text.contains(r#"http_response_status_code="502",error_type="connect_error"} 1"#), "{text}");
    let text = metrics(admin2);
    assert!(text.contains(r#"http_response_status_code="504",error_type="timeout"} 1"#), "{text}");
}

#[test]
fn websocket_upgrade_h2c_and_graceful_drain() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let (_dir, mut pillion, _admin, proxy) = start(&inbound_config(upstream.address, ""));

    // WebSocket: the handshake passes through and bytes echo both ways.
    let mut ws = TcpStream::connect(proxy).expect("connect");
    ws.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    ws.write_all(b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").expect("handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ws.read_exact(&mut byte).expect("read head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    ws.write_all(b"hello through pillion").expect("write");
    let mut echo = [0u8; 21];
    ws.read_exact(&mut echo).expect("echo");
    assert_eq!(&echo, b"hello through pillion");
    let upgrade_seen = upstream.seen().into_iter().find(|s| s.path == "/ws").expect("ws seen");
    assert_eq!(upgrade_seen.headers["upgrade"], "websocket");

    // h2c with prior knowledge on the same port; the app gets HTTP/1.1.
    let status = rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(proxy).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http2::handshake::<_, _, proxy_support::Body>(
            TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(connection);
        let request = get(format!("http://{proxy}/h2"), &[]);
        let response = sender.send_request(request).await.expect("h2 request");
        assert_eq!(response.version(), http::Version::HTTP_2);
        response.status()
    });
    assert_eq!(status, StatusCode::OK);
    let h2_seen = upstream.seen().into_iter().find(|s| s.path == "/h2").expect("h2 seen");
    assert_eq!(h2_seen.version, http::Version::HTTP_11);

    // Graceful drain: a request in flight at SIGTERM completes; then pillion exits 0.
    let in_flight = std::thread::spawn(move || http_get(proxy, "/slow?ms=700", &[]));
    eventually(Duration::from_secs(5), "slow request at the app", || {
        upstream.seen().iter().any(|s| s.path == "/slow").then_some(())
    });
    pillion.signal("TERM");
    let (status, _, body) = in_flight.join().expect("in flight");
    assert_eq!((status, body.as_str()), (200, "slow\n"));
    assert!(pillion.wait(Duration::from_secs(10)).success());
}

#[test]
fn a_100_mb_body_streams_both_ways_with_flat_memory() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let (_dir, pillion, _admin, proxy) = start(&inbound_config(upstream.address, ""));
    const SIZE: u64 = 100 * 1024 * 1024;
    let (uploaded, downloaded) = rt.block_on(async {
        let chunk = Bytes::from(vec![b'y'; 64 * 1024]);
        let frames = futures_util::stream::iter(
            (0..SIZE / chunk.len() as u64).map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone()))),
        );
        let request =
            Request::post(format!("http://{proxy}/upload")).body(StreamBody::new(frames).boxed()).expect("request");
        let client = client();
        let response = client.request(request).await.expect("upload");
        let uploaded =
            String::from_utf8_lossy(&response.into_body().collect().await.expect("body").to_bytes()).to_string();
        let response =
            client.request(get(format!("http://{proxy}/download?bytes={SIZE}"), &[])).await.expect("download");
        let mut body = response.into_body();
        let mut downloaded = 0u64;
        while let Some(frame) = body.frame().await {
            downloaded += frame.expect("frame").data_ref().map_or(0, |d| d.len() as u64);
        }
        (uploaded, downloaded)
    });
    assert_eq!(uploaded, SIZE.to_string());
    assert_eq!(downloaded, SIZE);
    let peak = proxy_support::peak_rss(pillion.pid());
    assert!(peak < 48 * 1024 * 1024, "peak RSS {} MiB while streaming 2x100 MB", peak / (1024 * 1024));
}

#[test]
fn slowloris_is_cut_off_and_oversized_heads_are_refused() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let timeouts = "    timeouts: { header_read: 300ms, request: 5s, idle: 30s }\n";
    let (_dir, _pillion, _admin, proxy) = start(&inbound_config(upstream.address, timeouts));
    let mut stream = TcpStream::connect(proxy).expect("connect");
    stream.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    stream.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n").expect("write");
    let started = Instant::now();
    let closed_after = eventually(Duration::from_secs(5), "the connection to be closed", || {
        // Trickle one header byte at a time, as slowloris does.
        let _ = stream.write_all(b"X");
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Ok(0) => Some(started.elapsed()),
            Ok(_) => Some(started.elapsed()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => None,
            Err(_) => Some(started.elapsed()),
        }
    });
    assert!(closed_after < Duration::from_secs(2), "closed after {closed_after:?}");
    assert!(upstream.seen().is_empty(), "the app never saw the request");

    // A request head over the limit is refused with 431, and the app never sees it.
    let huge = "x".repeat(70 * 1024);
    assert_eq!(http_get(proxy, "/", &[("x-huge", &huge)]).0, 431);
    assert!(upstream.seen().is_empty());
}

/// An absolute-form GET through an HTTP proxy; returns (status, body).
fn via_proxy(proxy: SocketAddr, url: &str) -> (u16, String) {
    via_proxy_with(proxy, "GET", url)
}

fn via_proxy_with(proxy: SocketAddr, method: &str, url: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(proxy).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let host = url.trim_start_matches("http://").split('/').next().unwrap_or_default();
    write!(stream, "{method} {url} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[test]
fn outbound_circuit_breaker_opens_and_recovers() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let app = upstream.address;
    let config = "admin: { listen: \"127.0.0.1:0\" }\nproxy:\n  outbound:\n    listen: \"127.0.0.1:0\"\n    timeout: 2s\n    retries: { attempts: 0 }\n    circuit_breaker: { consecutive_failures: 3, open_for: 400ms }\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), config);
    let mut pillion = Pillion::start(dir.path(), &path);
    let admin = pillion.admin_address();
    let egress = log_address(&mut pillion, "egress proxy listening");
    let url = format!("http://{app}/flaky");

    assert_eq!(via_proxy(egress, &url).0, 200);
    upstream.healthy.store(false, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(via_proxy(egress, &url).0, 500);
    }
    let seen_before = upstream.seen().len();
    let (status, body) = via_proxy(egress, &url);
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("circuit open"), "{body}");
    assert_eq!(upstream.seen().len(), seen_before, "an open circuit does not call the destination");
    let text = metrics(admin);
    assert!(text.contains(&format!("pillion_circuit_breaker_state{{server_address=\"{app}\"}} 1")), "{text}");
    assert!(text.contains(r#"http_response_status_code="503",error_type="circuit_open"} 1"#), "{text}");
    assert!(
        text.contains(&format!(
            "http_client_request_duration_seconds_count{{http_request_method=\"GET\",server_address=\"{}\",http_response_status_code=\"500\",error_type=\"500\"}} 3",
            app.ip()
        )),
        "{text}"
    );

    // The destination recovers: after open_for, one probe goes through and closes the circuit.
    upstream.healthy.store(true, Ordering::SeqCst);
    eventually(Duration::from_secs(5), "the circuit to close", || (via_proxy(egress, &url).0 == 200).then_some(()));
    assert_eq!(via_proxy(egress, &url).0, 200);
    let text = metrics(admin);
    assert!(text.contains(&format!("pillion_circuit_breaker_state{{server_address=\"{app}\"}} 0")), "{text}");
    promtool_check(&text);
}

#[test]
fn outbound_retries_idempotent_requests_only() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let app = upstream.address;
    let config = "admin: { listen: \"127.0.0.1:0\" }\nproxy:\n  outbound:\n    listen: \"127.0.0.1:0\"\n    retries: { attempts: 2, idempotent_only: true }\n    circuit_breaker: { consecutive_failures: 100, open_for: 1s }\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), config);
    let mut pillion = Pillion::start(dir.path(), &path);
    let egress = log_address(&mut pillion, "egress proxy listening");
    upstream.healthy.store(false, Ordering::SeqCst);
    let url = format!("http://{app}/flaky");
    assert_eq!(via_proxy_with(egress, "GET", &url).0, 500);
    assert_eq!(upstream.seen().len(), 3, "a GET is tried once and retried twice");
    assert_eq!(via_proxy_with(egress, "POST", &url).0, 500);
    assert_eq!(upstream.seen().len(), 4, "a POST is never retried");
}
