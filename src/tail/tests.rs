//! The tailer against real files: focused tests for each rotation kind, truncation while
//! down, compressed files, container formats, multiline, huge lines, invalid UTF-8 and a
//! corrupt checkpoint; and a model-based test of random write / rotate / truncate / compress
//! / delete / restart sequences checked against what must be delivered.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::ParsePool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::InputSettings;
use super::checkpoint::CheckpointStore;
use super::{TailerContext, spawn};
use crate::pipeline::Acknowledgements;
use crate::record::{Record, Value};
use crate::telemetry::metrics::InputMetrics;
use crate::transform::Transforms;

const DEADLINE: Duration = Duration::from_secs(20);

/// A tailer over a temp directory, restartable, whose sink acknowledges everything.
struct Harness {
    dir: tempfile::TempDir,
    logs: PathBuf,
    store: CheckpointStore,
    input: Arc<InputSettings>,
    metrics: InputMetrics,
    delivered: Arc<Mutex<Vec<Record>>>,
    largest_batch: Arc<AtomicUsize>,
    /// While set, the sink takes nothing: the tailer meets backpressure, as in an outage.
    stalled: Arc<AtomicBool>,
    running: Option<Running>,
}

struct Running {
    acks: Arc<Acknowledgements>,
    shutdown: CancellationToken,
    tailer: JoinHandle<()>,
    sink: JoinHandle<()>,
}

impl Harness {
    /// `input` is the YAML of one input (without `name` and `paths`); the glob is `logs/<glob>`.
    fn new(glob: &str, input: &str) -> Harness {
        // The tailer's log lines are shown for a failing test.
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("pillion=debug").try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        fs::create_dir_all(&logs).expect("mkdir");
        let yaml = format!(
            "logs:\n  inputs:\n    - name: test\n      paths: [\"{}/{glob}\"]\n      format: raw\n      poll_interval: 20ms\n{}",
            logs.display(),
            input.lines().map(|l| format!("      {l}\n")).collect::<String>()
        );
        let config = crate::config::load_str(&yaml, "test", &|_| None).expect("config");
        let input = Arc::clone(&config.logs.inputs[0]);
        let store = CheckpointStore::new(&dir.path().join("data"));
        let mut harness = Harness {
            dir,
            logs,
            store,
            input,
            metrics: InputMetrics::default(),
            delivered: Arc::new(Mutex::new(Vec::new())),
            largest_batch: Arc::new(AtomicUsize::new(0)),
            stalled: Arc::new(AtomicBool::new(false)),
            running: None,
        };
        harness.start();
        harness
    }

    fn path(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    fn start(&mut self) {
        let loaded = self.store.load();
        let acks = Arc::new(Acknowledgements::new(1));
        acks.restore(&loaded.entries, super::unix_now());
        let (output, mut batches) = mpsc::channel(4);
        let shutdown = CancellationToken::new();
        let context = TailerContext {
            input: Arc::clone(&self.input),
            transforms: Arc::new(Transforms::new(&[]).expect("transforms")),
            resource: Arc::new(Vec::new()),
            acks: Arc::clone(&acks),
            metrics: self.metrics.clone(),
            output,
            parse_pool: Arc::new(ParsePool::start(2).expect("parse pool")),
            shutdown: shutdown.clone(),
        };
        let tailer = spawn(context).expect("spawn");
        let delivered = Arc::clone(&self.delivered);
        let largest_batch = Arc::clone(&self.largest_batch);
        let sink_acks = Arc::clone(&acks);
        let stalled = Arc::clone(&self.stalled);
        let stopping = shutdown.clone();
        let sink = std::thread::spawn(move || {
            loop {
                while stalled.load(Ordering::Relaxed) && !stopping.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let Some(batch) = batches.blocking_recv() else { break };
                largest_batch.fetch_max(batch.records.len(), Ordering::Relaxed);
                lock(&delivered).extend(batch.records.iter().cloned());
                if let Some(token) = &batch.ack {
                    sink_acks.ack(token);
                }
            }
        });
        self.running = Some(Running { acks, shutdown, tailer, sink });
    }

    /// A clean stop: everything sent is delivered and checkpointed.
    fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.shutdown.cancel();
        running.tailer.join().expect("tailer thread");
        running.sink.join().expect("sink thread");
        self.store.save(&running.acks.snapshot()).expect("save checkpoint");
    }

    fn restart(&mut self) {
        self.stop();
        self.start();
    }

