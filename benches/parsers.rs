//! Parser throughput on realistic lines: MiB/s (criterion's throughput) and ns/line (the
//! reported time divided by LINES_PER_ITER). Single thread.
//!
//! `cargo bench --bench parsers` (add `-- json` to run one parser).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jiff::Timestamp;
use pillion::parse::Parser;

/// Every iteration parses this many lines, cycling through the samples.
const LINES_PER_ITER: usize = 64;

const JSON: &[&str] = &[
    r#"{"ts":"2026-11-25T12:00:01.002Z","level":"info","msg":"request completed","method":"GET","path":"/api/cart/42","status":200,"duration_ms":12.4,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7"}"#,
    r#"{"level":30,"time":1764072001002,"pid":4242,"hostname":"checkout-7d9f","req":{"id":17,"method":"POST","url":"/api/orders"},"msg":"order accepted","order_id":"o-88412","items":3}"#,
    r#"{"@timestamp":"2026-11-25T12:00:01.250+01:00","log.level":"WARN","message":"slow downstream call to payments","service.name":"checkout","event.duration":950000000,"trace.id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#,
];

const LOGFMT: &[&str] = &[
    r#"time=2026-11-25T12:00:01.002Z level=info msg="request completed" method=GET path=/api/cart/42 status=200 duration=12.4ms trace_id=4bf92f3577b34da6a3ce929d0e0e4736"#,
    r#"ts=2026-11-25T12:00:02Z lvl=warn caller=worker.go:88 msg="retrying job \"welcome-email\"" job_id=8812 attempt=2 err="smtp: 421 try again later" queue=emails"#,
    r#"t=2026-11-25T12:00:03.5+00:00 level=debug msg="polling queue" queue=emails batch=10 empty"#,
];

const NGINX: &[&str] = &[
    r#"203.0.113.7 - - [25/Nov/2026:12:00:01 +0000] "GET /api/cart/42 HTTP/1.1" 200 512 "https://shop.example.com/cart" "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0""#,
    r#"2001:db8::1 - alice [25/Nov/2026:12:00:02 +0100] "POST /api/orders?coupon=XMAS HTTP/2.0" 201 87 "-" "okhttp/4.12.0""#,
    r#"198.51.100.23 - - [25/Nov/2026:12:00:03 -0700] "GET /static/app.3f9a1c.js HTTP/1.1" 304 0 "https://shop.example.com/" "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15""#,
];

const RAW: &[&str] = &[
    "2026-11-25 12:00:00,101 INFO  [main] c.e.Legacy - starting legacy billing export",
    "2026-11-25 12:00:02,900 ERROR [pool-1] c.e.Export - upload failed: connection reset by peer",
];

/// Unstructured lines as real systems write them, for `auto`'s time and level sniffing.
const TEXT: &[&str] = &[
    "2026-11-25 12:00:00,101 INFO  [main] c.e.Legacy - starting legacy billing export",
    "17/06/09 20:10:40 INFO executor.CoarseGrainedExecutorBackend: Registered signal handlers for [TERM, HUP, INT]",
    "03-17 16:13:38.811  1702  2395 D WindowManager: printFreezingDisplayLogsopening app wtoken = AppWindowToken{9f4ef63 token=Token{a64f992 ActivityRecord{de9231d u0 com.tencent.qt.qtl/.activity.info.NewsDetailXmlActivity t761}}}, allDrawn= false, startingDisplayed =  false, startingMoved =  false, isRelaunching =  false",
    "[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok /etc/httpd/conf/workers2.properties",
    "Dec 10 06:55:46 LabSZ sshd[24200]: reverse mapping checking getaddrinfo for ns.marryaldkfaczcz.com [173.234.31.186] failed - POSSIBLE BREAK-IN ATTEMPT!",
    "2015-07-29 17:41:44,747 - INFO  [QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181:FastLeaderElection@774] - Notification time out: 3200",
    "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating",
    "plain text without a time or a level, as a script might print it to its log file",
];

fn bench_parser(c: &mut Criterion, parser_name: &str, samples: &[&str]) {
    bench_named(c, parser_name, parser_name, samples);
}

/// Benches `parser_name` on `samples` under the id `id` (`auto_logfmt`: auto on logfmt lines).
fn bench_named(c: &mut Criterion, id: &str, parser_name: &str, samples: &[&str]) {
    let Some(parser) = Parser::by_name(parser_name) else {
        eprintln!("skipping {parser_name}: no such parser");
        return;
    };
    let lines: Vec<&[u8]> = samples.iter().cycle().take(LINES_PER_ITER).map(|l| l.as_bytes()).collect();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let resource = Arc::new(vec![("service.name".to_owned(), "bench".to_owned())]);
    let observed: Timestamp = "2026-11-25T12:00:05Z".parse().expect("timestamp");
    let mut group = c.benchmark_group(format!("parse/{LINES_PER_ITER}_lines"));
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(id, |b| {
        b.iter(|| {
            for line in &lines {
                black_box(parser.parse(black_box(line), observed, &resource));
            }
        })
    });
    group.finish();
}

fn parsers(c: &mut Criterion) {
    bench_parser(c, "json", JSON);
    bench_parser(c, "logfmt", LOGFMT);
    bench_parser(c, "auto", JSON);
    bench_named(c, "auto_logfmt", "auto", LOGFMT);
    bench_named(c, "auto_text", "auto", TEXT);
    bench_parser(c, "raw", RAW);
    bench_parser(c, "nginx_access", NGINX);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = parsers
}
criterion_main!(benches);
