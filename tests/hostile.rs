//! The proxy, the admin server and the config under hostile input, through the real binary and
//! raw sockets. Each test pins a problem that issue 13 measured ("Measured today"): what a
//! client could do to pillion's memory, metrics, traces and the app, and what it now gets.

mod proxy_support;
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use proxy_support::{Upstream, log_address, runtime};
use support::{Pillion, eventually, http_get, write_config};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_ID: &str = "00f067aa0ba902b7";

fn inbound(upstream: SocketAddr, extra: &str) -> String {
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

/// Sends `request` as is on a new connection and reads until the server closes it (or
/// `Connection: close` is honoured); returns the status and the whole response.
fn raw(address: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(request).expect("write");
    read_response(&mut stream)
}

fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response)
}

/// One response on a kept-alive connection (Content-Length bodies only, as the test app sends).
fn one_response(stream: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return 0,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    if stream.read_exact(&mut body).is_err() {
        return 0;
    }
    head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Waits until the server closes `stream`; returns how long that took from `since`.
fn closed_after(stream: &mut TcpStream, since: Instant, within: Duration) -> Duration {
    stream.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    eventually(within, "the connection to be closed", || {
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(0) => Some(since.elapsed()),
            Ok(_) => None,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(_) => Some(since.elapsed()),
        }
    })
}

fn get(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app\r\n{headers}Connection: close\r\n\r\n").into_bytes()
}

/// The `http_route` values in a scrape.
fn routes(text: &str) -> Vec<String> {
    let mut routes: Vec<String> = text
        .lines()
        .filter(|line| line.starts_with("http_server_request_duration_seconds_count"))
        .filter_map(|line| Some(line.split("http_route=\"").nth(1)?.split('"').next()?.to_owned()))
        .collect();
    routes.sort();
    routes.dedup();
    routes
}

#[test]
fn long_unique_paths_neither_bloat_metrics_nor_memory() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let (_dir, pillion, admin, proxy) = start(&inbound(upstream.address, ""));
    for i in 0..200 {
        let path = format!("/{i}-{}", "z".repeat(60_000));
        assert_eq!(raw(proxy, &get(&path, "")).0, 200);
    }
    let text = metrics(admin);
    assert!(text.len() < 64 * 1024, "/metrics is {} bytes", text.len());
    assert!(routes(&text).iter().all(|route| route.len() <= 128), "{:?}", routes(&text));
    assert!(routes(&text).contains(&"other".to_owned()));
    let rss = proxy_support::rss(pillion.pid());
    assert!(rss < 64 << 20, "RSS {} MiB", rss >> 20);
}

#[test]
fn junk_paths_do_not_crowd_out_real_routes_for_ever() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let (_dir, _pillion, admin, proxy) = start(&inbound(upstream.address, "    max_routes: 5\n    route_ttl: 1s\n"));
    for i in 0..20 {
        assert_eq!(raw(proxy, &get(&format!("/junk-{i}"), "")).0, 200);
    }
    assert_eq!(raw(proxy, &get("/real", "")).0, 200);
    assert_eq!(raw(proxy, &get("/api/users/42", "")).0, 200);
    let text = metrics(admin);
    assert!(!routes(&text).contains(&"/real".to_owned()), "full: /real is other at first");
    assert!(routes(&text).contains(&"/api/users/{id}".to_owned()), "templates are never crowded out");
    // Once the junk has been idle for route_ttl, the real route gets its own label, and the
    // forgotten routes' series are gone.
    eventually(Duration::from_secs(10), "/real to get its own route", || {
        raw(proxy, &get("/real", ""));
        routes(&metrics(admin)).contains(&"/real".to_owned()).then_some(())
    });
    let left = routes(&metrics(admin));
    assert!(left.iter().filter(|r| r.starts_with("/junk")).count() <= 4, "{left:?}");
}

