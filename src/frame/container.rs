//! Container-runtime framing: CRI (`<time> <stream> <P|F> <log>`, containerd and CRI-O) and
//! Docker json-file (`{"log":"...\n","stream":"stdout","time":"..."}`). A runtime splits a
//! long line into partial entries (CRI tag `P`; Docker: a `log` without a trailing newline);
//! they are merged here into one record that keeps the first part's time and stream.

use std::borrow::Cow;

use jiff::Timestamp;
use serde::Deserialize;

use super::ContainerFormat;

/// One entry of a container log, unwrapped.
#[derive(Debug, PartialEq)]
pub struct Entry<'a> {
    pub content: Cow<'a, [u8]>,
    pub time: Option<Timestamp>,
    pub stream: Option<Stream>,
    /// More parts of the same line follow.
    pub partial: bool,
}

/// The container stream a line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn parse(text: &[u8]) -> Option<Stream> {
        match text {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// Unwraps `line` per `format`; `None` when it is not in that format (it is then shipped as
/// it is). `auto` tries Docker for lines starting with `{`, then CRI.
pub fn unwrap(format: ContainerFormat, line: &[u8]) -> Option<Entry<'_>> {
    match format {
        ContainerFormat::None => None,
        ContainerFormat::Cri => cri(line),
        ContainerFormat::Docker => docker(line),
        ContainerFormat::Auto if line.first() == Some(&b'{') => docker(line).or_else(|| cri(line)),
        ContainerFormat::Auto => cri(line),
    }
}

/// `2026-11-25T12:00:00.123456789Z stdout F the line`
fn cri(line: &[u8]) -> Option<Entry<'_>> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let time = fields.next()?;
    let stream = Stream::parse(fields.next()?)?;
    let tag = fields.next()?;
    let content = fields.next().unwrap_or_default();
    let partial = match tag.split(|&b| b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let time = std::str::from_utf8(time).ok()?.parse::<Timestamp>().ok()?;
    Some(Entry { content: Cow::Borrowed(content), time: Some(time), stream: Some(stream), partial })
}

#[derive(Deserialize)]
struct DockerLine<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(default, borrow)]
    stream: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    time: Option<Cow<'a, str>>,
}

fn docker(line: &[u8]) -> Option<Entry<'_>> {
    let parsed: DockerLine<'_> = serde_json::from_slice(line).ok()?;
    let partial = !parsed.log.ends_with('\n');
    let content: Cow<'_, [u8]> = match parsed.log {
        Cow::Borrowed(text) => Cow::Borrowed(strip_newline(text.as_bytes())),
        Cow::Owned(text) => {
            let mut bytes = text.into_bytes();
            let keep = strip_newline(&bytes).len();
            bytes.truncate(keep);
            Cow::Owned(bytes)
        }
    };
    let stream = parsed.stream.as_deref().and_then(|s| Stream::parse(s.as_bytes()));
    let time = parsed.time.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
    Some(Entry { content, time, stream, partial })
}

fn strip_newline(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_are_unwrapped() {
        let entry = unwrap(ContainerFormat::Cri, b"2026-11-25T12:00:00.5Z stderr P part one").expect("cri");
        assert_eq!(&*entry.content, b"part one");
        assert!(entry.partial);
        assert_eq!(entry.stream, Some(Stream::Stderr));
        assert_eq!(entry.time.map(|t| t.to_string()), Some("2026-11-25T12:00:00.5Z".to_owned()));
        let full = unwrap(ContainerFormat::Cri, b"2026-11-25T12:00:00Z stdout F").expect("empty line");
        assert!(!full.partial && full.content.is_empty());
        assert!(unwrap(ContainerFormat::Cri, b"plain text line").is_none());
        assert!(unwrap(ContainerFormat::Cri, b"2026-11-25T12:00:00Z stdout X y").is_none());
    }

    #[test]
    fn docker_lines_are_unwrapped() {
        let line = br#"{"log":"hello \"you\"\n","stream":"stdout","time":"2026-11-25T12:00:00.000000001Z"}"#;
        let entry = unwrap(ContainerFormat::Docker, line).expect("docker");
        assert_eq!(&*entry.content, b"hello \"you\"");
        assert!(!entry.partial);
        assert_eq!(entry.stream, Some(Stream::Stdout));
        let part = unwrap(ContainerFormat::Docker, br#"{"log":"par","stream":"stderr"}"#).expect("partial");
        assert!(part.partial);
        assert!(unwrap(ContainerFormat::Docker, b"{not json").is_none());
    }

    #[test]
    fn auto_tells_the_formats_apart() {
        assert!(unwrap(ContainerFormat::Auto, br#"{"log":"x\n"}"#).is_some());
        assert!(unwrap(ContainerFormat::Auto, b"2026-11-25T12:00:00Z stdout F x").is_some());
        assert!(unwrap(ContainerFormat::Auto, br#"{"msg":"app json"}"#).is_none());
    }
}
