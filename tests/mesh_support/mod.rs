//! Test peers for the mesh tests: a CA that signs certificates made in the test (rcgen), rustls
//! client configs with or without a client certificate, and a one-request HTTP/1.1 client over TLS
//! that also reports the server certificate's serial.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A certificate authority and the leaf certificates it signs.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key, as PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new() -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("ca");
        Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A leaf for these SANs (`spiffe://` ones are URIs, the rest DNS names).
    pub fn leaf(&self, names: &[&str], serial: u64) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.starts_with("spiffe://") {
                true => SanType::URI((*name).try_into().expect("uri")),
                false => SanType::DnsName((*name).try_into().expect("dns")),
            })
            .collect();
        params.serial_number = Some(serial.into());
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        Leaf { cert: cert.pem(), key: key.serialize_pem() }
    }

    /// Writes `leaf` and this CA as `tls.crt`, `tls.key`, `ca.crt` in `dir` (each by rename, as
    /// a Secret volume updates), and returns the `proxy.identity` YAML naming them.
    pub fn install(&self, dir: &Path, leaf: &Leaf) -> String {
        let write = |name: &str, text: &str| {
            let temporary = dir.join(format!(".{name}.tmp"));
            std::fs::write(&temporary, text).expect("write");
            std::fs::rename(&temporary, dir.join(name)).expect("rename");
        };
        write("ca.crt", &self.pem);
        write("tls.key", &leaf.key);
        write("tls.crt", &leaf.cert);
        let path = |name: &str| dir.join(name).display().to_string();
        format!(
            "  identity: {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\" }}\n",
            path("tls.crt"),
            path("tls.key"),
            path("ca.crt")
        )
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(cert.expect("ca pem")).expect("root");
        }
        roots
    }
}

pub fn dir_of(path: &Path) -> PathBuf {
    path.to_owned()
}

/// A client trusting `ca`, presenting `leaf` when given, offering these ALPN protocols.
pub fn client_config(ca: &Ca, leaf: Option<&Leaf>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(ca.roots());
    let mut config = match leaf {
        Some(leaf) => {
            let chain =
                CertificateDer::pem_slice_iter(leaf.cert.as_bytes()).collect::<Result<Vec<_>, _>>().expect("pem");
            let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("key");
            builder.with_client_auth_cert(chain, key).expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// What one request over TLS gave.
#[derive(Debug)]
pub struct TlsAnswer {
    pub status: u16,
    pub head: String,
    pub body: String,
    /// The server certificate's serial number, hex.
    pub serial: String,
}

/// One `GET path` over a new TLS connection to `address` for `server_name`; `Err` when the
/// handshake or the exchange fails.
pub async fn tls_get(
    address: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<TlsAnswer, String> {
    let exchange = async {
        let tcp = TcpStream::connect(address).await.map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let mut tls = connector.connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
        let serial = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| x509_parser::parse_x509_certificate(cert.as_ref()).ok())
            .map(|(_, cert)| cert.tbs_certificate.serial.to_str_radix(16))
            .unwrap_or_default();
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        tls.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        tls.read_to_end(&mut response).await.map_err(|e| format!("read: {e}"))?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status line")?;
        Ok(TlsAnswer { status, head: head.to_owned(), body: body.to_owned(), serial })
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await.map_err(|_| "timed out".to_owned())?
}

/// A DNS server on 127.0.0.1 (UDP) answering every A/AAAA question with the current addresses
/// and a TTL, decoded and encoded with hickory-proto.
pub struct DnsServer {
    pub address: SocketAddr,
    pub answers: Arc<std::sync::Mutex<Vec<std::net::IpAddr>>>,
}

impl DnsServer {
    pub fn start(rt: &tokio::runtime::Runtime, ips: &[std::net::IpAddr], ttl: u32) -> DnsServer {
        use hickory_proto::op::{Message, MessageType, ResponseCode};
        use hickory_proto::rr::rdata::{A, AAAA};
        use hickory_proto::rr::{RData, Record, RecordType};
        let socket = rt.block_on(tokio::net::UdpSocket::bind("127.0.0.1:0")).expect("bind dns");
        let address = socket.local_addr().expect("addr");
        let answers = Arc::new(std::sync::Mutex::new(ips.to_vec()));
        let current = Arc::clone(&answers);
        rt.spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else { return };
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                let mut response = Message::new();
                response.set_id(query.id());
                response.set_message_type(MessageType::Response);
                response.set_op_code(query.op_code());
                response.set_authoritative(true);
                response.set_recursion_desired(query.recursion_desired());
                response.set_recursion_available(true);
                response.set_response_code(ResponseCode::NoError);
                let ips = current.lock().expect("lock").clone();
                for question in query.queries() {
                    response.add_query(question.clone());
                    for ip in &ips {
                        let rdata = match (question.query_type(), ip) {
                            (RecordType::A, std::net::IpAddr::V4(v4)) => RData::A(A(*v4)),
                            (RecordType::AAAA, std::net::IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
                            _ => continue,
                        };
                        response.add_answer(Record::from_rdata(question.name().clone(), ttl, rdata));
                    }
                }
                if let Ok(bytes) = response.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        DnsServer { address, answers }
    }

    pub fn set(&self, ips: &[std::net::IpAddr]) {
        *self.answers.lock().expect("lock") = ips.to_vec();
    }
}

/// A tiny app that answers every request with its name, and can be killed (listener and every
/// open connection closed) to play an endpoint that goes away.
pub struct NamedApp {
    pub address: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    /// The listener's and the connections' tasks still running.
    live: Arc<std::sync::atomic::AtomicUsize>,
}

impl NamedApp {
    pub fn start(rt: &tokio::runtime::Runtime, bind: SocketAddr, name: &'static str) -> std::io::Result<NamedApp> {
        use http_body_util::Full;
        use hyper::service::service_fn;
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let listener = rt.block_on(tokio::net::TcpListener::bind(bind))?;
        let address = listener.local_addr()?;
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(1));
        let counted = Arc::clone(&live);
        rt.spawn(async move {
            let _alive = Alive(Arc::clone(&counted));
            loop {
                let accepted = tokio::select! {
                    _ = stopped.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { return };
                let stopped = stopped.clone();
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let alive = Alive(Arc::clone(&counted));
                tokio::spawn(async move {
                    let _alive = alive;
                    let service = service_fn(move |_request| async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(bytes::Bytes::from(name))))
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = stopped.cancelled() => {}
                        _ = connection => {}
                    }
                });
            }
        });
        Ok(NamedApp { address, stop, live })
    }

    /// Closes the listener and every connection, and returns once they are all closed (so no
    /// request is answered after this returns).
    pub fn kill(&self) {
        self.stop.cancel();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.live.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            assert!(std::time::Instant::now() < deadline, "the app's tasks did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Counts a running task of a [`NamedApp`] until dropped.
struct Alive(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `GET http://{host}{path}` through the egress proxy at `proxy`: (status, body), status 0 when
/// the exchange failed.
pub fn via_proxy(proxy: SocketAddr, host: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(proxy) else { return (0, String::new()) };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("GET http://{host}{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}
