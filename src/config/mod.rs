//! Configuration: the YAML file (`raw`, assembling the sections each component owns), its
//! scalars (`units`), `${VAR}` interpolation (`env`), the [`Checker`] every component's check
//! reports through, the JSON Schema (`schema`), and the validated [`Config`] built once at
//! start-up (`validate`). Every error names the file,
//! line, column and field path, e.g.
//! `config/x.yaml:12:7: logs.sinks[0].batch.max_bytes: invalid size "10 potatoes"`.

mod check;
mod env;
mod fields;
pub mod raw;
mod schema;
pub mod units;
mod validate;

use std::fmt;
use std::path::Path;

pub use check::Checker;
pub use fields::field_names;
pub use schema::schema_json;
pub use validate::{Config, LogsSettings};

/// Shown instead of every secret in `/config` and in debug output.
pub use crate::redact::REDACTED;

/// The largest config file read (after `${VAR}` interpolation too): a config is a few KiB, and
/// a huge one would only cost memory.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

/// The embedded default config: tails `fixtures/*.log`, records to stdout.
pub const QUICKSTART_YAML: &str = include_str!("../../config/quickstart.yaml");

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{origin}: cannot read config: {source}")]
    Read { origin: String, source: std::io::Error },
    /// The file (or its text after interpolation) is larger than [`MAX_CONFIG_BYTES`].
    #[error(
        "{origin}: the config is {bytes} bytes; the limit is 4 MiB (a config is a few KiB: is this the right file?)"
    )]
    TooLarge { origin: String, bytes: u64 },
    /// The file was read but is not a valid config; every problem found is listed.
    #[error("{}", render_issues(.0))]
    Invalid(Vec<ConfigIssue>),
}

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The file (or `<embedded quickstart>`).
    pub origin: String,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// The field path, e.g. `logs.sinks[0].batch.max_bytes`.
    pub field: String,
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigIssue {
    /// The issue, with any secret in the value its message quotes redacted.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        let message = crate::redact::text(&self.message);
        if self.field.is_empty() {
            write!(f, ": {message}")?;
        } else {
            write!(f, ": {}: {message}", self.field)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

fn render_issues(issues: &[ConfigIssue]) -> String {
    issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// Reads, interpolates, parses and validates the config file at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    use std::io::Read;
    let origin = path.display().to_string();
    let read_error = |source| ConfigError::Read { origin: origin.clone(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() > MAX_CONFIG_BYTES {
        let size = std::fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
        return Err(ConfigError::TooLarge { origin, bytes: size });
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is not UTF-8 text")))?;
    load_str(&text, &origin, &|name| std::env::var(name).ok())
}

/// The embedded quickstart config, validated.
pub fn load_quickstart() -> Result<Config, ConfigError> {
    load_str(QUICKSTART_YAML, "<embedded quickstart>", &|name| std::env::var(name).ok())
}

/// Interpolates, parses and validates config `text`; `origin` names it in errors and `env`
/// looks up environment variables.
pub fn load_str(text: &str, origin: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let interpolated = env::interpolate(text, env).map_err(|(line, column, message)| {
        ConfigError::Invalid(vec![ConfigIssue {
            origin: origin.to_owned(),
            position: Some((line, column)),
            field: String::new(),
            message,
            hint: Some("write ${NAME} or ${NAME:-default}; $$ is a literal $".to_owned()),
        }])
    })?;
    if text.len() > MAX_CONFIG_BYTES || interpolated.text.len() > MAX_CONFIG_BYTES {
        let bytes = text.len().max(interpolated.text.len()) as u64;
        return Err(ConfigError::TooLarge { origin: origin.to_owned(), bytes });
    }
    let raw = parse_yaml(&interpolated.text, origin)?;
    let mut config = validate::validate(raw, origin, env).map_err(ConfigError::Invalid)?;
    config.warnings.extend(interpolated.unset.iter().map(|name| {
        format!("{origin}: environment variable {name} is not set and has no default; using an empty value")
    }));
    Ok(config)
}

fn parse_yaml(text: &str, origin: &str) -> Result<raw::RawConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(raw::RawConfig::default());
    }
    let mut field = String::new();
    let parsed = serde_saphyr::with_deserializer_from_str(text, |deserializer| {
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            field = error.path().to_string();
            error.into_inner()
        })
    });
    // A document that is only comments deserializes as null; treat it as empty.
    let parsed: Option<raw::RawConfig> = match parsed {
        Ok(config) => config,
        Err(error) => return Err(ConfigError::Invalid(vec![yaml_issue(&error, &field, origin)])),
    };
    Ok(parsed.unwrap_or_default())
}

fn yaml_issue(error: &serde_saphyr::Error, field: &str, origin: &str) -> ConfigIssue {
    let full = error.without_snippet().to_string();
    // serde-saphyr appends " at line L, column C"; we print the position in front instead.
    let message = match full.rfind(" at line ") {
        Some(cut) => full[..cut].to_owned(),
        None => full.clone(),
    };
    let message = in_our_words(message);
    let position = error.location().map(|l| (l.line() as usize, l.column() as usize));
    let field = clean_field_path(field);
    let hint = hint_for(&message);
    ConfigIssue { origin: origin.to_owned(), position, field, message, hint }
}

/// The YAML library's messages that speak of its own API or print a Rust value, said for a
/// config's author instead.
fn in_our_words(message: String) -> String {
    if let Some(breach) = message.strip_prefix("budget breached: ") {
        // e.g. `Nodes { nodes: 250001 }`
        let what = breach.split_whitespace().next().unwrap_or("nodes").to_ascii_lowercase();
        let count: String = breach.chars().filter(char::is_ascii_digit).collect();
        return format!(
            "the YAML is too large or too deeply nested: {what} limit reached ({count}); a config needs far less"
        );
    }
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(", set ").next().unwrap_or(rest);
        return format!("duplicate key `{key}`: each key may appear once");
    }
    if message.starts_with("multiple YAML documents detected") {
        return "more than one YAML document (`---`): a config is one document".to_owned();
    }
    message
}

