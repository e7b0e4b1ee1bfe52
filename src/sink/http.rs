//! The HTTP side of the network sinks: one pooled reqwest client per sink with rustls (ring
//! provider; system roots by default, a custom CA, a client certificate for mTLS), the
//! sink's credentials (basic, bearer token re-read from its file when it changes, API key),
//! extra headers and the request timeout. [`Transport`] is what the run loop sends through;
//! every failure to get an answer (connect error, reset, timeout) is a retryable [`Reply`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::SinkError;
use super::retry::parse_retry_after;
use super::settings::{AuthSettings, HttpSettings, TlsSettings};

/// An encoded request, ready to send (and to send again).
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub body: Bytes,
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
    /// How many records it carries.
    pub records: usize,
    /// Groups of record indices the backend judges separately (Loki streams): what a
    /// [`super::retry::Outcome::Split`] splits along.
    pub groups: Vec<Vec<usize>>,
}

/// What came back.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The backend answered (HTTP status; gRPC status mapped to its HTTP equivalent).
    Answer { status: u16, retry_after: Option<Duration>, body: Bytes },
    /// No answer: connect error, reset, timeout. Always retried.
    Failed { reason: String },
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a sink's requests reach its backend.
pub(crate) trait Transport: Send + Sync + 'static {
    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Reply>;
    /// Checks that the backend is reachable; `Ok` carries a short description.
    fn health_check(&self) -> BoxFuture<'_, Result<String, String>>;
}

/// A sink's credentials.
pub(crate) enum Auth {
    None,
    Bearer(String),
    BearerFile(TokenFile),
    Basic { username: String, password: Option<String> },
    ApiKey(String),
}

/// A bearer token kept in a file (a projected service-account token, say), re-read when the
/// file's modification time changes.
pub(crate) struct TokenFile {
    path: PathBuf,
    cached: Mutex<(Option<SystemTime>, String)>,
}

impl TokenFile {
    fn token(&self) -> Result<String, String> {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0.is_none() || cached.0 != modified {
            let text = std::fs::read_to_string(&self.path)
                .map_err(|e| format!("cannot read bearer_token_file {}: {e}", self.path.display()))?;
            *cached = (modified, text.trim().to_owned());
        }
        Ok(cached.1.clone())
    }
}

/// An HTTP transport: POST the body to one URL.
pub(crate) struct HttpTransport {
    client: reqwest::Client,
    url: reqwest::Url,
    health_url: Option<reqwest::Url>,
    headers: HeaderMap,
    auth: Auth,
}

