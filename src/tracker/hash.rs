//! Content hashing: BLAKE3 over a stream, never a whole file in memory.
//!
//! This module owns how a [`ContentHash`] is computed from bytes on disk or in
//! flight. [`hash_file`] hashes a local file; [`HashingReader`] wraps any
//! reader so the executor can verify a transfer while it streams it. It does
//! not decide *when* to hash (that is the scanner's stat cache) and does no
//! stat or retry of its own.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::model::ContentHash;

/// A reader that hashes everything read through it.
///
/// Reads pass through unchanged; [`HashingReader::finish`] returns the digest
/// of exactly the bytes the caller received and how many there were.
pub struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    n_bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher: blake3::Hasher::new(),
            n_bytes: 0,
        }
    }

    /// The hash and length of everything read so far.
    pub fn finish(self) -> (ContentHash, u64) {
        (
            ContentHash(*self.hasher.finalize().as_bytes()),
            self.n_bytes,
        )
    }

    /// Reads the rest of the stream, discarding it, and returns the hash and
    /// length of the whole stream.
    pub fn drain(mut self) -> io::Result<(ContentHash, u64)> {
        crate::iobuf::with_buffer(|buf| {
            loop {
                match self.read(buf) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
            }
        })?;
        Ok(self.finish())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n_read = self.inner.read(buf)?;
        self.hasher.update(&buf[..n_read]);
        self.n_bytes += n_read as u64;
        Ok(n_read)
    }
}

/// Hashes the file at `path`, returning its hash and the number of bytes
/// read (which can differ from an earlier `stat` if the file is changing).
pub fn hash_file(path: &Path) -> io::Result<(ContentHash, u64)> {
    HashingReader::new(File::open(path)?).drain()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn hash_file_matches_hash_of_bytes_across_buffer_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0,
            1,
            crate::iobuf::BUFFER_BYTES - 1,
            crate::iobuf::BUFFER_BYTES * 2 + 7,
        ] {
            let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            File::create(&path).unwrap().write_all(&content).unwrap();
            let (hash, n_bytes) = hash_file(&path).unwrap();
            assert_eq!(hash, ContentHash::of_bytes(&content), "length {len}");
            assert_eq!(n_bytes, len as u64);
        }
    }

    #[test]
    fn hashing_reader_passes_bytes_through_and_hashes_them() {
        let content = b"hello, prism".repeat(1000);
        let mut reader = HashingReader::new(&content[..]);
        let mut copied = Vec::new();
        reader.read_to_end(&mut copied).unwrap();
        assert_eq!(copied, content);
        assert_eq!(
            reader.finish(),
            (ContentHash::of_bytes(&content), content.len() as u64)
        );
    }

    #[test]
    fn hash_file_of_a_missing_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = hash_file(&dir.path().join("nope")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
