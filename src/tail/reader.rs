//! Reading one file: plainly, or through a gzip decompressor for rotated `.gz` files, where
//! offsets count decompressed bytes.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;

use super::fingerprint::{self, TAIL_BYTES};

/// An open file being read.
pub(super) enum Reader {
    Plain(File),
    Gzip(Box<MultiGzDecoder<BufReader<File>>>),
}

impl Reader {
    /// Opens `path` at `offset`, checking that it is still the file `(dev, inode)` (it may have
    /// been rotated since it was looked at).
    pub fn open_plain(path: &Path, dev: u64, inode: u64, offset: u64) -> io::Result<Reader> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != (dev, inode) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "the path now leads to another file"));
        }
        file.seek(SeekFrom::Start(offset))?;
        Ok(Reader::Plain(file))
    }

    /// Opens a gzip file and decompresses (and discards) its first `skip` bytes; returns the
    /// reader and how many bytes were skipped (fewer when the content is shorter).
    pub fn open_gzip(path: &Path, skip: u64) -> io::Result<(Reader, u64)> {
        Reader::gzip_from(File::open(path)?, skip)
    }

    /// [`Reader::open_gzip`], checking that `path` is still the file `(dev, inode)`.
    pub fn open_gzip_checked(path: &Path, dev: u64, inode: u64, skip: u64) -> io::Result<(Reader, u64)> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != (dev, inode) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "the path now leads to another file"));
        }
        Reader::gzip_from(file, skip)
    }

    fn gzip_from(file: File, skip: u64) -> io::Result<(Reader, u64)> {
        let mut decoder = Box::new(MultiGzDecoder::new(BufReader::new(file)));
        let skipped = io::copy(&mut (&mut *decoder).take(skip), &mut io::sink())?;
        Ok((Reader::Gzip(decoder), skipped))
    }

    /// The decompressed head of a gzip file, for its fingerprint.
    pub fn gzip_head(path: &Path) -> io::Result<Vec<u8>> {
        let decoder = MultiGzDecoder::new(BufReader::new(File::open(path)?));
        super::fingerprint::read_head_from(decoder)
    }

    pub fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            let result = match self {
                Reader::Plain(file) => file.read(buffer),
                Reader::Gzip(decoder) => decoder.read(buffer),
            };
            match result {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// The file no longer starts with the first line it was identified by: it was truncated
    /// and rewritten (copytruncate), so what was just read belongs to new content.
    pub fn head_changed(&self, checksum: u64) -> bool {
        match self {
            Reader::Plain(file) if checksum != 0 => fingerprint::current(file).is_ok_and(|now| now != Some(checksum)),
            _ => false,
        }
    }

    /// Moves a plain file back to its start (it was truncated).
    pub fn rewind(&mut self) -> io::Result<()> {
        match self {
            Reader::Plain(file) => file.seek(SeekFrom::Start(0)).map(drop),
            Reader::Gzip(_) => Ok(()),
        }
    }

    /// The size of a plain file's open descriptor.
    pub fn size(&self) -> Option<u64> {
        match self {
            Reader::Plain(file) => file.metadata().ok().map(|m| m.len()),
            Reader::Gzip(_) => None,
        }
    }

    /// The [`fingerprint::tail`] of the bytes just before `end` (0 for compressed files).
    pub fn tail_at(&self, end: u64) -> u64 {
        match self {
            Reader::Plain(file) => plain_tail(file, end),
            Reader::Gzip(_) => 0,
        }
    }
}

/// The [`fingerprint::tail`] of `file` just before `end`; 0 when it cannot be read.
pub(super) fn plain_tail(file: &File, end: u64) -> u64 {
    let len = end.min(TAIL_BYTES);
    let mut bytes = [0; TAIL_BYTES as usize];
    let bytes = &mut bytes[..len as usize];
    match file.read_exact_at(bytes, end - len) {
        Ok(()) => fingerprint::tail(bytes),
        Err(_) => 0,
    }
}

/// The tail of a gzip file's content just before `end`; 0 when it is shorter.
pub(super) fn gzip_tail(path: &Path, end: u64) -> u64 {
    let len = end.min(TAIL_BYTES);
    let Ok((mut reader, skipped)) = Reader::open_gzip(path, end - len) else {
        return 0;
    };
    let mut bytes = [0; TAIL_BYTES as usize];
    let mut filled = 0;
    while skipped == end - len && filled < len as usize {
        match reader.read(&mut bytes[filled..len as usize]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    if filled == len as usize { fingerprint::tail(&bytes[..filled]) } else { 0 }
}

/// `path` is a gzip-compressed rotated file.
pub(super) fn is_gzip(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "gz")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_files_are_read_decompressed_from_an_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log.1.gz");
        let mut bytes = Vec::new();
        for member in ["one\ntwo\n", "three\n"] {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(member.as_bytes()).expect("compress");
            bytes.extend(encoder.finish().expect("finish"));
        }
        std::fs::write(&path, bytes).expect("write");
        assert!(is_gzip(&path));
        assert_eq!(Reader::gzip_head(&path).expect("head"), b"one\ntwo\nthree\n");
        let (mut reader, skipped) = Reader::open_gzip(&path, 4).expect("open");
        assert_eq!(skipped, 4);
        let mut rest = Vec::new();
        let mut buffer = [0; 3];
        loop {
            match reader.read(&mut buffer).expect("read") {
                0 => break,
                n => rest.extend_from_slice(&buffer[..n]),
            }
        }
        assert_eq!(rest, b"two\nthree\n");
    }
}
