//! The end of a proxied request, shared by both proxies: [`InFlight`] counts the request in its
//! pre-resolved `*_active_requests` gauge and in its connection while it lives, and [`Finish`]
//! records the outcome exactly once: when the response body is done, or, if the request is
//! dropped before that (the client left), as 499 `client_closed`. Either way the span ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};
use prometheus_client::metrics::gauge::Gauge;

use super::body::{BodyEnd, Completion, ProxyBody};
use super::conn::Activity;
use super::metrics::{ErrorType, TraceExemplar};
use super::span::RequestSpan;
use crate::record::{SpanId, TraceId};
use crate::telemetry::traces::Tracing;

/// The status recorded for a request whose client left before its response head (nginx's).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// A request in flight: in its method's active-requests gauge and its connection's activity.
pub struct InFlight {
    active: Gauge,
    activity: Option<Arc<Activity>>,
}

impl InFlight {
    pub fn new(active: &Gauge, activity: Option<Arc<Activity>>) -> InFlight {
        active.inc();
        if let Some(activity) = &activity {
            activity.request_started();
        }
        InFlight { active: active.clone(), activity }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.active.dec();
        if let Some(activity) = &self.activity {
            activity.request_finished();
        }
    }
}

/// How a request ended, as recorded.
pub struct Outcome {
    pub status: u16,
    pub error: Option<ErrorType>,
    pub duration: Duration,
    pub body_bytes: u64,
    /// The sampled span's trace id (for exemplars) and ids (for access logs).
    pub exemplar: Option<TraceExemplar>,
    pub ids: Option<(TraceId, SpanId)>,
}

/// What each proxy records about a finished request (its metric labels, its access log).
pub trait Recorder: Send + 'static {
    fn record(self, outcome: &Outcome);
}

/// Records a request's outcome exactly once, ending its span.
pub struct Finish<R: Recorder> {
    recorder: Option<R>,
    started: Instant,
    span: Option<RequestSpan>,
    tracing: Option<Arc<Tracing>>,
    in_flight: Option<InFlight>,
}

impl<R: Recorder> Finish<R> {
    pub fn new(recorder: R, started: Instant, in_flight: InFlight, tracing: Option<Arc<Tracing>>) -> Finish<R> {
        Finish { recorder: Some(recorder), started, span: None, tracing, in_flight: Some(in_flight) }
    }

    pub fn set_span(&mut self, span: Option<RequestSpan>) {
        self.span = span;
    }

    /// The proxy's own record of the request, until it is recorded.
    pub fn recorder_mut(&mut self) -> Option<&mut R> {
        self.recorder.as_mut()
    }

    fn record(&mut self, status: u16, error: Option<ErrorType>, body_bytes: u64) {
        let Some(recorder) = self.recorder.take() else { return };
        let span = self.span.take();
        let outcome = Outcome {
            status,
            error,
            duration: self.started.elapsed(),
            body_bytes,
            exemplar: span.as_ref().and_then(|span| span.ids).map(|(trace_id, _)| TraceExemplar { trace_id }),
            ids: span.as_ref().and_then(|span| span.ids),
        };
        if let (Some(span), Some(tracing)) = (span, &self.tracing) {
            span.finish(tracing, status, error);
        }
        recorder.record(&outcome);
        self.in_flight = None;
    }

    /// The response is on its way: record when its body is done, with `status`.
    pub fn responded(self, status: StatusCode) -> Box<dyn Completion> {
        let status = status.as_u16();
        Box::new(Responded { finish: self, status, error: ErrorType::of_status(status) })
    }

    /// A response pillion makes itself, for a failure, recorded once it is sent.
    pub fn failed(self, status: StatusCode, error: ErrorType, text: &'static str) -> http::Response<ProxyBody> {
        let completion = Box::new(Responded { finish: self, status: status.as_u16(), error: Some(error) });
        let mut response = plain(status, text);
        *response.body_mut() = std::mem::replace(response.body_mut(), ProxyBody::empty()).on_complete(completion);
        response
    }
}

impl<R: Recorder> Drop for Finish<R> {
    /// Dropped without a response: the client left first.
    fn drop(&mut self) {
        self.record(CLIENT_CLOSED_REQUEST, Some(ErrorType::ClientClosed), 0);
    }
}

/// A finished request's status, waiting for its response body to be done.
struct Responded<R: Recorder> {
    finish: Finish<R>,
    status: u16,
    error: Option<ErrorType>,
}

impl<R: Recorder> Completion for Responded<R> {
    fn complete(mut self: Box<Self>, body_bytes: u64, end: BodyEnd) {
        let error = match end {
            BodyEnd::Complete => self.error,
            BodyEnd::Failed => self.error.or(Some(ErrorType::Upstream)),
            BodyEnd::Abandoned => self.error.or(Some(ErrorType::ClientClosed)),
        };
        let status = self.status;
        self.finish.record(status, error, body_bytes);
    }
}

/// A short text response pillion answers itself.
pub fn plain(status: StatusCode, text: &'static str) -> http::Response<ProxyBody> {
    let mut response = http::Response::new(ProxyBody::text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
