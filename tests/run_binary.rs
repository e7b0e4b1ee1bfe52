//! The real binary end to end: tail a directory, print records, serve the admin endpoints,
//! follow appends, shut down cleanly on SIGTERM, and resume from the checkpoint without
//! sending a line twice.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use support::{Pillion, append, eventually, http_get, write_config};

const CONFIG: &str = r#"
service: { name: e2e }
admin: { listen: "127.0.0.1:0" }
shutdown_timeout: 10s
logs:
  data_dir: ./data
  checkpoint_interval: 100ms
  inputs:
    - name: app
      paths: ["logs/*.log"]
      exclude: ["*.skip.log"]
      poll_interval: 100ms
      attributes: { team: payments }
  sinks:
    - name: console
      type: stdout
"#;

fn lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!(r#"{{"level":"info","msg":"{prefix} {i}","seq":{i}}}"#)).collect()
}

fn messages(records: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        *counts.entry(record["message"].as_str().unwrap_or_default().to_owned()).or_insert(0) += 1;
    }
    counts
}

fn setup(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("logs")).expect("mkdir");
    append(&dir.join("logs/app.log"), &lines("first", 0..50));
    append(&dir.join("logs/ignored.skip.log"), &lines("skipped", 0..5));
    write_config(dir, CONFIG)
}

#[test]
fn tails_serves_admin_and_resumes_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = setup(dir.path());
    let mut pillion = Pillion::start(dir.path(), &config);
    let admin = pillion.admin_address();

    let records = pillion.wait_for_records(50, Duration::from_secs(20));
    let first = &records[0];
    assert_eq!(first["message"], "first 0");
    assert_eq!(first["level"], "info");
    assert_eq!(first["severity_number"], 9);
    assert_eq!(first["attributes"]["team"], "payments");
    assert_eq!(first["attributes"]["seq"], 0);
    assert_eq!(first["resource"]["service.name"], "e2e");
    assert_eq!(first["source"]["input"], "app");
    assert_eq!(first["source"]["path"], "logs/app.log");
    assert_eq!(first["source"]["offset"], 0);

    assert_eq!(http_get(admin, "/healthz", &[]).0, 200);
    eventually(Duration::from_secs(10), "readyz 200", || (http_get(admin, "/readyz", &[]).0 == 200).then_some(()));
    let (status, head, metrics) = http_get(admin, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(metrics.contains("pillion_input_lines_total{input=\"app\"} 50"), "{metrics}");
    assert!(metrics.contains("pillion_sink_events_total{sink=\"console\",outcome=\"sent\"} 50"), "{metrics}");
    assert!(metrics.contains("process_resident_memory_bytes "), "{metrics}");
    let (_, head, openmetrics) =
        http_get(admin, "/metrics", &[("Accept", "application/openmetrics-text; version=1.0.0")]);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(openmetrics.trim_end().ends_with("# EOF"));
    let (status, _, effective) = http_get(admin, "/config", &[]);
    assert_eq!(status, 200);
    assert!(effective.contains("logs/*.log"), "{effective}");
    assert!(effective.contains("checkpoint_interval: 100ms"), "{effective}");
    assert_eq!(http_get(admin, "/nope", &[]).0, 404);

    // Appended lines and new files show up within 2 s.
    append(&dir.path().join("logs/app.log"), &lines("second", 0..20));
    append(&dir.path().join("logs/new.log"), &lines("new file", 0..5));
    pillion.wait_for_records(75, Duration::from_secs(2));

    // A line written in two pieces is one record, sent once it is complete.
    let partial = dir.path().join("logs/app.log");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&partial)
        .and_then(|mut f| std::io::Write::write_all(&mut f, br#"{"msg":"split "#))
        .expect("write partial");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pillion.records().len(), 75, "a partial line must not be sent");
    append(&partial, &[r#"line"}"#.to_owned()]);
    pillion.wait_for_records(76, Duration::from_secs(2));

    pillion.signal("TERM");
    let status = pillion.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "logs:\n{}", pillion.log_lines().join("\n"));
    let before = pillion.records();
    drop(pillion);

    // Restart: nothing already written is sent again; new lines are.
    append(&dir.path().join("logs/app.log"), &lines("third", 0..10));
    let restarted = Pillion::start(dir.path(), &config);
    let after = restarted.wait_for_records(10, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let after_all = restarted.records();
    assert_eq!(after_all.len(), 10, "only the new lines after restart: {:?}", messages(&after_all));
    assert!(after.iter().all(|r| r["message"].as_str().is_some_and(|m| m.starts_with("third"))));

    let mut all = before;
    all.extend(after_all);
    let counts = messages(&all);
    assert!(counts.values().all(|&n| n == 1), "duplicates: {counts:?}");
    assert_eq!(counts.len(), 86);
    assert!(!counts.keys().any(|m| m.starts_with("skipped")), "excluded file was read");
}

#[test]
fn sigint_also_shuts_down_cleanly_and_a_file_sink_writes_ndjson() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
    append(&dir.path().join("logs/a.log"), &["plain text line".to_owned(), "level=warn msg=\"disk low\"".to_owned()]);
    let config = write_config(
        dir.path(),
        r#"
admin: { listen: "127.0.0.1:0" }
logs:
  inputs: [{ name: a, paths: ["logs/*.log"], poll_interval: 100ms }]
  sinks: [{ name: out, type: file, path: out/records.ndjson }]
"#,
    );
    let mut pillion = Pillion::start(dir.path(), &config);
    let out = dir.path().join("out/records.ndjson");
    let written = eventually(Duration::from_secs(20), "two records in the file sink", || {
        let text = std::fs::read_to_string(&out).ok()?;
        (text.lines().count() >= 2).then_some(text)
    });
    let records: Vec<serde_json::Value> = written.lines().map(|l| serde_json::from_str(l).expect("ndjson")).collect();
    assert_eq!(records[0]["message"], "plain text line");
    assert_eq!(records[1]["level"], "warn");
    assert_eq!(records[1]["message"], "disk low");
    pillion.signal("INT");
    assert_eq!(pillion.wait(Duration::from_secs(15)).code(), Some(0));
    let checkpoint = std::fs::read_to_string(dir.path().join("data/checkpoints.json")).expect("checkpoint written");
    assert!(checkpoint.contains("logs/a.log"), "{checkpoint}");
}

#[test]
fn a_port_in_use_is_a_runtime_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &format!("admin: {{ listen: \"127.0.0.1:{port}\" }}\n"));
    let mut pillion = Pillion::start(dir.path(), &config);
    assert_eq!(pillion.wait(Duration::from_secs(15)).code(), Some(1));
    assert!(pillion.log_lines().join("\n").contains("cannot listen on admin address"));
}

