//! `pillion schema`: the JSON Schema the binary prints accepts every shipped config, rejects
//! what the loader rejects (unknown keys, wrong types, unknown sink types), and explains most
//! properties.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn schema() -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_pillion")).arg("schema").output().expect("run pillion schema");
    assert!(output.status.success(), "pillion schema failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("the schema is JSON")
}

fn validator() -> jsonschema::Validator {
    let schema = schema();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    jsonschema::draft202012::new(&schema).expect("a valid draft 2020-12 schema")
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str::<Option<Value>>(text).expect("YAML").unwrap_or(Value::Null)
}

fn errors(validator: &jsonschema::Validator, text: &str) -> Vec<String> {
    validator.iter_errors(&yaml(text)).map(|error| format!("{} at {}", error, error.instance_path())).collect()
}

#[test]
fn every_shipped_config_validates() {
    let validator = validator();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("config/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|ext| ext == "yaml") {
            let text = std::fs::read_to_string(&path).expect("read");
            let found = errors(&validator, &text);
            assert!(found.is_empty(), "{} does not validate against the schema: {found:#?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} configs found in {}", dir.display());
}

#[test]
fn rejects_what_the_loader_rejects() {
    let validator = validator();
    let bad = [
        ("unknown top-level key", "logz: {}\n"),
        ("unknown nested key", "logs:\n  inputs:\n    - { name: a, paths: [/x/*.log], fromat: json }\n"),
        ("wrong type", "logs:\n  inputs:\n    - { name: a, paths: /x/*.log }\n"),
        ("bad duration", "shutdown_timeout: 5 parsecs\n"),
        ("bad size", "logs:\n  inputs:\n    - { name: a, paths: [/x], max_line_bytes: 10 potatoes }\n"),
        ("unknown sink type", "logs:\n  sinks:\n    - { name: s, type: kafka }\n"),
        ("not a URL", "proxy:\n  inbound: { listen: ':1', upstream: 'app:8080' }\n"),
        ("negative count", "logs:\n  sinks:\n    - { name: s, type: stdout, batch: { max_events: -1 } }\n"),
    ];
    for (what, text) in bad {
        assert!(!errors(&validator, text).is_empty(), "{what}: accepted {text:?}");
    }
    let good = "logs:\n  inputs:\n    - { name: a, paths: [/x/*.log], max_line_bytes: 64KiB, multiline: { preset: java } }\n  sinks:\n    - { name: s, type: loki, endpoint: 'http://l:3100', batch: { timeout: 250ms, max_bytes: 1000 } }\n";
    assert_eq!(errors(&validator, good), Vec::<String>::new());
}

/// Counts the properties of every object schema, and those that carry a description.
fn count_described(schema: &Value, totals: &mut (usize, usize)) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Object(properties)) = map.get("properties") {
                for property in properties.values() {
                    totals.0 += 1;
                    if property.get("description").and_then(Value::as_str).is_some_and(|d| !d.trim().is_empty()) {
                        totals.1 += 1;
                    }
                }
            }
            map.values().for_each(|value| count_described(value, totals));
        }
        Value::Array(items) => items.iter().for_each(|value| count_described(value, totals)),
        _ => {}
    }
}

#[test]
fn most_properties_are_described() {
    let mut totals = (0, 0);
    count_described(&schema(), &mut totals);
    let (properties, described) = totals;
    assert!(properties > 60, "only {properties} properties: is the schema complete?");
    assert!(described * 100 >= properties * 80, "{described} of {properties} properties have a description");
}
