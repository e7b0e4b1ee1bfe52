//! A sink's config: the `logs.sinks[]` entry as written ([`SinkConfig`], one flat mapping whose
//! `type` says which fields apply) and as checked ([`SinkSettings`]). The parts every network
//! sink shares are typed once here ([`HttpSettings`], [`BatchLimits`]); each backend owns its
//! own settings, its field list and its check (`loki::settings`, ...), so that adding a sink
//! means its own module, its fields below and one dispatch line in [`SinkConfig::check`].

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::elasticsearch::settings::{BulkOp, DocumentId};
use super::loki::settings::{LineFormat, LokiEncoding};
use super::{elasticsearch, file, loki, otlp};
use crate::config::Checker;
use crate::config::units::{ByteSize, Duration, Endpoint, Secret};
use crate::telemetry::settings::OtlpProtocol;

/// One entry of `logs.sinks`. Which fields apply depends on `type`.
#[derive(Debug, Deserialize, Serialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Name used in metrics and the dead-letter file name.
    pub name: String,
    /// loki | elasticsearch | otlp | stdout | file.
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// Base URL of the backend (loki, elasticsearch, otlp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    /// Loki: protobuf (snappy) | json (gzip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<LokiEncoding>,
    /// Loki: Record fields used as stream labels (keep it small and bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Loki: Record fields sent as structured metadata.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub structured_metadata: Vec<String>,
    /// Loki: distinct values a label may take before it is demoted to structured metadata
    /// (with a warning), so that a misconfigured label cannot create thousands of streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_label_values: Option<NonZeroUsize>,
    /// Loki: tenant, sent as X-Scope-OrgID. Empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Loki: the log line is the `message` or the whole record as `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_format: Option<LineFormat>,
    /// Elasticsearch: index or data stream name, with `{field}` placeholders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// Elasticsearch: bulk operation, `create` (data streams) or `index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<BulkOp>,
    /// Elasticsearch: document `_id`s: `auto` (Elasticsearch assigns them) or `deterministic`
    /// (from the file identity and offset, so that a retried request cannot index a line twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<DocumentId>,
    /// Request body compression: gzip | none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// OTLP: grpc | http/protobuf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<OtlpProtocol>,
    /// File sink: the NDJSON file to append to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Credentials for the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// TLS settings for https endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Extra HTTP headers on every request (values are treated as secrets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
    /// Timeout for one request to the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<Duration>,
    /// Concurrent requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<NonZeroUsize>,
    /// When a batch is sent.
    #[serde(default)]
    pub batch: BatchConfig,
}

/// The kinds of sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// Grafana Loki's push API.
    Loki,
    /// Elasticsearch or OpenSearch bulk API.
    Elasticsearch,
    /// OpenTelemetry LogRecords to a collector.
    Otlp,
    /// JSON lines on standard output.
    Stdout,
    /// JSON lines appended to a file.
    File,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Loki => "loki",
            SinkKind::Elasticsearch => "elasticsearch",
            SinkKind::Otlp => "otlp",
            SinkKind::Stdout => "stdout",
            SinkKind::File => "file",
        }
    }

    /// The optional fields this kind accepts (besides name, type and batch), in the order the
    /// hint lists them, and the ones it requires.
    fn fields(self) -> (Vec<&'static str>, &'static [&'static str]) {
        let own = match self {
            SinkKind::Loki => loki::settings::FIELDS,
            SinkKind::Elasticsearch => elasticsearch::settings::FIELDS,
            SinkKind::Otlp => otlp::settings::FIELDS,
            SinkKind::Stdout => return (Vec::new(), &[]),
            SinkKind::File => return (file::FIELDS.to_vec(), file::FIELDS),
        };
        let mut allowed = own.to_vec();
        allowed.extend_from_slice(HTTP_FIELDS);
        (allowed, &["endpoint"])
    }
}

/// Request body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// gzip the request body.
    Gzip,
    /// Send it as it is.
    None,
}

/// `auth:` — one way of authenticating.
#[derive(Debug, Default, Deserialize, Serialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// A file holding the bearer token, re-read when it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// Basic auth user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Basic auth password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file holding the basic auth password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Elasticsearch API key (the base64 `id:key` form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
}

/// `tls:` — certificates for https endpoints.
#[derive(Debug, Default, Deserialize, Serialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM bundle of CAs to trust instead of the system roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM) for mTLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Skip certificate verification. For tests only.
    pub insecure_skip_verify: bool,
}

/// `batch:` — a batch is sent when any limit is reached.
#[derive(Debug, Deserialize, Serialize, Clone, Copy, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Records per batch.
    pub max_events: NonZeroUsize,
    /// Encoded bytes per batch (before compression).
    pub max_bytes: ByteSize,
    /// Age of the oldest record in a batch.
    pub timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
            max_bytes: ByteSize::mib(1),
            timeout: Duration::from_secs(1),
        }
    }
}

