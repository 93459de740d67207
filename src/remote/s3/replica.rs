//! An `s3://BUCKET/PREFIX` remote: the [`Replica`] over an [`S3Client`].
//!
//! How files map onto objects:
//!
//! - A file is the object under its path; its plaintext BLAKE3 and its
//!   modification time are kept in the object's user metadata
//!   ([`META_BLAKE3`], [`META_MTIME`]), so a listing plus the base's
//!   version tokens gives every hash without a download: an object whose
//!   ETag is the base's `remote_version` reuses the base's hash, another
//!   one is judged by a HEAD, and only an object without the metadata
//!   (written by another tool) is read and hashed ([`super::listing`]).
//! - A folder is a prefix; an empty one is a zero-byte `name/` marker.
//! - A write is staged without becoming visible (a small file in memory,
//!   within a byte budget, see [`super::budget`]; a large one as an open
//!   multipart upload, see [`super::staging`]) and
//!   committed with a condition: `If-None-Match: *` for a new file,
//!   `If-Match: ETAG` (the listed version token) for a replacement. A
//!   412 is [`ReplicaError::Changed`]: re-planned, never overwritten.
//! - The version a write replaces or a removal deletes is first copied,
//!   server side and on condition that it is still that version, to
//!   `.prism-sync/trash/BATCH/PATH`.
//! - A move is a server-side copy and a delete of the source on condition
//!   that it is still the version copied; a folder moves object by object
//!   (no upload).
//! - The lease is `.prism-sync/lease`, created with `If-None-Match: *` and
//!   renewed with `If-Match` ([`super::lease`]); records live beside it.
//!
//! Servers that ignore conditional headers are found by a probe
//! ([`S3Client::probe_conditions`]) at the first listing: writes there
//! re-check the key with a HEAD just before they replace it, and the
//! listing says so as a problem, which status shows.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::budget::{DEFAULT_MEMORY_BUDGET, MemoryBudget};
use super::client::{Condition, ConditionSupport, Metadata, S3Client, S3Settings, Version};
use super::credentials::{CredentialSource, Credentials};
use super::error::S3Error;
use super::{Seekable, listing, staging};
use crate::fsops::Expect;
use crate::locks::LockExt;
use crate::model::{BaseTree, ContentHash, Entry, FileMeta, Mode, RelPath, Scope, SideEntry};
use crate::remote::{
    Capabilities, Lease, Listing, Opened, Problem, Replica, ReplicaError, RootState, StagedWrite,
    layout,
};
use crate::secrets::{self, Account};
use crate::tracker::ignore::{IgnoreRules, METADATA_DIR};

/// The user-metadata key that holds a file's modification time
/// (nanoseconds since the Unix epoch, decimal).
pub const META_MTIME: &str = "prism-mtime";

/// The most HEADs a listing sends at once.
const MAX_LISTING_HEADS: usize = 32;

/// The largest record read (change logs are split into smaller segments).
const MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// Multipart uploads older than this (and than the trash retention) are
/// leftovers of a crash and are aborted by [`Replica::purge_trash`].
const STALE_UPLOAD: Duration = Duration::from_secs(24 * 3600);

/// An `s3://` remote.
pub struct S3Replica {
    settings: S3Settings,
    /// `s3://BUCKET/PREFIX` (and the endpoint): never a secret.
    shown: String,
    /// Built at first use, so missing credentials are an error of the
    /// first sync, and built again after [`Replica::forget_login`].
    client: Mutex<Option<Arc<S3Client>>>,
    /// What the server honours, once probed.
    conditions: Mutex<Option<ConditionSupport>>,
    staged: Mutex<HashMap<u64, Arc<staging::Staged>>>,
    next_staged: AtomicU64,
    /// Bounds the staged bodies held in memory (see [`super::budget`]).
    memory: Arc<MemoryBudget>,
    /// How many requests a listing sends at once (HEADs of changed
    /// objects) and a folder move copies at once.
    parallel: usize,
    /// The account whose secret access key Prism Sync keeps (the pair's
    /// `access_key_id`), and the config dir its credentials file is in;
    /// looked up each time the client is built.
    stored: Option<(Account, Option<PathBuf>)>,
    trash_batches: layout::TrashBatches,
}

