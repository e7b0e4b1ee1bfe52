//! `pillion parse` and parser configuration through the real binary: built-in and user-defined
//! parsers, and the config errors a bad parser file or an unknown `format` produce.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn pillion(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pillion"))
        .args(args)
        .env_remove("PILLION_CONFIG")
        .env("OTEL_SERVICE_NAME", "from-otel")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pillion runs");
    child.stdin.take().expect("stdin").write_all(stdin).expect("write stdin");
    child.wait_with_output().expect("pillion exits")
}

fn records(output: &Output) -> Vec<Value> {
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(|line| serde_json::from_str(line).expect("json line")).collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

#[test]
fn parse_with_a_built_in_definition() {
    let line = br#"2001:db8::1 - - [25/Nov/2026:12:00:01 +0000] "GET /api HTTP/1.1" 500 12 "-" "curl/8""#;
    let out = records(&pillion(&["parse", "--parser", "nginx_access"], line));
    assert_eq!(out.len(), 1);
    let record = &out[0];
    assert_eq!(record["timestamp"], "2026-11-25T12:00:01.000000000Z");
    assert_eq!(record["level"], "error");
    assert_eq!(record["severity_number"], 17);
    assert_eq!(record["attributes"]["client.address"], "2001:db8::1");
    assert_eq!(record["attributes"]["http.response.status_code"], 500);
    assert_eq!(record["resource"]["service.name"], "from-otel");
    assert_eq!(record["source"]["offset"], 0);
}

#[test]
fn parse_reads_a_file_and_keeps_failures() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/parsers/json.log");
    let out = records(&pillion(&["parse", "--parser", "json", fixture.to_str().expect("utf-8")], b""));
    let lines = std::fs::read_to_string(&fixture).expect("fixture").lines().count();
    assert_eq!(out.len(), lines, "one record per line, failures included");
    let failed: Vec<&Value> = out.iter().filter(|r| r["attributes"].get("parse_error").is_some()).collect();
    assert_eq!(failed.len(), 3);
    assert_eq!(failed[0]["message"], r#"{"unterminated": "json"#);
}

#[test]
fn parse_with_a_user_definition_and_a_time_zone() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "app.yaml",
        "parsers:\n  - name: app\n    regex: '^(?P<time>\\S+ \\S+) (?P<level>\\w+) (?P<message>.*)$'\n    time: { field: time, format: \"%Y-%m-%d %H:%M:%S\" }\n",
    );
    let config = write(dir.path(), "pillion.yaml", "logs:\n  parsers: [\"*.yaml\"]\n");
    let out = pillion(
        &["parse", "--config", &config, "--parser", "app", "--timezone", "+02:00"],
        b"2026-11-25 14:00:00 WARN hot\n",
    );
    let out = records(&out);
    assert_eq!(out[0]["timestamp"], "2026-11-25T12:00:00.000000000Z");
    assert_eq!(out[0]["level"], "warn");
    assert_eq!(out[0]["message"], "hot");
}

#[test]
fn an_unknown_parser_name_lists_the_known_ones() {
    let out = pillion(&["parse", "--parser", "nginix"], b"");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown parser \"nginix\"") && stderr.contains("nginx_access"), "{stderr}");
}

#[test]
fn a_bad_parser_file_is_a_config_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parsers = write(dir.path(), "broken.yaml", "parsers:\n  - name: broken\n    regex: '(?P<message>.*'\n");
    let config = write(dir.path(), "pillion.yaml", "logs:\n  parsers: [\"broken.yaml\"]\n");
    let out = pillion(&["validate", "--config", &config], b"");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{parsers}:3:12: parsers[0].regex: invalid regex")), "{stderr}");
    let out = pillion(&["parse", "--config", &config, "--parser", "raw"], b"x\n");
    assert_eq!(out.status.code(), Some(2), "parse refuses a broken config too");
}

#[test]
fn parser_globs_are_relative_to_the_config_file_even_without_a_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "broken.yaml", "parsers:\n  - name: broken\n    regex: '(?P<message>.*'\n");
    write(dir.path(), "pillion.yaml", "logs:\n  parsers: [\"*.yaml\"]\n");
    let out = Command::new(env!("CARGO_BIN_EXE_pillion"))
        .args(["validate", "--config", "pillion.yaml"])
        .current_dir(dir.path())
        .output()
        .expect("pillion runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.yaml:3:12: parsers[0].regex: invalid regex: unclosed group"), "{stderr}");
}

#[test]
fn an_unknown_format_is_a_config_error_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = "logs:\n  inputs:\n    - name: web\n      paths: [/var/log/nginx/*.log]\n      format: nginx\n      timezone: Mars/Olympus\n";
    let config = write(dir.path(), "pillion.yaml", yaml);
    let out = pillion(&["validate", "--config", &config], b"");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{config}:3:7: logs.inputs[0].timezone: unknown time zone")), "{stderr}");
    let yaml = "logs:\n  inputs:\n    - name: web\n      paths: [/var/log/nginx/*.log]\n      format: nginix\n";
    let config = write(dir.path(), "pillion.yaml", yaml);
    let out = pillion(&["validate", "--config", &config], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains(&format!("{config}:3:7: logs.inputs[0].format: unknown parser \"nginix\"")), "{stderr}");
    assert!(stderr.contains("nginx_access"), "{stderr}");
}