    fn messages(&self) -> Vec<String> {
        lock(&self.delivered).iter().map(|r| r.message.clone()).collect()
    }

    /// Waits until `expected` were delivered, in any order, each exactly once.
    fn expect_exactly(&self, expected: &[String]) {
        let want = counts(expected.iter().cloned());
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = counts(self.messages());
            if got == want {
                return;
            }
            let too_many = got.iter().any(|(line, n)| want.get(line).is_none_or(|w| n > w));
            if too_many || Instant::now() > deadline {
                let missing: Vec<_> = want.keys().filter(|l| !got.contains_key(*l)).take(10).collect();
                let extra: Vec<_> = got.iter().filter(|(l, n)| want.get(*l).is_none_or(|w| *n > w)).take(10).collect();
                panic!(
                    "delivered {} of {} lines; missing (first 10) {missing:?}; duplicated or unexpected {extra:?}",
                    got.values().sum::<usize>(),
                    expected.len()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `check` holds for the delivered records.
    fn wait_for(&self, what: &str, check: impl Fn(&[Record]) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !check(&lock(&self.delivered)) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}; got {:?}", self.messages());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn counter(
        &self,
        family: &prometheus_client::metrics::family::Family<
            crate::telemetry::metrics::InputLabel,
            prometheus_client::metrics::counter::Counter,
        >,
    ) -> u64 {
        family.get_or_create(&InputMetrics::label("test")).get()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown.cancel();
            let _ = running.tailer.join();
            let _ = running.sink.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn counts(lines: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in lines {
        *out.entry(line).or_insert(0) += 1;
    }
    out
}

fn append(path: &Path, text: &str) {
    let mut file = OpenOptions::new().create(true).append(true).open(path).expect("open for append");
    file.write_all(text.as_bytes()).expect("append");
}

/// Lines `line-<from>` .. `line-<to - 1>`.
fn lines(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("line-{i:06} {}", "x".repeat(i % 37))).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    append(path, &text);
}

fn gzip(from: &Path, to: &Path) {
    let bytes = fs::read(from).expect("read");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&bytes).expect("compress");
    fs::write(to, encoder.finish().expect("finish")).expect("write gz");
}

fn copy_truncate(from: &Path, to: &Path) {
    fs::copy(from, to).expect("copy");
    File::options().write(true).open(from).and_then(|f| f.set_len(0)).expect("truncate");
}

#[test]
fn rename_rotation_reads_the_old_file_to_its_end() {
    let mut h = Harness::new("app.log", "");
    let app = h.path("app.log");
    let all = lines(0, 300);
    write_lines(&app, &all[..100]);
    h.expect_exactly(&all[..100]);
    // The app still writes to its old descriptor after the rename, then reopens.
    let mut old = OpenOptions::new().append(true).open(&app).expect("open");
    fs::rename(&app, h.path("app.log.1")).expect("rename");
    let tail: String = all[100..200].iter().map(|l| format!("{l}\n")).collect();
    old.write_all(tail.as_bytes()).expect("write");
    write_lines(&app, &all[200..]);
    h.expect_exactly(&all);
    fs::remove_file(h.path("app.log.1")).expect("delete");
    h.restart();
    h.expect_exactly(&all);
    assert!(h.counter(&h.metrics.rotations) >= 1);
}

#[test]
fn rename_rotation_within_the_globs_is_followed_by_identity() {
    let mut h = Harness::new("app.log*", "");
    let app = h.path("app.log");
    let all = lines(0, 300);
    write_lines(&app, &all[..100]);
    fs::rename(&app, h.path("app.log.1")).expect("rename");
    write_lines(&h.path("app.log.1"), &all[100..200]);
    write_lines(&app, &all[200..]);
    h.expect_exactly(&all);
    h.restart();
    h.expect_exactly(&all);
}

#[test]
fn copytruncate_loses_and_duplicates_nothing() {
    let mut h = Harness::new("app.log*", "");
    let app = h.path("app.log");
    let all = lines(0, 400);
    write_lines(&app, &all[..100]);
    h.expect_exactly(&all[..100]);
    // Lines written just before the copy are read from the copy.
    write_lines(&app, &all[100..200]);
    copy_truncate(&app, &h.path("app.log.1"));
    write_lines(&app, &all[200..300]);
    h.expect_exactly(&all[..300]);
    assert!(h.counter(&h.metrics.truncations) >= 1);
    h.restart();
    write_lines(&app, &all[300..]);
    h.expect_exactly(&all);
}

#[test]
fn compressed_rotated_files_are_not_read_twice() {
    let mut h = Harness::new("app.log*", "");
    let app = h.path("app.log");
    let all = lines(0, 300);
    write_lines(&app, &all[..100]);
    h.expect_exactly(&all[..100]);
    fs::rename(&app, h.path("app.log.1")).expect("rename");
    write_lines(&app, &all[100..200]);
    gzip(&h.path("app.log.1"), &h.path("app.log.1.gz"));
    fs::remove_file(h.path("app.log.1")).expect("delete");
    h.expect_exactly(&all[..200]);
    h.restart();
    write_lines(&app, &all[200..]);
    h.expect_exactly(&all);
}

#[test]
fn compressed_files_resume_where_their_original_stopped() {
    let mut h = Harness::new("app.log*", "");
    let app = h.path("app.log");
    let all = lines(0, 200);
    write_lines(&app, &all[..100]);
    h.expect_exactly(&all[..100]);
    h.stop();
    // While pillion is down: more lines, then rotation with compression.
    write_lines(&app, &all[100..150]);
    fs::rename(&app, h.path("app.log.1")).expect("rename");
    gzip(&h.path("app.log.1"), &h.path("app.log.1.gz"));
    fs::remove_file(h.path("app.log.1")).expect("delete");
    write_lines(&app, &all[150..]);
    h.start();
    h.expect_exactly(&all);
}

#[test]
fn unseen_compressed_files_are_read() {
    let h = Harness::new("*.gz", "");
    let all = lines(0, 50);
    let plain = h.dir.path().join("old.log");
    write_lines(&plain, &all);
    gzip(&plain, &h.path("old.log.gz"));
    h.expect_exactly(&all);
}

#[test]
fn a_corrupt_compressed_file_is_read_as_far_as_it_goes_once() {
    let h = Harness::new("*.gz", "");
    let all = lines(0, 2000);
    let plain = h.dir.path().join("old.log");
    write_lines(&plain, &all);
    let gz = h.path("old.log.gz");
    gzip(&plain, &gz);
    let mut bytes = fs::read(&gz).expect("read gz");
    bytes.truncate(bytes.len() - 100);
    fs::write(&gz, bytes).expect("write corrupt gz");
    let files = h.metrics.files.get_or_create(&InputMetrics::label("test")).clone();
    h.wait_for("most lines, then the file finished", |records| records.len() > 1000 && files.get() == 0);
    // Once finished it is not picked up again: read again, its lines would come twice. (The
    // count may still grow a little: the last batch can be in the parse pool when the file
    // is closed.)
    std::thread::sleep(Duration::from_millis(300));
    let later = h.messages();
    assert!(later.len() < all.len(), "a truncated gzip cannot yield every line");
    assert_eq!(counts(later.iter().cloned()).values().max(), Some(&1));
}

#[test]
fn truncation_while_down_is_detected() {
    let mut h = Harness::new("app.log", "");
    let app = h.path("app.log");
    let all = lines(0, 120);
    write_lines(&app, &all[..100]);
    h.expect_exactly(&all[..100]);
    h.stop();
    File::options().write(true).open(&app).and_then(|f| f.set_len(0)).expect("truncate");
    write_lines(&app, &all[100..110]);
    h.start();
    h.expect_exactly(&all[..110]);
    h.stop();
    // Rewritten longer than the checkpoint: told apart by its first line.
    File::options().write(true).open(&app).and_then(|f| f.set_len(0)).expect("truncate");
    let long: Vec<String> = (0..200).map(|i| format!("rewritten-{i:04} {}", "y".repeat(40))).collect();
    write_lines(&app, &long);
    h.start();
    let mut expected = all[..110].to_vec();
    expected.extend(long);
    h.expect_exactly(&expected);
    assert!(h.counter(&h.metrics.truncations) >= 1);
}

#[test]
fn a_corrupt_checkpoint_falls_back_to_start_at() {
    let mut h = Harness::new("app.log", "");
    let app = h.path("app.log");
    let all = lines(0, 20);
    write_lines(&app, &all);
    h.expect_exactly(&all);
    h.stop();
    fs::write(h.store.path(), b"{\"version\":\"2\",\"files\":[{\"dev\":").expect("corrupt");
    assert!(h.store.load().warning.is_some());
    h.start();
    let twice: Vec<String> = all.iter().chain(all.iter()).cloned().collect();
    h.expect_exactly(&twice);
}

#[test]
fn start_at_end_skips_only_what_was_there_at_start_up() {
    let mut h = Harness::new("*.log", "start_at: end");
    h.stop();
    write_lines(&h.path("old.log"), &lines(0, 10));
    h.start();
    // Appended after start-up, and a file created after start-up: both read.
    let new = lines(10, 30);
    h.wait_for("the first scan", |_| h.metrics.files.get_or_create(&InputMetrics::label("test")).get() == 1);
    write_lines(&h.path("old.log"), &new[..10]);
    write_lines(&h.path("new.log"), &new[10..]);
    h.expect_exactly(&new);
}

#[test]
fn huge_lines_are_truncated_flagged_and_counted() {
    let h = Harness::new("app.log", "max_line_bytes: 1KiB");
    let huge = "z".repeat(3 * 1024 * 1024);
    append(&h.path("app.log"), &format!("before\n{huge}\nafter\n"));
    h.wait_for("three records", |records| records.len() == 3);
    let records = lock(&h.delivered).clone();
    assert_eq!(records[1].message.len(), 1024);
    assert_eq!(records[1].attributes.get("truncated"), Some(&Value::Bool(true)));
    assert_eq!(records[2].message, "after");
    assert_eq!(records[2].source.as_ref().map(|s| s.offset), Some(7 + huge.len() as u64 + 1));
    assert_eq!(h.counter(&h.metrics.lines_truncated), 1);
}

#[test]
fn batches_stay_small_however_short_the_lines() {
    let h = Harness::new("app.log", "");
    fs::write(h.path("app.log"), vec![b'\n'; 200_000]).expect("write");
    h.wait_for("every empty line", |records| records.len() == 200_000);
    let largest = h.largest_batch.load(Ordering::Relaxed);
    assert!(largest <= 2048 + 8192, "a batch of {largest} records");
}

#[test]
fn invalid_utf8_is_replaced_and_counted() {
    let h = Harness::new("app.log", "");
    fs::write(h.path("app.log"), b"ok\nbad \xff\xfe bytes\r\n").expect("write");
    h.wait_for("two records", |records| records.len() == 2);
    assert_eq!(h.messages()[1], "bad \u{fffd}\u{fffd} bytes");
    assert_eq!(h.counter(&h.metrics.invalid_utf8), 1);
}

#[test]
fn cri_partials_are_merged() {
    let h = Harness::new("*.log", "container: cri");
    let text = "2026-11-25T12:00:00.1Z stdout P first half, \n2026-11-25T12:00:00.2Z stderr F other\n2026-11-25T12:00:00.3Z stdout F second half\n";
    fs::write(h.path("pod.log"), text).expect("write");
    h.wait_for("two records", |records| records.len() == 2);
    let records = lock(&h.delivered).clone();
    let merged = records.iter().find(|r| r.message.starts_with("first")).expect("merged");
    assert_eq!(merged.message, "first half, second half", "{records:?}");
    assert_eq!(merged.attributes.get("stream"), Some(&Value::from("stdout")));
}

#[test]
fn docker_partials_are_merged() {
    let h = Harness::new("*.log", "container: docker");
    let text = concat!(
        r#"{"log":"a long ","stream":"stdout","time":"2026-11-25T12:00:00Z"}"#,
        "\n",
        r#"{"log":"line\n","stream":"stdout","time":"2026-11-25T12:00:01Z"}"#,
        "\n"
    );
    fs::write(h.path("c-json.log"), text).expect("write");
    h.wait_for("one record", |records| records.len() == 1);
    let record = lock(&h.delivered)[0].clone();
    assert_eq!(record.message, "a long line");
    assert_eq!(record.timestamp.to_string(), "2026-11-25T12:00:00Z");
}

#[test]
fn multiline_presets_join_stack_traces() {
    let h = Harness::new("*.log", "multiline: { preset: java, timeout: 50ms }");
    fs::copy("fixtures/multiline/java.log", h.path("java.log")).expect("copy");
    h.wait_for("three records", |records| records.len() == 3);
    let messages = h.messages();
    assert!(messages[1].starts_with("2026-11-25 12:00:01 ERROR request failed\njava.lang.IllegalStateException"));
    assert!(messages[1].ends_with("at com.shop.X.y(X.java:1)"));
}

/// Descriptors of this process that lead to `path`, deleted or not.
fn descriptors_on(path: &Path) -> usize {
    let deleted = format!("{} (deleted)", path.display());
    let Ok(fds) = fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    fds.filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target == path || target.as_os_str() == deleted.as_str())
        .count()
}

fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn rotations_while_the_sinks_are_stalled_lose_nothing() {
    let h = Harness::new("app.log*", "");
    h.stalled.store(true, Ordering::Relaxed);
    let app = h.path("app.log");
    // Far more than the queues hold: the tailer meets backpressure and stops reading.
    let mut expected = lines(0, 30_000);
    write_lines(&app, &expected);
    // Each rotation happens while the tailer waits for the sink; it must still open what
    // rotation creates, or what is deleted below is lost (it waited in deliver() before).
    let renamed = h.path("app.log.1");
    fs::rename(&app, &renamed).expect("rename");
    expected.extend(lines(30_000, 30_010));
    write_lines(&app, &expected[30_000..]);
    wait_until("the new app.log is open", || descriptors_on(&app) >= 1);
    let copy = h.path("app.log.2");
    copy_truncate(&app, &copy);
    expected.extend(lines(30_010, 30_030));
    write_lines(&app, &expected[30_010..]);
    wait_until("the copy is open", || descriptors_on(&copy) >= 1);
    let compressed = h.path("app.log.3");
    fs::rename(&app, &compressed).expect("rename");
    expected.extend(lines(30_030, 30_040));
    write_lines(&app, &expected[30_030..]);
    gzip(&compressed, &h.path("app.log.3.gz"));
    fs::remove_file(&compressed).expect("delete");
    wait_until("the newest app.log is open", || descriptors_on(&app) >= 1);
    for rotated in [renamed, copy, h.path("app.log.3.gz")] {
        fs::remove_file(rotated).expect("delete rotated");
    }
    h.stalled.store(false, Ordering::Relaxed);
    h.expect_exactly(&expected);
    assert_eq!(h.counter(&h.metrics.lost_bytes), 0);
}

#[test]
fn a_deleted_file_stays_open_until_its_records_are_acknowledged() {
    let h = Harness::new("app.log", "");
    h.stalled.store(true, Ordering::Relaxed);
    let app = h.path("app.log");
    let expected = lines(0, 3);
    write_lines(&app, &expected);
    wait_until("the lines are read", || h.counter(&h.metrics.lines) == 3);
    let rotated = h.path("app.log.1");
    fs::rename(&app, &rotated).expect("rename");
    fs::remove_file(&rotated).expect("delete");
    // Past the rotation grace and read to its end, but its records wait for the sink.
    std::thread::sleep(super::ROTATION_GRACE + Duration::from_secs(1));
    assert_eq!(descriptors_on(&rotated), 1, "the deleted file is still open");
    h.stalled.store(false, Ordering::Relaxed);
    h.expect_exactly(&expected);
    wait_until("the deleted file is closed once delivered", || descriptors_on(&rotated) == 0);
}

#[test]
fn a_file_deleted_before_it_got_a_descriptor_is_counted_lost() {
    let h = Harness::new("app.log*", "max_open_files: 2");
    h.stalled.store(true, Ordering::Relaxed);
    let app = h.path("app.log");
    let mut expected = lines(0, 30_000);
    write_lines(&app, &expected);
    let first = h.path("app.log.1");
    fs::rename(&app, &first).expect("rename");
    expected.extend(lines(30_000, 30_010));
    write_lines(&app, &expected[30_000..]);
    wait_until("the second file is open", || descriptors_on(&app) >= 1);
    // Both descriptors hold unread bytes: the third file waits for one...
    let second = h.path("app.log.2");
    fs::rename(&app, &second).expect("rename");
    write_lines(&app, &lines(30_010, 30_020));
    let files = || h.metrics.files.get_or_create(&InputMetrics::label("test")).get();
    wait_until("three files are followed", || files() == 3);
    assert_eq!(descriptors_on(&app), 0, "no descriptor for the third file");
    // ...and is deleted before it gets one: its bytes are lost, and counted.
    let size = fs::metadata(&app).expect("stat").len();
    fs::remove_file(&app).expect("delete");
    wait_until("the loss is counted", || h.counter(&h.metrics.lost_bytes) == size);
    // The two open ones are deleted too, but held open: nothing of them is lost.
    fs::remove_file(&first).expect("delete");
    fs::remove_file(&second).expect("delete");
    h.stalled.store(false, Ordering::Relaxed);
    h.expect_exactly(&expected);
    assert_eq!(h.counter(&h.metrics.lost_bytes), size);
}

#[test]
fn a_one_line_file_without_newline_is_identified_by_inode_after_a_while() {
    let h = Harness::new("*.log", "");
    let path = h.path("slow.log");
    append(&path, "no newline yet");
    // Not fingerprinted yet; once it falls back to device and inode, the rest arrives.
    h.wait_for("fallback identity", |records| {
        records.is_empty() && h.metrics.files.get_or_create(&InputMetrics::label("test")).get() == 1
    });
    append(&path, ", now complete\n");
    h.expect_exactly(&["no newline yet, now complete".to_owned()]);
}

#[test]
fn many_files_share_a_small_open_files_limit() {
    let h = Harness::new("*.log", "max_open_files: 3");
    let mut expected = Vec::new();
    for round in 0..3 {
        for file in 0..12 {
            let line = format!("file-{file}-round-{round}");
            append(&h.path(&format!("f{file}.log")), &format!("{line}\n"));
            expected.push(line);
        }
        h.expect_exactly(&expected);
    }
}

#[test]
fn thousands_of_files_with_few_descriptors() {
    let h = Harness::new("**/*.log", "max_open_files: 32");
    let mut expected = Vec::new();
    for dir in 0..15 {
        let pod = h.path(&format!("pod-{dir}"));
        fs::create_dir_all(&pod).expect("mkdir");
        for file in 0..100 {
            let line = format!("pod-{dir}-file-{file}");
            append(&pod.join(format!("{file}.log")), &format!("{line}\n"));
            expected.push(line);
        }
    }
    h.expect_exactly(&expected);
}

/// One step of the model-based test.
#[derive(Debug, Clone)]
enum Action {
    Write(usize),
    WritePartial,
    RotateRename,
    CopyTruncate,
    RotateGzip,
    DeleteRotated,
    Restart,
    Crash,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (1usize..200).prop_map(Action::Write),
        1 => Just(Action::WritePartial),
        1 => Just(Action::RotateRename),
        1 => Just(Action::CopyTruncate),
        1 => Just(Action::RotateGzip),
        1 => Just(Action::DeleteRotated),
        1 => Just(Action::Restart),
        1 => Just(Action::Crash),
    ]
}

