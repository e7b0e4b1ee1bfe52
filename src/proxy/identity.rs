//! This pod's mesh identity (`proxy.identity`): the certificate, key and trust root loaded from
//! PEM files, re-read while pillion runs so that a rotated certificate (a cert-manager Secret
//! updated in place) is used for new connections without a restart. It makes the rustls configs
//! of both directions: the inbound server (client certificates verified against `ca_file`) and the
//! outbound client (our certificate presented, the server's verified against `ca_file`, then
//! against a pinned identity or the destination's DNS name). A peer's identity is its
//! certificate's URI SAN (SPIFFE), else its first DNS SAN.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::conn::{Activity, Watched};
use super::metrics::TlsMetrics;

/// How often the certificate files are read again to notice a rotation.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The largest identity file read (a certificate chain or a key is a few KiB).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// ALPN protocols, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// What a connection's TLS handshake established.
#[derive(Debug, Default)]
pub struct Peer {
    pub tls: bool,
    /// The client certificate's identity (URI SAN, else first DNS SAN), when one was verified.
    pub identity: Option<Arc<str>>,
}

/// TLS termination for an inbound `mtls` listener.
pub struct Termination {
    config: Arc<ServerConfig>,
    /// Plain connections are served too.
    permissive: bool,
    metrics: TlsMetrics,
}

/// A connection to an `mtls` listener after its first bytes.
pub enum Accepted {
    /// Not TLS, on a permissive listener.
    Plain(Watched<TcpStream>),
    Tls(Box<tokio_rustls::server::TlsStream<Watched<TcpStream>>>, Arc<Peer>),
}

impl Termination {
    pub fn new(identity: &Arc<Identity>, required: bool) -> Result<Termination, IdentityError> {
        Ok(Termination {
            config: identity.server_config(required)?,
            permissive: !required,
            metrics: identity.metrics.clone(),
        })
    }

    /// Terminates TLS within `header_read`: `None` when the connection is refused (not TLS on a
    /// `required` listener, no or an unverified client certificate, or too slow).
    pub async fn accept(
        &self,
        stream: TcpStream,
        client: SocketAddr,
        activity: Arc<Activity>,
        header_read: Duration,
    ) -> Option<Accepted> {
        /// The first byte of a TLS handshake record.
        const HANDSHAKE: u8 = 0x16;
        let deadline = tokio::time::Instant::now() + header_read;
        if self.permissive {
            let mut first = [0u8; 1];
            match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] == HANDSHAKE => {}
                Ok(Ok(1)) => return Some(Accepted::Plain(Watched::new(stream, activity))),
                _ => return None,
            }
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config));
        match tokio::time::timeout_at(deadline, acceptor.accept(Watched::new(stream, activity))).await {
            Ok(Ok(stream)) => {
                self.metrics.handshake("inbound", true);
                let identity = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(peer_identity)
                    .map(Arc::from);
                Some(Accepted::Tls(Box::new(stream), Arc::new(Peer { tls: true, identity })))
            }
            Ok(Err(error)) => {
                self.metrics.handshake("inbound", false);
                tracing::debug!(%error, %client, "inbound TLS handshake failed");
                None
            }
            Err(_) => {
                self.metrics.handshake("inbound", false);
                tracing::debug!(%client, "inbound TLS handshake timed out");
                None
            }
        }
    }
}

/// Where the identity's files are.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

