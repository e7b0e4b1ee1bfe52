//! The Elasticsearch sink's settings: its fields of the flat sink entry, checked, defaults
//! applied.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::sink::settings::{Compression, HttpSettings, SinkCheck, SinkConfig};

/// The fields an Elasticsearch sink takes besides the shared HTTP ones.
pub const FIELDS: &[&str] = &["index", "op", "id", "compression"];

/// Where records go when no `index` is configured: a data stream matching Elasticsearch's
/// built-in `logs-*-*` template.
pub const DEFAULT_INDEX: &str = "logs-generic-default";

/// Elasticsearch bulk operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkOp {
    /// `create`: required by data streams; a duplicate `_id` is not overwritten.
    Create,
    /// `index`: creates or replaces the document.
    Index,
}

/// How Elasticsearch document ids are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocumentId {
    /// Elasticsearch assigns them.
    #[default]
    Auto,
    /// From the file identity and offset, so that a retried request cannot index a line twice.
    Deterministic,
}

/// An Elasticsearch sink, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub http: HttpSettings,
    /// Index or data stream name, with `{field}` placeholders.
    pub index: String,
    pub op: BulkOp,
    pub deterministic_ids: bool,
    pub gzip: bool,
}

/// Checks a `type: elasticsearch` entry.
pub fn check(sink: &SinkConfig, check: &mut SinkCheck) -> Option<Settings> {
    let http = sink.check_http(check, true);
    if let Some(Err(message)) = sink.index.as_deref().map(check_index_template) {
        check.issue("index", message, Some("e.g. index: logs-{service_name}-default"));
    }
    Some(Settings {
        http: http?,
        index: sink.index.clone().unwrap_or_else(|| DEFAULT_INDEX.to_owned()),
        op: sink.op.unwrap_or(BulkOp::Create),
        deterministic_ids: sink.id == Some(DocumentId::Deterministic),
        gzip: sink.compression != Some(Compression::None),
    })
}

/// `{field}` placeholders must close and name something.
fn check_index_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| format!("unclosed `{{` in index {template:?}"))?;
        if after[..close].trim().is_empty() || after[..close].contains('{') {
            return Err(format!("invalid placeholder in index {template:?}"));
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("unmatched `}}` in index {template:?}"));
    }
    if template.trim().is_empty() {
        return Err("an empty index name".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_templates_close_their_braces() {
        assert!(check_index_template("logs-{service_name}-%Y.%m.%d").is_ok());
        assert!(check_index_template("logs-{service_name").is_err());
        assert!(check_index_template("logs-}").is_err());
        assert!(check_index_template("logs-{}").is_err());
    }
}
