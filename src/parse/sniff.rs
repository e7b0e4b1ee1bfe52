//! The time and level of an unstructured line, as `auto` finds them: a timestamp that starts in
//! the line's first [`WINDOW`] bytes, in the shapes real systems write, and a level word among
//! the tokens right after it.
//!
//! Times found anywhere in the window, at a token boundary, are the unambiguous shapes:
//! ISO 8601 (`2026-11-25T12:00:00.123Z`, `2026-11-25 12:00:00,123`, `2026/11/25 12:00:00`,
//! with or without a zone), syslog's `Nov 25 12:00:00`, ctime's `Sun Nov 25 12:00:00 2026`
//! (Apache's error log), the Common Log Format and DB2's `2026-11-25-12.00.00.123456`. Shapes
//! made only of digits are read at the start of the line only (after an optional `<PRI>`,
//! `[` or a lone `-` flag), so that a number inside a message never becomes a time:
//! `yy/MM/dd HH:mm:ss` (log4j's default in Spark and Hadoop), `yyMMdd HHmmss` (HDFS),
//! logcat's `MM-dd HH:mm:ss.SSS`, `yyyyMMdd-HH:mm:ss:SSS`, `[MM.dd HH:mm:ss]`, klog's
//! `I1125 12:00:00.123456` and epoch seconds or milliseconds as the leading token. A missing
//! year is the one nearest the moment the line was read.
//!
//! The level is a level name (`INFO`, `Warning`, `err`, `[notice]`) among the few tokens that
//! follow the time, skipping the ones that are not words (pids, `-`, `[thread]`, host names);
//! the walk stops at the first words of the message. Logcat's single letters count only in
//! logcat's layout (`pid tid L tag:`), klog's in klog's.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::Offset;

use super::timestamp::{self, TimeContext};
use crate::record::Level;

/// A timestamp must start within this many bytes of the line's start.
pub const WINDOW: usize = 64;

/// At most this many tokens after the time are looked at for a level.
const LEVEL_TOKENS: usize = 8;

/// What a line's head says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sniffed {
    pub time: Option<Timestamp>,
    pub level: Option<Level>,
}

/// The layout a time was found in, when it decides where the level is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Plain,
    /// Android logcat: `MM-dd HH:mm:ss.SSS  pid  tid L tag: message`.
    Logcat,
}

/// A time found in the line: its value and the byte just past it.
struct Found {
    time: Option<Timestamp>,
    end: usize,
    layout: Layout,
    /// A level the time's own shape carries (klog's leading letter).
    level: Option<Level>,
}

/// The time and level of `text`.
pub fn sniff(text: &str, context: TimeContext<'_>) -> Sniffed {
    let bytes = text.as_bytes();
    let sniffed = sniff_head(bytes, context);
    // A syslog `<PRI>` gives the level when no word does.
    Sniffed { level: sniffed.level.or_else(|| priority_level(bytes)), ..sniffed }
}

fn sniff_head(bytes: &[u8], context: TimeContext<'_>) -> Sniffed {
    match find_time(bytes, context) {
        Some(found) => {
            let level = found.level.or_else(|| match found.layout {
                Layout::Logcat => logcat_level(bytes, found.end).or_else(|| level_after(bytes, found.end, false)),
                Layout::Plain => level_after(bytes, found.end, false),
            });
            Sniffed { time: found.time, level }
        }
        // Without a time, only a level that stands out (`ERROR`, `[warn]`, `info:`) counts.
        None => Sniffed { time: None, level: level_after(bytes, 0, true) },
    }
}

fn find_time(b: &[u8], context: TimeContext<'_>) -> Option<Found> {
    let lead = lead(b);
    if let Some(found) = leading_time(b, lead, context) {
        return Some(found);
    }
    let limit = b.len().min(WINDOW);
    let mut i = lead;
    while i < limit {
        let c = b[i];
        let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        if boundary {
            let found = if c.is_ascii_digit() {
                iso(b, i, context).or_else(|| clf(b, i))
            } else if c.is_ascii_uppercase() {
                ctime(b, i, context).or_else(|| syslog(b, i, context))
            } else {
                None
            };
            if found.is_some() {
                return found;
            }
        }
        i += 1;
    }
    None
}