impl HttpTransport {
    /// A transport posting to `url`; `health_url` is fetched with GET by the start-up check.
    pub fn new(
        sink: &HttpSettings,
        url: reqwest::Url,
        health_url: Option<reqwest::Url>,
        extra_headers: &[(&'static str, String)],
    ) -> Result<HttpTransport, SinkError> {
        let error = |message: String| SinkError::Setup { sink: sink.sink.to_string(), message };
        let timeout = sink.request_timeout;
        // Loading the system roots reads and parses ~150 files: only when TLS may be used.
        let uses_tls = |url: &reqwest::Url| url.scheme() == "https";
        let system_roots = uses_tls(&url) || health_url.as_ref().is_some_and(uses_tls);
        let tls = tls_config(&sink.tls, system_roots).map_err(error)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(50))
            .user_agent(concat!("pillion/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| error(format!("cannot build the HTTP client: {e}")))?;
        let mut headers = HeaderMap::new();
        let configured = sink.headers.iter().map(|(k, v)| (k.as_str(), v.expose()));
        let extra = extra_headers.iter().map(|(k, v)| (*k, v.as_str()));
        for (name, value) in configured.chain(extra) {
            let name = HeaderName::try_from(name).map_err(|e| error(format!("header {name:?}: {e}")))?;
            let mut value = HeaderValue::try_from(value).map_err(|e| error(format!("header {name}: {e}")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let auth = auth(&sink.auth).map_err(error)?;
        Ok(HttpTransport { client, url, health_url, headers, auth })
    }

    fn authorize(&self, builder: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, String> {
        Ok(match &self.auth {
            Auth::None => builder,
            Auth::Bearer(token) => builder.bearer_auth(token),
            Auth::BearerFile(file) => builder.bearer_auth(file.token()?),
            Auth::Basic { username, password } => builder.basic_auth(username, password.as_ref()),
            Auth::ApiKey(key) => builder.header(reqwest::header::AUTHORIZATION, format!("ApiKey {key}")),
        })
    }

    async fn post(&self, request: &Request) -> Reply {
        let mut builder = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, request.content_type)
            .body(request.body.clone());
        if let Some(encoding) = request.content_encoding {
            builder = builder.header(reqwest::header::CONTENT_ENCODING, encoding);
        }
        let builder = match self.authorize(builder) {
            Ok(builder) => builder,
            Err(reason) => return Reply::Failed { reason },
        };
        match builder.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                match response.bytes().await {
                    Ok(body) => Reply::Answer { status, retry_after, body },
                    Err(error) => Reply::Failed { reason: describe(&error) },
                }
            }
            Err(error) => Reply::Failed { reason: describe(&error) },
        }
    }

    async fn get_health(&self) -> Result<String, String> {
        let Some(url) = &self.health_url else {
            return tcp_check(&self.url).await;
        };
        let builder = self.client.get(url.clone()).headers(self.headers.clone()).timeout(Duration::from_secs(5));
        let response = self.authorize(builder)?.send().await.map_err(|e| describe(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(format!("{url} answered {status}"))
        } else {
            Err(format!("{url} answered {status}"))
        }
    }
}

impl Transport for HttpTransport {
    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Reply> {
        Box::pin(self.post(request))
    }

    fn health_check(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(self.get_health())
    }
}

/// Connects to the URL's host and port (for backends without a GET health endpoint).
pub(crate) async fn tcp_check(url: &url::Url) -> Result<String, String> {
    let host = url.host_str().ok_or_else(|| format!("{url} has no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let connect = tokio::net::TcpStream::connect((host, port));
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(_)) => Ok(format!("{host}:{port} accepts connections")),
        Ok(Err(error)) => Err(format!("{host}:{port}: {error}")),
        Err(_) => Err(format!("{host}:{port}: no connection within 5s")),
    }
}

/// An error with its causes, e.g. "error sending request: connection refused".
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Auth {
    /// The bearer token to send now, for transports that set headers themselves (gRPC).
    pub fn bearer(&self) -> Result<Option<String>, String> {
        match self {
            Auth::Bearer(token) => Ok(Some(token.clone())),
            Auth::BearerFile(file) => file.token().map(Some),
            _ => Ok(None),
        }
    }
}

pub(crate) fn auth(config: &AuthSettings) -> Result<Auth, String> {
    Ok(match config {
        AuthSettings::None => Auth::None,
        AuthSettings::Bearer(token) => Auth::Bearer(token.expose().to_owned()),
        AuthSettings::BearerFile(path) => {
            Auth::BearerFile(TokenFile { path: path.clone(), cached: Mutex::new((None, String::new())) })
        }
        AuthSettings::ApiKey(key) => Auth::ApiKey(key.expose().to_owned()),
        AuthSettings::Basic { username, password, password_file } => {
            let password = match (password, password_file) {
                (Some(password), _) => Some(password.expose().to_owned()),
                (None, Some(path)) => Some(read_trimmed(path)?),
                (None, None) => None,
            };
            Auth::Basic { username: username.clone(), password }
        }
    })
}

fn read_trimmed(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_owned())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The rustls client config: ring provider; trust the custom CA when given, else the system
/// roots (none when `system_roots` is false: plain-HTTP endpoints); present a client
/// certificate when given.
pub(crate) fn tls_config(tls: &TlsSettings, system_roots: bool) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = if tls.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        builder.with_root_certificates(root_store(tls.ca_file.as_deref(), system_roots)?)
    };
    let mut config = match &tls.client_cert {
        Some((cert_file, key_file)) => {
            let certs = read_certs(cert_file)?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| format!("tls.key_file {}: {e}", key_file.display()))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| format!("tls client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no PEM certificate in {}", path.display()));
    }
    Ok(certs)
}

fn root_store(ca_file: Option<&Path>, system_roots: bool) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| format!("tls.ca_file {}: {e}", path.display()))?;
            }
        }
        None if !system_roots => {}
        None => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::debug!(%error, "skipping a system CA certificate");
            }
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(roots)
}

/// `insecure_skip_verify: true`: accepts any server certificate (tests only).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `<endpoint>` joined with `path`, keeping any path prefix the endpoint has
/// (`http://gw/loki` + `/loki/api/v1/push` = `http://gw/loki/loki/api/v1/push`).
pub(crate) fn join(endpoint: &url::Url, path: &str) -> url::Url {
    let mut url = endpoint.clone();
    let base = endpoint.path().trim_end_matches('/');
    url.set_path(&format!("{base}{path}"));
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_paths_are_kept() {
        let endpoint: url::Url = "http://loki:3100".parse().expect("url");
        assert_eq!(join(&endpoint, "/loki/api/v1/push").as_str(), "http://loki:3100/loki/api/v1/push");
        let endpoint: url::Url = "http://gw/otlp/".parse().expect("url");
        assert_eq!(join(&endpoint, "/v1/logs").as_str(), "http://gw/otlp/v1/logs");
    }

    #[test]
    fn bearer_token_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "one\n").expect("write");
        let file = TokenFile { path: path.clone(), cached: Mutex::new((None, String::new())) };
        assert_eq!(file.token().expect("token"), "one");
        std::fs::write(&path, "two").expect("write");
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(later)).expect("touch");
        assert_eq!(file.token().expect("token"), "two");
    }

    #[test]
    fn system_roots_and_bad_ca_files() {
        assert!(tls_config(&TlsSettings::default(), true).is_ok());
        let tls = TlsSettings { ca_file: Some("/nonexistent/ca.pem".into()), ..TlsSettings::default() };
        assert!(tls_config(&tls, false).expect_err("missing CA file").contains("/nonexistent/ca.pem"));
    }
}
