//! The mesh through the real binary: inbound mTLS termination with certificates made in the test,
//! and certificate rotation without a restart. Everything on 127.0.0.1, ports chosen by the OS.

mod mesh_support;
mod proxy_support;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_support::{Ca, DnsServer, NamedApp, client_config, tls_get, via_proxy};
use proxy_support::{Upstream, log_address, runtime};
use support::{Pillion, eventually, http_get, write_config};

const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/api";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";

fn start(dir: &std::path::Path, config: &str) -> (Pillion, SocketAddr, SocketAddr) {
    let path = write_config(dir, config);
    let mut pillion = Pillion::start(dir, &path);
    let admin = pillion.admin_address();
    let proxy = log_address(&mut pillion, "proxy listening");
    (pillion, admin, proxy)
}

fn inbound(upstream: SocketAddr, identity: &str, extra: &str) -> String {
    format!(
        "admin: {{ listen: \"127.0.0.1:0\" }}\nproxy:\n{identity}  inbound:\n    listen: \"127.0.0.1:0\"\n    upstream: \"http://{upstream}\"\n{extra}"
    )
}

/// A plain HTTP/1.1 exchange; `None` when the server closed or reset without answering.
fn plain_status(address: SocketAddr) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[test]
fn mtls_round_trip_carries_the_peer_identity_and_refuses_strangers() {
    let rt = runtime();
    let app = Upstream::start(&rt);
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let identity = ca.install(dir.path(), &ca.leaf(&["api.shop.svc", SERVER_ID], 1));
    let extra = "    mtls: required\n    allow_identities: [\"spiffe://cluster.local/ns/shop/sa/*\", \"*.shop.svc\"]\n";
    let (_pillion, admin, proxy) = start(dir.path(), &inbound(app.address, &identity, extra));
    let web = ca.leaf(&[CLIENT_ID], 2);

    // A verified client in the allowed set: 200, and the app sees who called (a forged
    // x-forwarded-client-cert removed).
    let config = client_config(&ca, Some(&web), &[b"http/1.1"]);
    let answer = rt
        .block_on(tls_get(proxy, config, "api.shop.svc", "/hello", &[("x-forwarded-client-cert", "By=x;URI=forged")]))
        .expect("mTLS request");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.serial, "1");
    let seen = app.seen();
    let xfcc: Vec<_> = seen[0].headers.get_all("x-forwarded-client-cert").iter().collect();
    assert_eq!(xfcc.len(), 1, "{xfcc:?}");
    assert_eq!(xfcc[0], &format!("By={SERVER_ID};URI={CLIENT_ID}"));
    assert_eq!(seen[0].headers.get("x-forwarded-proto").map(|v| v.as_bytes()), Some(&b"https"[..]));

    // A DNS-SAN identity matches a `*.` glob.
    let dns_only = client_config(&ca, Some(&ca.leaf(&["web.shop.svc"], 3)), &[]);
    let answer = rt.block_on(tls_get(proxy, dns_only, "api.shop.svc", "/", &[])).expect("dns identity");
    assert_eq!(answer.status, 200, "{answer:?}");

    // ALPN h2: the same listener speaks HTTP/2 to a client that asks for it.
    let h2 = client_config(&ca, Some(&web), &[b"h2", b"http/1.1"]);
    let status = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(proxy).await.expect("connect");
        let name = rustls_pki_types::ServerName::try_from("api.shop.svc").expect("name");
        let tls = tokio_rustls::TlsConnector::from(h2).connect(name, tcp).await.expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.expect("h2");
        tokio::spawn(connection);
        let request = Request::get("https://api.shop.svc/h2").body(Empty::<bytes::Bytes>::new()).expect("request");
        let response = sender.send_request(request).await.expect("h2 response");
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        status
    });
    assert_eq!(status, 200);

    // An identity outside allow_identities: 403, and the app never sees the request.
    let before = app.seen().len();
    let bank = client_config(&ca, Some(&ca.leaf(&["spiffe://cluster.local/ns/bank/sa/web"], 4)), &[]);
    let answer = rt.block_on(tls_get(proxy, bank, "api.shop.svc", "/", &[])).expect("forbidden request");
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(app.seen().len(), before);

    // Refused: plain HTTP, TLS without a client certificate, a certificate from another CA.
    assert_eq!(plain_status(proxy), None, "plain HTTP on a required listener");
    let certless = client_config(&ca, None, &[]);
    let refused = rt.block_on(tls_get(proxy, certless, "api.shop.svc", "/", &[]));
    assert!(refused.is_err(), "certless client got {refused:?}");
    let stranger_ca = Ca::new();
    // The stranger trusts our CA, so only our check of its certificate can refuse it.
    let stranger = client_config(&ca, Some(&stranger_ca.leaf(&[CLIENT_ID], 5)), &[]);
    let refused = rt.block_on(tls_get(proxy, stranger, "api.shop.svc", "/", &[]));
    assert!(refused.is_err(), "a client of another CA got {refused:?}");
    assert_eq!(app.seen().len(), before, "no refused connection reached the app");

    let text = http_get(admin, "/metrics", &[]).2;
    assert!(text.contains(r#"pillion_tls_handshakes_total{direction="inbound",outcome="success"} 4"#), "{text}");
    let failures = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"pillion_tls_handshakes_total{direction="inbound",outcome="failure"} "#))
        .and_then(|n| n.parse::<u64>().ok());
    assert_eq!(failures, Some(3), "{text}");
    let expiry = text
        .lines()
        .find_map(|l| l.strip_prefix("pillion_tls_certificate_expiry_seconds "))
        .and_then(|n| n.parse::<i64>().ok())
        .expect("expiry gauge");
    assert!(expiry > 1_700_000_000, "{expiry}");
}

#[test]
fn permissive_serves_plain_and_tls_on_one_port() {
    let rt = runtime();
    let app = Upstream::start(&rt);
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let identity = ca.install(dir.path(), &ca.leaf(&["api.shop.svc", SERVER_ID], 1));
    let (_pillion, _admin, proxy) = start(dir.path(), &inbound(app.address, &identity, "    mtls: permissive\n"));
    assert_eq!(plain_status(proxy), Some(200));
    let certless = client_config(&ca, None, &[]);
    let answer = rt.block_on(tls_get(proxy, certless, "api.shop.svc", "/", &[("x-forwarded-client-cert", "forged")]));
    assert_eq!(answer.expect("certless TLS").status, 200);
    let web = client_config(&ca, Some(&ca.leaf(&[CLIENT_ID], 2)), &[]);
    assert_eq!(rt.block_on(tls_get(proxy, web, "api.shop.svc", "/", &[])).expect("mTLS").status, 200);
    let seen = app.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen[0].headers.get("x-forwarded-client-cert").is_none());
    assert!(seen[1].headers.get("x-forwarded-client-cert").is_none(), "a client-sent value is removed");
    assert_eq!(
        seen[2].headers.get("x-forwarded-client-cert").expect("xfcc"),
        &format!("By={SERVER_ID};URI={CLIENT_ID}")
    );
}

