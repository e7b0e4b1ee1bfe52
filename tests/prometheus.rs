//! The operating kit under deploy/ against the real Prometheus tools: the alert rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`), and every panel of the
//! Grafana dashboard evaluates, with data, on a real Prometheus scraping a busy pillion (which
//! also loads the alert rules and evaluates them without errors). CI installs Debian's
//! prometheus package (promtool and the server), so there these tests must run: they only skip
//! when the tools are absent and CI is not set.

mod proxy_support;
mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::receiver::Receiver;
use support::{Pillion, append, eventually, http_get, write_config};

fn tool_available(name: &str) -> bool {
    let available = Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success());
    if !available {
        assert!(std::env::var_os("CI").is_none(), "{name} is required in CI (.ci/run installs prometheus)");
        eprintln!("skipping: {name} not installed (apt-get install prometheus)");
    }
    available
}

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

fn promtool(args: &[&str], file: &Path) -> String {
    let output = Command::new("promtool")
        .args(args)
        .arg(file)
        .current_dir(file.parent().expect("a file in a directory"))
        .output()
        .expect("run promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {} {} failed:\n{text}", args.join(" "), file.display());
    text
}

#[test]
fn alert_rules_pass_promtool_check() {
    if !tool_available("promtool") {
        return;
    }
    let text = promtool(&["check", "rules"], &deploy("prometheus/alerts.yaml"));
    assert!(text.contains("SUCCESS: 9 rules found"), "{text}");
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    if !tool_available("promtool") {
        return;
    }
    let text = promtool(&["test", "rules"], &deploy("prometheus/alerts_test.yaml"));
    assert!(text.contains("SUCCESS"), "{text}");
}

/// Every alert has a firing and a silent case in alerts_test.yaml, and a runbook in the README.
#[test]
fn every_alert_is_tested_and_has_a_runbook() {
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yaml")).expect("alerts.yaml");
    let tests = std::fs::read_to_string(deploy("prometheus/alerts_test.yaml")).expect("alerts_test.yaml");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let alerts: Vec<&str> = rules.lines().filter_map(|line| line.trim().strip_prefix("- alert: ")).collect();
    assert_eq!(alerts.len(), 9, "{alerts:?}");
    for alert in alerts {
        let evaluations = tests.matches(&format!("alertname: {alert}\n")).count();
        assert!(evaluations >= 2, "{alert}: {evaluations} evaluations in alerts_test.yaml, want firing and silent");
        let firing = tests.matches(&format!("alertname: {alert}\n        exp_alerts:")).count();
        assert!(firing >= 1 && evaluations > firing, "{alert}: want firing and silent evaluations");
        assert!(readme.contains(&format!("#### {alert}")), "{alert}: no runbook in README.md");
    }
}

/// Every family whose label values the config fixes is exported at 0 from start-up, before any
/// file exists or any record was sent: a panel or an alert (lost bytes, dead letters...) sees
/// the series before anything has gone wrong.
#[test]
fn series_exist_before_their_first_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "admin: { listen: \"127.0.0.1:0\" }\nlogs:\n  inputs: [{ name: app, paths: [\"logs/*.log\"], format: logfmt }]\n  sinks:\n    - { name: out, type: file, path: out.ndjson }\n    - { name: loki, type: loki, endpoint: \"http://127.0.0.1:9\" }\n",
    );
    let mut pillion = Pillion::start(dir.path(), &config);
    let admin = pillion.admin_address();
    // Inputs and sinks are declared before the admin server starts; the network sink's request
    // families when it starts, just before pillion reports ready.
    eventually(Duration::from_secs(10), "ready", || (http_get(admin, "/readyz", &[]).0 == 200).then_some(()));
    let (_, _, body) = http_get(admin, "/metrics", &[]);
    let mut missing = Vec::new();
    for family in [
        "pillion_input_files",
        "pillion_input_bytes_total",
        "pillion_input_lines_total",
        "pillion_input_lag_bytes",
        "pillion_input_lines_truncated_total",
        "pillion_input_truncations_total",
        "pillion_input_rotations_total",
        "pillion_input_invalid_utf8_lines_total",
        "pillion_input_lost_bytes_total",
    ] {
        missing.push(format!("{family}{{input=\"app\"}} 0"));
    }
    missing.push("pillion_parse_errors_total{input=\"app\",parser=\"logfmt\"} 0".to_owned());
    for sink in ["out", "loki"] {
        for outcome in ["sent", "retried", "dead_lettered"] {
            missing.push(format!("pillion_sink_events_total{{sink=\"{sink}\",outcome=\"{outcome}\"}} 0"));
        }
        missing.push(format!("pillion_sink_bytes_total{{sink=\"{sink}\"}} 0"));
        missing.push(format!("pillion_sink_request_duration_seconds_count{{sink=\"{sink}\"}} 0"));
    }
    for family in ["pillion_sink_retries_total", "pillion_sink_in_flight_requests", "pillion_sink_batches_total"] {
        missing.push(format!("{family}{{sink=\"loki\"}} 0"));
    }
    missing.push("pillion_tap_dropped_records_total 0".to_owned());
    missing.retain(|series| !body.lines().any(|line| line == series));
    assert!(missing.is_empty(), "missing at start-up: {missing:#?}\n--- metrics ---\n{body}");
    pillion.signal("TERM");
    assert!(pillion.wait(Duration::from_secs(20)).success());
}