#[test]
fn client_faults_are_the_clients_not_the_apps() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let timeouts = "    timeouts: { header_read: 5s, request: 1s, idle: 30s }\n";
    let (_dir, _pillion, admin, proxy) = start(&inbound(upstream.address, timeouts));

    // A bad chunk size: 400.
    let bad_chunk = b"POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    assert_eq!(raw(proxy, bad_chunk).0, 400);

    // A body cut short (the client stops sending and half-closes): 400, or the client is gone.
    let mut stream = TcpStream::connect(proxy).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 100\r\n\r\n0123456789").expect("write");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let (status, _) = read_response(&mut stream);
    assert!(status == 400 || status == 0, "truncated body got {status}");

    // Expect: 100-continue, then the client leaves.
    let mut stream = TcpStream::connect(proxy).expect("connect");
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n")
        .expect("write");
    std::thread::sleep(Duration::from_millis(100));
    drop(stream);

    // A slow upload: 408 when the request timeout passes with the body unfinished.
    let mut stream = TcpStream::connect(proxy).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 100\r\n\r\n0123456789").expect("write");
    let (status, _) = read_response(&mut stream);
    assert_eq!(status, 408);

    // Abandoned before the response head: recorded as 499 client_closed within a second.
    let mut stream = TcpStream::connect(proxy).expect("connect");
    stream.write_all(&get("/slow?ms=900", "")).expect("write");
    std::thread::sleep(Duration::from_millis(100));
    let left = Instant::now();
    drop(stream);
    eventually(Duration::from_secs(5), "the abandoned request in the metrics", || {
        metrics(admin).contains(r#"http_response_status_code="499",error_type="client_closed""#).then_some(())
    });
    assert!(left.elapsed() < Duration::from_millis(1500), "recorded after {:?}", left.elapsed());

    eventually(Duration::from_secs(5), "every fault recorded", || {
        let text = metrics(admin);
        let count = |needle: &str| {
            text.lines()
                .filter(|l| l.starts_with("http_server_request_duration_seconds_count") && l.contains(needle))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum::<u64>()
        };
        (count("error_type=\"client_error\"") >= 2 && count("client_") >= 4).then_some(text)
    });
    let text = metrics(admin);
    for forbidden in ["upstream_error", "\"502\"", "\"504\"", "error_type=\"timeout\""] {
        assert!(!text.contains(forbidden), "a client fault booked as the app's ({forbidden}):\n{text}");
    }
}

#[test]
fn header_read_bounds_a_head_and_idle_the_quiet_between_requests() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let timeouts = "    timeouts: { header_read: 1s, request: 5s, idle: 30s }\n";
    let (_dir, _pillion, _admin, proxy) = start(&inbound(upstream.address, timeouts));

    // A kept-alive connection waits longer than header_read between requests and still works.
    let mut stream = TcpStream::connect(proxy).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(b"GET /a HTTP/1.1\r\nHost: app\r\n\r\n").expect("write");
    assert_eq!(one_response(&mut stream), 200);
    std::thread::sleep(Duration::from_millis(2500));
    stream.write_all(b"GET /b HTTP/1.1\r\nHost: app\r\n\r\n").expect("write");
    assert_eq!(one_response(&mut stream), 200, "the second request 2.5 s later got nothing");

    // A connection that sends nothing is closed at header_read, not idle.
    let since = Instant::now();
    let mut silent = TcpStream::connect(proxy).expect("connect");
    let after = closed_after(&mut silent, since, Duration::from_secs(10));
    assert!(after < Duration::from_secs(3), "closed after {after:?}");
}

#[test]
fn the_admin_server_closes_silent_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), "admin: { listen: \"127.0.0.1:0\" }\n");
    let mut pillion = Pillion::start(dir.path(), &path);
    let admin = pillion.admin_address();
    let since = Instant::now();
    let mut silent = TcpStream::connect(admin).expect("connect");
    // The inbound proxy's default header_read (10s), not forever.
    let after = closed_after(&mut silent, since, Duration::from_secs(20));
    assert!(after < Duration::from_secs(13), "closed after {after:?}");
}

/// Starts pillion with tracing on (to a collector that is not there) and `propagators`.
fn start_traced(upstream: SocketAddr, propagators: &str) -> (tempfile::TempDir, Pillion, SocketAddr, SocketAddr) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let config = format!(
        "{}tracing:\n  otlp: {{ endpoint: \"http://{closed}\", protocol: grpc }}\n  propagators: [{propagators}]\n",
        inbound(upstream, "")
    );
    start(&config)
}

fn last_seen_header(upstream: &Upstream, name: &str) -> Vec<String> {
    let seen = upstream.seen();
    let last = seen.last().expect("the app saw a request");
    last.headers.get_all(name).iter().map(|v| v.to_str().unwrap_or("<binary>").to_owned()).collect()
}

