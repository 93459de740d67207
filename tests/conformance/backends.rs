//! The backends every behaviour runs against, each on one server shared by
//! the whole binary (started on first use, stopped at exit), and what a
//! test may do on a server behind the replica's back ([`Outside`]).
//!
//! Adding a backend: a function here that starts (once) its server and
//! returns a `&'static dyn Backend`, and one line in
//! `network_backends!` (or in `conformance!` for a backend without a
//! network) in `conformance.rs`. A server that keeps each file as a file
//! on this machine gets its [`Outside`] from [`Disk`]; one that does not
//! (an object store) implements [`Outside`] with its own client.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use std::io::Read;

use prism_sync::config::CryptSettings;
use prism_sync::crypt::{Decryptor, Encryptor, Keys, NameCipher, NameMode, Nonce};
use prism_sync::remote::crypt::CryptReplica;
use prism_sync::remote::rclone::{RclonePairSettings, RcloneReplica};
use prism_sync::remote::s3::{
    CredentialSource, Credentials, S3Client, S3Error, S3Replica, S3Settings, sign,
};
use prism_sync::remote::webdav::DEFAULT_REQUEST_TIMEOUT;
use prism_sync::remote::{
    LocalFolder, Replica, SftpReplica, SftpTarget, WebdavReplica, WebdavTarget,
};

use crate::apache::{Apache, Share};
use crate::moto::Moto;
use crate::rclone::Rclone;
use crate::seaweedfs::Seaweed;
use crate::server::Dav;
use crate::shared_server::drop_at_exit;
use crate::sshd::Sshd;

/// One kind of replica on its (shared) server. Every test works in a
/// folder of its own below the server's share, named by the caller.
pub trait Backend: Sync {
    /// A new replica (a new agent, with no connection yet) of `folder`.
    fn replica(&self, folder: &str) -> Box<dyn Replica>;

    /// The loopback port of the server, where there is one.
    fn server_port(&self) -> Option<u16>;

    /// A new replica of `folder` that reaches the server through the
    /// loopback port `port` (a `Link` to [`Backend::server_port`]).
    fn replica_via(&self, folder: &str, port: u16) -> Box<dyn Replica>;

    /// The server's own view of what it stores.
    fn outside(&self) -> &dyn Outside;

    /// Whether the server makes a move that must not replace in one step,
    /// so of agents creating one file at once only one can succeed.
    /// Apache's mod_dav checks `Overwrite: F` and renames in two: there
    /// all can succeed, the last one's version replacing the others (a
    /// RACE the WebDAV backend documents, and which the lease prevents
    /// among agents).
    fn creates_atomically(&self) -> bool {
        true
    }

    /// Whether the server keeps each file's hash with it (S3's object
    /// metadata), so a listing without a base reads no file.
    fn keeps_hashes(&self) -> bool {
        false
    }

    /// How many times a listing without a base reads each file to hash
    /// it: once, or never where the server keeps the hashes.
    fn reads_to_hash_a_new_file(&self) -> u64 {
        if self.keeps_hashes() { 0 } else { 1 }
    }
}

/// What another program on the server does to what the replica sees:
/// paths are relative to the root of a test's folder, `/`-separated.
pub trait Outside: Sync {
    /// Writes `content` at `path` (raw bytes: a name need not be UTF-8),
    /// making the folders above it.
    fn put(&self, folder: &str, path: &[u8], content: &[u8]);
    /// The content at `path`, if there is a file.
    fn read(&self, folder: &str, path: &str) -> Option<Vec<u8>>;
    /// Removes the file at `path`.
    fn remove(&self, folder: &str, path: &str);
    /// The names in the folder `path` (`""`: the root), sorted.
    fn names(&self, folder: &str, path: &str) -> Vec<String>;
    /// The content of every file in the trash (`.prism-sync/trash/`), sorted.
    fn trashed(&self, folder: &str) -> Vec<Vec<u8>>;
    /// Removes the root and everything in it.
    fn remove_root(&self, folder: &str);
    /// Leaves the root there but empty, as a mount point whose disk is
    /// not mounted.
    fn empty_root(&self, folder: &str);
    /// Whether the server shows the name it stores as `name` under that
    /// very name (`rclone serve` shows control characters as their
    /// Unicode pictures, a name that is fine to sync).
    fn shows_as_is(&self, name: &[u8]) -> bool;
    /// Whether the server can store a file named `name` at all (moto's
    /// router answers 404 to a key with a control character).
    fn holds(&self, _name: &[u8]) -> bool {
        true
    }
}

