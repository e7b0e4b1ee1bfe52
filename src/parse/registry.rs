//! The parsers an input can name: the built-ins (auto, json, logfmt, raw, and the definitions
//! in `parsers/*.yaml`, compiled into the binary) plus the user's definition files.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use super::definition::{self, Body, DefinitionError};
use super::fields::FieldSpec;
use super::{ParseOptions, Parser, Spec};
use crate::frame::MultilinePreset;

/// The built-in definition files, as shipped in `parsers/`.
const BUILTIN_FILES: &[(&str, &str)] = &[
    ("parsers/nginx.yaml", include_str!("../../parsers/nginx.yaml")),
    ("parsers/apache.yaml", include_str!("../../parsers/apache.yaml")),
    ("parsers/syslog.yaml", include_str!("../../parsers/syslog.yaml")),
    ("parsers/klog.yaml", include_str!("../../parsers/klog.yaml")),
    ("parsers/python.yaml", include_str!("../../parsers/python.yaml")),
    ("parsers/java.yaml", include_str!("../../parsers/java.yaml")),
    ("parsers/postgresql.yaml", include_str!("../../parsers/postgresql.yaml")),
    ("parsers/redis.yaml", include_str!("../../parsers/redis.yaml")),
];

/// Compiled once per process; registries clone it cheaply (the parsers are shared).
static BUILTIN: LazyLock<Result<Registry, Vec<DefinitionError>>> = LazyLock::new(compile_builtins);

/// Named parsers.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    spec: Arc<Spec>,
    /// Where it was defined: `built-in` or a file.
    origin: Arc<str>,
    description: String,
    multiline: Option<MultilinePreset>,
}

/// One parser, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParserInfo {
    pub name: String,
    pub origin: String,
    pub description: String,
}

fn compile_builtins() -> Result<Registry, Vec<DefinitionError>> {
    let mut registry = Registry::default();
    let structured = [
        (
            "auto",
            Spec::Auto(FieldSpec::default()),
            "JSON objects, logfmt pairs, or raw text with its time and level sniffed",
        ),
        ("json", Spec::Json(FieldSpec::default()), "one JSON object per line"),
        ("logfmt", Spec::Logfmt(FieldSpec::default()), "key=value pairs"),
        ("raw", Spec::Raw, "the line as the message"),
    ];
    for (name, spec, description) in structured {
        let entry = Entry {
            spec: Arc::new(spec),
            origin: Arc::from("built-in"),
            description: description.to_owned(),
            multiline: None,
        };
        registry.entries.insert(name.to_owned(), entry);
    }
    for (origin, text) in BUILTIN_FILES {
        registry.add_yaml(text, origin)?;
    }
    Ok(registry)
}

impl Registry {
    /// The built-in parsers.
    pub fn builtin() -> Result<Registry, Vec<DefinitionError>> {
        BUILTIN.clone()
    }

    /// Adds the definitions in `text` (read from `origin`); a name already taken is an error.
    /// Returns how many parsers were added.
    pub fn add_yaml(&mut self, text: &str, origin: &str) -> Result<usize, Vec<DefinitionError>> {
        let compiled = definition::load(text, origin)?;
        let mut errors = Vec::new();
        let count = compiled.len();
        for (index, definition) in compiled.into_iter().enumerate() {
            let name = definition.name;
            let error = |field: &str, message: String| DefinitionError {
                origin: origin.to_owned(),
                position: None,
                field: format!("parsers[{index}].{field}"),
                message,
            };
            if let Some(existing) = self.entries.get(&name) {
                let message = format!("parser {name:?} is already defined ({}); choose another name", existing.origin);
                errors.push(error("name", message));
                continue;
            }
            let spec = match definition.body {
                Body::Spec(spec) => *spec,
                Body::AnyOf(members) => match self.family(&members) {
                    Ok(members) => Spec::AnyOf(members),
                    Err(message) => {
                        errors.push(error("any_of", message));
                        continue;
                    }
                },
            };
            let entry = Entry {
                spec: Arc::new(spec),
                origin: Arc::from(origin),
                description: definition.description,
                multiline: definition.multiline,
            };
            self.entries.insert(name, entry);
        }
        if errors.is_empty() { Ok(count) } else { Err(errors) }
    }

