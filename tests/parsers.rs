//! Table-driven parser tests: every `fixtures/parsers/<parser>[.<variant>].log` is framed as
//! `pillion parse` frames it (lines, joined into multiline records by the parser's multiline
//! preset, or by the preset the variant names: `auto.java.log`), parsed with the parser of that
//! name and compared with `<parser>[.<variant>].expected.ndjson` (one Record JSON per record,
//! without `observed_timestamp`, `resource` and `source`, which do not depend on the line).
//! Lines are observed at 2026-11-25T12:00:05Z, in UTC.
//!
//! To regenerate the expectations after a deliberate change, run with `PILLION_BLESS=1` and
//! review the diff.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use pillion::frame::{Assembler, FrameSettings, MultilineRule, MultilineSettings};
use pillion::frame::{ContainerFormat, MultilinePreset};
use pillion::parse::{ParseOptions, Parser, Registry};
use pillion::record::Attributes;
use pillion::record::{Level, Value};

const OBSERVED: &str = "2026-11-25T12:00:05Z";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/parsers")
}

fn observed() -> Timestamp {
    OBSERVED.parse().expect("timestamp")
}

/// The line-dependent part of a record's JSON form.
fn normalized(parser: &Parser, line: &[u8]) -> (serde_json::Value, bool) {
    let parsed = parser.parse(line, observed(), &Arc::new(Vec::new()));
    let mut json = serde_json::to_value(&parsed.record).expect("serializes");
    if let serde_json::Value::Object(map) = &mut json {
        for key in ["observed_timestamp", "resource", "source"] {
            map.remove(key);
        }
    }
    (json, parsed.failed)
}

/// The records of `bytes`: its non-empty lines, joined by `multiline` when given.
fn records(bytes: &[u8], multiline: Option<MultilinePreset>) -> Vec<Vec<u8>> {
    let settings = FrameSettings {
        max_line_bytes: 256 * 1024,
        container: ContainerFormat::None,
        multiline: multiline.map(|preset| MultilineSettings {
            rule: Arc::new(MultilineRule::preset(preset)),
            max_lines: 500,
            timeout: std::time::Duration::MAX,
        }),
    };
    let mut assembler = Assembler::new(&settings);
    let mut out = Vec::new();
    assembler.push(bytes, 0, &mut |framed| out.push(framed.bytes.to_vec()));
    assembler.flush(bytes.len() as u64, &mut |framed| out.push(framed.bytes.to_vec()));
    out.retain(|record| !record.is_empty());
    out
}

fn preset(name: &str) -> Option<MultilinePreset> {
    match name {
        "java" => Some(MultilinePreset::Java),
        "python" => Some(MultilinePreset::Python),
        "go" => Some(MultilinePreset::Go),
        _ => None,
    }
}

#[test]
fn every_parser_matches_its_fixture() {
    let registry = Registry::builtin().expect("built-in parsers compile");
    let bless = std::env::var_os("PILLION_BLESS").is_some();
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(fixtures()).expect("fixtures/parsers") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let name = path.file_stem().and_then(|s| s.to_str()).expect("utf-8 name").to_owned();
        let (parser_name, variant) = name.split_once('.').unwrap_or((&name, ""));
        let parser =
            registry.parser(parser_name, ParseOptions::default()).unwrap_or_else(|| panic!("no parser {parser_name}"));
        let multiline = preset(variant).or(parser.multiline());
        let input = std::fs::read(&path).expect("fixture");
        let expected_path = path.with_extension("expected.ndjson");
        let actual: Vec<String> = records(&input, multiline)
            .iter()
            .map(|line| {
                let (mut json, failed) = normalized(&parser, line);
                if let serde_json::Value::Object(map) = &mut json {
                    map.insert("failed".into(), serde_json::Value::Bool(failed));
                }
                serde_json::to_string(&json).expect("json")
            })
            .collect();
        if bless {
            std::fs::write(&expected_path, actual.join("\n") + "\n").expect("write expectations");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} is missing: run with PILLION_BLESS=1", expected_path.display()));
        let expected: Vec<&str> = expected.lines().collect();
        assert_eq!(expected.len(), actual.len(), "{name}: line count");
        for (number, (want, got)) in expected.iter().zip(&actual).enumerate() {
            let want: serde_json::Value = serde_json::from_str(want).expect("expected json");
            let got: serde_json::Value = serde_json::from_str(got).expect("actual json");
            assert_eq!(want, got, "{name}.log line {}", number + 1);
        }
        checked.push(name);
    }
    if !bless {
        for name in
            ["nginx_access", "nginx_error", "apache_common", "apache_combined", "syslog_rfc3164", "syslog_rfc5424"]
        {
            assert!(checked.iter().any(|c| c == name), "no fixture for {name}");
        }
        for name in ["klog", "python", "java", "log4j", "postgresql", "redis", "json", "logfmt", "auto", "raw"] {
            assert!(checked.iter().any(|c| c == name), "no fixture for {name}");
        }
        let families =
            ["nginx", "apache", "syslog", "python_basic", "auto.sniff", "auto.java", "auto.python", "auto.go"];
        for name in families {
            assert!(checked.iter().any(|c| c == name), "no fixture for {name}");
        }
    }
}