/// An [`Outside`] for a server that keeps each file as a file on this
/// machine's disk, below `share`.
pub struct Disk {
    share: PathBuf,
    /// Gives a path the test made to the user the server runs as.
    hand_over: fn(&Path),
    shows_as_is: fn(&[u8]) -> bool,
}

impl Disk {
    fn root(&self, folder: &str) -> PathBuf {
        self.share.join(folder)
    }

    fn path(&self, folder: &str, path: &[u8]) -> PathBuf {
        self.root(folder).join(std::ffi::OsStr::from_bytes(path))
    }
}

impl Outside for Disk {
    fn put(&self, folder: &str, path: &[u8], content: &[u8]) {
        let full = self.path(folder, path);
        let parent = full.parent().unwrap();
        fs::create_dir_all(parent).unwrap();
        fs::write(&full, content).unwrap();
        (self.hand_over)(&self.root(folder));
    }

    fn read(&self, folder: &str, path: &str) -> Option<Vec<u8>> {
        fs::read(self.path(folder, path.as_bytes())).ok()
    }

    fn remove(&self, folder: &str, path: &str) {
        fs::remove_file(self.path(folder, path.as_bytes())).unwrap();
    }

    fn names(&self, folder: &str, path: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path(folder, path.as_bytes()))
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn trashed(&self, folder: &str) -> Vec<Vec<u8>> {
        let mut found = Vec::new();
        let mut stack = vec![self.root(folder).join(".prism-sync/trash")];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().unwrap().is_dir() {
                    stack.push(entry.path());
                } else {
                    found.push(fs::read(entry.path()).unwrap());
                }
            }
        }
        found.sort();
        found
    }

    fn remove_root(&self, folder: &str) {
        fs::remove_dir_all(self.root(folder)).unwrap();
    }

    fn empty_root(&self, folder: &str) {
        self.remove_root(folder);
        fs::create_dir(self.root(folder)).unwrap();
        (self.hand_over)(&self.root(folder));
    }

    fn shows_as_is(&self, name: &[u8]) -> bool {
        (self.shows_as_is)(name)
    }
}

fn nothing_to_hand_over(_: &Path) {}

fn every_name_as_is(_: &[u8]) -> bool {
    true
}

fn control_characters_as_pictures(name: &[u8]) -> bool {
    !name.iter().any(|b| b.is_ascii_control())
}

/// A `file://` remote: a folder on this machine.
pub struct Local {
    disk: Disk,
}

pub fn local() -> &'static dyn Backend {
    static LOCAL: OnceLock<Local> = OnceLock::new();
    LOCAL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().to_path_buf();
        drop_at_exit(dir);
        Local {
            disk: Disk {
                share,
                hand_over: nothing_to_hand_over,
                shows_as_is: every_name_as_is,
            },
        }
    })
}

impl Backend for Local {
    fn replica(&self, folder: &str) -> Box<dyn Replica> {
        Box::new(LocalFolder::remote(self.disk.root(folder)))
    }

    fn server_port(&self) -> Option<u16> {
        None
    }

    fn replica_via(&self, folder: &str, _port: u16) -> Box<dyn Replica> {
        // No network between a folder and its agent.
        self.replica(folder)
    }

    fn outside(&self) -> &dyn Outside {
        &self.disk
    }
}

/// SFTP on the real sshd.
pub struct Sftp {
    disk: Disk,
    port: u16,
    user: String,
    client_key: PathBuf,
    host_key_line: String,
    scratch: PathBuf,
    writing_known_hosts: std::sync::Mutex<()>,
}

pub fn sftp() -> &'static dyn Backend {
    sftp_server()
}

fn sftp_server() -> &'static Sftp {
    static SFTP: OnceLock<Sftp> = OnceLock::new();
    SFTP.get_or_init(|| {
        let server = Sshd::start();
        let sftp = Sftp {
            disk: Disk {
                share: server.served(),
                hand_over: nothing_to_hand_over,
                shows_as_is: every_name_as_is,
            },
            port: server.port(),
            user: server.user.clone(),
            client_key: server.client_key(),
            host_key_line: server.host_key_line(),
            scratch: server.scratch("client"),
            writing_known_hosts: std::sync::Mutex::new(()),
        };
        drop_at_exit(server);
        sftp
    })
}

impl Backend for Sftp {
    fn replica(&self, folder: &str) -> Box<dyn Replica> {
        self.replica_via(folder, self.port)
    }