/// Why an identity could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("proxy.identity: {0}")]
    Tls(#[from] rustls::Error),
    #[error("proxy.identity.ca_file: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// What one reading of the files gave.
struct Material {
    key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    /// Our own identity (URI SAN, else first DNS SAN), for `x-forwarded-client-cert: By=`.
    identity: Arc<str>,
    /// The certificate's serial number, as hex.
    serial: String,
    /// The files' bytes, to notice a change.
    files: [Vec<u8>; 3],
}

/// The current material, swapped whole when the files change.
struct Store {
    current: RwLock<Arc<Material>>,
}

impl Store {
    fn get(&self) -> Arc<Material> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// This pod's identity, shared by both proxies.
pub struct Identity {
    files: IdentityFiles,
    store: Arc<Store>,
    provider: Arc<CryptoProvider>,
    metrics: TlsMetrics,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("files", &self.files).finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads the files now (a bad file is a start-up error).
    pub fn load(files: IdentityFiles, metrics: TlsMetrics) -> Result<Arc<Identity>, IdentityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let bytes = read_all(&files)?;
        let material = build(&files, bytes, &provider)?;
        metrics.set_expiry(not_after(&material.key.cert[0]).unwrap_or(0));
        let store = Arc::new(Store { current: RwLock::new(Arc::new(material)) });
        Ok(Arc::new(Identity { files, store, provider, metrics }))
    }

    /// Our own identity (URI SAN, else first DNS SAN of the current certificate).
    pub fn own_identity(&self) -> Arc<str> {
        Arc::clone(&self.store.get().identity)
    }

    /// The current certificate's serial number (hex).
    pub fn serial(&self) -> String {
        self.store.get().serial.clone()
    }

    pub fn metrics(&self) -> &TlsMetrics {
        &self.metrics
    }

    /// Reads the files again; `Ok(true)` when they changed and the new material is in use.
    /// On an error the current material stays.
    pub fn reload(&self) -> Result<bool, IdentityError> {
        let bytes = read_all(&self.files)?;
        if bytes == self.store.get().files {
            return Ok(false);
        }
        let material = build(&self.files, bytes, &self.provider)?;
        self.metrics.set_expiry(not_after(&material.key.cert[0]).unwrap_or(0));
        tracing::info!(identity = %material.identity, serial = %material.serial, "mesh certificate reloaded");
        *self.store.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(material);
        Ok(true)
    }

    /// Re-reads the files every [`RELOAD_EVERY`] until `shutdown`. A half-written rotation
    /// (a new certificate beside the old key) fails to load and is tried again next time.
    pub fn watch(self: &Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let identity = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(RELOAD_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let reloading = Arc::clone(&identity);
                match tokio::task::spawn_blocking(move || reloading.reload()).await {
                    Ok(Ok(_)) => failing = false,
                    Ok(Err(error)) => {
                        if !failing {
                            tracing::warn!(%error, "mesh certificate files changed but cannot be loaded; keeping the current one");
                        }
                        failing = true;
                    }
                    Err(_) => return,
                }
            }
        })
    }

    /// The inbound server config: our certificate, ALPN h2/http1.1, client certificates
    /// verified against the trust root (required, or optional when `mandatory` is false).
    pub fn server_config(self: &Arc<Self>, mandatory: bool) -> Result<Arc<ServerConfig>, IdentityError> {
        let verifier = PeerVerifier {
            store: Arc::clone(&self.store),
            mandatory,
            algorithms: self.provider.signature_verification_algorithms,
        };
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(OwnCertificate { store: Arc::clone(&self.store) }));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        // No resumption: a session resumed after a rotation would keep the old certificate
        // (a ticket issued by a handshake that straddled the reload resumes it indefinitely).
        // The mesh's connections are long-lived and pooled, so full handshakes are rare.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }

    /// The outbound client config: ALPN h2/http1.1, our certificate presented, the server's chain verified against
    /// the trust root, then its identity: `pin` when given (a URI or DNS SAN equal to it), else the
    /// DNS SAN of the server name the connection is made for.
    pub fn client_config(self: &Arc<Self>, pin: Option<Arc<str>>) -> Result<Arc<ClientConfig>, IdentityError> {
        let verifier = ServerVerifier {
            store: Arc::clone(&self.store),
            pin,
            algorithms: self.provider.signature_verification_algorithms,
        };
        let mut config = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(OwnCertificate { store: Arc::clone(&self.store) }));
        // h2 first: a peer that offers it (pillion's inbound does) multiplexes the pool's
        // requests over one connection; any other speaks http/1.1 as before.
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

fn read_all(files: &IdentityFiles) -> Result<[Vec<u8>; 3], IdentityError> {
    Ok([read(&files.cert_file)?, read(&files.key_file)?, read(&files.ca_file)?])
}

fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| IdentityError::Read { path: path.to_owned(), source })?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| IdentityError::Read { path: path.to_owned(), source })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(IdentityError::TooLarge { path: path.to_owned() });
    }
    Ok(bytes)
}

fn build(
    files: &IdentityFiles,
    bytes: [Vec<u8>; 3],
    provider: &Arc<CryptoProvider>,
) -> Result<Material, IdentityError> {
    let invalid = |path: &Path, why: String| IdentityError::Invalid { path: path.to_owned(), why };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes[0])
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(&files.cert_file, format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(&files.cert_file, "no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&bytes[1])
        .map_err(|e| invalid(&files.key_file, format!("no usable PEM private key: {e}")))?;
    let key = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| invalid(&files.key_file, format!("does not fit {}: {e}", files.cert_file.display())))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes[2]) {
        let cert = cert.map_err(|e| invalid(&files.ca_file, format!("not PEM certificates: {e}")))?;
        roots.add(cert).map_err(|e| invalid(&files.ca_file, format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid(&files.ca_file, "no CERTIFICATE block".into()));
    }
    let roots = Arc::new(roots);
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(provider)).build()?;
    let end_entity = &key.cert[0];
    let identity = peer_identity(end_entity).ok_or_else(|| {
        invalid(&files.cert_file, "the certificate has no URI or DNS subject alternative name".into())
    })?;
    let serial = serial(end_entity).unwrap_or_default();
    Ok(Material { key: Arc::new(key), roots, client_verifier, identity: Arc::from(identity), serial, files: bytes })
}

