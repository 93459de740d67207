//! A folder on a local file system as a replica: the local side of every
//! pair, and the `file://` remote (a NAS mount, a USB disk, a second folder).
//!
//! Both roles share every rule of `fsops` (staged writes, no-replace
//! renames, trash before delete). They differ only in where their marker and
//! trash live and which base fields serve as their stat cache: the local side
//! keeps its trash under the agent's state dir; a remote folder keeps it in
//! `.prism-sync/trash/` inside itself, where every agent sharing it can
//! reach it, beside the advisory lease file. The local side also keeps
//! partial downloads (see `stage_partial`) so a broken download is
//! continued rather than started over; a remote folder, which several
//! agents may write at once, does not.

pub mod url;

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::layout::{
    METADATA_DIR, ROOT_MARKER_FILE, TEMP_PREFIX, is_partial_name, partial_name_for, temp_name_for,
};
use super::{
    Capabilities, Lease, Listing, Problem, Replica, ReplicaError, RootState, Source, StagedWrite,
    lease,
};
use crate::clock::Clock;
use crate::fsops::beneath::At;
use crate::fsops::{self, Expect, StatKind, Trash};
use crate::locks::LockExt;
use crate::model::{
    BaseEntry, BaseTree, ContentHash, Entry, FileId, FileMeta, Mode, RelPath, Scope, Side,
    SideEntry, VersionToken,
};
use crate::tracker::ignore::IgnoreRules;
use crate::tracker::scan::{ScanRequest, local_view, scan};

/// A folder on a mounted file system.
pub struct LocalFolder {
    root: PathBuf,
    side: Side,
    trash: Trash,
    case_insensitive: OnceLock<bool>,
    /// Folders whose entries changed and are not yet known to be on disk.
    dirty: Mutex<BTreeSet<PathBuf>>,
    /// Held for the whole of a flush of `dirty`; holds a folder that could
    /// not be flushed until `flush` reports it (see
    /// [`Self::flush_with_folders`]).
    flushing: Mutex<Option<(PathBuf, io::Error)>>,
    /// Temporary files older than this are a crash's leftovers.
    stale_temp_age: Duration,
    /// Partial downloads older than this are given up.
    stale_partial_age: Duration,
    /// Stamps trash batches and lease expiries.
    clock: Clock,
}

impl LocalFolder {
    /// The local side of a pair; its trash lives under the state dir.
    pub fn local(root: PathBuf, trash: PathBuf) -> LocalFolder {
        LocalFolder {
            root,
            side: Side::Local,
            trash: Trash::new(trash),
            case_insensitive: OnceLock::new(),
            dirty: Mutex::new(BTreeSet::new()),
            flushing: Mutex::new(None),
            stale_temp_age: STALE_TEMP,
            stale_partial_age: STALE_PARTIAL,
            clock: Clock::system(),
        }
    }

    /// A `file://` remote; its trash lives in `.prism-sync/trash/`.
    pub fn remote(root: PathBuf) -> LocalFolder {
        let trash = Trash::new(root.join(METADATA_DIR).join("trash"));
        LocalFolder {
            root,
            side: Side::Remote,
            trash,
            case_insensitive: OnceLock::new(),
            dirty: Mutex::new(BTreeSet::new()),
            flushing: Mutex::new(None),
            stale_temp_age: STALE_TEMP,
            stale_partial_age: STALE_PARTIAL,
            clock: Clock::system(),
        }
    }

    /// Sweeps temporary files (and partial downloads) sooner than the
    /// default hour (day): for a folder no other agent writes to at the
    /// same time (tests replaying crashes).
    pub fn with_stale_temp_age(mut self, age: Duration) -> LocalFolder {
        self.stale_temp_age = age;
        self.stale_partial_age = age;
        self
    }

    /// Reads `clock` instead of the system's for what it stamps (trash
    /// batches, lease expiries): a device whose clock is off, in tests.
    pub fn with_clock(mut self, clock: Clock) -> LocalFolder {
        self.trash = self.trash.with_clock(clock);
        self.clock = clock;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn trash(&self) -> &Trash {
        &self.trash
    }

    fn marker(&self) -> PathBuf {
        match self.side {
            Side::Local => self.root.join(ROOT_MARKER_FILE),
            Side::Remote => self.root.join(METADATA_DIR).join("root"),
        }
    }

    /// Notes that the entries of `path`'s folder changed.
    fn touched(&self, path: &Path) {
        if let Some(parent) = path.parent() {
            self.dirty.locked().insert(parent.to_path_buf());
        }
    }

    /// Flushes `files` together with every folder touched so far: one
    /// `syncfs` covers both where that is used (see `fsops::flush_all`), so
    /// a batch of staged files also makes the previous batch's renames
    /// durable, and the flush before recording that batch finds nothing
    /// left to do. Returns the files that could not be flushed, by index.
    ///
    /// The caller holds `flushing` for the whole call, so flushes run one
    /// at a time: a flush that finds no folder left has waited for the one
    /// that took them. A folder that could not be flushed is not tried
    /// again (after a failed `fsync` the next one usually succeeds without
    /// the entries being on disk): its failure waits in `pending` for the
    /// next [`Replica::flush`], which reports it, so the journal records
    /// nothing that depends on it.
    fn flush_with_folders(
        &self,
        pending: &mut Option<(PathBuf, io::Error)>,
        files: &[&Path],
    ) -> Vec<(usize, io::Error)> {
        let folders = std::mem::take(&mut *self.dirty.locked());
        let folders: Vec<&Path> = folders.iter().map(PathBuf::as_path).collect();
        let mut failed_files = Vec::new();
        for (index, error) in fsops::flush_all(files, &folders) {
            if index < files.len() {
                failed_files.push((index, error));
            } else if !matches!(
                error.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) && pending.is_none()
            {
                // (A folder that went away since, moved to the trash or
                // replaced by a file, has nothing left to flush here; the
                // folders its entries moved to are in the set.)
                *pending = Some((folders[index - files.len()].to_path_buf(), error));
            }
        }
        failed_files
    }

    /// Reaches `path` below the root without following a symbolic link
    /// (see `fsops::beneath`).
    fn at(&self, op: &'static str, path: &RelPath) -> Result<At, ReplicaError> {
        At::resolve(&self.root, path).map_err(|e| ReplicaError::io(op, path, e))
    }

    fn check(&self, path: &RelPath, expect: &Expect) -> Result<At, ReplicaError> {
        let at = self.at("inspect", path)?;
        let found = at
            .stat()
            .map_err(|e| ReplicaError::io("inspect", path, e))?;
        if !expect.matches(found.as_ref()) {
            return Err(ReplicaError::Changed {
                path: path.to_string(),
            });
        }
        Ok(at)
    }

    /// A partial sync may reach a file whose folder the plan did not
    /// cover (it was created in an earlier, failed batch): a file cannot
    /// exist without its folder, so create it. The next full sync records
    /// it in the base.
    /// Runs `create`, which makes a file beside `target`; when `target`'s
    /// folder is missing, creates it and runs `create` once more. The plan
    /// creates folders before the files in them, so looking first would
    /// cost a look-up per file for a folder that is nearly always there.
    ///
    /// Folders are made one level at a time below the root, none through a
    /// symbolic link, and without calling down per level.
    fn in_folder<T>(
        &self,
        path: &RelPath,
        create: impl Fn() -> io::Result<T>,
    ) -> Result<T, ReplicaError> {
        match create() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                for folder in path.ancestors() {
                    let at = At::resolve(&self.root, &folder)
                        .map_err(|e| ReplicaError::io("create the folder of", path, e))?;
                    match at.mkdir(None) {
                        // Every level may be new: each one's entry in
                        // the folder above is flushed.
                        Ok(()) => self.touched(at.path()),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(ReplicaError::io("create the folder of", path, e)),
                    }
                }
                create()
            }
            created => created,
        }
        .map_err(|e| ReplicaError::io("write", path, e))
    }

    /// Whether the folder's file system folds case. Asked of a name
    /// already there (looked up with its case swapped) where there is one,
    /// so a run writes nothing into the folder to learn it; an empty
    /// folder gets a probe file.
    fn probe_case_insensitive(&self) -> bool {
        if let Some(answer) = self.case_insensitive_by_a_name() {
            return answer;
        }
        let probe = self.root.join(format!("{}CaseProbe", TEMP_PREFIX));
        if fs::write(&probe, b"").is_err() {
            return false;
        }
        let lower = self.root.join(format!("{}caseprobe", TEMP_PREFIX));
        let insensitive = lower.exists();
        let _ = fs::remove_file(&probe);
        insensitive
    }

    /// Looks up the first entry whose name has case with that case
    /// swapped: the same file under the other name means case is folded,
    /// nothing there means it is not. `None` when no name tells.
    fn case_insensitive_by_a_name(&self) -> Option<bool> {
        use std::os::unix::fs::MetadataExt;
        for entry in fs::read_dir(&self.root).ok()?.take(64) {
            let entry = entry.ok()?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let upper = name.to_uppercase();
            let swapped = if upper != name {
                upper
            } else {
                name.to_lowercase()
            };
            // Only a name whose swap is one-to-one tells (`ß` upper-cases
            // to `SS`).
            if swapped == name || swapped.chars().count() != name.chars().count() {
                continue;
            }
            let original = fs::symlink_metadata(entry.path()).ok()?;
            return match fs::symlink_metadata(self.root.join(&swapped)) {
                Ok(other) => Some(other.dev() == original.dev() && other.ino() == original.ino()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Some(false),
                Err(_) => None,
            };
        }
        None
    }
}

