//! Framing: turns the bytes read from a file into the raw content of records, with the file
//! offsets they span. Three stages, each optional but the first: [`line`] splits lines
//! (`\n`, `\r\n`, partial last line held, `max_line_bytes` truncation), [`container`] unwraps
//! CRI or Docker json-file entries and merges their partial parts, [`multiline`] joins
//! continuation lines (stack traces). A record's `end` is the end of its last line, so an
//! acknowledged record never covers a line that was not in it. Memory per file is bounded by
//! `max_line_bytes` per stage, whatever the input.

pub mod container;
pub mod line;
pub mod multiline;
pub mod settings;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;

pub use container::Stream;
pub use line::{Line, LineFramer};
pub use multiline::MultilineRule;
pub use settings::{ContainerFormat, MultilinePreset};

/// How one input's files are framed.
#[derive(Debug, Clone)]
pub struct FrameSettings {
    pub max_line_bytes: usize,
    pub container: ContainerFormat,
    pub multiline: Option<MultilineSettings>,
}

/// Multiline joining, validated.
#[derive(Debug, Clone)]
pub struct MultilineSettings {
    pub rule: Arc<MultilineRule>,
    pub max_lines: usize,
    /// A record with no new line for this long is complete.
    pub timeout: Duration,
}

/// One framed record's content.
#[derive(Debug, PartialEq)]
pub struct Framed<'a> {
    pub bytes: &'a [u8],
    /// File offset of the record's first byte.
    pub start: u64,
    /// File offset just past its last line: where reading resumes after it.
    pub end: u64,
    /// Content beyond `max_line_bytes` was dropped.
    pub truncated: bool,
    /// The container runtime's time and stream, when unwrapped from one.
    pub time: Option<Timestamp>,
    pub stream: Option<Stream>,
}

impl<'a> Framed<'a> {
    fn from_line(line: &Line<'a>) -> Framed<'a> {
        Framed {
            bytes: line.bytes,
            start: line.start,
            end: line.end,
            truncated: line.truncated,
            time: None,
            stream: None,
        }
    }
}

/// A record being assembled from several pieces, at most `max_bytes` long.
#[derive(Debug, Default)]
struct Pending {
    active: bool,
    bytes: Vec<u8>,
    start: u64,
    end: u64,
    truncated: bool,
    time: Option<Timestamp>,
    stream: Option<Stream>,
    lines: usize,
}

impl Pending {
    fn begin(&mut self, piece: &Framed<'_>, max_bytes: usize) {
        self.active = true;
        self.bytes.clear();
        self.start = piece.start;
        self.truncated = false;
        self.time = piece.time;
        self.stream = piece.stream;
        self.lines = 0;
        self.append(b"", piece, max_bytes);
    }

    fn append(&mut self, separator: &[u8], piece: &Framed<'_>, max_bytes: usize) {
        self.end = piece.end;
        self.lines += 1;
        self.truncated |= piece.truncated;
        for part in [separator, piece.bytes] {
            let room = max_bytes.saturating_sub(self.bytes.len());
            if part.len() > room {
                self.bytes.extend_from_slice(&part[..room]);
                self.truncated = true;
            } else {
                self.bytes.extend_from_slice(part);
            }
        }
    }

    fn emit(&mut self, next: &mut impl FnMut(Framed<'_>)) {
        if !self.active {
            return;
        }
        self.active = false;
        next(Framed {
            bytes: &self.bytes,
            start: self.start,
            end: self.end,
            truncated: self.truncated,
            time: self.time,
            stream: self.stream,
        });
        self.bytes.clear();
        if self.bytes.capacity() > 64 * 1024 {
            self.bytes.shrink_to(64 * 1024);
        }
    }
}

#[derive(Debug)]
struct Multiline {
    settings: MultilineSettings,
    pending: Pending,
    /// A line arrived since the last [`Assembler::flush_idle`].
    touched: bool,
    last_line_at: Option<Instant>,
}

/// Frames one file: lines, then container unwrapping, then multiline joining.
#[derive(Debug)]
pub struct Assembler {
    framer: LineFramer,
    container: ContainerFormat,
    max_line_bytes: usize,
    /// Partial container entries being merged, per stream (stdout, stderr): the runtime
    /// interleaves the two streams' parts.
    merges: [Pending; 2],
    multiline: Option<Multiline>,
}

impl Assembler {
    pub fn new(settings: &FrameSettings) -> Assembler {
        Assembler {
            framer: LineFramer::new(settings.max_line_bytes),
            container: settings.container,
            max_line_bytes: settings.max_line_bytes.max(1),
            merges: [Pending::default(), Pending::default()],
            multiline: settings.multiline.clone().map(|settings| Multiline {
                settings,
                pending: Pending::default(),
                touched: false,
                last_line_at: None,
            }),
        }
    }