/// The severity of a leading syslog `<PRI>` (PRI mod 8).
fn priority_level(b: &[u8]) -> Option<Level> {
    let start = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    if b.get(start) != Some(&b'<') {
        return None;
    }
    let digits = count_digits(b, start + 1);
    if !(1..=3).contains(&digits) || b.get(start + 1 + digits) != Some(&b'>') {
        return None;
    }
    super::fields::syslog_level(i64::from(num(b, start + 1, digits)?))
}

/// Where the line's head starts: after spaces, a syslog `<PRI>` and one `[`.
fn lead(b: &[u8]) -> usize {
    let mut i = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    if b.get(i) == Some(&b'<') {
        let digits = count_digits(b, i + 1);
        if (1..=3).contains(&digits) && b.get(i + 1 + digits) == Some(&b'>') {
            i += digits + 2;
        }
    }
    if b.get(i) == Some(&b'[') {
        i += 1;
    }
    i
}

/// The shapes read only at the head of a line.
fn leading_time(b: &[u8], at: usize, context: TimeContext<'_>) -> Option<Found> {
    let first = *b.get(at)?;
    if !first.is_ascii_digit() {
        if matches!(first, b'I' | b'W' | b'E' | b'F') {
            return klog(b, at, context);
        }
        // BGL and Thunderbird: a `-` alert flag, then the epoch.
        if first == b'-' && b.get(at + 1) == Some(&b' ') {
            return epoch(b, at + 2);
        }
        return None;
    }
    let digits = count_digits(b, at);
    match (digits, b.get(at + digits)) {
        (2, Some(b'/')) => short_slashed(b, at, context),
        (2, Some(b'-')) => logcat(b, at, context),
        (2, Some(b'.')) if at > 0 && b[at - 1] == b'[' => dotted(b, at, context),
        (6, Some(b' ')) => compact(b, at, context),
        (8, Some(b'-')) => dashed_compact(b, at, context),
        (10 | 13, _) => epoch(b, at),
        _ => None,
    }
}

/// `17/06/09 20:10:40[.fff]`
fn short_slashed(b: &[u8], at: usize, context: TimeContext<'_>) -> Option<Found> {
    if !(b.get(at + 5) == Some(&b'/') && b.get(at + 8) == Some(&b' ')) {
        return None;
    }
    let year = two_digit_year(num(b, at, 2)?);
    let date = Date::new(year, num(b, at + 3, 2)? as i8, num(b, at + 6, 2)? as i8).ok()?;
    let (time, end) = clock(b, at + 9, b':')?;
    let (time, end) = fraction(b, end, time, b".,");
    Some(civil(date.to_datetime(time), end, context))
}

/// Logcat's threadtime `03-17 16:13:38.811`, year inferred.
fn logcat(b: &[u8], at: usize, context: TimeContext<'_>) -> Option<Found> {
    if b.get(at + 5) != Some(&b' ') {
        return None;
    }
    let (month, day) = (num(b, at, 2)? as i8, num(b, at + 3, 2)? as i8);
    let (time, end) = clock(b, at + 6, b':')?;
    if b.get(end) != Some(&b'.') {
        return None;
    }
    let (time, end) = fraction(b, end, time, b".");
    let ts = no_year(context, month, day, time)?;
    Some(Found { time: Some(ts), end, layout: Layout::Logcat, level: None })
}

/// Proxifier's `[10.30 16:49:06]`, year inferred.
fn dotted(b: &[u8], at: usize, context: TimeContext<'_>) -> Option<Found> {
    if b.get(at + 5) != Some(&b' ') {
        return None;
    }
    let (month, day) = (num(b, at, 2)? as i8, num(b, at + 3, 2)? as i8);
    let (time, end) = clock(b, at + 6, b':')?;
    if b.get(end) != Some(&b']') {
        return None;
    }
    Some(Found { time: Some(no_year(context, month, day, time)?), end, layout: Layout::Plain, level: None })
}

