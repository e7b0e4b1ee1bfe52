//! Throughput of the per-line hot path as the tailer runs it: framing a chunk into lines and
//! parsing each line into a Record, for JSON and plain lines.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pillion::frame::LineFramer;
use pillion::parse::Parser;

fn sample(kind: &str, lines: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..lines {
        let line = match kind {
            "json" => format!(
                r#"{{"ts":"2026-11-25T12:00:{:02}.123Z","level":"info","msg":"request completed","method":"GET","path":"/api/cart/{i}","status":200,"duration_ms":12.4,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}}"#,
                i % 60
            ),
            _ => format!("2026-11-25 12:00:{:02},101 INFO  [main] c.e.Legacy - processed order {i} in 12 ms", i % 60),
        };
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out
}

fn frame_and_parse(c: &mut Criterion) {
    let resource = Arc::new(vec![("service.name".to_owned(), "bench".to_owned())]);
    let observed = jiff::Timestamp::now();
    for (name, kind, parser) in [("json", "json", "json"), ("auto_plain", "plain", "auto")] {
        let data = sample(kind, 10_000);
        let mut group = c.benchmark_group("frame_and_parse");
        group.throughput(Throughput::Bytes(data.len() as u64));
        let Some(parser) = Parser::by_name(parser) else {
            panic!("built-in parser {parser} is missing");
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut framer = LineFramer::new(256 * 1024);
                let mut count = 0usize;
                framer.push(&data, 0, |line| {
                    let parsed = parser.parse(line.bytes, observed, &resource);
                    count += parsed.record.message.len();
                });
                count
            })
        });
        group.bench_function(format!("{name}_frame_only"), |b| {
            b.iter(|| {
                let mut framer = LineFramer::new(256 * 1024);
                let mut count = 0usize;
                framer.push(&data, 0, |line| count += line.bytes.len());
                count
            })
        });
        group.finish();
    }
}

criterion_group!(benches, frame_and_parse);
criterion_main!(benches);
