//! An SFTP server as a replica: `sftp://user@host:port/path`, over the
//! `ssh2` crate (libssh2).
//!
//! It owns the SSH connection (host-key verification against a known_hosts
//! file, login by key, agent or password), the remote listing (a recursive
//! readdir whose names pass through [`RelPath`]; symbolic links and hostile
//! names are skipped with a problem, never followed) and the careful writes
//! on the server: upload to a `.prism-tmp-*` name beside the target, check
//! the target against the caller's `Expect`, move the old version to
//! `.prism-sync/trash/STAMP/path`, then rename the upload in. SFTP (v3, as
//! OpenSSH speaks it) renames never replace an existing name, which is the
//! no-replace rename the invariant needs. The lease is an exclusively
//! created `.prism-sync/lease`, as for a remote folder.
//!
//! It does not hash on the server (SFTP cannot): a file whose version
//! token (`SIZE:MTIME_SECS:ATIME_SECS`, the atime a random nonce every
//! commit sets) equals the base's reuses the base's hash, anything else is
//! downloaded and hashed. The careful steps compare the token an `Expect`
//! carries too, so two agents' same-sized uploads in one second are told
//! apart even after a restart. A staged upload is a handle naming the
//! upload and what its commit sets (`StagedUpload`), nothing in memory. SFTP gives no file
//! ids, so renames on the server are seen as delete + create (reconcile's
//! content matching still finds them). mtimes have whole seconds.
//!
//! Concurrency: libssh2 serialises the calls on one session, so the replica
//! keeps a [`pool`] of sessions, as many as the agent's
//! `parallel_transfers`, each made lazily (host key checked, logged in) and
//! checked out by one call (or one download, while it is read) at a time.
//! The listing lists folders and hashes files on all of them at once, and
//! each session lists its folders in batches on a second SFTP channel
//! whose requests are in flight together ([`pipe`]): a batch of folders
//! costs the round trips of one. A transport error drops that session and
//! retires the idle ones; the next call connects again, so a sync after
//! the server came back works without restarting the agent. No code path
//! holds two sessions at once: with a pool of one, waiting for a second
//! would wait forever. A download that continues a broken one (`open_at`)
//! seeks its file handle, so only the missing bytes cross the link.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ssh2::{CheckResult, ErrorCode, FileStat, HashType, KnownHostFileKind, OpenFlags, OpenType};
use ssh2::{Session, Sftp};

use super::Opened;
use super::layout::{METADATA_DIR, TrashBatches, temp_name_for};
use super::{Capabilities, Lease, Listing, Replica, ReplicaError, RootState, StagedWrite};
use crate::fsops::Expect;
use crate::locks::LockExt;
use crate::model::{BaseTree, ContentHash, Entry, FileMeta, Mode, RelPath, Scope, SideEntry};
use crate::secrets::{self, Account};
use crate::tracker::ignore::IgnoreRules;
use crate::tracker::scan::{SPECIAL_FILE_MESSAGE, SYMLINK_MESSAGE};

mod pipe;
mod pool;
pub mod url;
mod wire;

use pipe::Pipe;
use pool::{Health, Pool, Pooled};

use super::kit::{self, Entries, PathStore, careful, walk};

/// How long connecting and each SFTP request may take before the
/// connection is given up as dead.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The read and write chunk size of transfers.
const CHUNK: usize = 256 * 1024;

/// How to reach and log in to one server.
#[derive(Clone, Debug)]
pub struct SftpTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
    /// The root on the server: absolute, or relative to the login's home
    /// when the URL path starts with `/~/`.
    pub path: String,
    /// `None`: `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// `None`: the ssh-agent, then the default keys in `~/.ssh`.
    pub identity_file: Option<PathBuf>,
    /// Where the credentials file is looked for (see `secrets`).
    pub config_dir: Option<PathBuf>,
    /// How many SSH sessions may be open at once (the agent's
    /// `parallel_transfers`); at least one.
    pub sessions: usize,
    /// Whether to ask the server for SSH compression (zlib), which helps
    /// on slow links and costs CPU on fast ones.
    pub compression: bool,
}

/// A folder on an SFTP server.
pub struct SftpReplica {
    shared: Arc<Shared>,
}

/// What the replica and its lease share.
struct Shared {
    login: Arc<Login>,
    root: PathBuf,
    pool: Pool<Conn>,
    setstat_kept: SetstatKept,
    trash_folders: TrashFolders,
    trash_batches: TrashBatches,
    /// The folders uploads went to lately, each looked at or made (see
    /// [`RecentFolders`]).
    upload_folders: RecentFolders,
    /// A session's second channel answered nonsense: every session lists
    /// folders one at a time (see [`Conn::read_dirs`]).
    list_one_at_a_time: AtomicBool,
}

/// How to reach and log in to the server: all a connecting thread needs.
struct Login {
    target: SftpTarget,
    user: String,
}

/// One logged-in SSH session with its SFTP channel.
struct Conn {
    // The session must outlive the SFTP channels; ssh2 keeps it alive too.
    session: Session,
    sftp: Sftp,
    /// The channel folders are listed on many at a time, opened when the
    /// first listing needs it (see [`Conn::read_dirs`]).
    pipe: Mutex<PipeSlot>,
    /// `host:port`, for messages.
    server: String,
    /// A transport error was seen: the session is dropped, not reused.
    broken: AtomicBool,
    /// The server says it is OpenSSH's (its banner), whose renames never
    /// replace.
    openssh: bool,
}

impl Health for Conn {
    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }
}

/// A session checked out of the replica's pool.
type Checked<'a> = Pooled<'a, Conn>;

/// The entries of a folder (without `.` and `..`), names as the server
/// sent them.
type Listed = Vec<(std::ffi::OsString, RemoteStat)>;

/// Whether a pipe's error is an answer that made no sense (or a protocol
/// version it does not speak), not a broken connection.
fn makes_no_sense(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::Unsupported
    )
}

/// A session's pipelined channel.
enum PipeSlot {
    Unopened,
    Open(Pipe),
    /// In use, or lost when its user panicked: a pipe whose stream is in
    /// an unknown state is never used again.
    Taken,
    /// The server would not open a second channel: folders are listed one
    /// at a time on the first.
    Refused,
}

/// What `lstat` found at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Clone, Copy, Debug)]
struct RemoteStat {
    kind: Kind,
    size: u64,
    mtime_secs: i64,
    atime_secs: i64,
    /// The permission bits, where the server sent them (the set-ID and
    /// sticky bits apart, see `Mode`).
    mode: Option<Mode>,
    /// The set-ID and sticky bits, kept when only the mode is changed.
    special: u32,
}

impl RemoteStat {
    fn from(stat: &FileStat) -> RemoteStat {
        let kind = match stat.perm.map(|p| p & 0o170000) {
            Some(0o100000) => Kind::File,
            Some(0o040000) => Kind::Dir,
            Some(0o120000) => Kind::Symlink,
            _ => Kind::Other,
        };
        RemoteStat {
            kind,
            size: stat.size.unwrap_or(0),
            mtime_secs: stat.mtime.unwrap_or(0) as i64,
            atime_secs: stat.atime.unwrap_or(0) as i64,
            mode: stat.perm.map(Mode::from_bits),
            special: stat.perm.unwrap_or(0) & 0o7000,
        }
    }

    fn mtime_ns(&self) -> i64 {
        self.mtime_secs.saturating_mul(1_000_000_000)
    }

    /// Whether this is the same version as `other`: kind, size, times and
    /// mode.
    fn is_version_of(&self, other: &RemoteStat) -> bool {
        self.kind == other.kind
            && self.size == other.size
            && self.mtime_secs == other.mtime_secs
            && self.atime_secs == other.atime_secs
            && self.mode == other.mode
            && self.special == other.special
    }

    /// The version token: size, mtime and atime. SFTP mtimes have whole
    /// seconds, and a copy keeps its source's mtime, so two devices
    /// uploading same-sized edits made in the same second would look
    /// unchanged by size and mtime alone; every commit therefore sets a
    /// random atime (see [`version_nonce`]) that tells the versions apart.
    /// A read that moves the atime only costs one extra download.
    fn version(&self) -> String {
        format!("{}:{}:{}", self.size, self.mtime_secs, self.atime_secs)
    }

    /// Whether this is what `expect` describes: kind, size, mtime, mode,
    /// and, where the expectation carries the listed token, the atime
    /// nonce too (two agents' same-sized uploads in one second differ
    /// only there).
    fn matches(&self, expect: &Expect) -> bool {
        match expect {
            Expect::Absent => false,
            Expect::Dir => self.kind == Kind::Dir,
            Expect::File {
                size,
                mtime_ns,
                mode,
                version,
            } => {
                self.kind == Kind::File
                    && self.size == *size
                    && self.mtime_ns() == *mtime_ns
                    && (mode.is_none() || self.mode.is_none() || *mode == self.mode)
                    && version.as_deref().is_none_or(|v| *v == self.version())
            }
        }
    }
}

/// Whether the server keeps the times and mode a commit sets exactly, as
/// the first commit with a mode learns by looking at the file after its
/// move: once it does, later commits know their version token without
/// that look. A server that ignores or rounds them is looked at after
/// every commit, as it must be.
#[derive(Default)]
struct SetstatKept(AtomicU8);

impl SetstatKept {
    const UNKNOWN: u8 = 0;
    const KEPT: u8 = 1;
    const NOT_KEPT: u8 = 2;

