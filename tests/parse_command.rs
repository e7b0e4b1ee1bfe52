//! `pillion parse`: one normalized record per input line, from stdin or a file.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::BIN;

fn parse_stdin(parser: &str, input: &str) -> (i32, Vec<serde_json::Value>, String) {
    let mut child = Command::new(BIN)
        .args(["parse", "--parser", parser])
        .env("PILLION_SERVICE_NAME", "parse-test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // pillion may exit before reading stdin (an unknown parser): a broken pipe is expected then.
    let _ = child.stdin.take().expect("stdin").write_all(input.as_bytes());
    let output = child.wait_with_output().expect("wait");
    let records = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("record JSON"))
        .collect();
    (output.status.code().unwrap_or(-1), records, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn parses_stdin_line_by_line() {
    let input = "{\"level\":\"error\",\"msg\":\"boom\",\"ts\":\"2026-11-25T12:00:00Z\"}\nnot json\r\n";
    let (code, records, _) = parse_stdin("json", input);
    assert_eq!(code, 0);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["message"], "boom");
    assert_eq!(records[0]["level"], "error");
    assert_eq!(records[0]["timestamp"], "2026-11-25T12:00:00.000000000Z");
    assert_eq!(records[0]["resource"]["service.name"], "parse-test");
    assert_eq!(records[0]["source"]["offset"], 0);
    assert_eq!(records[1]["message"], "not json");
    assert!(records[1]["attributes"]["parse_error"].is_string());
    assert_eq!(records[1]["source"]["offset"], input.find("not json").expect("offset") as u64);
}

#[test]
fn parses_a_file_and_rejects_unknown_parsers() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/worker.log");
    let output = Command::new(BIN).args(["parse", "--parser", "logfmt"]).arg(&fixture).output().expect("run");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(text.lines().count(), 4);
    assert!(text.contains("\"message\":\"worker started\""), "{text}");

    let (code, _, stderr) = parse_stdin("no-such-parser", "x\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown parser"), "{stderr}");
}

#[test]
fn a_config_without_inputs_still_offers_the_built_in_parsers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("proxy-only.yaml");
    std::fs::write(&config, "proxy:\n  inbound: { listen: \"127.0.0.1:0\", upstream: \"http://127.0.0.1:9\" }\n")
        .expect("config");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/worker.log");
    let output = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["parse", "--parser", "logfmt"])
        .arg(&fixture)
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 4);
}