/// Staged files older than this were left by a crash (ours, or another
/// agent's on a shared remote folder): no live write takes this long
/// between staging and renaming.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Partial downloads older than this are given up: long enough to outlast
/// a server that is away for a night, short enough that a version that
/// will never be fetched again does not keep its bytes for long.
const STALE_PARTIAL: Duration = Duration::from_secs(24 * 3600);

/// Removes temporary files a crash left behind (older than `max_age`) and
/// partial downloads no attempt continued (older than `partial_age`).
/// Their age is their change time (staging sets the mtime to the source's,
/// so mtime says nothing; appending to a partial renews it).
fn sweep_stale_temp_files(temp_files: &[PathBuf], max_age: Duration, partial_age: Duration) {
    let now = SystemTime::now();
    for temp in temp_files {
        let partial = temp
            .file_name()
            .is_some_and(|n| is_partial_name(&n.to_string_lossy()));
        let max_age = if partial { partial_age } else { max_age };
        let Ok(meta) = fs::symlink_metadata(temp) else {
            continue;
        };
        #[cfg(unix)]
        let changed = {
            use std::os::unix::fs::MetadataExt;
            UNIX_EPOCH + Duration::from_secs(meta.ctime().max(0) as u64)
        };
        #[cfg(not(unix))]
        let changed = meta.modified().unwrap_or(now);
        if now.duration_since(changed).is_ok_and(|age| age >= max_age) {
            tracing::info!(path = %temp.display(), "removing a temporary file left by an interrupted write");
            let _ = fs::remove_file(temp);
        }
    }
}

/// Stages `source` into `partial` (open as `file`), a name tied to the
/// version (see [`partial_name_for`]), continuing what an earlier attempt
/// left there.
/// Returns the file and its size once its whole content hashes to the
/// version's hash.
///
/// When reading the source fails (the connection broke) the partial is
/// kept for the next attempt, in this run or a later one; when writing it
/// fails, it is removed. A continued partial whose whole does not verify
/// held bytes of something else (an attempt that read a version changed
/// under it, a crash that left garbage at its end): it is discarded and
/// the file fetched whole, once. Bytes of two versions are never committed:
/// the hash over the whole file gates the rename.
fn stage_partial(
    mut file: fs::File,
    partial: &Path,
    source: &Source<'_>,
    mtime_ns: i64,
    mode: Option<Mode>,
) -> Result<Option<(PathBuf, u64, fs::File)>, ReplicaError> {
    let path = source.path();
    let write_error = |e: io::Error| {
        let _ = fs::remove_file(partial);
        ReplicaError::io("write", path, e)
    };
    // Held until the write is committed or discarded (the file travels in
    // the StagedWrite): nobody else may append to or truncate it meanwhile.
    if !fsops::try_lock_exclusive(&file).map_err(|e| ReplicaError::io("lock", path, e))? {
        return Ok(None);
    }
    let mut have = file.metadata().map_err(write_error)?.len();
    if have > source.meta.size {
        // Longer than the version: not a prefix of it.
        have = 0;
    }
    loop {
        let (mut reader, start) = match source.reader(have) {
            Ok(opened) => opened,
            // The source cannot continue this partial (it says the version
            // is another one, or cannot tell it is the same): starting
            // over once either fetches the version planned or finds out
            // it is gone, never asks for the same offset again and again.
            Err(ReplicaError::SourceChanged { .. }) if have > 0 => {
                tracing::info!(%path, offset = have, "the download cannot be continued; fetching it whole");
                have = 0;
                continue;
            }
            Err(e) => {
                if have == 0 {
                    let _ = fs::remove_file(partial);
                }
                return Err(e);
            }
        };
        if start > 0 {
            tracing::info!(%path, offset = start, "resuming download of {path} at {start} bytes");
        }
        let mut hasher = blake3::Hasher::new();
        file.set_len(start).map_err(write_error)?;
        file.seek(SeekFrom::Start(0)).map_err(write_error)?;
        let prefix = io::copy(&mut (&mut file).take(start), &mut hasher).map_err(write_error)?;
        if prefix < start {
            return Err(write_error(io::Error::other(
                "the partial download shrank while it was read",
            )));
        }
        let size = crate::iobuf::with_buffer(|buffer| {
            let mut size = start;
            loop {
                let n = match reader.read(buffer) {
                    Ok(0) => return Ok(size),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // Kept: the next attempt continues from here.
                    Err(e) => {
                        if size == 0 {
                            let _ = fs::remove_file(partial);
                        }
                        return Err(ReplicaError::io("download", path, e));
                    }
                };
                hasher.update(&buffer[..n]);
                file.write_all(&buffer[..n]).map_err(write_error)?;
                size += n as u64;
            }
        })?;
        if ContentHash(*hasher.finalize().as_bytes()) == source.meta.hash {
            file.set_modified(crate::timefmt::from_unix_ns(mtime_ns))
                .map_err(write_error)?;
            // Only the owner's bits can differ from the partial's mode.
            if let Some(mode) = mode {
                fsops::set_file_mode(&file, mode).map_err(write_error)?;
            }
            return Ok(Some((partial.to_path_buf(), size, file)));
        }
        if start == 0 {
            let _ = fs::remove_file(partial);
            return Err(ReplicaError::SourceChanged {
                path: path.to_string(),
            });
        }
        tracing::info!(%path, "a continued download did not verify; fetching it whole");
        have = 0;
    }
}

/// Removes the partial downloads directly in the folder `dir`; true if
/// there were any.
fn remove_partials_in(dir: &At) -> bool {
    let mut any = false;
    let Ok(names) = dir.names() else {
        return false;
    };
    for name in names {
        if is_partial_name(&name)
            && dir
                .child(&name)
                .and_then(|partial| partial.unlink_file())
                .is_ok()
        {
            any = true;
        }
    }
    any
}

/// A remote folder's view of the base (see [`CacheView`]): its own
/// identity, and the size and mtime its version token recorded.
fn remote_view(base: &BaseEntry) -> Option<(Option<&FileId>, FileMeta)> {
    let Entry::File(meta) = base.entry else {
        return None;
    };
    let recorded = base
        .remote_version
        .as_ref()
        .and_then(|v| v.as_size_mtime().or_else(|| parse_version(&v.as_str())));
    let meta = match recorded {
        Some((size, mtime_ns)) => FileMeta {
            size,
            mtime_ns,
            ..meta
        },
        None => meta,
    };
    Some((base.remote_id.as_ref(), meta))
}

fn parse_version(version: &str) -> Option<(u64, i64)> {
    let (size, mtime) = version.split_once(':')?;
    Some((size.parse().ok()?, mtime.parse().ok()?))
}

fn side_entry(stat: &fsops::Stat, hash: Option<ContentHash>) -> SideEntry {
    let entry = match (stat.kind, hash) {
        (StatKind::File, Some(hash)) => Entry::File(FileMeta {
            hash,
            size: stat.size,
            mtime_ns: stat.mtime_ns,
            mode: stat.mode,
        }),
        _ => Entry::dir(stat.mode),
    };
    let version =
        (stat.kind == StatKind::File).then(|| VersionToken::size_mtime(stat.size, stat.mtime_ns));
    SideEntry {
        entry,
        id: stat.id.clone(),
        version,
    }
}

