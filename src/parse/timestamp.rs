//! Timestamps found in log lines: RFC 3339 / ISO 8601 with any fraction and offset (a missing
//! offset means UTC), and epoch numbers in s, ms, us or ns, told apart by magnitude.

use jiff::Timestamp;
use jiff::civil::DateTime;

/// Parses a textual timestamp; `None` when it is not one we recognize.
pub fn parse_text(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Some(ts);
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return text.parse::<f64>().ok().and_then(parse_epoch_f64);
    }
    // ISO 8601 without an offset (`2026-11-25 12:00:00.123`): taken as UTC.
    text.parse::<DateTime>().ok().and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok()).map(|z| z.timestamp())
}

/// Epoch seconds, milliseconds, microseconds or nanoseconds, by magnitude.
pub fn parse_epoch_i64(value: i64) -> Option<Timestamp> {
    let magnitude = value.unsigned_abs();
    let nanos: i128 = if magnitude < 100_000_000_000 {
        i128::from(value) * 1_000_000_000
    } else if magnitude < 100_000_000_000_000 {
        i128::from(value) * 1_000_000
    } else if magnitude < 100_000_000_000_000_000 {
        i128::from(value) * 1_000
    } else {
        i128::from(value)
    };
    Timestamp::from_nanosecond(nanos).ok()
}

/// Epoch with a fraction (`1732536000.123`): seconds (or ms/us/ns by magnitude).
pub fn parse_epoch_f64(value: f64) -> Option<Timestamp> {
    if !value.is_finite() {
        return None;
    }
    let magnitude = value.abs();
    let scale = if magnitude < 1e11 {
        1e9
    } else if magnitude < 1e14 {
        1e6
    } else if magnitude < 1e17 {
        1e3
    } else {
        1.0
    };
    if (value * scale).abs() > 9.0e27 {
        return None;
    }
    // Whole and fractional parts apart, so that 1732536000.25 s is exactly .250000000.
    let whole = value.trunc();
    let nanos = whole as i128 * scale as i128 + ((value - whole) * scale).round() as i128;
    Timestamp::from_nanosecond(nanos).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(ts: Timestamp) -> String {
        format!("{ts:.9}")
    }

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        let ts = parse_text("2026-11-25T13:00:00.5+01:00").expect("parses");
        assert_eq!(iso(ts), "2026-11-25T12:00:00.500000000Z");
        let ts = parse_text("2026-11-25 12:00:00.123").expect("no offset: UTC");
        assert_eq!(iso(ts), "2026-11-25T12:00:00.123000000Z");
        assert_eq!(iso(parse_text("2024-02-29T23:59:59Z").expect("leap day")), "2024-02-29T23:59:59.000000000Z");
        assert!(parse_text("yesterday").is_none());
    }

    #[test]
    fn epochs_by_magnitude() {
        let expected = "2024-11-25T12:00:00.000000000Z";
        assert_eq!(iso(parse_epoch_i64(1_732_536_000).expect("s")), expected);
        assert_eq!(iso(parse_epoch_i64(1_732_536_000_000).expect("ms")), expected);
        assert_eq!(iso(parse_epoch_i64(1_732_536_000_000_000).expect("us")), expected);
        assert_eq!(iso(parse_epoch_i64(1_732_536_000_000_000_000).expect("ns")), expected);
        assert_eq!(iso(parse_epoch_f64(1_732_536_000.25).expect("frac")), "2024-11-25T12:00:00.250000000Z");
        assert!(parse_epoch_f64(f64::NAN).is_none());
    }
}