/// HDFS's `081109 203615`.
fn compact(b: &[u8], at: usize, context: TimeContext<'_>) -> Option<Found> {
    if count_digits(b, at + 7) != 6 || !ends_token(b, at + 13) {
        return None;
    }
    let date = Date::new(two_digit_year(num(b, at, 2)?), num(b, at + 2, 2)? as i8, num(b, at + 4, 2)? as i8).ok()?;
    let time = Time::new(num(b, at + 7, 2)? as i8, num(b, at + 9, 2)? as i8, num(b, at + 11, 2)? as i8, 0).ok()?;
    Some(civil(date.to_datetime(time), at + 13, context))
}

/// HealthApp's `20171223-22:15:29:606`.
fn dashed_compact(b: &[u8], at: usize, context: TimeContext<'_>) -> Option<Found> {
    let date = Date::new(num(b, at, 4)? as i16, num(b, at + 4, 2)? as i8, num(b, at + 6, 2)? as i8).ok()?;
    let (time, end) = clock(b, at + 9, b':')?;
    let (time, end) = fraction(b, end, time, b":.");
    ends_token(b, end).then(|| civil(date.to_datetime(time), end, context))
}

/// klog/glog: `I1125 12:00:00.123456`, its letter the level, year inferred.
fn klog(b: &[u8], at: usize, context: TimeContext<'_>) -> Option<Found> {
    if count_digits(b, at + 1) != 4 || b.get(at + 5) != Some(&b' ') {
        return None;
    }
    let (month, day) = (num(b, at + 1, 2)? as i8, num(b, at + 3, 2)? as i8);
    let (time, end) = clock(b, at + 6, b':')?;
    let (time, end) = fraction(b, end, time, b".");
    let level = match b[at] {
        b'I' => Level::Info,
        b'W' => Level::Warn,
        b'E' => Level::Error,
        _ => Level::Fatal,
    };
    let ts = no_year(context, month, day, time)?;
    Some(Found { time: Some(ts), end, layout: Layout::Plain, level: Some(level) })
}

/// Epoch seconds (10 digits, maybe with a fraction) or milliseconds (13 digits) as a token.
fn epoch(b: &[u8], at: usize) -> Option<Found> {
    let digits = count_digits(b, at);
    let mut end = at + digits;
    let mut nanos: i128 = 0;
    let scale: i128 = match digits {
        10 => 1_000_000_000,
        13 => 1_000_000,
        _ => return None,
    };
    if digits == 10 && b.get(end) == Some(&b'.') {
        let fraction = count_digits(b, end + 1);
        if fraction == 0 {
            return None;
        }
        let taken = fraction.min(9);
        nanos = i128::from(num(b, end + 1, taken)?) * 10i128.pow(9 - taken as u32);
        end += 1 + fraction;
    }
    if !ends_token(b, end) {
        return None;
    }
    let whole = i128::from(std::str::from_utf8(&b[at..at + digits]).ok()?.parse::<i64>().ok()?);
    let time = Timestamp::from_nanosecond(whole * scale + nanos).ok()?;
    Some(Found { time: Some(time), end, layout: Layout::Plain, level: None })
}

/// ISO 8601: `2026-11-25T12:00:00`, `-` or `/` in the date, `T` or a space, a `.` or `,`
/// fraction, then `Z`, an offset (`+01:00`, `+0100`, ` +0100`) or ` UTC`; or DB2's
/// `2026-11-25-12.00.00.123456`.
fn iso(b: &[u8], at: usize, context: TimeContext<'_>) -> Option<Found> {
    if count_digits(b, at) != 4 {
        return None;
    }
    let separator = *b.get(at + 4)?;
    if !matches!(separator, b'-' | b'/') || b.get(at + 7) != Some(&separator) {
        return None;
    }
    let year = num(b, at, 4)? as i16;
    if !(1900..=2200).contains(&year) {
        return None;
    }
    let date = Date::new(year, num(b, at + 5, 2)? as i8, num(b, at + 8, 2)? as i8).ok()?;
    let (time, end) = match b.get(at + 10)? {
        b'T' | b't' | b' ' => clock(b, at + 11, b':')?,
        b'-' if separator == b'-' => clock(b, at + 11, b'.')?,
        _ => return None,
    };
    let (time, end) = fraction(b, end, time, b".,");
    let datetime = date.to_datetime(time);
    let (offset, end) = zone(b, end);
    if b.get(end).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    Some(match offset {
        Some(offset) => Found { time: offset.to_timestamp(datetime).ok(), end, layout: Layout::Plain, level: None },
        None => civil(datetime, end, context),
    })
}