impl Replica for LocalFolder {
    fn describe(&self) -> String {
        match self.side {
            Side::Local => self.root.display().to_string(),
            Side::Remote => format!("file://{}", self.root.display()),
        }
    }

    fn watch_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            case_insensitive: *self
                .case_insensitive
                .get_or_init(|| self.probe_case_insensitive()),
            file_ids: cfg!(unix),
            parallel_commits: false,
            modes: cfg!(unix),
            local_disk: true,
        }
    }

    fn root_state(&self) -> Result<RootState, ReplicaError> {
        match fs::metadata(&self.root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(ReplicaError::Other(format!(
                    "{} is not a folder",
                    self.root.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RootState::Missing),
            Err(e) => return Err(ReplicaError::io("open", self.root.display(), e)),
        }
        if self.side == Side::Remote {
            // The remote's trash and lease live in its metadata folder: a
            // link there would send trashed versions out of the folder.
            let metadata = self.root.join(METADATA_DIR);
            for folder in [metadata.clone(), metadata.join("trash")] {
                if fs::symlink_metadata(&folder).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(ReplicaError::Other(format!(
                        "{} is a symbolic link; Prism Sync keeps its trash and lease there and \
                         never follows links: replace it with a real folder",
                        folder.display()
                    )));
                }
            }
        }
        Ok(if self.marker().exists() {
            RootState::Ready
        } else {
            RootState::Unmarked
        })
    }

    fn mark_root(&self) -> Result<(), ReplicaError> {
        let marker = self.marker();
        let parent = marker.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(|e| ReplicaError::io("create", parent.display(), e))?;
        if !marker.exists() {
            let note = "This folder is kept in sync by Prism Sync. Do not delete this file: \
                        without it the agent treats the folder as missing (an unmounted disk) \
                        and refuses to sync deletions.\n";
            fs::write(&marker, note)
                .map_err(|e| ReplicaError::io("create", marker.display(), e))?;
        }
        Ok(())
    }

    fn list(
        &self,
        scope: &Scope,
        cache: &BaseTree,
        ignore: &IgnoreRules,
    ) -> Result<Listing, ReplicaError> {
        // The base is this side's stat cache: the local side compares its
        // size, mtime and local id; a remote folder its own version token
        // and remote id.
        let request = ScanRequest {
            root: &self.root,
            scope,
            ignore,
            cache,
            view: match self.side {
                Side::Local => local_view,
                Side::Remote => remote_view,
            },
        };
        let outcome = scan(&request).map_err(|e| ReplicaError::Other(e.to_string()))?;
        sweep_stale_temp_files(
            &outcome.temp_files,
            self.stale_temp_age,
            self.stale_partial_age,
        );
        let mut tree = outcome.tree;
        for entry in tree.values_mut() {
            if let Entry::File(meta) = &entry.entry {
                entry.version = Some(VersionToken::size_mtime(meta.size, meta.mtime_ns));
            }
        }
        Ok(Listing {
            tree,
            held: outcome.held,
            problems: outcome
                .problems
                .into_iter()
                .map(|p| Problem {
                    path: p.path,
                    message: p.message,
                })
                .collect(),
            hashed_files: outcome.hashed_files,
        })
    }

    fn stat(&self, path: &RelPath) -> Result<Expect, ReplicaError> {
        let found = match At::resolve(&self.root, path) {
            Ok(at) => at.stat(),
            // A folder on the way is missing: so is the path.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        Ok(
            match found.map_err(|e| ReplicaError::io("inspect", path, e))? {
                None => Expect::Absent,
                Some(stat) if stat.kind == StatKind::Dir => Expect::Dir,
                Some(stat) => Expect::File {
                    size: stat.size,
                    mtime_ns: stat.mtime_ns,
                    mode: stat.mode,
                    version: None,
                },
            },
        )
    }

    fn open(&self, path: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        let file = self
            .at("read", path)?
            .open_read()
            .map_err(|e| ReplicaError::io("read", path, e))?;
        Ok(Box::new(file))
    }

    /// Continues only the version listed: the open file's size and mtime
    /// must still be `expected`'s (the same check a write makes), else
    /// another version is there and its bytes must not be spliced onto
    /// the ones that already arrived.
    fn open_at(
        &self,
        path: &RelPath,
        offset: u64,
        expected: &FileMeta,
    ) -> Result<super::Opened<'_>, ReplicaError> {
        let mut file = self
            .at("read", path)?
            .open_read()
            .map_err(|e| ReplicaError::io("read", path, e))?;
        let stat = file
            .metadata()
            .map(|meta| fsops::stat_of(&meta))
            .map_err(|e| ReplicaError::io("read", path, e))?;
        if stat.kind != StatKind::File
            || stat.size != expected.size
            || stat.mtime_ns != expected.mtime_ns
        {
            return Err(ReplicaError::SourceChanged {
                path: path.to_string(),
            });
        }
        file.seek(io::SeekFrom::Start(offset))
            .map_err(|e| ReplicaError::io("read", path, e))?;
        Ok((Box::new(file), offset))
    }

    fn stage(
        &self,
        path: &RelPath,
        content: &mut dyn Read,
        hash: &ContentHash,
        mtime_ns: i64,
        mode: Option<Mode>,
    ) -> Result<StagedWrite, ReplicaError> {
        let (file, temp) = self.in_folder(path, || {
            let temp = At::resolve(&self.root, path)?.sibling(&temp_name_for(path.file_name()))?;
            let file = temp.create_new(mode)?;
            Ok((file, fsops::Staged::new_temp(temp.path().to_path_buf())))
        })?;
        let mut staged = fsops::fill(file, temp, content, Some(mtime_ns))
            .map_err(|e| ReplicaError::io("write", path, e))?;
        if staged.hash != *hash {
            return Err(ReplicaError::SourceChanged {
                path: path.to_string(),
            });
        }
        let written = staged.stat.take();
        let (temp, hash, size) = staged.into_parts();
        Ok(StagedWrite {
            path: path.clone(),
            temp,
            hash,
            size,
            written,
            _lock: None,
        })
    }

    fn stage_from(
        &self,
        path: &RelPath,
        source: &Source<'_>,
        mtime_ns: i64,
        mode: Option<Mode>,
    ) -> Result<StagedWrite, ReplicaError> {
        // Only the local side keeps partial downloads (and locks each one
        // while it continues it, see `stage_partial`).
        // A remote folder may be written by several agents at once, which
        // must not append to one file.
        if self.side != Side::Local {
            let (mut reader, _) = source.reader(0)?;
            return self.stage(path, &mut reader, &source.meta.hash, mtime_ns, mode);
        }
        let partial_name = partial_name_for(path.file_name(), &source.meta.hash.to_hex());
        let partial = path.to_fs(&self.root).with_file_name(&partial_name);
        // A partial is opened again by later attempts, so its owner must be
        // able to read and write it; its group and others get no more than
        // the file will have. Opening it also narrows a partial an earlier
        // attempt left with a wider mode (its bytes are this version's,
        // whose mode may have narrowed since) before another byte goes in.
        let partial_mode = mode.map(|m| Mode::from_bits(m.bits() | 0o600));
        let file = self.in_folder(path, || {
            At::resolve(&self.root, path)?
                .sibling(&partial_name)?
                .open_or_create(partial_mode)
        })?;
        let Some((temp, size, lock)) = stage_partial(file, &partial, source, mtime_ns, mode)?
        else {
            // Another process is continuing this very partial (a second
            // agent pointed at the same folder): fetch into a temporary of
            // our own instead of writing into theirs.
            let (mut reader, _) = source.reader(0)?;
            return self.stage(path, &mut reader, &source.meta.hash, mtime_ns, mode);
        };
        let written = lock.metadata().ok().map(|meta| fsops::stat_of(&meta));
        Ok(StagedWrite {
            path: path.clone(),
            temp,
            hash: source.meta.hash,
            size,
            written,
            _lock: Some(lock),
        })
    }

    fn sync_staged(&self, staged: &[&StagedWrite]) -> Result<(), ReplicaError> {
        let temps: Vec<&Path> = staged.iter().map(|s| s.temp.as_path()).collect();
        let mut pending = self.flushing.locked();
        // A folder that could not be flushed is reported by the next
        // `flush`, before the journal records anything; it does not keep
        // these files, which are on disk, from being renamed in.
        match self
            .flush_with_folders(&mut pending, &temps)
            .into_iter()
            .next()
        {
            None => Ok(()),
            Some((index, e)) => Err(ReplicaError::io("flush", &staged[index].path, e)),
        }
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
        let hash = staged.hash;
        let guard = fsops::Staged::from_parts(
            staged.temp.clone(),
            staged.hash,
            staged.size,
            staged.written.clone(),
        );
        let target = self.at("replace", path)?;
        let committed = fsops::commit_at(guard, &target, expect, &self.trash, path)
            .map_err(|e| match e {
                fsops::CommitError::Changed { .. } => ReplicaError::Changed {
                    path: path.to_string(),
                },
                fsops::CommitError::Io(e) => ReplicaError::io("replace", path, e),
            })
            .map_err(super::gone_meanwhile(path))?;
        self.touched(target.path());
        if let Some(trashed) = &committed.trashed {
            self.touched(trashed);
        }
        let trash_name = committed
            .trashed
            .as_deref()
            .and_then(|t| self.trash.name_of(t));
        Ok((side_entry(&committed.stat, Some(hash)), trash_name))
    }

    fn discard(&self, staged: StagedWrite) {
        drop(fsops::Staged::from_parts(
            staged.temp,
            staged.hash,
            staged.size,
            None,
        ));
    }

    fn mkdir(&self, path: &RelPath, mode: Option<Mode>) -> Result<SideEntry, ReplicaError> {
        // A parent that is gone was moved or deleted since the scan: the
        // plan is stale there and the path is planned again, not failed.
        let failed = |e: io::Error| match e.kind() {
            io::ErrorKind::NotFound => ReplicaError::Changed {
                path: path.to_string(),
            },
            _ => ReplicaError::io("create folder", path, e),
        };
        let at = At::resolve(&self.root, path).map_err(failed)?;
        match at.mkdir(mode) {
            Ok(()) => self.touched(at.path()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed(e)),
        }
        match at.stat() {
            Ok(Some(stat)) if stat.kind == StatKind::Dir => Ok(side_entry(&stat, None)),
            Ok(_) => Err(ReplicaError::Changed {
                path: path.to_string(),
            }),
            Err(e) => Err(ReplicaError::io("create folder", path, e)),
        }
    }

    fn set_mode(&self, path: &RelPath, expected: &Entry, mode: Mode) -> Result<(), ReplicaError> {
        let changed = || ReplicaError::Changed {
            path: path.to_string(),
        };
        let current = expected.mode().ok_or_else(changed)?;
        let at = self.at("change the permissions of", path)?;
        at.set_mode(mode, &Expect::of(Some(expected)), current)
            .map_err(|e| {
                if fsops::is_mode_changed(&e) || e.kind() == io::ErrorKind::NotFound {
                    changed()
                } else {
                    ReplicaError::io("change the permissions of", path, e)
                }
            })
    }

    fn rename(&self, from: &RelPath, to: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        let source = self.check(from, expect)?;
        let dest = self.at("rename", to)?;
        source.rename_noreplace(&dest).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                ReplicaError::Changed {
                    path: to.to_string(),
                }
            } else {
                ReplicaError::io("rename", from, e)
            }
        })?;
        self.touched(dest.path());
        self.touched(source.path());
        Ok(())
    }

    fn remove(&self, path: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        self.remove_naming_trash(path, expect).map(|_| ())
    }

    fn remove_naming_trash(
        &self,
        path: &RelPath,
        expect: &Expect,
    ) -> Result<Option<RelPath>, ReplicaError> {
        let at = self.check(path, expect)?;
        if *expect == Expect::Dir {
            // A plan removes a folder only after everything in it went to
            // the trash one by one, each checked against what the plan saw.
            // A folder that is not empty now holds something the plan did
            // not see (a file saved during the sync, a delete that was
            // refused as changed): keep it and re-plan.
            let mut removed = at.rmdir();
            if matches!(&removed, Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty)
                && remove_partials_in(&at)
            {
                // Partial downloads are copies of remote bytes kept only to
                // continue a transfer, never the user's: they must not keep
                // a folder deleted on the other side alive until swept.
                removed = at.rmdir();
            }
            return match removed {
                Ok(()) => {
                    self.touched(at.path());
                    Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                    Err(ReplicaError::Changed {
                        path: path.to_string(),
                    })
                }
                Err(e) => Err(ReplicaError::io("delete the folder", path, e)),
            };
        }
        let trashed = self
            .trash
            .put_at(&at, path)
            .map_err(|e| ReplicaError::io("move to the trash", path, e))
            .map_err(super::gone_meanwhile(path))?;
        self.touched(at.path());
        self.touched(&trashed);
        Ok(self.trash.name_of(&trashed))
    }

    fn open_trashed(&self, name: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        // Reached below the trash's root without following a link, as
        // every other path of this replica.
        let file = At::resolve(self.trash.root(), name)
            .and_then(|at| at.open_read())
            .map_err(|e| ReplicaError::io("read the trashed version", name, e))?;
        Ok(Box::new(file))
    }

    fn flush(&self) -> Result<(), ReplicaError> {
        let mut pending = self.flushing.locked();
        self.flush_with_folders(&mut pending, &[]);
        match pending.take() {
            None => Ok(()),
            Some((folder, e)) => Err(ReplicaError::io("flush", folder.display(), e)),
        }
    }

    fn purge_trash(&self, older_than: Duration) -> Result<usize, ReplicaError> {
        self.trash
            .purge_older_than(older_than, self.clock.now())
            .map_err(|e| ReplicaError::io("purge", self.trash.root().display(), e))
    }

    fn lease(&self, device: &str, ttl: Duration) -> Result<Option<Box<dyn Lease>>, ReplicaError> {
        if self.side == Side::Local {
            return Ok(None);
        }
        let dir = self.root.join(METADATA_DIR);
        fs::create_dir_all(&dir).map_err(|e| ReplicaError::io("create", dir.display(), e))?;
        let lease = FileLease {
            path: dir.join("lease"),
            owner: lease::owner(device),
            ttl,
            clock: self.clock,
        };
        lease.acquire()?;
        Ok(Some(Box::new(lease)))
    }

    fn read_record(&self, name: &str) -> Result<Option<String>, ReplicaError> {
        if self.side == Side::Local {
            return Ok(None);
        }
        let path = self.root.join(METADATA_DIR).join(name);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ReplicaError::io("read", path.display(), e)),
        }
    }

    /// Written to a temporary name, flushed, and renamed over the old
    /// record, which a reader sees in one step.
    fn write_record(&self, name: &str, content: &str) -> Result<(), ReplicaError> {
        if self.side == Side::Local {
            return Ok(());
        }
        let path = self.root.join(METADATA_DIR).join(name);
        let write = || -> io::Result<()> {
            fs::create_dir_all(path.parent().unwrap_or(&self.root))?;
            let temp = fsops::temp_path_for(&path);
            let written = fs::File::create(&temp)
                .and_then(|mut file| {
                    file.write_all(content.as_bytes())?;
                    file.sync_all()
                })
                .and_then(|()| fs::rename(&temp, &path));
            if written.is_err() {
                let _ = fs::remove_file(&temp);
            }
            written?;
            fsops::sync_parent(&path)
        };
        write().map_err(|e| ReplicaError::io("write", path.display(), e))
    }

    fn list_records(&self, folder: &str) -> Result<Vec<String>, ReplicaError> {
        if self.side == Side::Local {
            return Ok(Vec::new());
        }
        let dir = self.root.join(METADATA_DIR).join(folder);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ReplicaError::io("list", dir.display(), e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ReplicaError::io("list", dir.display(), e))?;
            if let Some(name) = entry.file_name().to_str()
                && super::is_record_name(name)
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn remove_record(&self, name: &str) -> Result<(), ReplicaError> {
        if self.side == Side::Local {
            return Ok(());
        }
        let path = self.root.join(METADATA_DIR).join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ReplicaError::io("remove", path.display(), e)),
        }
    }
}

