//! The listing of an S3 remote: ListObjectsV2 pages turned into a side
//! tree.
//!
//! Every key becomes a path through [`RelPath::new`]; a key that cannot
//! (`..`, empty segments, too deep, not UTF-8, outside the prefix: the
//! client refuses those already) is a [`Problem`] of its own and the rest
//! of the listing stands. Folders are the prefixes keys lie under, and
//! zero-byte `name/` markers for empty ones. A name that is both a file
//! and a folder (S3 allows `a` beside `a/b`) is held, not guessed.
//!
//! Hashes come from the base where the ETag is the base's version token,
//! else from the object's metadata (one HEAD each, several at once), else
//! from reading the object (checked against the listed ETag).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use super::client::{META_BLAKE3, ObjectHead, ObjectInfo, S3Client, Version};
use super::error::S3Error;
use super::replica::META_MTIME;
use crate::model::{BaseTree, ContentHash, Entry, FileMeta, RelPath, Scope, SideEntry};
use crate::remote::same_etag;
use crate::remote::{Listing, Problem, ReplicaError};
use crate::tracker::ignore::{IgnoreRules, METADATA_DIR};

/// Lists `scope` below the client's prefix.
pub fn list(
    client: &S3Client,
    scope: &Scope,
    cache: &BaseTree,
    ignore: &IgnoreRules,
    parallel: usize,
) -> Result<Listing, ReplicaError> {
    let mut objects = Vec::new();
    let mut out = Listing::default();
    let roots: Option<&[RelPath]> = match scope {
        Scope::Full => {
            let list = client.list("", None)?;
            if list.objects.is_empty() && list.problems.is_empty() {
                // Not even the marker: the prefix is gone (or was never
                // set up), which is not a remote whose files were all
                // deleted.
                return Err(ReplicaError::Other(format!(
                    "{} holds nothing, not even the marker {METADATA_DIR}/root: the prefix is \
                     gone or was never set up",
                    client.describe()
                )));
            }
            note_refused(&mut out, list.problems);
            objects = list.objects;
            None
        }
        Scope::Paths(paths) => {
            for path in paths {
                if paths.iter().any(|o| o != path && path.is_within(o)) {
                    continue;
                }
                let list = client.list(&format!("{path}/"), None)?;
                note_refused(&mut out, list.problems);
                objects.extend(list.objects);
                if let Some(head) = client.head(path.as_str())? {
                    objects.push(ObjectInfo {
                        key: path.as_str().to_owned(),
                        size: head.size,
                        etag: head.etag,
                        last_modified: head.last_modified,
                    });
                }
            }
            Some(paths)
        }
    };
    let in_scope = |rel: &RelPath| roots.is_none_or(|roots| roots.iter().any(|r| rel.is_within(r)));

    let mut dirs: BTreeSet<RelPath> = BTreeSet::new();
    let mut files: BTreeMap<RelPath, ObjectInfo> = BTreeMap::new();
    for object in objects {
        let (name, marker) = match object.key.strip_suffix('/') {
            Some(name) => (name, true),
            None => (object.key.as_str(), false),
        };
        if name.is_empty() || name == METADATA_DIR || name.starts_with(&format!("{METADATA_DIR}/"))
        {
            continue;
        }
        let rel = match RelPath::new(name) {
            Ok(rel) => rel,
            Err(e) => {
                out.problems.push(Problem {
                    path: None,
                    message: format!(
                        "the object {} cannot be synced: {e}",
                        super::keys::shown(&object.key)
                    ),
                });
                continue;
            }
        };
        if ignore.is_ignored(&rel, marker) || !in_scope(&rel) {
            continue;
        }
        if rel.too_deep() {
            // Held where it first gets too deep, as every backend's
            // listing does: the folders above it are listed, nothing
            // below it reads as absent.
            let first = rel
                .ancestors()
                .chain(std::iter::once(rel.clone()))
                .find(RelPath::too_deep)
                .unwrap_or_else(|| rel.clone());
            for ancestor in first.ancestors() {
                if in_scope(&ancestor) {
                    dirs.insert(ancestor);
                }
            }
            if !out.held.contains(&first) {
                out.problems.push(Problem {
                    path: Some(first.clone()),
                    message: first.too_deep_message(),
                });
                out.held.push(first);
            }
            continue;
        }
        for ancestor in rel.ancestors() {
            if in_scope(&ancestor) {
                dirs.insert(ancestor);
            }
        }
        if marker {
            dirs.insert(rel);
        } else {
            files.insert(rel, object);
        }
    }
    for dir in &dirs {
        if files.remove(dir).is_some() {
            out.problems.push(Problem {
                path: Some(dir.clone()),
                message: "is both a file and a folder on the S3 remote (an object and keys \
                          below it); it is left alone until one of them is removed"
                    .into(),
            });
            out.held.push(dir.clone());
        }
    }
    for dir in dirs {
        if !out.held.iter().any(|h| dir.is_within(h)) {
            out.tree.insert(dir, SideEntry::new(Entry::dir(None)));
        }
    }

    let mut unknown = Vec::new();
    for (rel, object) in files {
        if out.held.iter().any(|h| rel.is_within(h)) {
            continue;
        }
        let cached = cache.get(&rel).and_then(|base| match &base.entry {
            Entry::File(meta)
                if base
                    .remote_version
                    .as_ref()
                    .is_some_and(|v| same_etag(&v.as_str(), &object.etag)) =>
            {
                Some(*meta)
            }
            _ => None,
        });
        match cached {
            Some(meta) => insert(&mut out, rel, &object, meta.hash, meta.mtime_ns),
            None => unknown.push((rel, object)),
        }
    }
    let judged = crate::parallel::map(unknown, parallel, |(rel, object)| {
        let found = judge(client, &rel, &object);
        (rel, object, found)
    });
    for (rel, object, found) in judged {
        match found {
            Ok(Judged::Known { hash, mtime_ns }) => insert(&mut out, rel, &object, hash, mtime_ns),
            Ok(Judged::Read { hash, mtime_ns }) => {
                out.hashed_files += 1;
                insert(&mut out, rel, &object, hash, mtime_ns);
            }
            // Removed or replaced since the listing: held, not taken for
            // deleted (or for the version listed); the next listing sees
            // what it became.
            Ok(Judged::Gone | Judged::Moved) => out.held.push(rel),
            Err(e) if e.is_offline() => return Err(e),
            Err(e) => {
                out.problems.push(Problem {
                    path: Some(rel.clone()),
                    message: format!("could not be read: {e}"),
                });
                out.held.push(rel);
            }
        }
    }
    out.held.sort();
    out.held.dedup();
    Ok(out)
}