fn parse(name: &str, line: &str) -> pillion::record::Record {
    let parser = Parser::by_name(name).expect("built-in");
    let parsed = parser.parse(line.as_bytes(), observed(), &Arc::new(Vec::new()));
    assert!(!parsed.failed, "{name} failed on {line}: {:?}", parsed.record.attributes.get("parse_error"));
    parsed.record
}

fn attrs(record: &pillion::record::Record) -> &Attributes {
    &record.attributes
}

/// A few edge cases spelled out, so that a reader need not decode the golden files.
#[test]
fn access_logs_ipv6_escaped_quotes_and_dashes() {
    let r = parse(
        "nginx_access",
        r#"2001:db8::1 - - [25/Nov/2026:13:00:02 +0100] "GET /a?b=1 HTTP/2.0" 503 - "-" "ua \"quoted\"""#,
    );
    assert_eq!(attrs(&r).get("client.address"), Some(&Value::from("2001:db8::1")));
    assert_eq!(attrs(&r).get("url.path"), Some(&Value::from("/a")));
    assert_eq!(attrs(&r).get("url.query"), Some(&Value::from("b=1")));
    assert_eq!(attrs(&r).get("http.response.status_code"), Some(&Value::from(503)));
    assert_eq!(attrs(&r).get("user_agent.original"), Some(&Value::from(r#"ua \"quoted\""#)));
    assert!(!attrs(&r).contains_key("http.response.body.size"), "`-` is absent");
    assert!(!attrs(&r).contains_key("user.name"));
    assert_eq!(r.level, Some(Level::Error));
    assert_eq!(format!("{:.0}", r.timestamp), "2026-11-25T12:00:02Z");
}

#[test]
fn syslog_levels_come_from_the_priority() {
    let r = parse("syslog_rfc5424", "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - hi");
    assert_eq!(r.level, Some(Level::Info));
    assert_eq!(attrs(&r).get("syslog.facility"), Some(&Value::from(20)));
    assert_eq!(attrs(&r).get("process.pid"), Some(&Value::from(8710)));
    assert_eq!(format!("{:.6}", r.timestamp), "2003-08-24T12:14:15.000003Z");
}

#[test]
fn an_input_time_zone_applies_to_times_without_offset() {
    let registry = Registry::builtin().expect("builtins");
    let zone = pillion::parse::timestamp::parse_zone("Europe/Paris").expect("zone");
    let parser = registry.parser("nginx_error", ParseOptions { zone, trace_pattern: None }).expect("parser");
    let r = parser.parse(b"2026/07/01 12:00:00 [error] 1#1: boom", observed(), &Arc::new(Vec::new())).record;
    assert_eq!(format!("{:.0}", r.timestamp), "2026-07-01T10:00:00Z");
}

#[test]
fn user_definitions_add_parsers() {
    let mut registry = Registry::builtin().expect("builtins");
    let yaml = r#"
parsers:
  - name: payments
    regex: '^(?P<time>\S+) (?P<level>\w+) order=(?P<order__id>\d+) amount=(?P<amount>[\d.]+) ok=(?P<ok>\w+) (?P<message>.*)$'
    time: { field: time, format: rfc3339 }
    types: { order.id: int, amount: float, ok: bool }
  - name: custom_json
    type: json
    time: { field: when, format: "%d/%m/%Y %H:%M" }
    level: { field: sev, map: { "5": error } }
    message: text
"#;
    registry.add_yaml(yaml, "user.yaml").expect("valid definitions");
    let parser = registry.parser("payments", ParseOptions::default()).expect("defined");
    let line = b"2026-11-25T12:00:00Z WARN order=42 amount=9.99 ok=false card declined";
    let r = parser.parse(line, observed(), &Arc::new(Vec::new())).record;
    assert_eq!(r.level, Some(Level::Warn));
    assert_eq!(r.message, "card declined");
    assert_eq!(attrs(&r).get("order.id"), Some(&Value::from(42)));
    assert_eq!(attrs(&r).get("amount"), Some(&Value::from(9.99)));
    assert_eq!(attrs(&r).get("ok"), Some(&Value::Bool(false)));
    let parser = registry.parser("custom_json", ParseOptions::default()).expect("defined");
    let line = br#"{"when":"25/11/2026 11:30","sev":5,"text":"custom keys","msg":"stays"}"#;
    let r = parser.parse(line, observed(), &Arc::new(Vec::new())).record;
    assert_eq!(r.level, Some(Level::Error));
    assert_eq!(r.message, "custom keys");
    assert_eq!(attrs(&r).get("msg"), Some(&Value::from("stays")));
    assert_eq!(format!("{:.0}", r.timestamp), "2026-11-25T11:30:00Z");
}

/// Property tests, one per parser: arbitrary bytes, and fixture lines with random bytes
/// overwritten, inserted or cut off, never panic and always yield a Record that serializes; a
/// failure keeps the raw line as the message and says why in `parse_error`. 256 cases each by
/// default; `PROPTEST_CASES=100000 cargo test --release --test parsers properties` runs longer.
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn fixture_lines(name: &str) -> Vec<Vec<u8>> {
        let bytes = std::fs::read(fixtures().join(format!("{name}.log"))).unwrap_or_default();
        records(&bytes, Parser::by_name(name).and_then(|p| p.multiline()))
    }

    fn check(name: &str, line: &[u8]) -> Result<(), TestCaseError> {
        let parser = Parser::by_name(name).expect("built-in");
        let parsed = parser.parse(line, observed(), &Arc::new(Vec::new()));
        let mut json = Vec::new();
        parsed.record.write_json_line(&mut json).expect("serializes");
        if parsed.failed {
            prop_assert!(parsed.record.attributes.get("parse_error").is_some_and(Value::is_string));
            prop_assert_eq!(&parsed.record.message, &String::from_utf8_lossy(line));
            prop_assert_eq!(parsed.record.timestamp, parsed.record.observed_timestamp);
        }
        Ok(())
    }

    /// A fixture line with `edits` applied: (position, byte, kind) overwrite, insert or cut.
    fn mutate(line: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut out = line.to_vec();
        for &(position, byte, kind) in edits {
            let at = if out.is_empty() { 0 } else { position % (out.len() + 1) };
            match kind % 4 {
                0 if at < out.len() => out[at] = byte,
                1 => out.insert(at, byte),
                2 => out.truncate(at),
                _ if at < out.len() => drop(out.remove(at)),
                _ => {}
            }
        }
        out
    }

    /// Text built from the pieces parsers look for (dates, syslog stamps, PRIs, key=value,
    /// JSON openings, klog headers), so that near misses reach the deeper code paths.
    fn near_miss() -> impl Strategy<Value = String> {
        let piece = r#"(\[?[0-9]{4}-[0-9]{2}-[0-9]{2}[ T\]]?[0-9:.,]{0,12}[Zé+-]?[0-9:]{0,5}|[A-Z][a-z]{2} [ 0-9][0-9] [0-9:.]{0,12}|<[0-9]{1,3}>[0-9]? |[a-z_.]{1,8}=("[^"]{0,8}"?)?|\{"[a-z]{1,5}":|[IWEF][0-9]{4} |[0-9/]{10} |\[[a-z]{3,5}\] )"#;
        let pattern = format!(r#"{piece}{{0,6}}[ -~é\\"]{{0,30}}"#);
        proptest::string::string_regex(&pattern).expect("valid strategy")
    }

    macro_rules! parser_properties {
        ($($name:ident),* $(,)?) => {$(
            proptest! {
                #[test]
                fn $name(
                    random in proptest::collection::vec(any::<u8>(), 0..400),
                    pick in any::<usize>(),
                    edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6),
                    near in near_miss(),
                ) {
                    let name = stringify!($name);
                    check(name, &random)?;
                    check(name, near.as_bytes())?;
                    let fixture = fixture_lines(name);
                    if !fixture.is_empty() {
                        check(name, &mutate(&fixture[pick % fixture.len()], &edits))?;
                    }
                }
            }
        )*};
    }

    parser_properties!(
        auto,
        json,
        logfmt,
        raw,
        nginx_access,
        nginx_error,
        apache_common,
        apache_combined,
        syslog_rfc3164,
        syslog_rfc5424,
        klog,
        python,
        python_asctime,
        java,
        log4j,
        postgresql,
        redis,
        nginx,
        apache,
        syslog,
        python_basic,
    );
}
