//! One rclone remote as the rcd's calls: stat, list, move, upload,
//! delete, records, each failed call turned into the [`ReplicaError`] a
//! person can act on. The replica ([`super::replica`]) and its lease
//! ([`super::lease`]) are made of these.

use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::connection;
use super::daemon::{Rcd, RcdSpec};
use super::listing::{self, Item};
use super::looks::{self as batch_looks, Batch, Looks};
use super::rc::{ErrorKind, RcClient, RcError, Version};
use super::settings::RclonePairSettings;
use crate::fsops::Expect;
use crate::locks::LockExt;
use crate::model::{ContentHash, RelPath};
use crate::remote::claims::Sightings;
use crate::remote::{ReplicaError, StagedWrite, layout};
use crate::timefmt;
use crate::tracker::ignore::METADATA_DIR;

/// The largest record read (change logs are split into smaller segments).
const MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// How long another client's replacing move may leave its destination
/// empty (the removal and the rename of rclone's move on SFTP).
const RIVAL_MOVE_WINDOW: std::time::Duration = std::time::Duration::from_millis(250);

/// What the backend behind the remote offers (`operations/fsinfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// The hash type listings ask for: the backend's first, unless
    /// computing it means reading the file (`SlowHash`: the local
    /// backend), where the token is modification time and size instead.
    pub hash: Option<String>,
    /// Hashing a file means reading it whole (`SlowHash`: SFTP runs
    /// `md5sum` on the server, the local backend reads the file).
    pub slow_hash: bool,
    /// A file moves server-side, keeping its size, modification time,
    /// hash and ID (`Move`).
    pub moves: bool,
    /// A folder moves in one server-side step.
    pub dir_move: bool,
    /// Two entries may have one name (Google Drive).
    pub duplicates: bool,
    pub case_insensitive: bool,
    /// The backend lists a whole tree in one go (`ListR`), not folder by
    /// folder.
    pub list_r: bool,
    /// A file's modification time costs a request of its own
    /// (`SlowModTime`: S3 keeps it in the object's metadata), so a
    /// listing of the tree is taken without them.
    pub slow_mod_time: bool,
    /// A folder can be there with nothing in it (`CanHaveEmptyDirectories`).
    /// Where it cannot (S3: a folder is the common prefix of its files'
    /// names), a root with nothing in it is not there at all.
    pub empty_dirs: bool,
    /// A file is copied server-side (`Copy`): where the backend has no
    /// move, rclone's move is that copy and a removal.
    pub server_copy: bool,
    /// The rclone can be told to write an upload straight to its name
    /// (`Inplace`, from 1.63): it otherwise writes to `NAME.XXXX.partial`
    /// and renames that at the end on backends that can (local, SFTP,
    /// FTP, SMB), a request our staging names do not need.
    pub upload_in_place: bool,
}

/// The first rclone that writes an upload to a partial name of its own
/// first, and can be told not to.
const INPLACE_SINCE: (u64, u64) = (1, 63);

impl Features {
    fn of(info: &Value, version: &Version) -> Features {
        let features = &info["Features"];
        let flag = |name: &str| features[name].as_bool().unwrap_or(false);
        let hash = if flag("SlowHash") {
            None
        } else {
            info["Hashes"]
                .as_array()
                .and_then(|hashes| hashes.first())
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Features {
            hash,
            slow_hash: flag("SlowHash"),
            moves: flag("Move"),
            dir_move: flag("DirMove"),
            duplicates: flag("DuplicateFiles"),
            case_insensitive: flag("CaseInsensitive"),
            list_r: flag("ListR"),
            slow_mod_time: flag("SlowModTime"),
            empty_dirs: flag("CanHaveEmptyDirectories"),
            server_copy: flag("Copy"),
            upload_in_place: (version.major, version.minor) >= INPLACE_SINCE,
        }
    }
}

/// One rclone remote and the calls its steps are made of, shared by the
/// replica and its lease.
pub struct Remote {
    /// The remote as the rcd's calls name it, ending in ':' or '/':
    /// `NAME:PATH/`, where a connection string's `NAME` is the remote the
    /// rcd knows from its environment ([`connection`]).
    pub(super) remote: String,
    /// The remote's name as the user wrote it (`gdrive`, `:webdav`).
    name: String,
    /// `rclone:REMOTE`: never a secret (connection strings with one are
    /// refused by the config).
    pub(super) shown: String,
    settings: RclonePairSettings,
    pub(super) client: RcClient,
    /// The backend's features as the rcd of one start (its generation)
    /// gave them: another rclone version may tell them otherwise.
    pub(super) features: Mutex<Option<(u64, Features)>>,
    pub(super) parallel: usize,
    /// A folder on this machine where an upload's bytes wait (with their
    /// modification time) for rclone to copy them; see [`Remote::upload`].
    pub(super) spool: PathBuf,
    /// The tag of this remote's trash batches (see [`Remote::trash`]).
    trash_tag: String,
    /// The names this remote trashed into its tagged batch of the current
    /// minute (see [`Remote::trash`]).
    trashed: Mutex<TrashedNames>,
    /// What the batches being committed were checked against.
    pub(super) looks: Mutex<Looks>,
    /// What a walk of the tree costs (see [`Remote::walk_alone`]).
    walk: Mutex<WalkCosts>,
    /// When this agent first saw each lease claim: how it tells a stale
    /// one ([`crate::remote::claims`]).
    pub(super) claims_seen: Sightings,
    /// Called with the source's path between the copy and the re-check of
    /// a move made of those steps ([`Remote::move_rechecked`]): where a
    /// test writes the version another writer would.
    #[cfg(test)]
    pub(super) after_copy: Mutex<Option<AfterCopy>>,
}

/// See `Remote::after_copy`.
#[cfg(test)]
pub(super) type AfterCopy = Box<dyn Fn(&str) + Send + Sync>;

/// How many folders rclone lists at once by default (its `--checkers`),
/// each on a connection of its own.
const PARALLEL_LISTERS: u32 = 8;

/// What decides how a walk of the tree lists its folders.
#[derive(Default)]
struct WalkCosts {
    /// The folders of the tree as last synced (0: not known).
    folders: usize,
    /// How long the first call took, which logged in to the backend.
    login: Option<Duration>,
    /// The quickest small call to the backend so far (a stat, a record's
    /// read): one sample alone may be slow on a busy machine.
    round_trip: Option<Duration>,
}

/// The trash batch a remote trashes into in the current minute, and the
/// names it took there.
#[derive(Default)]
struct TrashedNames {
    /// The minute's tagged batch.
    minute: String,
    /// Where versions go: the minute's batch until a name there was
    /// taken, then a spare one for the rest of the minute (one spare per
    /// taken name, not per version: each costs folders to make).
    batch: String,
    names: std::collections::BTreeSet<String>,
}

impl TrashedNames {
    /// The batch for `path`, trashed at `at`, whose tagged batch of the
    /// minute is `minute`: the current one unless `path`'s name is taken
    /// there (a version of the same path is there, a file of ours holds
    /// the name of a folder above it, or files of ours are below it),
    /// else a spare one from now on. The name is taken for `path`.
    fn reserve(&mut self, minute: &str, path: &str, at: SystemTime) -> String {
        // Batch names sort as time (one tag): a later minute starts its
        // own batch. An earlier one (a thread that read the clock before
        // another moved on, a clock stepped back) is a minute whose names
        // are forgotten: a batch of the version's own, never one of the
        // names this remote no longer knows.
        match minute.cmp(self.minute.as_str()) {
            std::cmp::Ordering::Greater => {
                self.minute = minute.to_owned();
                self.batch = minute.to_owned();
                self.names.clear();
            }
            std::cmp::Ordering::Less => return layout::spare_trash_batch(at),
            std::cmp::Ordering::Equal => {}
        }
        let below = format!("{path}/");
        let taken = self.names.contains(path)
            || path
                .match_indices('/')
                .any(|(at, _)| self.names.contains(&path[..at]))
            || self
                .names
                .range(below.clone()..)
                .next()
                .is_some_and(|name| name.starts_with(&below));
        if taken {
            return self.move_on(path, at);
        }
        self.names.insert(path.to_owned());
        self.batch.clone()
    }

