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
use mesh_support::{Ca, client_config, tls_get};
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
