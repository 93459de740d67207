//! File contents in rclone's crypt format, streamed.
//!
//! A file is the magic `RCLONE\0\0`, a random 24-byte nonce, then the
//! plaintext in chunks of 64 KiB (the last one shorter, none for an empty
//! file), each sealed with XSalsa20-Poly1305 (NaCl's secretbox: the 16-byte
//! tag, then the ciphertext) under the data key and the nonce, which is
//! incremented (little-endian, with carry) after every chunk. So a
//! ciphertext's size gives its plaintext's exactly, and chunk `k` can be
//! read on its own with the nonce plus `k`.

use std::io::{self, Read};

use crypto_secretbox::aead::AeadInPlace;
use crypto_secretbox::{KeyInit, Tag, XSalsa20Poly1305};

use super::Keys;

pub const MAGIC: &[u8; 8] = b"RCLONE\x00\x00";
pub const NONCE_LEN: usize = 24;
pub const HEADER_LEN: u64 = (MAGIC.len() + NONCE_LEN) as u64;
/// Plaintext bytes per chunk.
pub const CHUNK: u64 = 64 * 1024;
/// The tag in front of each sealed chunk.
pub const TAG: u64 = 16;
/// A sealed full chunk.
pub const SEALED_CHUNK: u64 = CHUNK + TAG;

/// What is wrong with a ciphertext. Never garbage: a reader stops at the
/// first problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("not an encrypted file: it is shorter than the crypt header")]
    TooShort,
    #[error("not an encrypted file: it does not start with the crypt header")]
    BadMagic,
    #[error("the encrypted file is truncated: it ends inside a chunk's header")]
    TruncatedChunk,
    #[error(
        "chunk {chunk} of the encrypted file does not authenticate: wrong password, or the file is corrupted"
    )]
    BadChunk { chunk: u64 },
    #[error("the encrypted file ends {missing} bytes early")]
    EndsEarly { missing: u64 },
}

