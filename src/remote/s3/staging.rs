//! Staged writes of an S3 remote: the bytes of a file sent (or kept)
//! where they are not visible under its key until the commit.
//!
//! A file up to one part is kept in memory and sent by the commit's
//! conditional PUT. A larger one becomes a multipart upload at once: its
//! parts are sent while the source is read (one part in memory at a
//! time, so a retry can send it again), and the commit is the upload's
//! conditional completion. Either way the bytes are hashed as they are
//! read, and a hash other than the planned one stages nothing.
//!
//! A body kept in memory holds a [`Reservation`] of the replica's
//! [`MemoryBudget`] until it is committed or discarded, so staging waits
//! rather than holding a whole run's files in memory.
//!
//! The [`StagedWrite`](crate::remote::StagedWrite) the replica hands out
//! carries only a handle ([`handle`]); the staged data stays with the
//! replica, so nothing about it is on a local disk.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Seekable;
use super::budget::{MemoryBudget, Reservation};
use super::client::{Condition, META_BLAKE3, Metadata, S3Client};
use super::error::S3Error;
use super::multipart::{CompletedPart, MAX_PARTS, MIN_PART_SIZE};
use super::replica::META_MTIME;
use crate::model::{ContentHash, RelPath};
use crate::remote::ReplicaError;

/// Parts after this many are [`LARGE_PART`] bytes: 4,000 parts of 8 MiB
/// and 6,000 of 32 MiB hold 218 GiB, well past a 50 GiB file, with at
/// most one part in memory per transfer.
const SMALL_PARTS: u32 = 4_000;
const LARGE_PART: u64 = 4 * MIN_PART_SIZE;

/// How long part `number` (from 1) is.
pub fn part_len(number: u32) -> u64 {
    if number <= SMALL_PARTS {
        MIN_PART_SIZE
    } else {
        LARGE_PART
    }
}

/// The most bytes a staged upload holds.
pub fn max_size() -> u64 {
    let small = u64::from(SMALL_PARTS) * MIN_PART_SIZE;
    small + (MAX_PARTS - u64::from(SMALL_PARTS)) * LARGE_PART
}

/// What a staged write holds.
pub enum Body {
    /// The whole file, sent by the commit.
    Memory(Vec<u8>),
    /// An open multipart upload with every part sent.
    Parts {
        upload_id: String,
        parts: Vec<CompletedPart>,
    },
}

pub struct Staged {
    pub body: Body,
    pub size: u64,
    pub mtime_ns: i64,
    pub metadata: Metadata,
    /// The budget a body in memory holds until this is dropped.
    _memory: Option<Reservation>,
}

const HANDLE_PREFIX: &str = "s3-staged-";

/// The opaque handle a [`crate::remote::StagedWrite`] carries for staged
/// write `id`.
pub fn handle(id: u64) -> PathBuf {
    PathBuf::from(format!("{HANDLE_PREFIX}{id}"))
}

/// The id a handle stands for.
pub fn id_of(handle: &Path) -> Option<u64> {
    handle.to_str()?.strip_prefix(HANDLE_PREFIX)?.parse().ok()
}

/// Reads up to `len` bytes of `content` into a buffer, hashing them.
fn read_part(
    content: &mut dyn Read,
    len: u64,
    hasher: &mut blake3::Hasher,
    path: &RelPath,
) -> Result<Vec<u8>, ReplicaError> {
    let mut buf = Vec::with_capacity(len.min(MIN_PART_SIZE) as usize);
    content
        .take(len)
        .read_to_end(&mut buf)
        .map_err(|e| ReplicaError::io("read", path, e))?;
    hasher.update(&buf);
    Ok(buf)
}