    fn server_port(&self) -> Option<u16> {
        Some(self.port)
    }

    fn replica_via(&self, folder: &str, port: u16) -> Box<dyn Replica> {
        // The host key is known under the port the replica connects to;
        // written once per port, whole (replicas of other tests read it).
        let known_hosts = self.scratch.join(format!("known_hosts-{port}"));
        {
            let _writing = self.writing_known_hosts.lock().unwrap();
            if !known_hosts.exists() {
                let temp = self.scratch.join(format!("known_hosts-{port}.new"));
                let line = format!("[127.0.0.1]:{port} {}\n", self.host_key_line);
                fs::write(&temp, line).unwrap();
                fs::rename(&temp, &known_hosts).unwrap();
            }
        }
        Box::new(SftpReplica::new(SftpTarget {
            user: Some(self.user.clone()),
            host: "127.0.0.1".into(),
            port,
            path: self.disk.root(folder).display().to_string(),
            known_hosts: Some(known_hosts),
            identity_file: Some(self.client_key.clone()),
            config_dir: None,
            sessions: 4,
            compression: false,
        }))
    }

    fn outside(&self) -> &dyn Outside {
        &self.disk
    }
}

/// WebDAV on a real server's open share: Apache's mod_dav, or
/// `rclone serve webdav` (which ignores conditional headers).
pub struct Webdav {
    disk: Disk,
    creates_atomically: bool,
    port: u16,
    /// The server path of the open share, ending in `/`.
    share_path: String,
}

pub fn webdav_apache() -> &'static dyn Backend {
    static APACHE: OnceLock<Webdav> = OnceLock::new();
    APACHE.get_or_init(|| {
        let server = Apache::start();
        let dav = webdav(&server, Apache::give_to_server, every_name_as_is, false);
        drop_at_exit(server);
        dav
    })
}

pub fn webdav_rclone() -> &'static dyn Backend {
    static RCLONE: OnceLock<Webdav> = OnceLock::new();
    RCLONE.get_or_init(|| {
        let server = Rclone::start();
        let dav = webdav(
            &server,
            nothing_to_hand_over,
            control_characters_as_pictures,
            true,
        );
        drop_at_exit(server);
        dav
    })
}

fn webdav(
    server: &dyn Dav,
    hand_over: fn(&Path),
    shows_as_is: fn(&[u8]) -> bool,
    creates_atomically: bool,
) -> Webdav {
    let (port, share_path) = server.open_target("");
    Webdav {
        disk: Disk {
            share: server.served(Share::Open),
            hand_over,
            shows_as_is,
        },
        creates_atomically,
        port,
        share_path,
    }
}

impl Backend for Webdav {
    fn replica(&self, folder: &str) -> Box<dyn Replica> {
        self.replica_via(folder, self.port)
    }

    fn server_port(&self) -> Option<u16> {
        Some(self.port)
    }

    fn replica_via(&self, folder: &str, port: u16) -> Box<dyn Replica> {
        Box::new(
            WebdavReplica::new(WebdavTarget {
                tls: false,
                host: "127.0.0.1".into(),
                port: Some(port),
                path: format!("{}{folder}", self.share_path),
                username: None,
                ca_file: None,
                allow_insecure_http_auth: false,
                config_dir: None,
                timeout: DEFAULT_REQUEST_TIMEOUT,
                parallel_requests: 4,
            })
            .unwrap(),
        )
    }

    fn outside(&self) -> &dyn Outside {
        &self.disk
    }

    fn creates_atomically(&self) -> bool {
        self.creates_atomically
    }
}

/// An `rclone:` remote: rclone's `local` backend over a folder of this
/// machine (`Disk` is the folder), or its `sftp` backend on the real sshd
/// (`port` set). Either way through one `rclone rcd`, with an rclone config
/// of the test's own (no user's config is read).
pub struct RcloneRemote {
    disk: Disk,
    /// An rclone config file defining the remote `disk`.
    config: PathBuf,
    /// The sshd, for the `sftp` backend.
    sftp: Option<&'static Sftp>,
    /// `None`: `rclone` on `PATH` (Debian's 1.60.1, which listens on TCP).
    binary: Option<PathBuf>,
}

pub fn rclone_local() -> &'static dyn Backend {
    static RCLONE: OnceLock<RcloneRemote> = OnceLock::new();
    RCLONE.get_or_init(|| rclone_over(None, "rclone"))
}