    /// The members of a family, which must be regex parsers already known.
    fn family(&self, members: &[String]) -> Result<Vec<Arc<Spec>>, String> {
        members
            .iter()
            .map(|member| match self.entries.get(member) {
                Some(entry) if matches!(*entry.spec, Spec::Regex(_)) => Ok(Arc::clone(&entry.spec)),
                Some(_) => Err(format!("{member:?} is not a regex parser; a family's members must be")),
                None => Err(format!("no parser {member:?} is defined before this one")),
            })
            .collect()
    }

    /// The parser called `name`, configured with `options`.
    pub fn parser(&self, name: &str, options: ParseOptions) -> Option<Parser> {
        let entry = self.entries.get(name)?;
        let parser = Parser::from_parts(Arc::from(name), Arc::clone(&entry.spec), Arc::new(options));
        Some(parser.with_multiline(entry.multiline))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Every parser name, sorted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Every parser with where it comes from and what it reads.
    pub fn list(&self) -> Vec<ParserInfo> {
        self.entries
            .iter()
            .map(|(name, entry)| ParserInfo {
                name: name.clone(),
                origin: entry.origin.to_string(),
                description: entry.description.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Value;

    #[test]
    fn builtins_compile_and_user_names_must_be_new() {
        let mut registry = Registry::builtin().expect("built-in parsers compile");
        for name in ["auto", "json", "logfmt", "raw", "nginx_access", "nginx_error", "apache_common", "apache_combined"]
        {
            assert!(registry.contains(name), "{name}");
        }
        for name in ["syslog_rfc3164", "syslog_rfc5424", "klog", "python", "java", "postgresql", "redis"] {
            assert!(registry.contains(name), "{name}");
        }
        for name in ["nginx", "apache", "syslog", "python", "python_basic", "python_asctime", "log4j"] {
            assert!(registry.contains(name), "{name}");
        }
        let multiline = |name: &str| registry.parser(name, ParseOptions::default()).and_then(|p| p.multiline());
        assert_eq!(multiline("java"), Some(MultilinePreset::Java));
        assert_eq!(multiline("python"), Some(MultilinePreset::Python));
        assert_eq!(multiline("nginx"), None);
        let clash = registry.add_yaml("parsers:\n  - name: json\n    type: json\n", "mine.yaml").expect_err("clash");
        assert!(clash[0].to_string().contains("\"json\" is already defined (built-in)"), "{clash:?}");
        registry.add_yaml("parsers:\n  - name: mine\n    regex: '(?P<message>.*)'\n", "mine.yaml").expect("added");
        assert!(registry.parser("mine", ParseOptions::default()).is_some());
    }

    #[test]
    fn families_name_regex_parsers_defined_before_them() {
        let mut registry = Registry::builtin().expect("built-in parsers compile");
        let yaml =
            "parsers:\n  - name: a\n    regex: '^a(?P<message>.*)'\n  - name: ab\n    any_of: [a, nginx_access]\n";
        registry.add_yaml(yaml, "mine.yaml").expect("added");
        let parser = registry.parser("ab", ParseOptions::default()).expect("family");
        let parsed = parser.parse(b"abc", jiff::Timestamp::UNIX_EPOCH, &Arc::new(Vec::new()));
        assert_eq!((parsed.failed, parsed.record.message.as_str()), (false, "bc"));
        let parsed = parser.parse(b"xyz", jiff::Timestamp::UNIX_EPOCH, &Arc::new(Vec::new()));
        assert_eq!(parsed.record.attributes.get("parse_error"), Some(&Value::from("line does not match parser ab")));
        let errors = |yaml: &str| {
            let errors = registry.clone().add_yaml(yaml, "f.yaml").expect_err("refused");
            errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        };
        let found = errors("parsers:\n  - name: c\n    any_of: [later]\n  - name: later\n    regex: '(?P<x>.)'\n");
        assert!(found.contains("parsers[0].any_of: no parser \"later\" is defined before this one"), "{found}");
        assert!(errors("parsers:\n  - name: c\n    any_of: [json]\n").contains("\"json\" is not a regex parser"));
        let found = errors("parsers:\n  - name: c\n    any_of: [a]\n    regex: '(?P<x>.)'\n");
        assert!(found.contains("parsers[0].regex: a family (`any_of`) takes only"), "{found}");
    }
}
