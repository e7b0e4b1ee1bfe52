//! File identity. A file is known by its device and inode **plus a checksum of its first
//! line** (FNV-1a 64 of the bytes up to and including the first `\n`, or of the first
//! [`HEAD_BYTES`] when the first line is longer):
//!
//! - a renamed file keeps its device, inode and first line, so it is still the same file;
//! - an inode reused by a new file (delete, then create) has a different first line, so it is
//!   not mistaken for the old file; nor is a file truncated and rewritten while pillion was
//!   down (it is read again from the start);
//! - two files with the same first line differ by inode, so they are still told apart.
//!
//! A file is fingerprinted as soon as it has one complete line (a one-line file is shipped).
//! A file with no newline in its first [`HEAD_BYTES`] yet waits; after a timeout it falls back
//! to device and inode alone (checksum 0) and keeps that identity for good.
//!
//! The checksum also recognizes *copies*: a compressed rotated file (`app.log.1.gz`) or the
//! copy made by copytruncate (`app.log.1`) has the first line of the file it was copied
//! from, so the tailer can resume it at that file's checkpoint instead of reading it twice
//! (see the tailer's module doc for exactly when).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// At most this many bytes are checksummed.
pub const HEAD_BYTES: usize = 1024;

/// The checksum of the first line in `head` (the file's first bytes), or `None` when `head`
/// holds no complete line yet and is shorter than [`HEAD_BYTES`]. Never 0 (0 means "none").
pub fn checksum(head: &[u8]) -> Option<u64> {
    let line = match memchr::memchr(b'\n', head) {
        Some(newline) if newline < HEAD_BYTES => &head[..=newline],
        _ if head.len() >= HEAD_BYTES => &head[..HEAD_BYTES],
        _ => return None,
    };
    Some(fnv1a64(line).max(1))
}

/// Reads up to [`HEAD_BYTES`] from the start of `file` (without moving its position).
pub fn read_head(file: &File) -> io::Result<Vec<u8>> {
    let mut head = vec![0; HEAD_BYTES];
    let filled = fill_head(file, &mut head)?;
    head.truncate(filled);
    Ok(head)
}

/// The checksum of `file`'s first line now (no allocation: checked after every read).
pub fn current(file: &File) -> io::Result<Option<u64>> {
    let mut head = [0; HEAD_BYTES];
    let filled = fill_head(file, &mut head)?;
    Ok(checksum(&head[..filled]))
}

fn fill_head(file: &File, head: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < head.len() {
        match file.read_at(&mut head[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Reads up to [`HEAD_BYTES`] from a stream (a decompressor).
pub fn read_head_from(reader: impl Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD_BYTES);
    reader.take(HEAD_BYTES as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Bytes before an offset that [`tail`] checksums, at most.
pub const TAIL_BYTES: u64 = 64;

/// A checksum of `bytes` (the up to [`TAIL_BYTES`] bytes just before an offset) that also
/// records how many bytes it covers (low 8 bits). 0 means "unknown".
pub fn tail(bytes: &[u8]) -> u64 {
    let len = bytes.len().min(TAIL_BYTES as usize);
    if len == 0 {
        return 0;
    }
    (fnv1a64(&bytes[bytes.len() - len..]) << 8) | len as u64
}

/// How many bytes before its offset `tail` covers.
pub fn tail_len(tail: u64) -> u64 {
    tail & 0xff
}

/// `bytes`, the [`tail_len`] bytes before an offset, are those `tail` was taken from
/// (an unknown tail matches anything).
pub fn tail_matches(tail_checksum: u64, bytes: &[u8]) -> bool {
    tail_checksum == 0 || tail(bytes) == tail_checksum
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_fingerprinted_by_its_first_complete_line() {
        assert_eq!(checksum(b""), None);
        assert_eq!(checksum(b"no newline yet"), None);
        let one = checksum(b"first\n").expect("one line");
        assert_eq!(checksum(b"first\nsecond\n"), Some(one), "later lines do not matter");
        assert_ne!(checksum(b"other\n"), Some(one));
        assert_ne!(checksum(b"first\r\n"), Some(one));
    }

    #[test]
    fn a_long_first_line_is_fingerprinted_by_its_first_kib() {
        let long = vec![b'x'; HEAD_BYTES + 10];
        assert_eq!(checksum(&long[..HEAD_BYTES - 1]), None);
        assert!(checksum(&long[..HEAD_BYTES]).is_some());
        assert_eq!(checksum(&long), checksum(&long[..HEAD_BYTES]));
    }

    #[test]
    fn tails_record_their_length() {
        let t = tail(b"0123456789");
        assert_eq!(tail_len(t), 10);
        assert!(tail_matches(t, b"0123456789"));
        assert!(!tail_matches(t, b"012345678x"));
        assert!(tail_matches(0, b"anything"));
        assert_eq!(tail_len(tail(&[b'a'; 100])), TAIL_BYTES);
    }

    #[test]
    fn heads_are_read_from_files_and_streams() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        std::fs::write(&path, vec![b'a'; 3000]).expect("write");
        let file = File::open(&path).expect("open");
        assert_eq!(read_head(&file).expect("head").len(), HEAD_BYTES);
        assert_eq!(read_head_from(&b"abc\n"[..]).expect("head"), b"abc\n");
    }
}