    fn is_known_kept(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::KEPT
    }

    /// Learns it from `kept` (a look after a commit) if nothing is
    /// known yet.
    fn learn(&self, kept: impl FnOnce() -> bool) {
        if self.0.load(Ordering::Relaxed) != Self::UNKNOWN {
            return;
        }
        let kept = kept();
        let value = if kept { Self::KEPT } else { Self::NOT_KEPT };
        if self
            .0
            .compare_exchange(Self::UNKNOWN, value, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::debug!(
                kept,
                "learned whether the server keeps the times and mode a commit sets"
            );
        }
    }
}

/// The trash folders a replica made or found (with their parents), so a
/// version trashed into one of them moves without a look at its folder
/// first. Forgotten whole when a move finds one gone, and when they grow
/// past [`TrashFolders::MAX`] (a long-running agent makes a batch a
/// minute).
#[derive(Default)]
struct TrashFolders(Mutex<HashSet<PathBuf>>);

impl TrashFolders {
    const MAX: usize = 4096;

    fn knows(&self, dir: &Path) -> bool {
        self.0.locked().contains(dir)
    }

    /// Remembers `dir` and the folders above it.
    fn learn(&self, dir: &Path) {
        let mut known = self.0.locked();
        if known.len() > Self::MAX {
            known.clear();
        }
        for at in dir.ancestors() {
            if at.as_os_str().is_empty() || !known.insert(at.to_path_buf()) {
                break;
            }
        }
    }

    /// Forgets every folder; whether any was known.
    fn forget_all(&self) -> bool {
        let mut known = self.0.locked();
        let any = !known.is_empty();
        known.clear();
        any
    }

    /// Forgets every folder if `dir` was one of them; whether it was.
    fn forget_if_known(&self, dir: &Path) -> bool {
        let mut known = self.0.locked();
        let was = known.contains(dir);
        if was {
            known.clear();
        }
        was
    }
}

/// The folders uploads went to lately, each looked at (or made) before
/// an upload into it: an upload into one seen within
/// [`RecentFolders::TRUST`] goes without a look of its own. The look
/// refuses a folder that became a symbolic link since the listing, which
/// the upload would follow out of the root; one before every upload cost
/// a round trip a file. So a look counts briefly (a sync uploads a
/// folder's files in a burst), and only for the folder looked at: the
/// look at `d/e` follows a link at `d`. Forgotten at each listing.
#[derive(Default)]
struct RecentFolders(Mutex<HashMap<PathBuf, Instant>>);

impl RecentFolders {
    /// How long a look at a folder stands for the uploads into it.
    const TRUST: Duration = Duration::from_secs(1);
    const MAX: usize = 4096;

    fn fresh(&self, dir: &Path) -> bool {
        self.0
            .locked()
            .get(dir)
            .is_some_and(|seen| seen.elapsed() < Self::TRUST)
    }

    fn saw(&self, dir: &Path) {
        let mut seen = self.0.locked();
        if seen.len() > Self::MAX {
            seen.clear();
        }
        seen.insert(dir.to_path_buf(), Instant::now());
    }

    /// Forgets `dir`; whether it was there.
    fn forget(&self, dir: &Path) -> bool {
        self.0.locked().remove(dir).is_some()
    }

    fn forget_all(&self) {
        self.0.locked().clear();
    }
}

/// A staged upload, as the handle [`StagedWrite::temp`] carries it: the
/// upload's path on the server and what the commit gives it (its mtime,
/// and its exact mode where it has one). Until the commit the upload keeps
/// the time it was written, which is how a crash's leftovers are aged, and
/// its mode less the server's umask (never wider). The handle is the whole
/// staged state: the replica keeps nothing about it in memory.
#[derive(Debug, PartialEq, Eq)]
struct StagedUpload {
    /// The upload's path below the root.
    temp: String,
    mtime_secs: u64,
    mode: Option<Mode>,
}

/// What every staged handle of this backend starts with.
const STAGED_HANDLE: &str = "sftp-staged";

impl StagedUpload {
    /// `sftp-staged/MTIME/MODE/TEMP` (`MODE` in octal, `-` for none); the
    /// upload's path comes last, so it may hold any character.
    fn handle(&self) -> PathBuf {
        let mode = self
            .mode
            .map_or_else(|| "-".to_owned(), |m| format!("{:o}", m.bits()));
        PathBuf::from(format!(
            "{STAGED_HANDLE}/{}/{mode}/{}",
            self.mtime_secs, self.temp
        ))
    }

    fn from_handle(handle: &Path) -> Option<StagedUpload> {
        let rest = handle
            .to_str()?
            .strip_prefix(STAGED_HANDLE)?
            .strip_prefix('/')?;
        let (mtime, rest) = rest.split_once('/')?;
        let (mode, temp) = rest.split_once('/')?;
        let mode = match mode {
            "-" => None,
            bits => Some(Mode::from_bits(u32::from_str_radix(bits, 8).ok()?)),
        };
        Some(StagedUpload {
            temp: temp.to_owned(),
            mtime_secs: mtime.parse().ok()?,
            mode,
        })
    }
}

/// What a file made without a known mode gets, less the server's umask.
const DEFAULT_FILE_MODE: u32 = 0o644;
/// What a folder made without a known mode gets, less the server's umask.
const DEFAULT_DIR_MODE: u32 = 0o755;

/// A `setstat` that changes only the permission bits.
fn perm_only(bits: u32) -> FileStat {
    FileStat {
        size: None,
        uid: None,
        gid: None,
        perm: Some(bits),
        atime: None,
        mtime: None,
    }
}

/// Why a connection could not be made. The messages say what to do and
/// never contain a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach {server}: {source}")]
    Unreachable { server: String, source: io::Error },
    #[error("the SSH handshake with {server} failed: {message}")]
    Handshake { server: String, message: String },
    #[error(
        "the host key of {server} is not known ({key_type} key {fingerprint}); \
         if that is the server's key, trust it with: {command}"
    )]
    UnknownHost {
        server: String,
        key_type: &'static str,
        fingerprint: String,
        command: String,
    },
    #[error(
        "REFUSED: the host key of {server} has CHANGED (it is now {key_type} key {fingerprint}), \
         which means the server was reinstalled or someone is intercepting the connection. \
         Nothing was synced. If the change is expected, remove the old key with \
         `{remove_command}` and trust the new one with: {command}"
    )]
    ChangedHost {
        server: String,
        key_type: &'static str,
        fingerprint: String,
        remove_command: String,
        command: String,
    },
    #[error("cannot read the known_hosts file {file}: {message}")]
    KnownHosts { file: String, message: String },
    #[error(
        "cannot log in to {server} as {user} (tried: {tried}); add your public key to the \
         server's ~/.ssh/authorized_keys, set `identity_file` for the pair, or \
         {how}"
    )]
    Login {
        server: String,
        user: String,
        tried: String,
        /// How to store the password (`secrets::how_to_store`).
        how: String,
    },
    #[error("{0}")]
    Secret(#[from] secrets::SecretError),
    #[error("the SFTP subsystem of {server} is not available: {message}")]
    Subsystem { server: String, message: String },
}

impl pool::ConnectFailure for ConnectError {
    fn may_be_a_session_limit(&self) -> bool {
        // OpenSSH's MaxStartups drops the connection during the handshake;
        // a login or host-key refusal would refuse every new session alike.
        matches!(
            self,
            ConnectError::Unreachable { .. }
                | ConnectError::Handshake { .. }
                | ConnectError::Subsystem { .. }
        )
    }
}

impl From<ConnectError> for ReplicaError {
    /// Not reaching the server, or losing it during the handshake, is
    /// offline (retried on a timer); a refused host key or login is a
    /// configuration error that waiting does not fix.
    fn from(e: ConnectError) -> ReplicaError {
        match e {
            ConnectError::Unreachable { server, source } => ReplicaError::Offline {
                remote: server,
                reason: source.to_string(),
            },
            ConnectError::Handshake { server, message } => ReplicaError::Offline {
                remote: server,
                reason: format!("the SSH handshake failed: {message}"),
            },
            e => ReplicaError::Other(e.to_string()),
        }
    }
}

/// The user an `sftp://` URL without one logs in as (see
/// [`secrets::default_user`], which keys such a pair's password by it).
pub use crate::secrets::default_user;

impl SftpReplica {
    /// A replica for `target`. Nothing is connected yet: the first
    /// operation connects, so an agent starts while its server is away.
    pub fn new(target: SftpTarget) -> SftpReplica {
        let user = target.user.clone().unwrap_or_else(default_user);
        let root = match target.path.strip_prefix("/~/") {
            Some(relative) => PathBuf::from(relative),
            None if target.path == "/~" => PathBuf::from("."),
            None => PathBuf::from(&target.path),
        };
        SftpReplica {
            shared: Arc::new(Shared {
                pool: Pool::new(target.sessions),
                login: Arc::new(Login { target, user }),
                root,
                setstat_kept: SetstatKept::default(),
                trash_folders: TrashFolders::default(),
                trash_batches: TrashBatches::new(),
                upload_folders: RecentFolders::default(),
                list_one_at_a_time: AtomicBool::new(false),
            }),
        }
    }

    /// Connects now (the first operation would anyway), so a caller can
    /// report a host-key or login problem at once.
    pub fn connect(&self) -> Result<(), ReplicaError> {
        self.shared.conn().map(|_| ())
    }
}

