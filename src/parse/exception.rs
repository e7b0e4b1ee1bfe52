//! Stack traces in a record's text: a Java (also Kotlin, Scala, .NET and Node.js) exception
//! with its `at ...` frames, a Python traceback, or a Go panic with its goroutine dump become
//! the OpenTelemetry attributes `exception.type`, `exception.message` and
//! `exception.stacktrace`. Only text of several lines is looked at: a trace is never one line.

use memchr::memmem;

use crate::record::{Attributes, Record, Value};

pub const TYPE: &str = "exception.type";
pub const MESSAGE: &str = "exception.message";
pub const STACKTRACE: &str = "exception.stacktrace";

/// A stack trace found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception<'a> {
    /// `java.lang.IllegalStateException`, `KeyError`, `panic`; absent for bare frames.
    pub kind: Option<&'a str>,
    pub message: Option<&'a str>,
    /// From the trace's first line to the end of the text.
    pub stacktrace: &'a str,
}

impl Exception<'_> {
    /// Adds the `exception.*` attributes (a value already there is kept).
    fn annotate(&self, attributes: &mut Attributes, stacktrace: bool) {
        if let Some(kind) = self.kind {
            attributes.insert(TYPE, Value::from(kind));
        }
        if let Some(message) = self.message.filter(|m| !m.is_empty()) {
            attributes.insert(MESSAGE, Value::from(message));
        }
        if stacktrace {
            attributes.insert(STACKTRACE, Value::from(self.stacktrace));
        }
    }
}

/// The stack trace in `text`, if there is one.
pub fn find(text: &str) -> Option<Exception<'_>> {
    memchr::memchr(b'\n', text.as_bytes())?;
    python(text).or_else(|| go(text)).or_else(|| java(text))
}

/// Looks for a stack trace in the part of `record.message` from `from` on (the continuation
/// lines of a multiline record) and adds its attributes.
pub fn annotate_message(record: &mut Record, from: usize) {
    if record.attributes.contains_key(TYPE) || record.attributes.contains_key(STACKTRACE) {
        return;
    }
    let Some(text) = record.message.get(from..) else { return };
    if let Some(exception) = find(text) {
        exception.annotate(&mut record.attributes, true);
    }
}

/// For structured records: a string field holding a stack trace (at the top level, or one
/// level down as in bunyan's `{"err":{"stack":...}}`) is moved to `exception.stacktrace`, with
/// its type and message; else a stack trace in the message adds the attributes. Fields are
/// looked at only when `line` holds an escaped or real newline, so that ordinary lines pay
/// one memchr (and a look at the byte after each backslash).
pub fn annotate_fields(line: &[u8], record: &mut Record) {
    if !may_hold_newline(line) {
        return;
    }
    if record.attributes.contains_key(TYPE) || record.attributes.contains_key(STACKTRACE) {
        return;
    }
    if let Some(text) = take_trace(&mut record.attributes, 1) {
        if let Some(exception) = find(&text) {
            exception.annotate(&mut record.attributes, false);
        }
        record.attributes.insert(STACKTRACE, Value::String(text));
        return;
    }
    annotate_message(record, 0);
}

/// Whether a field of the json or logfmt `line` may hold a newline: a real one, or the escapes
/// `\n` and `\u000a`. Other escapes (`\"` in a logfmt value) do not make a stack trace.
fn may_hold_newline(line: &[u8]) -> bool {
    memchr::memchr2_iter(b'\n', b'\\', line).any(|at| match &line[at..] {
        [b'\n', ..] | [b'\\', b'n', ..] => true,
        [b'\\', b'u', hex @ ..] => hex.get(..4).is_some_and(|hex| hex.eq_ignore_ascii_case(b"000a")),
        _ => false,
    })
}

/// Removes and returns the first string field (`depth` levels down at most) that holds a
/// stack trace.
fn take_trace(attributes: &mut Attributes, depth: usize) -> Option<compact_str::CompactString> {
    let mut objects = Vec::new();
    let mut found = None;
    for (name, value) in attributes.iter() {
        match value {
            Value::String(text) if find(text).is_some() => {
                found = Some(name.to_owned());
                break;
            }
            Value::Object(_) if depth > 0 => objects.push(name.to_owned()),
            _ => {}
        }
    }
    if let Some(name) = found {
        return match attributes.remove(&name) {
            Some(Value::String(text)) => Some(text),
            _ => None,
        };
    }
    objects.into_iter().find_map(|name| match attributes.get_mut(&name) {
        Some(Value::Object(inner)) => take_trace(inner, depth - 1),
        _ => None,
    })
}

