//! The Loki sink's settings: its fields of the flat sink entry, checked, defaults applied.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::sink::settings::{Compression, HttpSettings, SinkCheck, SinkConfig};

/// The fields a Loki sink takes besides the shared HTTP ones, in the order hints list them.
pub const FIELDS: &[&str] =
    &["encoding", "labels", "structured_metadata", "max_label_values", "tenant", "line_format", "compression"];

/// Distinct values a label may take before it is demoted to structured metadata.
pub const DEFAULT_MAX_LABEL_VALUES: usize = 100;

/// Loki push encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LokiEncoding {
    /// Protobuf, snappy-compressed (Loki's native push format).
    Protobuf,
    /// JSON, gzip-compressed unless `compression: none`.
    Json,
}

/// What a Loki line contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    /// The record's message.
    Message,
    /// The whole record as JSON.
    Json,
}

/// A Loki sink, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub http: HttpSettings,
    /// Record fields used as stream labels.
    pub labels: Vec<String>,
    /// Record fields sent as structured metadata.
    pub structured_metadata: Vec<String>,
    pub max_label_values: usize,
    /// Sent as X-Scope-OrgID; `None` when empty.
    pub tenant: Option<String>,
    pub encoding: LokiEncoding,
    /// gzip JSON pushes (protobuf pushes are always snappy).
    pub gzip: bool,
    pub line_format: LineFormat,
}

/// Checks a `type: loki` entry.
pub fn check(sink: &SinkConfig, check: &mut SinkCheck) -> Option<Settings> {
    let http = sink.check_http(check, false);
    if sink.encoding != Some(LokiEncoding::Json) && sink.compression == Some(Compression::Gzip) {
        let hint = Some("protobuf pushes are always snappy-compressed; gzip applies to `encoding: json`");
        check.issue("compression", "gzip does not apply to protobuf pushes".into(), hint);
    }
    Some(Settings {
        http: http?,
        labels: sink.labels.clone(),
        structured_metadata: sink.structured_metadata.clone(),
        max_label_values: sink.max_label_values.map_or(DEFAULT_MAX_LABEL_VALUES, |n| n.get()),
        tenant: sink.tenant.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned),
        encoding: sink.encoding.unwrap_or(LokiEncoding::Protobuf),
        gzip: sink.compression != Some(Compression::None),
        line_format: sink.line_format.unwrap_or(LineFormat::Message),
    })
}
