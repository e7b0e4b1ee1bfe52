//! Parser definitions: the YAML files in `parsers/` (compiled into the binary) and the user's
//! files named by `logs.parsers`, checked and compiled once at start-up. A file holds a list:
//!
//! ```yaml
//! parsers:
//!   - name: nginx_access                # what an input names in `format`
//!     regex: '^(?P<client__address>\S+) - (?P<user__name>\S+) \[(?P<time>[^\]]+)\] ...'
//!     time: { field: time, format: clf }  # auto | rfc3339 | epoch | clf | syslog | "%Y/%m/%d %H:%M:%S" (or a list)
//!     level: { field: status, from: http_status }   # from: name | syslog_priority | http_status; map: {LOG: info}
//!     message: message                  # the capture that is the message (default: the whole line)
//!     types: { http.response.status_code: int }     # int | float | bool | string
//!     skip_values: ["-"]                # captures with these values are left out
//!     split:                            # a capture read further by its own regex
//!       http__request__line: '^(?P<http__request__method>[A-Z]+) (?P<url__path>\S+) HTTP/(?P<v>.*)$'
//! ```
//!
//! A capture named `a__b` becomes the attribute `a.b` (regex group names cannot hold dots).
//! `type: json` or `type: logfmt` definitions take no regex: their `time`, `level`, `message`,
//! `trace_id` and `span_id` name the keys to prefer over the common ones. A family names
//! regex parsers defined before it (`any_of: [syslog_rfc5424, syslog_rfc3164]`): the first
//! that matches a line reads it. `multiline: java` names the multiline preset that joins the
//! format's records (an input without its own `multiline`, and `pillion parse`, frame with it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::Spec;
use super::fields::{FieldSpec, LevelFrom, LevelRule, Role, ValueType};
use super::pattern::{Capture, IdRegex, LevelCapture, RegexSpec, Split, TimeCapture};
use super::timestamp::{TimeFormat, check_strftime};
use crate::frame::MultilinePreset;
use crate::record::{AttributeName, Level};

/// A parser definition file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DefinitionError {
    /// The file (`parsers/nginx.yaml` for built-ins).
    pub origin: String,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// Where in the file, e.g. `parsers[2].regex`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionFile {
    /// The parser definitions in this file.
    parsers: Vec<Spanned<Definition>>,
}

/// One parser definition, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// The name inputs use in `format`: letters, digits, `_`, `-`, `.`.
    pub name: String,
    /// What the parser reads, for people.
    #[serde(default)]
    pub description: String,
    /// regex (the default), json or logfmt.
    #[serde(default, rename = "type")]
    pub kind: DefinitionKind,
    /// The pattern, with named captures; matched against the line's bytes.
    #[serde(default)]
    pub regex: Option<Spanned<String>>,
    /// The capture (or key) holding the time, and its format(s).
    #[serde(default)]
    pub time: Option<TimeDefinition>,
    /// The capture (or key) holding the level, and how to read it.
    #[serde(default)]
    pub level: Option<LevelDefinition>,
    /// The capture (or key) that is the message. Default: `message` when the regex has it,
    /// else the whole line.
    #[serde(default)]
    pub message: Option<String>,
    /// The capture (or key) holding a trace id (32 hex digits).
    #[serde(default)]
    pub trace_id: Option<String>,
    /// The capture (or key) holding a span id (16 hex digits).
    #[serde(default)]
    pub span_id: Option<String>,
    /// The capture (or key) holding a W3C traceparent.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// Type conversions by attribute name: string, int, float, bool.
    #[serde(default)]
    pub types: BTreeMap<String, ValueType>,
    /// Capture values that mean "absent"; default `["-"]`.
    #[serde(default = "default_skip_values")]
    pub skip_values: Vec<String>,
    /// Captures read further by their own regex, by capture name: when the second regex
    /// matches, its named captures replace the capture; otherwise the capture is kept whole.
    /// Splitting a field apart in a second step keeps the main regex simple and fast.
    #[serde(default)]
    pub split: BTreeMap<String, String>,
    /// A family instead of a regex: the names of regex parsers (built-in, or defined earlier),
    /// tried in order; the first that matches reads the line.
    #[serde(default)]
    pub any_of: Vec<String>,
    /// The multiline preset (java, python, go) that joins this format's records: inputs with
    /// this format and no `multiline` of their own frame with it, and so does `pillion parse`.
    #[serde(default)]
    pub multiline: Option<MultilinePreset>,
}

