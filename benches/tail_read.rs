//! Read + frame throughput of the tailer's hot path on a 200 MB file from the page cache: the
//! file read in `READ_CHUNK` pieces (what `cat` does) and framed into lines by the same
//! [`Assembler`] the tailer uses. `bench/tail_throughput.sh` runs this next to
//! `cat file > /dev/null` on the same file.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pillion::frame::ContainerFormat;
use pillion::frame::{Assembler, FrameSettings};
use pillion::tail::READ_CHUNK;

const SIZE: u64 = 200 * 1000 * 1000;

/// `$PILLION_BENCH_FILE`, or a 200 MB log in the temp directory (made once).
fn data_file() -> PathBuf {
    let path = std::env::var_os("PILLION_BENCH_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("pillion-bench-200MB.log"));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= SIZE) {
        return path;
    }
    let mut out = std::io::BufWriter::new(File::create(&path).expect("create bench file"));
    let mut written = 0u64;
    let mut i = 0u64;
    while written < SIZE {
        let line = format!(
            "2026-11-25T12:00:{:02}.{:03}Z INFO [worker-{}] request {i} completed in {} ms path=/api/orders/{}\n",
            i % 60,
            i % 1000,
            i % 8,
            i % 250,
            i % 9973
        );
        out.write_all(line.as_bytes()).expect("write bench file");
        written += line.len() as u64;
        i += 1;
    }
    out.flush().expect("flush bench file");
    path
}

fn read_all(path: &PathBuf, mut each: impl FnMut(&[u8], u64)) -> u64 {
    let mut file = File::open(path).expect("open");
    let mut buffer = vec![0; READ_CHUNK];
    let mut offset = 0;
    loop {
        let n = file.read(&mut buffer).expect("read");
        if n == 0 {
            return offset;
        }
        each(&buffer[..n], offset);
        offset += n as u64;
    }
}

fn count_lines(path: &PathBuf, settings: &FrameSettings) -> u64 {
    let mut assembler = Assembler::new(settings);
    let mut lines = 0u64;
    read_all(path, |chunk, offset| assembler.push(chunk, offset, &mut |_| lines += 1));
    lines
}

fn tail_read(c: &mut Criterion) {
    let path = data_file();
    let size = std::fs::metadata(&path).expect("stat").len();
    let settings = FrameSettings { max_line_bytes: 256 * 1024, container: ContainerFormat::None, multiline: None };
    let lines = count_lines(&path, &settings);
    eprintln!("bench file {} : {size} bytes, {lines} lines", path.display());

    let mut bytes = c.benchmark_group("tail_read_bytes");
    bytes.sample_size(10).measurement_time(Duration::from_secs(15)).throughput(Throughput::Bytes(size));
    bytes.bench_function("read_only", |b| b.iter(|| read_all(&path, |_, _| {})));
    bytes.bench_function("read_and_frame", |b| b.iter(|| count_lines(&path, &settings)));
    bytes.finish();

    let mut elements = c.benchmark_group("tail_read_lines");
    elements.sample_size(10).measurement_time(Duration::from_secs(15)).throughput(Throughput::Elements(lines));
    elements.bench_function("read_and_frame", |b| b.iter(|| count_lines(&path, &settings)));
    elements.finish();
}

criterion_group!(benches, tail_read);
criterion_main!(benches);
