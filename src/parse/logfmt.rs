//! logfmt: `key=value key2="quoted \"value\"" bare_key` pairs, as written by Go's logfmt,
//! logrus, zerolog's console writer and slog's text handler. Read on bytes with borrowed
//! slices; a value is copied only when it becomes an attribute and unescaped only when it has
//! a backslash.

use std::borrow::Cow;

use super::fields::{FieldSpec, Role, parse_traceparent};
use super::promote::Promoted;
use super::timestamp::TimeContext;
use crate::record::{Record, SpanId, TraceId, Value};

/// One pair: a key and its raw value (`None` for a bare key), quotes removed, escapes kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair<'a> {
    pub key: &'a str,
    pub value: Option<RawValue<'a>>,
}

/// A value as written: `escaped` when it was quoted and contains a backslash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawValue<'a> {
    pub text: &'a str,
    pub escaped: bool,
}

impl<'a> RawValue<'a> {
    /// The value with `\"`, `\\`, `\n`, `\t`, `\r` unescaped.
    #[inline]
    pub fn unescaped(&self) -> Cow<'a, str> {
        if self.escaped { Cow::Owned(unescape(self.text)) } else { Cow::Borrowed(self.text) }
    }
}

/// `text` with its escapes replaced: `\n`, `\t`, `\r`, and any other escaped character for
/// itself; a trailing backslash is dropped. Copies the runs between backslashes whole: a
/// backslash is ASCII, so every index found here is a character boundary.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut start = 0;
    while let Some(found) = memchr::memchr(b'\\', &bytes[start..]) {
        let slash = start + found;
        out.push_str(&text[start..slash]);
        let Some(escaped) = text[slash + 1..].chars().next() else {
            return out;
        };
        match escaped {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            other => out.push(other),
        }
        start = slash + 1 + escaped.len_utf8();
    }
    out.push_str(&text[start..]);
    out
}

/// Iterates over the pairs of a line; yields `Err(())` once, at the first token that is not
/// logfmt (a key with characters keys do not have, `key="unterminated`). Every slice boundary
/// is next to an ASCII delimiter, so slicing the `str` never splits a character.
pub struct Pairs<'a> {
    line: &'a str,
    pos: usize,
    failed: bool,
}

/// The pairs of `line`.
pub fn pairs(line: &str) -> Pairs<'_> {
    Pairs { line, pos: 0, failed: false }
}

/// Byte classes, looked up rather than computed: this loop runs over every byte of a line.
const KEY: u8 = 1;
const SPACE: u8 = 2;
const CLASSES: [u8; 256] = {
    let mut classes = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-' | b'/' | b'@' | b'[' | b']') {
            classes[b] = KEY;
        } else if byte.is_ascii_whitespace() {
            classes[b] = SPACE;
        }
        b += 1;
    }
    classes
};

#[inline]
fn is_key_byte(b: u8) -> bool {
    CLASSES[usize::from(b)] == KEY
}

#[inline]
fn is_space(b: &u8) -> bool {
    CLASSES[usize::from(*b)] == SPACE
}

impl<'a> Iterator for Pairs<'a> {
    type Item = Result<Pair<'a>, ()>;

    // Inlined into the parse loop: called as a function, every pair was returned through
    // memory and copied again.
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let bytes = self.line.as_bytes();
        let start = self.pos + bytes[self.pos..].iter().position(|b| !is_space(b))?;
        let key_len = bytes[start..].iter().position(|b| !is_key_byte(*b)).unwrap_or(bytes.len() - start);
        self.pos = start + key_len;
        let key = &self.line[start..self.pos];
        if key.is_empty() {
            return self.fail();
        }
        match bytes.get(self.pos) {
            None => return Some(Ok(Pair { key, value: None })),
            Some(b) if is_space(b) => return Some(Ok(Pair { key, value: None })),
            Some(b'=') => self.pos += 1,
            Some(_) => return self.fail(),
        }
        let value = if bytes.get(self.pos) == Some(&b'"') { self.quoted() } else { Some(self.bare()) };
        match value {
            Some(value) => Some(Ok(Pair { key, value: Some(value) })),
            None => self.fail(),
        }
    }
}

/// The length of the bare value at the start of `rest`: up to the first whitespace byte.
///
/// Every ASCII whitespace byte is below `0x21`, so eight bytes at a time are tested for any
/// byte below `0x21` (the SWAR "has less than" test: exact for the lowest flagged byte, and no
/// byte is missed); a word with one is looked at byte by byte, since control bytes other than
/// whitespace belong to the value.
#[inline]
fn bare_len(rest: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut words = rest.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let mut chunk = [0u8; 8];
        chunk.copy_from_slice(word);
        let value = u64::from_ne_bytes(chunk);
        if value.wrapping_sub(ONES * 0x21) & !value & HIGHS != 0 {
            if let Some(i) = word.iter().position(is_space) {
                return offset + i;
            }
        }
        offset += 8;
    }
    let tail = words.remainder();
    offset + tail.iter().position(is_space).unwrap_or(tail.len())
}