/// A checked definition: what the registry keeps.
#[derive(Debug)]
pub struct Compiled {
    pub name: String,
    pub description: String,
    pub body: Body,
    pub multiline: Option<MultilinePreset>,
}

/// A compiled parser, or a family whose members the registry resolves.
#[derive(Debug)]
pub enum Body {
    Spec(Box<Spec>),
    AnyOf(Vec<String>),
}

fn default_skip_values() -> Vec<String> {
    vec!["-".to_owned()]
}

/// What kind of parser a definition describes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefinitionKind {
    #[default]
    Regex,
    Json,
    Logfmt,
}

/// `time: { field: ts, format: clf }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeDefinition {
    pub field: String,
    /// One format or a list tried in order; default `auto`.
    #[serde(default)]
    pub format: Formats,
    /// A capture holding the time zone (`UTC`, `+0200`, an IANA name) for times without offset.
    #[serde(default)]
    pub zone_field: Option<String>,
}

/// One time format or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Formats {
    One(String),
    Many(Vec<String>),
}

impl Default for Formats {
    fn default() -> Formats {
        Formats::One("auto".to_owned())
    }
}

/// `level: { field: lvl, map: { LOG: info } }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelDefinition {
    pub field: String,
    /// name (default), syslog_priority or http_status.
    #[serde(default)]
    pub from: LevelFrom,
    /// Exact values and the level each stands for, checked first.
    #[serde(default)]
    pub map: BTreeMap<String, Level>,
}

/// Reads a definition file; every definition in it is checked, and all problems reported.
pub fn load(text: &str, origin: &str) -> Result<Vec<Compiled>, Vec<DefinitionError>> {
    let file: DefinitionFile = serde_saphyr::from_str(text).map_err(|error| vec![yaml_error(&error, origin)])?;
    let mut compiled = Vec::new();
    let mut errors = Vec::new();
    for (index, spanned) in file.parsers.iter().enumerate() {
        let definition = &spanned.value;
        let here = |field: &str, message: String, span: Option<&serde_saphyr::Location>| DefinitionError {
            origin: origin.to_owned(),
            position: Some(span.unwrap_or(&spanned.referenced)).map(|l| (l.line() as usize, l.column() as usize)),
            field: if field.is_empty() { format!("parsers[{index}]") } else { format!("parsers[{index}].{field}") },
            message,
        };
        let body = if definition.any_of.is_empty() {
            compile(definition).map(|spec| Body::Spec(Box::new(spec)))
        } else {
            family(definition).map(Body::AnyOf)
        };
        match body {
            Ok(body) => compiled.push(Compiled {
                name: definition.name.clone(),
                description: definition.description.clone(),
                body,
                multiline: definition.multiline,
            }),
            Err((field, message)) => {
                let span = (field == "regex").then(|| definition.regex.as_ref().map(|r| &r.referenced)).flatten();
                errors.push(here(field, message, span));
            }
        }
    }
    if errors.is_empty() { Ok(compiled) } else { Err(errors) }
}

fn yaml_error(error: &serde_saphyr::Error, origin: &str) -> DefinitionError {
    let full = error.without_snippet().to_string();
    let message = match full.rfind(" at line ") {
        Some(cut) => full[..cut].to_owned(),
        None => full.clone(),
    };
    DefinitionError {
        origin: origin.to_owned(),
        position: error.location().map(|l| (l.line() as usize, l.column() as usize)),
        field: String::new(),
        message,
    }
}