#[test]
fn w3c_trace_context_violations_start_new_traces() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let (_dir, _pillion, _admin, proxy) = start_traced(upstream.address, "tracecontext, baggage");
    let bad = [
        format!("00-4bf9-{SPAN_ID}-01"),
        "00-1-1-01".to_owned(),
        format!("00-{}-{SPAN_ID}-01", &TRACE_ID[1..]),
        format!("00-+{}-{SPAN_ID}-01", &TRACE_ID[1..]),
        format!("0-{TRACE_ID}-{SPAN_ID}-01"),
        format!("00-{TRACE_ID}-{SPAN_ID}-1"),
        format!("00-{TRACE_ID}-{SPAN_ID}-01-"),
    ];
    for header in &bad {
        assert_eq!(raw(proxy, &get("/t", &format!("traceparent: {header}\r\n"))).0, 200);
        let forwarded = last_seen_header(&upstream, "traceparent");
        assert_eq!(forwarded.len(), 1, "{header}: {forwarded:?}");
        assert!(!forwarded[0].contains(TRACE_ID), "{header} was continued: {forwarded:?}");
        assert!(last_seen_header(&upstream, "tracestate").is_empty(), "no empty tracestate");
    }
    // Two traceparent headers: neither is continued.
    let good = format!("traceparent: 00-{TRACE_ID}-{SPAN_ID}-01\r\n");
    raw(proxy, &get("/t", &format!("{good}{good}")));
    assert!(!last_seen_header(&upstream, "traceparent")[0].contains(TRACE_ID));

    // A duplicate tracestate key: the tracestate goes, the traceparent is kept.
    raw(proxy, &get("/t", &format!("{good}tracestate: a=1,a=2\r\n")));
    assert!(last_seen_header(&upstream, "traceparent")[0].contains(TRACE_ID));
    assert!(last_seen_header(&upstream, "tracestate").is_empty());
    raw(proxy, &get("/t", &format!("{good}tracestate: a=1, b=2\r\n")));
    assert_eq!(last_seen_header(&upstream, "tracestate"), vec!["a=1,b=2".to_owned()]);

    // Oversized baggage is dropped, not forwarded verbatim; valid baggage is re-serialized.
    let huge = format!("baggage: k={}\r\n", "v".repeat(50_000));
    raw(proxy, &get("/t", &huge));
    assert!(last_seen_header(&upstream, "baggage").is_empty());
    raw(proxy, &get("/t", "baggage: a = 1 , b=2;p\r\n"));
    assert_eq!(last_seen_header(&upstream, "baggage"), vec!["a=1,b=2;p".to_owned()]);

    // `Connection: traceparent` cannot strip pillion's own header.
    raw(proxy, &get("/t", &format!("{good}Connection: traceparent\r\n")));
    let forwarded = last_seen_header(&upstream, "traceparent");
    assert_eq!(forwarded.len(), 1);
    assert!(forwarded[0].contains(TRACE_ID), "{forwarded:?}");
}

#[test]
fn b3_fields_the_client_sent_never_reach_the_app() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let (_dir, _pillion, _admin, proxy) = start_traced(upstream.address, "b3multi");
    let headers = "x-b3-traceid: 463ac35c9f6413ad\r\nx-b3-spanid: a2fb4a1d1a96d312\r\nx-b3-parentspanid: 0020000000000001\r\nx-b3-flags: 1\r\nx-b3-sampled: 1\r\n";
    raw(proxy, &get("/b", headers));
    assert!(last_seen_header(&upstream, "x-b3-parentspanid").is_empty());
    assert!(last_seen_header(&upstream, "x-b3-flags").is_empty());
    assert_eq!(last_seen_header(&upstream, "x-b3-traceid"), vec!["0000000000000000463ac35c9f6413ad".to_owned()]);
    // Upper-case ids break the grammar: a new trace.
    raw(proxy, &get("/b", "x-b3-traceid: 463AC35C9F6413AD\r\nx-b3-spanid: a2fb4a1d1a96d312\r\n"));
    assert!(!last_seen_header(&upstream, "x-b3-traceid")[0].contains("463ac35c9f6413ad"));
}