#[test]
fn a_valid_config_with_user_parsers_and_input_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "mine.yaml", "parsers:\n  - name: mine\n    type: logfmt\n    message: text\n");
    let yaml = "logs:\n  parsers: [\"*.yaml\", \"parsers.d/*.yaml\"]\n  inputs:\n    - name: a\n      paths: [/var/log/a/*.log]\n      format: mine\n      timezone: Europe/Paris\n      trace_pattern: 'trace=(?P<trace_id>[0-9a-f]{32})'\n";
    let config = write(dir.path(), "pillion.yaml", yaml);
    let out = pillion(&["validate", "--config", &config], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("parsers.d/*.yaml\" matches no file"), "a warning: {stderr}");
}

/// The issue's measure: a Java stack trace parsed with `java` came out as a parse error per
/// line. `pillion parse` now frames the file with the parser's multiline preset.
#[test]
fn java_stack_traces_are_one_record_per_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "2026-11-25 12:00:00.100 [main] INFO  com.example.App - started\n\
2026-11-25 12:00:01.500 [http-nio-8080-exec-2] ERROR c.e.web.PaymentController - payment failed\n\
java.lang.IllegalStateException: card declined\n\
\tat com.example.pay.Gateway.charge(Gateway.java:88)\n\
\tat com.example.web.PaymentController.pay(PaymentController.java:41)\n\
Caused by: java.net.SocketTimeoutException: Read timed out\n\
\tat java.base/java.net.SocketInputStream.socketRead0(Native Method)\n\
\t... 12 more\n\
2026-11-25 12:00:02.000 [main] WARN  com.example.App - recovered";
    let file = write(dir.path(), "app.log", text);
    let out = records(&pillion(&["parse", "--parser", "java", &file], b""));
    assert_eq!(out.len(), 3, "{out:#?}");
    let error = &out[1];
    assert_eq!(error["timestamp"], "2026-11-25T12:00:01.500000000Z");
    assert_eq!(error["level"], "error");
    assert_eq!(error["attributes"]["log.logger"], "c.e.web.PaymentController");
    assert_eq!(error["attributes"]["thread.name"], "http-nio-8080-exec-2");
    assert_eq!(error["attributes"]["exception.type"], "java.lang.IllegalStateException");
    assert_eq!(error["attributes"]["exception.message"], "card declined");
    let trace = error["attributes"]["exception.stacktrace"].as_str().expect("stacktrace");
    assert!(trace.starts_with("java.lang.IllegalStateException: card declined\n\tat com.example.pay"), "{trace}");
    assert!(trace.ends_with("\t... 12 more"), "{trace}");
    assert!(error["message"].as_str().is_some_and(|m| m.starts_with("payment failed\njava.lang.")), "{error}");
    assert!(error["attributes"].get("parse_error").is_none());
    let second_line = text.find('\n').expect("lines") + 1;
    assert_eq!(error["source"]["offset"], second_line, "the record starts at its first line");
    assert_eq!(out[2]["level"], "warn");
    assert!(out[2]["attributes"].get("exception.type").is_none());
    // Without joining, each line is its own record again.
    let out = records(&pillion(&["parse", "--parser", "java", "--multiline", "none", &file], b""));
    assert_eq!(out.len(), 9);
}

#[test]
fn python_tracebacks_with_either_layout_and_auto_with_a_preset() {
    let text = b"ERROR:root:payment failed\nTraceback (most recent call last):\n  File \"app.py\", line 10, in pay\n    charge(card)\nKeyError: 'card'\n2026-11-25 12:00:00,123 - app - INFO - next\n";
    let out = records(&pillion(&["parse", "--parser", "python"], text));
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(out[0]["attributes"]["exception.type"], "KeyError");
    assert_eq!(out[0]["attributes"]["exception.message"], "'card'");
    assert_eq!(out[1]["timestamp"], "2026-11-25T12:00:00.123000000Z");
    let go = b"2026/11/25 12:00:00 serving\npanic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\t/src/main.go:8 +0x1d\nexit status 2\n";
    let out = records(&pillion(&["parse", "--parser", "auto", "--multiline", "go"], go));
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(out[1]["attributes"]["exception.type"], "panic");
    assert_eq!(out[1]["attributes"]["exception.message"], "boom");
}

#[test]
fn families_answer_to_one_name() {
    let access = br#"192.0.2.1 - - [25/Nov/2026:12:00:01 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8"
192.0.2.1 - - [25/Nov/2026:12:00:02 +0000] "GET /x HTTP/1.1" 404 -
"#;
    for name in ["nginx", "apache"] {
        let out = records(&pillion(&["parse", "--parser", name], access));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["attributes"]["user_agent.original"], "curl/8", "{name}");
        assert_eq!(out[1]["attributes"]["http.response.status_code"], 404, "{name}");
        assert!(out.iter().all(|r| r["attributes"].get("parse_error").is_none()), "{name}: {out:#?}");
    }
    let syslog = b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed\n<165>1 2003-10-11T22:14:15.003Z host app 12 ID47 - hello\nnot syslog\n";
    let out = records(&pillion(&["parse", "--parser", "syslog"], syslog));
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["attributes"]["host.name"], "mymachine");
    assert_eq!(out[1]["attributes"]["syslog.version"], 1);
    assert_eq!(out[2]["attributes"]["parse_error"], "line does not match parser syslog");
}