/// The field that is wrong and what is wrong with it.
type Problem = (&'static str, String);

/// Checks and compiles one definition.
pub fn compile(definition: &Definition) -> Result<Spec, Problem> {
    check_name(&definition.name)?;
    let formats = time_formats(definition)?;
    let level_rule = definition
        .level
        .as_ref()
        .map(|level| LevelRule { map: level.map.iter().map(|(k, v)| (k.clone(), *v)).collect(), from: level.from });
    match definition.kind {
        DefinitionKind::Regex => compile_regex(definition, formats, level_rule).map(Spec::Regex),
        DefinitionKind::Json | DefinitionKind::Logfmt => {
            if definition.regex.is_some() {
                return Err(("regex", "a json or logfmt parser takes no regex".to_owned()));
            }
            let spec = field_spec(definition, formats, level_rule)?;
            Ok(if definition.kind == DefinitionKind::Json { Spec::Json(spec) } else { Spec::Logfmt(spec) })
        }
    }
}

/// A family: a name and members, nothing else.
fn family(definition: &Definition) -> Result<Vec<String>, Problem> {
    check_name(&definition.name)?;
    let extra = [
        (definition.regex.is_some(), "regex"),
        (definition.time.is_some(), "time"),
        (definition.level.is_some(), "level"),
        (definition.message.is_some(), "message"),
        (!definition.split.is_empty(), "split"),
        (!definition.types.is_empty(), "types"),
        (definition.kind != DefinitionKind::Regex, "type"),
    ];
    if let Some((_, field)) = extra.iter().find(|(given, _)| *given) {
        return Err((*field, "a family (`any_of`) takes only a name, a description and multiline".to_owned()));
    }
    Ok(definition.any_of.clone())
}

fn check_name(name: &str) -> Result<(), Problem> {
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(("name", format!("invalid parser name {name:?}: use letters, digits, `_`, `-` and `.`")))
    }
}

fn time_formats(definition: &Definition) -> Result<Vec<TimeFormat>, Problem> {
    let Some(time) = &definition.time else {
        return Ok(Vec::new());
    };
    let texts = match &time.format {
        Formats::One(one) => vec![one.as_str()],
        Formats::Many(many) => many.iter().map(String::as_str).collect(),
    };
    if texts.is_empty() {
        return Err(("time.format", "give at least one time format".to_owned()));
    }
    let mut formats = Vec::with_capacity(texts.len());
    for text in texts {
        let format = TimeFormat::from_name(text).map_err(|e| ("time.format", e))?;
        if let TimeFormat::Strftime(strftime) = &format {
            check_strftime(strftime).map_err(|e| ("time.format", e))?;
        }
        formats.push(format);
    }
    Ok(formats)
}

/// A json or logfmt definition: preferred key names ahead of the common ones.
fn field_spec(
    definition: &Definition,
    formats: Vec<TimeFormat>,
    level: Option<LevelRule>,
) -> Result<FieldSpec, Problem> {
    if formats.len() > 1 {
        return Err(("time.format", "a json or logfmt parser takes one time format".to_owned()));
    }
    let mut spec = FieldSpec {
        time_format: formats.into_iter().next().unwrap_or_default(),
        level: level.unwrap_or_default(),
        types: definition.types.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        ..FieldSpec::default()
    };
    let preferred = [
        (Role::Time, definition.time.as_ref().map(|t| &t.field)),
        (Role::Level, definition.level.as_ref().map(|l| &l.field)),
        (Role::Message, definition.message.as_ref()),
        (Role::TraceId, definition.trace_id.as_ref()),
        (Role::SpanId, definition.span_id.as_ref()),
        (Role::TraceParent, definition.traceparent.as_ref()),
    ];
    for (role, name) in preferred {
        if let Some(name) = name {
            spec.names.prefer(role, name);
        }
    }
    Ok(spec)
}