#[test]
fn host_connect_and_forwarding_headers_are_pillions_to_set() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let (_dir, _pillion, admin, proxy) = start(&inbound(upstream.address, ""));
    let forged = "X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-For: 6.6.6.6\r\n";
    assert_eq!(raw(proxy, &get("/f", forged)).0, 200);
    assert_eq!(last_seen_header(&upstream, "x-forwarded-proto"), vec!["http".to_owned()]);
    assert_eq!(last_seen_header(&upstream, "x-forwarded-host"), vec!["app".to_owned()]);
    assert_eq!(last_seen_header(&upstream, "x-forwarded-for"), vec!["127.0.0.1".to_owned()]);

    let seen = upstream.seen().len();
    let bad_hosts: [&[u8]; 4] = [
        b"GET /h HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /h HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        b"GET /h HTTP/1.1\r\nHost: user@evil:80\r\nConnection: close\r\n\r\n",
        b"GET /h HTTP/1.1\r\nHost: app:99999\r\nConnection: close\r\n\r\n",
    ];
    for request in bad_hosts {
        assert_eq!(raw(proxy, request).0, 400, "{}", String::from_utf8_lossy(request));
    }
    assert_eq!(raw(proxy, b"CONNECT app:443 HTTP/1.1\r\nHost: app:443\r\n\r\n").0, 405);
    assert_eq!(upstream.seen().len(), seen, "the app saw none of them");
    let text = metrics(admin);
    assert!(text.contains(r#"http_request_method="CONNECT",http_route="/",http_response_status_code="405",error_type="client_error"} 1"#) || text.contains(r#"http_response_status_code="405",error_type="client_error"} 1"#), "{text}");
}

#[test]
fn trusted_proxies_keep_their_forwarding_headers() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let (_dir, _pillion, _admin, proxy) = start(&inbound(upstream.address, "    trusted_proxies: [\"127.0.0.0/8\"]\n"));
    let forwarded = "X-Forwarded-Proto: https\r\nX-Forwarded-Host: shop.example\r\nX-Forwarded-For: 203.0.113.9\r\n";
    assert_eq!(raw(proxy, &get("/f", forwarded)).0, 200);
    assert_eq!(last_seen_header(&upstream, "x-forwarded-proto"), vec!["https".to_owned()]);
    assert_eq!(last_seen_header(&upstream, "x-forwarded-host"), vec!["shop.example".to_owned()]);
    assert_eq!(last_seen_header(&upstream, "x-forwarded-for"), vec!["203.0.113.9, 127.0.0.1".to_owned()]);
}

#[test]
fn egress_destinations_are_bounded() {
    let config = "admin: { listen: \"127.0.0.1:0\" }\nproxy:\n  outbound:\n    listen: \"127.0.0.1:0\"\n    timeout: 2s\n    retries: { attempts: 0 }\n    max_destinations: 5\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), config);
    let mut pillion = Pillion::start(dir.path(), &path);
    let admin = pillion.admin_address();
    let egress = log_address(&mut pillion, "egress proxy listening");
    // Nothing listens on port 9 of these loopback addresses: each call is a quick 502.
    for i in 2..40 {
        let request =
            format!("GET http://127.0.0.{i}:9/x HTTP/1.1\r\nHost: 127.0.0.{i}:9\r\nConnection: close\r\n\r\n");
        assert_eq!(raw(egress, request.as_bytes()).0, 502);
    }
    let text = metrics(admin);
    let mut addresses: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_client_request_duration_seconds_count"))
        .filter_map(|l| l.split("server_address=\"").nth(1)?.split('"').next())
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 6, "{addresses:?}");
    assert!(addresses.contains(&"other") && addresses.contains(&"127.0.0.2"), "{addresses:?}");
    assert!(!addresses.iter().any(|a| a.contains(':')), "server_address has no port: {addresses:?}");
    let breakers = text.lines().filter(|l| l.starts_with("pillion_circuit_breaker_state{")).count();
    assert!(breakers <= 5, "{breakers} circuit breakers:\n{text}");
}