impl Shared {
    fn server(&self) -> String {
        self.login.server()
    }

    /// A session of its own for one call: an idle one, the next one
    /// another call gives back, or a new one, whichever comes first.
    fn conn(&self) -> Result<Checked<'_>, ReplicaError> {
        let login = Arc::clone(&self.login);
        self.pool
            .get(move || login.connect())
            .map_err(ReplicaError::from)
    }

    fn full(&self, path: &RelPath) -> PathBuf {
        self.root.join(path.as_str())
    }
}

impl Login {
    fn server(&self) -> String {
        format!("{}:{}", self.target.host, self.target.port)
    }

    fn known_hosts_file(&self) -> PathBuf {
        match &self.target.known_hosts {
            Some(path) => path.clone(),
            None => home().join(".ssh").join("known_hosts"),
        }
    }

    fn connect(&self) -> Result<Conn, ConnectError> {
        let server = self.server();
        let unreachable = |source| ConnectError::Unreachable {
            server: server.clone(),
            source,
        };
        let addrs: Vec<_> = (self.target.host.as_str(), self.target.port)
            .to_socket_addrs()
            .map_err(unreachable)?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| unreachable(last))?;
        let handshake = |e: ssh2::Error| ConnectError::Handshake {
            server: server.clone(),
            message: e.message().to_owned(),
        };
        let mut session = Session::new().map_err(handshake)?;
        session.set_timeout(TIMEOUT.as_millis() as u32);
        // Negotiated in the key exchange, so it must be asked for before.
        session.set_compress(self.target.compression);
        session.set_tcp_stream(stream);
        session.handshake().map_err(handshake)?;
        self.verify_host_key(&session)?;
        self.log_in(&session)?;
        let sftp = session.sftp().map_err(|e| ConnectError::Subsystem {
            server: server.clone(),
            message: e.message().to_owned(),
        })?;
        tracing::debug!(
            server = %server,
            compression = session.methods(ssh2::MethodType::CompCs).unwrap_or("none"),
            "connected over SFTP"
        );
        let openssh = session
            .banner()
            .is_some_and(|banner| banner.starts_with("SSH-2.0-OpenSSH_"));
        Ok(Conn {
            session,
            sftp,
            pipe: Mutex::new(PipeSlot::Unopened),
            server,
            broken: AtomicBool::new(false),
            openssh,
        })
    }

    fn verify_host_key(&self, session: &Session) -> Result<(), ConnectError> {
        let server = self.server();
        let file = self.known_hosts_file();
        let (key, key_type) = session.host_key().ok_or_else(|| ConnectError::Handshake {
            server: server.clone(),
            message: "the server sent no host key".into(),
        })?;
        let key_type = match key_type {
            ssh2::HostKeyType::Rsa => "RSA",
            ssh2::HostKeyType::Dss => "DSA",
            ssh2::HostKeyType::Ecdsa256
            | ssh2::HostKeyType::Ecdsa384
            | ssh2::HostKeyType::Ecdsa521 => "ECDSA",
            ssh2::HostKeyType::Ed25519 => "ED25519",
            ssh2::HostKeyType::Unknown => "unknown",
        };
        let fingerprint = session
            .host_key_hash(HashType::Sha256)
            .map(|h| format!("SHA256:{}", base64_unpadded(h)))
            .unwrap_or_else(|| "(no fingerprint)".into());
        let mut known = session
            .known_hosts()
            .map_err(|e| ConnectError::KnownHosts {
                file: file.display().to_string(),
                message: e.message().to_owned(),
            })?;
        if file.exists() {
            known
                .read_file(&file, KnownHostFileKind::OpenSSH)
                .map_err(|e| ConnectError::KnownHosts {
                    file: file.display().to_string(),
                    message: e.message().to_owned(),
                })?;
        }
        let host = &self.target.host;
        let port = self.target.port;
        let command = if port == 22 {
            format!("ssh-keyscan {host} >> {}", file.display())
        } else {
            format!("ssh-keyscan -p {port} {host} >> {}", file.display())
        };
        match known.check_port(host, port, key) {
            CheckResult::Match => Ok(()),
            CheckResult::NotFound => Err(ConnectError::UnknownHost {
                server,
                key_type,
                fingerprint,
                command,
            }),
            CheckResult::Mismatch => Err(ConnectError::ChangedHost {
                server,
                key_type,
                fingerprint,
                remove_command: format!(
                    "ssh-keygen -R '{}' -f {}",
                    if port == 22 {
                        host.clone()
                    } else {
                        format!("[{host}]:{port}")
                    },
                    file.display()
                ),
                command,
            }),
            CheckResult::Failure => Err(ConnectError::KnownHosts {
                file: file.display().to_string(),
                message: "the host key could not be checked".into(),
            }),
        }
    }

    /// Tries the configured key, the agent, the default keys, then a
    /// password, in that order. What was tried is named in the error; the
    /// password never is.
    fn log_in(&self, session: &Session) -> Result<(), ConnectError> {
        let user = self.user.as_str();
        let mut tried: Vec<String> = Vec::new();
        let methods = session.auth_methods(user).unwrap_or("").to_owned();
        if session.authenticated() {
            return Ok(());
        }
        let offers_key = methods.is_empty() || methods.contains("publickey");
        if offers_key {
            if let Some(identity) = &self.target.identity_file {
                tried.push(format!("the key {}", identity.display()));
                if session
                    .userauth_pubkey_file(user, None, identity, None)
                    .is_ok()
                {
                    return Ok(());
                }
            } else {
                if std::env::var_os("SSH_AUTH_SOCK").is_some() {
                    tried.push("the ssh-agent".into());
                    if session.userauth_agent(user).is_ok() {
                        return Ok(());
                    }
                }
                for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                    let key = home().join(".ssh").join(name);
                    if key.exists() {
                        tried.push(format!("the key {}", key.display()));
                        if session.userauth_pubkey_file(user, None, &key, None).is_ok() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        let account = Account::new(url::PASSWORD, user, &self.target.host, self.target.port);
        let password = secrets::password(&account, self.target.config_dir.as_deref())?;
        if let Some(password) = password {
            tried.push("a password".into());
            if session.userauth_password(user, password.expose()).is_ok() {
                return Ok(());
            }
        }
        if tried.is_empty() {
            tried.push("nothing: no key, agent or password was found".into());
        }
        Err(ConnectError::Login {
            server: self.server(),
            user: user.to_owned(),
            tried: tried.join(", "),
            how: secrets::how_to_store(&account, self.target.config_dir.as_deref()),
        })
    }
}

impl Shared {
    fn meta_dir(&self) -> PathBuf {
        self.root.join(METADATA_DIR)
    }

    /// Classifies an error of a transfer stream on `conn`. ssh2's file
    /// reads and writes lose libssh2's error code, so a failed transfer
    /// probes the session: when that fails too, the connection is gone
    /// (and dropped) and the error is [`ReplicaError::Offline`], not a
    /// problem of the file.
    fn transfer_error(
        &self,
        conn: &Conn,
        op: &'static str,
        path: impl std::fmt::Display,
        e: io::Error,
    ) -> ReplicaError {
        if super::is_connection_error(&e) || !conn.alive(&self.root) {
            conn.mark_broken();
            return ReplicaError::Offline {
                remote: self.server(),
                reason: format!("the connection broke during the {op} of {path}: {e}"),
            };
        }
        ReplicaError::io(op, path, e)
    }

    /// The path on the server of `path` (relative to the root, `""`
    /// for the root itself).
    fn at(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }
}

/// The SFTP server as the kit's store: every primitive checks out a
/// session of its own for its round trips, so none holds two at once.
impl PathStore for Shared {
    type Node = RemoteStat;

    fn stat(&self, path: &str) -> Result<Option<RemoteStat>, ReplicaError> {
        let conn = self.conn()?;
        conn.lstat(&self.at(path))
            .map_err(|e| ReplicaError::io("inspect", path, e))
    }

    fn is_dir(node: &RemoteStat) -> bool {
        node.kind == Kind::Dir
    }

    fn matches(node: &RemoteStat, expect: &Expect) -> bool {
        node.matches(expect)
    }

    /// SFTP has no conditional requests.
    fn condition<'a>(_: &'a RemoteStat, _: &'a Expect) -> Option<&'a str> {
        None
    }

    fn list_dir(&self, dir: &str) -> Result<Option<Entries<RemoteStat>>, ReplicaError> {
        let conn = self.conn()?;
        match conn.read_dir(&self.at(dir)) {
            Ok(entries) => Ok(Some(
                entries
                    .into_iter()
                    .filter_map(|(name, stat)| Some((name.into_string().ok()?, stat)))
                    .collect(),
            )),
            // Asked only after a failure: the folder is there in the
            // common case, and opening it is then the one round trip.
            Err(_) if matches!(conn.lstat(&self.at(dir)), Ok(None)) => Ok(None),
            Err(e) => Err(ReplicaError::io("list", dir, e)),
        }
    }

    /// A private folder (the trash's) this replica made or found before is
    /// taken as there without asking (see [`TrashFolders`]).
    fn mkdir_all(&self, dir: &str, private: bool) -> Result<(), ReplicaError> {
        // Owner-only where asked (the trash keeps old versions of every
        // file, and must not show their names to anyone else).
        let mode = if private { 0o700 } else { DEFAULT_DIR_MODE };
        let full = self.at(dir);
        if private && self.trash_folders.knows(&full) {
            return Ok(());
        }
        let conn = self.conn()?;
        let known = |at: &Path| private && self.trash_folders.knows(at);
        conn.mkdir_below(&full, mode, &known)
            .or_else(|e| {
                // A folder taken as there may have been removed since (the
                // trash emptied by hand, another device's purge): every
                // level is looked at once more.
                if private && self.trash_folders.forget_all() {
                    conn.mkdir_all(&full, mode)
                } else {
                    Err(e)
                }
            })
            .map_err(|e| ReplicaError::io("create", dir, e))?;
        if private {
            self.trash_folders.learn(&full);
        }
        Ok(())
    }

    /// SFTP v3 renames never replace (OpenSSH links files and checks
    /// folders first): a refusal with something at `to` is `Ok(false)`.
    fn move_noreplace(
        &self,
        from: &str,
        to: &str,
        _dir: bool,
        _condition: Option<&str>,
    ) -> Result<bool, ReplicaError> {
        let conn = self.conn()?;
        let dest = self.at(to);
        let mut remade = false;
        loop {
            let e = match conn.sftp.rename(&self.at(from), &dest, None) {
                Ok(()) => return Ok(true),
                Err(e) => e,
            };
            match conn.lstat(&dest) {
                Ok(Some(_)) => return Ok(false),
                // A trash folder taken as there may have been removed
                // since (by a purge, or by hand): made again, once.
                Ok(None)
                    if !remade
                        && dest
                            .parent()
                            .is_some_and(|parent| self.trash_folders.forget_if_known(parent)) =>
                {
                    let parent = dest.parent().expect("known above");
                    conn.mkdir_all(parent, 0o700)
                        .map_err(|e| ReplicaError::io("create", parent.display(), e))?;
                    remade = true;
                }
                _ => return Err(conn.error("move", from, e)),
            }
        }
    }

    /// OpenSSH's server renames by linking (or, where the file system
    /// cannot link, after a look of its own), so its rename never
    /// replaces; other servers may implement it as POSIX rename(2).
    fn refuses_taken_target(&self) -> bool {
        self.conn().is_ok_and(|conn| conn.openssh)
    }

    fn trash_batches(&self) -> &TrashBatches {
        &self.trash_batches
    }

    fn remove_tree(&self, path: &str) -> Result<(), ReplicaError> {
        let conn = self.conn()?;
        conn.remove_tree(&self.at(path))
            .map_err(|e| ReplicaError::io("remove", path, e))
    }

    /// `rmdir`, which refuses a folder that is not empty.
    fn remove_empty_dir(&self, path: &RelPath, _: &RemoteStat) -> Result<bool, ReplicaError> {
        let conn = self.conn()?;
        let full = self.full(path);
        Ok(match conn.sftp.rmdir(&full) {
            Ok(()) => true,
            Err(_) => matches!(conn.lstat(&full), Ok(None)),
        })
    }
}

impl Conn {
    /// Turns an SFTP error into a replica error; a transport error (not an
    /// answer from the server) also marks the session broken.
    fn error(
        &self,
        op: &'static str,
        path: impl std::fmt::Display,
        e: ssh2::Error,
    ) -> ReplicaError {
        ReplicaError::io(op, path, self.io_error(e))
    }

    fn io_error(&self, e: ssh2::Error) -> io::Error {
        match e.code() {
            ErrorCode::SFTP(code) => self.refusal(code, e.message()),
            ErrorCode::Session(_) => {
                self.mark_broken();
                io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("{} (on {})", e.message(), self.server),
                )
            }
        }
    }

    /// The error for an SFTP status `code` the server answered with.
    fn refusal(&self, code: i32, message: &str) -> io::Error {
        let kind = match code {
            2 => io::ErrorKind::NotFound,
            3 => io::ErrorKind::PermissionDenied,
            11 => io::ErrorKind::AlreadyExists,
            _ => io::ErrorKind::Other,
        };
        let hint = if kind == io::ErrorKind::PermissionDenied {
            "; the server refuses it: check the owner and permissions of that folder on the server"
        } else {
            ""
        };
        io::Error::new(kind, format!("{message} (on {}){hint}", self.server))
    }

    /// The session is not reused once it is given back.
    fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    /// Whether the session still answers (one `lstat` of `root`).
    fn alive(&self, root: &Path) -> bool {
        !self.is_broken()
            && !matches!(
                self.lstat(root),
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted
            )
    }

    /// `lstat`: `None` when nothing is there.
    fn lstat(&self, full: &Path) -> Result<Option<RemoteStat>, io::Error> {
        match self.sftp.lstat(full) {
            Ok(stat) => Ok(Some(RemoteStat::from(&stat))),
            Err(e) if e.code() == ErrorCode::SFTP(2) => Ok(None),
            Err(e) => Err(self.io_error(e)),
        }
    }

    /// Creates `dir` and its missing parents, each with `mode` less the
    /// server's umask: looks from `dir` up for the nearest folder that
    /// exists, then makes the ones below it, in a loop rather than a call
    /// per level.
    fn mkdir_all(&self, dir: &Path, mode: u32) -> io::Result<()> {
        self.mkdir_below(dir, mode, &|_| false)
    }

    /// [`Conn::mkdir_all`], taking the folders `known` says are there
    /// without asking.
    fn mkdir_below(&self, dir: &Path, mode: u32, known: &dyn Fn(&Path) -> bool) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut at = dir;
        loop {
            if known(at) {
                break;
            }
            match self.lstat(at)? {
                Some(stat) if stat.kind == Kind::Dir => break,
                Some(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists and is not a folder", at.display()),
                    ));
                }
                None => missing.push(at),
            }
            match at.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => at = parent,
                _ => break,
            }
        }
        for dir in missing.into_iter().rev() {
            if let Err(e) = self.sftp.mkdir(dir, mode as i32) {
                // Another writer (or another session of this replica) may
                // have created it meanwhile.
                match self.lstat(dir)? {
                    Some(stat) if stat.kind == Kind::Dir => {}
                    _ => return Err(self.io_error(e)),
                }
            }
        }
        Ok(())
    }

    /// Removes a file or a whole folder, never following a symbolic link.
    /// Folders wait on a list of their own, not the call stack: a trashed
    /// tree may be thousands of levels deep.
    fn remove_tree(&self, full: &Path) -> io::Result<()> {
        // Each folder is visited twice: first to queue what is in it,
        // then, once that is gone, to remove it.
        let mut pending = vec![(full.to_path_buf(), false)];
        while let Some((path, emptied)) = pending.pop() {
            if emptied {
                self.sftp.rmdir(&path).map_err(|e| self.io_error(e))?;
                continue;
            }
            let Some(stat) = self.lstat(&path)? else {
                continue;
            };
            if stat.kind == Kind::Dir {
                let children = self.read_dir(&path)?;
                pending.push((path.clone(), true));
                pending.extend(
                    children
                        .into_iter()
                        .map(|(name, _)| (path.join(name), false)),
                );
            } else {
                self.sftp.unlink(&path).map_err(|e| self.io_error(e))?;
            }
        }
        Ok(())
    }

    /// The raw entries of a folder (without `.` and `..`), names as the
    /// server sent them.
    fn read_dir(&self, dir: &Path) -> io::Result<Listed> {
        let mut handle = self.sftp.opendir(dir).map_err(|e| self.io_error(e))?;
        let mut out = Vec::new();
        loop {
            match handle.readdir() {
                Ok((name, stat)) => {
                    let name = name.into_os_string();
                    if name == "." || name == ".." {
                        continue;
                    }
                    out.push((name, RemoteStat::from(&stat)));
                    if out.len() > wire::MAX_FOLDER_ENTRIES {
                        let code = wire::STATUS_FAILURE as i32;
                        return Err(self.refusal(code, &wire::too_many_entries()));
                    }
                }
                Err(e) if e.code() == ErrorCode::Session(libssh2_error_file()) => break,
                Err(e) => return Err(self.io_error(e)),
            }
        }
        Ok(out)
    }

    /// [`Conn::read_dir`] of each of `dirs`, in order, their requests in
    /// flight together on the session's [`Pipe`] (see [`pipe::BATCH`]).
    /// Folders are listed one at a time where the server gives a session
    /// one channel only, or where a second channel answered nonsense:
    /// `one_at_a_time`, which the replica's sessions share, is then set
    /// for good. A pipe that broke breaks the session: every folder's
    /// result is that error.
    fn read_dirs(&self, dirs: &[PathBuf], one_at_a_time: &AtomicBool) -> Vec<io::Result<Listed>> {
        use std::os::unix::ffi::OsStrExt;
        let one_by_one = || dirs.iter().map(|dir| self.read_dir(dir)).collect();
        if one_at_a_time.load(Ordering::Relaxed) {
            return one_by_one();
        }
        let slot = std::mem::replace(&mut *self.pipe.locked(), PipeSlot::Taken);
        let opened = match slot {
            PipeSlot::Open(pipe) => Ok(pipe),
            PipeSlot::Unopened => Pipe::open(&self.session),
            PipeSlot::Refused | PipeSlot::Taken => {
                *self.pipe.locked() = slot;
                return one_by_one();
            }
        };
        let paths: Vec<&[u8]> = dirs.iter().map(|dir| dir.as_os_str().as_bytes()).collect();
        let listed = match opened {
            Ok(mut pipe) => pipe.list_folders(&paths).map(|folders| (pipe, folders)),
            Err(e) if !makes_no_sense(&e) => {
                tracing::debug!(server = %self.server, error = %e, "listing folders one at a time: no second SFTP channel");
                *self.pipe.locked() = PipeSlot::Refused;
                return one_by_one();
            }
            Err(e) => Err(e),
        };
        match listed {
            Ok((pipe, folders)) => {
                *self.pipe.locked() = PipeSlot::Open(pipe);
                folders
                    .into_iter()
                    .map(|folder| match folder {
                        Ok(entries) => Ok(entries
                            .into_iter()
                            .map(|(name, stat)| (name, RemoteStat::from(&stat)))
                            .collect()),
                        Err(refused) => {
                            let code = i32::try_from(refused.code).unwrap_or(i32::MAX);
                            let message = match refused.message.as_str() {
                                "" => format!("the server refused (SFTP status {code})"),
                                said => said.to_owned(),
                            };
                            Err(self.refusal(code, &message))
                        }
                    })
                    .collect()
            }
            // The server's own doing: libssh2's channel still works.
            Err(e) if makes_no_sense(&e) => {
                if !one_at_a_time.swap(true, Ordering::Relaxed) {
                    tracing::warn!(server = %self.server, error = %e, "listing folders one at a time: the server's answers on a second SFTP channel made no sense");
                }
                *self.pipe.locked() = PipeSlot::Refused;
                one_by_one()
            }
            Err(e) => {
                // The pipe stays taken: its stream is in an unknown state.
                self.mark_broken();
                dirs.iter()
                    .map(|_| {
                        io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            format!("{e} (on {})", self.server),
                        )
                    })
                    .map(Err)
                    .collect()
            }
        }
    }

    fn read_lease(&self, path: &Path) -> String {
        let mut text = String::new();
        if let Ok(mut file) = self.sftp.open(path) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

/// The atime a committed upload gets: a random moment up to about twelve
/// days after both now and its mtime. Random, so two uploads never share
/// a version token by chance (one in a million); in the future, so the
/// server's relatime rule does not move it when the file is read.
fn version_nonce(mtime_secs: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    now.max(mtime_secs) + 1 + fastrand::u64(0..1 << 20)
}

/// Names a full disk on the server. SFTP v3 has no error code for it (an
/// OpenSSH server answers ENOSPC with a bare "failure"), so a write that
/// failed asks the file system of the open upload how much room is left
/// (`fstatvfs@openssh.com`); with less than a chunk or two it was the
/// disk. Anything else, or a server without the extension, keeps its error.
fn out_of_space(file: &mut ssh2::File, server: &str, e: io::Error) -> io::Error {
    if super::is_connection_error(&e) {
        return e;
    }
    match file.statvfs() {
        Ok(fs) if fs.f_bavail.saturating_mul(fs.f_frsize) < 2 * CHUNK as u64 => io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "the server is out of space ({} bytes free on {server}); free some space \
                 there and it is copied again",
                fs.f_bavail.saturating_mul(fs.f_frsize)
            ),
        ),
        _ => e,
    }
}