pub fn rclone_sftp() -> &'static dyn Backend {
    static RCLONE: OnceLock<RcloneRemote> = OnceLock::new();
    RCLONE.get_or_init(|| rclone_over(Some(sftp_server()), "rclone"))
}

/// [`rclone_sftp`] through the current rclone, whose rcd listens on a
/// Unix socket, in a folder of its own on the shared sshd (the tests of
/// both run at once, each in a folder named after its behaviour).
pub fn rclone_current_sftp() -> &'static dyn Backend {
    static RCLONE: OnceLock<RcloneRemote> = OnceLock::new();
    RCLONE.get_or_init(|| RcloneRemote {
        binary: Some(crate::rclone_current::current_rclone()),
        ..rclone_over(Some(sftp_server()), "rclone-current")
    })
}

/// rclone's backend over `folder` of the sshd's share (`sftp`), else
/// over a temporary folder.
fn rclone_over(sftp: Option<&'static Sftp>, folder: &str) -> RcloneRemote {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rclone.conf");
    fs::write(&config, "[disk]\ntype = local\n").unwrap();
    let share = match sftp {
        Some(server) => server.disk.share.join(folder),
        None => dir.path().join("share"),
    };
    fs::create_dir_all(&share).unwrap();
    drop_at_exit(dir);
    RcloneRemote {
        disk: Disk {
            share,
            hand_over: nothing_to_hand_over,
            // rclone's local backend shows control characters as their
            // Unicode pictures; its sftp backend shows them as they are.
            shows_as_is: if sftp.is_some() {
                every_name_as_is
            } else {
                control_characters_as_pictures
            },
        },
        config,
        sftp,
        binary: None,
    }
}

impl Backend for RcloneRemote {
    fn replica(&self, folder: &str) -> Box<dyn Replica> {
        match self.sftp {
            Some(server) => self.replica_via(folder, server.port),
            None => self.replica_via(folder, 0),
        }
    }

    fn server_port(&self) -> Option<u16> {
        self.sftp.map(|server| server.port)
    }

    fn replica_via(&self, folder: &str, port: u16) -> Box<dyn Replica> {
        let root = self.disk.root(folder);
        let remote = match self.sftp {
            Some(server) => format!(
                ":sftp,host=127.0.0.1,port={port},user={},key_file={}:{}",
                server.user,
                server.client_key.display(),
                root.display()
            ),
            None => format!("disk:{}", root.display()),
        };
        let settings = RclonePairSettings {
            config: Some(self.config.clone()),
            binary: self.binary.clone(),
        };
        // One low-level retry: a server cut away shows as offline at once
        // (rclone's default ten take about a minute each time).
        let flags = ["--low-level-retries", "1"];
        Box::new(RcloneReplica::with_flags(&remote, &settings, 4, &flags).unwrap())
    }

    fn outside(&self) -> &dyn Outside {
        &self.disk
    }

    /// rclone has no create-if-absent: agents creating one file at once
    /// can each pass the check before another's move lands.
    fn creates_atomically(&self) -> bool {
        false
    }
}

/// An `rclone:` remote through rclone's `s3` backend on moto: a backend
/// with no folders (a prefix holds none that could stay behind empty),
/// whose hash is the ETag and whose modification time is the object's
/// metadata. Its rclone runs without `AWS_CA_BUNDLE`, which machines here
/// set and which breaks rclone 1.60's S3 backend against a plain-HTTP
/// endpoint: its binary is a script that clears it and runs `rclone`.
pub struct RcloneS3 {
    objects: Objects,
    port: u16,
    settings: RclonePairSettings,
    /// The config's text: a remote `bucket-PORT` for each port a replica
    /// reached moto through (`replica_via`), added as they are needed.
    config_text: std::sync::Mutex<String>,
}

const RCLONE_S3_BUCKET: &str = "conformance-rclone";

pub fn rclone_s3() -> &'static dyn Backend {
    static RCLONE: OnceLock<RcloneS3> = OnceLock::new();
    RCLONE.get_or_init(|| {
        let moto = Moto::shared();
        moto.make_bucket(RCLONE_S3_BUCKET);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("rclone.conf");
        fs::write(&config, "").unwrap();
        let binary = dir.path().join("rclone-without-ca-bundle");
        fs::write(
            &binary,
            "#!/bin/sh\nunset AWS_CA_BUNDLE\nexec rclone \"$@\"\n",
        )
        .unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
        }
        drop_at_exit(dir);
        RcloneS3 {
            objects: Objects {
                bucket: RCLONE_S3_BUCKET,
                port: moto.port(),
                credentials: moto_credentials(),
                names: Names {
                    holds: no_control_characters,
                    shows_as_is: utf8,
                },
                clients: std::sync::Mutex::new(HashMap::new()),
            },
            port: moto.port(),
            settings: RclonePairSettings {
                config: Some(config),
                binary: Some(binary),
            },
            config_text: std::sync::Mutex::new(String::new()),
        }
    })
}