/// A running Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    address: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (Prometheus cannot report the port it picked for :0).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second as job "pillion", with the target labels
    /// of deploy/prometheus/scrape.yaml, and evaluating the alert rules.
    fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        let config = dir.join("prometheus.yml");
        let rules = deploy("prometheus/alerts.yaml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: [\"{}\"]\nscrape_configs:\n  - job_name: pillion\n    static_configs:\n      - targets: [\"{target}\"]\n        labels: {{ namespace: shop, service: checkout, pod: checkout-0 }}\n",
                rules.display()
            ),
        )
        .expect("write prometheus.yml");
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={address}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn prometheus");
        let prometheus = Prometheus { child, address };
        eventually(Duration::from_secs(30), "prometheus ready", || {
            std::net::TcpStream::connect(address).ok()?;
            (http_get(address, "/-/ready", &[]).0 == 200).then_some(())
        });
        prometheus
    }

    /// GETs an API path and returns the decoded JSON.
    fn api(&self, path: &str) -> serde_json::Value {
        let (status, head, body) = http_get(self.address, path, &[]);
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(&body) } else { body };
        let value: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: status {status}, not JSON ({e}): {body}"));
        value
    }

    fn query(&self, expr: &str) -> serde_json::Value {
        let encoded: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        self.api(&format!("/api/v1/query?query={encoded}"))
    }
}

/// The body of an HTTP/1.1 chunked response.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The dashboard's variables as the test resolves them; `$__rate_interval` spans several of the
/// 1 s scrapes.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "10s")
        .replace("$__range", "1m")
        .replace("$service", "checkout")
        .replace("$pod", "checkout-0")
        .replace("$route", ".*")
}

