//! `/metrics` is valid for `promtool check metrics` (Prometheus's own linter). CI installs
//! promtool, so there this test must run: it only skips when promtool is absent and CI is not
//! set.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Pillion, append, eventually, http_get, write_config};

fn promtool_available() -> bool {
    Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn metrics_pass_promtool_check() {
    if !promtool_available() {
        assert!(std::env::var_os("CI").is_none(), "promtool is required in CI (.ci/run installs prometheus)");
        eprintln!("skipping: promtool not installed (apt-get install prometheus)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
    append(&dir.path().join("logs/a.log"), &["{\"msg\":\"hello\"}".to_owned(), "{broken".to_owned()]);
    let config = write_config(
        dir.path(),
        "admin: { listen: \"127.0.0.1:0\" }\nlogs:\n  inputs: [{ name: a, paths: [\"logs/*.log\"], format: json, poll_interval: 100ms }]\n",
    );
    let mut pillion = Pillion::start(dir.path(), &config);
    let admin = pillion.admin_address();
    pillion.wait_for_records(2, Duration::from_secs(20));
    // The stdout sink counts its bytes just after writing the records we waited for: poll until
    // every family has its first sample.
    let families = [
        "pillion_input_files",
        "pillion_input_bytes_total",
        "pillion_input_lag_bytes",
        "pillion_sink_bytes_total",
        "process_cpu_seconds_total",
        "process_open_fds",
    ];
    let metrics = eventually(Duration::from_secs(10), "parse errors counted and every family present", || {
        let (_, _, body) = http_get(admin, "/metrics", &[]);
        let complete = body.contains("pillion_parse_errors_total{input=\"a\",parser=\"json\"} 1")
            && families.iter().all(|family| body.contains(family));
        complete.then_some(body)
    });
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    promtool.stdin.take().expect("stdin").write_all(metrics.as_bytes()).expect("write");
    let output = promtool.wait_with_output().expect("promtool");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{metrics}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
