//! The proxy's RED metric families (design.md, "Metrics"), named after the OpenTelemetry HTTP
//! semantic conventions in Prometheus form, with trace-id exemplars on the duration buckets.
//! The duration families are [`Bounded`]: each has a total series cap, past which new label
//! sets fold into `other`, so no client can grow `/metrics` without limit.

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::record::TraceId;

/// Buckets of `http_server_request_duration_seconds`, exactly as design.md lists them.
pub const SERVER_BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/// `{http_request_method, http_route, http_response_status_code[, error_type]}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ServerLabels {
    pub method: &'static str,
    pub route: Arc<str>,
    pub status: u16,
    /// Only on failures.
    pub error_type: Option<ErrorType>,
}

/// The `error_type` label: what went wrong, in a small closed set (semantic conventions'
/// `error.type`: the status code for a 5xx answer, else the failure's kind).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ErrorType {
    /// The app answered with this 5xx status.
    Status(u16),
    /// No answer within the timeout (504).
    Timeout,
    /// The app could not be reached (502).
    Connect,
    /// The connection to the app failed mid-request (502).
    Upstream,
    /// The outbound circuit breaker is open (503).
    CircuitOpen,
    /// The client sent something malformed, incomplete or too slowly (pillion's 4xx).
    ClientError,
    /// The client left before the response was complete (499 when before its head).
    ClientClosed,
}

impl ErrorType {
    pub fn as_label(self) -> std::borrow::Cow<'static, str> {
        match self {
            ErrorType::Status(code) => code.to_string().into(),
            ErrorType::Timeout => "timeout".into(),
            ErrorType::Connect => "connect_error".into(),
            ErrorType::Upstream => "upstream_error".into(),
            ErrorType::CircuitOpen => "circuit_open".into(),
            ErrorType::ClientError => "client_error".into(),
            ErrorType::ClientClosed => "client_closed".into(),
        }
    }

    /// The error type of a response status: 5xx only.
    pub fn of_status(status: u16) -> Option<ErrorType> {
        (status >= 500).then_some(ErrorType::Status(status))
    }
}

/// `{http_request_method, server_address, http_response_status_code[, error_type]}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ClientLabels {
    pub method: &'static str,
    pub server_address: Arc<str>,
    /// The named destination (`proxy.outbound.destinations[].host`), when the call was to one.
    pub destination: Option<Arc<str>>,
    pub status: u16,
    pub error_type: Option<ErrorType>,
}

/// `{http_request_method}`
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct MethodLabel {
    pub method: &'static str,
}

/// `{server_address}`
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct DestinationLabel {
    pub server_address: Arc<str>,
}

/// `{direction, outcome}` of `pillion_tls_handshakes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct HandshakeLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// `success` or `failure`.
    pub outcome: &'static str,
}

/// `{destination, state}` of `pillion_endpoints`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct EndpointLabels {
    pub destination: Arc<str>,
    /// `up` or `ejected`.
    pub state: &'static str,
}

/// No labels: a family of one series that appears only once it is set.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct NoLabels;

/// The mesh's TLS metrics, shared by both proxies and the identity's reloader.
#[derive(Clone, Default)]
pub struct TlsMetrics {
    pub handshakes: Family<HandshakeLabels, Counter>,
    /// Seconds since the epoch of the current certificate's notAfter.
    pub expiry: Family<NoLabels, Gauge>,
}

impl TlsMetrics {
    pub fn handshake(&self, direction: &'static str, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        self.handshakes.get_or_create(&HandshakeLabels { direction, outcome }).inc();
    }

    pub fn set_expiry(&self, not_after: i64) {
        self.expiry.get_or_create(&NoLabels).set(not_after);
    }
}

/// The exemplar label set: the trace a sample belongs to. The id is held as is (no allocation per
/// sampled request) and written as hex only when `/metrics` is scraped.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct TraceExemplar {
    pub trace_id: TraceId,
}

fn label(encoder: &mut LabelSetEncoder, key: &str, value: &str) -> fmt::Result {
    (key, value).encode(encoder.encode_label())
}

impl EncodeLabelSet for ServerLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        label(encoder, "http_request_method", self.method)?;
        label(encoder, "http_route", &self.route)?;
        ("http_response_status_code", self.status as u64).encode(encoder.encode_label())?;
        match self.error_type {
            Some(error) => label(encoder, "error_type", &error.as_label()),
            None => Ok(()),
        }
    }
}

impl EncodeLabelSet for ClientLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        label(encoder, "http_request_method", self.method)?;
        label(encoder, "server_address", &self.server_address)?;
        if let Some(destination) = &self.destination {
            label(encoder, "destination", destination)?;
        }
        ("http_response_status_code", self.status as u64).encode(encoder.encode_label())?;
        match self.error_type {
            Some(error) => label(encoder, "error_type", &error.as_label()),
            None => Ok(()),
        }
    }
}

impl EncodeLabelSet for MethodLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        label(encoder, "http_request_method", self.method)
    }
}