impl RcloneS3 {
    /// The name of a remote in the config for moto on `port`, added (the
    /// whole file replaced: the rcd may be reading it) if it is not there.
    /// A connection string cannot say the endpoint: rclone serves reads
    /// at `/[REMOTE]/PATH`, and the `//` of a URL in it is cleaned away.
    fn remote_on(&self, port: u16) -> String {
        let name = format!("bucket-{port}");
        let mut text = self.config_text.lock().unwrap();
        if !text.contains(&format!("[{name}]")) {
            let credentials = &self.objects.credentials;
            text.push_str(&format!(
                "[{name}]\ntype = s3\nprovider = Other\nendpoint = http://127.0.0.1:{port}\n\
                 access_key_id = {}\nsecret_access_key = {}\n\n",
                credentials.access_key_id,
                credentials.secret_access_key.expose()
            ));
            let config = self.settings.config.as_ref().unwrap();
            let temp = config.with_extension("new");
            fs::write(&temp, text.as_bytes()).unwrap();
            fs::rename(&temp, config).unwrap();
        }
        name
    }
}

impl Backend for RcloneS3 {
    fn replica(&self, folder: &str) -> Box<dyn Replica> {
        self.replica_via(folder, self.port)
    }

    fn server_port(&self) -> Option<u16> {
        Some(self.port)
    }

    fn replica_via(&self, folder: &str, port: u16) -> Box<dyn Replica> {
        let remote = format!("{}:{RCLONE_S3_BUCKET}/{folder}", self.remote_on(port));
        let flags = ["--low-level-retries", "1"];
        Box::new(RcloneReplica::with_flags(&remote, &self.settings, 4, &flags).unwrap())
    }

    fn outside(&self) -> &dyn Outside {
        &self.objects
    }

    /// rclone has no create-if-absent.
    fn creates_atomically(&self) -> bool {
        false
    }
}

/// S3 on a real server: moto (which ignores the copy's conditions) or
/// SeaweedFS (which checks signatures). The test's folder is a prefix of
/// the server's bucket.
pub struct S3 {
    objects: Objects,
    port: u16,
}

pub fn s3_moto() -> &'static dyn Backend {
    static MOTO: OnceLock<S3> = OnceLock::new();
    MOTO.get_or_init(|| {
        let moto = Moto::shared();
        moto.make_bucket(MOTO_BUCKET);
        let names = Names {
            holds: no_control_characters,
            shows_as_is: utf8,
        };
        S3::new(MOTO_BUCKET, moto.port(), moto_credentials(), names)
    })
}

pub fn s3_seaweedfs() -> &'static dyn Backend {
    static SEAWEED: OnceLock<S3> = OnceLock::new();
    SEAWEED.get_or_init(|| {
        let weed = Seaweed::shared();
        // SeaweedFS keeps a backslash as a folder separator.
        let names = Names {
            holds: any_name,
            shows_as_is: utf8_without_backslashes,
        };
        S3::new(Seaweed::BUCKET, weed.port(), weed.credentials(), names)
    })
}

const MOTO_BUCKET: &str = "conformance";

/// Which names an S3 server stores, and which it shows as they are (a key
/// is UTF-8: a name that is not arrives as some UTF-8 name).
#[derive(Clone, Copy)]
struct Names {
    holds: fn(&[u8]) -> bool,
    shows_as_is: fn(&[u8]) -> bool,
}

fn any_name(_: &[u8]) -> bool {
    true
}

fn no_control_characters(name: &[u8]) -> bool {
    !name.iter().any(u8::is_ascii_control)
}

fn utf8(name: &[u8]) -> bool {
    std::str::from_utf8(name).is_ok()
}

fn utf8_without_backslashes(name: &[u8]) -> bool {
    utf8(name) && !name.contains(&b'\\')
}

