//! Transforms applied to every record, in config order: `drop`, `rename`, `add`, `remove`,
//! `redact` and `sample`. A field name is `message`, `level`, `trace_id`, `span_id`, or an
//! attribute name.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use regex::Regex;

pub mod settings;

use crate::record::{Level, Record, Value};
pub use settings::{BuiltinRedaction, TransformConfig};

/// The compiled transform chain.
#[derive(Debug, Default)]
pub struct Transforms {
    steps: Vec<Step>,
}

#[derive(Debug)]
enum Step {
    Drop { equal: Vec<(String, String)>, matching: Vec<(String, Regex)> },
    Rename(Vec<(String, String)>),
    Add(Vec<(String, Value)>),
    Remove(Vec<String>),
    Redact { fields: Vec<String>, patterns: Vec<Regex>, mask: String },
    Sample { level: Option<Level>, rate: u64, seen: AtomicU64 },
}

/// A built-in redaction pattern failed to compile (a bug, reported rather than panicking).
#[derive(Debug, thiserror::Error)]
#[error("built-in redaction pattern {name} is invalid: {source}")]
pub struct TransformError {
    name: &'static str,
    source: regex::Error,
}

fn builtin_pattern(kind: BuiltinRedaction) -> Result<Regex, TransformError> {
    let (name, pattern) = match kind {
        BuiltinRedaction::BearerToken => ("bearer_token", r"(?i)\bbearer\s+[a-z0-9._~+/=-]+"),
        BuiltinRedaction::CreditCard => ("credit_card", r"\b(?:\d[ -]?){12,18}\d\b"),
        BuiltinRedaction::Email => ("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    };
    Regex::new(pattern).map_err(|source| TransformError { name, source })
}

impl Transforms {
    /// Compiles the configured chain.
    pub fn new(configs: &[TransformConfig]) -> Result<Transforms, TransformError> {
        let mut steps = Vec::with_capacity(configs.len());
        for config in configs {
            steps.push(match config {
                TransformConfig::Drop(drop) => Step::Drop {
                    equal: drop.when.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect(),
                    matching: drop.matches.iter().map(|(k, p)| (k.clone(), p.regex().clone())).collect(),
                },
                TransformConfig::Rename(map) => {
                    Step::Rename(map.fields.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
                }
                TransformConfig::Add(map) => {
                    Step::Add(map.fields.iter().map(|(k, v)| (k.clone(), Value::from(v.0.clone()))).collect())
                }
                TransformConfig::Remove(list) => Step::Remove(list.fields.clone()),
                TransformConfig::Redact(redact) => {
                    let mut patterns: Vec<Regex> = redact.patterns.iter().map(|p| p.regex().clone()).collect();
                    for builtin in &redact.builtin {
                        patterns.push(builtin_pattern(*builtin)?);
                    }
                    Step::Redact { fields: redact.fields.clone(), patterns, mask: redact.mask.clone() }
                }
                TransformConfig::Sample(sample) => {
                    Step::Sample { level: sample.level, rate: sample.rate.get(), seen: AtomicU64::new(0) }
                }
            });
        }
        Ok(Transforms { steps })
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Applies the chain; `false` when the record is dropped.
    pub fn apply(&self, record: &mut Record) -> bool {
        self.steps.iter().all(|step| step.apply(record))
    }
}

impl Step {
    fn apply(&self, record: &mut Record) -> bool {
        match self {
            Step::Drop { equal, matching } => {
                let equal_hit = equal.iter().all(|(field, want)| field_text(record, field).is_some_and(|v| v == *want));
                let regex_hit =
                    matching.iter().all(|(field, re)| field_text(record, field).is_some_and(|v| re.is_match(&v)));
                !(equal_hit && regex_hit && !(equal.is_empty() && matching.is_empty()))
            }
            Step::Rename(pairs) => {
                for (from, to) in pairs {
                    if let Some(value) = record.attributes.remove(from) {
                        record.attributes.insert(to.as_str(), value);
                    }
                }
                true
            }
            Step::Add(pairs) => {
                for (key, value) in pairs {
                    record.attributes.insert(key.as_str(), value.clone());
                }
                true
            }
            Step::Remove(keys) => {
                for key in keys {
                    record.attributes.remove(key);
                }
                true
            }
            Step::Redact { fields, patterns, mask } => {
                for field in fields {
                    redact_field(record, field, patterns, mask);
                }
                true
            }
            Step::Sample { level, rate, seen } => {
                if level.is_some() && record.level != *level {
                    return true;
                }
                seen.fetch_add(1, Ordering::Relaxed) % rate == 0
            }
        }
    }
}

fn field_text<'a>(record: &'a Record, field: &str) -> Option<Cow<'a, str>> {
    match field {
        "message" => Some(Cow::Borrowed(&record.message)),
        "level" => record.level.map(|l| Cow::Borrowed(l.as_str())),
        "trace_id" => record.trace_id.map(|t| Cow::Owned(t.to_string())),
        "span_id" => record.span_id.map(|s| Cow::Owned(s.to_string())),
        name => match record.attributes.get(name)? {
            Value::String(s) => Some(Cow::Borrowed(s)),
            Value::Null => None,
            other => Some(Cow::Owned(other.to_string())),
        },
    }
}

fn redact_field(record: &mut Record, field: &str, patterns: &[Regex], mask: &str) {
    match field {
        "message" => redact_text(&mut record.message, patterns, mask),
        name => {
            if let Some(Value::String(text)) = record.attributes.get_mut(name) {
                redact_text(text, patterns, mask);
            }
        }
    }
}

fn redact_text<T: std::ops::Deref<Target = str> + From<String>>(text: &mut T, patterns: &[Regex], mask: &str) {
    for pattern in patterns {
        if let Cow::Owned(replaced) = pattern.replace_all(text, regex::NoExpand(mask)) {
            *text = T::from(replaced);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn chain(yaml: &str) -> Transforms {
        let config = crate::config::load_str(yaml, "x.yaml", &|_| None).expect("valid config");
        Arc::into_inner(config.logs.transforms).expect("one owner")
    }

    fn record(message: &str, level: Option<Level>) -> Record {
        let mut record = Record::new(message.to_owned(), jiff::Timestamp::UNIX_EPOCH, Arc::new(Vec::new()));
        record.level = level;
        record
    }

    #[test]
    fn drop_rename_add_remove() {
        let t = chain(
            "logs:\n  transforms:\n    - drop: { when: { level: debug } }\n    - rename: { fields: { usr: user } }\n    - add: { fields: { team: pay } }\n    - remove: { fields: [secret] }\n",
        );
        assert!(!t.apply(&mut record("x", Some(Level::Debug))));
        let mut r = record("x", Some(Level::Info));
        r.attributes.insert("usr", "u1".into());
        r.attributes.insert("secret", "s".into());
        assert!(t.apply(&mut r));
        assert_eq!(r.attributes.get("user"), Some(&Value::from("u1")));
        assert_eq!(r.attributes.get("team"), Some(&Value::from("pay")));
        assert!(!r.attributes.contains_key("secret") && !r.attributes.contains_key("usr"));
    }

    #[test]
    fn redact_patterns_and_builtins() {
        let t = chain(
            "logs:\n  transforms:\n    - redact: { fields: [message], patterns: ['(?i)bearer [a-z0-9._-]+'], builtin: [email, credit_card] }\n",
        );
        let mut r = record("auth Bearer abc.def user a@b.io card 4111 1111 1111 1111", None);
        assert!(t.apply(&mut r));
        assert_eq!(r.message, "auth [REDACTED] user [REDACTED] card [REDACTED]");
    }

    #[test]
    fn drop_by_regex_and_values_together() {
        let t = chain(
            "logs:\n  transforms:\n    - drop: { when: { service: web }, matches: { message: '^GET /healthz', status: '^2' } }\n",
        );
        let mut health = record("GET /healthz 200", Some(Level::Info));
        health.attributes.insert("service", "web".into());
        health.attributes.insert("status", 200.into());
        assert!(!t.apply(&mut health.clone()), "all conditions hold: dropped");
        health.attributes.insert("status", 503.into());
        assert!(t.apply(&mut health), "a failing health check is kept");
        assert!(t.apply(&mut record("GET /healthz 200", None)), "no service attribute: kept");
    }

    #[test]
    fn redact_attributes_and_ignore_non_strings() {
        let t = chain(
            "logs:\n  transforms:\n    - redact: { fields: [auth, count], builtin: [bearer_token], mask: '***' }\n",
        );
        let mut r = record("x", None);
        r.attributes.insert("auth", "Bearer eyJhbGciOi.x-y_z".into());
        r.attributes.insert("count", 4111.into());
        assert!(t.apply(&mut r));
        assert_eq!(r.attributes.get("auth"), Some(&Value::from("***")));
        assert_eq!(r.attributes.get("count"), Some(&Value::from(4111)));
    }

    #[test]
    fn transforms_apply_in_order() {
        let t = chain(
            "logs:\n  transforms:\n    - rename: { fields: { usr: user } }\n    - drop: { when: { user: bot } }\n",
        );
        let mut r = record("x", None);
        r.attributes.insert("usr", "bot".into());
        assert!(!t.apply(&mut r), "the drop sees the renamed field");
    }

    #[test]
    fn sample_keeps_one_in_n_of_a_level() {
        let t = chain("logs:\n  transforms:\n    - sample: { level: debug, rate: 3 }\n");
        let kept = (0..9).filter(|_| t.apply(&mut record("x", Some(Level::Debug)))).count();
        assert_eq!(kept, 3);
        assert!(t.apply(&mut record("x", Some(Level::Error))));
    }
}