/// `serde_path_to_error` reports `.value` for the inside of a `Spanned`, and `?` for the root.
fn clean_field_path(path: &str) -> String {
    let cleaned = path.replace(".value", "");
    if cleaned == "?" || cleaned == "." { String::new() } else { cleaned }
}

fn hint_for(message: &str) -> Option<String> {
    if message.starts_with("unknown field") {
        Some("check the spelling and the indentation; design.md lists every key".to_owned())
    } else if message.starts_with("unknown variant") {
        Some("use one of the values listed".to_owned())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn issues(yaml: &str) -> Vec<ConfigIssue> {
        match load_str(yaml, "x.yaml", &no_env) {
            Ok(_) => panic!("expected an error for:\n{yaml}"),
            Err(ConfigError::Invalid(issues)) => issues,
            Err(other) => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn bad_size_names_file_line_column_and_path() {
        let yaml = "logs:\n  sinks:\n    - name: loki\n      type: loki\n      endpoint: http://loki:3100\n      batch:\n        max_bytes: 10 potatoes\n";
        let found = issues(yaml);
        assert_eq!(found.len(), 1);
        let text = found[0].to_string();
        assert!(text.starts_with("x.yaml:7:20: logs.sinks[0].batch.max_bytes: invalid size \"10 potatoes\""), "{text}");
    }

    #[test]
    fn empty_and_comment_only_configs_are_defaults() {
        let config = load_str("# nothing\n", "x.yaml", &no_env).expect("valid");
        assert!(config.logs.inputs.is_empty());
        assert_eq!(config.admin_listen.port(), 9901);
    }

    #[test]
    fn effective_config_redacts_every_secret() {
        let yaml = "logs:\n  sinks:\n    - name: l\n      type: loki\n      endpoint: https://u:pw-in-url@loki:3100\n      auth: { username: u, password: pw-456 }\n      headers: { X-Api-Key: key-789, X-Token: tok-123 }\n    - name: es\n      type: elasticsearch\n      endpoint: http://es:9200\n      auth: { api_key: ${ES_KEY} }\n";
        let env = |name: &str| (name == "ES_KEY").then(|| "apikey-000".to_owned());
        let config = load_str(yaml, "x.yaml", &env).expect("valid");
        let shown = &config.effective_yaml;
        for secret in ["pw-in-url", "tok-123", "pw-456", "key-789", "apikey-000"] {
            assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
        }
        assert!(shown.contains(REDACTED), "{shown}");
        assert!(shown.contains("loki:3100"), "{shown}");
    }

    #[test]
    fn errors_are_ours_not_the_yaml_librarys_and_quote_no_secret() {
        let many = format!("logs:\n  inputs:\n    - name: a\n      paths: [{}]\n", vec!["a"; 300_000].join(","));
        let text = issues(&many)[0].to_string();
        assert!(!text.contains('{') && text.contains("too large or too deeply nested"), "{text}");
        let text = issues("admin: {}\nadmin: {}\n")[0].to_string();
        assert!(!text.contains("DuplicateKeyPolicy") && text.contains("duplicate key `admin`"), "{text}");
        let text = issues("service: {}\n---\nservice: {}\n")[0].to_string();
        assert!(!text.contains("from_str_multiple"), "{text}");
        let yaml = "logs:\n  sinks:\n    - name: l\n      type: loki\n      endpoint: http://user:hunter2@loki:99999\n";
        let text = issues(yaml)[0].to_string();
        assert!(!text.contains("hunter2") && text.contains("<redacted>@loki:99999"), "{text}");
    }

    #[test]
    fn configs_over_4_mib_are_refused_before_parsing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.yaml");
        std::fs::write(&path, format!("service:\n  name: {}\n", "x".repeat(5 << 20))).expect("write");
        match load_file(&path) {
            Err(error @ ConfigError::TooLarge { .. }) => assert!(error.to_string().contains("4 MiB"), "{error}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let env = |_: &str| Some("y".repeat(5 << 20));
        assert!(matches!(load_str("service: { name: ${BIG} }\n", "x.yaml", &env), Err(ConfigError::TooLarge { .. })));
    }

    #[test]
    fn quickstart_is_valid() {
        load_quickstart().expect("embedded quickstart validates");
    }
}