impl S3Replica {
    /// A replica of `settings`' bucket and prefix. Nothing is contacted
    /// and no credentials are looked up yet.
    pub fn new(settings: S3Settings, parallel: usize) -> S3Replica {
        let prefix = settings.prefix.trim_matches('/');
        let mut shown = format!("s3://{}/{prefix}", settings.bucket);
        if let Some(endpoint) = &settings.endpoint {
            shown.push_str(&format!(" on {}", endpoint.trim_end_matches('/')));
        }
        S3Replica {
            settings,
            shown,
            client: Mutex::new(None),
            conditions: Mutex::new(None),
            staged: Mutex::new(HashMap::new()),
            next_staged: AtomicU64::new(1),
            memory: MemoryBudget::new(DEFAULT_MEMORY_BUDGET),
            parallel: parallel.max(1),
            stored: None,
            trash_batches: layout::TrashBatches::new(),
        }
    }

    /// The replica of a configured pair's `bucket` and `prefix`: its
    /// endpoint, region and profile, and its stored key pair where it
    /// names an `access_key_id`.
    pub fn for_pair(
        settings: &super::S3PairSettings,
        bucket: &str,
        prefix: &str,
        config_dir: Option<&std::path::Path>,
        parallel: usize,
    ) -> S3Replica {
        let replica = S3Replica::new(settings.client_settings(bucket, prefix), parallel);
        match settings.account() {
            Some(account) => {
                replica.with_stored_secret(account, config_dir.map(std::path::Path::to_path_buf))
            }
            None => replica,
        }
    }

    /// The same replica logging in as `account` with the secret access
    /// key `prism-syncctl password set` stored (the secret store, else the
    /// credentials file in `config_dir`, or `PRISM_SYNC_S3_SECRET_ACCESS_KEY`).
    pub fn with_stored_secret(mut self, account: Account, config_dir: Option<PathBuf>) -> Self {
        self.stored = Some((account, config_dir));
        self
    }

    /// The same replica holding at most `bytes` of staged bodies in memory
    /// (see [`super::budget`]; the default is [`DEFAULT_MEMORY_BUDGET`]).
    pub fn with_memory_budget(mut self, bytes: u64) -> Self {
        self.memory = MemoryBudget::new(bytes);
        self
    }

    /// The bytes of staged bodies held in memory now.
    pub fn staged_in_memory(&self) -> u64 {
        self.memory.held()
    }

    /// The settings with the stored key pair, when the pair names one.
    fn login_settings(&self) -> Result<S3Settings, ReplicaError> {
        let mut settings = self.settings.clone();
        let Some((account, config_dir)) = &self.stored else {
            return Ok(settings);
        };
        let secret = secrets::password(account, config_dir.as_deref())
            .map_err(|e| ReplicaError::Other(e.to_string()))?
            .ok_or_else(|| {
                ReplicaError::Other(format!(
                    "no secret access key is stored for {account}: {}",
                    secrets::how_to_store(account, config_dir.as_deref())
                ))
            })?;
        settings.credentials = CredentialSource::explicit(Credentials {
            access_key_id: account.user.clone(),
            secret_access_key: secret,
            session_token: None,
            origin: format!("the secret stored for {account}"),
        });
        Ok(settings)
    }