    /// Leaves the current batch for a spare one, where `path` takes its
    /// name: `path`'s name is taken in the current one (by a version
    /// trashed there before, or by one this remote did not know of).
    fn move_on(&mut self, path: &str, at: SystemTime) -> String {
        self.batch = layout::spare_trash_batch(at);
        self.names.clear();
        self.names.insert(path.to_owned());
        self.batch.clone()
    }
}

impl Remote {
    /// A replica of `remote` through the agent's rclone for `settings`.
    /// Nothing is started yet.
    pub fn new(
        remote: &str,
        settings: &RclonePairSettings,
        parallel: usize,
        flags: &[&str],
        spool: PathBuf,
    ) -> Result<Remote, ReplicaError> {
        let parsed = connection::parse(remote).map_err(ReplicaError::Other)?;
        let (fs, definition) = parsed.for_rcd();
        let rcd = Rcd::shared(RcdSpec {
            binary: settings.binary(),
            config: settings.config.clone(),
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            remotes: definition.into_iter().collect(),
        });
        let client = RcClient::new(rcd);
        sweep_spool(&spool, SPOOL_SWEEP_AGE);
        Ok(Remote {
            remote: folder_fs(&fs),
            name: parsed.name().to_owned(),
            shown: format!("rclone:{remote}"),
            settings: settings.clone(),
            client,
            features: Mutex::new(None),
            parallel: parallel.max(1),
            spool,
            trash_tag: layout::trash_batch_tag(),
            trashed: Mutex::new(TrashedNames::default()),
            looks: Mutex::new(Looks::default()),
            walk: Mutex::new(WalkCosts::default()),
            claims_seen: Sightings::default(),
            #[cfg(test)]
            after_copy: Mutex::new(None),
        })
    }

    /// The agent's rcd (tests end it behind the replica's back).
    pub fn rcd(&self) -> &Arc<Rcd> {
        self.client.rcd()
    }

    /// The backend's features, asked once per start of the rcd (with
    /// rclone's version).
    pub fn features(&self) -> Result<Features, ReplicaError> {
        let version = self
            .client
            .version()
            .map_err(|e| self.error(e, "reach", ""))?;
        if let Some((generation, known)) = self.features.locked().as_ref()
            && *generation == version.generation
        {
            return Ok(known.clone());
        }
        let started = Instant::now();
        let info = self
            .client
            .call("operations/fsinfo", &json!({ "fs": self.remote }))
            .map_err(|e| self.error(e, "reach", ""))?;
        self.walk.locked().login = Some(started.elapsed());
        let features = Features::of(&info, &version);
        tracing::debug!(remote = %self.shown, ?features, "rclone remote features");
        let first = self.features.locked().is_none();
        if first {
            tracing::info!(
                remote = %self.shown,
                "rclone has no conditional write: each replace, move and removal re-checks the \
                 file just before it acts, so a change another writer makes in that moment can go \
                 to the trash instead of being kept in place (on a backend that cannot move a file, \
                 such as S3, be removed)"
            );
        }
        *self.features.locked() = Some((version.generation, features.clone()));
        Ok(features)
    }

    /// `remote` as a remote of its own, one folder down.
    pub(super) fn sub_fs(&self, rel: &str) -> String {
        if self.remote.ends_with([':', '/']) {
            format!("{}{rel}", self.remote)
        } else {
            format!("{}/{rel}", self.remote)
        }
    }