/// A zone after a time: `Z`, `+01:00`, `+0100`, `+01`, or after a space `+0100`, `UTC`, `GMT`.
fn zone(b: &[u8], at: usize) -> (Option<Offset>, usize) {
    match b.get(at) {
        Some(b'Z' | b'z') if !b.get(at + 1).is_some_and(u8::is_ascii_alphanumeric) => (Some(Offset::UTC), at + 1),
        Some(b'+' | b'-') => match offset(b, at) {
            Some((offset, end)) => (Some(offset), end),
            None => (None, at),
        },
        Some(b' ') => {
            let rest = &b[at + 1..];
            if (rest.starts_with(b"UTC") || rest.starts_with(b"GMT")) && ends_token(b, at + 4) {
                return (Some(Offset::UTC), at + 4);
            }
            match rest.first() {
                Some(b'+' | b'-') => match offset(b, at + 1) {
                    Some((offset, end)) if end - at >= 6 => (Some(offset), end),
                    _ => (None, at),
                },
                _ => (None, at),
            }
        }
        _ => (None, at),
    }
}

/// `+01:00`, `+0100` or `+01` at `b[at]`.
fn offset(b: &[u8], at: usize) -> Option<(Offset, usize)> {
    let sign = if b[at] == b'-' { -1 } else { 1 };
    let hours = num(b, at + 1, 2)?;
    let (minutes, end) = match (b.get(at + 3), count_digits(b, at + 3)) {
        (Some(b':'), _) => (num(b, at + 4, 2)?, at + 6),
        (_, 2) => (num(b, at + 3, 2)?, at + 5),
        (_, 0) => (0, at + 3),
        _ => return None,
    };
    if hours > 18 || minutes > 59 || b.get(end).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    Some((Offset::from_seconds(sign * (hours * 3600 + minutes * 60)).ok()?, end))
}

/// CLF: `25/Nov/2026:12:00:01 +0000`.
fn clf(b: &[u8], at: usize) -> Option<Found> {
    if b.get(at + 2) != Some(&b'/') {
        return None;
    }
    let text = std::str::from_utf8(b.get(at..at + 26)?).ok()?;
    let time = timestamp::parse_clf(text)?;
    Some(Found { time: Some(time), end: at + 26, layout: Layout::Plain, level: None })
}

/// ctime, as Apache's error log writes it: `Sun Dec 04 04:47:44 2005` (also `04:47:44.123456`).
fn ctime(b: &[u8], at: usize, context: TimeContext<'_>) -> Option<Found> {
    let day_name = b.get(at..at + 3)?;
    if !DAYS.iter().any(|d| d.eq_ignore_ascii_case(day_name)) || b.get(at + 3) != Some(&b' ') {
        return None;
    }
    let (month, day, time, end) = month_day_time(b, at + 4)?;
    if b.get(end) != Some(&b' ') || count_digits(b, end + 1) != 4 || !ends_token(b, end + 5) {
        return None;
    }
    let date = Date::new(num(b, end + 1, 4)? as i16, month, day).ok()?;
    Some(civil(date.to_datetime(time), end + 5, context))
}