/// libssh2's "no more entries" code for readdir.
fn libssh2_error_file() -> i32 {
    -16
}

fn home() -> PathBuf {
    directories::BaseDirs::new()
        .map(|d| d.home_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Standard base64 without padding, as OpenSSH prints fingerprints.
fn base64_unpadded(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A listing in progress: folders to list and files to hash are jobs (see
/// [`walk::run`]), run by as many workers as the pool has sessions, each
/// job on a session of its own.
struct Walk<'a> {
    shared: &'a Shared,
    cache: &'a BaseTree,
    ignore: &'a IgnoreRules,
    /// The replica as `describe` names it, for the error of the root.
    name: String,
    now: i64,
}

/// One piece of work of a listing.
enum Job {
    /// List the root.
    ListRoot,
    /// List the folders at the paths, each with its mode: up to
    /// [`pipe::BATCH`] of them together (see [`batch_folders`]).
    ListFolders(Vec<(RelPath, Option<Mode>)>),
    /// Read a file whose version the base does not know, to hash it.
    Hash(RelPath, RemoteStat),
}

/// Packs the folders `jobs` list into jobs of up to [`pipe::BATCH`]
/// folders each, which a session lists in the round trips of one.
fn batch_folders(jobs: &mut Vec<Job>) {
    let mut folders = Vec::new();
    jobs.retain_mut(|job| match job {
        Job::ListFolders(some) => {
            folders.append(some);
            false
        }
        _ => true,
    });
    while !folders.is_empty() {
        let rest = folders.split_off(folders.len().min(pipe::BATCH));
        jobs.push(Job::ListFolders(folders));
        folders = rest;
    }
}

/// What one job of a walk found.
type Found = walk::Found<Job>;

/// Leaves `rel` alone this time, saying why (see [`walk::Found::hold`]).
fn hold(found: &mut Found, rel: RelPath, op: &'static str, e: io::Error) {
    let error = ReplicaError::io(op, &rel, e);
    found.hold(rel, op, error);
}

impl Walk<'_> {
    /// Runs one job on a session of its own; an error is the root's own
    /// listing failing (or no session to be had). A session that broke
    /// during the job breaks the walk off: what it saw is partial.
    fn run_job(&self, job: Job, found: &mut Found) -> Result<(), ReplicaError> {
        let conn = self.shared.conn()?;
        let result = match job {
            Job::ListRoot => conn
                .read_dir(&self.shared.root)
                .map(|entries| self.take_children(&conn, None, entries, found))
                .map_err(|e| ReplicaError::io("list", &self.name, e)),
            Job::ListFolders(folders) => {
                let full: Vec<PathBuf> = folders
                    .iter()
                    .map(|(rel, _)| self.shared.full(rel))
                    .collect();
                let read = conn.read_dirs(&full, &self.shared.list_one_at_a_time);
                for ((rel, mode), read) in folders.into_iter().zip(read) {
                    match read {
                        Ok(entries) => {
                            self.take_children(&conn, Some(&rel), entries, found);
                            found.out.tree.insert(rel, SideEntry::new(Entry::dir(mode)));
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => hold(found, rel, "list the folder", e),
                    }
                }
                Ok(())
            }
            Job::Hash(rel, stat) => {
                self.hash_file(&conn, rel, stat, found);
                Ok(())
            }
        };
        batch_folders(&mut found.jobs);
        if conn.is_broken() {
            found.broken.get_or_insert(ReplicaError::Offline {
                remote: self.shared.server(),
                reason: "the connection broke during the listing".to_owned(),
            });
        }
        result
    }

    /// Takes in the `entries` of the folder at `parent` (or the root), all
    /// of it read: nothing is recorded of a folder read in part.
    fn take_children(
        &self,
        conn: &Conn,
        parent: Option<&RelPath>,
        entries: Vec<(std::ffi::OsString, RemoteStat)>,
        found: &mut Found,
    ) {
        for (name, stat) in entries {
            let Some(name) = name.to_str() else {
                let shown = match parent {
                    Some(parent) => format!("{parent}/{}", name.to_string_lossy()),
                    None => name.to_string_lossy().into_owned(),
                };
                found.note(
                    None,
                    format!(
                        "{shown:?} on the server is not synced: its name is not valid UTF-8; \
                         rename it to sync it"
                    ),
                );
                continue;
            };
            if let Some(rel) = walk::child_path(parent, name, found) {
                self.visit(conn, rel, stat, found);
            }
        }
    }

    /// Sorts one entry: skipped with a note, recorded, or a job to do.
    fn visit(&self, conn: &Conn, rel: RelPath, stat: RemoteStat, found: &mut Found) {
        if self.ignore.is_ignored(&rel, stat.kind == Kind::Dir) {
            if stat.kind == Kind::File && walk::is_stale_temp(&rel, stat.mtime_secs, self.now) {
                tracing::info!(path = %rel, "removing a temporary upload left by an interrupted write");
                let _ = conn.sftp.unlink(&self.shared.full(&rel));
            }
            return;
        }
        // Held, as on a local folder: a folder replaced by a link must not
        // read as deleted, and nothing is written through one.
        if matches!(stat.kind, Kind::Symlink | Kind::Other) || rel.too_deep() {
            let message = match stat.kind {
                _ if rel.too_deep() => rel.too_deep_message(),
                Kind::Symlink => SYMLINK_MESSAGE.to_owned(),
                _ => SPECIAL_FILE_MESSAGE.to_owned(),
            };
            found.note(Some(rel.clone()), message);
            found.out.held.push(rel);
            return;
        }
        match stat.kind {
            Kind::Symlink | Kind::Other => {}
            Kind::Dir => found.jobs.push(Job::ListFolders(vec![(rel, stat.mode)])),
            Kind::File => {
                let version = stat.version();
                match walk::cached_hash(self.cache, &rel, &version) {
                    Some(hash) => insert_file(&mut found.out, rel, &stat, hash, version),
                    None => found.jobs.push(Job::Hash(rel, stat)),
                }
            }
        }
    }

    fn hash_file(&self, conn: &Conn, rel: RelPath, stat: RemoteStat, found: &mut Found) {
        let full = self.shared.full(&rel);
        match hash_remote(conn, &full) {
            Ok(hash) => {
                found.out.hashed_files += 1;
                // A file that changed while it was read is still being
                // written: leave it for the next round. Only size and
                // mtime count: reading may itself have moved the atime,
                // and the token taken after the read already has it.
                match conn.lstat(&full) {
                    Ok(Some(after))
                        if after.kind == Kind::File
                            && after.size == stat.size
                            && after.mtime_secs == stat.mtime_secs =>
                    {
                        insert_file(&mut found.out, rel, &stat, hash, after.version())
                    }
                    Ok(None) => {}
                    Ok(Some(_)) => found.out.held.push(rel),
                    Err(e) => hold(found, rel, "look at", e),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => hold(found, rel, "read", e),
        }
    }
}

fn insert_file(
    out: &mut Listing,
    rel: RelPath,
    stat: &RemoteStat,
    hash: ContentHash,
    version: String,
) {
    let entry = SideEntry {
        entry: Entry::File(FileMeta {
            hash,
            size: stat.size,
            mtime_ns: stat.mtime_ns(),
            mode: stat.mode,
        }),
        id: None,
        version: Some(version.into()),
    };
    out.tree.insert(rel, entry);
}

fn hash_remote(conn: &Conn, full: &Path) -> io::Result<ContentHash> {
    let mut file = conn.sftp.open(full).map_err(|e| conn.io_error(e))?;
    let mut hasher = blake3::Hasher::new();
    crate::iobuf::with_buffer(|buf| -> io::Result<()> {
        loop {
            let n = file.read(buf)?;
            if n == 0 {
                return Ok(());
            }
            hasher.update(&buf[..n]);
        }
    })?;
    Ok(ContentHash(*hasher.finalize().as_bytes()))
}

/// A download: keeps its session checked out while it is read.
struct Download<'a> {
    // Declared first so the file is closed before the session goes back.
    file: ssh2::File,
    conn: Checked<'a>,
    shared: &'a Shared,
}

impl Read for Download<'_> {
    /// A read that fails because the connection went reports
    /// `ConnectionAborted`, so the writing side classifies it as offline.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf).map_err(|e| {
            if super::is_connection_error(&e) || !self.conn.alive(&self.shared.root) {
                self.conn.mark_broken();
                io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("{e} (the connection to {} broke)", self.shared.server()),
                )
            } else {
                e
            }
        })
    }
}

