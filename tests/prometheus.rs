//! The operating kit under deploy/ against the real Prometheus tools: the alert rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`). CI installs Debian's
//! prometheus package (promtool and the server), so there these tests must run: they only skip
//! when the tools are absent and CI is not set.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{Pillion, http_get, write_config};

fn tool_available(name: &str) -> bool {
    let available = Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success());
    if !available {
        assert!(std::env::var_os("CI").is_none(), "{name} is required in CI (.ci/run installs prometheus)");
        eprintln!("skipping: {name} not installed (apt-get install prometheus)");
    }
    available
}

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

fn promtool(args: &[&str], file: &Path) -> String {
    let output = Command::new("promtool")
        .args(args)
        .arg(file)
        .current_dir(file.parent().expect("a file in a directory"))
        .output()
        .expect("run promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {} {} failed:\n{text}", args.join(" "), file.display());
    text
}

#[test]
fn alert_rules_pass_promtool_check() {
    if !tool_available("promtool") {
        return;
    }
    let text = promtool(&["check", "rules"], &deploy("prometheus/alerts.yaml"));
    assert!(text.contains("SUCCESS: 9 rules found"), "{text}");
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    if !tool_available("promtool") {
        return;
    }
    let text = promtool(&["test", "rules"], &deploy("prometheus/alerts_test.yaml"));
    assert!(text.contains("SUCCESS"), "{text}");
}

/// Every alert has a firing and a silent case in alerts_test.yaml, and a runbook in the README.
#[test]
fn every_alert_is_tested_and_has_a_runbook() {
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yaml")).expect("alerts.yaml");
    let tests = std::fs::read_to_string(deploy("prometheus/alerts_test.yaml")).expect("alerts_test.yaml");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let alerts: Vec<&str> = rules.lines().filter_map(|line| line.trim().strip_prefix("- alert: ")).collect();
    assert_eq!(alerts.len(), 9, "{alerts:?}");
    for alert in alerts {
        let evaluations = tests.matches(&format!("alertname: {alert}\n")).count();
        assert!(evaluations >= 2, "{alert}: {evaluations} evaluations in alerts_test.yaml, want firing and silent");
        let firing = tests.matches(&format!("alertname: {alert}\n        exp_alerts:")).count();
        assert!(firing >= 1 && evaluations > firing, "{alert}: want firing and silent evaluations");
        assert!(readme.contains(&format!("#### {alert}")), "{alert}: no runbook in README.md");
    }
}

/// Every family whose label values the config fixes is exported at 0 from start-up, before any
/// file exists or any record was sent: a panel or an alert (lost bytes, dead letters...) sees
/// the series before anything has gone wrong.
#[test]
fn series_exist_before_their_first_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "admin: { listen: \"127.0.0.1:0\" }\nlogs:\n  inputs: [{ name: app, paths: [\"logs/*.log\"], format: logfmt }]\n  sinks:\n    - { name: out, type: file, path: out.ndjson }\n    - { name: loki, type: loki, endpoint: \"http://127.0.0.1:9\" }\n",
    );
    let mut pillion = Pillion::start(dir.path(), &config);
    let admin = pillion.admin_address();
    let (_, _, body) = http_get(admin, "/metrics", &[]);
    let mut missing = Vec::new();
    for family in [
        "pillion_input_files",
        "pillion_input_bytes_total",
        "pillion_input_lines_total",
        "pillion_input_lag_bytes",
        "pillion_input_lines_truncated_total",
        "pillion_input_truncations_total",
        "pillion_input_rotations_total",
        "pillion_input_invalid_utf8_lines_total",
        "pillion_input_lost_bytes_total",
    ] {
        missing.push(format!("{family}{{input=\"app\"}} 0"));
    }
    missing.push("pillion_parse_errors_total{input=\"app\",parser=\"logfmt\"} 0".to_owned());
    for sink in ["out", "loki"] {
        for outcome in ["sent", "retried", "dead_lettered"] {
            missing.push(format!("pillion_sink_events_total{{sink=\"{sink}\",outcome=\"{outcome}\"}} 0"));
        }
        missing.push(format!("pillion_sink_bytes_total{{sink=\"{sink}\"}} 0"));
        missing.push(format!("pillion_sink_request_duration_seconds_count{{sink=\"{sink}\"}} 0"));
    }
    for family in ["pillion_sink_retries_total", "pillion_sink_in_flight_requests", "pillion_sink_batches_total"] {
        missing.push(format!("{family}{{sink=\"loki\"}} 0"));
    }
    missing.push("pillion_tap_dropped_records_total 0".to_owned());
    missing.retain(|series| !body.lines().any(|line| line == series));
    assert!(missing.is_empty(), "missing at start-up: {missing:#?}\n--- metrics ---\n{body}");
    pillion.signal("TERM");
    assert!(pillion.wait(Duration::from_secs(20)).success());
}
