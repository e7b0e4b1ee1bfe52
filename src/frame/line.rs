//! Line framing: `\n` and `\r\n` end a line; a partial last line is held until its newline
//! arrives; a line longer than `max_line_bytes` keeps only its first `max_line_bytes` and is
//! flagged `truncated`, so memory per file is bounded whatever the input.

use memchr::memchr;

/// One complete line.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// The line without its line ending, at most `max_line_bytes` long.
    pub bytes: &'a [u8],
    /// File offset of the line's first byte.
    pub start: u64,
    /// File offset just past the line's `\n`: where reading resumes after this line.
    pub end: u64,
    /// The line was longer than `max_line_bytes` and was cut.
    pub truncated: bool,
}

/// Splits a stream of chunks into lines, carrying a partial line between chunks.
#[derive(Debug)]
pub struct LineFramer {
    max_line_bytes: usize,
    partial: Vec<u8>,
    /// A line is in progress (its start has been seen, its newline not yet).
    in_line: bool,
    partial_start: u64,
    /// Bytes of the line in progress were dropped beyond `max_line_bytes`.
    overflowed: bool,
}

impl LineFramer {
    pub fn new(max_line_bytes: usize) -> LineFramer {
        LineFramer {
            max_line_bytes: max_line_bytes.max(1),
            partial: Vec::new(),
            in_line: false,
            partial_start: 0,
            overflowed: false,
        }
    }

    /// Feeds `chunk`, which was read at file offset `offset`, calling `emit` for every line it
    /// completes. Bytes after the last newline are kept for the next call.
    pub fn push(&mut self, chunk: &[u8], offset: u64, mut emit: impl FnMut(Line<'_>)) {
        let mut pos = 0;
        while pos < chunk.len() {
            let Some(newline) = memchr(b'\n', &chunk[pos..]) else {
                self.hold(&chunk[pos..], offset + pos as u64);
                return;
            };
            let line_end = pos + newline;
            let end = offset + line_end as u64 + 1;
            if self.in_line {
                self.append_bounded(&chunk[pos..line_end]);
                let truncated = self.overflowed;
                let bytes = if truncated { &self.partial[..] } else { strip_cr(&self.partial) };
                emit(Line { bytes, start: self.partial_start, end, truncated });
                self.reset();
            } else {
                let whole = &chunk[pos..line_end];
                let truncated = whole.len() > self.max_line_bytes;
                let bytes = if truncated { &whole[..self.max_line_bytes] } else { strip_cr(whole) };
                emit(Line { bytes, start: offset + pos as u64, end, truncated });
            }
            pos = line_end + 1;
        }
    }

    /// Emits the held partial line as if it had ended (for a file that will not grow again).
    /// Its `end` is `eof_offset`.
    pub fn flush(&mut self, eof_offset: u64, mut emit: impl FnMut(Line<'_>)) {
        if self.in_line {
            let truncated = self.overflowed;
            emit(Line { bytes: &self.partial, start: self.partial_start, end: eof_offset, truncated });
            self.reset();
        }
    }

    /// Bytes of a partial line held in memory.
    pub fn held_bytes(&self) -> usize {
        self.partial.len()
    }

    /// Forgets any partial line (after a truncation).
    pub fn reset(&mut self) {
        self.partial.clear();
        self.in_line = false;
        self.overflowed = false;
        if self.partial.capacity() > 64 * 1024 {
            self.partial.shrink_to(64 * 1024);
        }
    }

    fn hold(&mut self, bytes: &[u8], offset: u64) {
        if !self.in_line {
            self.in_line = true;
            self.partial_start = offset;
        }
        self.append_bounded(bytes);
    }

    fn append_bounded(&mut self, bytes: &[u8]) {
        let room = self.max_line_bytes.saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.partial.extend_from_slice(&bytes[..room]);
            self.overflowed = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(chunks: &[&[u8]], max: usize) -> Vec<(Vec<u8>, u64, u64, bool)> {
        let mut framer = LineFramer::new(max);
        let mut out = Vec::new();
        let mut offset = 0;
        for chunk in chunks {
            framer.push(chunk, offset, |l| out.push((l.bytes.to_vec(), l.start, l.end, l.truncated)));
            offset += chunk.len() as u64;
        }
        out
    }

    #[test]
    fn splits_lines_and_strips_crlf() {
        let out = frame(&[b"a\r\nbb\n"], 100);
        assert_eq!(out, vec![(b"a".to_vec(), 0, 3, false), (b"bb".to_vec(), 3, 6, false)]);
    }

    #[test]
    fn holds_partial_lines_across_chunks() {
        let out = frame(&[b"hel", b"lo\nwor", b"ld"], 100);
        assert_eq!(out, vec![(b"hello".to_vec(), 0, 6, false)]);
        let out = frame(&[b"hel", b"lo\nwor", b"ld\n"], 100);
        assert_eq!(out[1], (b"world".to_vec(), 6, 12, false));
    }

    #[test]
    fn truncates_long_lines_without_buffering_them() {
        let mut framer = LineFramer::new(4);
        let mut out = Vec::new();
        framer.push(b"abcdefgh", 0, |l| out.push(l.bytes.to_vec()));
        assert!(framer.held_bytes() <= 4);
        framer.push(b"ijk\nxy\n", 8, |l| out.push(l.bytes.to_vec()));
        assert_eq!(out, vec![b"abcd".to_vec(), b"xy".to_vec()]);
        assert_eq!(frame(&[b"abcdefgh\n"], 4), vec![(b"abcd".to_vec(), 0, 9, true)]);
    }

    #[test]
    fn flush_emits_the_partial_line() {
        let mut framer = LineFramer::new(100);
        framer.push(b"a\nbc", 0, |_| {});
        let mut out = Vec::new();
        framer.flush(4, |l| out.push((l.bytes.to_vec(), l.start, l.end)));
        assert_eq!(out, vec![(b"bc".to_vec(), 2, 4)]);
    }

    proptest! {
        /// However the input is chunked, the same lines come out, and offsets tile the input.
        #[test]
        fn chunking_does_not_change_lines(data in proptest::collection::vec(any::<u8>(), 0..400), cuts in proptest::collection::vec(0usize..400, 0..8)) {
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points { chunks.push(&data[last..p]); last = p; }
            chunks.push(&data[last..]);
            let whole = frame(&[&data], 16);
            let pieces = frame(&chunks, 16);
            prop_assert_eq!(&whole, &pieces);
            let mut expected_start = 0;
            for (bytes, start, end, truncated) in &whole {
                prop_assert_eq!(*start, expected_start);
                prop_assert!(bytes.len() <= 16);
                let body = &data[*start as usize..(*end - 1) as usize];
                if *truncated {
                    prop_assert_eq!(&bytes[..], &body[..16]);
                } else {
                    prop_assert_eq!(&bytes[..], body.strip_suffix(b"\r").unwrap_or(body));
                }
                expected_start = *end;
            }
        }
    }
}
