//! pillion: an observability sidecar. It tails an app's log files, parses and normalizes
//! every line into one [`record::Record`] schema and ships it to sinks, acknowledging back to
//! a checkpoint so nothing is lost; and proxies the app's port to record RED metrics and
//! traces.
//!
//! ```text
//!  files on shared volume                                    Loki / Elasticsearch / stdout / file
//!         │                                                            ▲
//!    tail (discover, read, rotate, checkpoint) ──► frame (lines) ──► parse (json, logfmt, regex)
//!         ──► normalize (Record) ──► transforms ──► fan-out ──► sinks (write, ack)
//!         ◄───────────── acknowledgements: checkpoint = longest fully delivered prefix ◄──┘
//!
//!  client ──► proxy (inbound) ──► app          RED metrics ──► /metrics (admin) ◄── Prometheus
//!               └─ spans ──► channel ──► OTLP exporter ──► collector;  access log ──► fan-out
//! ```
//!
//! # Layout
//!
//! - [`config`]: the YAML schema, `${VAR}` interpolation, units, and the validated [`config::Config`].
//! - [`tail`]: file discovery, identity (fingerprints), rotation, truncation, compressed
//!   rotated files, checkpoint persistence.
//! - [`frame`]: bytes into records with bounded memory: lines, CRI/Docker unwrapping, multiline.
//! - [`parse`]: the parsers that turn a line into a record: json, logfmt, raw, auto, and the
//!   declarative regex parsers of `parsers/*.yaml` and `logs.parsers`.
//! - [`record`]: the normalized record and its JSON form; depends on nothing else here.
//! - [`transform`]: drop, rename, add, remove, redact, sample.
//! - [`pipeline`]: batches downstream, acknowledgements upstream.
//! - [`sink`]: where records go: stdout, file, Loki, Elasticsearch, OTLP; batching, retries, dead letters.
//! - [`proxy`]: the inbound reverse proxy and outbound egress proxy: RED metrics, routes, spans.
//! - [`telemetry`]: the metrics registry, process metrics, log output, OTLP span export.
//! - [`admin`]: the admin HTTP server.
//! - [`redact`]: the one redaction function for /config, pillion's logs and error messages.
//! - [`app`]: start-up and ordered shutdown.
//! - [`backoff`]: the exponential, jittered wait before a retry (sinks, egress proxy).

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod backoff;
pub mod config;
pub mod frame;
mod net;
pub mod parse;
pub mod pipeline;
pub mod proxy;
pub mod record;
pub mod redact;
pub mod sink;
pub mod tail;
pub mod telemetry;
pub mod transform;