/// Byte offsets of the lines of `text`, with each line (without `\r`).
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut start = 0;
    text.split('\n').map(move |line| {
        let at = start;
        start += line.len() + 1;
        (at, line.strip_suffix('\r').unwrap_or(line))
    })
}

/// `Traceback (most recent call last):` ... `SomeError: message`; with chained exceptions the
/// last one is the type.
fn python(text: &str) -> Option<Exception<'_>> {
    const HEADER: &str = "Traceback (most recent call last):";
    let first = memmem::find(text.as_bytes(), HEADER.as_bytes())?;
    let last = memmem::rfind(text.as_bytes(), HEADER.as_bytes())?;
    let after = &text[last + HEADER.len()..];
    let line =
        lines(after).skip(1).map(|(_, line)| line).find(|line| !line.is_empty() && !line.starts_with([' ', '\t']))?;
    let (kind, message) = match line.split_once(':') {
        Some((kind, message)) => (kind, Some(message.trim())),
        None => (line.trim_end(), None),
    };
    if !is_python_name(kind) {
        return None;
    }
    Some(Exception { kind: Some(kind), message, stacktrace: text[first..].trim_end() })
}

fn is_python_name(kind: &str) -> bool {
    let mut chars = kind.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// `panic: message` (or `fatal error: message`) followed by `goroutine N [running]:`; or a
/// goroutine dump alone.
fn go(text: &str) -> Option<Exception<'_>> {
    memmem::find(text.as_bytes(), b"goroutine ")?;
    let (dump_at, _) = lines(text).find(|(_, line)| is_goroutine_header(line))?;
    for (at, line) in lines(&text[..dump_at]) {
        for (prefix, kind) in [("panic: ", "panic"), ("fatal error: ", "fatal error")] {
            if let Some(message) = line.strip_prefix(prefix) {
                let message = Some(message.trim());
                return Some(Exception { kind: Some(kind), message, stacktrace: text[at..].trim_end() });
            }
        }
    }
    Some(Exception { kind: None, message: None, stacktrace: text[dump_at..].trim_end() })
}

/// `goroutine 1 [running]:`
fn is_goroutine_header(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("goroutine ") else { return false };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && rest[digits..].starts_with(" [") && line.ends_with(':')
}

/// An exception line (`java.lang.IllegalStateException: boom`, `Exception in thread "main"
/// ...`, `TypeError: x`) followed by indented `at ...` frames.
fn java(text: &str) -> Option<Exception<'_>> {
    let frame = lines(text).position(|(_, line)| is_frame(line))?;
    let all: Vec<(usize, &str)> = lines(text).take(frame + 1).collect();
    // The exception line is the nearest one above the first frame that looks like one; the
    // lines between them continue its message.
    let (header, &(at, line)) =
        all[..frame].iter().enumerate().rev().take(20).find(|(_, (_, line))| header_of(line).is_some())?;
    let (kind, first) = header_of(line)?;
    let message = match first {
        // A message of several lines runs on to the first frame.
        Some(first) if header + 1 < frame => {
            let start = offset_in(text, first);
            let (last_at, last) = all[frame - 1];
            Some(text[start..last_at + last.len()].trim_end())
        }
        first => first,
    };
    Some(Exception { kind: Some(kind), message, stacktrace: text[at..].trim_end() })
}

/// Where `part`, a slice of `text`, starts in it.
fn offset_in(text: &str, part: &str) -> usize {
    part.as_ptr() as usize - text.as_ptr() as usize
}

/// `\tat com.x.Y.z(Y.java:1)`, `    at fn (file.js:1:2)`, `   at N.C.M() in f.cs:line 1`.
fn is_frame(line: &str) -> bool {
    let trimmed = line.trim_start_matches([' ', '\t']);
    trimmed.len() < line.len()
        && trimmed.strip_prefix("at ").is_some_and(|rest| rest.starts_with(|c: char| !c.is_whitespace()))
}