/// syslog's `Nov 25 12:00:00` (`Nov  5`), year inferred.
fn syslog(b: &[u8], at: usize, context: TimeContext<'_>) -> Option<Found> {
    let (month, day, time, end) = month_day_time(b, at)?;
    if b.get(end).is_some_and(u8::is_ascii_alphanumeric) {
        return None;
    }
    Some(Found { time: Some(no_year(context, month, day, time)?), end, layout: Layout::Plain, level: None })
}

/// `Nov 25 12:00:00[.fff]` or `Nov  5 ...`: month, day, time and the end.
fn month_day_time(b: &[u8], at: usize) -> Option<(i8, i8, Time, usize)> {
    let month = timestamp::month_number(b.get(at..at + 3)?)?;
    if b.get(at + 3) != Some(&b' ') {
        return None;
    }
    let mut i = at + 4;
    if b.get(i) == Some(&b' ') {
        i += 1;
    }
    let digits = count_digits(b, i);
    if !(1..=2).contains(&digits) || b.get(i + digits) != Some(&b' ') {
        return None;
    }
    let day = num(b, i, digits)? as i8;
    let (time, end) = clock(b, i + digits + 1, b':')?;
    let (time, end) = fraction(b, end, time, b".");
    Some((month, day, time, end))
}

const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];

/// `HH:mm:ss` (with `separator` between the fields) at `b[at]`.
fn clock(b: &[u8], at: usize, separator: u8) -> Option<(Time, usize)> {
    if b.get(at + 2) != Some(&separator) || b.get(at + 5) != Some(&separator) {
        return None;
    }
    let time = Time::new(num(b, at, 2)? as i8, num(b, at + 3, 2)? as i8, num(b, at + 6, 2)? as i8, 0).ok()?;
    Some((time, at + 8))
}

/// A fraction after one of `separators` (at most nine digits are kept); the end moves past it.
fn fraction(b: &[u8], at: usize, time: Time, separators: &[u8]) -> (Time, usize) {
    let Some(c) = b.get(at) else { return (time, at) };
    if !separators.contains(c) {
        return (time, at);
    }
    let digits = count_digits(b, at + 1);
    if digits == 0 {
        return (time, at);
    }
    let taken = digits.min(9);
    let Some(value) = num(b, at + 1, taken) else { return (time, at) };
    let nanos = value * 10i32.pow(9 - taken as u32);
    match time.with().subsec_nanosecond(nanos).build() {
        Ok(time) => (time, at + 1 + digits),
        Err(_) => (time, at),
    }
}

fn civil(datetime: DateTime, end: usize, context: TimeContext<'_>) -> Found {
    let time = context.zone.to_ambiguous_timestamp(datetime).compatible().ok();
    Found { time, end, layout: Layout::Plain, level: None }
}

fn no_year(context: TimeContext<'_>, month: i8, day: i8, time: Time) -> Option<Timestamp> {
    timestamp::nearest_year(context, |year| Date::new(year, month, day).ok().map(|date| date.to_datetime(time)))
}

fn two_digit_year(yy: i32) -> i16 {
    if yy < 70 { 2000 + yy as i16 } else { 1900 + yy as i16 }
}

fn count_digits(b: &[u8], at: usize) -> usize {
    b.get(at..).map_or(0, |rest| rest.iter().take_while(|c| c.is_ascii_digit()).count())
}

/// The `len` digits at `b[at]` as a number.
fn num(b: &[u8], at: usize, len: usize) -> Option<i32> {
    let digits = b.get(at..at + len)?;
    digits.iter().try_fold(0i32, |n, c| c.is_ascii_digit().then(|| n * 10 + i32::from(c - b'0')))
}

/// `b[at]` ends a token: the end, a space or punctuation that closes one.
fn ends_token(b: &[u8], at: usize) -> bool {
    b.get(at).is_none_or(|c| matches!(c, b' ' | b'\t' | b']' | b'|' | b',' | b';' | b')' | b'\r' | b'\n'))
}