/// The advisory lease of a remote folder: a file created exclusively,
/// holding its owner and expiry. An expired lease (its holder crashed) is
/// taken over.
struct FileLease {
    path: PathBuf,
    owner: lease::Owner,
    ttl: Duration,
    clock: Clock,
}

impl FileLease {
    fn content(&self) -> String {
        lease::record(&self.owner, self.ttl, self.clock.now())
    }

    /// Creates the lease file with its content in one step: written to a
    /// temporary file and hard-linked to the lease's name, which fails if
    /// the name is taken. Another agent never sees it empty (an empty
    /// record reads as stale and would be taken over). Where the file
    /// system has no hard links, an exclusive create and a write.
    fn create(&self) -> io::Result<()> {
        let temp = fsops::temp_path_for(&self.path);
        // Not flushed: a lease matters only while its holder runs. After
        // a crash it reads as stale (expired, or its process gone),
        // whatever the disk kept of it.
        fs::write(&temp, self.content())?;
        let linked = fs::hard_link(&temp, &self.path);
        let _ = fs::remove_file(&temp);
        match linked {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&self.path)?
                .write_all(self.content().as_bytes()),
            linked => linked,
        }
    }

    fn acquire(&self) -> Result<(), ReplicaError> {
        lease::acquire(self, self.clock.now())
    }
}