/// The writing application and what it wrote.
struct Model {
    written: Vec<String>,
    partial: Option<String>,
    rotated: usize,
    crashed: bool,
}

impl Model {
    fn next_lines(&mut self, count: usize) -> Vec<String> {
        let from = self.written.len();
        let new = lines(from, from + count);
        self.written.extend(new.iter().cloned());
        new
    }

    /// Completes a partial line (the app finishes its write before rotating).
    fn complete_partial(&mut self, app: &Path) {
        if let Some(rest) = self.partial.take() {
            append(app, &format!("{rest}\n"));
        }
    }
}

fn run_model(actions: &[Action]) {
    let mut h = Harness::new("app.log*", "");
    let app = h.path("app.log");
    let mut model = Model { written: Vec::new(), partial: None, rotated: 0, crashed: false };
    for action in actions {
        match action {
            Action::Write(count) => {
                model.complete_partial(&app);
                let new = model.next_lines(*count);
                write_lines(&app, &new);
            }
            Action::WritePartial => {
                model.complete_partial(&app);
                let line = model.next_lines(1).remove(0);
                let (head, rest) = line.split_at(line.len() / 2);
                append(&app, head);
                model.partial = Some(rest.to_owned());
            }
            Action::RotateRename => {
                model.complete_partial(&app);
                model.rotated += 1;
                if app.exists() {
                    fs::rename(&app, h.path(&format!("app.log.{}", model.rotated))).expect("rename");
                }
            }
            Action::CopyTruncate => {
                model.complete_partial(&app);
                model.rotated += 1;
                if app.exists() {
                    copy_truncate(&app, &h.path(&format!("app.log.{}", model.rotated)));
                }
            }
            Action::RotateGzip => {
                model.complete_partial(&app);
                model.rotated += 1;
                if app.exists() {
                    let rotated = h.path(&format!("app.log.{}", model.rotated));
                    fs::rename(&app, &rotated).expect("rename");
                    File::create(&app).expect("create");
                    gzip(&rotated, &h.path(&format!("app.log.{}.gz", model.rotated)));
                    fs::remove_file(&rotated).expect("delete");
                }
            }
            Action::DeleteRotated => {
                // Only what was delivered may be deleted without loss.
                model.complete_partial(&app);
                expect_delivered(&h, &model);
                for entry in fs::read_dir(&h.logs).expect("read dir").flatten() {
                    if entry.file_name() != "app.log" {
                        fs::remove_file(entry.path()).expect("delete rotated");
                    }
                }
            }
            Action::Restart => h.restart(),
            Action::Crash => {
                // Stop without checkpointing what the last batches delivered.
                let snapshot = h.running.as_ref().map(|r| r.acks.snapshot()).unwrap_or_default();
                h.stop();
                h.store.save(&snapshot).expect("save older checkpoint");
                model.crashed = true;
                h.start();
            }
        }
    }
    model.complete_partial(&app);
    expect_delivered(&h, &model);
    if !model.crashed {
        // Nothing more arrives later (e.g. a compressed copy read again).
        std::thread::sleep(Duration::from_millis(300));
        h.expect_exactly(&model.written);
    }
}