fn moto_credentials() -> Credentials {
    Credentials {
        access_key_id: "MOTOKEY".into(),
        secret_access_key: prism_sync::secrets::Secret::new("moto-secret".into()),
        session_token: None,
        origin: "the test".into(),
    }
}

impl S3 {
    fn new(bucket: &'static str, port: u16, credentials: Credentials, names: Names) -> S3 {
        S3 {
            objects: Objects {
                bucket,
                port,
                credentials,
                names,
                clients: std::sync::Mutex::new(HashMap::new()),
            },
            port,
        }
    }
}

impl Backend for S3 {
    fn replica(&self, folder: &str) -> Box<dyn Replica> {
        self.replica_via(folder, self.port)
    }

    fn server_port(&self) -> Option<u16> {
        Some(self.port)
    }

    fn replica_via(&self, folder: &str, port: u16) -> Box<dyn Replica> {
        Box::new(S3Replica::new(self.objects.settings(folder, port), 4))
    }

    fn outside(&self) -> &dyn Outside {
        &self.objects
    }

    fn keeps_hashes(&self) -> bool {
        true
    }
}

/// The [`Outside`] of an S3 server: its own client of the test's prefix,
/// and for writes (which must carry no metadata, as another tool's, and
/// may have keys no path may have) a PUT signed here.
pub struct Objects {
    bucket: &'static str,
    port: u16,
    credentials: Credentials,
    names: Names,
    clients: std::sync::Mutex<HashMap<String, std::sync::Arc<S3Client>>>,
}

impl Objects {
    fn settings(&self, folder: &str, port: u16) -> S3Settings {
        let mut settings = S3Settings::new(self.bucket, &format!("{folder}/"));
        settings.endpoint = Some(format!("http://127.0.0.1:{port}"));
        settings.credentials = CredentialSource::explicit(self.credentials.clone());
        settings
    }

    fn client(&self, folder: &str) -> std::sync::Arc<S3Client> {
        let mut clients = self.clients.lock().unwrap();
        clients
            .entry(folder.to_owned())
            .or_insert_with(|| {
                std::sync::Arc::new(S3Client::new(self.settings(folder, self.port)).unwrap())
            })
            .clone()
    }

    /// Every key below `below` (relative to the test's folder).
    fn keys(&self, folder: &str, below: &str) -> Vec<String> {
        let client = self.client(folder);
        let listed = client.list(below, None).unwrap();
        listed.objects.into_iter().map(|o| o.key).collect()
    }
}