    pub(super) fn client(&self) -> Result<Arc<S3Client>, ReplicaError> {
        let mut slot = self.client.locked();
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let client = Arc::new(S3Client::new(self.login_settings()?)?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// What the server honours, probed once (with a few writes below the
    /// metadata folder).
    fn conditions(&self, client: &S3Client) -> Result<ConditionSupport, ReplicaError> {
        if let Some(known) = *self.conditions.locked() {
            return Ok(known);
        }
        let probed = client.probe_conditions(&format!("{METADATA_DIR}/"))?;
        if !probed.all() {
            tracing::warn!(
                remote = %self.shown,
                ?probed,
                "the S3 server ignores some conditional requests; writes re-check before they replace"
            );
        }
        *self.conditions.locked() = Some(probed);
        Ok(probed)
    }

    /// The ETag a step may act on: the version token `expect` carries, or
    /// (without one) the current object's after checking its size and
    /// modification time. A missing object, or another size or time, is
    /// [`ReplicaError::Changed`].
    fn expected_etag(
        &self,
        client: &S3Client,
        path: &RelPath,
        (size, mtime_ns): (u64, i64),
        version: Option<&str>,
    ) -> Result<String, ReplicaError> {
        if let Some(version) = version {
            return Ok(version.to_owned());
        }
        match client.head(path.as_str())? {
            Some(head) if head.size == size && listing::same_mtime(&head, mtime_ns) => {
                Ok(head.etag)
            }
            _ => Err(changed(path)),
        }
    }

    /// Copies the version `etag` (`size` bytes) of `path` to the trash,
    /// only while it is still that version, never over another trashed
    /// version; returns its name in the trash (see
    /// [`Replica::open_trashed`]).
    fn trash_copy(
        &self,
        client: &S3Client,
        support: ConditionSupport,
        path: &RelPath,
        etag: &str,
        size: u64,
    ) -> Result<RelPath, ReplicaError> {
        let now = SystemTime::now();
        let batches = &self.trash_batches;
        // A version trashed earlier in the same minute keeps its name: this
        // one goes to a spare batch. Where copies cannot refuse a taken
        // name, the look below is all that keeps one: it is sound because
        // an agent never works on one path from two threads at once.
        let mut batch = batches.batch(now);
        if client
            .head(&trash_key(&format!("{batch}/{path}")))?
            .is_some()
        {
            batch = batches.taken(now, &batch);
        }
        let mut name = format!("{batch}/{path}");
        if !support.copy {
            recheck(client, path.as_str(), etag)?;
        }
        // Where copies honour it, the name must still be free: another
        // agent may have trashed a version of this path under it since
        // the look above (RACE where they do not: that one is replaced).
        let dest = if support.copy_create {
            Condition::Absent
        } else {
            Condition::None
        };
        for last in [false, true] {
            let trashed = RelPath::new(&name).map_err(|e| {
                ReplicaError::Other(format!("{path}: no name in the trash for it: {e}"))
            })?;
            match client.copy_version(path.as_str(), &trash_key(&name), etag, size, &dest) {
                Ok(_) => return Ok(trashed),
                // The name was taken meanwhile, or the source changed:
                // a name of its own tells which.
                Err(S3Error::PreconditionFailed { .. }) if support.copy_create && !last => {
                    batch = batches.taken(now, &batch);
                    name = format!("{batch}/{path}");
                }
                Err(S3Error::PreconditionFailed { .. }) | Err(S3Error::NoSuchKey { .. }) => {
                    return Err(changed(path));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(changed(path))
    }

    /// Whether anything is at `path`: an object, or keys below `path/`.
    fn occupied(&self, client: &S3Client, path: &RelPath) -> Result<bool, ReplicaError> {
        if client.head(path.as_str())?.is_some() {
            return Ok(true);
        }
        Ok(client.any_below(&format!("{path}/"))?)
    }

    /// The condition a write to `path` commits with, after the checks and
    /// the trash copy `expect` calls for, and the name in the trash of the
    /// version it replaces.
    fn prepare_write(
        &self,
        client: &S3Client,
        path: &RelPath,
        expect: &Expect,
    ) -> Result<(Condition, Option<RelPath>), ReplicaError> {
        let support = self.conditions(client)?;
        match expect {
            Expect::Absent => {
                if !support.create && client.head(path.as_str())?.is_some() {
                    return Err(changed(path));
                }
                Ok((Condition::Absent, None))
            }
            Expect::File {
                size,
                mtime_ns,
                version,
                ..
            } => {
                let etag =
                    self.expected_etag(client, path, (*size, *mtime_ns), version.as_deref())?;
                if !support.replace {
                    recheck(client, path.as_str(), &etag)?;
                }
                let trashed = self.trash_copy(client, support, path, &etag, *size)?;
                Ok((Condition::Matches(etag), Some(trashed)))
            }
            Expect::Dir => {
                self.remove(path, &Expect::Dir)?;
                Ok((Condition::Absent, None))
            }
        }
    }

    fn register(&self, staged: staging::Staged) -> u64 {
        let id = self.next_staged.fetch_add(1, Ordering::Relaxed);
        self.staged.locked().insert(id, Arc::new(staged));
        id
    }

    fn staged_of(&self, staged: &StagedWrite) -> Option<(u64, Arc<staging::Staged>)> {
        let id = staging::id_of(&staged.temp)?;
        self.staged.locked().get(&id).map(|s| (id, s.clone()))
    }

    /// Moves one object (`from` at version `etag`, `size` bytes) to `to`,
    /// where nothing may be: a server-side copy (`If-None-Match: *` where
    /// the server honours it on copies; the caller checked `to` was free),
    /// then the source's removal while it is still that version.
    fn move_object(
        &self,
        client: &S3Client,
        support: ConditionSupport,
        from: &str,
        to: &str,
        (etag, size): (&str, u64),
    ) -> Result<(), ReplicaError> {
        if !support.copy {
            recheck(client, from, etag)?;
        }
        // RACE: where the server ignores it, an object written at `to`
        // since the caller's check is replaced by the copy.
        let dest = if support.copy_create {
            Condition::Absent
        } else {
            Condition::None
        };
        match client.copy_version(from, to, etag, size, &dest) {
            Ok(_) => {}
            Err(S3Error::PreconditionFailed { .. }) | Err(S3Error::NoSuchKey { .. }) => {
                return Err(ReplicaError::Changed { path: from.into() });
            }
            Err(e) => return Err(e.into()),
        }
        delete_version(client, support, from, etag)
    }
}

/// The key of the trashed version named `name` (see
/// [`Replica::open_trashed`]).
fn trash_key(name: &str) -> String {
    format!("{METADATA_DIR}/trash/{name}")
}

/// Where a condition is not honoured: the object must still be `etag`
/// (RACE: a write between this look and the request that relies on it
/// is not seen; it lands in the trash or is replaced).
fn recheck(client: &S3Client, path: &str, etag: &str) -> Result<(), ReplicaError> {
    match client.version_of(path, etag)? {
        Version::Same(_) => Ok(()),
        Version::Other | Version::Gone => Err(changed(path)),
    }
}

/// Deletes `path` while it is still `etag`: `If-Match` where the server
/// honours it on DELETE, else after a re-check (RACE: a version written
/// between the two is deleted). Nothing there is fine; another version is
/// [`ReplicaError::Changed`].
pub(super) fn delete_version(
    client: &S3Client,
    support: ConditionSupport,
    path: &str,
    etag: &str,
) -> Result<(), ReplicaError> {
    if !support.delete {
        match client.version_of(path, etag)? {
            Version::Same(_) => {}
            Version::Other => return Err(changed(path)),
            Version::Gone => return Ok(()),
        }
    }
    match client.delete_matching(path, etag) {
        Ok(()) => Ok(()),
        Err(S3Error::PreconditionFailed { .. }) => Err(changed(path)),
        Err(e) => Err(e.into()),
    }
}

fn changed(path: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::Changed {
        path: path.to_string(),
    }
}

impl Replica for S3Replica {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn capabilities(&self) -> Capabilities {
        // Every commit is a few requests (check, trash copy, PUT).
        Capabilities {
            parallel_commits: true,
            ..Capabilities::default()
        }
    }

    fn forget_login(&self) {
        *self.client.locked() = None;
    }

    /// A GET, not a HEAD, of the marker: an answer to a HEAD has no body,
    /// so a refused key pair could not be told from a missing permission.
    /// Without it, a prefix that holds nothing is missing (a prefix has no
    /// folder of its own that could stay behind empty), one that holds
    /// something unmarked.
    fn root_state(&self) -> Result<RootState, ReplicaError> {
        let client = self.client()?;
        if read_small(&client, &format!("{METADATA_DIR}/root"))?.is_some() {
            return Ok(RootState::Ready);
        }
        Ok(if client.any_below("")? {
            RootState::Unmarked
        } else {
            RootState::Missing
        })
    }

    fn mark_root(&self) -> Result<(), ReplicaError> {
        let client = self.client()?;
        let note = "This prefix is kept in sync by Prism Sync. Do not delete this object: \
                    without it the agent treats the remote as missing and refuses to sync \
                    deletions.\n";
        let mut body = Seekable::new(Cursor::new(note.as_bytes()))
            .map_err(|e| ReplicaError::io("create", METADATA_DIR, e))?;
        match client.put(
            &format!("{METADATA_DIR}/root"),
            &mut body,
            note.len() as u64,
            &Condition::Absent,
            &Metadata::new(),
        ) {
            Ok(_) | Err(S3Error::PreconditionFailed { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn list(
        &self,
        scope: &Scope,
        cache: &BaseTree,
        ignore: &IgnoreRules,
    ) -> Result<Listing, ReplicaError> {
        let client = self.client()?;
        // A HEAD is a small request: several per transfer slot keep a
        // listing of many changed objects from waiting on round trips.
        let heads = (self.parallel * 4).min(MAX_LISTING_HEADS);
        let mut listing = listing::list(&client, scope, cache, ignore, heads)?;
        let support = match self.conditions(&client) {
            Ok(support) => support,
            Err(e) if e.is_offline() => return Err(e),
            // A key pair that may only read cannot write the probe: the
            // listing stands, and the writes that need the answer fail.
            Err(e) => {
                listing.problems.push(Problem {
                    path: None,
                    message: format!(
                        "could not find out which conditional requests {} honours: {e}",
                        self.shown
                    ),
                });
                return Ok(listing);
            }
        };
        if !support.all() {
            let ignored = support.ignored();
            listing.problems.push(Problem {
                path: None,
                message: format!(
                    "{} ignores {}: those steps re-check the object just before they act, and \
                     a change another writer makes in that very moment is not seen (it can go \
                     to the trash, be replaced or be removed)",
                    self.shown,
                    ignored.join(" and ")
                ),
            });
        }
        Ok(listing)
    }

    fn stat(&self, path: &RelPath) -> Result<Expect, ReplicaError> {
        let client = self.client()?;
        if let Some(head) = client.head(path.as_str())? {
            return Ok(Expect::File {
                size: head.size,
                mtime_ns: listing::mtime_of(&head, None),
                mode: None,
                version: Some(head.etag),
            });
        }
        // A folder is a prefix: its marker, or any key below it.
        if client.any_below(&format!("{path}/"))? {
            return Ok(Expect::Dir);
        }
        Ok(Expect::Absent)
    }

    fn open(&self, path: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        let client = self.client()?;
        // The caller checks the bytes against the planned hash.
        match client.get(path.as_str(), 0, None) {
            Ok(reader) => Ok(Box::new(reader)),
            Err(S3Error::NoSuchKey { .. }) => Err(ReplicaError::SourceChanged {
                path: path.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn open_at(
        &self,
        path: &RelPath,
        offset: u64,
        expected: &FileMeta,
    ) -> Result<Opened<'_>, ReplicaError> {
        self.open_version_at(path, offset, expected, None)
    }

    /// From the start: a plain GET (the caller's hash check covers it).
    /// From an offset: a ranged GET with `If-Match` on the version token
    /// (the listed one, else the one a HEAD sees now, which must have the
    /// expected size), so two versions are never spliced. The version is
    /// judged by its ETag, never by `expected`'s hash: that need not be
    /// the hash the object's metadata holds (an encrypting layer asks with
    /// its plaintext's, the object holds its ciphertext's).
    fn open_version_at(
        &self,
        path: &RelPath,
        offset: u64,
        expected: &FileMeta,
        version: Option<&str>,
    ) -> Result<Opened<'_>, ReplicaError> {
        if offset == 0 {
            return Ok((self.open(path)?, 0));
        }
        let client = self.client()?;
        let source_changed = || ReplicaError::SourceChanged {
            path: path.to_string(),
        };
        let etag = match version {
            Some(version) => version.to_owned(),
            None => match client.head(path.as_str())? {
                Some(head) if head.size == expected.size => head.etag,
                _ => return Err(source_changed()),
            },
        };
        let reader = match client.get(path.as_str(), offset, Some(&etag)) {
            Ok(reader) => reader,
            // 416: shorter than what already arrived (a server that
            // ignored the condition).
            Err(S3Error::PreconditionFailed { .. })
            | Err(S3Error::NoSuchKey { .. })
            | Err(S3Error::Status { status: 416, .. }) => return Err(source_changed()),
            Err(e) => return Err(e.into()),
        };
        // What the answer holds must end where the version does.
        let start = reader.start;
        if reader.len.is_some_and(|len| start + len != expected.size) {
            return Err(source_changed());
        }
        Ok((Box::new(reader), start))
    }

    fn stage(
        &self,
        path: &RelPath,
        content: &mut dyn Read,
        hash: &ContentHash,
        mtime_ns: i64,
        // Object stores hold no permission bits that mean anything here.
        _mode: Option<Mode>,
    ) -> Result<StagedWrite, ReplicaError> {
        let client = self.client()?;
        let staged = staging::stage(&client, &self.memory, path, content, hash, mtime_ns)?;
        let size = staged.size;
        let id = self.register(staged);
        Ok(StagedWrite {
            path: path.clone(),
            temp: staging::handle(id),
            hash: *hash,
            size,
            written: None,
            _lock: None,
        })
    }

    fn commit_staged(
        &self,
        staged: &StagedWrite,
        expect: &Expect,
    ) -> Result<SideEntry, ReplicaError> {
        self.commit_staged_naming_trash(staged, expect)
            .map(|(entry, _)| entry)
    }

    fn commit_staged_naming_trash(
        &self,
        staged: &StagedWrite,
        expect: &Expect,
    ) -> Result<(SideEntry, Option<RelPath>), ReplicaError> {
        let path = &staged.path;
        let (id, data) = self.staged_of(staged).ok_or_else(|| {
            ReplicaError::Other(format!("{path}: the staged upload is no longer there"))
        })?;
        let client = self.client()?;
        let (condition, trashed) = self.prepare_write(&client, path, expect)?;
        let etag = match staging::commit(&client, path, &data, &condition) {
            Ok(etag) => etag,
            Err(S3Error::PreconditionFailed { .. }) => return Err(changed(path)),
            Err(e) => return Err(e.into()),
        };
        self.staged.locked().remove(&id);
        let etag = if etag.is_empty() {
            client
                .head(path.as_str())?
                .map(|h| h.etag)
                .ok_or_else(|| changed(path))?
        } else {
            etag
        };
        let entry = SideEntry {
            entry: Entry::File(FileMeta {
                hash: staged.hash,
                size: data.size,
                mtime_ns: data.mtime_ns,
                mode: None,
            }),
            id: None,
            version: Some(etag.into()),
        };
        Ok((entry, trashed))
    }

    fn discard(&self, staged: StagedWrite) {
        let Some((id, data)) = self.staged_of(&staged) else {
            return;
        };
        self.staged.locked().remove(&id);
        if let Ok(client) = self.client() {
            staging::abandon(&client, &staged.path, &data);
        }
    }

    fn mkdir(&self, path: &RelPath, _mode: Option<Mode>) -> Result<SideEntry, ReplicaError> {
        let client = self.client()?;
        if client.head(path.as_str())?.is_some() {
            // A file holds the name: someone made it since the scan.
            return Err(changed(path));
        }
        client.make_folder_marker(path.as_str())?;
        Ok(SideEntry::new(Entry::dir(None)))
    }

    fn rename(&self, from: &RelPath, to: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        let client = self.client()?;
        let support = self.conditions(&client)?;
        if self.occupied(&client, to)? {
            return Err(changed(to));
        }
        match expect {
            Expect::Absent => Err(changed(from)),
            Expect::File {
                size,
                mtime_ns,
                version,
                ..
            } => {
                let etag =
                    self.expected_etag(&client, from, (*size, *mtime_ns), version.as_deref())?;
                self.move_object(&client, support, from.as_str(), to.as_str(), (&etag, *size))
            }
            Expect::Dir => {
                let below = format!("{from}/");
                let objects = client.list(&below, None)?.objects;
                if objects.is_empty() {
                    return Err(changed(from));
                }
                // RACE: an object added below `from` after this listing
                // stays behind (the next scan sees it there).
                let results = crate::parallel::map(objects, self.parallel, |object| {
                    let inside = &object.key[below.len()..];
                    let dest = format!("{to}/{inside}");
                    if object.is_folder_marker() {
                        // A marker holds nothing: made anew, not copied
                        // (some servers keep markers as directories).
                        client.make_folder_marker(&dest)?;
                        client.delete(&object.key)?;
                        return Ok(());
                    }
                    let version = (object.etag.as_str(), object.size);
                    self.move_object(&client, support, &object.key, &dest, version)
                });
                results.into_iter().collect()
            }
        }
    }

    fn remove(&self, path: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        self.remove_naming_trash(path, expect).map(|_| ())
    }

    fn remove_naming_trash(
        &self,
        path: &RelPath,
        expect: &Expect,
    ) -> Result<Option<RelPath>, ReplicaError> {
        let client = self.client()?;
        let support = self.conditions(&client)?;
        match expect {
            Expect::Absent => {
                if self.occupied(&client, path)? {
                    Err(changed(path))
                } else {
                    Ok(None)
                }
            }
            Expect::File {
                size,
                mtime_ns,
                version,
                ..
            } => {
                let etag =
                    self.expected_etag(&client, path, (*size, *mtime_ns), version.as_deref())?;
                let trashed = self.trash_copy(&client, support, path, &etag, *size)?;
                delete_version(&client, support, path.as_str(), &etag)?;
                Ok(Some(trashed))
            }
            Expect::Dir => {
                // A plan removes a folder after its content; anything
                // still below it is something the plan did not see.
                let marker = format!("{path}/");
                let objects = client.list(&marker, None)?.objects;
                if objects.iter().any(|o| o.key != marker) {
                    return Err(changed(path));
                }
                // What is left is the folder's marker: it holds nothing to
                // keep, and some servers keep markers as directories whose
                // ETag a HEAD does not repeat.
                for object in objects {
                    client.delete(&object.key)?;
                }
                Ok(None)
            }
        }
    }

    /// A GET of `.prism-sync/trash/NAME`; the caller checks its hash.
    fn open_trashed(&self, name: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        let client = self.client()?;
        match client.get(&trash_key(name.as_str()), 0, None) {
            Ok(reader) => Ok(Box::new(reader)),
            Err(S3Error::NoSuchKey { .. }) => Err(ReplicaError::io(
                "read the trashed version",
                name,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not in the remote trash"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    fn purge_trash(&self, older_than: Duration) -> Result<usize, ReplicaError> {
        let client = self.client()?;
        let trash = format!("{METADATA_DIR}/trash/");
        let now = SystemTime::now();
        let cutoff = now.checked_sub(older_than).unwrap_or(now);
        let mut batches = std::collections::BTreeSet::new();
        for object in client.list(&trash, None)?.objects {
            let rest = &object.key[trash.len()..];
            let Some((batch, _)) = rest.split_once('/') else {
                continue;
            };
            if layout::trash_batch_is_older(batch, cutoff) {
                client.delete(&object.key)?;
                batches.insert(batch.to_owned());
            }
        }
        // Multipart uploads a crash left open hold storage until aborted.
        let stale = now
            .checked_sub(older_than.max(STALE_UPLOAD))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for upload in client.list_uploads("")? {
            if upload.initiated.is_some_and(|at| at < stale) {
                client.abort_upload(&upload.key, &upload.upload_id)?;
            }
        }
        Ok(batches.len())
    }

    fn lease(&self, device: &str, ttl: Duration) -> Result<Option<Box<dyn Lease>>, ReplicaError> {
        let client = self.client()?;
        let support = self.conditions(&client)?;
        let lease = super::lease::S3Lease::acquire(client, support, device, ttl)?;
        Ok(Some(Box::new(lease)))
    }

    fn read_record(&self, name: &str) -> Result<Option<String>, ReplicaError> {
        let client = self.client()?;
        let key = format!("{METADATA_DIR}/{name}");
        read_small(&client, &key).map(|found| found.map(|(text, _)| text))
    }

    /// One PUT: S3 replaces an object whole, so a reader sees the old
    /// record or the new one.
    fn write_record(&self, name: &str, content: &str) -> Result<(), ReplicaError> {
        let client = self.client()?;
        let key = format!("{METADATA_DIR}/{name}");
        let mut body = Seekable::new(Cursor::new(content.as_bytes()))
            .map_err(|e| ReplicaError::io("write", &key, e))?;
        client.put(
            &key,
            &mut body,
            content.len() as u64,
            &Condition::None,
            &Metadata::new(),
        )?;
        Ok(())
    }

    fn list_records(&self, folder: &str) -> Result<Vec<String>, ReplicaError> {
        let client = self.client()?;
        let below = format!("{METADATA_DIR}/{}/", folder.trim_end_matches('/'));
        Ok(client
            .list(&below, None)?
            .objects
            .into_iter()
            .filter_map(|o| {
                let name = &o.key[below.len()..];
                (!name.contains('/') && crate::remote::is_record_name(name))
                    .then(|| name.to_owned())
            })
            .collect())
    }

    fn remove_record(&self, name: &str) -> Result<(), ReplicaError> {
        let client = self.client()?;
        client.delete(&format!("{METADATA_DIR}/{name}"))?;
        Ok(())
    }
}

/// Reads a small object whole, as text, with its ETag; `None` when there
/// is none.
pub(super) fn read_small(
    client: &S3Client,
    key: &str,
) -> Result<Option<(String, String)>, ReplicaError> {
    let reader = match client.get(key, 0, None) {
        Ok(reader) => reader,
        Err(S3Error::NoSuchKey { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let etag = reader.etag.clone();
    let mut bytes = Vec::new();
    reader
        .take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ReplicaError::io("read", key, e))?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(ReplicaError::Other(format!(
            "{key} is larger than {MAX_RECORD_BYTES} bytes; it is not a record Prism Sync wrote"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| ReplicaError::Other(format!("{key} is not UTF-8 text")))?;
    Ok(Some((text, etag)))
}