/// Logcat's `pid tid L tag:` after its time.
fn logcat_level(b: &[u8], at: usize) -> Option<Level> {
    let mut tokens = b.get(at..)?.split(|c| *c == b' ').filter(|t| !t.is_empty());
    let (pid, tid, letter) = (tokens.next()?, tokens.next()?, tokens.next()?);
    let numeric = |t: &[u8]| t.iter().all(u8::is_ascii_digit);
    if !(numeric(pid) && numeric(tid) && letter.len() == 1) {
        return None;
    }
    Some(match letter[0] {
        b'V' => Level::Trace,
        b'D' => Level::Debug,
        b'I' => Level::Info,
        b'W' => Level::Warn,
        b'E' => Level::Error,
        b'F' | b'A' => Level::Fatal,
        _ => return None,
    })
}

/// A level word among the first tokens from `b[at]`. Tokens that are not words (numbers,
/// `-`, `[thread]`, `host-1`, `RAS`) are passed over; after one plain word only a level that
/// stands out (upper case, bracketed or followed by `:`) still counts, and a second word ends
/// the walk. A tag (`sshd[1]:`) ends the head: only the token right after it is still looked
/// at, as syslog lines carry the app's own `[warn]` there. With `marked_only`, every level
/// must stand out.
fn level_after(b: &[u8], at: usize, marked_only: bool) -> Option<Level> {
    let rest = b.get(at..)?;
    let rest = &rest[..rest.len().min(160)];
    let mut words = 0;
    let mut after_tag = false;
    let tokens = rest.split(|c| c.is_ascii_whitespace()).filter(|t| !t.is_empty()).take(LEVEL_TOKENS);
    for token in tokens {
        let bracketed = matches!(token.first(), Some(b'[' | b'(' | b'<'));
        let colon = token.last() == Some(&b':');
        let mut core = trim_token(token);
        // Python's basicConfig layout: `ERROR:root:message`.
        if let Some(colon) = core.iter().position(|c| *c == b':') {
            let before = &core[..colon];
            if before.len() >= 3 && before.iter().all(u8::is_ascii_uppercase) {
                core = before;
            }
        }
        let alphabetic = !core.is_empty() && core.iter().all(u8::is_ascii_alphabetic);
        if alphabetic && (3..=13).contains(&core.len()) {
            let upper = core.iter().all(u8::is_ascii_uppercase);
            let lower_or_title = core[1..].iter().all(u8::is_ascii_lowercase);
            let marked = upper || bracketed || colon;
            let plain_allowed = words == 0 && !after_tag && !marked_only;
            if (upper || lower_or_title) && (marked || plain_allowed) {
                // `core` is ASCII letters.
                if let Some(level) = std::str::from_utf8(core).ok().and_then(Level::from_name) {
                    return Some(level);
                }
            }
        }
        if after_tag {
            return None;
        }
        if colon && !bracketed {
            after_tag = true;
            continue;
        }
        if alphabetic && !bracketed && core.iter().any(u8::is_ascii_lowercase) {
            words += 1;
            if words > 1 {
                return None;
            }
        }
    }
    None
}

