//! The config file as written: serde structs mirroring the YAML schema of design.md, with
//! defaults. Every `///` here is user documentation. Nothing in this file validates across
//! fields; `validate.rs` turns these into the checked [`super::Config`].

use std::collections::BTreeMap;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::units::{
    ByteSize, Duration, Endpoint, GlobPattern, ListenAddr, Pattern, Ratio, RouteTemplate, ScalarText, Secret,
};
use crate::record::Level;

/// The whole config file. Every section is optional.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Resource attributes put on every record, span and metric.
    pub service: ServiceConfig,
    /// The admin HTTP server: /metrics /healthz /readyz /config.
    pub admin: AdminConfig,
    /// How long a graceful shutdown may take before pillion exits anyway.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Duration,
    /// Runtime worker threads; default: the CPUs this container may use, at least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<NonZeroUsize>,
    /// The log pipeline: inputs, parsers, transforms, sinks.
    pub logs: LogsConfig,
    /// The reverse proxy in front of the app (and the optional egress proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyConfig>,
    /// Span export for proxied requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfig>,
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(25)
}

/// `service:` — who this pod is.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// `service.name`; default: $PILLION_SERVICE_NAME, then $OTEL_SERVICE_NAME, else "unknown_service".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<ScalarText>,
    /// `service.namespace`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<ScalarText>,
    /// `service.version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<ScalarText>,
    /// Extra resource attributes, e.g. `deployment.environment: prod`.
    pub attributes: BTreeMap<String, ScalarText>,
}

/// `admin:` — the admin server.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of /metrics /healthz /readyz /config. Loopback by default.
    pub listen: ListenAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: default_admin_listen() }
    }
}

pub fn default_admin_listen() -> ListenAddr {
    ListenAddr(std::net::SocketAddr::from(([127, 0, 0, 1], 9901)))
}

/// `logs:` — the log pipeline.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Where checkpoints and dead letters live.
    pub data_dir: PathBuf,
    /// How often acknowledged offsets are persisted (also on shutdown).
    pub checkpoint_interval: Duration,
    /// Checkpoints of files gone (deleted or rotated out of the globs) for this long are
    /// forgotten. Until then they recognize copies of those files (a `.gz` made later).
    pub checkpoint_ttl: Duration,
    /// Files to tail.
    pub inputs: Vec<Spanned<InputConfig>>,
    /// Globs of extra parser definition files (format: parsers/README.md), relative to the
    /// config file's directory; the built-in parsers are always available.
    pub parsers: Vec<GlobPattern>,
    /// Transforms applied to every record, in order.
    pub transforms: Vec<TransformConfig>,
    /// Where records go. None: JSON lines on stdout.
    pub sinks: Vec<Spanned<SinkConfig>>,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            data_dir: PathBuf::from("./data"),
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_ttl: Duration::from_secs(3600),
            inputs: Vec::new(),
            parsers: Vec::new(),
            transforms: Vec::new(),
            sinks: Vec::new(),
        }
    }
}

/// One entry of `logs.inputs`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Name used in metrics and in `source.input`.
    pub name: String,
    /// Globs of files to tail; `**` crosses directories, `*` does not.
    pub paths: Vec<GlobPattern>,
    /// Globs of files to skip; a pattern without `/` matches the file name.
    #[serde(default)]
    pub exclude: Vec<GlobPattern>,
    /// Where to start in a file never seen before: `beginning` or `end`.
    #[serde(default)]
    pub start_at: StartAt,
    /// Container-runtime framing to unwrap first: none | cri | docker | auto.
    #[serde(default)]
    pub container: ContainerFormat,
    /// How to parse each line: auto | json | logfmt | raw | a built-in or `logs.parsers` name.
    #[serde(default = "default_format")]
    pub format: String,
    /// Time zone of timestamps written without an offset: an IANA name (`Europe/Paris`),
    /// `UTC` (the default), `local`, or a fixed offset (`+02:00`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// A regex finding trace and span ids in the message when the parser found none, with
    /// named captures `trace_id`, `span_id` and/or `traceparent`. Default: `trace_id=<hex>`,
    /// `traceId: "<hex>"` (any case, `_ . -` or none, `=` or `:`), `span_id=...`, `traceparent=...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_pattern: Option<Pattern>,
    /// Join continuation lines (stack traces) into one record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline: Option<MultilineConfig>,
    /// Longer lines are truncated and flagged, never buffered whole.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: ByteSize,
    /// How often files are checked for new data and new files are looked for (file-system
    /// events only wake the poller early; polling works where inotify sees nothing).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: Duration,
    /// At most this many files are kept open; idle, fully read files are closed first.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: NonZeroUsize,
    /// Follow every symlink the globs find. Off (the default): a link is followed only if its
    /// target is inside the directory named by the glob's fixed prefix (the path up to the
    /// first component with a glob character), and `**` never descends through a link;
    /// other links are skipped with a warning and counted in
    /// `pillion_input_skipped_files_total{reason="symlink_outside"}`.
    #[serde(default = "default_follow_symlinks")]
    pub follow_symlinks: bool,
    /// Attributes added to every record from this input.
    #[serde(default)]
    pub attributes: BTreeMap<String, ScalarText>,
}