impl Replica for SftpReplica {
    fn forget_login(&self) {
        // Each session logged in once, when it was made.
        self.shared.pool.retire();
    }

    fn describe(&self) -> String {
        let login = &self.shared.login;
        let t = &login.target;
        format!("sftp://{}@{}:{}{}", login.user, t.host, t.port, t.path)
    }

    fn capabilities(&self) -> Capabilities {
        // Every commit is a few round trips to the server; the pool has a
        // session for each of a batch's concurrent commits.
        Capabilities {
            parallel_commits: true,
            modes: true,
            ..Capabilities::default()
        }
    }

    fn root_state(&self) -> Result<RootState, ReplicaError> {
        let s = &*self.shared;
        kit::root_state(s, &format!("{} on {}", s.root.display(), s.server()))
    }

    fn mark_root(&self) -> Result<(), ReplicaError> {
        let s = &self.shared;
        let conn = s.conn()?;
        let meta = s.meta_dir();
        conn.mkdir_all(&meta, 0o755)
            .map_err(|e| ReplicaError::io("create", meta.display(), e))?;
        let marker = meta.join("root");
        let note = "This folder is kept in sync by Prism Sync. Do not delete this file: \
                    without it the agent treats the folder as missing and refuses to sync \
                    deletions.\n";
        match conn.sftp.open_mode(
            &marker,
            OpenFlags::WRITE | OpenFlags::EXCLUSIVE,
            0o644,
            OpenType::File,
        ) {
            Ok(mut file) => file
                .write_all(note.as_bytes())
                .map_err(|e| ReplicaError::io("create", marker.display(), e)),
            Err(e) => match conn.lstat(&marker) {
                Ok(Some(_)) => Ok(()),
                _ => Err(conn.error("create", marker.display(), e)),
            },
        }
    }