fn note_refused(out: &mut Listing, refused: Vec<super::client::KeyProblem>) {
    for key in refused {
        out.problems.push(Problem {
            path: None,
            message: format!("an object is not synced: {}", key.reason),
        });
    }
}

fn insert(out: &mut Listing, rel: RelPath, object: &ObjectInfo, hash: ContentHash, mtime_ns: i64) {
    out.tree.insert(
        rel,
        SideEntry {
            entry: Entry::File(FileMeta {
                hash,
                size: object.size,
                mtime_ns,
                mode: None,
            }),
            id: None,
            version: Some(object.etag.as_str().into()),
        },
    );
}

enum Judged {
    /// From the object's metadata.
    Known {
        hash: ContentHash,
        mtime_ns: i64,
    },
    /// Read and hashed.
    Read {
        hash: ContentHash,
        mtime_ns: i64,
    },
    Gone,
    /// Another version than the one listed.
    Moved,
}

/// An object's mtime: the one the writer kept in its metadata, else the
/// server's time of the upload (`listed`, where the listing gave one).
pub(super) fn mtime_of(head: &ObjectHead, listed: Option<std::time::SystemTime>) -> i64 {
    head.metadata
        .get(META_MTIME)
        .and_then(|v| v.parse::<i64>().ok())
        .or_else(|| {
            listed
                .or(head.last_modified)
                .map(crate::timefmt::to_unix_ns)
        })
        .unwrap_or(0)
}

/// Whether `head` shows the modification time `mtime_ns`: exactly where
/// the writer kept it in the metadata, else to the second (the precision
/// of a HEAD's `Last-Modified`, where a listing has milliseconds).
pub(super) fn same_mtime(head: &ObjectHead, mtime_ns: i64) -> bool {
    if head.metadata.contains_key(META_MTIME) {
        return mtime_of(head, None) == mtime_ns;
    }
    let secs = |ns: i64| ns.div_euclid(1_000_000_000);
    secs(mtime_of(head, None)) == secs(mtime_ns)
}

/// The hash and mtime of an object the base does not know.
fn judge(client: &S3Client, rel: &RelPath, object: &ObjectInfo) -> Result<Judged, ReplicaError> {
    let head = match client.version_of(rel.as_str(), &object.etag)? {
        Version::Same(head) => head,
        Version::Other => return Ok(Judged::Moved),
        Version::Gone => return Ok(Judged::Gone),
    };
    let mtime_ns = mtime_of(&head, object.last_modified);
    if let Some(hash) = head
        .metadata
        .get(META_BLAKE3)
        .and_then(|hex| ContentHash::from_hex(hex))
    {
        return Ok(Judged::Known { hash, mtime_ns });
    }
    let mut reader = match client.get(rel.as_str(), 0, Some(&object.etag)) {
        Ok(reader) => reader,
        Err(S3Error::PreconditionFailed { .. }) => return Ok(Judged::Moved),
        Err(S3Error::NoSuchKey { .. }) => return Ok(Judged::Gone),
        Err(e) => return Err(e.into()),
    };
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| ReplicaError::io("read", rel, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    if size != object.size {
        return Ok(Judged::Moved);
    }
    Ok(Judged::Read {
        hash: ContentHash(*hasher.finalize().as_bytes()),
        mtime_ns,
    })
}
