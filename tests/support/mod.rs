//! Test support: runs the real `pillion` binary, collects its stdout records and its JSON log
//! lines on stderr, and talks HTTP to its admin server. Everything polls with a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod receiver;

pub const BIN: &str = env!("CARGO_BIN_EXE_pillion");

/// Polls `check` until it returns `Some` or `timeout` passes.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running pillion with its output captured line by line.
pub struct Pillion {
    child: Child,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().expect("lock").push(line);
        }
    });
    lines
}

impl Pillion {
    /// Starts `pillion run --config <config>` in `dir` with JSON logs.
    pub fn start(dir: &Path, config: &Path) -> Pillion {
        let mut child = Command::new(BIN)
            .args(["run", "--log-format", "json", "--config"])
            .arg(config)
            .current_dir(dir)
            .env("PILLION_LOG", "info")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pillion");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        Pillion { child, stdout, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin address, from the `admin server listening` log line. Fails fast, with the
    /// logs, if pillion exits first.
    pub fn admin_address(&mut self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.log_lines().iter().find_map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).ok()?;
                (value["message"] == "admin server listening")
                    .then(|| value["address"].as_str()?.parse().ok())
                    .flatten()
            });
            if let Some(address) = found {
                return address;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                std::thread::sleep(Duration::from_millis(50));
                panic!("pillion exited ({status}) before listening:\n{}", self.log_lines().join("\n"));
            }
            assert!(Instant::now() < deadline, "no admin address in logs:\n{}", self.log_lines().join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("lock").clone()
    }

    /// Parsed records printed on stdout so far.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let lines = self.stdout.lock().expect("lock").clone();
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l:?}: {e}"))).collect()
    }

    /// Waits until at least `count` records were printed, and returns them all.
    pub fn wait_for_records(&self, count: usize, timeout: Duration) -> Vec<serde_json::Value> {
        eventually(timeout, &format!("{count} records on stdout"), || {
            let records = self.records();
            (records.len() >= count).then_some(records)
        })
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status().expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, killing it after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("pillion did not exit within {timeout:?}; logs:\n{}", self.log_lines().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pillion {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET; returns (status, headers, body).
pub fn http_get(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// Writes `text` as a config file in `dir`.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("pillion.yaml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Appends lines to a file, creating it.
pub fn append(path: &Path, lines: &[String]) {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open log");
    for line in lines {
        writeln!(file, "{line}").expect("append");
    }
}
