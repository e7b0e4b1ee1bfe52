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