impl<'a> Pairs<'a> {
    #[cold]
    fn fail(&mut self) -> Option<Result<Pair<'a>, ()>> {
        self.failed = true;
        Some(Err(()))
    }

    #[inline]
    fn bare(&mut self) -> RawValue<'a> {
        let len = bare_len(&self.line.as_bytes()[self.pos..]);
        let text = &self.line[self.pos..self.pos + len];
        self.pos += len;
        RawValue { text, escaped: false }
    }

    /// A quoted value, starting at its opening quote; `None` when it is not terminated.
    #[inline]
    fn quoted(&mut self) -> Option<RawValue<'a>> {
        let bytes = self.line.as_bytes();
        let start = self.pos + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            i += memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
            if bytes[i] == b'"' {
                self.pos = i + 1;
                // `key="v"rest`: the value must end at whitespace or the end of the line.
                if bytes.get(self.pos).is_some_and(|b| !is_space(b)) {
                    return None;
                }
                return Some(RawValue { text: &self.line[start..i], escaped });
            }
            escaped = true;
            i += 2;
        }
    }
}

/// Whether `line` is logfmt with at least `min_values` key=value pairs.
pub fn is_logfmt(line: &str, min_values: usize) -> bool {
    let mut values = 0;
    for pair in pairs(line) {
        match pair {
            Ok(pair) => values += usize::from(pair.value.is_some()),
            Err(()) => return false,
        }
    }
    values >= min_values.max(1)
}

/// Reads `line` into `record` in one pass; on error the caller discards the record.
pub(super) fn parse(
    line: &[u8],
    spec: &FieldSpec,
    context: TimeContext<'_>,
    record: &mut Record,
) -> Result<(), String> {
    const NOT_LOGFMT: &str = "not logfmt key=value pairs";
    let text = match std::str::from_utf8(line) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(line),
    };
    let mut promoted = Promoted::default();
    let mut values = 0;
    for pair in pairs(&text) {
        let pair = pair.map_err(|()| NOT_LOGFMT.to_owned())?;
        let Some(value) = pair.value else {
            record.attributes.insert(pair.key, Value::Bool(true));
            continue;
        };
        values += 1;
        match spec.names.role_of(pair.key) {
            Some((role, rank)) => promote(spec, context, record, &mut promoted, (pair.key, role, rank), value),
            None => {
                record.attributes.insert(pair.key, Value::from(value.unescaped()));
            }
        }
    }
    if values == 0 {
        return Err(NOT_LOGFMT.to_owned());
    }
    promoted.apply(record);
    spec.convert_types(&mut record.attributes);
    Ok(())
}

fn promote(
    spec: &FieldSpec,
    context: TimeContext<'_>,
    record: &mut Record,
    promoted: &mut Promoted,
    (key, role, rank): (&str, Role, u8),
    value: RawValue<'_>,
) {
    let (names, attributes) = (&spec.names, &mut record.attributes);
    let text = value.unescaped();
    match role {
        Role::Message => return promoted.message(rank, text.into_owned(), names, attributes),
        Role::Level => {
            if let Some(level) = spec.level.level_of_text(&text) {
                return promoted.level(rank, level, names, attributes);
            }
        }
        Role::Time => {
            if let Some(ts) = spec.time_format.parse_str(&text, context) {
                return promoted.time(rank, ts, names, attributes);
            }
        }
        Role::TraceId => {
            if let Some(id) = TraceId::parse_hex(&text) {
                return promoted.trace_id(rank, id, names, attributes);
            }
        }
        Role::SpanId => {
            if let Some(id) = SpanId::parse_hex(&text) {
                return promoted.span_id(rank, id, names, attributes);
            }
        }
        Role::TraceParent => {
            if let Some(ids) = parse_traceparent(&text) {
                return promoted.traceparent(rank, ids, names, attributes);
            }
        }
    }
    attributes.insert(key, Value::from(text));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect(line: &str) -> Option<Vec<(String, Option<String>)>> {
        pairs(line)
            .map(|pair| pair.map(|p| (p.key.to_owned(), p.value.map(|v| v.unescaped().into_owned()))))
            .collect::<Result<Vec<_>, ()>>()
            .ok()
    }

    #[test]
    fn pairs_quotes_escapes_and_bare_keys() {
        let pairs = collect(r#"level=info msg="hello \"world\"" debug user.id=42 empty="" path="C:\\tmp" nl="a\nb""#)
            .expect("logfmt");
        let want = [
            ("level", Some("info")),
            ("msg", Some("hello \"world\"")),
            ("debug", None),
            ("user.id", Some("42")),
            ("empty", Some("")),
            ("path", Some("C:\\tmp")),
            ("nl", Some("a\nb")),
        ];
        let want: Vec<_> = want.iter().map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned))).collect();
        assert_eq!(pairs, want);
    }

    #[test]
    fn what_is_not_logfmt() {
        assert!(collect("error: connection refused").is_none());
        assert!(collect(r#"msg="unterminated"#).is_none());
        assert!(collect(r#"msg="a"b"#).is_none());
        assert!(collect(r#"msg="ends with backslash\"#).is_none());
        assert!(!is_logfmt("just words", 1));
        assert!(is_logfmt("a=1 b=2", 2));
        assert!(!is_logfmt("a=1 b", 2));
    }

    /// The escape rules as first written, a character at a time: the reference for `unescape`.
    fn unescape_by_chars(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => {}
            }
        }
        out
    }

    proptest! {
        #[test]
        fn unescape_matches_the_reference(text in r#"[a-z\\"ntré€ ]{0,40}"#) {
            prop_assert_eq!(unescape(&text), unescape_by_chars(&text));
        }

        #[test]
        fn bare_len_stops_at_the_first_whitespace(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let want = bytes.iter().position(is_space).unwrap_or(bytes.len());
            prop_assert_eq!(bare_len(&bytes), want);
        }

        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = pairs(&String::from_utf8_lossy(&line)).count();
        }
    }
}