/// Every line written was delivered: exactly once, or at least once after a crash.
fn expect_delivered(h: &Harness, model: &Model) {
    if !model.crashed {
        h.expect_exactly(&model.written);
        return;
    }
    let want: std::collections::BTreeSet<String> = model.written.iter().cloned().collect();
    h.wait_for("every line", |records| {
        let got: std::collections::BTreeSet<&str> = records.iter().map(|r| r.message.as_str()).collect();
        want.iter().all(|line| got.contains(line.as_str()))
    });
}

proptest! {
    // PROPTEST_CASES=500 for a longer hunt; 24 keeps the suite quick.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(24),
        max_shrink_iters: 50,
        ..ProptestConfig::default()
    })]

    /// Random write / rotate / truncate / compress / delete / restart sequences: every line
    /// written is delivered, and exactly once unless pillion crashed.
    #[test]
    fn no_line_is_lost_or_duplicated(actions in proptest::collection::vec(action(), 1..14)) {
        run_model(&actions);
    }
}

/// Found by the model: gzip rotations of an empty file, copytruncate of the new file, more
/// rotations, then a partial line.
#[test]
fn model_regression_rotations_around_empty_files() {
    use Action::*;
    run_model(&[
        Restart,
        Write(8),
        RotateGzip,
        RotateGzip,
        DeleteRotated,
        CopyTruncate,
        RotateRename,
        Write(155),
        RotateGzip,
        DeleteRotated,
        WritePartial,
    ]);
}