fn default_format() -> String {
    "auto".to_owned()
}

fn default_max_line_bytes() -> ByteSize {
    ByteSize::kib(256)
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_follow_symlinks() -> bool {
    false
}

fn default_max_open_files() -> NonZeroUsize {
    NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN)
}

/// Where to start reading a file pillion has no checkpoint for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    #[default]
    Beginning,
    End,
}

/// Container-runtime framing around each line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerFormat {
    #[default]
    None,
    Cri,
    Docker,
    Auto,
}

/// `multiline:` — how continuation lines are joined. Give `start` or `preset`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// A line matching this regex starts a new record; other lines append to the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Pattern>,
    /// A built-in rule instead of `start`: java | python | go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<MultilinePreset>,
    /// At most this many lines per record.
    #[serde(default = "default_multiline_max_lines")]
    pub max_lines: NonZeroUsize,
    /// A record with no new line for this long is complete.
    #[serde(default = "default_multiline_timeout")]
    pub timeout: Duration,
}

/// Built-in multiline rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MultilinePreset {
    /// Java/JVM stack traces (`at ...`, `Caused by:`, `... N more`).
    Java,
    /// Python tracebacks, chained exceptions included.
    Python,
    /// Go panics with their goroutine dumps.
    Go,
}

fn default_multiline_max_lines() -> NonZeroUsize {
    NonZeroUsize::new(500).unwrap_or(NonZeroUsize::MIN)
}

fn default_multiline_timeout() -> Duration {
    Duration::from_secs(1)
}

/// One entry of `logs.transforms`, e.g. `- drop: { when: { level: debug } }`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformConfig {
    /// Drop records whose fields equal the given values (all must match) or match regexes.
    Drop(DropConfig),
    /// Rename fields: `{ from: to }`.
    Rename(FieldMapConfig),
    /// Add static attributes: `{ name: value }`.
    Add(FieldMapConfig),
    /// Remove attributes by name.
    Remove(FieldListConfig),
    /// Replace matches of patterns in the chosen fields with a mask.
    Redact(RedactConfig),
    /// Keep one record in `rate` of the given level.
    Sample(SampleConfig),
}

/// `drop:`
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DropConfig {
    /// Field name to exact value; all must match for the record to be dropped.
    pub when: BTreeMap<String, ScalarText>,
    /// Field name to regex; all must match for the record to be dropped.
    pub matches: BTreeMap<String, Pattern>,
}

/// `rename:` / `add:`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapConfig {
    /// Field name to new name (rename) or to value (add).
    pub fields: BTreeMap<String, ScalarText>,
}

/// `remove:`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FieldListConfig {
    /// Attribute names.
    pub fields: Vec<String>,
}

/// `redact:`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// Fields to scan: `message` or attribute names.
    pub fields: Vec<String>,
    /// Regexes whose matches are masked.
    #[serde(default)]
    pub patterns: Vec<Pattern>,
    /// Built-in patterns: bearer_token, credit_card, email.
    #[serde(default)]
    pub builtin: Vec<BuiltinRedaction>,
    /// The replacement text.
    #[serde(default = "default_mask")]
    pub mask: String,
}