impl Outside for Objects {
    fn put(&self, folder: &str, path: &[u8], content: &[u8]) {
        // A key is UTF-8: a name that is not arrives as some UTF-8 name.
        let key = format!("{folder}/{}", String::from_utf8_lossy(path));
        let at = time::OffsetDateTime::now_utc();
        let host = format!("127.0.0.1:{}", self.port);
        let wire_path = format!("/{}/{}", self.bucket, sign::encode_path(&key));
        let headers = vec![
            ("host".to_owned(), host.clone()),
            (
                "x-amz-content-sha256".to_owned(),
                sign::payload_hash(content),
            ),
            ("x-amz-date".to_owned(), sign::amz_date(at)),
        ];
        let signer = sign::Signer {
            access_key_id: &self.credentials.access_key_id,
            secret_access_key: self.credentials.secret_access_key.expose(),
            region: prism_sync::remote::s3::DEFAULT_REGION,
        };
        let authorization = signer.authorization(
            &sign::Request {
                method: "PUT",
                path: &wire_path,
                query: &[],
                headers: &headers,
                payload_hash: &headers[1].1,
            },
            at,
        );
        let mut request = reqwest::blocking::Client::new()
            .put(format!("http://{host}{wire_path}"))
            .header("authorization", authorization)
            .body(content.to_vec());
        for (name, value) in &headers[1..] {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request.send().unwrap();
        assert!(
            response.status().is_success(),
            "PUT {key:?}: {}: {}",
            response.status(),
            response.text().unwrap_or_default()
        );
    }

    fn read(&self, folder: &str, path: &str) -> Option<Vec<u8>> {
        let mut reader = match self.client(folder).get(path, 0, None) {
            Ok(reader) => reader,
            Err(S3Error::NoSuchKey { .. }) => return None,
            Err(e) => panic!("GET {path}: {e}"),
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut bytes).unwrap();
        Some(bytes)
    }

    fn remove(&self, folder: &str, path: &str) {
        self.client(folder).delete(path).unwrap();
    }

    fn names(&self, folder: &str, path: &str) -> Vec<String> {
        let below = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut names: Vec<String> = self
            .keys(folder, &below)
            .iter()
            .filter_map(|key| key[below.len()..].split('/').next())
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn trashed(&self, folder: &str) -> Vec<Vec<u8>> {
        let mut found: Vec<Vec<u8>> = self
            .keys(folder, ".prism-sync/trash/")
            .iter()
            .filter_map(|key| self.read(folder, key))
            .collect();
        found.sort();
        found
    }

    fn remove_root(&self, folder: &str) {
        let client = self.client(folder);
        for key in self.keys(folder, "") {
            client.delete(&key).unwrap();
        }
    }

    /// A prefix has no folder of its own that could stay behind empty:
    /// what stays here is the files without the agents' metadata (the
    /// marker removed by another tool or a lifecycle rule).
    fn empty_root(&self, folder: &str) {
        let client = self.client(folder);
        for key in self.keys(folder, ".prism-sync/") {
            client.delete(&key).unwrap();
        }
    }

    fn shows_as_is(&self, name: &[u8]) -> bool {
        (self.names.shows_as_is)(name)
    }

    fn holds(&self, name: &[u8]) -> bool {
        (self.names.holds)(name)
    }
}

/// An encrypted remote: the crypt layer over another backend, given its
/// password directly. What a test does behind its back ([`Encrypted`]) is
/// what an rclone crypt remote over the same folder would do: names and
/// contents encrypted with the same password.
pub struct Crypt {
    below: &'static dyn Backend,
    outside: Encrypted,
}

/// The suite's crypt password (no salt: rclone's default one).
const CRYPT_PASSWORD: &str = "the conformance suite's crypt password";

const CRYPT_SETTINGS: CryptSettings = CryptSettings {
    filename_encryption: NameMode::Standard,
    directory_name_encryption: true,
};

/// The crypt layer over a `file://` folder: no network.
pub fn crypt_local() -> &'static dyn Backend {
    static CRYPT: OnceLock<Crypt> = OnceLock::new();
    CRYPT.get_or_init(|| Crypt::over(local()))
}

/// The crypt layer over S3 on moto: a network backend with version
/// tokens, whose ranged reads are conditional.
pub fn crypt_s3_moto() -> &'static dyn Backend {
    static CRYPT: OnceLock<Crypt> = OnceLock::new();
    CRYPT.get_or_init(|| Crypt::over(s3_moto()))
}

impl Crypt {
    fn over(below: &'static dyn Backend) -> Crypt {
        let keys = Keys::derive(CRYPT_PASSWORD, None);
        let names = NameCipher::new(
            &keys,
            CRYPT_SETTINGS.filename_encryption,
            CRYPT_SETTINGS.directory_name_encryption,
        );
        Crypt {
            below,
            outside: Encrypted {
                below: below.outside(),
                keys,
                names,
            },
        }
    }

    fn layer(&self, replica: Box<dyn Replica>) -> Box<dyn Replica> {
        Box::new(CryptReplica::with_password(
            replica,
            CRYPT_SETTINGS,
            prism_sync::secrets::Secret::new(CRYPT_PASSWORD.into()),
            None,
        ))
    }
}

impl Backend for Crypt {
    fn replica(&self, folder: &str) -> Box<dyn Replica> {
        self.layer(self.below.replica(&below(folder)))
    }

    fn server_port(&self) -> Option<u16> {
        self.below.server_port()
    }

    fn replica_via(&self, folder: &str, port: u16) -> Box<dyn Replica> {
        self.layer(self.below.replica_via(&below(folder), port))
    }

    fn outside(&self) -> &dyn Outside {
        &self.outside
    }

    fn creates_atomically(&self) -> bool {
        self.below.creates_atomically()
    }

    /// Hashes cannot be compared on an encrypted remote by design: what
    /// the server could keep is the ciphertext's hash, and every upload
    /// has a fresh nonce, so equal plaintexts differ there.
    fn keeps_hashes(&self) -> bool {
        false
    }

    /// Once more than the backend below: the layer reads each new file
    /// through the decryption to hash its plaintext, and the replica below
    /// hashes the ciphertext as it lists (it cannot be told not to).
    fn reads_to_hash_a_new_file(&self) -> u64 {
        self.below.reads_to_hash_a_new_file() + 1
    }
}

/// How the crypt layer keeps a record (see `remote/crypt.rs`): its
/// content sealed as a crypt file, in base64 behind this prefix.
const RECORD_ARMOR: &str = "prism-sync-crypt:";

