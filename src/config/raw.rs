//! The config file as written: the top-level serde structs mirroring the YAML schema of
//! design.md, with defaults. Each component owns the raw struct of its own section (inputs in
//! `tail::settings`, sinks in `sink::settings`, ...) and the check that turns it into its
//! typed settings; this file assembles them. Every `///` is user documentation: it becomes
//! the description of `pillion schema`.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::units::{Duration, GlobPattern, ListenAddr, ScalarText};
use crate::proxy::settings::ProxyConfig;
use crate::sink::settings::SinkConfig;
use crate::tail::settings::InputConfig;
use crate::telemetry::settings::TracingConfig;
use crate::transform::settings::TransformConfig;

/// pillion's config file. Every section is optional; unknown keys are errors. `${VAR}` and
/// `${VAR:-default}` are replaced from the environment before parsing.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
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
    #[schemars(with = "Vec<InputConfig>")]
    pub inputs: Vec<Spanned<InputConfig>>,
    /// Globs of extra parser definition files (format: parsers/README.md), relative to the
    /// config file's directory; the built-in parsers are always available.
    pub parsers: Vec<GlobPattern>,
    /// Transforms applied to every record, in order.
    pub transforms: Vec<TransformConfig>,
    /// Where records go. None: JSON lines on stdout.
    #[schemars(with = "Vec<SinkConfig>")]
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