impl EncodeLabelSet for DestinationLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        label(encoder, "server_address", &self.server_address)
    }
}

impl EncodeLabelSet for HandshakeLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        label(encoder, "direction", self.direction)?;
        label(encoder, "outcome", self.outcome)
    }
}

impl EncodeLabelSet for EndpointLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        label(encoder, "destination", &self.destination)?;
        label(encoder, "state", self.state)
    }
}

impl EncodeLabelSet for NoLabels {
    fn encode(&self, _encoder: &mut LabelSetEncoder) -> fmt::Result {
        Ok(())
    }
}

impl EncodeLabelSet for TraceExemplar {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        label(encoder, "trace_id", &self.trace_id.to_string())
    }
}

type DurationFamily<L> =
    Family<L, HistogramWithExemplars<TraceExemplar>, fn() -> HistogramWithExemplars<TraceExemplar>>;

/// A label set with one value that clients influence (route, destination), which can fold.
pub trait Foldable: Clone + Hash + Eq + EncodeLabelSet + fmt::Debug + Send + Sync + 'static {
    /// The same labels with the client-influenced value replaced by `other`.
    fn folded(&self) -> Self;
    /// Folded further: the method too (`_OTHER`), leaving only the status and error type.
    fn folded_fully(&self) -> Self;
}

/// Series past the cap allowed for folded (`other`) label sets, before the method folds too.
const FOLDED_HEADROOM: usize = 100;

/// A duration histogram family with a total series cap: a new label set past the cap is folded
/// into `other` (and, past the headroom for those, into `_OTHER` method too). Every series made
/// is remembered so the series of a forgotten route can be removed.
#[derive(Clone)]
pub struct Bounded<L: Foldable> {
    family: DurationFamily<L>,
    cap: Arc<AtomicUsize>,
    series: Arc<Mutex<HashSet<L>>>,
}

impl<L: Foldable> Bounded<L> {
    fn new(cap: usize) -> Bounded<L> {
        Bounded {
            family: Family::new_with_constructor(server_histogram),
            cap: Arc::new(AtomicUsize::new(cap)),
            series: Arc::default(),
        }
    }

    /// Sets the series cap (done once, when the proxy starts with its configured bounds).
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// Records one duration under `labels`, or under their folded form past the cap.
    pub fn observe(&self, labels: &L, seconds: f64, exemplar: Option<TraceExemplar>) {
        if let Some(histogram) = self.family.get(labels) {
            histogram.observe(seconds, exemplar, None);
            return;
        }
        let labels = self.admit(labels);
        self.family.get_or_create(&labels).observe(seconds, exemplar, None);
    }

    /// The label set a new series is made under.
    fn admit(&self, labels: &L) -> L {
        let cap = self.cap.load(Ordering::Relaxed);
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if series.contains(labels) || series.len() < cap {
            series.insert(labels.clone());
            return labels.clone();
        }
        let folded = labels.folded();
        if series.contains(&folded) || series.len() < cap + FOLDED_HEADROOM {
            series.insert(folded.clone());
            return folded;
        }
        let folded = labels.folded_fully();
        series.insert(folded.clone());
        folded
    }

    /// Removes every series `matches` selects (those of a forgotten route).
    pub fn forget(&self, matches: impl Fn(&L) -> bool) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series.retain(|labels| {
            let forget = matches(labels);
            if forget {
                self.family.remove(labels);
            }
            !forget
        });
    }

    /// Series currently exported.
    pub fn len(&self) -> usize {
        self.series.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(test)]
    fn contains(&self, labels: &L) -> bool {
        self.family.get(labels).is_some()
    }
}

impl Foldable for ServerLabels {
    fn folded(&self) -> Self {
        ServerLabels { route: Arc::from(super::route::OTHER), ..self.clone() }
    }
    fn folded_fully(&self) -> Self {
        ServerLabels { method: "_OTHER", ..self.folded() }
    }
}

impl Foldable for ClientLabels {
    fn folded(&self) -> Self {
        ClientLabels { server_address: Arc::from(super::route::OTHER), ..self.clone() }
    }
    fn folded_fully(&self) -> Self {
        ClientLabels { method: "_OTHER", ..self.folded() }
    }
}

fn server_histogram() -> HistogramWithExemplars<TraceExemplar> {
    HistogramWithExemplars::new(SERVER_BUCKETS.into_iter())
}

/// The series cap of a duration family until the proxy sets its own from its configuration.
const DEFAULT_SERIES_CAP: usize = 300;

