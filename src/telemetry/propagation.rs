//! Trace context propagation: the configured propagators (W3C tracecontext and baggage by
//! default, B3 single-header and multi-header on request) combined into one. A malformed header
//! extracts as "no parent", so the request starts a new trace and never fails.

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

use super::settings::Propagator;

/// One propagator doing what every configured one does, in configuration order.
pub fn build(propagators: &[Propagator]) -> TextMapCompositePropagator {
    let parts = propagators
        .iter()
        .map(|kind| -> Box<dyn TextMapPropagator + Send + Sync> {
            match kind {
                Propagator::Tracecontext => Box::new(TraceContextPropagator::new()),
                Propagator::Baggage => Box::new(BaggagePropagator::new()),
                Propagator::B3 => Box::new(B3::new(B3Encoding::Single)),
                Propagator::B3multi => Box::new(B3::new(B3Encoding::Multi)),
            }
        })
        .collect();
    TextMapCompositePropagator::new(parts)
}

/// Zipkin's B3 headers: `b3: {trace}-{span}-{sampled}` or the `X-B3-*` set.
#[derive(Debug)]
pub struct B3 {
    encoding: B3Encoding,
    fields: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum B3Encoding {
    Single,
    Multi,
}

const B3_SINGLE: &str = "b3";
const B3_TRACE_ID: &str = "x-b3-traceid";
const B3_SPAN_ID: &str = "x-b3-spanid";
const B3_SAMPLED: &str = "x-b3-sampled";
const B3_FLAGS: &str = "x-b3-flags";

impl B3 {
    pub fn new(encoding: B3Encoding) -> B3 {
        let fields = match encoding {
            B3Encoding::Single => vec![B3_SINGLE.to_owned()],
            B3Encoding::Multi => [B3_TRACE_ID, B3_SPAN_ID, B3_SAMPLED, B3_FLAGS].map(str::to_owned).to_vec(),
        };
        B3 { encoding, fields }
    }

    fn extract_single(extractor: &dyn Extractor) -> Option<SpanContext> {
        let header = extractor.get(B3_SINGLE)?.trim();
        let mut parts = header.split('-');
        let trace_id = parse_trace_id(parts.next()?)?;
        let span_id = parse_span_id(parts.next()?)?;
        let sampled = match parts.next() {
            None => true,
            Some(flag) => parse_sampled(flag)?,
        };
        Some(remote(trace_id, span_id, sampled))
    }

    fn extract_multi(extractor: &dyn Extractor) -> Option<SpanContext> {
        let trace_id = parse_trace_id(extractor.get(B3_TRACE_ID)?.trim())?;
        let span_id = parse_span_id(extractor.get(B3_SPAN_ID)?.trim())?;
        let debug = extractor.get(B3_FLAGS).map(str::trim) == Some("1");
        let sampled = match extractor.get(B3_SAMPLED) {
            None => true,
            Some(flag) => parse_sampled(flag.trim())?,
        };
        Some(remote(trace_id, span_id, sampled || debug))
    }
}

fn remote(trace_id: TraceId, span_id: SpanId, sampled: bool) -> SpanContext {
    let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::NOT_SAMPLED };
    SpanContext::new(trace_id, span_id, flags, true, TraceState::default())
}

/// 16 or 32 lowercase hex digits, not all zero.
fn parse_trace_id(text: &str) -> Option<TraceId> {
    let valid = (text.len() == 16 || text.len() == 32) && text.bytes().all(|b| b.is_ascii_hexdigit());
    let id = TraceId::from_hex(text).ok().filter(|_| valid)?;
    (id != TraceId::INVALID).then_some(id)
}

fn parse_span_id(text: &str) -> Option<SpanId> {
    let valid = text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit());
    let id = SpanId::from_hex(text).ok().filter(|_| valid)?;
    (id != SpanId::INVALID).then_some(id)
}

fn parse_sampled(flag: &str) -> Option<bool> {
    match flag {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

impl TextMapPropagator for B3 {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let context = span.span_context();
        if !context.is_valid() {
            return;
        }
        let sampled = if context.is_sampled() { "1" } else { "0" };
        match self.encoding {
            B3Encoding::Single => {
                injector.set(B3_SINGLE, format!("{}-{}-{sampled}", context.trace_id(), context.span_id()));
            }
            B3Encoding::Multi => {
                injector.set(B3_TRACE_ID, context.trace_id().to_string());
                injector.set(B3_SPAN_ID, context.span_id().to_string());
                injector.set(B3_SAMPLED, sampled.to_owned());
            }
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let extracted = match self.encoding {
            B3Encoding::Single => B3::extract_single(extractor),
            B3Encoding::Multi => B3::extract_multi(extractor),
        };
        match extracted {
            Some(context) => cx.with_remote_span_context(context),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn extract(propagator: &dyn TextMapPropagator, headers: &[(&str, &str)]) -> SpanContext {
        let map: HashMap<String, String> = headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        propagator.extract(&map).span().span_context().clone()
    }

    #[test]
    fn b3_single_round_trips() {
        let b3 = B3::new(B3Encoding::Single);
        let context = extract(&b3, &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]);
        assert!(context.is_valid() && context.is_sampled() && context.is_remote());
        let mut out: HashMap<String, String> = HashMap::new();
        b3.inject_context(&Context::new().with_remote_span_context(context), &mut out);
        assert_eq!(out["b3"], "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1");
    }

    #[test]
    fn b3_multi_reads_the_header_set() {
        let b3 = B3::new(B3Encoding::Multi);
        let context = extract(
            &b3,
            &[("x-b3-traceid", "463ac35c9f6413ad"), ("x-b3-spanid", "a2fb4a1d1a96d312"), ("x-b3-sampled", "0")],
        );
        assert!(context.is_valid() && !context.is_sampled());
        assert_eq!(context.trace_id().to_string(), "0000000000000000463ac35c9f6413ad");
    }

    #[test]
    fn malformed_headers_extract_as_no_parent() {
        let all = build(&[Propagator::Tracecontext, Propagator::Baggage, Propagator::B3, Propagator::B3multi]);
        for headers in [
            vec![("traceparent", "00-zzzz-00f067aa0ba902b7-01")],
            vec![("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")],
            vec![("b3", "nope")],
            vec![("x-b3-traceid", "1234"), ("x-b3-spanid", "xyz")],
        ] {
            assert!(!extract(&all, &headers).is_valid(), "{headers:?}");
        }
    }
}
