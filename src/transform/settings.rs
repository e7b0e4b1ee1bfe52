//! The `logs.transforms` entries as written in YAML; [`super::Transforms::new`] compiles them.

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::units::{Pattern, ScalarText};
use crate::record::Level;

/// One entry of `logs.transforms`, e.g. `- drop: { when: { level: debug } }`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DropConfig {
    /// Field name to exact value; all must match for the record to be dropped.
    pub when: BTreeMap<String, ScalarText>,
    /// Field name to regex; all must match for the record to be dropped.
    pub matches: BTreeMap<String, Pattern>,
}

/// `rename:` / `add:`
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldMapConfig {
    /// Field name to new name (rename) or to value (add).
    pub fields: BTreeMap<String, ScalarText>,
}

/// `remove:`
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldListConfig {
    /// Attribute names.
    pub fields: Vec<String>,
}

/// `redact:`
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinRedaction {
    /// `Bearer <token>` (any case).
    BearerToken,
    /// 13 to 19 digits, optionally grouped by spaces or dashes.
    CreditCard,
    /// e-mail addresses.
    Email,
}

/// `sample:`
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    /// Only records of this level are sampled; others pass. Absent: every record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// Keep one record in this many.
    pub rate: NonZeroU64,
}