/// The type and message of an exception line.
fn header_of(line: &str) -> Option<(&str, Option<&str>)> {
    let mut line = line.trim_end();
    if let Some(rest) = line.strip_prefix("Exception in thread \"") {
        line = rest.split_once("\" ")?.1;
    }
    for prefix in ["Caused by: ", "Uncaught "] {
        line = line.strip_prefix(prefix).unwrap_or(line);
    }
    let (kind, message) = match line.split_once(": ") {
        Some((kind, message)) => (kind, Some(message.trim())),
        None => (line.strip_suffix(':').unwrap_or(line), None),
    };
    let name_like = !kind.is_empty()
        && kind.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && kind.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '$'));
    let exception_like =
        kind.contains('.') || ["Exception", "Error", "Throwable", "Fault"].iter().any(|suffix| kind.ends_with(suffix));
    (name_like && exception_like).then_some((kind, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_with_causes() {
        let text = "request failed\njava.lang.IllegalStateException: boom\n\tat com.shop.Checkout.pay(Checkout.java:42)\nCaused by: java.io.IOException: reset\n\tat java.net.Socket.read(Socket.java:1)\n\t... 12 more\n";
        let e = find(text).expect("found");
        assert_eq!(e.kind, Some("java.lang.IllegalStateException"));
        assert_eq!(e.message, Some("boom"));
        assert!(e.stacktrace.starts_with("java.lang.IllegalStateException: boom\n\tat com.shop"));
        assert!(e.stacktrace.ends_with("... 12 more"));
    }

    #[test]
    fn java_thread_prefix_multiline_messages_node_and_dotnet() {
        let e = find("Exception in thread \"main\" java.lang.RuntimeException: a\nsecond line\n\tat A.b(A.java:1)")
            .expect("java");
        assert_eq!((e.kind, e.message), (Some("java.lang.RuntimeException"), Some("a\nsecond line")));
        let e = find("TypeError: x is not a function\n    at Object.<anonymous> (/app/index.js:3:5)").expect("node");
        assert_eq!((e.kind, e.message), (Some("TypeError"), Some("x is not a function")));
        let e =
            find("System.InvalidOperationException: nope\n   at App.Main() in /src/Program.cs:line 5").expect(".net");
        assert_eq!(e.kind, Some("System.InvalidOperationException"));
        let e = find("java.lang.NullPointerException\n\tat A.b(A.java:1)").expect("no message");
        assert_eq!((e.kind, e.message), (Some("java.lang.NullPointerException"), None));
    }

    #[test]
    fn python_chained_tracebacks_take_the_last_exception() {
        let text = std::fs::read_to_string("fixtures/multiline/python.log").expect("fixture");
        let record: String = text.lines().skip(1).take(13).collect::<Vec<_>>().join("\n");
        let e = find(&record).expect("found");
        assert_eq!((e.kind, e.message), (Some("app.errors.PaymentError"), Some("declined")));
        assert!(e.stacktrace.starts_with("Traceback (most recent call last):\n  File \"app.py\", line 10"));
        assert!(e.stacktrace.ends_with("app.errors.PaymentError: declined"));
        let e = find("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nKeyboardInterrupt")
            .expect("bare");
        assert_eq!((e.kind, e.message), (Some("KeyboardInterrupt"), None));
    }

    #[test]
    fn go_panics_and_dumps() {
        let text = std::fs::read_to_string("fixtures/multiline/go.log").expect("fixture");
        let e = find(&text).expect("found");
        assert_eq!(e.kind, Some("panic"));
        assert_eq!(e.message, Some("runtime error: index out of range [5] with length 3"));
        assert!(e.stacktrace.starts_with("panic: runtime error") && e.stacktrace.ends_with("exit status 2"));
        let e = find("fatal error: all goroutines are asleep - deadlock!\n\ngoroutine 1 [chan receive]:\nmain.main()")
            .expect("fatal");
        assert_eq!(e.kind, Some("fatal error"));
        let e = find("dump\ngoroutine 7 [running]:\nmain.main()\n\t/src/main.go:8 +0x1d").expect("dump");
        assert_eq!((e.kind, e.stacktrace.lines().next()), (None, Some("goroutine 7 [running]:")));
    }

    #[test]
    fn only_newlines_and_their_escapes_send_fields_to_the_trace_search() {
        for line in [&b"a\nb"[..], br#"{"s":"a\nb"}"#, br#"{"s":"a\u000Ab"}"#, br#"s="a\\nb""#] {
            assert!(may_hold_newline(line), "{}", String::from_utf8_lossy(line));
        }
        for line in [&b""[..], br#"msg="retrying \"job\"" n=1"#, br#"{"s":"a\tb\u0041"}"#, b"trailing \\", b"\\u00"] {
            assert!(!may_hold_newline(line), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn ordinary_text_is_no_stack_trace() {
        for text in [
            "one line: java.lang.Exception: x",
            "two lines\nand another",
            "Error: a\nnot a frame",
            "look at this\n  at home today",
            "Traceback (most recent call last):\n  File \"x\", line 1",
            "the goroutine 5 [x] was slow\npanic: no",
        ] {
            assert_eq!(find(text), None, "{text:?}");
        }
    }
}