/// A token without the brackets and punctuation around it: `[INFO]` → `INFO`, `err:` → `err`.
fn trim_token(token: &[u8]) -> &[u8] {
    let start = token.iter().position(|c| !matches!(c, b'[' | b'(' | b'<' | b'{')).unwrap_or(token.len());
    let token = &token[start..];
    let end = token
        .iter()
        .rposition(|c| !matches!(c, b']' | b')' | b'>' | b'}' | b':' | b',' | b';' | b'|'))
        .map_or(0, |i| i + 1);
    &token[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::tz::TimeZone;
    use proptest::prelude::*;

    static UTC: TimeZone = TimeZone::UTC;

    fn context() -> TimeContext<'static> {
        TimeContext { observed: "2026-11-25T12:00:05Z".parse().expect("timestamp"), zone: &UTC }
    }

    fn time(text: &str) -> Option<String> {
        sniff(text, context()).time.map(|t| format!("{t:.3}"))
    }

    fn level(text: &str) -> Option<Level> {
        sniff(text, context()).level
    }

    #[test]
    fn every_shape_real_systems_write() {
        let cases = [
            ("2026-11-25T12:00:00.123Z INFO x", "2026-11-25T12:00:00.123Z"),
            ("2026-11-25 12:00:01,250 WARN x", "2026-11-25T12:00:01.250Z"),
            ("2026-11-25 12:00:02.5+01:00 error x", "2026-11-25T11:00:02.500Z"),
            ("2026-11-25T12:00:03+0100 x", "2026-11-25T11:00:03.000Z"),
            ("2026-11-25 12:00:04 -0700 x", "2026-11-25T19:00:04.000Z"),
            ("2026-11-25 12:00:04.000 UTC [1] LOG: x", "2026-11-25T12:00:04.000Z"),
            ("2026/11/25 12:00:05 x", "2026-11-25T12:00:05.000Z"),
            ("17/06/09 20:10:40 INFO x", "2017-06-09T20:10:40.000Z"),
            ("081109 203615 148 INFO x", "2008-11-09T20:36:15.000Z"),
            ("03-17 16:13:38.811  1702  2395 D Tag: x", "2026-03-17T16:13:38.811Z"),
            ("[Sun Dec 04 04:47:44 2005] [notice] x", "2005-12-04T04:47:44.000Z"),
            ("Dec 10 06:55:46 host sshd[1]: x", "2025-12-10T06:55:46.000Z"),
            ("Jun  4 09:00:55 host kernel[0]: x", "2026-06-04T09:00:55.000Z"),
            ("<34>Oct 11 22:14:15 host su: x", "2026-10-11T22:14:15.000Z"),
            ("20171223-22:15:29:606|Step|1|x", "2017-12-23T22:15:29.606Z"),
            ("[10.30 16:49:06] chrome.exe - x", "2026-10-30T16:49:06.000Z"),
            ("1764072000 x", "2025-11-25T12:00:00.000Z"),
            ("1764072000.5 x", "2025-11-25T12:00:00.500Z"),
            ("1764072000123 x", "2025-11-25T12:00:00.123Z"),
            ("- 1117838570 2005.06.03 R02 RAS KERNEL INFO x", "2005-06-03T22:42:50.000Z"),
            ("nova.log.2017-05-16_13:53:08 2017-05-16 00:00:00.008 1 INFO x", "2017-05-16T00:00:00.008Z"),
            ("2016-09-28 04:30:30, Info   CBS x", "2016-09-28T04:30:30.000Z"),
            ("2005-06-03-15.42.50.675872 R02 x", "2005-06-03T15:42:50.675Z"),
            ("I1125 12:00:00.123456   1 main.go:42] x", "2026-11-25T12:00:00.123Z"),
            ("app-1  | 2026-11-25T12:00:06Z x", "2026-11-25T12:00:06.000Z"),
            ("192.0.2.1 - - [25/Nov/2026:12:00:09 +0000] \"GET /\"", "2026-11-25T12:00:09.000Z"),
        ];
        for (text, want) in cases {
            assert_eq!(time(text).as_deref(), Some(want), "{text}");
        }
    }

    #[test]
    fn levels_after_the_time() {
        let cases = [
            ("2026-11-25 12:00:00 Info x", Some(Level::Info)),
            ("2026-11-25 12:00:00 WARNING x", Some(Level::Warn)),
            ("2026-11-25 12:00:00 err: x", Some(Level::Error)),
            ("2026-11-25 12:00:00 [error] x", Some(Level::Error)),
            ("2026-11-25 12:00:00,1 - INFO  [Peer] - x", Some(Level::Info)),
            ("2026-11-25 12:00:00 [main] ERROR c.e.App - x", Some(Level::Error)),
            ("2026-11-25 12:00:00,1 - app.db - CRITICAL - x", Some(Level::Fatal)),
            ("2026-11-25 12:00:00 root INFO x", Some(Level::Info)),
            ("081109 203615 148 WARN dfs: x", Some(Level::Warn)),
            ("03-17 16:13:38.811  1702  2395 E Tag: x", Some(Level::Error)),
            ("03-17 16:13:38.811  1702  2395 V Tag: x", Some(Level::Trace)),
            ("- 1117838570 2005.06.03 R02-M1 2005-06-03-15.42.50.675872 R02-M1 RAS KERNEL FATAL x", Some(Level::Fatal)),
            ("W1125 12:00:00.1 1 a.go:1] x", Some(Level::Warn)),
            ("2026-11-25 12:00:00 user error handling", None),
            ("2026-11-25 12:00:00 starting: error x", None),
            ("2026-11-25 12:00:00 D single letters are no level outside logcat", None),
            ("Dec 10 06:55:46 host sshd[1]: error x", None),
            ("Nov 25 11:59:00 host app[1]: [warn] low disk", Some(Level::Warn)),
            ("Nov 25 11:59:00 host kernel: ARPT: x [error]", None),
            ("ERROR no time", Some(Level::Error)),
            ("[warn] no time", Some(Level::Warn)),
            ("info: no time", Some(Level::Info)),
            ("info without a mark", None),
            ("ERROR:root:payment failed", Some(Level::Error)),
            ("<34>Oct 11 22:14:15 host su: x", Some(Level::Fatal)),
            ("<165>1 2003-10-11T22:14:15.003Z host app - - - x", Some(Level::Info)),
            ("<999>Oct 11 22:14:15 host su: x", None),
        ];
        for (text, want) in cases {
            assert_eq!(level(text), want, "{text}");
        }
    }

    #[test]
    fn near_misses_are_no_time() {
        for text in [
            "2026-11-25 x",
            "2026-13-25 12:00:00 x",
            "2026-11-25_12:00:00 x",
            "v2026-11-25 12:00:00 x",
            "12345678901 eleven digits",
            "1764072000x",
            "Nov 31 12:00:00 x",
            "Foo 25 12:00:00 x",
            "03-17 16:13:38 logcat needs millis",
            "10.30 16:49:06 needs its brackets",
            "",
            "[",
            "<999>",
        ] {
            assert_eq!(time(text), None, "{text}");
        }
        let far = format!("{} 2026-11-25 12:00:00 x", "a".repeat(WINDOW));
        assert_eq!(time(&far), None, "past the window");
    }

    /// Message tokens, including every digit-only time shape: none may become a time.
    fn message_token() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{1,10}",
            "[0-9]{1,14}",
            "[0-9]{1,6}\\.[0-9]{1,6}",
            "[0-9]{1,4}[-/:.,][0-9]{1,4}",
            "[0-9]{6} [0-9]{6}",
            "[0-9]{2}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}",
            "[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}",
            "[0-9]{8}-[0-9]{2}:[0-9]{2}:[0-9]{2}:[0-9]{3}",
            "\\[[0-9]{2}\\.[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\\]",
            "1[0-9]{9}",
            "1[0-9]{12}",
            "[IWEF][0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2}",
        ]
    }

    proptest! {
        #[test]
        fn sniffing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = sniff(&text, context());
        }

        #[test]
        fn sniffing_never_panics_on_near_times(text in "[<\\[]?[0-9A-Za-z]{0,3}[0-9 :./,TZ+-]{0,40}[A-Za-z \\]:]{0,10}") {
            let _ = sniff(&text, context());
        }

        /// A number inside a message is never a time: the line starts with a word.
        #[test]
        fn numbers_in_a_message_are_no_time(
            first in "[a-z]{1,10}",
            tokens in proptest::collection::vec(message_token(), 0..12),
        ) {
            let line = format!("{first} {}", tokens.join(" "));
            prop_assert_eq!(sniff(&line, context()).time, None, "{}", line);
        }

        /// After a time at the head, the time found is that one, whatever numbers follow.
        #[test]
        fn the_head_time_wins_over_numbers_in_the_message(
            tokens in proptest::collection::vec(message_token(), 0..12),
        ) {
            let line = format!("2026-11-25 12:00:00,250 INFO {}", tokens.join(" "));
            let found = time(&line);
            prop_assert_eq!(found.as_deref(), Some("2026-11-25T12:00:00.250Z"), "{}", line);
        }
    }
}