    /// A failed call as the engine needs it, in words a person can act on.
    pub(super) fn error(&self, e: RcError, op: &'static str, path: &str) -> ReplicaError {
        let name = &self.name;
        match e.kind() {
            ErrorKind::NotFound => ReplicaError::io(
                op,
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()),
            ),
            ErrorKind::UnknownRemote => ReplicaError::Other(format!(
                "the rclone remote {name:?} is not in the rclone config ({}); add it with \
                 `rclone config`, or correct the name in the pair's remote",
                self.config_file()
            )),
            // A backend given in place has no config entry to reconnect.
            ErrorKind::Login if name.starts_with(':') => ReplicaError::Other(format!(
                "{}: the provider refused the login ({e}); define the remote with `rclone \
                 config`, which keeps its login, and write rclone:NAME:PATH",
                self.shown
            )),
            ErrorKind::Login => ReplicaError::Other(format!(
                "{}: the provider refused the login ({e}); if its token expired or was revoked, \
                 run `rclone config reconnect {name}:` once",
                self.shown
            )),
            // Offline in effect: the run stops, nothing is failed, and the
            // pair tries again after its back-off.
            ErrorKind::RateLimited => ReplicaError::Offline {
                remote: self.shown.clone(),
                reason: format!(
                    "the provider asks for fewer requests for now (a rate limit); the sync \
                     continues later by itself: {e}"
                ),
            },
            ErrorKind::Quota => ReplicaError::Other(format!(
                "cannot {op} {path}: {} is full (the provider's storage quota is exceeded): {e}",
                self.shown
            )),
            ErrorKind::Offline => ReplicaError::Offline {
                remote: self.shown.clone(),
                reason: e.to_string(),
            },
            ErrorKind::Other => match e {
                RcError::Start(start) => ReplicaError::Other(start.to_string()),
                e => ReplicaError::Other(format!("cannot {op} {path} on {}: {e}", self.shown)),
            },
        }
    }