fn compile_regex(
    definition: &Definition,
    formats: Vec<TimeFormat>,
    level: Option<LevelRule>,
) -> Result<RegexSpec, Problem> {
    let Some(source) = &definition.regex else {
        return Err(("regex", "a regex parser needs `regex` (or set `type: json` or `type: logfmt`)".to_owned()));
    };
    let regex = regex::bytes::RegexBuilder::new(&source.value)
        .build()
        .map_err(|e| ("regex", format!("invalid regex: {}", regex_error(&e))))?;
    let groups: Vec<(usize, &str)> =
        regex.capture_names().enumerate().filter_map(|(index, name)| name.map(|name| (index, name))).collect();
    if groups.is_empty() {
        return Err(("regex", "the regex has no named captures such as (?P<message>.*)".to_owned()));
    }
    let find = |field: &'static str, wanted: &str| {
        groups
            .iter()
            .find(|(_, name)| *name == wanted || attribute_name(name) == wanted)
            .map(|(index, _)| *index)
            .ok_or_else(|| (field, format!("the regex has no capture named {wanted:?}")))
    };
    let optional = |field: &'static str, wanted: Option<&String>, default: &str| match wanted {
        Some(wanted) => find(field, wanted).map(Some),
        None => Ok(groups.iter().find(|(_, name)| *name == default).map(|(index, _)| *index)),
    };
    let time = match &definition.time {
        Some(time) => Some(TimeCapture {
            group: find("time.field", &time.field)?,
            formats,
            zone_group: time.zone_field.as_ref().map(|zone| find("time.zone_field", zone)).transpose()?,
            name: attribute_name(&time.field),
        }),
        None => None,
    };
    let level = match (&definition.level, level) {
        (Some(definition), Some(rule)) => Some(LevelCapture {
            group: find("level.field", &definition.field)?,
            rule,
            name: attribute_name(&definition.field),
        }),
        _ => groups.iter().find(|(_, name)| *name == "level").map(|(index, _)| LevelCapture {
            group: *index,
            rule: LevelRule::default(),
            name: "level".to_owned(),
        }),
    };
    let message = optional("message", definition.message.as_ref(), "message")?;
    let trace_id = optional("trace_id", definition.trace_id.as_ref(), "trace_id")?;
    let span_id = optional("span_id", definition.span_id.as_ref(), "span_id")?;
    let traceparent = optional("traceparent", definition.traceparent.as_ref(), "traceparent")?;
    // Groups with a role are not attributes, except an HTTP status that also sets the level.
    let mut taken: Vec<usize> = [message, trace_id, span_id, traceparent].into_iter().flatten().collect();
    taken.extend(time.iter().flat_map(|t| std::iter::once(t.group).chain(t.zone_group)));
    taken.extend(level.iter().filter(|l| l.rule.from != LevelFrom::HttpStatus).map(|l| l.group));
    let capture = |index: usize, name: &str| {
        let name = attribute_name(name);
        let kind = definition.types.get(&name).copied().unwrap_or(ValueType::String);
        Capture { group: index, name: intern(&name), kind }
    };
    let mut splits = Vec::new();
    for (field, pattern) in &definition.split {
        let group = find("split", field)?;
        taken.push(group);
        let regex = regex::bytes::Regex::new(pattern)
            .map_err(|e| ("split", format!("invalid regex for {field:?}: {}", regex_error(&e))))?;
        let attributes = regex
            .capture_names()
            .enumerate()
            .filter_map(|(index, name)| name.map(|name| capture(index, name)))
            .collect();
        splits.push(Split { capture: capture(group, field), regex: IdRegex::new(regex), attributes });
    }
    let attributes: Vec<Capture> =
        groups.iter().filter(|(index, _)| !taken.contains(index)).map(|(index, name)| capture(*index, name)).collect();
    let captured = |key: &String| {
        attributes
            .iter()
            .chain(splits.iter().flat_map(|s| s.attributes.iter().chain([&s.capture])))
            .any(|c| c.name == key.as_str())
    };
    if let Some(unknown) = definition.types.keys().find(|key| !captured(key)) {
        return Err(("types", format!("{unknown:?} is not an attribute this regex captures")));
    }
    Ok(RegexSpec {
        regex: IdRegex::new(regex),
        attributes,
        time,
        level,
        message,
        trace_id,
        span_id,
        traceparent,
        skip_values: definition.skip_values.iter().map(|v| v.as_bytes().to_vec()).collect(),
        splits,
    })
}

