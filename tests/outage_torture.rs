//! The issue's torture run, scaled down: an app writes 1,000 lines/s and rotates its log
//! every 2 s, cycling rename+create, copytruncate and rename+gzip, keeping 3 rotated files
//! (older ones are deleted, as logrotate does); the Loki-protocol receiver is down for 12 s,
//! longer than the rotated files are kept. With `logs.buffer`, pillion must lose nothing:
//! and duplicate nothing without kills, and only around each kill -9 with them. Without the
//! buffer it must lose nothing either as long as it is not killed: the tailer keeps discovering
//! files while the sinks are down and holds the rotated ones open, deleted or not, until their
//! records are delivered. (Without the buffer a kill -9 loses what rotation deleted meanwhile:
//! no one can read those files again.)

mod support;

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::Pillion;
use support::receiver::Receiver;

const RATE: u64 = 1000;
const ROTATE_EVERY: u64 = 2000;
const KEEP_ROTATED: usize = 3;
const WRITE_FOR: Duration = Duration::from_secs(20);
const OUTAGE: (f64, f64) = (2.0, 14.0);

struct Setup {
    root: tempfile::TempDir,
    logs: PathBuf,
    config: PathBuf,
}

fn setup(receiver: &Receiver, buffer: bool) -> Setup {
    let root = tempfile::tempdir().expect("tempdir");
    let logs = root.path().join("logs");
    fs::create_dir_all(&logs).expect("mkdir");
    let yaml = format!(
        r#"admin: {{ listen: "127.0.0.1:0" }}
shutdown_timeout: 5s
logs:
  data_dir: "{data}"
  checkpoint_interval: 100ms
{buffer}  inputs:
    - name: app
      paths: ["{logs}/app.log*"]
      format: raw
      poll_interval: 100ms
  sinks:
    - name: loki
      type: loki
      endpoint: {url}
      batch: {{ timeout: 200ms }}
"#,
        data = root.path().join("data").display(),
        logs = logs.display(),
        url = receiver.url(),
        buffer = if buffer { "  buffer: { max_bytes: 64MiB }\n" } else { "" },
    );
    let config = support::write_config(root.path(), &yaml);
    Setup { root, logs, config }
}

