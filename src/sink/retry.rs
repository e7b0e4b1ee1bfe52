//! The retry policy shared by every network sink: what a backend's answer means
//! ([`Outcome`], decided by one `match` on the status in [`classify_status`]); how long to wait
//! before trying again is [`crate::backoff::Backoff`] (Retry-After honoured, no give-up limit
//! for retryable failures).

use std::time::Duration;

/// What to do with (part of) a request after the backend answered, or failed to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Accepted: acknowledge every record.
    Sent,
    /// A transient failure (connect error, timeout, 408, 429, 5xx): send the same request
    /// again after a backoff, or after the backend's Retry-After when it gave one.
    Retry { after: Option<Duration>, reason: String },
    /// A permanent rejection of the whole request: dead-letter every record with the reason.
    Reject { reason: String },
    /// Send these groups of records (indices into the request) as separate requests: one
    /// rejected Loki stream must not sink the others, and a request too large is halved.
    Split(Vec<Vec<usize>>),
    /// Per-record results (Elasticsearch bulk items, OTLP partial success): records in `retry`
    /// go again alone, `rejected` ones are dead-lettered with their reason, the rest were sent.
    Partial { retry: Vec<usize>, rejected: Vec<(usize, String)>, after: Option<Duration> },
    /// Accepted, but the backend says it dropped `count` records without saying which
    /// (OTLP partial success): counted and noted in the dead-letter file.
    SentWithLoss { count: u64, reason: String },
}

/// The status decision every sink starts from: 2xx sent; 408, 429 and 5xx retried; other
/// statuses (400, 401, 403, 404, 413...) rejected.
pub(crate) fn classify_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Outcome {
    match status {
        200..=299 => Outcome::Sent,
        408 | 429 | 500..=599 => Outcome::Retry { after: retry_after, reason: reason(status, body) },
        _ => Outcome::Reject { reason: reason(status, body) },
    }
}

/// `HTTP 400: <first 1 KiB of the body>`.
pub(crate) fn reason(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(1024)]);
    format!("HTTP {status}: {}", text.trim())
}

/// Parses a Retry-After header: delta-seconds or an HTTP date. Capped at `MAX_RETRY_AFTER`
/// so that a confused backend cannot park a sink for a day.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = when.duration_since(jiff::Timestamp::now());
    let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
    Some(wait.min(MAX_RETRY_AFTER))
}

const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_in_one_place() {
        assert_eq!(classify_status(204, None, b""), Outcome::Sent);
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(classify_status(status, None, b""), Outcome::Retry { .. }), "{status}");
        }
        for status in [400, 401, 403, 404, 413] {
            assert!(matches!(classify_status(status, None, b"no"), Outcome::Reject { .. }), "{status}");
        }
        let Outcome::Reject { reason } = classify_status(400, None, b" bad line \n") else { panic!() };
        assert_eq!(reason, "HTTP 400: bad line");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("99999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
