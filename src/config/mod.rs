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
pub const REDACTED: &str = "<redacted>";

/// The embedded default config: tails `fixtures/*.log`, records to stdout.
pub const QUICKSTART_YAML: &str = include_str!("../../config/quickstart.yaml");

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{origin}: cannot read config: {source}")]
    Read { origin: String, source: std::io::Error },
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
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)?;
        } else {
            write!(f, ": {}: {}", self.field, self.message)?;
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
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { origin: origin.clone(), source })?;
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
    let position = error.location().map(|l| (l.line() as usize, l.column() as usize));
    let field = clean_field_path(field);
    let hint = hint_for(&message);
    ConfigIssue { origin: origin.to_owned(), position, field, message, hint }
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
    fn quickstart_is_valid() {
        load_quickstart().expect("embedded quickstart validates");
    }
}
