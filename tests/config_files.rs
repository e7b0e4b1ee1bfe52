//! Every shipped config validates; broken configs exit 2 with file:line:column and the field
//! path, never a panic.

mod support;

use std::process::Command;

use support::BIN;

#[test]
fn every_file_in_config_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("config dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        pillion::config::load_file(&path).unwrap_or_else(|e| panic!("{} does not validate:\n{e}", path.display()));
        let output = Command::new(BIN).args(["validate", "--config"]).arg(&path).output().expect("run");
        assert!(output.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
        checked += 1;
    }
    assert!(checked >= 2, "expected quickstart.yaml and full.yaml at least");
}

#[test]
fn validate_without_config_checks_the_embedded_quickstart() {
    let output = Command::new(BIN).arg("validate").env_remove("PILLION_CONFIG").output().expect("run");
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
}

/// (name, yaml, expected "line:col: path: message" fragment)
const BROKEN: &[(&str, &str, &str)] = &[
    (
        "unknown nested key",
        "logs:\n  sinks:\n    - name: out\n      type: stdout\n      batch:\n        max_evnts: 5\n",
        ":6:9: logs.sinks[0].batch.max_evnts: unknown field `max_evnts`",
    ),
    (
        "bad size",
        "logs:\n  sinks:\n    - name: loki\n      type: loki\n      endpoint: http://loki:3100\n      batch: { max_bytes: 10 potatoes }\n",
        ":6:27: logs.sinks[0].batch.max_bytes: invalid size \"10 potatoes\"",
    ),
    ("bad duration", "shutdown_timeout: 5 parsecs\n", ":1:19: shutdown_timeout: invalid duration \"5 parsecs\""),
    (
        "bad regex",
        "logs:\n  transforms:\n    - redact: { fields: [message], patterns: ['(unclosed'] }\n",
        ":3:47: logs.transforms[0].redact.patterns[0]: invalid regex \"(unclosed\"",
    ),
    (
        "unknown sink type",
        "logs:\n  sinks:\n    - name: k\n      type: kafka\n",
        ":4:13: logs.sinks[0].type: unknown variant `kafka`",
    ),
    ("missing required field", "logs:\n  inputs:\n    - name: app\n", ":3:7: logs.inputs[0]: missing field `paths`"),
    (
        "missing endpoint",
        "logs:\n  sinks:\n    - name: es\n      type: elasticsearch\n",
        ":3:7: logs.sinks[0].endpoint: an elasticsearch sink needs `endpoint`",
    ),
    (
        "bad listen address",
        "admin:\n  listen: localhost\n",
        ":2:11: admin.listen: invalid listen address \"localhost\"",
    ),
    ("bad yaml", "logs: [\n", ":"),
    ("bad interpolation", "admin:\n  listen: ${NOPE\n", ":2:11: unterminated ${...}"),
    ("sample ratio out of range", "tracing:\n  sample_ratio: 2\n", ":2:17: tracing.sample_ratio: invalid ratio \"2\""),
];

#[test]
fn broken_configs_exit_2_with_location_and_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, yaml, expected) in BROKEN {
        let path = dir.path().join("broken.yaml");
        std::fs::write(&path, yaml).expect("write");
        for command in ["validate", "run"] {
            let output = Command::new(BIN).args([command, "--config"]).arg(&path).output().expect("run");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{name} ({command}): {stderr}");
            assert!(!stderr.contains("panicked"), "{name}: {stderr}");
            let want = format!("{}{expected}", path.display());
            assert!(stderr.contains(&want), "{name} ({command}):\nwanted {want:?}\n   got {stderr}");
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    let output = Command::new(BIN).arg("--no-such-flag").output().expect("run");
    assert_eq!(output.status.code(), Some(2));
    let output = Command::new(BIN).args(["validate", "--config", "/nonexistent/pillion.yaml"]).output().expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/pillion.yaml: cannot read config"));
}

#[test]
fn version_flag() {
    let output = Command::new(BIN).arg("--version").output().expect("run");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("pillion "));
}