/// Found by the model: a copytruncate, then a rename of the truncated file, in quick succession.
#[test]
fn model_regression_copytruncate_then_rename() {
    use Action::*;
    run_model(&[WritePartial, Write(95), CopyTruncate, Write(130), RotateRename, RotateGzip, RotateRename]);
}

/// Found by the model: a copytruncate's copy reusing the inode of a rotated file deleted just
/// before, seen first after a restart.
#[test]
fn model_regression_copy_reusing_a_deleted_inode() {
    use Action::*;
    run_model(&[
        Write(143),
        RotateRename,
        Write(88),
        Restart,
        DeleteRotated,
        CopyTruncate,
        Write(85),
        Write(59),
        RotateRename,
        Restart,
        CopyTruncate,
    ]);
}

/// Found by the model: a copytruncate, then the truncated file rotated by rename and deleted
/// before discovery noticed the truncation.
#[test]
fn model_regression_truncated_then_rotated_away() {
    use Action::*;
    run_model(&[
        Write(15),
        Write(152),
        CopyTruncate,
        CopyTruncate,
        Write(153),
        Write(17),
        Write(82),
        CopyTruncate,
        RotateGzip,
        RotateRename,
        RotateRename,
    ]);
}

/// Reported from a model run on another branch: a rename, restarts around the deletion of the
/// rotated file, then a copytruncate.
#[test]
fn model_regression_restarts_around_a_deleted_rotation() {
    use Action::*;
    run_model(&[Write(1), RotateRename, Restart, Write(1), DeleteRotated, Restart, Restart, CopyTruncate]);
}