/// cert-manager rewrites the Secret's files in place: the new certificate is served within 15 s,
/// with no restart and no failed request meanwhile.
#[test]
fn a_replaced_certificate_is_served_without_a_restart_or_a_failed_request() {
    let rt = runtime();
    let app = Upstream::start(&rt);
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let identity = ca.install(dir.path(), &ca.leaf(&["api.shop.svc", SERVER_ID], 0x10));
    let (pillion, _admin, proxy) = start(dir.path(), &inbound(app.address, &identity, "    mtls: required\n"));
    let pid = pillion.pid();
    let web = client_config(&ca, Some(&ca.leaf(&[CLIENT_ID], 2)), &[]);
    let first = rt.block_on(tls_get(proxy, web.clone(), "api.shop.svc", "/", &[])).expect("first");
    assert_eq!(first.serial, "10");

    ca.install(dir.path(), &ca.leaf(&["api.shop.svc", SERVER_ID], 0x20));
    let replaced = Instant::now();
    let mut requests = 0;
    loop {
        let answer = rt.block_on(tls_get(proxy, web.clone(), "api.shop.svc", "/", &[])).expect("no failed request");
        assert_eq!(answer.status, 200);
        requests += 1;
        if answer.serial == "20" {
            break;
        }
        assert!(
            replaced.elapsed() < Duration::from_secs(15),
            "still serial {} after 15 s:\n{}",
            answer.serial,
            pillion.log_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(requests >= 1);
    assert_eq!(pillion.pid(), pid);
    let reloaded = eventually(Duration::from_secs(5), "reload log line", || {
        pillion.log_lines().into_iter().find(|l| l.contains("mesh certificate reloaded"))
    });
    assert!(reloaded.contains("\"serial\":\"20\""), "{reloaded}");
}

fn outbound(extra_proxy: &str, destinations: &str) -> String {
    format!(
        "admin: {{ listen: \"127.0.0.1:0\" }}\nproxy:\n{extra_proxy}  outbound:\n    listen: \"127.0.0.1:0\"\n    destinations:\n{destinations}"
    )
}

fn start_egress(dir: &std::path::Path, config: &str) -> (Pillion, SocketAddr, SocketAddr) {
    let path = write_config(dir, config);
    let mut pillion = Pillion::start(dir, &path);
    let admin = pillion.admin_address();
    let egress = log_address(&mut pillion, "egress proxy listening");
    (pillion, admin, egress)
}

fn tally(egress: SocketAddr, host: &str, count: usize) -> (std::collections::HashMap<String, usize>, usize) {
    let mut counts = std::collections::HashMap::new();
    let mut failed = 0;
    for _ in 0..count {
        match via_proxy(egress, host, "/work") {
            (200, body) => *counts.entry(body).or_default() += 1,
            _ => failed += 1,
        }
    }
    (counts, failed)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn load_spreads_over_three_endpoints_and_survives_one_killed() {
    let rt = runtime();
    let apps: Vec<NamedApp> =
        ["a", "b", "c"].iter().map(|name| NamedApp::start(&rt, loopback(0), name).expect("app")).collect();
    let endpoints: Vec<String> = apps.iter().map(|app| format!("\"{}\"", app.address)).collect();
    let destinations = format!("      - host: analytics\n        endpoints: [{}]\n", endpoints.join(", "));
    let dir = tempfile::tempdir().expect("dir");
    let (_pillion, admin, egress) = start_egress(dir.path(), &outbound("", &destinations));

    let (counts, failed) = tally(egress, "analytics", 300);
    assert_eq!(failed, 0);
    for name in ["a", "b", "c"] {
        assert!(counts.get(name).copied().unwrap_or(0) >= 60, "each endpoint >= 20%: {counts:?}");
    }

    apps[1].kill();
    let (counts, failed) = tally(egress, "analytics", 300);
    assert!(failed <= 3, "{failed} of 300 failed after one endpoint was killed: {counts:?}");
    assert!(!counts.contains_key("b"));
    let text = http_get(admin, "/metrics", &[]).2;
    assert!(text.contains(r#"pillion_endpoints{destination="analytics",state="ejected"} 1"#), "{text}");
    assert!(text.contains(r#"pillion_endpoints{destination="analytics",state="up"} 2"#), "{text}");
    assert!(
        text.contains(r#"http_client_request_duration_seconds_count{http_request_method="GET",server_address="analytics",destination="analytics",http_response_status_code="200"}"#),
        "{text}"
    );
}

#[test]
fn a_90_10_split_holds_within_5_points() {
    let rt = runtime();
    let stable = NamedApp::start(&rt, loopback(0), "stable").expect("app");
    let canary = NamedApp::start(&rt, loopback(0), "canary").expect("app");
    let destinations = format!(
        "      - host: shop\n        split: [{{ endpoints: [\"{}\"], weight: 90 }}, {{ endpoints: [\"{}\"], weight: 10 }}]\n",
        stable.address, canary.address
    );
    let dir = tempfile::tempdir().expect("dir");
    let (_pillion, _admin, egress) = start_egress(dir.path(), &outbound("", &destinations));
    let (counts, failed) = tally(egress, "shop", 400);
    assert_eq!(failed, 0);
    let canary_share = counts.get("canary").copied().unwrap_or(0) as f64 / 400.0;
    assert!((0.05..=0.15).contains(&canary_share), "canary share {canary_share}: {counts:?}");
}

/// Two pods: the caller's egress proxy originates mTLS to the callee's inbound proxy, which
/// hands the caller's identity to its app. A wrong pin is refused by the caller.
#[test]
fn mtls_between_two_pillions_carries_the_callers_identity() {
    let rt = runtime();
    let app = Upstream::start(&rt);
    let ca = Ca::new();
    let server_dir = tempfile::tempdir().expect("dir");
    let server_identity = ca.install(server_dir.path(), &ca.leaf(&["api", SERVER_ID], 1));
    let (_server, _server_admin, inbound_proxy) =
        start(server_dir.path(), &inbound(app.address, &server_identity, "    mtls: required\n"));

    let client_dir = tempfile::tempdir().expect("dir");
    let client_identity = ca.install(client_dir.path(), &ca.leaf(&[CLIENT_ID], 2));
    let destinations = format!(
        "      - host: api\n        endpoints: [\"{inbound_proxy}\"]\n        mtls: true\n      - host: pinned\n        endpoints: [\"{inbound_proxy}\"]\n        mtls: true\n        server_identity: \"{SERVER_ID}\"\n      - host: wrongpin\n        endpoints: [\"{inbound_proxy}\"]\n        mtls: true\n        server_identity: \"spiffe://cluster.local/ns/shop/sa/db\"\n"
    );
    let (_client, client_admin, egress) = start_egress(client_dir.path(), &outbound(&client_identity, &destinations));

    let (status, _) = via_proxy(egress, "api", "/call");
    assert_eq!(status, 200);
    let seen = app.seen();
    assert_eq!(
        seen.last().expect("request").headers.get("x-forwarded-client-cert").expect("xfcc"),
        &format!("By={SERVER_ID};URI={CLIENT_ID}")
    );
    assert_eq!(via_proxy(egress, "pinned", "/call").0, 200);
    let before = app.seen().len();
    assert_eq!(via_proxy(egress, "wrongpin", "/call").0, 502);
    assert_eq!(app.seen().len(), before);
    let text = http_get(client_admin, "/metrics", &[]).2;
    assert!(text.contains(r#"pillion_tls_handshakes_total{direction="outbound",outcome="success"}"#), "{text}");
    assert!(text.contains(r#"pillion_tls_handshakes_total{direction="outbound",outcome="failure"}"#), "{text}");
}

/// A headless Service's answer changes (a pod replaced): traffic follows within the refresh.
#[test]
fn traffic_follows_a_changed_dns_answer_within_the_refresh() {
    let rt = runtime();
    let first = NamedApp::start(&rt, SocketAddr::from(([127, 0, 0, 2], 0)), "first").expect("app");
    let port = first.address.port();
    let Ok(second) = NamedApp::start(&rt, SocketAddr::from(([127, 0, 0, 3], port)), "second") else {
        panic!("port {port} is taken on 127.0.0.3");
    };
    let dns = DnsServer::start(&rt, &[first.address.ip()], 1);
    let destinations = format!(
        "      - host: analytics\n        dns: {{ name: analytics.shop.svc.cluster.local, port: {port}, refresh: 1s }}\n"
    );
    let extra = format!("  dns_nameserver: \"{}\"\n", dns.address);
    let dir = tempfile::tempdir().expect("dir");
    let (_pillion, admin, egress) = start_egress(dir.path(), &outbound(&extra, &destinations));
    // Generous: a loaded CI machine can take seconds to start pillion and its first lookup.
    eventually(Duration::from_secs(30), "first answer used", || {
        (via_proxy(egress, "analytics", "/") == (200, "first".to_owned())).then_some(())
    });
    dns.set(&[second.address.ip()]);
    let changed = Instant::now();
    eventually(Duration::from_secs(5), "traffic on the new answer", || {
        (via_proxy(egress, "analytics", "/") == (200, "second".to_owned())).then_some(())
    });
    assert!(changed.elapsed() < Duration::from_millis(2500), "followed after {:?}", changed.elapsed());
    let (counts, failed) = tally(egress, "analytics", 20);
    assert_eq!((counts.get("second").copied(), failed), (Some(20), 0), "{counts:?}");
    let text = http_get(admin, "/metrics", &[]).2;
    assert!(text.contains(r#"pillion_endpoints{destination="analytics",state="up"} 1"#), "{text}");
}