fn default_mask() -> String {
    "[REDACTED]".to_owned()
}

/// Ready-made redaction patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinRedaction {
    BearerToken,
    CreditCard,
    Email,
}

/// `sample:`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    /// Only records of this level are sampled; others pass. Absent: every record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// Keep one record in this many.
    pub rate: NonZeroU64,
}

/// One entry of `logs.sinks`. Which fields apply depends on `type`.
#[derive(Debug, Deserialize, Serialize, Clone)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    Loki,
    Elasticsearch,
    Otlp,
    Stdout,
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
}

/// Loki push encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LokiEncoding {
    Protobuf,
    Json,
}

/// What a Loki line contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    Message,
    Json,
}

/// Elasticsearch bulk operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkOp {
    Create,
    Index,
}

/// How Elasticsearch document ids are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentId {
    #[default]
    Auto,
    Deterministic,
}

/// Request body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    Gzip,
    None,
}

/// OTLP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// `auth:` — one way of authenticating.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
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
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
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
#[derive(Debug, Deserialize, Serialize, Clone, Copy)]
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

/// `proxy:`
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// The reverse proxy in front of the app's port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound: Option<Spanned<InboundConfig>>,
    /// An egress proxy for the app's own calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundConfig>,
    /// This pod's mesh certificate, key and trust root (e.g. a cert-manager Secret mounted as
    /// files), used for inbound `mtls` and outbound destinations with `mtls: true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityConfig>,
    /// DNS server for destinations' `dns` names, e.g. 127.0.0.1:5353; default: the system
    /// resolver (/etc/resolv.conf).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_nameserver: Option<std::net::SocketAddr>,
}

/// `proxy.identity:` PEM files, re-read when they change (new connections use the new
/// certificate; no restart).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// This pod's certificate chain (PEM), leaf first; its URI SAN (else first DNS SAN) is the
    /// pod's identity.
    pub cert_file: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Trust root for peers' certificates (PEM, one or more CA certificates).
    pub ca_file: PathBuf,
}

/// `proxy.inbound.mtls:`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MtlsMode {
    /// Plain HTTP only.
    #[default]
    Off,
    /// TLS (client certificate optional) and plain HTTP on one port.
    Permissive,
    /// TLS with a client certificate signed by `proxy.identity.ca_file`; anything else is refused.
    Required,
}

/// `proxy.inbound:`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// Address clients connect to.
    pub listen: ListenAddr,
    /// The app, e.g. http://127.0.0.1:8080.
    pub upstream: Endpoint,
    /// Route templates for the `http_route` label, e.g. /api/users/{id}.
    #[serde(default)]
    pub routes: Vec<RouteTemplate>,
    /// Distinct http_route values before new ones become "other".
    #[serde(default = "default_max_routes")]
    pub max_routes: NonZeroUsize,
    /// Every request also becomes a Record in the log pipeline.
    #[serde(default)]
    pub access_log: bool,
    /// Proxy timeouts.
    #[serde(default)]
    pub timeouts: InboundTimeouts,
    /// TLS termination with client certificates: off | permissive | required (needs
    /// `proxy.identity`).
    #[serde(default)]
    pub mtls: MtlsMode,
    /// Peer identities (URI or DNS SAN) allowed in, `*` matching any characters; others get 403.
    /// Empty: every verified peer (and, when permissive, plain clients).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_identities: Vec<String>,
}

fn default_max_routes() -> NonZeroUsize {
    NonZeroUsize::new(200).unwrap_or(NonZeroUsize::MIN)
}

/// `proxy.inbound.timeouts:`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundTimeouts {
    /// Time allowed to receive request headers (slowloris guard).
    pub header_read: Duration,
    /// Time allowed for the whole request.
    pub request: Duration,
    /// Idle keep-alive connections are closed after this.
    pub idle: Duration,
}

impl Default for InboundTimeouts {
    fn default() -> Self {
        InboundTimeouts {
            header_read: Duration::from_secs(10),
            request: Duration::from_secs(60),
            idle: Duration::from_secs(90),
        }
    }
}

