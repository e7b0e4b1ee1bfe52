//! Timestamps found in log lines: RFC 3339 / ISO 8601 with any fraction and offset, epoch
//! numbers in s, ms, us or ns (told apart by magnitude), the Common Log Format
//! (`10/Oct/2000:13:55:36 -0700`), syslog (`Oct 11 22:14:15`, no year) and strftime-style
//! formats from parser definitions. A time without an offset is read in the input's time zone;
//! a time without a year (or without a date) takes the one nearest the moment the line was
//! observed, so `Dec 31 23:59:59` read at `Jan 1 00:00:05` stays in the old year.

use jiff::civil::{Date, DateTime};
use jiff::fmt::strtime::{self, BrokenDownTime};
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp, ToSpan};

/// What a timestamp without a complete date or offset is resolved against.
#[derive(Debug, Clone, Copy)]
pub struct TimeContext<'a> {
    /// When the line was read: the reference for inferring a missing year or date.
    pub observed: Timestamp,
    /// The input's time zone, for times written without an offset.
    pub zone: &'a TimeZone,
}

/// How a parser definition's time field is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TimeFormat {
    /// Any format this module recognizes (RFC 3339, ISO 8601 without offset, epoch, CLF, syslog).
    #[default]
    Auto,
    /// RFC 3339 / ISO 8601, with or without an offset.
    Rfc3339,
    /// Epoch seconds, milliseconds, microseconds or nanoseconds, by magnitude.
    Epoch,
    /// Common Log Format: `10/Oct/2000:13:55:36 -0700`.
    Clf,
    /// BSD syslog: `Oct 11 22:14:15`, optionally with a fraction; the year is inferred.
    Syslog,
    /// A strftime-style format (`%Y/%m/%d %H:%M:%S`); a missing year or date is inferred.
    Strftime(String),
}

impl TimeFormat {
    /// Reads a format as written in a parser definition: a name or a strftime string.
    pub fn from_name(text: &str) -> Result<TimeFormat, String> {
        match text {
            "auto" => Ok(TimeFormat::Auto),
            "rfc3339" | "iso8601" => Ok(TimeFormat::Rfc3339),
            "epoch" | "unix" => Ok(TimeFormat::Epoch),
            "clf" | "common_log" => Ok(TimeFormat::Clf),
            "syslog" | "rfc3164" => Ok(TimeFormat::Syslog),
            strftime if strftime.contains('%') => Ok(TimeFormat::Strftime(strftime.to_owned())),
            other => Err(format!(
                "unknown time format {other:?}: use auto, rfc3339, epoch, clf, syslog or a strftime format such as \"%Y-%m-%d %H:%M:%S\""
            )),
        }
    }

    /// Parses `text` in this format; `None` when it does not fit.
    pub fn parse(&self, text: &[u8], context: TimeContext<'_>) -> Option<Timestamp> {
        self.parse_str(std::str::from_utf8(text).ok()?, context)
    }

    /// [`TimeFormat::parse`] for text already known to be UTF-8 (a json or logfmt value), so
    /// that it is not validated a second time.
    pub fn parse_str(&self, text: &str, context: TimeContext<'_>) -> Option<Timestamp> {
        // The shape nearly every structured line carries, before any trimming and sniffing: the
        // fast parser accepts only text that starts with a digit and ends with `Z` or a digit,
        // which trimming leaves alone and `Auto` would send to the same parser.
        if matches!(self, TimeFormat::Auto | TimeFormat::Rfc3339) {
            if let Some(ts) = parse_rfc3339_fast(text) {
                return Some(ts);
            }
        }
        let text = text.trim();
        match self {
            TimeFormat::Auto => parse_text(text, context),
            TimeFormat::Rfc3339 => parse_iso(text, context.zone),
            TimeFormat::Epoch => parse_epoch_text(text),
            TimeFormat::Clf => parse_clf(text),
            TimeFormat::Syslog => parse_syslog(text, context),
            TimeFormat::Strftime(format) => parse_strftime(format, text, context),
        }
    }
}

/// Parses a timestamp of any recognized shape; `None` when it is not one.
pub fn parse_text(text: &str, context: TimeContext<'_>) -> Option<Timestamp> {
    let text = text.trim();
    let first = *text.as_bytes().first()?;
    if first.is_ascii_digit() || first == b'-' || first == b'+' {
        if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return parse_epoch_text(text);
        }
        if text.len() == 26 && text.as_bytes().get(2) == Some(&b'/') {
            return parse_clf(text);
        }
        return parse_iso(text, context.zone);
    }
    if first.is_ascii_alphabetic() {
        return parse_syslog(text, context);
    }
    None
}