/// The app: `seq=N` lines at [`RATE`], rotating every [`ROTATE_EVERY`] lines.
fn spawn_writer(logs: PathBuf, written: Arc<AtomicU64>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let app = logs.join("app.log");
        let mut file = open_append(&app);
        let mut rotated: VecDeque<PathBuf> = VecDeque::new();
        let started = Instant::now();
        let mut seq = 0u64;
        while started.elapsed() < WRITE_FOR {
            let due = (started.elapsed().as_secs_f64() * RATE as f64) as u64;
            let mut chunk = String::new();
            while seq < due {
                chunk.push_str(&format!("seq={seq:08} the quick brown fox jumps over the lazy dog\n"));
                seq += 1;
                if seq % ROTATE_EVERY == 0 {
                    file.write_all(chunk.as_bytes()).expect("write");
                    chunk.clear();
                    let rotation = seq / ROTATE_EVERY;
                    let (next, kept) = rotate(&logs, &app, file, rotation);
                    file = next;
                    rotated.push_back(kept);
                    while rotated.len() > KEEP_ROTATED {
                        if let Some(old) = rotated.pop_front() {
                            fs::remove_file(&old).expect("delete old rotation");
                        }
                    }
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

/// Rotates by rename+create, copytruncate, or rename+gzip, in turn; returns the file to write
/// to and the rotated file kept.
fn rotate(logs: &Path, app: &Path, file: File, rotation: u64) -> (File, PathBuf) {
    let rotated = logs.join(format!("app.log.{rotation}"));
    match rotation % 3 {
        0 => {
            fs::rename(app, &rotated).expect("rename");
            drop(file);
            (open_append(app), rotated)
        }
        1 => {
            fs::copy(app, &rotated).expect("copy");
            file.set_len(0).expect("truncate");
            (file, rotated)
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
            (new, gz)
        }
    }
}

/// Sequence numbers the receiver accepted, with how often each.
fn delivered(receiver: &Receiver) -> HashMap<u64, u32> {
    let mut seen = HashMap::new();
    for line in receiver.lines() {
        if let Some(seq) = line.message.strip_prefix("seq=").and_then(|m| m.get(..8)).and_then(|s| s.parse().ok()) {
            *seen.entry(seq).or_insert(0) += 1;
        }
    }
    seen
}

/// What a run saw.
struct Outcome {
    lost: u64,
    duplicates: u64,
    /// `pillion_buffer_events` and `pillion_buffer_bytes` near the end of the outage.
    buffered: (u64, u64),
    /// Descriptors pillion held on deleted log files near the end of the outage.
    held_deleted: usize,
}

/// How many of `pid`'s descriptors lead to deleted files under `logs`.
fn deleted_files_open(pid: u32, logs: &Path) -> usize {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.starts_with(logs) && target.to_string_lossy().ends_with(" (deleted)"))
        .count()
}

/// A gauge or counter of pillion's `/metrics`.
fn metric(pillion: &mut Pillion, name: &str) -> u64 {
    let (_, _, body) = support::http_get(pillion.admin_address(), "/metrics", &[]);
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// Runs the torture with kill -9s at `kills` (seconds from the start).
fn torture(buffer: bool, kills: &[f64]) -> Outcome {
    let receiver = Receiver::start();
    let setup = setup(&receiver, buffer);
    let written = Arc::new(AtomicU64::new(0));
    let mut pillion = Pillion::start(setup.root.path(), &setup.config);
    pillion.admin_address();
    let writer = spawn_writer(setup.logs.clone(), Arc::clone(&written));
    let started = Instant::now();
    let mut events: Vec<(f64, &str)> = vec![(OUTAGE.0, "down"), (OUTAGE.1 - 0.5, "probe"), (OUTAGE.1, "up")];
    let mut buffered = (0, 0);
    let mut held_deleted = 0;
    events.extend(kills.iter().map(|at| (*at, "kill")));
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut logs = Vec::new();
    for (at, what) in events {
        while started.elapsed().as_secs_f64() < at {
            std::thread::sleep(Duration::from_millis(20));
        }
        match what {
            "down" => receiver.set_outage(Some(503)),
            "up" => receiver.set_outage(None),
            "probe" => {
                buffered =
                    (metric(&mut pillion, "pillion_buffer_events"), metric(&mut pillion, "pillion_buffer_bytes"));
                held_deleted = deleted_files_open(pillion.pid(), &setup.logs);
            }
            _ => {
                pillion.signal("KILL");
                pillion.wait(Duration::from_secs(5));
                logs.extend(pillion.log_lines());
                pillion = Pillion::start(setup.root.path(), &setup.config);
                pillion.admin_address();
            }
        }
    }
    writer.join().expect("writer");
    let total = written.load(Ordering::Relaxed);
    assert!(total >= RATE * 18, "the writer fell behind: {total} lines");
    let deadline = Instant::now() + Duration::from_secs(45);
    let seen = loop {
        let seen = delivered(&receiver);
        if (0..total).all(|seq| seen.contains_key(&seq)) || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    pillion.signal("TERM");
    assert!(pillion.wait(Duration::from_secs(10)).success());
    logs.extend(pillion.log_lines());
    let missing: Vec<u64> = (0..total).filter(|seq| !seen.contains_key(seq)).collect();
    let duplicates: u64 = seen.values().map(|&n| u64::from(n.saturating_sub(1))).sum();
    if !missing.is_empty() {
        let tail: Vec<&String> = logs.iter().filter(|l| !l.contains("\"level\":\"DEBUG\"")).rev().take(60).collect();
        eprintln!("pillion's last log lines, newest first:\n{tail:#?}");
    }
    eprintln!(
        "{total} lines, {} kill -9s: lost {} (first {:?}), duplicates {duplicates}",
        kills.len(),
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    Outcome { lost: missing.len() as u64, duplicates, buffered, held_deleted }
}

#[test]
fn an_outage_longer_than_log_retention_loses_nothing_with_the_buffer() {
    let outcome = torture(true, &[]);
    assert_eq!(outcome.lost, 0);
    assert_eq!(outcome.duplicates, 0, "no kill, no duplicate");
    let (events, bytes) = outcome.buffered;
    // About 10 s of lines waited in the spool near the end of the outage.
    assert!(events > 5000 && bytes > 100_000, "buffer gauges: {events} events, {bytes} bytes");
}

#[test]
fn kill_9_during_an_outage_loses_nothing_with_the_buffer() {
    let outcome = torture(true, &[4.5, 8.0, 11.5, 16.5]);
    assert_eq!(outcome.lost, 0);
}

#[test]
fn an_outage_longer_than_log_retention_loses_nothing_without_the_buffer() {
    let outcome = torture(false, &[]);
    assert_eq!(outcome.lost, 0);
    assert_eq!(outcome.duplicates, 0, "no kill, no duplicate");
    // What saved them: rotated files deleted during the outage, held open until delivered.
    assert!(outcome.held_deleted >= 2, "{} deleted files held open", outcome.held_deleted);
}