/// The fields that say what a record is (not when, by which input or from where it was read).
fn content(record: &serde_json::Value) -> serde_json::Value {
    let mut record = record.clone();
    if let Some(fields) = record.as_object_mut() {
        for volatile in ["observed_timestamp", "source", "resource"] {
            fields.remove(volatile);
        }
        if let Some(serde_json::Value::Object(attributes)) = fields.get_mut("attributes") {
            attributes.remove("team");
            if attributes.contains_key("parse_error") {
                // The time a record without one was read.
                fields.remove("timestamp");
            }
        }
    }
    record
}

#[test]
fn an_input_frames_records_by_its_parsers_multiline_hint_unless_it_sets_multiline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = std::fs::read("fixtures/parsers/java.log").expect("fixture");
    for name in ["hinted", "explicit"] {
        std::fs::create_dir_all(dir.path().join(name)).expect("mkdir");
        std::fs::write(dir.path().join(name).join("app.log"), &fixture).expect("write log");
    }
    let config = write_config(
        dir.path(),
        r#"
logs:
  inputs:
    - { name: hinted, paths: ["hinted/*.log"], format: java, poll_interval: 100ms }
    - name: explicit
      paths: ["explicit/*.log"]
      format: java
      poll_interval: 100ms
      multiline: { start: '^\d{4}-', timeout: 100ms }
  sinks: [{ name: console, type: stdout }]
"#,
    );
    // What `pillion parse --parser java` makes of the same file: one record per event.
    let parsed = std::process::Command::new(support::BIN)
        .args(["parse", "--parser", "java", "fixtures/parsers/java.log"])
        .env_remove("PILLION_CONFIG")
        .output()
        .expect("pillion parse");
    assert!(parsed.status.success(), "{}", String::from_utf8_lossy(&parsed.stderr));
    let expected: Vec<serde_json::Value> = String::from_utf8_lossy(&parsed.stdout)
        .lines()
        .map(|line| content(&serde_json::from_str(line).expect("json")))
        .collect();
    assert_eq!(expected.len(), 8, "{expected:#?}");

    let pillion = Pillion::start(dir.path(), &config);
    let from = |records: &[serde_json::Value], input: &str| -> Vec<serde_json::Value> {
        records.iter().filter(|r| r["source"]["input"] == input).map(content).collect()
    };
    // The explicit rule starts a record only at a line with a year (and at the file's start).
    let records = eventually(Duration::from_secs(20), "every record of both inputs", || {
        let records = pillion.records();
        (from(&records, "hinted").len() >= expected.len() && from(&records, "explicit").len() >= 5).then_some(records)
    });
    assert_eq!(from(&records, "hinted"), expected);
    let trace = &from(&records, "hinted")[4];
    assert_eq!(trace["attributes"]["exception.type"], "java.lang.IllegalStateException");
    let explicit = from(&records, "explicit");
    assert_eq!(explicit.len(), 5, "{explicit:#?}");
    assert!(explicit[4]["message"].as_str().is_some_and(|m| m.ends_with("\nnot a java line")), "{explicit:#?}");
}
