//! Trace context propagation: the configured propagators (W3C tracecontext and baggage by
//! default, B3 single-header and multi-header on request) combined into one. Every parser is
//! strict: a header that breaks its grammar extracts as "no parent", so the request starts a new
//! trace and never fails; an invalid `tracestate` alone is dropped (the `traceparent` is kept);
//! `baggage` is re-serialized within W3C's limits or dropped. The proxy removes every field of
//! the configured propagators from the request before injecting its own, so nothing the client
//! sent in those headers reaches the app unchecked.

use std::sync::Arc;

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

use super::settings::Propagator;

/// One propagator doing what every configured one does, in configuration order.
pub fn build(propagators: &[Propagator]) -> TextMapCompositePropagator {
    let parts = propagators
        .iter()
        .map(|kind| -> Box<dyn TextMapPropagator + Send + Sync> {
            match kind {
                Propagator::Tracecontext => Box::new(W3cTraceContext::new()),
                Propagator::Baggage => Box::new(W3cBaggage::new()),
                Propagator::B3 => Box::new(B3::new(B3Encoding::Single)),
                Propagator::B3multi => Box::new(B3::new(B3Encoding::Multi)),
            }
        })
        .collect();
    TextMapCompositePropagator::new(parts)
}

/// The one value of `key`, or `None` when the header is absent or repeated.
fn single<'a>(extractor: &'a dyn Extractor, key: &str) -> Option<&'a str> {
    match extractor.get_all(key) {
        Some(values) if values.len() == 1 => values.first().copied(),
        Some(_) => None,
        None => extractor.get(key),
    }
}

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// W3C Trace Context (`traceparent`, `tracestate`), parsed to the letter of the grammar.
#[derive(Debug)]
pub struct W3cTraceContext {
    fields: Vec<String>,
}

impl W3cTraceContext {
    pub fn new() -> W3cTraceContext {
        W3cTraceContext { fields: vec![TRACEPARENT.to_owned(), TRACESTATE.to_owned()] }
    }
}

impl Default for W3cTraceContext {
    fn default() -> Self {
        W3cTraceContext::new()
    }
}

/// The parts of a valid `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

/// Parses a `traceparent` per W3C Trace Context: `version-traceid-parentid-flags`, lowercase
/// hex of exactly 2, 32, 16 and 2 digits; version `ff` is invalid; version 00 is exactly 55
/// characters, later versions may append `-`-separated fields; all-zero ids are invalid.
pub fn parse_traceparent(text: &str) -> Option<TraceParent> {
    let text = text.trim_matches([' ', '\t']);
    let bytes = text.as_bytes();
    if bytes.len() < 55 {
        return None;
    }
    let version = &text[..2];
    if !is_lower_hex(version) || version == "ff" {
        return None;
    }
    if version == "00" && bytes.len() != 55 {
        return None;
    }
    if bytes.len() > 55 && bytes[55] != b'-' {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let (trace, span, flags) = (&text[3..35], &text[36..52], &text[53..55]);
    if !is_lower_hex(trace) || !is_lower_hex(span) || !is_lower_hex(flags) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok().filter(|id| *id != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(span).ok().filter(|id| *id != SpanId::INVALID)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceParent { trace_id, span_id, sampled: flags & 1 == 1 })
}

fn is_lower_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The most list members a `tracestate` may have.
const TRACESTATE_MAX_MEMBERS: usize = 32;

/// Parses `tracestate` (its header lines joined): `None` when any member breaks the grammar, a
/// key repeats, or there are more than 32 members.
pub fn parse_tracestate(values: &[&str]) -> Option<Vec<(String, String)>> {
    let mut members: Vec<(String, String)> = Vec::new();
    for member in values.iter().flat_map(|value| value.split(',')) {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        let (key, value) = member.split_once('=')?;
        if !is_tracestate_key(key) || !is_tracestate_value(value) || members.iter().any(|(k, _)| k == key) {
            return None;
        }
        members.push((key.to_owned(), value.to_owned()));
        if members.len() > TRACESTATE_MAX_MEMBERS {
            return None;
        }
    }
    Some(members)
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
}

/// `simple-key` (lcalpha then up to 255 key characters) or `tenant-id@system-id`.
fn is_tracestate_key(key: &str) -> bool {
    match key.split_once('@') {
        None => {
            let bytes = key.as_bytes();
            (1..=256).contains(&bytes.len()) && bytes[0].is_ascii_lowercase() && bytes.iter().all(|b| is_key_char(*b))
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            (1..=241).contains(&t.len())
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && t.iter().all(|b| is_key_char(*b))
                && (1..=14).contains(&s.len())
                && s[0].is_ascii_lowercase()
                && s.iter().all(|b| is_key_char(*b))
        }
    }
}

/// Up to 256 printable ASCII characters other than `,` and `=`, not ending in a space.
fn is_tracestate_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    let nonblank = |b: u8| (0x21..=0x7e).contains(&b) && b != b',' && b != b'=';
    (1..=256).contains(&bytes.len())
        && bytes.iter().all(|b| *b == b' ' || nonblank(*b))
        && bytes.last().is_some_and(|b| nonblank(*b))
}