/// A certificate's identity: its URI SAN, else its first DNS SAN.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Option<String> {
    let names = subject_alt_names(cert)?;
    names.iter().find(|n| n.uri).or_else(|| names.first()).map(|n| n.value.clone())
}

struct AltName {
    uri: bool,
    value: String,
}

fn subject_alt_names(cert: &CertificateDer<'_>) -> Option<Vec<AltName>> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    let names = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(AltName { uri: true, value: (*uri).to_owned() }),
            GeneralName::DNSName(dns) => Some(AltName { uri: false, value: (*dns).to_owned() }),
            _ => None,
        })
        .collect();
    Some(names)
}

/// Seconds since the epoch of a certificate's notAfter.
fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

fn serial(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.tbs_certificate.serial.to_str_radix(16))
}

/// `*` in `pattern` matches any run of characters (including none); the rest is literal.
pub fn identity_matches(pattern: &str, identity: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = identity.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Presents the current certificate, as a server and as a client.
struct OwnCertificate {
    store: Arc<Store>,
}

impl fmt::Debug for OwnCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnCertificate")
    }
}

impl ResolvesServerCert for OwnCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.store.get().key))
    }
}

impl ResolvesClientCert for OwnCertificate {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.store.get().key))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies client certificates against the current trust root.
struct PeerVerifier {
    store: Arc<Store>,
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier").field("mandatory", &self.mandatory).finish()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.store.get().client_verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Verifies a server's chain against the current trust root, then its identity.
struct ServerVerifier {
    store: Arc<Store>,
    pin: Option<Arc<str>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for ServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerVerifier").field("pin", &self.pin).finish()
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        let roots = Arc::clone(&self.store.get().roots);
        verify_server_cert_signed_by_trust_anchor(&cert, &roots, intermediates, now, self.algorithms.all)?;
        match &self.pin {
            Some(pin) => {
                let names = subject_alt_names(end_entity).unwrap_or_default();
                if !names.iter().any(|name| name.value == **pin) {
                    return Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName));
                }
            }
            None => verify_server_name(&cert, server_name)?,
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

    /// A CA and the PEM texts of leaf certificates it signs.
    pub struct TestCa {
        pub pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    impl TestCa {
        pub fn new() -> TestCa {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(Vec::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let cert = params.self_signed(&key).expect("ca");
            TestCa { pem: cert.pem(), issuer: Issuer::new(params, key) }
        }

        /// (certificate PEM, key PEM) for these SANs: `spiffe://` ones are URIs, the rest DNS.
        pub fn leaf(&self, names: &[&str], serial: u64) -> (String, String) {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(Vec::new()).expect("params");
            params.subject_alt_names = names
                .iter()
                .map(|name| match name.strip_prefix("spiffe://") {
                    Some(_) => SanType::URI((*name).try_into().expect("uri")),
                    None => SanType::DnsName((*name).try_into().expect("dns")),
                })
                .collect();
            params.serial_number = Some(serial.into());
            let cert = params.signed_by(&key, &self.issuer).expect("leaf");
            (cert.pem(), key.serialize_pem())
        }
    }

    pub fn write_identity(dir: &Path, ca: &TestCa, leaf: &(String, String)) -> IdentityFiles {
        let files = IdentityFiles {
            cert_file: dir.join("tls.crt"),
            key_file: dir.join("tls.key"),
            ca_file: dir.join("ca.crt"),
        };
        std::fs::write(&files.cert_file, &leaf.0).expect("write");
        std::fs::write(&files.key_file, &leaf.1).expect("write");
        std::fs::write(&files.ca_file, &ca.pem).expect("write");
        files
    }

    #[test]
    fn globs_match_identities() {
        assert!(identity_matches("spiffe://cluster.local/ns/shop/sa/*", "spiffe://cluster.local/ns/shop/sa/web"));
        assert!(!identity_matches("spiffe://cluster.local/ns/shop/sa/*", "spiffe://cluster.local/ns/bank/sa/web"));
        assert!(identity_matches("*.shop.svc.cluster.local", "web.shop.svc.cluster.local"));
        assert!(!identity_matches("*.shop.svc.cluster.local", "shop.svc.cluster.local"));
        assert!(identity_matches("exact", "exact"));
        assert!(!identity_matches("exact", "exactly"));
        assert!(identity_matches("a*b*c", "aXbYc"));
        assert!(!identity_matches("a*b*c", "aXcYb"));
        assert!(identity_matches("*", "anything"));
        assert!(!identity_matches("ab*ba", "aba"), "prefix and suffix may not overlap");
    }

    #[test]
    fn identity_is_the_uri_san_else_the_first_dns_san() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().expect("dir");
        let both = ca.leaf(&["web.shop.svc", "spiffe://cluster.local/ns/shop/sa/web"], 7);
        let files = write_identity(dir.path(), &ca, &both);
        let identity = Identity::load(files.clone(), TlsMetrics::default()).expect("load");
        assert_eq!(&*identity.own_identity(), "spiffe://cluster.local/ns/shop/sa/web");
        assert_eq!(identity.serial(), "7");
        let dns = ca.leaf(&["web.shop.svc", "other.shop.svc"], 8);
        write_identity(dir.path(), &ca, &dns);
        assert!(identity.reload().expect("reload"));
        assert_eq!(&*identity.own_identity(), "web.shop.svc");
        assert_eq!(identity.serial(), "8");
        assert!(!identity.reload().expect("unchanged"), "same bytes, nothing to do");
    }

