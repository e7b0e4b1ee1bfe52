//! The operating kit under deploy/ against the real Prometheus tools: the alert rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`). CI installs Debian's
//! prometheus package (promtool and the server), so there these tests must run: they only skip
//! when the tools are absent and CI is not set.

use std::path::{Path, PathBuf};
use std::process::Command;

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
