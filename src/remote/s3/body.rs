//! The bytes of an upload: read from the caller's reader while the request
//! is on the wire, never held whole in memory.
//!
//! reqwest's blocking client wants a `'static` body, and the caller's
//! reader is borrowed: the request is sent from a scoped thread whose body
//! reads from a channel that this thread fills, a few chunks at a time.
//! A source that can go back ([`UploadSource::seek_to`], a file) lets a
//! failed request be sent again; one that cannot (a pipe, another
//! server's download) is sent once.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// The chunk size of uploads.
pub const CHUNK: usize = 256 * 1024;

/// What an upload reads from.
pub trait UploadSource: Read + Send {
    /// Moves to `offset` bytes past where the source started, for a
    /// retry; `Ok(false)` where the source cannot go back.
    fn seek_to(&mut self, offset: u64) -> io::Result<bool> {
        let _ = offset;
        Ok(false)
    }
}

/// A reader read once, front to back: a request that failed after taking
/// bytes from it is not retried.
pub struct Once<R>(pub R);

impl<R: Read> Read for Once<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read + Send> UploadSource for Once<R> {}

/// A seekable reader (a file, a buffer), which a retry reads again from
/// where it stood when wrapped.
pub struct Seekable<R> {
    inner: R,
    origin: u64,
}

impl<R: Seek> Seekable<R> {
    pub fn new(mut inner: R) -> io::Result<Seekable<R>> {
        let origin = inner.stream_position()?;
        Ok(Seekable { inner, origin })
    }
}

impl<R: Read> Read for Seekable<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: Read + Seek + Send> UploadSource for Seekable<R> {
    fn seek_to(&mut self, offset: u64) -> io::Result<bool> {
        self.inner.seek(SeekFrom::Start(self.origin + offset))?;
        Ok(true)
    }
}

/// The body side of the channel: what reqwest reads.
pub struct ChannelReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The sender is done: the end of the body.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A channel for one upload: the sender for [`pump`], the reader for the
/// request body.
pub fn channel() -> (SyncSender<io::Result<Vec<u8>>>, ChannelReader) {
    let (tx, rx) = sync_channel(4);
    (
        tx,
        ChannelReader {
            rx,
            current: Vec::new(),
            pos: 0,
        },
    )
}

/// How pumping a body ended.
pub enum Pumped {
    /// All `len` bytes went into the channel (or the request stopped
    /// taking them; its answer says why).
    Done,
    /// The source failed or ended before `len` bytes.
    SourceFailed(io::Error),
}

/// Sends `len` bytes of `source` into `tx`, chunk by chunk.
pub fn pump(
    source: &mut dyn UploadSource,
    len: u64,
    tx: SyncSender<io::Result<Vec<u8>>>,
) -> Pumped {
    let mut left = len;
    while left > 0 {
        let mut chunk = vec![0u8; CHUNK.min(left as usize)];
        match source.read(&mut chunk) {
            Ok(0) => {
                let error = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the source ended {left} bytes before the {len} announced"),
                );
                let _ = tx.send(Err(io::Error::new(error.kind(), error.to_string())));
                return Pumped::SourceFailed(error);
            }
            Ok(n) => {
                chunk.truncate(n);
                left -= n as u64;
                if tx.send(Ok(chunk)).is_err() {
                    // The request ended early; its answer says why.
                    return Pumped::Done;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                return Pumped::SourceFailed(e);
            }
        }
    }
    Pumped::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pumped_body_arrives_whole_and_a_short_source_is_an_error() {
        let data: Vec<u8> = (0..(CHUNK * 2 + 17)).map(|i| i as u8).collect();
        let (tx, mut reader) = channel();
        let received = std::thread::scope(|s| {
            let reading = s.spawn(move || {
                let mut out = Vec::new();
                reader.read_to_end(&mut out).map(|_| out)
            });
            let mut source = Once(&data[..]);
            assert!(matches!(
                pump(&mut source, data.len() as u64, tx),
                Pumped::Done
            ));
            reading.join().unwrap().unwrap()
        });
        assert_eq!(received, data);

        let (tx, mut reader) = channel();
        std::thread::scope(|s| {
            let reading = s.spawn(move || reader.read_to_end(&mut Vec::new()));
            let mut source = Once(&data[..10]);
            assert!(matches!(pump(&mut source, 20, tx), Pumped::SourceFailed(_)));
            assert!(
                reading.join().unwrap().is_err(),
                "the request sees the failure"
            );
        });
    }

    #[test]
    fn a_seekable_source_goes_back_to_where_it_was_wrapped() {
        let mut cursor = io::Cursor::new(b"0123456789".to_vec());
        cursor.set_position(2);
        let mut source = Seekable::new(cursor).unwrap();
        let mut first = [0u8; 3];
        source.read_exact(&mut first).unwrap();
        assert!(source.seek_to(1).unwrap());
        let mut again = [0u8; 3];
        source.read_exact(&mut again).unwrap();
        assert_eq!((&first, &again), (b"234", b"345"));
        assert!(!Once(&b"x"[..]).seek_to(0).unwrap());
    }
}