    #[test]
    fn a_key_that_does_not_fit_keeps_the_current_certificate() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().expect("dir");
        let files = write_identity(dir.path(), &ca, &ca.leaf(&["a.test"], 1));
        let identity = Identity::load(files.clone(), TlsMetrics::default()).expect("load");
        let other = ca.leaf(&["a.test"], 2);
        std::fs::write(&files.cert_file, &other.0).expect("write");
        let error = identity.reload().expect_err("mismatched key");
        assert!(error.to_string().contains("tls.key"), "{error}");
        assert_eq!(identity.serial(), "1");
        std::fs::write(&files.key_file, &other.1).expect("write");
        assert!(identity.reload().expect("reload"));
        assert_eq!(identity.serial(), "2");
    }

    #[test]
    fn bad_files_say_which_file() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().expect("dir");
        let files = write_identity(dir.path(), &ca, &ca.leaf(&["a.test"], 1));
        std::fs::write(&files.ca_file, "not pem").expect("write");
        let error = Identity::load(files.clone(), TlsMetrics::default()).expect_err("bad ca");
        assert!(error.to_string().contains("ca.crt"), "{error}");
        std::fs::remove_file(&files.cert_file).expect("rm");
        let error = Identity::load(files, TlsMetrics::default()).expect_err("missing cert");
        assert!(error.to_string().contains("tls.crt"), "{error}");
    }

    /// A full handshake in memory: the server sees the client's identity; a pin or a DNS name the
    /// server's certificate does not carry fails the client's check.
    #[tokio::test]
    async fn mutual_handshake_checks_both_sides() {
        let ca = TestCa::new();
        let server_dir = tempfile::tempdir().expect("dir");
        let client_dir = tempfile::tempdir().expect("dir");
        let server = Identity::load(
            write_identity(server_dir.path(), &ca, &ca.leaf(&["api.shop.svc", "spiffe://c/ns/shop/sa/api"], 1)),
            TlsMetrics::default(),
        )
        .expect("server");
        let client = Identity::load(
            write_identity(client_dir.path(), &ca, &ca.leaf(&["spiffe://c/ns/shop/sa/web"], 2)),
            TlsMetrics::default(),
        )
        .expect("client");
        let server_config = server.server_config(true).expect("server config");
        let cases = [
            (None, "api.shop.svc", true),
            (None, "db.shop.svc", false),
            (Some("spiffe://c/ns/shop/sa/api"), "anything", true),
            (Some("spiffe://c/ns/shop/sa/db"), "api.shop.svc", false),
        ];
        for (pin, name, ok) in cases {
            let client_config = client.client_config(pin.map(Arc::from)).expect("client config");
            let (a, b) = tokio::io::duplex(64 * 1024);
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&server_config));
            let accepting = tokio::spawn(async move { acceptor.accept(b).await });
            let connector = tokio_rustls::TlsConnector::from(client_config);
            let name = ServerName::try_from(name.to_owned()).expect("name");
            let connected = connector.connect(name, a).await;
            assert_eq!(connected.is_ok(), ok, "pin {pin:?}");
            if ok {
                let accepted = accepting.await.expect("join").expect("server side");
                let peer = accepted.get_ref().1.peer_certificates().expect("peer")[0].clone();
                assert_eq!(peer_identity(&peer).as_deref(), Some("spiffe://c/ns/shop/sa/web"));
            }
        }
    }
}