/// How many paths the tailer skipped for `reason`.
fn skipped(h: &Harness, reason: &'static str) -> u64 {
    let labels = crate::telemetry::metrics::SkippedLabels { input: "test".into(), reason };
    h.metrics.skipped_files.get_or_create(&labels).get()
}

/// Waits until `reason` was counted `count` times, then proves (by a marker line through a
/// regular file, which needs later scans) that it is not counted again while nothing changes.
fn expect_skipped_once(h: &Harness, reason: &'static str, count: u64, marker_file: &str) {
    let deadline = Instant::now() + DEADLINE;
    while skipped(h, reason) < count {
        assert!(Instant::now() < deadline, "{reason}: counted {} of {count}", skipped(h, reason));
        std::thread::sleep(Duration::from_millis(10));
    }
    let marker = format!("marker for {reason}");
    append(&h.path(marker_file), &format!("{marker}\n"));
    while !h.messages().contains(&marker) {
        assert!(Instant::now() < deadline, "marker not delivered");
        std::thread::sleep(Duration::from_millis(10));
    }
    // A few more polls (20ms each) after the marker.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(skipped(h, reason), count, "{reason} counted once per path");
}

#[test]
fn symlinks_out_of_the_watched_directory_are_not_followed() {
    let h = Harness::new("**/*.log", "");
    let outside = h.dir.path().join("outside");
    fs::create_dir_all(outside.join("deep")).expect("mkdir");
    fs::write(outside.join("token.log"), "SECRET-TOKEN\n").expect("write");
    fs::write(outside.join("deep/more.log"), "SECRET-DEEP\n").expect("write");
    write_lines(&h.path("inside-target.log"), &lines(0, 2));
    std::os::unix::fs::symlink(outside.join("token.log"), h.path("token.log")).expect("symlink");
    // `**` must not walk out through a link to a directory.
    std::os::unix::fs::symlink(&outside, h.path("tree")).expect("symlink");
    // A link whose target is inside the watched directory is followed (once: same inode).
    std::os::unix::fs::symlink(h.path("inside-target.log"), h.path("inside-link.log")).expect("symlink");
    expect_skipped_once(&h, "symlink_outside", 1, "app.log");
    let messages = h.messages();
    assert!(!messages.iter().any(|m| m.contains("SECRET")), "{messages:?}");
    assert_eq!(messages.iter().filter(|m| m.starts_with("line-")).count(), 2, "{messages:?}");
}

