//! kill -9 the real binary, again and again, while an app writes thousands of lines a second
//! and rotates its log every few thousand lines by rename, copy-and-truncate and rename plus
//! gzip in turn; stall one sink for a while (the test stops reading pillion's stdout) so that
//! backpressure must hold. Then every sequence number written must be in the file sink's
//! output: zero lost, duplicates only from unacknowledged batches.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Lines per second the app writes.
const RATE: u64 = 4000;
/// Lines between rotations.
const ROTATE_EVERY: u64 = 3000;
/// How long the app writes.
const WRITE_FOR: Duration = Duration::from_secs(12);

struct Dirs {
    _root: tempfile::TempDir,
    logs: PathBuf,
    out: PathBuf,
    config: PathBuf,
    stderr: PathBuf,
}

fn setup() -> Dirs {
    let root = tempfile::tempdir().expect("tempdir");
    let logs = root.path().join("logs");
    fs::create_dir_all(&logs).expect("mkdir");
    let out = root.path().join("out.ndjson");
    let config = root.path().join("pillion.yaml");
    let yaml = format!(
        r#"admin: {{ listen: "127.0.0.1:0" }}
shutdown_timeout: 5s
logs:
  data_dir: "{data}"
  checkpoint_interval: 100ms
  inputs:
    - name: app
      paths: ["{logs}/app.log*"]
      format: raw
      poll_interval: 100ms
  sinks:
    - {{ name: out, type: file, path: "{out}" }}
    - {{ name: console, type: stdout }}
"#,
        data = root.path().join("data").display(),
        logs = logs.display(),
        out = out.display(),
    );
    fs::write(&config, yaml).expect("config");
    let stderr = root.path().join("pillion.stderr");
    Dirs { logs, out, config, stderr, _root: root }
}

/// The running binary and the thread draining its stdout (pausable: a stalled sink).
struct Pillion {
    child: Child,
    drain: JoinHandle<()>,
}

fn start(dirs: &Dirs, paused: &Arc<AtomicBool>) -> Pillion {
    let stderr = OpenOptions::new().create(true).append(true).open(&dirs.stderr).expect("stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pillion"))
        .args(["run", "--config"])
        .arg(&dirs.config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("start pillion");
    let mut stdout = child.stdout.take().expect("stdout pipe");
    let paused = Arc::clone(paused);
    let drain = std::thread::spawn(move || {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            if paused.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            match stdout.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    Pillion { child, drain }
}

impl Pillion {
    fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
        let _ = self.drain.join();
    }

    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "pillion exited with {status}");
                break;
            }
            assert!(Instant::now() < deadline, "pillion did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.drain.join();
    }

    fn rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

/// The app: writes `seq=N` lines at [`RATE`], rotating every [`ROTATE_EVERY`] lines.
fn spawn_writer(logs: PathBuf, written: Arc<AtomicU64>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let app = logs.join("app.log");
        let mut file = open_append(&app);
        let started = Instant::now();
        let mut seq = 0u64;
        let mut rotation = 0u64;
        while started.elapsed() < WRITE_FOR {
            let due = (started.elapsed().as_secs_f64() * RATE as f64) as u64;
            let mut chunk = String::new();
            while seq < due {
                chunk.push_str(&format!("seq={seq:08} the quick brown fox jumps over the lazy dog\n"));
                seq += 1;
                if seq % ROTATE_EVERY == 0 {
                    file.write_all(chunk.as_bytes()).expect("write");
                    chunk.clear();
                    rotation += 1;
                    file = rotate(&logs, &app, file, rotation);
                }
            }
            file.write_all(chunk.as_bytes()).expect("write");
            written.store(seq, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

fn open_append(path: &Path) -> File {
    OpenOptions::new().create(true).append(true).open(path).expect("open log")
}

/// Rotates by rename, copy-and-truncate, or rename plus gzip, in turn.
fn rotate(logs: &Path, app: &Path, file: File, rotation: u64) -> File {
    let rotated = logs.join(format!("app.log.{rotation}"));
    match rotation % 3 {
        0 => {
            fs::rename(app, &rotated).expect("rename");
            drop(file);
            open_append(app)
        }
        1 => {
            fs::copy(app, &rotated).expect("copy");
            file.set_len(0).expect("truncate");
            file
        }
        _ => {
            fs::rename(app, &rotated).expect("rename");
            drop(file);
            let new = open_append(app);
            let bytes = fs::read(&rotated).expect("read rotated");
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&bytes).expect("compress");
            let gz = logs.join(format!("app.log.{rotation}.gz"));
            fs::write(&gz, encoder.finish().expect("finish")).expect("write gz");
            fs::remove_file(&rotated).expect("delete rotated");
            new
        }
    }
}

/// Sequence numbers in the sink's output, with how often each was seen.
fn delivered(out: &Path) -> HashMap<u64, u32> {
    let mut seen = HashMap::new();
    let Ok(file) = File::open(out) else {
        return seen;
    };
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        // A kill -9 may leave a torn last line in the sink's file: skip what does not parse.
        let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let message = record.get("message").and_then(|m| m.as_str()).unwrap_or_default();
        if let Some(seq) = message.strip_prefix("seq=").and_then(|m| m.get(..8)).and_then(|s| s.parse().ok()) {
            *seen.entry(seq).or_insert(0) += 1;
        }
    }
    seen
}

#[test]
fn kill_9_during_rotation_and_a_stalled_sink_loses_nothing() {
    let dirs = setup();
    let paused = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(dirs.logs.clone(), Arc::clone(&written));
    let mut pillion = start(&dirs, &paused);
    let mut kills = 0;
    let mut max_rss = 0;
    let started = Instant::now();
    let kill_at = [1.5, 3.5, 5.0, 8.5, 10.5];
    for at in kill_at {
        while started.elapsed().as_secs_f64() < at {
            max_rss = max_rss.max(pillion.rss_kib().unwrap_or(0));
            std::thread::sleep(Duration::from_millis(50));
        }
        pillion.kill9();
        kills += 1;
        pillion = start(&dirs, &paused);
        if kills == 3 {
            // Stall the stdout sink: pillion must stop reading, and stay small.
            paused.store(true, Ordering::Relaxed);
            let stall_until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < stall_until {
                max_rss = max_rss.max(pillion.rss_kib().unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            paused.store(false, Ordering::Relaxed);
        }
    }
    writer.join().expect("writer");
    let total = written.load(Ordering::Relaxed);
    assert!(total >= RATE * 10, "the writer fell behind: {total} lines");

    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let seen = delivered(&dirs.out);
        if (0..total).all(|seq| seen.contains_key(&seq)) {
            break seen;
        }
        if Instant::now() > deadline {
            let missing: Vec<u64> = (0..total).filter(|seq| !seen.contains_key(seq)).collect();
            let stderr = fs::read_to_string(&dirs.stderr).unwrap_or_default();
            let tail: String = stderr.lines().rev().take(40).collect::<Vec<_>>().join("\n");
            panic!(
                "{} of {total} lines lost after {kills} kills (first: {:?}); pillion's last log lines (newest first):\n{tail}",
                missing.len(),
                &missing[..missing.len().min(20)]
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    pillion.terminate();
    let duplicates: u64 = seen.values().map(|&n| u64::from(n.saturating_sub(1))).sum();
    eprintln!("{total} lines, {kills} kill -9s, 0 lost, {duplicates} duplicates, max RSS {} MiB", max_rss / 1024);
    assert!(max_rss < 200 * 1024, "memory grew to {max_rss} KiB");
}