impl lease::LeaseFile for FileLease {
    fn create(&self) -> Result<bool, ReplicaError> {
        match FileLease::create(self) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(ReplicaError::io("lock", self.path.display(), e)),
        }
    }

    fn read(&self) -> Result<Option<(String, Option<String>)>, ReplicaError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => Ok(Some((text, None))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            // Unreadable: an empty record, which reads as stale.
            Err(_) => Ok(Some((String::new(), None))),
        }
    }

    fn remove(&self, _version: Option<&str>) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Lease for FileLease {
    fn renew(&mut self) -> Result<(), ReplicaError> {
        let current = fs::read_to_string(&self.path).unwrap_or_default();
        if !lease::held_by(&current, &self.owner) {
            return Err(lease::taken_over());
        }
        let temp = fsops::temp_path_for(&self.path);
        fs::write(&temp, self.content())
            .and_then(|()| fs::rename(&temp, &self.path))
            .map_err(|e| ReplicaError::io("renew", self.path.display(), e))
    }
}

impl Drop for FileLease {
    fn drop(&mut self) {
        let current = fs::read_to_string(&self.path).unwrap_or_default();
        if lease::held_by(&current, &self.owner) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::layout::temp_name_for;
    use std::cell::Cell;

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// Every file and folder below `dir`, links as links.
    fn everything_below(dir: &Path) -> BTreeSet<PathBuf> {
        let mut found = BTreeSet::new();
        let mut folders = vec![dir.to_path_buf()];
        while let Some(folder) = folders.pop() {
            for entry in fs::read_dir(folder).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_dir() {
                    folders.push(entry.path());
                }
                found.insert(entry.path());
            }
        }
        found
    }