    /// Feeds `chunk`, read at file `offset`, calling `emit` for every record it completes.
    pub fn push(&mut self, chunk: &[u8], offset: u64, emit: &mut impl FnMut(Framed<'_>)) {
        let Assembler { framer, container, max_line_bytes, merges, multiline } = self;
        framer.push(chunk, offset, |line| {
            unwrap_container(*container, merges, *max_line_bytes, &line, &mut |framed| {
                join_lines(multiline.as_mut(), *max_line_bytes, framed, emit)
            })
        });
    }

    /// The file will not grow again (rotated away and finished): emits everything held,
    /// including a last line without a newline, which ends at `eof_offset`.
    pub fn flush(&mut self, eof_offset: u64, emit: &mut impl FnMut(Framed<'_>)) {
        let Assembler { framer, container, max_line_bytes, merges, multiline } = self;
        framer.flush(eof_offset, |line| {
            unwrap_container(*container, merges, *max_line_bytes, &line, &mut |framed| {
                join_lines(multiline.as_mut(), *max_line_bytes, framed, emit)
            })
        });
        for merge in merges {
            merge.emit(&mut |framed| join_lines(multiline.as_mut(), *max_line_bytes, framed, emit));
        }
        if let Some(multiline) = multiline {
            multiline.pending.emit(emit);
        }
    }

    /// Emits a multiline record that has had no new line for the configured timeout.
    pub fn flush_idle(&mut self, now: Instant, emit: &mut impl FnMut(Framed<'_>)) {
        let Some(multiline) = &mut self.multiline else {
            return;
        };
        if std::mem::take(&mut multiline.touched) || multiline.last_line_at.is_none() {
            multiline.last_line_at = Some(now);
            return;
        }
        let idle = multiline.last_line_at.is_some_and(|at| now.duration_since(at) >= multiline.settings.timeout);
        if idle && multiline.pending.active {
            multiline.pending.emit(emit);
        }
    }

    /// Forgets everything held (the file was truncated).
    pub fn reset(&mut self) {
        self.framer.reset();
        self.merges = [Pending::default(), Pending::default()];
        if let Some(multiline) = &mut self.multiline {
            multiline.pending = Pending::default();
        }
    }

    /// Bytes held in memory for records not yet complete.
    pub fn held_bytes(&self) -> usize {
        let multiline = self.multiline.as_ref().map_or(0, |m| m.pending.bytes.len());
        let merges: usize = self.merges.iter().map(|m| m.bytes.len()).sum();
        self.framer.held_bytes() + merges + multiline
    }

    /// Where the earliest record still held (a partial container entry or a multiline record)
    /// starts: a checkpoint must not pass it.
    pub fn held_from(&self) -> Option<u64> {
        let multiline = self.multiline.as_ref().map(|m| &m.pending);
        self.merges.iter().chain(multiline).filter(|p| p.active).map(|p| p.start).min()
    }
}

/// The container stage: unwraps `line` and merges partial entries.
fn unwrap_container(
    format: ContainerFormat,
    merges: &mut [Pending; 2],
    max_bytes: usize,
    line: &Line<'_>,
    next: &mut impl FnMut(Framed<'_>),
) {
    if format == ContainerFormat::None {
        next(Framed::from_line(line));
        return;
    }
    let Some(entry) = container::unwrap(format, line.bytes) else {
        // Not container framing: pending partial entries end here.
        for merge in merges {
            merge.emit(next);
        }
        next(Framed::from_line(line));
        return;
    };
    let merge = &mut merges[usize::from(entry.stream == Some(Stream::Stderr))];
    let framed = Framed {
        bytes: &entry.content,
        start: line.start,
        end: line.end,
        truncated: line.truncated,
        time: entry.time,
        stream: entry.stream,
    };
    if !merge.active && !entry.partial {
        next(framed);
        return;
    }
    if merge.active {
        merge.append(b"", &framed, max_bytes);
    } else {
        merge.begin(&framed, max_bytes);
    }
    if !entry.partial {
        merge.emit(next);
    }
}

/// The multiline stage.
fn join_lines(
    multiline: Option<&mut Multiline>,
    max_bytes: usize,
    framed: Framed<'_>,
    emit: &mut impl FnMut(Framed<'_>),
) {
    let Some(multiline) = multiline else {
        emit(framed);
        return;
    };
    multiline.touched = true;
    let pending = &mut multiline.pending;
    let text = String::from_utf8_lossy(framed.bytes);
    let continues =
        pending.active && pending.lines < multiline.settings.max_lines && multiline.settings.rule.continues(&text);
    if continues {
        pending.append(b"\n", &framed, max_bytes);
    } else {
        pending.emit(emit);
        pending.begin(&framed, max_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Out = Vec<(String, u64, u64, bool)>;

    fn settings(container: ContainerFormat, multiline: Option<MultilineRule>, max: usize) -> FrameSettings {
        FrameSettings {
            max_line_bytes: max,
            container,
            multiline: multiline.map(|rule| MultilineSettings {
                rule: Arc::new(rule),
                max_lines: 5,
                timeout: Duration::from_millis(10),
            }),
        }
    }

    fn run(settings: &FrameSettings, chunks: &[&[u8]]) -> (Out, Assembler) {
        let mut assembler = Assembler::new(settings);
        let mut out = Vec::new();
        let mut offset = 0;
        for chunk in chunks {
            assembler.push(chunk, offset, &mut |f| {
                out.push((String::from_utf8_lossy(f.bytes).into_owned(), f.start, f.end, f.truncated))
            });
            offset += chunk.len() as u64;
        }
        (out, assembler)
    }

    fn texts(out: &Out) -> Vec<&str> {
        out.iter().map(|(text, ..)| text.as_str()).collect()
    }

    #[test]
    fn cri_partials_are_merged_into_one_record() {
        let input = b"2026-11-25T12:00:00Z stdout P hello \n2026-11-25T12:00:01Z stdout P big \n2026-11-25T12:00:02Z stdout F world\n2026-11-25T12:00:03Z stderr F next\n";
        let (out, _) = run(&settings(ContainerFormat::Cri, None, 1024), &[input]);
        assert_eq!(texts(&out), vec!["hello big world", "next"]);
        let second_line_end = input.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(2).map(|(i, _)| i as u64 + 1);
        assert_eq!((out[0].1, Some(out[0].2)), (0, second_line_end), "the merged record ends at its last part");
    }

    #[test]
    fn cri_merges_are_bounded_and_flagged() {
        let input = b"2026-11-25T12:00:00Z stdout P 0123456789\n2026-11-25T12:00:00Z stdout P 0123456789\n2026-11-25T12:00:00Z stdout F end\n";
        let (out, _) = run(&settings(ContainerFormat::Cri, None, 64), &[input]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "01234567890123456789end");
        let part = "x".repeat(25);
        let long = format!("2026-11-25T12:00:00Z stdout P {part}\n").repeat(3) + "2026-11-25T12:00:00Z stdout F .\n";
        let (out, _) = run(&settings(ContainerFormat::Cri, None, 60), &[long.as_bytes()]);
        assert_eq!(out.len(), 1);
        assert!(out[0].3 && out[0].0.len() == 60, "{out:?}");
    }

    #[test]
    fn docker_partials_are_merged_and_keep_the_first_stream() {
        let input = concat!(
            r#"{"log":"part one, ","stream":"stderr","time":"2026-11-25T12:00:00Z"}"#,
            "\n",
            r#"{"log":"part two\n","stream":"stderr","time":"2026-11-25T12:00:01Z"}"#,
            "\n",
            r#"{"log":"whole\n","stream":"stdout","time":"2026-11-25T12:00:02Z"}"#,
            "\n"
        );
        let mut assembler = Assembler::new(&settings(ContainerFormat::Docker, None, 1024));
        let mut out = Vec::new();
        assembler.push(input.as_bytes(), 0, &mut |f| {
            out.push((String::from_utf8_lossy(f.bytes).into_owned(), f.stream, f.time.map(|t| t.to_string())))
        });
        assert_eq!(out[0], ("part one, part two".into(), Some(Stream::Stderr), Some("2026-11-25T12:00:00Z".into())));
        assert_eq!(out[1].0, "whole");
    }

    #[test]
    fn multiline_records_end_at_their_last_line_and_flush_on_timeout() {
        let rule = MultilineRule::preset(MultilinePreset::Java);
        let input = b"one\ntwo\nboom.Exception: x\n\tat a\nnext\n\tat b\n";
        let (out, mut assembler) = run(&settings(ContainerFormat::None, Some(rule), 1024), &[input]);
        assert_eq!(out, vec![("one".into(), 0, 4, false), ("two\nboom.Exception: x\n\tat a".into(), 4, 32, false)]);
        let mut late = Vec::new();
        let now = Instant::now();
        assembler.flush_idle(now, &mut |f| late.push(f.end));
        assert!(late.is_empty(), "a line just arrived");
        assembler.flush_idle(now + Duration::from_millis(20), &mut |f| late.push(f.end));
        assert_eq!(late, vec![input.len() as u64]);
    }

    #[test]
    fn multiline_records_are_cut_at_max_lines() {
        let rule = MultilineRule::start(regex::Regex::new("^S").expect("regex"));
        let (out, mut assembler) = run(&settings(ContainerFormat::None, Some(rule), 1024), &[b"S\n1\n2\n3\n4\n5\n6\n"]);
        assert_eq!(texts(&out), vec!["S\n1\n2\n3\n4"]);
        let mut rest = Vec::new();
        assembler.flush(14, &mut |f| rest.push(String::from_utf8_lossy(f.bytes).into_owned()));
        assert_eq!(rest, vec!["5\n6"]);
    }

    #[test]
    fn flush_emits_a_last_line_without_newline() {
        let (out, mut assembler) = run(&settings(ContainerFormat::None, None, 1024), &[b"a\nbc"]);
        assert_eq!(texts(&out), vec!["a"]);
        let mut rest = Vec::new();
        assembler.flush(4, &mut |f| rest.push((f.bytes.to_vec(), f.start, f.end)));
        assert_eq!(rest, vec![(b"bc".to_vec(), 2, 4)]);
        assert_eq!(assembler.held_bytes(), 0);
    }
}