/// RFC 3339 with an offset, or ISO 8601 without one (read in `zone`); `T` or a space between
/// date and time; `.` or `,` before the fraction.
pub fn parse_iso(text: &str, zone: &TimeZone) -> Option<Timestamp> {
    if let Some(ts) = parse_rfc3339_fast(text) {
        return Some(ts);
    }
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Some(ts);
    }
    let datetime = match text.parse::<DateTime>() {
        Ok(datetime) => datetime,
        // `2026-11-25 12:00:00,123` with a comma the parser may not take everywhere.
        Err(_) if text.contains(',') => text.replacen(',', ".", 1).parse::<DateTime>().ok()?,
        Err(_) => return None,
    };
    // A trailing `Z` or offset that DateTime parsing ignored was handled above; what is left
    // is a civil time in the input's zone.
    zone.to_ambiguous_timestamp(datetime).compatible().ok()
}

/// The shape nearly every structured log writes, `2026-11-25T12:00:00.123Z` or with an offset
/// (`+01:00`), parsed by hand: it is on every line. Anything else goes to jiff's parser.
fn parse_rfc3339_fast(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = (two_digits(b, 0)? * 100 + two_digits(b, 2)?) as i16;
    let (month, day) = (two_digits(b, 5)? as i8, two_digits(b, 8)? as i8);
    let (hour, minute, second) = (two_digits(b, 11)? as i8, two_digits(b, 14)? as i8, two_digits(b, 17)? as i8);
    let mut rest = &b[19..];
    let mut nanos = 0;
    if rest.first() == Some(&b'.') {
        let count = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if count == 0 || count > 9 {
            return None;
        }
        nanos = digits(&rest[1..=count])? * 10i32.pow(9 - count as u32);
        rest = &rest[1 + count..];
    }
    let offset_seconds = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let seconds = digits(&[*h1, *h2])? * 3600 + digits(&[*m1, *m2])? * 60;
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return None,
    };
    let datetime = DateTime::new(year, month, day, hour, minute, second, nanos).ok()?;
    Offset::from_seconds(offset_seconds).ok()?.to_timestamp(datetime).ok()
}