#[test]
fn follow_symlinks_follows_every_link() {
    let h = Harness::new("*.log", "follow_symlinks: true");
    let outside = h.dir.path().join("outside.txt");
    fs::write(&outside, "shared on purpose\n").expect("write");
    std::os::unix::fs::symlink(&outside, h.path("linked.log")).expect("symlink");
    h.expect_exactly(&["shared on purpose".to_owned()]);
    assert_eq!(skipped(&h, "symlink_outside"), 0);
}

#[test]
fn fifos_directories_and_pseudo_files_are_never_tailed() {
    let h = Harness::new("*.log", "follow_symlinks: true");
    let status = std::process::Command::new("mkfifo").arg(h.path("pipe.log")).status().expect("mkfifo");
    assert!(status.success());
    fs::create_dir(h.path("dir.log")).expect("mkdir");
    // procfs says size 0 and has content: read "from the start" at every poll, forever.
    std::os::unix::fs::symlink("/proc/self/status", h.path("status.log")).expect("symlink");
    expect_skipped_once(&h, "not_regular", 3, "app.log");
    let messages = h.messages();
    assert_eq!(messages, vec!["marker for not_regular".to_owned()]);
}

#[test]
fn procfs_links_are_outside_by_default() {
    let h = Harness::new("*.log", "");
    std::os::unix::fs::symlink("/proc/self/status", h.path("status.log")).expect("symlink");
    expect_skipped_once(&h, "symlink_outside", 1, "app.log");
}

#[test]
fn unreadable_files_are_warned_about_and_counted() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new("*.log", "follow_symlinks: true");
    // Root reads any file whatever its mode; nobody reads /proc/self/mem at offset 0 (EIO).
    let probe = h.dir.path().join("probe");
    fs::write(&probe, "x").expect("write");
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o000)).expect("chmod");
    if File::open(&probe).is_err() {
        let locked = h.path("locked.log");
        fs::write(&locked, "SECRET\n").expect("write");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");
    }
    std::os::unix::fs::symlink("/proc/self/mem", h.path("mem.log")).expect("symlink");
    let expected = if h.path("locked.log").exists() { 2 } else { 1 };
    expect_skipped_once(&h, "unreadable", expected, "app.log");
    assert!(!h.messages().iter().any(|m| m.contains("SECRET")));
}