/// Stages `content` for `path`; its bytes must hash to `hash`, else
/// [`ReplicaError::SourceChanged`] and nothing stays behind. A body kept
/// in memory first waits for its size in `budget`.
pub fn stage(
    client: &S3Client,
    budget: &Arc<MemoryBudget>,
    path: &RelPath,
    content: &mut dyn Read,
    hash: &ContentHash,
    mtime_ns: i64,
) -> Result<Staged, ReplicaError> {
    let mut metadata = Metadata::new();
    metadata.insert(META_BLAKE3.to_owned(), hash.to_hex());
    metadata.insert(META_MTIME.to_owned(), mtime_ns.to_string());
    let mut hasher = blake3::Hasher::new();
    let first = read_part(content, part_len(1), &mut hasher, path)?;
    let source_changed = || ReplicaError::SourceChanged {
        path: path.to_string(),
    };
    if (first.len() as u64) < part_len(1) {
        if ContentHash(*hasher.finalize().as_bytes()) != *hash {
            return Err(source_changed());
        }
        let mut first = first;
        // Read into a buffer of a whole part: kept, it holds its size.
        first.shrink_to_fit();
        let memory = budget.reserve(first.len() as u64);
        return Ok(Staged {
            size: first.len() as u64,
            body: Body::Memory(first),
            mtime_ns,
            metadata,
            _memory: Some(memory),
        });
    }
    let rel = path.as_str();
    let upload_id = client.create_upload(rel, &metadata)?;
    let sent = (|| {
        let mut parts = Vec::new();
        let mut size = 0u64;
        let mut buf = first;
        let mut number = 1u32;
        loop {
            size += buf.len() as u64;
            let mut source = Seekable::new(Cursor::new(&buf[..]))
                .map_err(|e| ReplicaError::io("read", path, e))?;
            let etag =
                client.upload_part(rel, &upload_id, number, &mut source, 0, buf.len() as u64)?;
            parts.push(CompletedPart { number, etag });
            if (buf.len() as u64) < part_len(number) {
                break;
            }
            if u64::from(number) == MAX_PARTS {
                // A last byte past the limit means the file is too large.
                if read_part(content, 1, &mut hasher, path)?.is_empty() {
                    break;
                }
                return Err(ReplicaError::Other(format!(
                    "{path} is larger than an S3 upload of {} bytes can hold",
                    max_size()
                )));
            }
            number += 1;
            buf = read_part(content, part_len(number), &mut hasher, path)?;
            if buf.is_empty() {
                break;
            }
        }
        if ContentHash(*hasher.finalize().as_bytes()) != *hash {
            return Err(source_changed());
        }
        Ok((parts, size))
    })();
    match sent {
        Ok((parts, size)) => Ok(Staged {
            body: Body::Parts { upload_id, parts },
            size,
            mtime_ns,
            metadata,
            _memory: None,
        }),
        Err(e) => {
            abort(client, rel, &upload_id);
            Err(e)
        }
    }
}

/// Makes a staged write visible under `path` if `condition` holds;
/// returns the new version's ETag.
pub fn commit(
    client: &S3Client,
    path: &RelPath,
    staged: &Staged,
    condition: &Condition,
) -> Result<String, S3Error> {
    match &staged.body {
        Body::Memory(bytes) => {
            let mut source =
                Seekable::new(Cursor::new(&bytes[..])).map_err(|e| S3Error::Source {
                    key: path.to_string(),
                    source: e,
                })?;
            client.put(
                path.as_str(),
                &mut source,
                staged.size,
                condition,
                &staged.metadata,
            )
        }
        Body::Parts { upload_id, parts } => {
            client.complete_upload(path.as_str(), upload_id, parts, condition)
        }
    }
}

/// Drops a staged write that will not be committed.
pub fn abandon(client: &S3Client, path: &RelPath, staged: &Staged) {
    if let Body::Parts { upload_id, .. } = &staged.body {
        abort(client, path.as_str(), upload_id);
    }
}

fn abort(client: &S3Client, rel: &str, upload_id: &str) {
    if let Err(e) = client.abort_upload(rel, upload_id) {
        tracing::warn!(key = rel, error = %e, "could not abort a multipart upload; the trash purge removes it later");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifty_gib_fits_the_part_limit_with_parts_of_at_most_32_mib() {
        assert!(max_size() >= 50 * 1024 * 1024 * 1024);
        assert_eq!(part_len(1), MIN_PART_SIZE);
        assert_eq!(part_len(MAX_PARTS as u32), 32 * 1024 * 1024);
    }

    #[test]
    fn handles_round_trip_and_other_paths_are_not_handles() {
        assert_eq!(id_of(&handle(42)), Some(42));
        assert_eq!(id_of(Path::new("/tmp/x")), None);
    }
}