    fn list(
        &self,
        scope: &Scope,
        cache: &BaseTree,
        ignore: &IgnoreRules,
    ) -> Result<Listing, ReplicaError> {
        let s = &self.shared;
        // A connection that died since the last call is noticed here, the
        // first call of a sync; one fresh attempt saves a failed sync.
        let mut conn = s.conn()?;
        if matches!(conn.lstat(&s.root), Err(e) if e.kind() == io::ErrorKind::ConnectionAborted) {
            // Given back first: it is broken, so that retires the idle
            // sessions, and a pool of one has nothing else to give.
            drop(conn);
            conn = s.conn()?;
        }
        // A new sync looks at its upload folders afresh.
        s.upload_folders.forget_all();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let walk = Walk {
            shared: s,
            cache,
            ignore,
            name: self.describe(),
            now,
        };
        let mut found = Found::default();
        match scope {
            Scope::Full => found.jobs.push(Job::ListRoot),
            Scope::Paths(paths) => {
                'paths: for path in paths {
                    if paths.iter().any(|o| o != path && path.is_within(o)) {
                        continue;
                    }
                    // Only real folders lead to a path: below a file it
                    // does not exist for syncing; below a symbolic link it
                    // is not known, and the link is held.
                    for ancestor in path.ancestors() {
                        match conn.lstat(&s.full(&ancestor)) {
                            Ok(Some(stat)) if stat.kind == Kind::Dir => {}
                            Ok(Some(stat)) if stat.kind != Kind::File => {
                                walk.visit(&conn, ancestor, stat, &mut found);
                                continue 'paths;
                            }
                            Ok(_) => continue 'paths,
                            Err(e) => {
                                hold(&mut found, path.clone(), "look at a folder above", e);
                                continue 'paths;
                            }
                        }
                    }
                    match conn.lstat(&s.full(path)) {
                        Ok(Some(stat)) => walk.visit(&conn, path.clone(), stat, &mut found),
                        Ok(None) => {}
                        Err(e) => hold(&mut found, path.clone(), "look at", e),
                    }
                }
            }
        }
        if conn.is_broken() {
            // What it saw is partial and must not read as deletions.
            found.broken.get_or_insert(ReplicaError::Offline {
                remote: s.server(),
                reason: "the connection broke during the listing".to_owned(),
            });
        }
        // The workers check out sessions of their own; holding this one
        // meanwhile would starve a pool of one.
        drop(conn);
        batch_folders(&mut found.jobs);
        let workers = s.pool.size();
        walk::run(&walk.name, workers, found, |job, found| {
            walk.run_job(job, found)
        })
    }

    fn stat(&self, path: &RelPath) -> Result<Expect, ReplicaError> {
        let s = &self.shared;
        let conn = s.conn()?;
        let found = conn
            .lstat(&s.full(path))
            .map_err(|e| ReplicaError::io("inspect", path, e))?;
        Ok(match found {
            None => Expect::Absent,
            Some(stat) if stat.kind == Kind::Dir => Expect::Dir,
            Some(stat) => Expect::File {
                size: stat.size,
                mtime_ns: stat.mtime_ns(),
                mode: stat.mode,
                version: Some(stat.version()),
            },
        })
    }

    fn open(&self, path: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        let s = &self.shared;
        let conn = s.conn()?;
        let full = s.full(path);
        // RACE: a symbolic link swapped in between this check and the open
        // would be followed by the server; the bytes are then verified
        // against the planned hash, so they cannot land unnoticed.
        match conn.lstat(&full) {
            Ok(Some(stat)) if stat.kind == Kind::File => {}
            Ok(_) => {
                return Err(ReplicaError::SourceChanged {
                    path: path.to_string(),
                });
            }
            Err(e) => return Err(ReplicaError::io("read", path, e)),
        }
        let file = conn
            .sftp
            .open(&full)
            .map_err(|e| conn.error("read", path, e))?;
        Ok(Box::new(Download {
            file,
            conn,
            shared: s,
        }))
    }

    /// Opens the file on the server and moves the handle's read position
    /// to `offset` (SFTP reads name their offset, so nothing before it is
    /// sent). The file must still have the listed size and mtime: bytes of
    /// another version are never continued.
    fn open_at(
        &self,
        path: &RelPath,
        offset: u64,
        expected: &FileMeta,
    ) -> Result<Opened<'_>, ReplicaError> {
        let s = &self.shared;
        let conn = s.conn()?;
        let full = s.full(path);
        // RACE: as in `open`; and a version written between this check and
        // the open is caught by the hash over the whole file.
        match conn.lstat(&full) {
            Ok(Some(stat))
                if stat.kind == Kind::File
                    && stat.size == expected.size
                    && stat.mtime_ns() == expected.mtime_ns => {}
            Ok(_) => {
                return Err(ReplicaError::SourceChanged {
                    path: path.to_string(),
                });
            }
            Err(e) => return Err(s.transfer_error(&conn, "read", path, e)),
        }
        let mut file = conn
            .sftp
            .open(&full)
            .map_err(|e| conn.error("read", path, e))?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| ReplicaError::io("read", path, e))?;
            tracing::debug!(%path, offset, "reading from an offset");
        }
        Ok((
            Box::new(Download {
                file,
                conn,
                shared: s,
            }),
            offset,
        ))
    }

    fn stage(
        &self,
        path: &RelPath,
        content: &mut dyn Read,
        hash: &ContentHash,
        mtime_ns: i64,
        mode: Option<Mode>,
    ) -> Result<StagedWrite, ReplicaError> {
        let s = &self.shared;
        let conn = s.conn()?;
        let name = temp_name_for(path.file_name());
        let temp_rel = match path.parent() {
            Some(parent) => format!("{parent}/{name}"),
            None => name,
        };
        let temp = s.at(&temp_rel);
        // A file cannot exist without its folder; a partial sync may get
        // here before the folder's own action did. The look at the folder
        // also refuses one that became a symlink since the listing, which
        // the upload would otherwise follow out of the root (unless one
        // was just made: see `RecentFolders`).
        let parent = temp.parent().unwrap_or(&s.root);
        let make_parent = || {
            conn.mkdir_all(parent, DEFAULT_DIR_MODE)
                .map_err(|e| ReplicaError::io("create the folder of", path, e))?;
            s.upload_folders.saw(parent);
            Ok::<_, ReplicaError>(())
        };
        if !s.upload_folders.fresh(parent) {
            make_parent()?;
        }
        // Created with the mode, which the server's umask can only narrow;
        // the commit gives it exactly that mode together with its mtime
        // (one round trip for both), before it is renamed in.
        let open = || {
            conn.sftp.open_mode(
                &temp,
                OpenFlags::WRITE | OpenFlags::EXCLUSIVE,
                mode.map_or(DEFAULT_FILE_MODE, Mode::bits) as i32,
                OpenType::File,
            )
        };
        let mut file = match open() {
            // A folder taken as there may have been removed since: looked
            // at (and made) again, once.
            Err(e) if e.code() == ErrorCode::SFTP(2) && s.upload_folders.forget(parent) => {
                make_parent()?;
                open()
            }
            opened => opened,
        }
        .map_err(|e| conn.error("write", path, e))?;
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        // The thread's reusable buffer: a fresh 256 KiB one per file was
        // an mmap, its page faults and a munmap for every small upload.
        let written: io::Result<()> = crate::iobuf::with_buffer(|buf| {
            loop {
                let n = content.read(buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n])?;
                size += n as u64;
            }
            // Durable before it is renamed in, where the server offers it
            // (fsync@openssh.com); other servers give what they give.
            let _ = file.fsync();
            Ok(())
        });
        // Asked while the upload is still open: its handle names the file
        // system that refused it.
        let written = written.map_err(|e| out_of_space(&mut file, &conn.server, e));
        drop(file);
        let discard = || {
            let _ = conn.sftp.unlink(&temp);
        };
        if let Err(e) = written {
            discard();
            return Err(s.transfer_error(&conn, "write", path, e));
        }
        let staged_hash = ContentHash(*hasher.finalize().as_bytes());
        if staged_hash != *hash {
            discard();
            return Err(ReplicaError::SourceChanged {
                path: path.to_string(),
            });
        }
        let upload = StagedUpload {
            temp: temp_rel,
            mtime_secs: mtime_ns.div_euclid(1_000_000_000).max(0) as u64,
            mode,
        };
        Ok(StagedWrite {
            path: path.clone(),
            temp: upload.handle(),
            hash: staged_hash,
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
        let s = &*self.shared;
        let path = &staged.path;
        let upload = StagedUpload::from_handle(&staged.temp).ok_or_else(|| {
            ReplicaError::Other(format!("{path}: not a write this replica staged"))
        })?;
        let nonce = version_nonce(upload.mtime_secs);
        // What the upload is once this commit set its times and mode, where
        // it sets the whole version token itself (with a mode).
        let set = upload.mode.map(|mode| RemoteStat {
            kind: Kind::File,
            size: staged.size,
            mtime_secs: upload.mtime_secs as i64,
            atime_secs: nonce as i64,
            mode: Some(mode),
            special: 0,
        });
        // The upload gets its mtime, its exact mode and a fresh version
        // nonce (one round trip for all three) once the target checked out.
        let prepare = || {
            let conn = s.conn()?;
            let stat = FileStat {
                size: None,
                uid: None,
                gid: None,
                perm: upload.mode.map(Mode::bits),
                atime: Some(nonce),
                mtime: Some(upload.mtime_secs),
            };
            conn.sftp
                .setstat(&s.at(&upload.temp), stat)
                .map_err(|e| conn.error("set the time of", path, e))?;
            Ok(set.filter(|_| s.setstat_kept.is_known_kept()))
        };
        let (now, trash_name) = careful::commit(s, &upload.temp, path, expect, prepare)?;
        if let Some(set) = set {
            s.setstat_kept.learn(|| now.is_version_of(&set));
        }
        let entry = SideEntry {
            entry: Entry::File(FileMeta {
                hash: staged.hash,
                size: now.size,
                mtime_ns: now.mtime_ns(),
                mode: now.mode,
            }),
            id: None,
            version: Some(now.version().into()),
        };
        Ok((entry, trash_name))
    }

    fn discard(&self, staged: StagedWrite) {
        let s = &self.shared;
        if let (Some(upload), Ok(conn)) = (StagedUpload::from_handle(&staged.temp), s.conn()) {
            let _ = conn.sftp.unlink(&s.at(&upload.temp));
        }
    }

    fn mkdir(&self, path: &RelPath, mode: Option<Mode>) -> Result<SideEntry, ReplicaError> {
        let s = &self.shared;
        let conn = s.conn()?;
        let full = s.full(path);
        let made = conn
            .sftp
            .mkdir(&full, mode.map_or(DEFAULT_DIR_MODE, Mode::bits) as i32);
        // Made with the mode less the server's umask: given exactly it. A
        // folder that was there already keeps its own.
        if let (Ok(()), Some(mode)) = (&made, mode) {
            conn.sftp
                .setstat(&full, perm_only(mode.bits()))
                .map_err(|e| conn.error("set the permissions of", path, e))?;
        }
        match conn.lstat(&full) {
            Ok(Some(stat)) if stat.kind == Kind::Dir => Ok(SideEntry::new(Entry::dir(stat.mode))),
            Ok(Some(_)) => Err(ReplicaError::Changed {
                path: path.to_string(),
            }),
            Ok(None) => Err(match made {
                Err(e) => conn.error("create folder", path, e),
                Ok(()) => ReplicaError::Changed {
                    path: path.to_string(),
                },
            }),
            Err(e) => Err(ReplicaError::io("create folder", path, e)),
        }
    }

    fn set_mode(&self, path: &RelPath, expected: &Entry, mode: Mode) -> Result<(), ReplicaError> {
        let s = &self.shared;
        let conn = s.conn()?;
        let full = s.full(path);
        let found = conn
            .lstat(&full)
            .map_err(|e| ReplicaError::io("inspect", path, e))?;
        let Some(found) = found.filter(|found| {
            found.matches(&Expect::of(Some(expected))) && found.mode == expected.mode()
        }) else {
            return Err(ReplicaError::Changed {
                path: path.to_string(),
            });
        };
        // RACE: a chmod by someone else between the look above and this
        // call is overwritten; SFTP has no compare-and-set.
        conn.sftp
            .setstat(&full, perm_only(found.special | mode.bits()))
            .map_err(|e| conn.error("change the permissions of", path, e))
    }

    /// SFTP v3 renames refuse an existing target (OpenSSH links files and
    /// checks folders first), so nothing is replaced. A folder moves with
    /// everything inside it in one rename.
    fn rename(&self, from: &RelPath, to: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        careful::rename(&*self.shared, from, to, expect)
    }

    fn remove(&self, path: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        self.remove_naming_trash(path, expect).map(|_| ())
    }

    fn remove_naming_trash(
        &self,
        path: &RelPath,
        expect: &Expect,
    ) -> Result<Option<RelPath>, ReplicaError> {
        careful::remove(&*self.shared, path, expect)
    }

    fn open_trashed(&self, name: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        let s = &self.shared;
        let conn = s.conn()?;
        let full = s.at(&format!("{}/{name}", kit::trash_dir()));
        // The name may come from another device's trash log: every folder
        // on the way must be a real one, so a symbolic link planted in the
        // trash cannot lead the read out of the remote folder.
        let not_there = || {
            ReplicaError::io(
                "read the trashed version",
                name,
                io::Error::new(io::ErrorKind::NotFound, "not in the remote trash"),
            )
        };
        for folder in std::iter::once(None).chain(name.ancestors().map(Some)) {
            let folder = match folder {
                None => s.at(&kit::trash_dir()),
                Some(folder) => s.at(&format!("{}/{folder}", kit::trash_dir())),
            };
            match conn.lstat(&folder) {
                Ok(Some(stat)) if stat.kind == Kind::Dir => {}
                Ok(_) => return Err(not_there()),
                Err(e) => return Err(ReplicaError::io("read the trashed version", name, e)),
            }
        }
        // RACE: as in `open`; the caller checks the bytes against the
        // version's recorded hash.
        match conn.lstat(&full) {
            Ok(Some(stat)) if stat.kind == Kind::File => {}
            Ok(_) => return Err(not_there()),
            Err(e) => return Err(ReplicaError::io("read the trashed version", name, e)),
        }
        let file = conn
            .sftp
            .open(&full)
            .map_err(|e| conn.error("read the trashed version", name, e))?;
        Ok(Box::new(Download {
            file,
            conn,
            shared: s,
        }))
    }

    fn purge_trash(&self, older_than: Duration) -> Result<usize, ReplicaError> {
        kit::purge_trash(&*self.shared, older_than)
    }

    fn lease(&self, device: &str, ttl: Duration) -> Result<Option<Box<dyn Lease>>, ReplicaError> {
        let s = &self.shared;
        let dir = s.meta_dir();
        {
            // Given back before `acquire` checks out a session of its own.
            let conn = s.conn()?;
            conn.mkdir_all(&dir, 0o755)
                .map_err(|e| ReplicaError::io("create", dir.display(), e))?;
        }
        let lease = SftpLease {
            shared: self.shared.clone(),
            path: dir.join("lease"),
            owner: super::lease::owner(device),
            ttl,
            own: None,
        };
        lease.acquire()?;
        Ok(Some(Box::new(lease)))
    }

    fn read_record(&self, name: &str) -> Result<Option<String>, ReplicaError> {
        let s = &self.shared;
        let path = s.meta_dir().join(name);
        let conn = s.conn()?;
        let file = match conn.sftp.open(&path) {
            Ok(file) => file,
            Err(e) if e.code() == ErrorCode::SFTP(2) => return Ok(None),
            Err(e) => return Err(conn.error("read", path.display(), e)),
        };
        let mut text = String::new();
        file.take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| s.transfer_error(&conn, "read", path.display(), e))?;
        Ok(Some(text))
    }

    /// Uploaded to a temporary name and renamed in. SFTP renames never
    /// replace, so an existing record is removed just before: a crash
    /// between the two leaves no record, which reads as none.
    fn write_record(&self, name: &str, content: &str) -> Result<(), ReplicaError> {
        let s = &self.shared;
        let path = s.meta_dir().join(name);
        let conn = s.conn()?;
        if let Some(parent) = path.parent() {
            conn.mkdir_all(parent, 0o755)
                .map_err(|e| ReplicaError::io("create", parent.display(), e))?;
        }
        let record_name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = path.with_file_name(temp_name_for(&record_name));
        let uploaded = conn
            .sftp
            .open_mode(
                &temp,
                OpenFlags::WRITE | OpenFlags::EXCLUSIVE,
                0o644,
                OpenType::File,
            )
            .map_err(|e| conn.error("write", path.display(), e))
            .and_then(|mut file| {
                file.write_all(content.as_bytes())
                    .map_err(|e| s.transfer_error(&conn, "write", path.display(), e))?;
                let _ = file.fsync();
                Ok(())
            })
            .and_then(|()| {
                if conn.sftp.rename(&temp, &path, None).is_ok() {
                    return Ok(());
                }
                if conn.lstat(&path).ok().flatten().is_some() {
                    let _ = conn.sftp.unlink(&path);
                }
                conn.sftp
                    .rename(&temp, &path, None)
                    .map_err(|e| conn.error("replace", path.display(), e))
            });
        if uploaded.is_err() {
            let _ = conn.sftp.unlink(&temp);
        }
        uploaded
    }

    fn list_records(&self, folder: &str) -> Result<Vec<String>, ReplicaError> {
        kit::list_records(&*self.shared, folder)
    }

    fn remove_record(&self, name: &str) -> Result<(), ReplicaError> {
        let s = &self.shared;
        let path = s.meta_dir().join(name);
        let conn = s.conn()?;
        match conn.sftp.unlink(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.code() == ErrorCode::SFTP(2) => Ok(()),
            Err(e) => Err(conn.error("remove", path.display(), e)),
        }
    }
}