#[test]
fn ten_thousand_hostile_requests_leave_metrics_and_memory_small() {
    let rt = runtime();
    let upstream = Upstream::start(&rt);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let config = format!(
        "{}    timeouts: {{ header_read: 2s, request: 2s, idle: 30s }}\n  outbound:\n    listen: \"127.0.0.1:0\"\n    timeout: 1s\n    retries: {{ attempts: 0 }}\ntracing:\n  otlp: {{ endpoint: \"http://{closed}\", protocol: grpc }}\n  propagators: [tracecontext, baggage, b3, b3multi]\n",
        inbound(upstream.address, "")
    );
    let (_dir, mut pillion, admin, proxy) = start(&config);
    let egress = log_address(&mut pillion, "egress proxy listening");
    let rss_at_start = proxy_support::rss(pillion.pid());
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW", "TRACE"];
    let bad_trace = format!(
        "traceparent: 00-{}-{SPAN_ID}-01\r\ntracestate: a=1,a=2\r\nbaggage: k={}\r\nb3: x\r\n",
        &TRACE_ID[1..],
        "v".repeat(9000)
    );
    let threads: Vec<_> = (0..4)
        .map(|worker| {
            let bad_trace = bad_trace.clone();
            std::thread::spawn(move || {
                for i in 0..2500 {
                    let n = worker * 2500 + i;
                    let method = methods[n % methods.len()];
                    let request = match n % 8 {
                        0 => format!("{method} /{n}-{} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n", "q".repeat(2000)),
                        1 => format!("{method} /junk-{n} HTTP/1.1\r\nHost: app\r\n{bad_trace}Connection: close\r\n\r\n"),
                        2 => format!("POST /upload-{n} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n"),
                        3 => format!("GET /h{n} HTTP/1.1\r\nHost: a\r\nHost: b{n}\r\nConnection: close\r\n\r\n"),
                        4 => format!("CONNECT app:{n} HTTP/1.1\r\nHost: app\r\n\r\n"),
                        5 => format!("GET /x/{n} HTTP/1.1\r\nHost: app\r\nX-Forwarded-Host: e{n}\r\nConnection: close\r\n\r\n"),
                        6 => format!("GET http://127.0.0.{}:9/{n} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 2 + n % 200),
                        _ => format!("{method} /api/users/{n} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"),
                    };
                    let target = if n % 8 == 6 { egress } else { proxy };
                    let Ok(mut stream) = TcpStream::connect(target) else { continue };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = stream.write_all(request.as_bytes());
                    if n % 8 == 4 {
                        let _ = stream.shutdown(Shutdown::Write);
                    }
                    let mut sink = Vec::new();
                    let _ = stream.read_to_end(&mut sink);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("worker");
    }
    let text = metrics(admin);
    assert!(text.len() < 1 << 20, "/metrics is {} bytes", text.len());
    let rss = proxy_support::rss(pillion.pid());
    // A debug binary starts at ~30 MiB (its code alone); the release binary must stay under 32.
    assert!(rss - rss_at_start.min(rss) < 12 << 20, "RSS grew from {} to {} MiB", rss_at_start >> 20, rss >> 20);
    if !cfg!(debug_assertions) {
        assert!(rss < 32 << 20, "RSS {} MiB after 10,000 hostile requests", rss >> 20);
    }
    eprintln!(
        "after 10,000 hostile requests: /metrics {} KiB, RSS {} MiB (at start {} MiB)",
        text.len() >> 10,
        rss >> 20,
        rss_at_start >> 20
    );
}

#[test]
fn no_secret_reaches_config_logs_or_errors() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    std::fs::write(&log, "one line\n").expect("log");
    let config = format!(
        "admin: {{ listen: \"127.0.0.1:0\" }}\nlogs:\n  data_dir: data\n  inputs:\n    - {{ name: app, paths: [\"{}\"] }}\n  sinks:\n    - name: loki\n      type: loki\n      endpoint: \"http://lokiuser:urlpass-1@{closed}/?apikey=query-secret-2\"\n      headers: {{ X-Api-Key: header-secret-3 }}\ntracing:\n  otlp: {{ endpoint: \"http://otel:tracing-pass-4@{closed}/?token=query-secret-5\", protocol: grpc }}\n",
        log.display()
    );
    let path = write_config(dir.path(), &config);
    let mut pillion = Pillion::start(dir.path(), &path);
    let admin = pillion.admin_address();
    let secrets = ["urlpass-1", "query-secret-2", "header-secret-3", "tracing-pass-4", "query-secret-5", "lokiuser"];
    let shown = http_get(admin, "/config", &[]).2;
    for secret in secrets {
        assert!(!shown.contains(secret), "/config shows {secret}:\n{shown}");
    }
    assert!(shown.contains("<redacted>"), "{shown}");
    // The sink's failures are logged, naming the endpoint without its secrets.
    let logs = eventually(Duration::from_secs(20), "a sink warning", || {
        let lines = pillion.log_lines();
        lines.iter().any(|l| l.contains("\"sink\":\"loki\"") && l.contains("WARN")).then_some(lines)
    });
    for line in &logs {
        for secret in secrets {
            assert!(!line.contains(secret), "a log line shows {secret}: {line}");
        }
    }

    // `validate` does not echo the password of an invalid endpoint.
    let bad = write_config(
        dir.path(),
        "logs:\n  sinks:\n    - name: l\n      type: loki\n      endpoint: http://user:hunter2@loki:99999\n",
    );
    let output =
        std::process::Command::new(support::BIN).args(["validate", "--config"]).arg(&bad).output().expect("validate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(!stderr.contains("hunter2") && stderr.contains("<redacted>"), "{stderr}");
}

#[test]
fn a_50_mb_config_is_refused_quickly_in_small_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.yaml");
    std::fs::write(&path, format!("service:\n  name: {}\n", "x".repeat(50 << 20))).expect("write");
    let started = Instant::now();
    let output =
        std::process::Command::new(support::BIN).args(["validate", "--config"]).arg(&path).output().expect("validate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("limit is 4 MiB"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}