/// When a batch is sent, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_events: usize,
    pub max_bytes: u64,
    pub timeout: StdDuration,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchConfig::default().into()
    }
}

impl From<BatchConfig> for BatchLimits {
    fn from(batch: BatchConfig) -> Self {
        BatchLimits {
            max_events: batch.max_events.get(),
            max_bytes: batch.max_bytes.bytes(),
            timeout: batch.timeout.get(),
        }
    }
}

/// The fields every network sink takes.
pub const HTTP_FIELDS: &[&str] = &["endpoint", "auth", "tls", "headers", "request_timeout", "concurrency"];

/// Default timeout of one request.
pub const DEFAULT_REQUEST_TIMEOUT: StdDuration = StdDuration::from_secs(30);

/// Concurrent requests per network sink when `concurrency` is not set.
pub const DEFAULT_CONCURRENCY: usize = 2;

/// How a network sink reaches its backend, checked, with its defaults applied.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The sink's name, for messages.
    pub sink: Arc<str>,
    pub endpoint: url::Url,
    pub auth: AuthSettings,
    pub tls: TlsSettings,
    /// Extra headers, values secret.
    pub headers: Vec<(String, Secret)>,
    pub request_timeout: StdDuration,
    pub concurrency: usize,
}

/// A sink's credentials, as configured (files are read when the sink starts).
#[derive(Debug, Clone, Default)]
pub enum AuthSettings {
    #[default]
    None,
    Bearer(Secret),
    BearerFile(PathBuf),
    Basic {
        username: String,
        password: Option<Secret>,
        password_file: Option<PathBuf>,
    },
    ApiKey(Secret),
}

/// TLS for https endpoints.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// PEM bundle of CAs to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mTLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub insecure_skip_verify: bool,
}

/// One sink, checked.
#[derive(Debug)]
pub struct SinkSettings {
    pub name: Arc<str>,
    pub batch: BatchLimits,
    pub target: SinkTarget,
}

/// What a sink writes to, with that backend's own settings.
#[derive(Debug)]
pub enum SinkTarget {
    Stdout,
    File(file::Settings),
    Loki(loki::Settings),
    Elasticsearch(elasticsearch::Settings),
    Otlp(otlp::Settings),
}

/// Checks every sink; with none configured, one `stdout` sink. `tailed_by(path)` names the
/// input whose globs match `path`, if any (a file sink there would read its own output).
pub fn check_sinks(
    checker: &mut Checker,
    sinks: &[Spanned<SinkConfig>],
    tailed_by: &dyn Fn(&Path) -> Vec<String>,
) -> Vec<SinkSettings> {
    if sinks.is_empty() {
        return vec![SinkSettings {
            name: Arc::from("stdout"),
            batch: BatchLimits::default(),
            target: SinkTarget::Stdout,
        }];
    }
    let mut names = BTreeSet::new();
    let mut checked = Vec::new();
    for (index, spanned) in sinks.iter().enumerate() {
        let sink = &spanned.value;
        let field = |name: &str| format!("logs.sinks[{index}].{name}");
        if sink.name.trim().is_empty() {
            checker.at(spanned, field("name"), "a sink needs a non-empty name".into(), None);
        } else if !names.insert(sink.name.clone()) {
            let message = format!("duplicate sink name {:?}", sink.name);
            checker.at(spanned, field("name"), message, Some("sink names must be unique"));
        }
        sink.check_fields_apply(checker, spanned, &field);
        if let Some(path) = &sink.path {
            for input in tailed_by(path) {
                let message = format!(
                    "file sink path {} is tailed by input {input:?}: pillion would read its own output in a loop",
                    path.display()
                );
                checker.at(spanned, field("path"), message, Some("write the sink file outside the input globs"));
            }
        }
        let check = SinkCheck { checker, spanned, field: &field };
        if let Some(target) = sink.check(check) {
            checked.push(SinkSettings { name: Arc::from(sink.name.as_str()), batch: sink.batch.into(), target });
        }
    }
    checked
}

/// What a backend's check reports through: the checker, the entry's position, and its path.
pub struct SinkCheck<'c, 'a> {
    pub checker: &'c mut Checker<'a>,
    pub spanned: &'c Spanned<SinkConfig>,
    pub field: &'c dyn Fn(&str) -> String,
}

impl SinkCheck<'_, '_> {
    /// An issue with the field `name` of this sink.
    pub fn issue(&mut self, name: &str, message: String, hint: Option<&str>) {
        self.checker.at(self.spanned, (self.field)(name), message, hint);
    }
}