/// The advisory lease of an SFTP remote: `.prism-sync/lease`, holding
/// `EXPIRES DEVICE ID PID HOST`, as for a remote folder, and created with
/// that record in one step (see `SftpLeaseFile::create`).
struct SftpLease {
    shared: Arc<Shared>,
    path: PathBuf,
    owner: super::lease::Owner,
    ttl: Duration,
    /// The session renewals use, outside the pool: long transfers may hold
    /// every pooled session for longer than the lease lives, and a renewal
    /// that waited for one would let the lease expire under them.
    own: Option<Conn>,
}

impl SftpLease {
    fn content(&self) -> String {
        super::lease::record(&self.owner, self.ttl, SystemTime::now())
    }

    fn acquire(&self) -> Result<(), ReplicaError> {
        let conn = self.shared.conn()?;
        let file = SftpLeaseFile { lease: self, conn };
        super::lease::acquire(&file, SystemTime::now())
    }
}

/// The lease file on a session, for [`super::lease::acquire`].
struct SftpLeaseFile<'a> {
    lease: &'a SftpLease,
    conn: Checked<'a>,
}

impl super::lease::LeaseFile for SftpLeaseFile<'_> {
    /// Writes the record to a temporary name and renames it to the lease,
    /// which never replaces on SFTP: the lease appears with its record in
    /// it.
    fn create(&self) -> Result<bool, ReplicaError> {
        let (lease, conn) = (self.lease, &self.conn);
        let path = &lease.path;
        let temp = path.with_file_name(temp_name_for("lease"));
        let written = conn
            .sftp
            .open_mode(
                &temp,
                OpenFlags::WRITE | OpenFlags::EXCLUSIVE,
                0o644,
                OpenType::File,
            )
            .map_err(|e| conn.error("lock", path.display(), e))
            .and_then(|mut file| {
                file.write_all(lease.content().as_bytes())
                    .map_err(|e| lease.shared.transfer_error(conn, "lock", path.display(), e))
            });
        let renamed = written.map(|()| conn.sftp.rename(&temp, path, None));
        if !matches!(renamed, Ok(Ok(()))) {
            let _ = conn.sftp.unlink(&temp);
        }
        match renamed? {
            Ok(()) => Ok(true),
            // OpenSSH answers "failure" to a rename onto an existing file:
            // look whether one is there.
            Err(e) => match conn.lstat(path) {
                Ok(Some(_)) => Ok(false),
                Ok(None) => Err(conn.error("lock", path.display(), e)),
                Err(e) => Err(ReplicaError::io("lock", path.display(), e)),
            },
        }
    }

    fn read(&self) -> Result<Option<(String, Option<String>)>, ReplicaError> {
        let path = &self.lease.path;
        match self.conn.lstat(path) {
            Ok(None) => Ok(None),
            Ok(Some(_)) => Ok(Some((self.conn.read_lease(path), None))),
            Err(e) => Err(ReplicaError::io("lock", path.display(), e)),
        }
    }

    fn remove(&self, _version: Option<&str>) {
        let _ = self.conn.sftp.unlink(&self.lease.path);
    }
}