impl From<ContentError> for io::Error {
    fn from(e: ContentError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// The size of a plaintext of `plain` bytes once encrypted.
pub fn encrypted_size(plain: u64) -> u64 {
    let (chunks, rest) = (plain / CHUNK, plain % CHUNK);
    HEADER_LEN + chunks * SEALED_CHUNK + if rest > 0 { TAG + rest } else { 0 }
}

/// The plaintext size of a ciphertext of `encrypted` bytes; an error for a
/// size no encrypted file can have.
pub fn decrypted_size(encrypted: u64) -> Result<u64, ContentError> {
    let body = encrypted
        .checked_sub(HEADER_LEN)
        .ok_or(ContentError::TooShort)?;
    let (chunks, rest) = (body / SEALED_CHUNK, body % SEALED_CHUNK);
    if rest != 0 && rest <= TAG {
        return Err(ContentError::TruncatedChunk);
    }
    Ok(chunks * CHUNK + rest.saturating_sub(TAG))
}

/// A file's nonce: the one in its header, advanced per chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nonce(pub [u8; NONCE_LEN]);

impl Nonce {
    /// A fresh random nonce from the operating system.
    pub fn random() -> io::Result<Nonce> {
        let mut bytes = [0u8; NONCE_LEN];
        getrandom(&mut bytes)?;
        Ok(Nonce(bytes))
    }

    /// The nonce of chunk `k` of a file whose header holds `self`: the
    /// little-endian number plus `k`, carried through all 24 bytes.
    pub fn add(&self, k: u64) -> Nonce {
        let mut out = self.0;
        let mut carry = u128::from(k);
        for byte in out.iter_mut() {
            if carry == 0 {
                break;
            }
            let sum = u128::from(*byte) + (carry & 0xff);
            *byte = sum as u8;
            carry = (carry >> 8) + (sum >> 8);
        }
        Nonce(out)
    }

    fn increment(&mut self) {
        *self = self.add(1);
    }
}

fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled part of
        // `buf`, which stays borrowed mutably for the call.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

/// Reads until `buf` is full or the input ends; returns how much it read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A reader of the ciphertext of a plaintext reader: header, then each
/// 64 KiB of plaintext sealed as it is read. Holds one chunk at a time.
pub struct Encryptor<R> {
    input: R,
    aead: XSalsa20Poly1305,
    nonce: Nonce,
    /// Sealed bytes not yet handed out, and where handing out stands.
    out: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: Read> Encryptor<R> {
    /// Encrypts `input` under `keys` with the file nonce `nonce` (fresh
    /// for every file written: [`Nonce::random`]).
    pub fn new(input: R, keys: &Keys, nonce: Nonce) -> Encryptor<R> {
        let mut out = Vec::with_capacity(SEALED_CHUNK as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce.0);
        Encryptor {
            input,
            aead: XSalsa20Poly1305::new(&keys.data.into()),
            nonce,
            out,
            pos: 0,
            done: false,
        }
    }

    /// The plaintext reader back (after the end, to ask it about what it
    /// read).
    pub fn into_inner(self) -> R {
        self.input
    }

    fn seal_next(&mut self) -> io::Result<()> {
        self.out.clear();
        self.pos = 0;
        self.out.resize(SEALED_CHUNK as usize, 0);
        let n = read_full(&mut self.input, &mut self.out[TAG as usize..])?;
        if n == 0 {
            self.out.clear();
            self.done = true;
            return Ok(());
        }
        self.out.truncate(TAG as usize + n);
        let tag = self
            .aead
            .encrypt_in_place_detached(&self.nonce.0.into(), b"", &mut self.out[TAG as usize..])
            .map_err(|_| io::Error::other("the chunk could not be sealed"))?;
        self.out[..TAG as usize].copy_from_slice(&tag);
        self.nonce.increment();
        if n < CHUNK as usize {
            // A short chunk is the last: the format has no empty final
            // chunk, so reading on would only find the end again.
            self.done = true;
        }
        Ok(())
    }
}

impl<R: Read> Read for Encryptor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.out.len() {
            if self.done {
                return Ok(0);
            }
            self.seal_next()?;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A reader of the plaintext of a ciphertext reader. Every chunk is
/// authenticated before any of its bytes is handed out.
pub struct Decryptor<R> {
    input: R,
    aead: XSalsa20Poly1305,
    /// `None` until the header is read.
    nonce: Option<Nonce>,
    chunk: u64,
    buf: Vec<u8>,
    /// Where handing out `buf`'s plaintext (after its tag) stands.
    pos: usize,
    /// Plaintext bytes still expected, where the caller knows the size.
    remaining: Option<u64>,
    done: bool,
    /// The first error, answered again on every later read: after it the
    /// input's position and the buffer are unknown, and nothing read on
    /// may be handed out (nor an end that would pass a truncated file).
    failed: Option<Failure>,
}

/// An error kept to be returned again (`io::Error` is not `Clone`).
struct Failure {
    content: Option<ContentError>,
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    fn of(e: &io::Error) -> Failure {
        Failure {
            content: e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<ContentError>())
                .cloned(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    fn error(&self) -> io::Error {
        match &self.content {
            Some(content) => content.clone().into(),
            None => io::Error::new(self.kind, self.message.clone()),
        }
    }
}

impl<R: Read> Decryptor<R> {
    /// Decrypts a whole file, header first.
    pub fn new(input: R, keys: &Keys) -> Decryptor<R> {
        Decryptor::make(input, keys, None, 0)
    }

    /// Decrypts from the start of chunk `chunk` on: `input` is positioned
    /// at ciphertext offset [`chunk_offset`]`(chunk)`, and `nonce` is the
    /// one in the file's header.
    pub fn at_chunk(input: R, keys: &Keys, nonce: Nonce, chunk: u64) -> Decryptor<R> {
        Decryptor::make(input, keys, Some(nonce.add(chunk)), chunk)
    }

    /// Fails with [`ContentError::EndsEarly`] where the input ends before
    /// `plain` plaintext bytes came out (a whole chunk cut off at a chunk
    /// boundary leaves no other trace).
    pub fn expecting(mut self, plain: u64) -> Decryptor<R> {
        self.remaining = Some(plain);
        self
    }

    fn make(input: R, keys: &Keys, nonce: Option<Nonce>, chunk: u64) -> Decryptor<R> {
        Decryptor {
            input,
            aead: XSalsa20Poly1305::new(&keys.data.into()),
            nonce,
            chunk,
            buf: Vec::with_capacity(SEALED_CHUNK as usize),
            pos: 0,
            remaining: None,
            done: false,
            failed: None,
        }
    }

    fn open_next(&mut self) -> io::Result<()> {
        let nonce = match self.nonce {
            Some(nonce) => nonce,
            None => {
                let nonce = read_nonce(&mut self.input)?;
                self.nonce = Some(nonce);
                nonce
            }
        };
        self.buf.resize(SEALED_CHUNK as usize, 0);
        let n = read_full(&mut self.input, &mut self.buf)?;
        self.pos = TAG as usize;
        if n == 0 {
            self.buf.clear();
            self.pos = 0;
            self.done = true;
            return match self.remaining {
                Some(missing) if missing > 0 => Err(ContentError::EndsEarly { missing }.into()),
                _ => Ok(()),
            };
        }
        if n <= TAG as usize {
            return Err(ContentError::TruncatedChunk.into());
        }
        self.buf.truncate(n);
        let tag = *Tag::from_slice(&self.buf[..TAG as usize]);
        let chunk = self.chunk;
        self.aead
            .decrypt_in_place_detached(&nonce.0.into(), b"", &mut self.buf[TAG as usize..], &tag)
            .map_err(|_| ContentError::BadChunk { chunk })?;
        let plain = (n - TAG as usize) as u64;
        if let Some(remaining) = self.remaining.as_mut() {
            *remaining = remaining.saturating_sub(plain);
        }
        self.nonce = Some(nonce.add(1));
        // A short chunk should be the last; reading on finds the end, or
        // bytes that fail to authenticate as a next chunk.
        self.chunk += 1;
        Ok(())
    }
}

/// Where chunk `k` starts in the ciphertext.
pub fn chunk_offset(k: u64) -> u64 {
    HEADER_LEN + k * SEALED_CHUNK
}

impl<R: Read> Read for Decryptor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(failure) = &self.failed {
            return Err(failure.error());
        }
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            if let Err(e) = self.open_next() {
                self.buf.clear();
                self.pos = 0;
                self.failed = Some(Failure::of(&e));
                return Err(e);
            }
        }
        let n = buf.len().min(self.buf.len() - self.pos);
        buf[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads the nonce from a file's header.
pub fn read_nonce(input: &mut impl Read) -> io::Result<Nonce> {
    let mut header = [0u8; HEADER_LEN as usize];
    if read_full(input, &mut header)? < header.len() {
        return Err(ContentError::TooShort.into());
    }
    if &header[..MAGIC.len()] != MAGIC {
        return Err(ContentError::BadMagic.into());
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&header[MAGIC.len()..]);
    Ok(Nonce(nonce))
}