/// The [`Outside`] of an encrypted remote: the server's own view below,
/// seen through rclone's crypt format. Paths in the metadata folder
/// (`.prism-sync/`: records, the lease, the trash's batches) are plain, as
/// the layer keeps them; every other name is encrypted. Contents are crypt
/// files, records armored crypt files.
pub struct Encrypted {
    below: &'static dyn Outside,
    keys: Keys,
    names: NameCipher,
}

/// The folder below that holds a test's encrypted folder: not the one the
/// same test uses on the backend below without encryption.
fn below(folder: &str) -> String {
    format!("crypt-{folder}")
}

fn in_metadata(path: &str) -> bool {
    path == ".prism-sync" || path.starts_with(".prism-sync/")
}

impl Encrypted {
    /// A plain path as the server stores it.
    fn stored(&self, path: &str, dir: bool) -> String {
        if path.is_empty() || in_metadata(path) {
            return path.to_owned();
        }
        let encrypted = if dir {
            self.names.encrypt_dir(path)
        } else {
            self.names.encrypt_file(path)
        };
        encrypted.unwrap_or_else(|e| panic!("{path:?} cannot be encrypted: {e}"))
    }

    fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut sealed = Vec::new();
        Encryptor::new(plain, &self.keys, Nonce::random().unwrap())
            .read_to_end(&mut sealed)
            .unwrap();
        sealed
    }

    fn open(&self, sealed: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        Decryptor::new(sealed, &self.keys)
            .read_to_end(&mut plain)
            .unwrap_or_else(|e| panic!("a crypt file that does not decrypt: {e}"));
        plain
    }
}

impl Outside for Encrypted {
    fn put(&self, folder: &str, path: &[u8], content: &[u8]) {
        // Only text can be encrypted by the layer's name cipher (see
        // `holds`).
        let path = std::str::from_utf8(path).expect("a UTF-8 name");
        let stored = self.stored(path, false);
        // The lease is kept as it is (see `read`).
        let content = if path == ".prism-sync/lease" {
            content.to_vec()
        } else {
            self.seal(content)
        };
        self.below.put(&below(folder), stored.as_bytes(), &content);
    }

    fn read(&self, folder: &str, path: &str) -> Option<Vec<u8>> {
        let stored = self.below.read(&below(folder), &self.stored(path, false))?;
        if !in_metadata(path) {
            return Some(self.open(&stored));
        }
        // Records are armored; the lease and other files of the metadata
        // folder are kept as they are.
        match std::str::from_utf8(&stored)
            .ok()
            .and_then(|text| text.trim_end().strip_prefix(RECORD_ARMOR))
        {
            Some(armored) => {
                Some(self.open(&data_encoding::BASE64.decode(armored.as_bytes()).unwrap()))
            }
            None => Some(stored),
        }
    }

    fn remove(&self, folder: &str, path: &str) {
        self.below.remove(&below(folder), &self.stored(path, false));
    }

    /// Names that decrypt are shown plain; the others (the metadata
    /// folder, a temporary file) as the server has them.
    fn names(&self, folder: &str, path: &str) -> Vec<String> {
        let stored = self.below.names(&below(folder), &self.stored(path, true));
        let mut names: Vec<String> = if in_metadata(path) {
            stored
        } else {
            stored
                .into_iter()
                .map(|name| self.names.decrypt_segment(&name).unwrap_or(name))
                .collect()
        };
        names.sort();
        names
    }

    fn trashed(&self, folder: &str) -> Vec<Vec<u8>> {
        let mut found: Vec<Vec<u8>> = self
            .below
            .trashed(&below(folder))
            .iter()
            .map(|sealed| self.open(sealed))
            .collect();
        found.sort();
        found
    }

    fn remove_root(&self, folder: &str) {
        self.below.remove_root(&below(folder));
    }

    fn empty_root(&self, folder: &str) {
        self.below.empty_root(&below(folder));
    }

    /// The server holds only encrypted names (base32hex): every plain name
    /// comes back from it as it went in.
    fn shows_as_is(&self, _name: &[u8]) -> bool {
        true
    }

    /// A name that is not UTF-8 cannot be encrypted by the layer's name
    /// cipher, which takes text (an rclone crypt remote could write one;
    /// the layer reports it as a name that does not decrypt).
    fn holds(&self, name: &[u8]) -> bool {
        std::str::from_utf8(name).is_ok()
    }
}