/// `proxy.outbound:`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Address the app uses as its HTTP proxy.
    pub listen: ListenAddr,
    /// Timeout per outbound request.
    #[serde(default = "default_outbound_timeout")]
    pub timeout: Duration,
    /// Retries of failed requests.
    #[serde(default)]
    pub retries: RetriesConfig,
    /// Per-destination circuit breaker.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// Services the app calls by name (http://NAME/...): their endpoints, load balancing and
    /// mTLS. Other hosts are proxied as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<DestinationConfig>,
}

/// `proxy.outbound.destinations[]:`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// The name the app calls, e.g. `analytics` for http://analytics/...
    pub host: String,
    /// Static endpoints, `IP:port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<std::net::SocketAddr>,
    /// Endpoints from DNS A/AAAA records (e.g. a headless Service), re-resolved every `refresh`
    /// or when the answer's TTL runs out, whichever is first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsDiscoveryConfig>,
    /// Originate mTLS with `proxy.identity` and verify the server against its `ca_file`.
    #[serde(default)]
    pub mtls: bool,
    /// The server's identity (URI or DNS SAN) to require; default: a DNS SAN equal to
    /// `dns.name`, else `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_identity: Option<String>,
    /// p2c_ewma (power of two choices over latency, the default) | round_robin.
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    /// Weighted groups of endpoints (a canary): each request picks a group by weight, then an
    /// endpoint in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<SplitConfig>,
    /// Endpoints that fail `consecutive_failures` times in a row are left out for `eject_for`.
    #[serde(default)]
    pub outlier: OutlierConfig,
}

/// `proxy.outbound.destinations[].dns:`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscoveryConfig {
    /// The name to resolve, e.g. analytics.shop.svc.cluster.local.
    pub name: String,
    /// The port every resolved address is called on.
    pub port: u16,
    /// Resolve again this often (sooner when the answer's TTL is shorter).
    #[serde(default = "default_dns_refresh")]
    pub refresh: Duration,
}

fn default_dns_refresh() -> Duration {
    Duration::from_secs(5)
}

/// `proxy.outbound.destinations[].load_balancer:`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancer {
    /// Of two endpoints drawn at random, the one with the lower latency (EWMA) times load.
    #[default]
    P2cEwma,
    /// Each endpoint in turn.
    RoundRobin,
}

/// `proxy.outbound.destinations[].split[]:`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// Endpoints of this group (`IP:port`).
    pub endpoints: Vec<std::net::SocketAddr>,
    /// Relative share of requests.
    pub weight: u32,
}

/// `proxy.outbound.destinations[].outlier:`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    /// Failures in a row (connect errors, timeouts, 5xx) that eject an endpoint.
    pub consecutive_failures: u32,
    /// How long an ejected endpoint is left out before it is tried again.
    pub eject_for: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig { consecutive_failures: 5, eject_for: Duration::from_secs(30) }
    }
}

fn default_outbound_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `proxy.outbound.retries:`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetriesConfig {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Retry only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE).
    pub idempotent_only: bool,
}

impl Default for RetriesConfig {
    fn default() -> Self {
        RetriesConfig { attempts: 2, idempotent_only: true }
    }
}

/// `proxy.outbound.circuit_breaker:`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the circuit.
    pub consecutive_failures: u32,
    /// How long it stays open before a probe.
    pub open_for: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig { consecutive_failures: 5, open_for: Duration::from_secs(30) }
    }
}

/// `tracing:`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Where spans go; default from OTEL_EXPORTER_OTLP_ENDPOINT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpExportConfig>,
    /// Fraction of new traces sampled (parent-based).
    pub sample_ratio: Ratio,
    /// Context propagation formats.
    pub propagators: Vec<Propagator>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp: None,
            sample_ratio: Ratio(1.0),
            propagators: vec![Propagator::Tracecontext, Propagator::Baggage],
        }
    }
}

/// `tracing.otlp:`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExportConfig {
    /// Collector base URL; with http/protobuf, /v1/traces is appended.
    pub endpoint: Endpoint,
    /// grpc | http/protobuf.
    #[serde(default)]
    pub protocol: OtlpProtocol,
}

/// Trace context propagation formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Propagator {
    Tracecontext,
    Baggage,
    B3,
    B3multi,
}