impl SinkConfig {
    /// The one dispatch: each kind's own check.
    fn check(&self, mut check: SinkCheck) -> Option<SinkTarget> {
        Some(match self.kind {
            SinkKind::Stdout => SinkTarget::Stdout,
            SinkKind::File => SinkTarget::File(file::Settings { path: self.path.clone().unwrap_or_default() }),
            SinkKind::Loki => SinkTarget::Loki(loki::settings::check(self, &mut check)?),
            SinkKind::Elasticsearch => SinkTarget::Elasticsearch(elasticsearch::settings::check(self, &mut check)?),
            SinkKind::Otlp => SinkTarget::Otlp(otlp::settings::check(self, &mut check)?),
        })
    }

    /// Every field set must apply to this `type`, and the ones it requires must be set.
    fn check_fields_apply(&self, checker: &mut Checker, spanned: &Spanned<SinkConfig>, field: &dyn Fn(&str) -> String) {
        let kind = self.kind.as_str();
        let (allowed, required) = self.kind.fields();
        let set = self.fields_set();
        for name in set.iter().filter(|name| !allowed.contains(name)) {
            let message = format!("`{name}` does not apply to a {kind} sink");
            let listed: String = allowed.iter().map(|f| format!(", {f}")).collect();
            let hint = format!("a {kind} sink takes: name, type, batch{listed}");
            checker.at(spanned, field(name), message, Some(&hint));
        }
        for name in required.iter().filter(|name| !set.contains(name)) {
            let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
            checker.at(spanned, field(name), format!("{article} {kind} sink needs `{name}`"), None);
        }
    }

    /// The optional fields written in this entry, by their YAML names, in declaration order:
    /// read from the entry's own serialization (absent fields are skipped when serializing),
    /// so that no hand-kept table can drift from the struct.
    fn fields_set(&self) -> Vec<&'static str> {
        let written = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Vec::new(),
        };
        crate::config::field_names::<SinkConfig>()
            .iter()
            .copied()
            .filter(|name| !matches!(*name, "name" | "type" | "batch") && written.contains_key(*name))
            .collect()
    }

    /// The shared network settings, checked: one way of authenticating, certificate and key
    /// together. `api_key` is only for sinks that take it.
    pub fn check_http(&self, check: &mut SinkCheck, api_key_allowed: bool) -> Option<HttpSettings> {
        let auth = self.auth.as_ref().map_or(AuthSettings::None, |auth| auth.check(check, api_key_allowed));
        let tls = self.tls.clone().unwrap_or_default();
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            let hint = Some("mTLS needs both the client certificate and its key");
            check.issue("tls", "cert_file and key_file go together".into(), hint);
        }
        let endpoint = self.endpoint.as_ref()?.url().clone();
        Some(HttpSettings {
            sink: Arc::from(self.name.as_str()),
            endpoint,
            auth,
            tls: TlsSettings {
                ca_file: tls.ca_file,
                client_cert: tls.cert_file.zip(tls.key_file),
                insecure_skip_verify: tls.insecure_skip_verify,
            },
            headers: self.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            request_timeout: self.request_timeout.map_or(DEFAULT_REQUEST_TIMEOUT, |t| t.get()),
            concurrency: self.concurrency.map_or(DEFAULT_CONCURRENCY, |n| n.get()),
        })
    }
}

impl AuthConfig {
    fn check(&self, check: &mut SinkCheck, api_key_allowed: bool) -> AuthSettings {
        let methods = [
            self.bearer_token.is_some(),
            self.bearer_token_file.is_some(),
            self.api_key.is_some(),
            self.username.is_some(),
        ];
        if methods.iter().filter(|set| **set).count() > 1 {
            let hint = Some("choose one of bearer_token, bearer_token_file, api_key, username/password");
            check.issue("auth", "more than one way of authenticating".into(), hint);
        }
        if (self.password.is_some() || self.password_file.is_some()) && self.username.is_none() {
            check.issue("auth.username", "a password needs a username".into(), None);
        }
        if self.api_key.is_some() && !api_key_allowed {
            check.issue("auth.api_key", "api_key is for Elasticsearch sinks".into(), None);
        }
        if let Some(token) = &self.bearer_token {
            AuthSettings::Bearer(token.clone())
        } else if let Some(path) = &self.bearer_token_file {
            AuthSettings::BearerFile(path.clone())
        } else if let Some(key) = &self.api_key {
            AuthSettings::ApiKey(key.clone())
        } else if let Some(username) = &self.username {
            AuthSettings::Basic {
                username: username.clone(),
                password: self.password.clone(),
                password_file: self.password_file.clone(),
            }
        } else {
            AuthSettings::None
        }
    }
}

/// Settings of the sink described by `yaml` (a flow mapping), for tests.
#[cfg(test)]
pub(crate) fn from_yaml(yaml: &str) -> SinkSettings {
    let config = crate::config::load_str(&format!("logs: {{ sinks: [ {yaml} ] }}"), "test.yaml", &|_| None);
    match config {
        Ok(config) => config.logs.sinks.into_iter().next().expect("one sink"),
        Err(error) => panic!("invalid sink {yaml}: {error}"),
    }
}