/// The proxy's metric families; cheap to clone (every family is an `Arc` inside).
#[derive(Clone)]
pub struct ProxyMetrics {
    pub server_duration: Bounded<ServerLabels>,
    pub server_active: Family<MethodLabel, Gauge>,
    pub client_duration: Bounded<ClientLabels>,
    pub client_active: Family<MethodLabel, Gauge>,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: Family<DestinationLabel, Gauge>,
    /// Access-log records dropped because the log pipeline was full.
    pub access_log_dropped: Counter,
    /// mTLS handshakes and the certificate's expiry.
    pub tls: TlsMetrics,
    /// Named destinations' endpoints by state.
    pub endpoints: Family<EndpointLabels, Gauge>,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        ProxyMetrics {
            server_duration: Bounded::new(DEFAULT_SERIES_CAP),
            server_active: Family::default(),
            client_duration: Bounded::new(DEFAULT_SERIES_CAP),
            client_active: Family::default(),
            breaker_state: Family::default(),
            access_log_dropped: Counter::default(),
            tls: TlsMetrics::default(),
            endpoints: Family::default(),
        }
    }
}

impl ProxyMetrics {
    /// Registers every family in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests proxied to the app",
            self.server_duration.family.clone(),
        );
        registry.register("http_server_active_requests", "Inbound HTTP requests in flight", self.server_active.clone());
        registry.register(
            "http_client_request_duration_seconds",
            "Duration of the app's outbound HTTP requests through the egress proxy",
            self.client_duration.family.clone(),
        );
        registry.register(
            "http_client_active_requests",
            "Outbound HTTP requests in flight",
            self.client_active.clone(),
        );
        registry.register(
            "pillion_circuit_breaker_state",
            "Outbound circuit breaker per destination: 0 closed, 1 open, 2 half-open",
            self.breaker_state.clone(),
        );
        registry.register(
            "pillion_access_log_dropped",
            "Access-log records dropped because the log pipeline was full",
            self.access_log_dropped.clone(),
        );
        registry.register(
            "pillion_tls_handshakes",
            "mTLS handshakes by direction (inbound, outbound) and outcome (success, failure)",
            self.tls.handshakes.clone(),
        );
        registry.register(
            "pillion_tls_certificate_expiry_seconds",
            "notAfter of the mesh certificate in use, in seconds since the epoch",
            self.tls.expiry.clone(),
        );
        registry.register(
            "pillion_endpoints",
            "Endpoints of named outbound destinations by state (up, ejected)",
            self.endpoints.clone(),
        );
    }
}

/// Every value [`method_label`] gives.
pub const METHOD_LABELS: [&str; 10] =
    ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "_OTHER"];

/// A gauge per method label, looked up in its family once: a request adjusts its method's gauge
/// without the family's lock and hashing. Gauges appear in the family on first use, as before.
pub struct MethodGauges {
    family: Family<MethodLabel, Gauge>,
    gauges: [std::sync::OnceLock<Gauge>; METHOD_LABELS.len()],
}

impl MethodGauges {
    pub fn new(family: &Family<MethodLabel, Gauge>) -> MethodGauges {
        MethodGauges { family: family.clone(), gauges: Default::default() }
    }

    /// The gauge of `method`, a value of [`method_label`].
    pub fn get(&self, method: &'static str) -> &Gauge {
        let index = METHOD_LABELS.iter().position(|label| *label == method).unwrap_or(METHOD_LABELS.len() - 1);
        self.gauges[index].get_or_init(|| self.family.get_or_create(&MethodLabel { method }).clone())
    }
}

/// The method as a bounded label value: the standard methods, else `_OTHER` (semantic conventions).
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_type_only_appears_on_failures() {
        let metrics = ProxyMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let ok = ServerLabels { method: "GET", route: Arc::from("/a"), status: 200, error_type: None };
        let failed = ServerLabels { error_type: Some(ErrorType::Timeout), status: 504, ..ok.clone() };
        metrics.server_duration.observe(&ok, 0.001, None);
        let trace_id =
            TraceId([0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36]);
        let exemplar = TraceExemplar { trace_id };
        metrics.server_duration.observe(&failed, 0.2, Some(exemplar));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains(r#"http_server_request_duration_seconds_count{http_request_method="GET",http_route="/a",http_response_status_code="200"} 1"#), "{text}");
        assert!(text.contains(r#"http_response_status_code="504",error_type="timeout""#), "{text}");
        assert!(text.contains(r#"# {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.2"#), "{text}");
    }

    #[test]
    fn series_past_the_cap_fold_into_other_and_forgotten_routes_go() {
        let family: Bounded<ServerLabels> = Bounded::new(3);
        let labels =
            |route: &str, status| ServerLabels { method: "GET", route: Arc::from(route), status, error_type: None };
        for i in 0..3 {
            family.observe(&labels(&format!("/r{i}"), 200), 0.1, None);
        }
        family.observe(&labels("/r9", 200), 0.1, None);
        assert!(family.contains(&labels("other", 200)));
        for status in 200..(200 + 2 * FOLDED_HEADROOM as u16) {
            family.observe(&labels("/new", status), 0.1, None);
        }
        assert!(family.len() <= 3 + FOLDED_HEADROOM + 2 * FOLDED_HEADROOM, "{}", family.len());
        assert!(family.contains(&ServerLabels { method: "_OTHER", ..labels("other", 399) }));
        family.forget(|l| &*l.route == "/r1");
        assert!(!family.contains(&labels("/r1", 200)));
        assert!(family.contains(&labels("/r0", 200)));
    }
}