/// The useful line of a regex error (`unclosed group`), without the caret diagram.
fn regex_error(error: &regex::Error) -> String {
    let text = error.to_string();
    let last = text.lines().map(str::trim).rfind(|line| !line.is_empty()).unwrap_or(&text);
    last.trim_start_matches("error: ").to_owned()
}

/// An attribute name that every record of a parser carries, made once: names longer than a
/// `CompactString` holds inline (`http.request.header.referer`) are kept for the life of the
/// process and shared, so that a record's name costs no allocation. Bounded by the distinct
/// names of the definitions loaded.
fn intern(name: &str) -> AttributeName {
    static NAMES: std::sync::Mutex<BTreeSet<&'static str>> = std::sync::Mutex::new(BTreeSet::new());
    if name.len() <= std::mem::size_of::<AttributeName>() {
        return AttributeName::new(name);
    }
    let mut names = NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let kept = match names.get(name) {
        Some(kept) => *kept,
        None => {
            let kept: &'static str = Box::leak(name.to_owned().into_boxed_str());
            names.insert(kept);
            kept
        }
    };
    AttributeName::const_new(kept)
}

/// `client__address` → `client.address`.
fn attribute_name(group: &str) -> String {
    group.replace("__", ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        match load(yaml, "p.yaml") {
            Ok(_) => panic!("expected errors for {yaml}"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn problems_name_the_file_position_and_field() {
        let found = errors("parsers:\n  - name: x\n    regex: '(?P<message>'\n");
        assert!(found[0].starts_with("p.yaml:3:12: parsers[0].regex: invalid regex"), "{found:?}");
        let found = errors("parsers:\n  - name: x\n    regex: '(?P<msg>.*)'\n    time: { field: ts }\n");
        assert_eq!(found, ["p.yaml:2:5: parsers[0].time.field: the regex has no capture named \"ts\""]);
        let found = errors("parsers:\n  - name: x\n    regexp: '.*'\n");
        assert!(found[0].starts_with("p.yaml:3:5: unknown field `regexp`"), "{found:?}");
        let found = errors("parsers:\n  - name: 'bad name'\n    regex: '(?P<a>.)'\n");
        assert!(found[0].contains("parsers[0].name: invalid parser name"), "{found:?}");
        let found = errors("parsers:\n  - name: x\n    regex: '(?P<a>.)'\n    types: { b: int }\n");
        assert!(found[0].contains("\"b\" is not an attribute"), "{found:?}");
        let found = errors("parsers:\n  - name: x\n    regex: '(?P<a>.)'\n    time: { field: a, format: yyyy }\n");
        assert!(found[0].contains("unknown time format"), "{found:?}");
    }

    #[test]
    fn dotted_attribute_names_and_roles() {
        let yaml = "parsers:\n  - name: x\n    regex: '^(?P<client__address>\\S+) (?P<level>\\w+) (?P<message>.*)$'\n";
        let compiled = load(yaml, "p.yaml").expect("valid");
        let Body::Spec(spec) = &compiled[0].body else { panic!("spec") };
        let Spec::Regex(spec) = &**spec else { panic!("regex") };
        assert_eq!(spec.attributes.len(), 1);
        assert_eq!(spec.attributes[0].name, "client.address");
        let long = intern("http.request.header.referer");
        assert!(long.as_static_str().is_some(), "shared, not allocated per record");
        assert_eq!(long.clone().as_static_str(), long.as_static_str());
        assert!(spec.level.is_some() && spec.message.is_some());
    }
}
