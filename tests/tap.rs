//! `pillion tap` against a running pillion: lines appended to a file come out of the tap as
//! JSON records, and a tap client that stops reading (SIGSTOP) loses records, counted, while the
//! file sink keeps up with every line.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{BIN, Pillion, append, eventually, http_get, write_config};

/// A running `pillion tap` with its stdout lines collected (or left unread).
struct Tap {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Tap {
    fn start(admin: SocketAddr, extra: &[&str], read: bool) -> Tap {
        let mut child = Command::new(BIN)
            .args(["tap", "--admin", &admin.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pillion tap");
        let lines = Arc::new(Mutex::new(Vec::new()));
        if read {
            let stdout = child.stdout.take().expect("stdout");
            let sink = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().expect("lock").push(line);
                }
            });
        }
        Tap { child, lines }
    }

    fn signal(&self, name: &str) {
        let status =
            Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lock").clone()
    }

    /// Sends SIGINT (Ctrl-C) and returns the exit code.
    fn interrupt(&mut self) -> Option<i32> {
        self.signal("INT");
        let status =
            eventually(Duration::from_secs(10), "pillion tap to exit", || self.child.try_wait().expect("try_wait"));
        status.code()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let (_, _, body) = http_get(admin, "/metrics", &[]);
    body.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

fn lines_in(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

#[test]
fn tap_streams_appended_lines_and_a_stopped_client_does_not_stall_the_file_sink() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
    let config = write_config(
        dir.path(),
        "admin: { listen: \"127.0.0.1:0\" }\nlogs:\n  inputs:\n    - { name: app, paths: [\"logs/app.log\"], format: json, poll_interval: 50ms }\n    - { name: other, paths: [\"logs/other.log\"], format: json, poll_interval: 50ms }\n  sinks: [{ name: out, type: file, path: out.ndjson }]\n",
    );
    let mut pillion = Pillion::start(dir.path(), &config);
    let admin = pillion.admin_address();
    let out = dir.path().join("out.ndjson");

    let mut reader = Tap::start(admin, &["--input", "app"], true);
    let stopped = Tap::start(admin, &[], false);
    eventually(Duration::from_secs(10), "two tap clients", || {
        (metric(admin, "pillion_tap_clients ") == Some(2.0)).then_some(())
    });
    stopped.signal("STOP");

    append(&dir.path().join("logs/other.log"), &["{\"msg\":\"not for this tap\"}".to_owned()]);
    append(&dir.path().join("logs/app.log"), &(0..3).map(|i| format!("{{\"msg\":\"hello {i}\"}}")).collect::<Vec<_>>());
    let first = eventually(Duration::from_secs(10), "three records on the tap", || {
        let lines = reader.lines();
        (lines.len() >= 3).then_some(lines)
    });
    let records: Vec<serde_json::Value> = first.iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(records[0]["message"], "hello 0");
    assert_eq!(records[2]["source"]["input"], "app");
    assert!(records.iter().all(|r| r["source"]["input"] == "app"), "{first:?}");

    // A flood much larger than the stopped client's socket buffers and tap buffer.
    let padding = "x".repeat(300);
    let total = 40_000;
    for chunk in 0..40 {
        let lines: Vec<String> =
            (0..1000).map(|i| format!("{{\"msg\":\"line {}\",\"pad\":\"{padding}\"}}", chunk * 1000 + i)).collect();
        append(&dir.path().join("logs/app.log"), &lines);
    }
    let expected = 1 + 3 + total;
    eventually(Duration::from_secs(60), "every line in the file sink", || (lines_in(&out) >= expected).then_some(()));
    let dropped = metric(admin, "pillion_tap_dropped_records_total ").expect("dropped counter");
    assert!(dropped > 0.0, "the stopped client's records were dropped, not waited for");
    // The reading client saw records from the flood.
    eventually(Duration::from_secs(10), "flood records on the tap", || {
        reader.lines().iter().any(|l| l.contains("\"line ")).then_some(())
    });

    assert_eq!(reader.interrupt(), Some(0), "Ctrl-C exits 0");
    stopped.signal("CONT");
    let mut stopped = stopped;
    assert_eq!(stopped.interrupt(), Some(0));
    pillion.signal("TERM");
    assert!(pillion.wait(Duration::from_secs(20)).success());
}

#[test]
fn tap_refuses_an_unknown_input_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "admin: { listen: \"127.0.0.1:0\" }\nlogs:\n  inputs: [{ name: app, paths: [\"logs/*.log\"] }]\n",
    );
    let mut pillion = Pillion::start(dir.path(), &config);
    let admin = pillion.admin_address();
    let output = Command::new(BIN)
        .args(["tap", "--admin", &admin.to_string(), "--input", "nope"])
        .output()
        .expect("pillion tap");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown input \"nope\"; inputs: app"), "{stderr}");
}
