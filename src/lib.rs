//! pillion: an observability sidecar. It tails an app's log files, parses and normalizes
//! every line into one [`record::Record`] schema and ships it to sinks, acknowledging back to
//! a checkpoint so nothing is lost; and (to come) proxies the app's port to record RED metrics
//! and traces.
//!
//! ```text
//!  files on shared volume                                    Loki / Elasticsearch / stdout / file
//!         │                                                            ▲
//!    tail (discover, read, rotate, checkpoint) ──► frame (lines) ──► parse (json, logfmt, regex)
//!         ──► normalize (Record) ──► transforms ──► fan-out ──► sinks (write, ack)
//!         ◄───────────── acknowledgements: checkpoint = longest fully delivered prefix ◄──┘
//!
//!  client ──► proxy (inbound) ──► app          RED metrics ──► /metrics (admin) ◄── Prometheus
//! ```
//!
//! # Layout
//!
//! - [`config`]: the YAML schema, `${VAR}` interpolation, units, and the validated [`config::Config`].
//! - [`tail`]: file discovery and reading, rotation and truncation, checkpoint persistence.
//! - [`frame`]: splitting bytes into lines with bounded memory.
//! - [`parse`]: the parsers that turn a line into a record: json, logfmt, raw, auto, and the
//!   declarative regex parsers of `parsers/*.yaml` and `logs.parsers`.
//! - [`record`]: the normalized record and its JSON form; depends on nothing else here.
//! - [`transform`]: drop, rename, add, remove, redact, sample.
//! - [`pipeline`]: batches downstream, acknowledgements upstream.
//! - [`sink`]: where records go (stdout, file; Loki, Elasticsearch and OTLP to come).
//! - [`telemetry`]: pillion's own metrics registry, process metrics and log output.
//! - [`admin`]: the admin HTTP server.
//! - [`app`]: start-up and ordered shutdown.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod config;
pub mod frame;
pub mod parse;
pub mod pipeline;
pub mod record;
pub mod sink;
pub mod tail;
pub mod telemetry;
pub mod transform;