/// Requests through the inbound proxy (ok, 5xx, slow) and the egress proxy (to a refused port,
/// which opens the breaker), and log lines (some that the Loki sink dead-letters, some that do
/// not parse), until `stop`.
fn traffic(
    inbound: SocketAddr,
    outbound: SocketAddr,
    logs: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let _ = http_get(inbound, &format!("/api/users/{i}"), &[]);
            let _ = http_get(inbound, "/flaky", &[]);
            if i % 5 == 0 {
                let _ = http_get(inbound, "/slow?ms=30", &[]);
                let _ = http_get(outbound, "http://127.0.0.1:9/egress", &[]);
            }
            let level = if i % 10 == 0 { "error" } else { "info" };
            append(&logs, &[format!("{{\"level\":\"{level}\",\"msg\":\"request {i}\"}}"), "{broken".to_owned()]);
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

#[test]
fn every_dashboard_panel_evaluates_on_a_real_prometheus() {
    if !tool_available("prometheus") {
        return;
    }
    let started = Instant::now();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/pillion.json")).expect("dashboard"))
            .expect("JSON");
    let rt = proxy_support::runtime();
    let upstream = proxy_support::Upstream::start(&rt);
    upstream.healthy.store(false, Ordering::SeqCst);
    let loki = Receiver::start();
    loki.reject_streams_containing(r#"level="error""#);

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
    let config = write_config(
        dir.path(),
        &format!(
            "admin: {{ listen: \"127.0.0.1:0\" }}\nshutdown_timeout: 3s\nservice: {{ name: checkout }}\nlogs:\n  inputs: [{{ name: app, paths: [\"logs/*.log\"], format: json, poll_interval: 50ms }}]\n  sinks:\n    - {{ name: out, type: file, path: out.ndjson }}\n    - {{ name: loki, type: loki, endpoint: \"{}\", encoding: json, labels: [level], batch: {{ max_events: 50, timeout: 100ms }} }}\nproxy:\n  inbound: {{ listen: \"127.0.0.1:0\", upstream: \"http://{}\", routes: [\"/api/users/{{id}}\", \"/flaky\", \"/slow\"] }}\n  outbound: {{ listen: \"127.0.0.1:0\", timeout: 1s, circuit_breaker: {{ consecutive_failures: 2, open_for: 2s }} }}\ntracing:\n  otlp: {{ endpoint: \"http://127.0.0.1:9\", protocol: http/protobuf }}\n",
            loki.url(),
            upstream.address
        ),
    );
    let mut pillion = Pillion::start(dir.path(), &config);
    let admin = pillion.admin_address();
    let inbound = proxy_support::log_address(&mut pillion, "proxy listening");
    let outbound = proxy_support::log_address(&mut pillion, "egress proxy listening");
    let prometheus = Prometheus::start(dir.path(), admin);
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(inbound, outbound, dir.path().join("logs/app.log"), Arc::clone(&stop));

    // The variables resolve to the test's target.
    eventually(Duration::from_secs(30), "the service variable", || {
        let values = prometheus.api("/api/v1/label/service/values?match[]=up%7Bjob%3D%22pillion%22%7D");
        (values["data"] == serde_json::json!(["checkout"])).then_some(())
    });
    // Enough scrapes for every rate window, and the slower counters (dead letters, dropped
    // spans) to have moved.
    eventually(Duration::from_secs(30), "dead letters and dropped spans scraped", || {
        let moved = |expr: &str| prometheus.query(expr)["data"]["result"].as_array().is_some_and(|r| !r.is_empty());
        (moved(r#"increase(pillion_sink_events_total{outcome="dead_lettered"}[10s]) > 0"#)
            && moved("increase(pillion_spans_dropped_total[10s]) > 0")
            && moved("count_over_time(up[1m]) > 10"))
        .then_some(())
    });
    let route_values = prometheus.api("/api/v1/label/http_route/values");
    assert!(route_values["data"].to_string().contains("/api/users/{id}"), "{route_values}");

    let mut empty = Vec::new();
    let mut evaluated = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        let Some(targets) = panel["targets"].as_array() else { continue };
        let title = panel["title"].as_str().unwrap_or("?");
        let mut has_data = false;
        for target in targets {
            let expr = substitute(target["expr"].as_str().expect("expr"));
            let answer = prometheus.query(&expr);
            assert_eq!(answer["status"], "success", "panel {title:?}: {expr}\n{answer}");
            has_data |= answer["data"]["result"].as_array().is_some_and(|r| !r.is_empty());
            evaluated += 1;
        }
        if !has_data {
            empty.push(title.to_owned());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    eprintln!("{evaluated} expressions evaluated; panels without data: {empty:?}");
    assert!(evaluated >= 25, "{evaluated} expressions");
    assert!(empty.is_empty(), "panels without data: {empty:?}");

    // Prometheus loaded the alert rules and evaluates all of them on this data without error.
    let rules = prometheus.api("/api/v1/rules");
    let loaded: Vec<&serde_json::Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(loaded.len(), 9, "{rules}");
    for rule in loaded {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    pillion.signal("TERM");
    let _ = pillion.wait(Duration::from_secs(20));
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
}