    #[test]
    fn learning_whether_case_is_folded_writes_nothing_where_a_name_tells() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("Notes.txt"), b"x").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let before = fs::metadata(dir.path()).unwrap();
        let folder = LocalFolder::remote(dir.path().to_path_buf());
        // This machine's test folders fold no case.
        assert!(!folder.probe_case_insensitive());
        let after = fs::metadata(dir.path()).unwrap();
        assert_eq!(
            (before.mtime(), before.mtime_nsec()),
            (after.mtime(), after.mtime_nsec()),
            "nothing was written into the folder"
        );
        // Both spellings present: two files, so case is not folded.
        fs::write(dir.path().join("notes.txt"), b"y").unwrap();
        assert_eq!(folder.case_insensitive_by_a_name(), Some(false));
        // An empty folder says nothing by its names.
        let empty = tempfile::tempdir().unwrap();
        let empty = LocalFolder::remote(empty.path().to_path_buf());
        assert_eq!(empty.case_insensitive_by_a_name(), None);
        assert!(!empty.probe_case_insensitive());
    }

    #[test]
    fn no_operation_follows_a_symbolic_link_out_of_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir_all(outside.join("deeper")).unwrap();
        fs::write(outside.join("x.txt"), "outside").unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("real")).unwrap();
        fs::write(root.join("a.txt"), "inside").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("real/link")).unwrap();
        std::os::unix::fs::symlink(outside.join("x.txt"), root.join("file-link")).unwrap();
        let before = everything_below(&outside);
        let x = fs::metadata(outside.join("x.txt")).unwrap();
        let x_expect = Expect::File {
            size: x.len(),
            mtime_ns: crate::timefmt::to_unix_ns(x.modified().unwrap()),
            mode: fsops::mode_of(&x),
            version: None,
        };
        let hash = ContentHash::of_bytes(b"new");

        for side in [
            LocalFolder::remote(root.clone()),
            LocalFolder::local(root.clone(), dir.path().join("trash")),
        ] {
            for through in ["link", "real/link", "link/deeper"] {
                let below = |name: &str| rel(&format!("{through}/{name}"));
                let refused = |result: Result<(), ReplicaError>| {
                    let error = result.expect_err("refused").to_string();
                    assert!(error.contains("symbolic link"), "{error}");
                };
                refused(
                    side.stage(&below("new.txt"), &mut &b"new"[..], &hash, 0, None)
                        .map(drop),
                );
                refused(side.mkdir(&below("sub"), None).map(drop));
                refused(side.open(&below("x.txt")).map(drop));
                refused(side.stat(&below("x.txt")).map(drop));
                refused(side.rename(
                    &rel("a.txt"),
                    &below("a.txt"),
                    &Expect::File {
                        size: 6,
                        mtime_ns: fsops::stat(&root.join("a.txt")).unwrap().unwrap().mtime_ns,
                        mode: fsops::stat(&root.join("a.txt")).unwrap().unwrap().mode,
                        version: None,
                    },
                ));
                refused(side.rename(&below("x.txt"), &rel("b.txt"), &x_expect));
                refused(side.remove(&below("x.txt"), &x_expect));
                refused(side.remove(&below("deeper"), &Expect::Dir));
                let source_remote = LocalFolder::remote(dir.path().join("source"));
                fs::create_dir_all(dir.path().join("source")).unwrap();
                write_source(&dir.path().join("source/new.txt"), b"new");
                let path = rel("new.txt");
                let source = Source::new(&source_remote, &path, meta_of(b"new"), &|_| {});
                refused(
                    side.stage_from(&below("new.txt"), &source, 0, None)
                        .map(drop),
                );
            }
            // The link itself is not what any plan expects, and is not
            // opened.
            let error = side.open(&rel("file-link")).map(drop).unwrap_err();
            assert!(error.to_string().contains("symbolic link"), "{error}");
            assert!(
                side.remove(&rel("file-link"), &x_expect)
                    .unwrap_err()
                    .is_change()
            );
            assert_eq!(
                everything_below(&outside),
                before,
                "nothing changed outside"
            );
            assert_eq!(fs::read_to_string(root.join("a.txt")).unwrap(), "inside");
        }
        assert!(!root.join("b.txt").exists());
        // A listing holds the links, with a problem saying why.
        let ignore = IgnoreRules::load(&root, &[]).unwrap();
        let listing = LocalFolder::remote(root.clone())
            .list(&Scope::Full, &BaseTree::new(), &ignore)
            .unwrap();
        let mut held = listing.held.clone();
        held.sort();
        assert_eq!(held, [rel("file-link"), rel("link"), rel("real/link")]);
    }

    #[test]
    fn stat_says_what_a_path_holds_now_as_the_steps_on_it_check_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("d/f.txt"), "abc").unwrap();
        std::os::unix::fs::symlink(root.join("d/f.txt"), root.join("link")).unwrap();
        let local = LocalFolder::local(root.clone(), dir.path().join("trash"));

        assert_eq!(local.stat(&rel("missing")).unwrap(), Expect::Absent);
        assert_eq!(local.stat(&rel("gone/below")).unwrap(), Expect::Absent);
        assert_eq!(local.stat(&rel("d")).unwrap(), Expect::Dir);
        let found = fsops::stat(&root.join("d/f.txt")).unwrap().unwrap();
        let file = local.stat(&rel("d/f.txt")).unwrap();
        assert_eq!(
            file,
            Expect::File {
                size: 3,
                mtime_ns: found.mtime_ns,
                mode: found.mode,
                version: None,
            }
        );
        // Below a file there is nothing to describe: an error, not absence.
        local.stat(&rel("d/f.txt/x")).unwrap_err();
        // A link is described as a file that no step acts on.
        let link = local.stat(&rel("link")).unwrap();
        assert!(matches!(link, Expect::File { .. }), "{link:?}");
        assert!(local.remove(&rel("link"), &link).unwrap_err().is_change());
        assert!(fs::symlink_metadata(root.join("link")).is_ok());
        // What it says is what a step on the path checks against.
        local
            .rename(&rel("d/f.txt"), &rel("d/g.txt"), &file)
            .unwrap();
        let moved = local.stat(&rel("d/g.txt")).unwrap();
        assert_eq!(moved, file);
        local.remove(&rel("d/g.txt"), &moved).unwrap();
        assert_eq!(local.stat(&rel("d/g.txt")).unwrap(), Expect::Absent);
    }

    #[test]
    fn a_remote_whose_metadata_folder_is_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), root.join(METADATA_DIR)).unwrap();
        let error = LocalFolder::remote(root).root_state().unwrap_err();
        assert!(error.to_string().contains("is a symbolic link"), "{error}");
    }

    #[test]
    fn a_lease_is_exclusive_until_dropped_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let remote = LocalFolder::remote(dir.path().to_path_buf());
        let held = remote.lease("laptop", Duration::from_secs(60)).unwrap();
        let err = remote
            .lease("desktop", Duration::from_secs(60))
            .err()
            .unwrap();
        assert!(err.to_string().contains("laptop"), "{err}");
        drop(held);
        let expired = remote.lease("desktop", Duration::ZERO).unwrap();
        std::mem::forget(expired);
        // The holder "crashed" with an expired lease: it is taken over.
        remote.lease("laptop", Duration::from_secs(60)).unwrap();
    }

    #[test]
    fn a_folder_whose_parent_went_away_is_a_change_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        for side in [
            LocalFolder::remote(dir.path().join("remote")),
            LocalFolder::local(dir.path().join("local"), dir.path().join("trash")),
        ] {
            fs::create_dir_all(side.root()).unwrap();
            let error = side.mkdir(&rel("moved-away/sub"), None).unwrap_err();
            assert!(error.is_change(), "{error}");
        }
    }

    #[test]
    fn a_lease_is_never_seen_without_its_record() {
        // An empty lease file reads as stale and is taken over: a lease
        // must appear with its content, never be created and then filled.
        let dir = tempfile::tempdir().unwrap();
        let remote = LocalFolder::remote(dir.path().to_path_buf());
        drop(remote.lease("laptop", Duration::from_secs(60)).unwrap());
        let path = dir.path().join(METADATA_DIR).join("lease");
        let done = std::sync::atomic::AtomicBool::new(false);
        let empty_seen = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                let mut empty = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    if fs::read_to_string(&path).is_ok_and(|text| text.is_empty()) {
                        empty += 1;
                    }
                }
                empty
            });
            for _ in 0..3000 {
                drop(remote.lease("laptop", Duration::from_secs(60)).unwrap());
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            watcher.join().unwrap()
        });
        assert_eq!(empty_seen, 0, "a reader saw an empty lease");
    }

    #[test]
    fn a_remote_folder_keeps_records_in_its_metadata_folder_and_the_local_side_keeps_none() {
        let dir = tempfile::tempdir().unwrap();
        let remote = LocalFolder::remote(dir.path().to_path_buf());
        assert_eq!(remote.read_record("journals/ab").unwrap(), None);
        remote.write_record("journals/ab", "7 laptop\n").unwrap();
        remote.write_record("journals/ab", "12 laptop\n").unwrap();
        assert_eq!(
            remote.read_record("journals/ab").unwrap().as_deref(),
            Some("12 laptop\n")
        );
        let folder = dir.path().join(METADATA_DIR).join("journals");
        let names: Vec<_> = fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ab"], "no temporary file is left behind");

        let local_dir = tempfile::tempdir().unwrap();
        let local = LocalFolder::local(local_dir.path().to_path_buf(), dir.path().join("trash"));
        local.write_record("journals/ab", "7 laptop\n").unwrap();
        assert_eq!(local.read_record("journals/ab").unwrap(), None);
        assert_eq!(fs::read_dir(local_dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn staging_flushes_touched_folders_and_a_folder_that_failed_is_reported_until_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let remote = LocalFolder::remote(dir.path().to_path_buf());
        let hash = ContentHash::of_bytes(b"one");
        let staged = remote
            .stage(
                &rel("a/one.txt"),
                &mut &b"one"[..],
                &hash,
                1_000_000_000,
                None,
            )
            .unwrap();
        // The folder was made for the file (none was planned): it is
        // touched, and flushed with the staged file.
        let folder = dir.path().to_path_buf();
        assert!(remote.dirty.locked().contains(&folder));
        remote.sync_staged(&[&staged]).unwrap();
        assert!(remote.dirty.locked().is_empty());
        remote.commit_staged(&staged, &Expect::Absent).unwrap();
        assert!(remote.dirty.locked().contains(&dir.path().join("a")));
        remote.flush().unwrap();

        // A folder that cannot be flushed (here: a name too long to open)
        // does not fail the staged files flushed with it; the next flush
        // reports it, once: a second fsync after a failed one would
        // succeed without proving anything.
        let bad = dir.path().join("x".repeat(300));
        remote.dirty.locked().insert(bad.clone());
        let staged = remote
            .stage(
                &rel("two.txt"),
                &mut &b"one"[..],
                &hash,
                1_000_000_000,
                None,
            )
            .unwrap();
        remote.sync_staged(&[&staged]).unwrap();
        let error = remote.flush().unwrap_err().to_string();
        assert!(error.contains("xxxxx"), "{error}");
        remote.flush().unwrap();
    }

    #[test]
    fn stale_temporary_files_are_swept_by_a_listing() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join(temp_name_for("page.md"));
        fs::write(&temp, "half").unwrap();
        let hour = Duration::from_secs(3600);
        sweep_stale_temp_files(std::slice::from_ref(&temp), hour, hour);
        assert!(
            temp.exists(),
            "a fresh temporary may belong to a live write"
        );
        sweep_stale_temp_files(std::slice::from_ref(&temp), Duration::ZERO, hour);
        assert!(!temp.exists());
    }

    #[test]
    fn a_remote_listing_reuses_hashes_by_version_and_a_write_replaces_via_the_trash() {
        let dir = tempfile::tempdir().unwrap();
        let remote = LocalFolder::remote(dir.path().to_path_buf());
        remote.mark_root().unwrap();
        let ignore = IgnoreRules::load(dir.path(), &[]).unwrap();
        let hash = ContentHash::of_bytes(b"v1");
        let written = remote
            .write(
                &rel("a.txt"),
                &mut &b"v1"[..],
                &hash,
                1_000_000_000,
                None,
                &Expect::Absent,
            )
            .unwrap();
        let mut base = BaseTree::new();
        let mut entry = BaseEntry::new(written.entry);
        entry.remote_id = written.id.clone();
        entry.remote_version = written.version.clone();
        base.insert(rel("a.txt"), entry);
        let listing = remote.list(&Scope::Full, &base, &ignore).unwrap();
        assert_eq!(
            listing.hashed_files, 0,
            "an unchanged file is not read again"
        );
        assert_eq!(listing.tree[&rel("a.txt")].entry.file().unwrap().hash, hash);

        let v2 = ContentHash::of_bytes(b"v2");
        let expect = Expect::File {
            size: 2,
            mtime_ns: 1_000_000_000,
            mode: None,
            version: None,
        };
        remote
            .write(
                &rel("a.txt"),
                &mut &b"v2"[..],
                &v2,
                2_000_000_000,
                None,
                &expect,
            )
            .unwrap();
        assert_eq!(fs::read(dir.path().join("a.txt")).unwrap(), b"v2");
        let trash = dir.path().join(METADATA_DIR).join("trash");
        let kept = crate::fsops::tests::walk(&trash);
        assert_eq!(kept.len(), 1);
        assert_eq!(fs::read(&kept[0]).unwrap(), b"v1");
        // A stale expectation is refused and changes nothing.
        let err = remote
            .write(
                &rel("a.txt"),
                &mut &b"v3"[..],
                &ContentHash::of_bytes(b"v3"),
                0,
                None,
                &expect,
            )
            .unwrap_err();
        assert!(err.is_change(), "{err}");
        assert_eq!(fs::read(dir.path().join("a.txt")).unwrap(), b"v2");
    }

    /// Varied bytes, so a prefix of one version is not one of another.
    fn content(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u64 * 31 + seed as u64 * 7 + (i as u64 >> 9)) as u8)
            .collect()
    }

    fn meta_of(bytes: &[u8]) -> FileMeta {
        FileMeta {
            hash: ContentHash::of_bytes(bytes),
            size: bytes.len() as u64,
            mtime_ns: 1_000_000_000,
            mode: None,
        }
    }

    /// Writes a file to copy from, as [`meta_of`] describes it (its mtime
    /// too: a read continues only the version listed).
    fn write_source(path: &Path, bytes: &[u8]) {
        fs::write(path, bytes).unwrap();
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(UNIX_EPOCH + Duration::from_secs(1))
            .unwrap();
    }

    /// A local side and a remote folder holding `big.bin` = `bytes`.
    fn download_pair(bytes: &[u8]) -> (tempfile::TempDir, LocalFolder, LocalFolder) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("local")).unwrap();
        fs::create_dir_all(dir.path().join("remote")).unwrap();
        write_source(&dir.path().join("remote/big.bin"), bytes);
        let local = LocalFolder::local(dir.path().join("local"), dir.path().join("trash"));
        let remote = LocalFolder::remote(dir.path().join("remote"));
        (dir, local, remote)
    }

    fn partial_of(dir: &Path, bytes: &[u8]) -> PathBuf {
        let name = partial_name_for("big.bin", &ContentHash::of_bytes(bytes).to_hex());
        dir.join("local").join(name)
    }

    /// Stages and commits `big.bin` from `source` onto `local`.
    fn download(local: &LocalFolder, source: &Source<'_>) -> Result<(), ReplicaError> {
        let staged = local.stage_from(&rel("big.bin"), source, source.meta.mtime_ns, None)?;
        local.commit_staged(&staged, &Expect::Absent)?;
        Ok(())
    }

    #[test]
    fn a_download_continues_the_partial_an_earlier_attempt_left() {
        let v1 = content(1 << 20, 1);
        let (dir, local, remote) = download_pair(&v1);
        let partial = partial_of(dir.path(), &v1);
        fs::write(&partial, &v1[..300_000]).unwrap();
        let progress = Cell::new(0);
        let at = |done| progress.set(done);
        let path = rel("big.bin");
        let source = Source::new(&remote, &path, meta_of(&v1), &at);
        download(&local, &source).unwrap();
        assert!(fs::read(dir.path().join("local/big.bin")).unwrap() == v1);
        assert_eq!(
            source.fetched(),
            v1.len() as u64 - 300_000,
            "only the rest was read"
        );
        assert_eq!(progress.get(), v1.len() as u64);
        assert!(!partial.exists());
    }

    #[test]
    fn a_continued_partial_is_narrowed_to_the_mode_before_it_grows() {
        use std::os::unix::fs::PermissionsExt;
        let v1 = content(1 << 20, 1);
        let (dir, local, remote) = download_pair(&v1);
        let partial = partial_of(dir.path(), &v1);
        fs::write(&partial, &v1[..300_000]).unwrap();
        fs::set_permissions(&partial, fs::Permissions::from_mode(0o644)).unwrap();
        let path = rel("big.bin");
        let source = Source::new(&remote, &path, meta_of(&v1), &|_| {});
        let private = Some(Mode::from_bits(0o600));
        let staged = local
            .stage_from(&path, &source, source.meta.mtime_ns, private)
            .unwrap();
        assert_eq!(source.fetched(), v1.len() as u64 - 300_000, "continued");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&staged.temp), 0o600);
        local.commit_staged(&staged, &Expect::Absent).unwrap();
        assert_eq!(mode(&dir.path().join("local/big.bin")), 0o600);

        // A version whose owner may only read it is still written whole,
        // and ends read-only.
        let v2 = content(1 << 16, 2);
        write_source(&dir.path().join("remote/ro.bin"), &v2);
        let path = rel("ro.bin");
        let source = Source::new(&remote, &path, meta_of(&v2), &|_| {});
        let staged = local
            .stage_from(&path, &source, 0, Some(Mode::from_bits(0o400)))
            .unwrap();
        local.commit_staged(&staged, &Expect::Absent).unwrap();
        assert_eq!(mode(&dir.path().join("local/ro.bin")), 0o400);
        assert!(fs::read(dir.path().join("local/ro.bin")).unwrap() == v2);
    }

    #[test]
    fn a_partial_another_process_is_continuing_is_left_alone() {
        // A second agent on the same folder holds the partial (and its
        // lock) while it downloads: writing into it, or truncating it,
        // would corrupt that agent's file. This download uses a temporary
        // of its own and leaves the partial exactly as it was.
        let v1 = content(1 << 20, 1);
        let (dir, local, remote) = download_pair(&v1);
        let partial = partial_of(dir.path(), &v1);
        fs::write(&partial, &v1[..300_000]).unwrap();
        let theirs = fs::File::open(&partial).unwrap();
        assert!(crate::fsops::try_lock_exclusive(&theirs).unwrap());

        let path = rel("big.bin");
        let source = Source::new(&remote, &path, meta_of(&v1), &|_| {});
        download(&local, &source).unwrap();
        assert!(fs::read(dir.path().join("local/big.bin")).unwrap() == v1);
        assert_eq!(source.fetched(), v1.len() as u64, "fetched whole");
        assert_eq!(fs::read(&partial).unwrap(), &v1[..300_000]);

        // Once they let go, a later download may continue it again.
        drop(theirs);
        fs::remove_file(dir.path().join("local/big.bin")).unwrap();
        let source = Source::new(&remote, &path, meta_of(&v1), &|_| {});
        download(&local, &source).unwrap();
        assert_eq!(source.fetched(), v1.len() as u64 - 300_000);
        assert!(!partial.exists());
    }

    #[test]
    fn a_partial_that_does_not_verify_is_discarded_and_the_file_fetched_whole() {
        // The partial under v2's name holds bytes of v1: an attempt read
        // the file while it was being replaced. Continuing it would splice
        // two versions; the whole-file hash refuses that, and the file is
        // fetched again from its first byte.
        let v1 = content(1 << 20, 1);
        let v2 = content(1 << 20, 2);
        let (dir, local, remote) = download_pair(&v2);
        let partial = partial_of(dir.path(), &v2);
        fs::write(&partial, &v1[..400_000]).unwrap();
        let path = rel("big.bin");
        let progress = Cell::new(0);
        let most = Cell::new(0);
        let at = |done| {
            progress.set(done);
            most.set(most.get().max(done));
        };
        let source = Source::new(&remote, &path, meta_of(&v2), &at);
        download(&local, &source).unwrap();
        assert!(fs::read(dir.path().join("local/big.bin")).unwrap() == v2);
        // Starting over sets the progress back: it never passes the size.
        assert_eq!(
            (progress.get(), most.get()),
            (v2.len() as u64, v2.len() as u64)
        );
        assert_eq!(
            source.fetched(),
            (v2.len() - 400_000 + v2.len()) as u64,
            "the rest, then the whole file"
        );
        assert!(!partial.exists());
    }

    #[test]
    fn a_partial_of_another_version_is_never_continued_and_is_swept_when_stale() {
        let v1 = content(1 << 20, 1);
        let v2 = content(1 << 20, 2);
        let (dir, local, remote) = download_pair(&v2);
        let old = partial_of(dir.path(), &v1);
        fs::write(&old, &v1[..500_000]).unwrap();
        let path = rel("big.bin");
        let source = Source::new(&remote, &path, meta_of(&v2), &|_| {});
        download(&local, &source).unwrap();
        assert!(fs::read(dir.path().join("local/big.bin")).unwrap() == v2);
        assert_eq!(source.fetched(), v2.len() as u64, "read from the start");
        assert_eq!(fs::read(&old).unwrap(), &v1[..500_000], "left alone");

        // Never listed as a file; swept like any stale temporary.
        let ignore = IgnoreRules::load(&dir.path().join("local"), &[]).unwrap();
        let local = local.with_stale_temp_age(Duration::from_secs(3600));
        let listing = local.list(&Scope::Full, &BaseTree::new(), &ignore).unwrap();
        assert_eq!(listing.tree.keys().collect::<Vec<_>>(), [&rel("big.bin")]);
        assert!(old.exists(), "a fresh partial may be continued soon");
        let local = local.with_stale_temp_age(Duration::ZERO);
        local.list(&Scope::Full, &BaseTree::new(), &ignore).unwrap();
        assert!(!old.exists());
    }

    /// A real replica whose reads break with a connection error after
    /// `break_after` bytes, `breaks` times.
    struct Flaky {
        inner: LocalFolder,
        break_after: u64,
        breaks: Mutex<usize>,
        opened_at: Mutex<Vec<u64>>,
        /// Every offset past 0 is answered "another version".
        refuses_offsets: bool,
    }

    struct Breaking<'a> {
        inner: Box<dyn Read + Send + 'a>,
        left: Option<u64>,
    }

    impl Read for Breaking<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.left == Some(0) {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
            }
            let max = self.left.map_or(buf.len(), |l| buf.len().min(l as usize));
            let n = self.inner.read(&mut buf[..max])?;
            if let Some(left) = &mut self.left {
                *left -= n as u64;
            }
            Ok(n)
        }
    }

    impl Replica for Flaky {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn root_state(&self) -> Result<RootState, ReplicaError> {
            self.inner.root_state()
        }
        fn mark_root(&self) -> Result<(), ReplicaError> {
            self.inner.mark_root()
        }
        fn list(&self, s: &Scope, c: &BaseTree, i: &IgnoreRules) -> Result<Listing, ReplicaError> {
            self.inner.list(s, c, i)
        }
        fn stat(&self, path: &RelPath) -> Result<Expect, ReplicaError> {
            self.inner.stat(path)
        }
        fn open(&self, path: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
            let mut breaks = self.breaks.locked();
            let left = (*breaks > 0).then_some(self.break_after);
            *breaks = breaks.saturating_sub(1);
            Ok(Box::new(Breaking {
                inner: self.inner.open(path)?,
                left,
            }))
        }
        fn open_at(
            &self,
            path: &RelPath,
            offset: u64,
            _: &FileMeta,
        ) -> Result<super::super::Opened<'_>, ReplicaError> {
            self.opened_at.locked().push(offset);
            if offset > 0 && self.refuses_offsets {
                return Err(ReplicaError::SourceChanged {
                    path: path.to_string(),
                });
            }
            let mut file = fs::File::open(path.to_fs(self.inner.root())).unwrap();
            file.seek(SeekFrom::Start(offset)).unwrap();
            let mut breaks = self.breaks.locked();
            let left = (*breaks > 0).then_some(self.break_after);
            *breaks = breaks.saturating_sub(1);
            Ok((
                Box::new(Breaking {
                    inner: Box::new(file),
                    left,
                }),
                offset,
            ))
        }
        fn stage(
            &self,
            p: &RelPath,
            c: &mut dyn Read,
            h: &ContentHash,
            m: i64,
            mode: Option<Mode>,
        ) -> Result<StagedWrite, ReplicaError> {
            self.inner.stage(p, c, h, m, mode)
        }
        fn commit_staged(&self, s: &StagedWrite, e: &Expect) -> Result<SideEntry, ReplicaError> {
            self.inner.commit_staged(s, e)
        }
        fn discard(&self, s: StagedWrite) {
            self.inner.discard(s)
        }
        fn mkdir(&self, p: &RelPath, m: Option<Mode>) -> Result<SideEntry, ReplicaError> {
            self.inner.mkdir(p, m)
        }
        fn rename(&self, f: &RelPath, t: &RelPath, e: &Expect) -> Result<(), ReplicaError> {
            self.inner.rename(f, t, e)
        }
        fn remove(&self, p: &RelPath, e: &Expect) -> Result<(), ReplicaError> {
            self.inner.remove(p, e)
        }
    }

    #[test]
    fn a_read_that_breaks_reconnects_at_its_offset_and_a_later_attempt_continues_the_partial() {
        let v1 = content(1 << 20, 3);
        let (dir, local, remote) = download_pair(&v1);
        let flaky = Flaky {
            inner: remote,
            break_after: 200_000,
            breaks: Mutex::new(1),
            opened_at: Mutex::new(Vec::new()),
            refuses_offsets: false,
        };
        let path = rel("big.bin");
        let pauses = [Duration::ZERO, Duration::ZERO];
        // One break: the reader reconnects and continues where it was.
        let source =
            Source::new(&flaky, &path, meta_of(&v1), &|_| {}).with_reconnect_pauses(&pauses);
        download(&local, &source).unwrap();
        assert!(fs::read(dir.path().join("local/big.bin")).unwrap() == v1);
        assert_eq!(source.fetched(), v1.len() as u64, "no byte was read twice");
        assert_eq!(*flaky.opened_at.locked(), [0, 200_000]);

        // More breaks than reconnects: the attempt fails as offline and
        // keeps what arrived; the next attempt continues from there.
        fs::remove_file(dir.path().join("local/big.bin")).unwrap();
        flaky.opened_at.locked().clear();
        *flaky.breaks.locked() = 3;
        let source =
            Source::new(&flaky, &path, meta_of(&v1), &|_| {}).with_reconnect_pauses(&pauses);
        let error = download(&local, &source).unwrap_err();
        assert!(error.is_offline(), "{error}");
        let partial = partial_of(dir.path(), &v1);
        assert_eq!(fs::metadata(&partial).unwrap().len(), 600_000);
        let source =
            Source::new(&flaky, &path, meta_of(&v1), &|_| {}).with_reconnect_pauses(&pauses);
        download(&local, &source).unwrap();
        assert!(fs::read(dir.path().join("local/big.bin")).unwrap() == v1);
        assert_eq!(source.fetched(), v1.len() as u64 - 600_000);
        assert_eq!(*flaky.opened_at.locked(), [0, 200_000, 400_000, 600_000]);
    }

    #[test]
    fn a_partial_the_source_cannot_continue_is_fetched_whole_once() {
        // The source answers "another version" for any offset (a backend
        // that judged the version by a hash it does not store): the
        // partial is dropped and the file fetched from the first byte,
        // instead of every attempt failing at the same offset.
        let v1 = content(1 << 20, 4);
        let (dir, local, remote) = download_pair(&v1);
        let partial = partial_of(dir.path(), &v1);
        fs::write(&partial, &v1[..300_000]).unwrap();
        let refusing = Flaky {
            inner: remote,
            break_after: 0,
            breaks: Mutex::new(0),
            opened_at: Mutex::new(Vec::new()),
            refuses_offsets: true,
        };
        let path = rel("big.bin");
        let source = Source::new(&refusing, &path, meta_of(&v1), &|_| {});
        download(&local, &source).unwrap();
        assert!(fs::read(dir.path().join("local/big.bin")).unwrap() == v1);
        assert_eq!(source.fetched(), v1.len() as u64);
        assert_eq!(*refusing.opened_at.locked(), [300_000, 0]);
        assert!(!partial.exists());
    }

    #[test]
    fn partial_downloads_do_not_keep_a_deleted_folder_alive() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalFolder::local(dir.path().join("root"), dir.path().join("trash"));
        fs::create_dir_all(dir.path().join("root/d")).unwrap();
        let partial = dir
            .path()
            .join("root/d")
            .join(partial_name_for("big.bin", &"ab".repeat(32)));
        fs::write(&partial, "half").unwrap();
        local.remove(&rel("d"), &Expect::Dir).unwrap();
        assert!(!dir.path().join("root/d").exists());
    }

    #[test]
    fn a_folder_that_is_not_empty_is_kept_and_reported_changed() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalFolder::local(dir.path().join("root"), dir.path().join("trash"));
        fs::create_dir_all(dir.path().join("root/d")).unwrap();
        // The plan removed the folder's files; one saved during the sync is
        // still there.
        fs::write(dir.path().join("root/d/a.txt"), "the user's edit").unwrap();
        let err = local.remove(&rel("d"), &Expect::Dir).unwrap_err();
        assert!(err.is_change(), "{err}");
        assert_eq!(
            fs::read_to_string(dir.path().join("root/d/a.txt")).unwrap(),
            "the user's edit"
        );
        fs::remove_file(dir.path().join("root/d/a.txt")).unwrap();
        local.remove(&rel("d"), &Expect::Dir).unwrap();
        assert!(!dir.path().join("root/d").exists());
    }
}