impl Lease for SftpLease {
    fn renew(&mut self) -> Result<(), ReplicaError> {
        // The session idled since the last renewal, and the server may have
        // closed it meanwhile: a fresh one if it does not answer a stat.
        let usable = self
            .own
            .as_ref()
            .is_some_and(|c| !c.broken.load(Ordering::Relaxed) && c.lstat(&self.path).is_ok());
        if !usable {
            self.own = Some(self.shared.login.connect()?);
        }
        let conn = self.own.as_ref().expect("connected just above");
        let current = conn.read_lease(&self.path);
        if !super::lease::held_by(&current, &self.owner) {
            return Err(super::lease::taken_over());
        }
        // SFTP cannot rename over a file, so the lease is rewritten in
        // place with one write of the same length (the expiry keeps its
        // width), which a reader sees whole.
        let mut file = conn
            .sftp
            .open_mode(&self.path, OpenFlags::WRITE, 0o644, OpenType::File)
            .map_err(|e| conn.error("renew", self.path.display(), e))?;
        file.write_all(self.content().as_bytes())
            .map_err(|e| ReplicaError::io("renew", self.path.display(), e))
    }
}

impl Drop for SftpLease {
    fn drop(&mut self) {
        let s = &self.shared;
        if let Ok(conn) = s.conn() {
            let current = conn.read_lease(&self.path);
            if super::lease::held_by(&current, &self.owner) {
                let _ = conn.sftp.unlink(&self.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_handle_carries_the_upload_and_what_its_commit_sets() {
        for upload in [
            StagedUpload {
                temp: "a b/.prism-tmp-x1-ü/ber.txt".to_owned(),
                mtime_secs: 1_600_000_000,
                mode: Some(Mode::from_bits(0o640)),
            },
            StagedUpload {
                temp: ".prism-tmp-x2-f".to_owned(),
                mtime_secs: 0,
                mode: None,
            },
        ] {
            assert_eq!(StagedUpload::from_handle(&upload.handle()), Some(upload));
        }
        assert_eq!(
            StagedUpload::from_handle(Path::new("/srv/a/.prism-tmp-x")),
            None
        );
    }

    #[test]
    fn fingerprints_are_unpadded_base64() {
        assert_eq!(base64_unpadded(b""), "");
        assert_eq!(base64_unpadded(b"f"), "Zg");
        assert_eq!(base64_unpadded(b"fo"), "Zm8");
        assert_eq!(base64_unpadded(b"foo"), "Zm9v");
        assert_eq!(base64_unpadded(b"foob"), "Zm9vYg");
    }

    #[test]
    fn a_home_relative_url_path_is_relative_on_the_server() {
        let target = |path: &str| SftpTarget {
            user: Some("me".into()),
            host: "nas".into(),
            port: 22,
            path: path.into(),
            known_hosts: None,
            identity_file: None,
            config_dir: None,
            sessions: 4,
            compression: false,
        };
        let replica = SftpReplica::new(target("/~/notes"));
        assert_eq!(replica.shared.root, PathBuf::from("notes"));
        let replica = SftpReplica::new(target("/srv/notes"));
        assert_eq!(replica.shared.root, PathBuf::from("/srv/notes"));
        assert_eq!(replica.describe(), "sftp://me@nas:22/srv/notes");
    }
}