impl TextMapPropagator for W3cTraceContext {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let context = span.span_context();
        if !context.is_valid() {
            return;
        }
        let flags = context.trace_flags().to_u8() & 1;
        injector.set(TRACEPARENT, traceparent(context.trace_id(), context.span_id(), flags));
        let state = context.trace_state().header();
        if !state.is_empty() {
            injector.set(TRACESTATE, state);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let Some(parent) = single(extractor, TRACEPARENT).and_then(parse_traceparent) else {
            return cx.clone();
        };
        // An invalid tracestate is dropped on its own; the traceparent still counts.
        let state = extractor
            .get_all(TRACESTATE)
            .and_then(|values| parse_tracestate(&values))
            .and_then(|members| TraceState::from_key_value(members).ok())
            .unwrap_or_default();
        let flags = if parent.sampled { TraceFlags::SAMPLED } else { TraceFlags::NOT_SAMPLED };
        cx.with_remote_span_context(SpanContext::new(parent.trace_id, parent.span_id, flags, true, state))
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

/// `00-<trace id>-<span id>-<flags>`, written without the formatting machinery (this runs for
/// every proxied request).
fn traceparent(trace_id: TraceId, span_id: SpanId, flags: u8) -> String {
    let mut text = String::with_capacity(55);
    text.push_str("00-");
    push_hex(&mut text, &trace_id.to_bytes());
    text.push('-');
    push_hex(&mut text, &span_id.to_bytes());
    text.push('-');
    push_hex(&mut text, &[flags]);
    text
}

fn push_hex(text: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

const BAGGAGE: &str = "baggage";
/// W3C Baggage limits: the whole header, and its list members.
pub const BAGGAGE_MAX_BYTES: usize = 8192;
pub const BAGGAGE_MAX_MEMBERS: usize = 180;

/// W3C Baggage, passed on re-serialized when it is valid and within the limits, else dropped.
/// The value rides in the [`Context`] as text: pillion reads none of it.
#[derive(Debug)]
pub struct W3cBaggage {
    fields: Vec<String>,
}

impl W3cBaggage {
    pub fn new() -> W3cBaggage {
        W3cBaggage { fields: vec![BAGGAGE.to_owned()] }
    }
}

impl Default for W3cBaggage {
    fn default() -> Self {
        W3cBaggage::new()
    }
}

/// Baggage as it will be propagated.
#[derive(Debug, Clone)]
struct PropagatedBaggage(Arc<str>);

/// Parses the `baggage` header lines and writes them back in canonical form (no optional
/// whitespace); `None` when a member breaks the grammar or the result exceeds the limits.
pub fn reserialize_baggage(values: &[&str]) -> Option<String> {
    let mut out = String::new();
    let mut members = 0;
    for member in values.iter().flat_map(|value| value.split(',')) {
        members += 1;
        if members > BAGGAGE_MAX_MEMBERS {
            return None;
        }
        if !out.is_empty() {
            out.push(',');
        }
        let mut parts = member.split(';');
        let (key, value) = parts.next()?.split_once('=')?;
        let (key, value) = (trim_ows(key), trim_ows(value));
        if !is_token(key) || !value.bytes().all(is_baggage_octet) {
            return None;
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
        for property in parts {
            let (key, value) = match property.split_once('=') {
                Some((key, value)) => (trim_ows(key), Some(trim_ows(value))),
                None => (trim_ows(property), None),
            };
            if !is_token(key) || !value.is_none_or(|v| v.bytes().all(is_baggage_octet)) {
                return None;
            }
            out.push(';');
            out.push_str(key);
            if let Some(value) = value {
                out.push('=');
                out.push_str(value);
            }
        }
        if out.len() > BAGGAGE_MAX_BYTES {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

fn trim_ows(text: &str) -> &str {
    text.trim_matches([' ', '\t'])
}

/// An RFC 9110 token.
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `baggage-octet`: printable ASCII except `"`, `,`, `;` and `\`.
fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

impl TextMapPropagator for W3cBaggage {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        if let Some(baggage) = cx.get::<PropagatedBaggage>() {
            injector.set(BAGGAGE, baggage.0.to_string());
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match extractor.get_all(BAGGAGE).and_then(|values| reserialize_baggage(&values)) {
            Some(baggage) => cx.with_value(PropagatedBaggage(Arc::from(baggage))),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
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
const B3_PARENT_SPAN_ID: &str = "x-b3-parentspanid";
const B3_SAMPLED: &str = "x-b3-sampled";
const B3_FLAGS: &str = "x-b3-flags";

impl B3 {
    pub fn new(encoding: B3Encoding) -> B3 {
        let fields = match encoding {
            B3Encoding::Single => vec![B3_SINGLE.to_owned()],
            B3Encoding::Multi => {
                [B3_TRACE_ID, B3_SPAN_ID, B3_PARENT_SPAN_ID, B3_SAMPLED, B3_FLAGS].map(str::to_owned).to_vec()
            }
        };
        B3 { encoding, fields }
    }

    fn extract_single(extractor: &dyn Extractor) -> Option<SpanContext> {
        parse_b3_single(single(extractor, B3_SINGLE)?)
    }

    fn extract_multi(extractor: &dyn Extractor) -> Option<SpanContext> {
        let trace_id = parse_trace_id(single(extractor, B3_TRACE_ID)?.trim())?;
        let span_id = parse_span_id(single(extractor, B3_SPAN_ID)?.trim())?;
        if let Some(values) = extractor.get_all(B3_PARENT_SPAN_ID) {
            if values.len() != 1 || parse_span_id(values[0].trim()).is_none() {
                return None;
            }
        }
        let debug = match extractor.get_all(B3_FLAGS) {
            None => false,
            Some(values) if values.len() == 1 && values[0].trim() == "1" => true,
            Some(_) => return None,
        };
        let sampled = match extractor.get_all(B3_SAMPLED) {
            None => true,
            Some(values) if values.len() == 1 => parse_sampled(values[0].trim())?,
            Some(_) => return None,
        };
        Some(remote(trace_id, span_id, sampled || debug))
    }
}

fn remote(trace_id: TraceId, span_id: SpanId, sampled: bool) -> SpanContext {
    let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::NOT_SAMPLED };
    SpanContext::new(trace_id, span_id, flags, true, TraceState::default())
}

/// `b3: {traceid}-{spanid}[-{sampling}[-{parentspanid}]]`; a lone sampling flag carries no
/// context.
pub fn parse_b3_single(header: &str) -> Option<SpanContext> {
    let mut parts = header.trim().split('-');
    let trace_id = parse_trace_id(parts.next()?)?;
    let span_id = parse_span_id(parts.next()?)?;
    let sampled = match parts.next() {
        None => true,
        Some(flag) => parse_sampled(flag).filter(|_| flag.len() == 1)?,
    };
    if let Some(parent) = parts.next() {
        parse_span_id(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(remote(trace_id, span_id, sampled))
}

/// 16 or 32 lowercase hex digits, not all zero.
fn parse_trace_id(text: &str) -> Option<TraceId> {
    let valid = (text.len() == 16 || text.len() == 32) && is_lower_hex(text);
    let id = TraceId::from_hex(text).ok().filter(|_| valid)?;
    (id != TraceId::INVALID).then_some(id)
}

fn parse_span_id(text: &str) -> Option<SpanId> {
    let valid = text.len() == 16 && is_lower_hex(text);
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

    const SPAN: &str = "00f067aa0ba902b7";
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn traceparent_is_written_as_the_sdk_formats_it() {
        let trace_id = TraceId::from_hex(TRACE).expect("trace id");
        let span_id = SpanId::from_hex(SPAN).expect("span id");
        for flags in [0, 1] {
            let expected = format!("00-{trace_id}-{span_id}-{flags:02x}");
            assert_eq!(traceparent(trace_id, span_id, flags), expected);
        }
    }

    #[test]
    fn traceparent_violations_measured_in_issue_13_start_new_traces() {
        let w3c = W3cTraceContext::new();
        let good = format!("00-{TRACE}-{SPAN}-01");
        assert!(extract(&w3c, &[("traceparent", &good)]).is_valid());
        let bad = [
            format!("00-4bf9-{SPAN}-01"),
            "00-1-1-01".to_owned(),
            format!("00-{}-{SPAN}-01", &TRACE[1..]),
            format!("00-+{}-{SPAN}-01", &TRACE[1..]),
            format!("0-{TRACE}-{SPAN}-01"),
            format!("00-{TRACE}-{SPAN}-1"),
            format!("00-{TRACE}-{SPAN}-01-"),
            format!("ff-{TRACE}-{SPAN}-01"),
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
        ];
        for header in &bad {
            assert!(parse_traceparent(header).is_none(), "{header}");
            assert!(!extract(&w3c, &[("traceparent", header)]).is_valid(), "{header}");
        }
        assert!(parse_traceparent(&format!("01-{TRACE}-{SPAN}-01-future")).is_some());
        let mut two = http::HeaderMap::new();
        two.append("traceparent", good.parse().expect("value"));
        two.append("traceparent", good.parse().expect("value"));
        let context = w3c.extract(&opentelemetry_http::HeaderExtractor(&two));
        assert!(!context.span().span_context().is_valid(), "two traceparent headers");
    }

    #[test]
    fn an_invalid_tracestate_alone_is_dropped() {
        let w3c = W3cTraceContext::new();
        let good = format!("00-{TRACE}-{SPAN}-01");
        let kept = extract(&w3c, &[("traceparent", &good), ("tracestate", "a=1,a=2")]);
        assert!(kept.is_valid());
        assert_eq!(kept.trace_state().header(), "");
        let kept = extract(&w3c, &[("traceparent", &good), ("tracestate", "vendor@sys=x, b=2")]);
        assert_eq!(kept.trace_state().header(), "vendor@sys=x,b=2");
        for bad in ["A=1", "a=", "a=b=c", "=1", "a b=1"] {
            assert!(parse_tracestate(&[bad]).is_none(), "{bad}");
        }
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(parse_tracestate(&[&many.join(",")]).is_none());
    }

    #[test]
    fn baggage_is_reserialized_within_limits_or_dropped() {
        assert_eq!(reserialize_baggage(&["a = 1 ; p ; q=2 , b=x%20y"]).as_deref(), Some("a=1;p;q=2,b=x%20y"));
        assert_eq!(reserialize_baggage(&["a=1", "b=2"]).as_deref(), Some("a=1,b=2"));
        assert!(reserialize_baggage(&[&format!("k={}", "v".repeat(9000))]).is_none());
        let many: Vec<String> = (0..181).map(|i| format!("k{i}=v")).collect();
        assert!(reserialize_baggage(&[&many.join(",")]).is_none());
        for bad in ["a", "a=\"x\"", "=1", "a=1,,b=2", "a=b\\c"] {
            assert!(reserialize_baggage(&[bad]).is_none(), "{bad}");
        }
    }

    #[test]
    fn malformed_headers_extract_as_no_parent() {
        let all = build(&[Propagator::Tracecontext, Propagator::Baggage, Propagator::B3, Propagator::B3multi]);
        for headers in [
            vec![("traceparent", "00-zzzz-00f067aa0ba902b7-01")],
            vec![("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")],
            vec![("b3", "nope")],
            vec![("x-b3-traceid", "1234"), ("x-b3-spanid", "xyz")],
            vec![("b3", "80F198EE56343BA864FE8B2A57D3EFF7-E457B5A2E4D86BD1-1")],
            vec![("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-x")],
            vec![("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-e457b5a2e4d86bd1-9")],
            vec![("b3", "1")],
        ] {
            assert!(!extract(&all, &headers).is_valid(), "{headers:?}");
        }
    }

    mod grammar {
        //! The parsers against the W3C grammars, written here a second way (regular expressions
        //! over the ABNF) and checked on generated valid, mutated and arbitrary input.

        use proptest::prelude::*;

        use super::super::*;

        /// The traceparent ABNF as a regex, plus the rules the ABNF leaves to prose.
        fn w3c_valid(text: &str) -> bool {
            let shape = regex::Regex::new(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$").expect("regex");
            let text = text.trim_matches([' ', '\t']);
            shape.is_match(text)
                && &text[..2] != "ff"
                && (&text[..2] != "00" || text.len() == 55)
                && text[3..35] != "0".repeat(32)
                && text[36..52] != "0".repeat(16)
        }

        fn hex(len: usize) -> impl Strategy<Value = String> {
            proptest::collection::vec(proptest::sample::select(b"0123456789abcdef".to_vec()), len)
                .prop_map(|bytes| String::from_utf8(bytes).expect("ascii"))
        }

        proptest! {
            #[test]
            fn valid_traceparents_parse_to_their_ids(
                version in hex(2).prop_filter("ff is invalid", |v| v != "ff"),
                trace in hex(32).prop_filter("not all zero", |t| t.bytes().any(|b| b != b'0')),
                span in hex(16).prop_filter("not all zero", |s| s.bytes().any(|b| b != b'0')),
                flags in hex(2),
                suffix in "(-[a-z0-9-]{0,20})?",
            ) {
                let suffix = if version == "00" { String::new() } else { suffix };
                let text = format!("{version}-{trace}-{span}-{flags}{suffix}");
                let parsed = parse_traceparent(&text).expect("valid");
                prop_assert_eq!(parsed.trace_id.to_string(), trace);
                prop_assert_eq!(parsed.span_id.to_string(), span);
                prop_assert_eq!(parsed.sampled, u8::from_str_radix(&flags, 16).expect("hex") & 1 == 1);
            }

            #[test]
            fn one_changed_character_is_caught_exactly_when_the_grammar_says(
                trace in hex(32), span in hex(16), at in 0usize..55, replacement in proptest::char::range(' ', '~'),
            ) {
                let mut text: Vec<char> = format!("00-{trace}-{span}-01").chars().collect();
                text[at] = replacement;
                let text: String = text.into_iter().collect();
                prop_assert_eq!(parse_traceparent(&text).is_some(), w3c_valid(&text), "{}", text);
            }

            #[test]
            fn arbitrary_text_parses_only_when_the_grammar_allows(text in "[0-9a-fA-F+ -]{0,70}") {
                prop_assert_eq!(parse_traceparent(&text).is_some(), w3c_valid(&text), "{}", text);
            }

            #[test]
            fn valid_tracestates_parse_and_duplicates_do_not(
                keys in proptest::collection::btree_set("[a-z][a-z0-9_*/-]{0,10}(@[a-z][a-z0-9]{0,5})?", 1..32),
                value in "[!-+.-<>-~]([ !-+.-<>-~]{0,20}[!-+.-<>-~])?",
            ) {
                let members: Vec<String> = keys.iter().map(|k| format!("{k}={value}")).collect();
                let parsed = parse_tracestate(&[&members.join(" , ")]).expect("valid");
                prop_assert_eq!(parsed.len(), keys.len());
                let mut doubled = members.clone();
                doubled.push(members[0].clone());
                prop_assert!(parse_tracestate(&[&doubled.join(",")]).is_none());
            }

            #[test]
            fn baggage_reserializes_within_limits_and_is_stable(text in "[a-z0-9=;, %!]{0,300}") {
                if let Some(out) = reserialize_baggage(&[&text]) {
                    prop_assert!(out.len() <= BAGGAGE_MAX_BYTES);
                    prop_assert!(out.split(',').count() <= BAGGAGE_MAX_MEMBERS);
                    prop_assert_eq!(reserialize_baggage(&[&out]), Some(out.clone()));
                }
            }
        }
    }
}