fn parse_epoch_text(text: &str) -> Option<Timestamp> {
    if text.contains('.') {
        return text.parse::<f64>().ok().and_then(parse_epoch_f64);
    }
    text.parse::<i64>().ok().and_then(parse_epoch_i64)
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

const MONTHS: [&[u8; 3]; 12] =
    [b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"];

pub(super) fn month_number(name: &[u8]) -> Option<i8> {
    let lower =
        [name.first()?.to_ascii_lowercase(), name.get(1)?.to_ascii_lowercase(), name.get(2)?.to_ascii_lowercase()];
    MONTHS.iter().position(|m| **m == lower).map(|i| i as i8 + 1)
}

/// The two ASCII digits at `b[i]` and `b[i + 1]` as a number.
#[inline]
fn two_digits(b: &[u8], i: usize) -> Option<i32> {
    let (high, low) = (b[i].wrapping_sub(b'0'), b[i + 1].wrapping_sub(b'0'));
    (high < 10 && low < 10).then_some(i32::from(high) * 10 + i32::from(low))
}

/// Decimal digits to a number; `None` unless every byte is a digit.
fn digits(bytes: &[u8]) -> Option<i32> {
    if bytes.is_empty() || bytes.len() > 9 {
        return None;
    }
    bytes.iter().try_fold(0i32, |n, b| b.is_ascii_digit().then(|| n * 10 + i32::from(b - b'0')))
}

/// `10/Oct/2000:13:55:36 -0700`, hand-parsed: it is on every access-log line.
pub fn parse_clf(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    if b.len() != 26 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[14] != b':' || b[17] != b':' || b[20] != b' '
    {
        return None;
    }
    let day = digits(&b[0..2])? as i8;
    let month = month_number(&b[3..6])?;
    let year = digits(&b[7..11])? as i16;
    let (hour, minute, second) = (digits(&b[12..14])? as i8, digits(&b[15..17])? as i8, digits(&b[18..20])? as i8);
    let sign = match b[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let offset_seconds = sign * (digits(&b[22..24])? * 3600 + digits(&b[24..26])? * 60);
    let offset = Offset::from_seconds(offset_seconds).ok()?;
    let datetime = DateTime::new(year, month, day, hour, minute, second, 0).ok()?;
    offset.to_timestamp(datetime).ok()
}

/// `Oct 11 22:14:15` or `Oct  1 22:14:15.123456`: BSD syslog has no year.
pub fn parse_syslog(text: &str, context: TimeContext<'_>) -> Option<Timestamp> {
    let b = text.as_bytes();
    if b.len() < 14 || b[3] != b' ' {
        return None;
    }
    let month = month_number(&b[0..3])?;
    let rest = text[4..].trim_start();
    let (day, clock) = rest.split_once(' ')?;
    let day = digits(day.as_bytes())? as i8;
    let (hms, fraction) = clock.split_once('.').map_or((clock, None), |(hms, f)| (hms, Some(f)));
    let hms = hms.as_bytes();
    if hms.len() != 8 || hms[2] != b':' || hms[5] != b':' {
        return None;
    }
    let nanos = match fraction {
        Some(f) if !f.is_empty() && f.len() <= 9 => digits(f.as_bytes())? * 10i32.pow(9 - f.len() as u32),
        Some(_) => return None,
        None => 0,
    };
    let time =
        jiff::civil::Time::new(digits(&hms[0..2])? as i8, digits(&hms[3..5])? as i8, digits(&hms[6..8])? as i8, nanos)
            .ok()?;
    nearest_year(context, |year| Date::new(year, month, day).ok().map(|date| date.to_datetime(time)))
}

/// Parses with a strftime format, inferring what the format leaves out.
pub fn parse_strftime(format: &str, text: &str, context: TimeContext<'_>) -> Option<Timestamp> {
    let broken = BrokenDownTime::parse(format, text).ok()?;
    if broken.offset().is_some() {
        if let Ok(ts) = broken.to_timestamp() {
            return Some(ts);
        }
    }
    let zone = match broken.iana_time_zone().map(TimeZone::get) {
        Some(Ok(zone)) => zone,
        _ => context.zone.clone(),
    };
    let context = TimeContext { observed: context.observed, zone: &zone };
    let time = broken.to_time().ok()?;
    match (broken.year(), broken.month(), broken.day()) {
        (Some(_), _, _) => resolve(context.zone, broken.to_datetime().ok()?),
        (None, Some(month), Some(day)) => {
            nearest_year(context, |year| Date::new(year, month, day).ok().map(|date| date.to_datetime(time)))
        }
        (None, None, None) => nearest_day(context, time),
        _ => None,
    }
}

fn resolve(zone: &TimeZone, datetime: DateTime) -> Option<Timestamp> {
    zone.to_ambiguous_timestamp(datetime).compatible().ok()
}

/// How far ahead of the observation a line's inferred time may be (clock skew, zone mix-ups)
/// before it is taken to be from the year before.
const YEAR_TOLERANCE: SignedDuration = SignedDuration::from_hours(48);

/// Picks the latest year (from next year back through the last leap year) that does not put
/// the time more than [`YEAR_TOLERANCE`] after the observation: `Dec 31` read on `Jan 1` is
/// last year's, `Jan 1 00:00:01` read at `Dec 31 23:59:58` is next year's, `Dec 31` read in
/// November is last year's (a file read long after it was written), and `Feb 29` is the last
/// leap year's.
pub(super) fn nearest_year(context: TimeContext<'_>, build: impl Fn(i16) -> Option<DateTime>) -> Option<Timestamp> {
    let year = context.observed.to_zoned(context.zone.clone()).year();
    let latest = context.observed.checked_add(YEAR_TOLERANCE).ok()?;
    (year - 4..=year + 1)
        .rev()
        .filter_map(|y| build(y).and_then(|dt| resolve(context.zone, dt)))
        .find(|ts| *ts <= latest)
}

/// For a time of day alone: yesterday, today or tomorrow, whichever is nearest.
fn nearest_day(context: TimeContext<'_>, time: jiff::civil::Time) -> Option<Timestamp> {
    let today = context.observed.to_zoned(context.zone.clone()).date();
    [-1i64, 0, 1]
        .into_iter()
        .filter_map(|days| today.checked_add(days.days()).ok())
        .filter_map(|date| resolve(context.zone, date.to_datetime(time)))
        .min_by_key(|ts| distance(*ts, context.observed))
}

fn distance(a: Timestamp, b: Timestamp) -> SignedDuration {
    a.duration_since(b).abs()
}

/// Parses a time zone as written in config: an IANA name (`Europe/Paris`), `UTC`, `local`
/// (the system's), or a fixed offset (`+02:00`, `-0700`).
pub fn parse_zone(text: &str) -> Result<TimeZone, String> {
    let text = text.trim();
    match text {
        "UTC" | "utc" | "Z" | "z" => return Ok(TimeZone::UTC),
        "local" => {
            return TimeZone::try_system().map_err(|e| format!("cannot find the system time zone: {e}"));
        }
        _ => {}
    }
    if text.starts_with(['+', '-']) {
        let broken = BrokenDownTime::parse("%z", text)
            .or_else(|_| BrokenDownTime::parse("%:z", text))
            .map_err(|_| format!("invalid UTC offset {text:?}: write it as +02:00 or -0700"))?;
        return broken.offset().map(TimeZone::fixed).ok_or_else(|| format!("invalid UTC offset {text:?}"));
    }
    TimeZone::get(text).map_err(|e| format!("unknown time zone {text:?}: {e}"))
}

/// Checks a strftime format once, at load time, by formatting a sample time with it.
pub fn check_strftime(format: &str) -> Result<(), String> {
    let sample: jiff::Zoned = Timestamp::UNIX_EPOCH.to_zoned(TimeZone::UTC);
    strtime::format(format, &sample).map(drop).map_err(|e| format!("invalid time format {format:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// `parse_str` tries the fast parser before trimming: it must agree with the slow path.
        #[test]
        fn the_fast_path_agrees_with_trim_then_parse(
            text in r"[ \t]?[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{0,10})?([Zz]|[+-][0-9]{2}:?[0-9]{2})?[ \t]?"
        ) {
            let context = TimeContext { observed: Timestamp::UNIX_EPOCH, zone: &TimeZone::UTC };
            prop_assert_eq!(TimeFormat::Auto.parse_str(&text, context), parse_text(text.trim(), context));
            prop_assert_eq!(TimeFormat::Rfc3339.parse_str(&text, context), parse_iso(text.trim(), context.zone));
        }
    }

    fn iso(ts: Timestamp) -> String {
        format!("{ts:.9}")
    }

    fn at(observed: &str) -> Timestamp {
        observed.parse().expect("timestamp")
    }

    fn utc(observed: Timestamp) -> TimeContext<'static> {
        static UTC: TimeZone = TimeZone::UTC;
        TimeContext { observed, zone: &UTC }
    }

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        let ctx = utc(at("2026-11-25T12:00:00Z"));
        let cases = [
            ("2026-11-25T13:00:00.5+01:00", "2026-11-25T12:00:00.500000000Z"),
            ("2026-11-25 12:00:00.123", "2026-11-25T12:00:00.123000000Z"),
            ("2026-11-25 12:00:00,123", "2026-11-25T12:00:00.123000000Z"),
            ("2024-02-29T23:59:59Z", "2024-02-29T23:59:59.000000000Z"),
            ("2026-11-25T12:00:00.123456789-07:00", "2026-11-25T19:00:00.123456789Z"),
            ("1764072000", "2025-11-25T12:00:00.000000000Z"),
            ("10/Oct/2000:13:55:36 -0700", "2000-10-10T20:55:36.000000000Z"),
        ];
        for (text, want) in cases {
            assert_eq!(parse_text(text, ctx).map(iso).as_deref(), Some(want), "{text}");
        }
        assert!(parse_text("yesterday", ctx).is_none());
        assert!(parse_text("2026-11-25T12:00:00.Z", ctx).is_none());
        assert!(parse_text("2026-13-25T12:00:00Z", ctx).is_none());
        assert_eq!(parse_text("2026-11-25t12:00:00.1234567891Z", ctx).map(iso).as_deref(), None);
        assert_eq!(
            parse_text("2026-11-25T23:30:00-00:30", ctx).map(iso).as_deref(),
            Some("2026-11-26T00:00:00.000000000Z")
        );
        assert!(parse_text("2023-02-29T00:00:00Z", ctx).is_none(), "not a leap year");
    }

    #[test]
    fn a_civil_time_is_read_in_the_input_zone() {
        let paris = TimeZone::get("Europe/Paris").expect("tzdb");
        let ctx = TimeContext { observed: at("2026-07-01T00:00:00Z"), zone: &paris };
        assert_eq!(iso(parse_text("2026-07-01 12:00:00", ctx).expect("parses")), "2026-07-01T10:00:00.000000000Z");
        assert_eq!(iso(parse_text("2026-07-01T12:00:00Z", ctx).expect("parses")), "2026-07-01T12:00:00.000000000Z");
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

    #[test]
    fn clf_offsets_and_bad_input() {
        assert_eq!(iso(parse_clf("29/Feb/2024:23:59:59 +0100").expect("leap day")), "2024-02-29T22:59:59.000000000Z");
        assert!(parse_clf("29/Feb/2023:23:59:59 +0100").is_none());
        assert!(parse_clf("10/Foo/2000:13:55:36 -0700").is_none());
        assert!(parse_clf("10/Oct/2000:13:55:36 07000").is_none());
    }

    #[test]
    fn syslog_year_does_not_jump_at_new_year() {
        let new_year = utc(at("2027-01-01T00:00:05Z"));
        assert_eq!(iso(parse_syslog("Dec 31 23:59:59", new_year).expect("parses")), "2026-12-31T23:59:59.000000000Z");
        assert_eq!(iso(parse_syslog("Jan  1 00:00:01", new_year).expect("parses")), "2027-01-01T00:00:01.000000000Z");
        let old_year = utc(at("2026-12-31T23:59:58Z"));
        assert_eq!(iso(parse_syslog("Jan  1 00:00:01", old_year).expect("skew")), "2027-01-01T00:00:01.000000000Z");
        let leap = utc(at("2028-03-01T10:00:00Z"));
        assert_eq!(iso(parse_syslog("Feb 29 09:00:00.25", leap).expect("leap")), "2028-02-29T09:00:00.250000000Z");
        let later = utc(at("2026-03-01T10:00:00Z"));
        assert_eq!(
            iso(parse_syslog("Feb 29 09:00:00", later).expect("last leap year")),
            "2024-02-29T09:00:00.000000000Z"
        );
        let november = utc(at("2026-11-25T12:00:00Z"));
        assert_eq!(iso(parse_syslog("Dec 31 23:59:59", november).expect("old file")), "2025-12-31T23:59:59.000000000Z");
        assert_eq!(iso(parse_syslog("Nov 26 08:00:00", november).expect("skew")), "2026-11-26T08:00:00.000000000Z");
        assert!(parse_syslog("Foo 31 23:59:59", new_year).is_none());
    }

    #[test]
    fn strftime_formats_infer_what_they_leave_out() {
        let ctx = utc(at("2027-01-01T00:00:05Z"));
        let parse = |format: &str, text: &str| parse_strftime(format, text, ctx).map(iso);
        assert_eq!(
            parse("%Y/%m/%d %H:%M:%S", "2026/11/25 12:00:00").as_deref(),
            Some("2026-11-25T12:00:00.000000000Z")
        );
        assert_eq!(
            parse("%m%d %H:%M:%S%.f", "1231 23:59:59.123456").as_deref(),
            Some("2026-12-31T23:59:59.123456000Z")
        );
        assert_eq!(parse("%H:%M:%S%.f", "23:59:58.500").as_deref(), Some("2026-12-31T23:59:58.500000000Z"));
        assert_eq!(
            parse("%d %b %Y %H:%M:%S%.f", "25 Nov 2026 12:00:00.123").as_deref(),
            Some("2026-11-25T12:00:00.123000000Z")
        );
        assert_eq!(
            parse("%Y-%m-%d %H:%M:%S %z", "2026-11-25 12:00:00 +0200").as_deref(),
            Some("2026-11-25T10:00:00.000000000Z")
        );
        assert!(parse("%Y/%m/%d", "garbage").is_none());
    }

    #[test]
    fn zones_from_config() {
        assert_eq!(parse_zone("UTC").expect("utc"), TimeZone::UTC);
        assert!(parse_zone("+02:00").is_ok());
        assert!(parse_zone("-0700").is_ok());
        assert!(parse_zone("Europe/Paris").is_ok());
        assert!(parse_zone("Mars/Olympus").is_err());
        assert!(check_strftime("%Y-%m-%d").is_ok());
        assert!(TimeFormat::from_name("yyyy").is_err());
    }
}