    /// The rclone config file a remote name was looked up in, as rclone
    /// itself says (`rclone config file`).
    pub(super) fn config_file(&self) -> String {
        if let Some(config) = &self.settings.config {
            return config.display().to_string();
        }
        std::process::Command::new(self.settings.binary())
            .args(["config", "file"])
            .stdin(std::process::Stdio::null())
            .output()
            .ok()
            .and_then(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(|l| l.trim().to_owned())
            })
            .unwrap_or_else(|| "rclone's default config file".to_owned())
    }

    pub(super) fn call(
        &self,
        method: &str,
        params: Value,
        op: &'static str,
        path: &str,
    ) -> Result<Value, ReplicaError> {
        self.client
            .call(method, &params)
            .map_err(|e| self.error(e, op, path))
    }

    /// What is at `path` (`""`: the root); `None` when nothing is.
    pub(super) fn stat_item(&self, path: &str) -> Result<Option<Item>, ReplicaError> {
        self.stat(path, false)
    }

    /// The file at `path`; `None` when no file is (nothing, or a folder).
    /// Cheaper where nothing is: rclone asks for the file only, where a
    /// stat that finds no file lists the folder above to look for a
    /// folder of that name (SFTP, WebDAV, cloud drives).
    pub(super) fn stat_file(&self, path: &str) -> Result<Option<Item>, ReplicaError> {
        self.stat(path, true)
    }

    fn stat(&self, path: &str, files_only: bool) -> Result<Option<Item>, ReplicaError> {
        let features = self.features()?;
        let started = Instant::now();
        let answer = self.call(
            "operations/stat",
            json!({
                "fs": self.remote,
                "remote": path,
                "opt": {
                    "showHash": features.hash.is_some(),
                    "hashTypes": features.hash.as_slice(),
                    "noMimeType": true,
                    "filesOnly": files_only,
                },
            }),
            "look at",
            path,
        );
        self.note_round_trip(started.elapsed());
        let answer = match answer {
            Ok(answer) => answer,
            // The folder above is not there either.
            Err(ReplicaError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if answer["item"].is_null() {
            return Ok(None);
        }
        Ok(listing::item(&answer["item"], features.hash.as_deref()))
    }

    /// The entries directly in the folder `path`; `None` when it is not
    /// there.
    pub(super) fn children(&self, path: &str) -> Result<Option<Vec<Item>>, ReplicaError> {
        self.list_below(path, false)
    }

    pub(super) fn list_below(
        &self,
        path: &str,
        recurse: bool,
    ) -> Result<Option<Vec<Item>>, ReplicaError> {
        let features = self.features()?;
        let mut params = json!({
            "fs": self.remote,
            "remote": path,
            "opt": {
                "recurse": recurse,
                "showHash": features.hash.is_some(),
                "hashTypes": features.hash.as_slice(),
                "noMimeType": true,
                // The listing asks for the times of the files it does not
                // know, one by one (see `listing::list`).
                "noModTime": recurse && features.slow_mod_time,
            },
        });
        if recurse {
            // The agent's own records are no part of the tree, and its
            // trash alone may hold more folders than the tree: a walk
            // leaves them out. A backend that lists a whole tree in one go
            // is left to it (a folder filter would make rclone walk it).
            if !features.list_r {
                params["_filter"] = json!({ "ExcludeRule": [format!("/{METADATA_DIR}/**")] });
            }
            if self.walk_alone() {
                params["_config"] = json!({ "Checkers": 1 });
            }
        }
        let answer = self.call("operations/list", params, "list", path);
        let answer = match answer {
            Ok(answer) => answer,
            Err(ReplicaError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let hash = features.hash.as_deref();
        Ok(Some(
            answer["list"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| listing::item(v, hash))
                .collect(),
        ))
    }

    /// Notes how long a small call to the backend (a stat, a record's
    /// read) took: the quickest of them is the round trip a walk weighs.
    fn note_round_trip(&self, took: Duration) {
        let mut walk = self.walk.locked();
        walk.round_trip = Some(walk.round_trip.map_or(took, |quickest| quickest.min(took)));
    }

    /// Notes how many folders the tree had when it was last synced.
    pub(super) fn note_folders(&self, folders: usize) {
        self.walk.locked().folders = folders;
    }

    /// Whether a walk of the tree lists its folders one after another over
    /// the connection that is open, rather than several at once as rclone
    /// does by default, each lister on a connection of its own. Each other
    /// connection costs a login (on SFTP an SSH key exchange, about 100 ms
    /// of the server's and the client's CPU on loopback, where a folder
    /// takes 1-5 ms), and rclone's default walk opens
    /// [`PARALLEL_LISTERS`] of them at once, which share the machine's
    /// cores. So the walk goes alone when `folders × round trip` is at
    /// most what those logins cost, counted from the first call's (the
    /// login's). On loopback SFTP with 100 folders (rclone 1.75) the
    /// parallel walk took 0.78 s where the lone one took 0.22 s. A cloud
    /// drive's API (100 ms
    /// and more a call) walks a tree of more than a few dozen folders in
    /// parallel still; a backend that lists a tree in one go (`ListR`)
    /// does not walk at all.
    fn walk_alone(&self) -> bool {
        let walk = self.walk.locked();
        match (walk.login, walk.round_trip) {
            (Some(login), Some(round_trip)) if walk.folders > 0 => {
                let folders = u32::try_from(walk.folders).unwrap_or(u32::MAX);
                round_trip.saturating_mul(folders) <= login.saturating_mul(PARALLEL_LISTERS)
            }
            _ => false,
        }
    }

    /// Moves the file `from` to `to` (made with its folders, replaced if
    /// there) server-side where the backend can.
    pub(super) fn move_file(&self, from: &str, to: &str) -> Result<(), ReplicaError> {
        let mut params = json!({
            "srcFs": self.remote, "srcRemote": from,
            "dstFs": self.remote, "dstRemote": to,
        });
        skip_check_of_server_copy(&mut params, &self.features()?);
        self.call("operations/movefile", params, "move", from)
            .map(|_| ())
    }

    /// Moves the file `from`, re-checked by the caller as the version
    /// `expect` names, to `to`, which nothing but this step writes (its
    /// trash name) or nothing held a moment ago (a rename's target).
    ///
    /// Where the backend has no `Move`, rclone's move is a copy and a
    /// removal of the source in one call, and a version another writer
    /// puts at `from` while the copy runs (a server-side copy of a large
    /// S3 object takes long, a download and an upload longer) would be
    /// removed with nothing of it kept. So there the move is our own
    /// steps: the copy, a re-check of `from`, and its removal only if it
    /// is still that version. Where it is not, the copy stays at `to` (in
    /// the trash an old version like any other, at a rename's target the
    /// file as it was moved) and the answer is a change to re-plan.
    /// A backend with `Move` moves in one server-side step: the re-check
    /// the caller made is as close to it as a re-check gets.
    pub(super) fn move_rechecked(
        &self,
        from: &RelPath,
        to: &str,
        expect: &Expect,
    ) -> Result<(), ReplicaError> {
        let features = self.features()?;
        if features.moves {
            return self.move_checked(from.as_str(), to);
        }
        let mut params = json!({
            "srcFs": self.remote, "srcRemote": from.as_str(),
            "dstFs": self.remote, "dstRemote": to,
        });
        skip_check_of_server_copy(&mut params, &features);
        if let Err(e) = self.call("operations/copyfile", params, "copy", from.as_str()) {
            if e.is_offline() {
                return Err(e);
            }
            // Gone or replaced under the copy: a change to re-plan.
            self.recheck(from, expect)?;
            return Err(e);
        }
        #[cfg(test)]
        if let Some(hook) = self.after_copy.locked().as_ref() {
            hook(from.as_str());
        }
        // RACE: a version written to `from` between this re-check and the
        // removal is removed with nothing of it kept, the moment any
        // re-check leaves (declared by `Replica::rechecked_writes`).
        self.recheck(from, expect)?;
        self.delete_file(from.as_str())
    }

    /// [`Remote::move_file`], where a failure because another writer got
    /// there first (`from` gone, `to` taken meanwhile) is a change to
    /// re-plan, not a failure.
    pub(super) fn move_checked(&self, from: &str, to: &str) -> Result<(), ReplicaError> {
        match self.move_file(from, to) {
            Ok(()) => Ok(()),
            Err(e) if e.is_offline() => Err(e),
            Err(e) => {
                if self.stat_item(from)?.is_none() {
                    return Err(changed(from));
                }
                // A file that vanished under rclone's move (the
                // destination it removed first, as another agent replaced
                // it) is another client's doing: re-plan, as when the
                // destination is there now.
                let vanished = matches!(&e, ReplicaError::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound);
                if vanished || self.stat_item(to)?.is_some() {
                    return Err(changed(to));
                }
                // A rival's move may be between removing the destination
                // and putting its file there (rclone replaces in two steps
                // where the server's rename does not replace, as on SFTP):
                // look once more after such a move has ended.
                std::thread::sleep(RIVAL_MOVE_WINDOW);
                if self.stat_item(to)?.is_some() {
                    return Err(changed(to));
                }
                Err(e)
            }
        }
    }

    /// The re-check before a step acts on the file `path`: it must still
    /// be the version `expect` names (its token, or else its size and
    /// modification time).
    pub(super) fn recheck(&self, path: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        self.recheck_against(path, expect, self.stat_file(path.as_str())?)
    }

    /// [`Remote::recheck`] against what was `found` at `path`.
    pub(super) fn recheck_against(
        &self,
        path: &RelPath,
        expect: &Expect,
        found: Option<Item>,
    ) -> Result<(), ReplicaError> {
        let Expect::File {
            size,
            mtime_ns,
            version,
            ..
        } = expect
        else {
            return Err(changed(path));
        };
        match found {
            Some(item)
                if !item.is_dir
                    && match version {
                        Some(version) => *version == item.token,
                        None => item.size == *size && item.mtime_ns == *mtime_ns,
                    } =>
            {
                Ok(())
            }
            _ => Err(changed(path)),
        }
    }

    /// Moves the file `path`, re-checked by the caller as the version
    /// `expect` names, to the trash ([`Remote::move_rechecked`]); returns
    /// its name there.
    pub(super) fn trash(&self, path: &RelPath, expect: &Expect) -> Result<RelPath, ReplicaError> {
        // rclone's moves replace what is at their destination, and a look
        // before the move cannot stop two agents trashing one path in one
        // minute from choosing one name: the second would overwrite the
        // version the first kept. So this remote trashes into batches
        // tagged with its own tag, and a version of a path it trashed
        // earlier in the same minute goes to a spare batch.
        //
        // Only this remote writes into a batch with its tag, so it knows
        // what is there without a look: a name it took already (the same
        // path, a file where this path needs a folder, files below where
        // this one goes) sends the version, and the rest of the minute's,
        // to a spare batch (see `TrashedNames`).
        let now = SystemTime::now();
        let minute = layout::tagged_trash_batch(now, &self.trash_tag);
        let mut batch = self.trashed.locked().reserve(&minute, path.as_str(), now);
        let mut moved = self.move_rechecked(
            path,
            &format!("{METADATA_DIR}/trash/{batch}/{path}"),
            expect,
        );
        // A name taken all the same (by another agent with the same tag,
        // or before a restart with it: not expected). A change is no such
        // failure: the file is not what was re-checked.
        let failed = moved
            .as_ref()
            .is_err_and(|e| !e.is_offline() && !matches!(e, ReplicaError::Changed { .. }));
        if failed && self.file_in_the_way(&batch, path)? {
            batch = self.trashed.locked().move_on(path.as_str(), now);
            moved = self.move_rechecked(
                path,
                &format!("{METADATA_DIR}/trash/{batch}/{path}"),
                expect,
            );
        }
        moved.map_err(|e| match e {
            ReplicaError::Changed { .. } => changed(path),
            e => crate::remote::gone_meanwhile(path)(e),
        })?;
        let name = format!("{batch}/{path}");
        RelPath::new(&name).map_err(|e| ReplicaError::Other(format!("{name}: {e}")))
    }

    /// Whether a file in the trash batch `batch` takes the name of a
    /// folder above `path` there.
    fn file_in_the_way(&self, batch: &str, path: &RelPath) -> Result<bool, ReplicaError> {
        // From the top: nothing is below a file.
        for (at, _) in path.as_str().match_indices('/') {
            let folder = format!("{METADATA_DIR}/trash/{batch}/{}", &path.as_str()[..at]);
            match self.stat_item(&folder)? {
                Some(item) if item.is_dir => {}
                Some(_) => return Ok(true),
                None => return Ok(false),
            }
        }
        Ok(false)
    }

    /// Uploads `content` to the hidden name `name` (a fresh one: nothing
    /// is there) in the folder `dir`, with the modification time
    /// `mtime_ns`; its size.
    ///
    /// The bytes are written to a file of the spool folder first, given
    /// the modification time, and copied from there with
    /// `operations/copyfile`: rclone's own upload call stamps the time of
    /// the upload and cannot be told another, and the time matters twice
    /// (it is what the other devices get, and on a backend without cheap
    /// hashes it is half of the version token a re-check compares).
    /// A `hash` that the bytes do not have is refused before anything is
    /// uploaded.
    pub(super) fn upload(
        &self,
        dir: &str,
        name: &str,
        content: &mut dyn Read,
        mtime_ns: i64,
        expected: Option<&ContentHash>,
        what: &str,
    ) -> Result<u64, ReplicaError> {
        self.upload_watched(dir, name, content, mtime_ns, expected, what, None)
    }

    /// [`Remote::upload`] of a transfer's `source`: a large one runs as a
    /// job whose progress goes to the source, stopped when the run is
    /// cancelled ([`super::job`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn upload_watched(
        &self,
        dir: &str,
        name: &str,
        content: &mut dyn Read,
        mtime_ns: i64,
        expected: Option<&ContentHash>,
        what: &str,
        source: Option<&crate::remote::Source<'_>>,
    ) -> Result<u64, ReplicaError> {
        let spooled = Spooled::write(&self.spool, name, content, mtime_ns)
            .map_err(|e| ReplicaError::io("read", what, e))?;
        if expected.is_some_and(|hash| *hash != spooled.hash) {
            return Err(ReplicaError::SourceChanged {
                path: what.to_owned(),
            });
        }
        let mut params = json!({
            "srcFs": format!(":local:{}", self.spool.display()),
            "srcRemote": name,
            "dstFs": self.remote,
            "dstRemote": format!("{dir}/{name}"),
        });
        // The name is a fresh random one: rclone need not look whether
        // something is there first (one request fewer per upload), nor
        // write to a partial name of its own and rename that (one more):
        // nothing reads a staged name before it is committed, and what a
        // broken upload leaves there is removed below.
        params["_config"] = json!({ "NoCheckDest": true });
        let features = self.features()?;
        if features.upload_in_place {
            params["_config"]["Inplace"] = json!(true);
        }
        if features.slow_hash {
            // After a copy rclone compares the two sides' hashes. Where the
            // backend's hash means reading the file whole again (SFTP runs
            // `md5sum` over ssh: about 250 ms of a 300 ms upload of a small
            // file), that check is skipped: the bytes were hashed as they
            // were spooled (a `hash` they do not match is refused above),
            // rclone still checks the size, the transport checks its own
            // bytes (SSH's MAC, TLS), and backends whose hash is cheap
            // (S3's ETag, Drive's MD5) keep the check.
            params["_config"]["IgnoreChecksum"] = json!(true);
        }
        let copied = match source {
            Some(source) if spooled.size >= super::job::WATCHED_UPLOAD_BYTES => {
                self.copy_watched(params, spooled.size, source, what)
            }
            _ => self
                .call("operations/copyfile", params, "upload", what)
                .map(|_| ()),
        };
        if let Err(e) = copied {
            // What a broken or stopped upload left under its hidden name
            // (rclone 1.60 writes a local, SFTP or FTP file in place, half
            // there) or under that name and a suffix (from 1.63 it writes
            // there to `NAME.XXXXXXXX.partial`, then renames). The call
            // starts a new rcd if the old one died mid-upload; if this
            // fails too, the staging sweep of `purge_trash` removes it a
            // day later.
            let _ = self.delete_file(&format!("{dir}/{name}"));
            let _ = self.delete_partial_uploads(dir, name);
            return Err(e);
        }
        if let Some(source) = source {
            source.report(spooled.size);
        }
        Ok(spooled.size)
    }

    /// Removes the files in `dir` whose names begin with `name.`: rclone's
    /// partial uploads to `name` (the suffix can be set by the user, so
    /// any; upload names are fresh random ones, so nothing else has them).
    fn delete_partial_uploads(&self, dir: &str, name: &str) -> Result<(), ReplicaError> {
        let prefix = format!("{name}.");
        for item in self.children(dir)?.unwrap_or_default() {
            if !item.is_dir && name_of(&item.path).starts_with(&prefix) {
                self.delete_file(&item.path)?;
            }
        }
        Ok(())
    }

    pub(super) fn delete_file(&self, path: &str) -> Result<(), ReplicaError> {
        match self.call(
            "operations/deletefile",
            json!({ "fs": self.remote, "remote": path }),
            "remove",
            path,
        ) {
            Ok(_) => Ok(()),
            Err(ReplicaError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Notes a batch of uploads handed over for its commits: its first
    /// commit lists each folder that two or more of its files go to, and
    /// the staging folder, so that the commits are checked against those
    /// listings instead of a stat each (see [`super::looks`]). A batch of
    /// one file is left to its commit (a stat is as cheap as a listing
    /// there, and looks later).
    pub(super) fn note_batch(&self, staged: &[&StagedWrite]) {
        if staged.len() < 2 {
            return;
        }
        let files = staged
            .iter()
            .map(|file| (name_of(&file.temp.to_string_lossy()), file.path.clone()))
            .collect();
        let mut looks = self.looks.locked();
        looks.prune(Instant::now());
        looks.note_batch(&Batch::new(files));
    }

    /// Lists the folders of `batch` (see [`Remote::note_batch`]). A
    /// listing that fails leaves its commits to stat as before.
    fn list_batch(&self, batch: &Batch) {
        let Ok(features) = self.features() else {
            return;
        };
        let mut folders: BTreeMap<String, Vec<&(String, RelPath)>> = BTreeMap::new();
        for file in &batch.files {
            let folder = file.1.parent().map(|p| p.as_str().to_owned());
            folders
                .entry(folder.unwrap_or_default())
                .or_default()
                .push(file);
        }
        folders.retain(|_, files| files.len() >= 2);
        // `None`: the staging folder, where the uploads wait.
        let mut lists: Vec<Option<&String>> = folders.keys().map(Some).collect();
        if features.moves {
            lists.push(None);
        }
        // One after the other: listings at once would each want a
        // connection of their own, and a login (SFTP) costs more than
        // the listings.
        let taken = Instant::now();
        let key = |path: &str| batch_looks::key(path, features.case_insensitive);
        for folder in lists {
            let below = folder.cloned().unwrap_or_else(staging_dir);
            let found = match self.children(&below) {
                Ok(found) => found.unwrap_or_default(),
                Err(e) => {
                    tracing::debug!(remote = %self.shown, error = %e, "cannot list before the commits; each looks by itself");
                    continue;
                }
            };
            let mut looks = self.looks.locked();
            let Some(folder) = folder else {
                for item in found {
                    looks.note_staged(name_of(&item.path), taken, item);
                }
                continue;
            };
            let mut found: HashMap<String, Item> = found
                .into_iter()
                .map(|item| (key(&item.path), item))
                .collect();
            for (name, path) in &folders[folder] {
                let there = found.remove(&key(path.as_str()));
                looks.note_target(name.clone(), taken, there);
            }
        }
    }

    /// What is at the target of `staged` right before its commit: what
    /// the batch's listing showed, if it is fresh, else a stat.
    pub(super) fn look_before_commit(
        &self,
        staged: &StagedWrite,
    ) -> Result<Option<Item>, ReplicaError> {
        let name = name_of(&staged.temp.to_string_lossy());
        let batch = self.looks.locked().take_batch(&name);
        if let Some(batch) = batch {
            // The batch's first commit lists; the others wait for it.
            batch.listed.get_or_init(|| self.list_batch(&batch));
        }
        if let Some(found) = self.looks.locked().take_target(&name) {
            return Ok(found);
        }
        // A folder where the new file goes (no file there) makes the move
        // fail, and the look after it sees the folder.
        self.stat_file(staged.path.as_str())
    }

    /// After a commit on a backend that allows two files of one name: the
    /// name must be there once.
    pub(super) fn check_unique(&self, path: &RelPath) -> Result<(), ReplicaError> {
        let parent = path
            .parent()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let children = self.children(&parent)?.unwrap_or_default();
        let count = children
            .iter()
            .filter(|c| c.path.trim_matches('/') == path.as_str())
            .count();
        if count > 1 {
            tracing::warn!(path = %path, "the remote holds this name twice after the commit");
            return Err(changed(path));
        }
        Ok(())
    }
}

/// Where the backend copies server-side (S3) and rclone's move is that
/// copy and a removal, rclone compares the size and hash of what it finds
/// at the destination after the copy with the source's, and removes the
/// destination if they differ: where another writer's version lands there
/// in between (a record or a file moved into place, a rename's target),
/// that removal would take it, kept nowhere else. The check is skipped: a
/// server-side copy does not change the bytes. (At a trash name, which
/// only this remote writes, the check could stay: all it could remove is
/// the copy just made, and the source stays until its re-check; one rule
/// for every copy is simpler.) Where the copy is a download and an
/// upload (no `Copy` either), the check stays: a transfer that ended short
/// must not count as done, and a move would then remove its source, which
/// may be the only copy of an old version on its way to the trash. RACE:
/// there a version another writer moves to the destination meanwhile can
/// still meet that removal.
fn skip_check_of_server_copy(params: &mut Value, features: &Features) {
    if !features.moves && features.server_copy {
        params["_config"] = json!({ "IgnoreChecksum": true, "IgnoreSize": true });
    }
}

pub(super) fn changed(path: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::Changed {
        path: path.to_string(),
    }
}

/// `remote` as rclone is to take it: a folder. Without a closing `/`,
/// object-store backends (S3, B2, GCS, Azure, Swift, …) first ask whether
/// the root is a file, and where neither that look nor a listing gets an
/// answer (the provider is unreachable) rclone 1.7x guesses a file and
/// answers "is a file not a directory" instead of the network error.
fn folder_fs(remote: &str) -> String {
    if remote.ends_with([':', '/']) {
        remote.to_owned()
    } else {
        format!("{remote}/")
    }
}

/// The last part of a path on the remote.
pub(super) fn name_of(path: &str) -> String {
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

pub(super) fn staging_dir() -> String {
    format!("{METADATA_DIR}/staging")
}

/// A fresh hidden name for an upload.
pub(super) fn staged_name() -> String {
    staged_name_at(SystemTime::now())
}

/// A fresh hidden name for an upload staged at `at`, which the name
/// holds (in seconds): the staged file itself has the modification time
/// of the file it uploads, which says nothing about how long it has
/// waited (see [`staged_at_ns`]).
pub(super) fn staged_name_at(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    format!(
        ".upload-{secs:x}-{:016x}{:08x}",
        fastrand::u64(..),
        fastrand::u32(..)
    )
}

/// When the upload `name` ([`staged_name_at`]) was staged, in
/// nanoseconds since the epoch; `None` for a name that does not hold it
/// (one an older version made).
pub(super) fn staged_at_ns(name: &str) -> Option<i64> {
    let (secs, _) = name.strip_prefix(".upload-")?.split_once('-')?;
    i64::from_str_radix(secs, 16)
        .ok()?
        .checked_mul(1_000_000_000)
}

impl listing::Source for Remote {
    fn items_below(&self, path: &str) -> Result<Vec<Item>, ReplicaError> {
        let features = self.features()?;
        match self.list_below(path, true)? {
            // A root on a backend without folders of their own, listed
            // with the agent's records (`ListR`: no filter), holds at
            // least its marker: with nothing in it, it is not there.
            Some(items)
                if path.is_empty()
                    && items.is_empty()
                    && !features.empty_dirs
                    && features.list_r =>
            {
                Err(ReplicaError::Other(format!(
                    "{} is not there (nothing is stored below it)",
                    self.shown
                )))
            }
            Some(items) => Ok(items),
            None if path.is_empty() => Err(ReplicaError::Other(format!(
                "{} is not there (its folder is missing)",
                self.shown
            ))),
            // Gone since it was stat'ed: nothing below it.
            None => Ok(Vec::new()),
        }
    }

    fn item(&self, path: &str) -> Result<Option<Item>, ReplicaError> {
        self.stat_item(path)
    }

    fn read(&self, path: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        self.open_file(path)
    }
}

impl Remote {
    /// Streams the file at `path`; a file that is not there is a source
    /// that changed.
    pub(super) fn open_file(
        &self,
        path: &RelPath,
    ) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        // The caller checks the bytes against the planned hash.
        match self.client.read(&self.remote, path.as_str(), 0) {
            Ok((response, _)) => Ok(Box::new(response)),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(ReplicaError::SourceChanged {
                path: path.to_string(),
            }),
            Err(e) => Err(self.error(e, "read", path.as_str())),
        }
    }

    /// The record `name` (`.prism-sync/NAME`) as text; `None` when there
    /// is none.
    pub(super) fn read_text(&self, name: &str) -> Result<Option<String>, ReplicaError> {
        let path = format!("{METADATA_DIR}/{name}");
        // A record another agent replaces at that moment may vanish under
        // the read (rclone's move on SFTP removes the old one, then
        // renames): the answer breaks off. Read once more; the record is
        // in place by then, or gone.
        match self.read_text_once(&path) {
            Err(ReplicaError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::ConnectionAborted =>
            {
                std::thread::sleep(Duration::from_millis(50));
                self.read_text_once(&path)
            }
            answer => answer,
        }
    }

    fn read_text_once(&self, path: &str) -> Result<Option<String>, ReplicaError> {
        let started = Instant::now();
        let read = self.client.read(&self.remote, path, 0);
        // Until the answer's head: a round trip to the backend.
        self.note_round_trip(started.elapsed());
        let response = match read {
            Ok((response, _)) => response,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(e, "read", path)),
        };
        let mut bytes = Vec::new();
        response
            .take(MAX_RECORD_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ReplicaError::io("read", path, e))?;
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return Err(ReplicaError::Other(format!(
                "{path} is larger than {MAX_RECORD_BYTES} bytes; it is not a record Prism Sync \
                 wrote"
            )));
        }
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ReplicaError::Other(format!("{path} is not UTF-8 text")))
    }

    /// The names of the files in `folder` of the metadata folder; none
    /// when it is not there.
    pub(super) fn list_metadata(&self, folder: &str) -> Result<Vec<String>, ReplicaError> {
        let below = format!("{METADATA_DIR}/{}", folder.trim_end_matches('/'));
        Ok(self
            .children(&below)?
            .unwrap_or_default()
            .into_iter()
            .filter(|item| !item.is_dir)
            .filter_map(|item| Some(item.path.rsplit('/').next()?.to_owned()))
            .collect())
    }

    /// Creates the empty file `name` of the metadata folder, uploaded
    /// under that name directly: only for a fresh name, whose presence is
    /// all it says.
    pub(super) fn create_marker(&self, name: &str) -> Result<(), ReplicaError> {
        let path = format!("{METADATA_DIR}/{name}");
        let (dir, file) = path.rsplit_once('/').unwrap_or(("", &path));
        let now = timefmt::to_unix_ns(SystemTime::now());
        self.upload(dir, file, &mut std::io::empty(), now, None, &path)
            .map(|_| ())
    }

    /// Removes the file `name` of the metadata folder (gone already: fine).
    pub(super) fn delete_metadata(&self, name: &str) -> Result<(), ReplicaError> {
        self.delete_file(&format!("{METADATA_DIR}/{name}"))
    }

    /// Writes the record `name` whole: uploaded under a hidden name beside
    /// it, then moved over it, so a reader finds the old record or the new
    /// one.
    pub(super) fn write_text(&self, name: &str, content: &str) -> Result<(), ReplicaError> {
        self.write_text_in_time(name, content, &|| Ok(()))
    }

    /// [`Remote::write_text`] for a writer whose write must start in time
    /// (under a lease claim, [`crate::remote::claims::Claim::check_in_time`]):
    /// `in_time` is asked between the upload and the move, since the move
    /// is the write that counts and the upload may have taken long.
    pub(super) fn write_text_in_time(
        &self,
        name: &str,
        content: &str,
        in_time: &dyn Fn() -> Result<(), ReplicaError>,
    ) -> Result<(), ReplicaError> {
        let path = format!("{METADATA_DIR}/{name}");
        let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned();
        let temp_name = staged_name();
        let temp = format!("{dir}/{temp_name}");
        let now = timefmt::to_unix_ns(SystemTime::now());
        let mut bytes = Cursor::new(content.as_bytes());
        self.upload(&dir, &temp_name, &mut bytes, now, None, &path)?;
        let moved = in_time().and_then(|()| self.move_file(&temp, &path));
        if moved.is_err() {
            let _ = self.delete_file(&temp);
        }
        moved
    }
}

/// An upload's bytes in the spool folder; removed when dropped. The file
/// is locked (`flock`) while it is in use, so that [`sweep_spool`] leaves
/// it alone.
struct Spooled {
    path: PathBuf,
    hash: ContentHash,
    size: u64,
    /// Open, holding the lock, until the spooled file is removed.
    file: std::fs::File,
}

/// How old a spool file must be before a replica that starts sweeps it
/// ([`sweep_spool`]): an upload locks its file right after creating it.
const SPOOL_SWEEP_AGE: Duration = Duration::from_secs(600);

/// Removes the files an upload left in the spool folder when its process
/// died (a crash, a kill mid-upload: each a whole copy of a file), leaving
/// those a running upload (of any process) holds locked, and any changed
/// less than `older_than` ago. Returns how many it removed.
pub(super) fn sweep_spool(spool: &std::path::Path, older_than: Duration) -> usize {
    use std::os::unix::fs::MetadataExt;
    // Only a private folder of ours, as uploads use (see `Spooled::write`).
    let ours = std::fs::symlink_metadata(spool).is_ok_and(|meta| {
        // SAFETY: getuid(2) cannot fail.
        meta.is_dir() && meta.uid() == unsafe { libc::getuid() } && meta.mode() & 0o077 == 0
    });
    let Ok(entries) = std::fs::read_dir(spool)
        .map_err(|_| ())
        .and_then(|entries| if ours { Ok(entries) } else { Err(()) })
    else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(".upload-") {
            continue;
        }
        let path = entry.path();
        // The mtime is the synced file's; the change time is when the
        // upload wrote it.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let changed =
            std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(meta.ctime()).unwrap_or(0));
        let old = now
            .duration_since(changed)
            .is_ok_and(|age| age >= older_than);
        if !meta.is_file() || !old {
            continue;
        }
        let unused = std::fs::File::open(&path)
            .and_then(|file| crate::fsops::try_lock_exclusive(&file))
            .unwrap_or(false);
        if unused && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(
            spool = %spool.display(),
            removed,
            "removed the spooled copies of uploads that never finished"
        );
    }
    removed
}

impl Spooled {
    fn write(
        spool: &std::path::Path,
        name: &str,
        content: &mut dyn Read,
        mtime_ns: i64,
    ) -> std::io::Result<Spooled> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        // Private, and ours: never a folder (or a link) someone else made
        // in a shared temporary folder.
        match std::fs::symlink_metadata(spool) {
            Ok(meta)
                if meta.is_dir()
                    // SAFETY: getuid(2) cannot fail.
                    && meta.uid() == unsafe { libc::getuid() }
                    && meta.mode() & 0o077 == 0 => {}
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is not a private folder of this user; remove it",
                        spool.display()
                    ),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(spool)?;
            }
            Err(e) => return Err(e),
        }
        let path = spool.join(name);
        let file = std::fs::File::create_new(&path)?;
        // From here on the file goes whatever happens.
        let mut spooled = Spooled {
            path,
            hash: ContentHash([0; 32]),
            size: 0,
            file,
        };
        crate::fsops::try_lock_exclusive(&spooled.file)?;
        let mut hasher = blake3::Hasher::new();
        crate::iobuf::with_buffer(|buf| -> std::io::Result<()> {
            loop {
                let n = match content.read(buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                hasher.update(&buf[..n]);
                spooled.file.write_all(&buf[..n])?;
                spooled.size += n as u64;
            }
        })?;
        let mtime = std::time::UNIX_EPOCH
            .checked_add(std::time::Duration::from_nanos(mtime_ns.max(0) as u64))
            .unwrap_or_else(SystemTime::now);
        spooled.file.set_modified(mtime)?;
        spooled.hash = ContentHash(*hasher.finalize().as_bytes());
        Ok(spooled)
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spool_sweep_removes_what_a_dead_upload_left_and_not_a_running_one() {
        use std::os::unix::fs::DirBuilderExt;
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&spool)
            .unwrap();
        // A crash mid-upload: its copy, no longer locked by anyone.
        std::fs::write(spool.join(".upload-left"), "a whole copy").unwrap();
        std::fs::write(spool.join("not-ours"), "kept").unwrap();
        let running = Spooled::write(&spool, ".upload-running", &mut &b"in use"[..], 0).unwrap();
        assert_eq!(sweep_spool(&spool, Duration::from_secs(600)), 0, "too new");
        assert_eq!(sweep_spool(&spool, Duration::ZERO), 1);
        let mut left: Vec<_> = std::fs::read_dir(&spool)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".upload-running", "not-ours"]);
        drop(running);
        assert!(!spool.join(".upload-running").exists());
    }

    #[test]
    fn a_taken_trash_name_sends_the_rest_of_the_minute_to_one_spare_batch() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_950_400);
        let minute = layout::tagged_trash_batch(at, "tag12345");
        let mut trashed = TrashedNames::default();
        assert_eq!(trashed.reserve(&minute, "a/x", at), minute);
        assert_eq!(trashed.reserve(&minute, "a/y", at), minute);
        // `a/x` again: a spare batch, where `a/y` goes too next time.
        let spare = trashed.reserve(&minute, "a/x", at);
        assert_ne!(spare, minute);
        assert_eq!(trashed.reserve(&minute, "a/y", at), spare);
        // A file where a folder is needed, and a folder over files.
        let file_then_folder = trashed.reserve(&minute, "a/x/inner", at);
        assert_ne!(file_then_folder, spare);
        let folder_over_files = trashed.reserve(&minute, "a", at);
        assert_ne!(folder_over_files, file_then_folder);
        // The next minute starts in its own batch.
        let later = at + Duration::from_secs(60);
        let next = layout::tagged_trash_batch(later, "tag12345");
        assert_eq!(trashed.reserve(&next, "a/x", later), next);
        // A thread that read the clock before the minute turned (or a
        // clock stepped back) gets a batch of its own: the names of that
        // minute are forgotten, and the current minute's are kept.
        let late = trashed.reserve(&minute, "a/x", at);
        assert!(
            ![minute.as_str(), next.as_str()].contains(&late.as_str()),
            "{late}"
        );
        assert_ne!(
            trashed.reserve(&next, "a/x", later),
            next,
            "a/x is taken there"
        );
    }
}
