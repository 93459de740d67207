//! Configuration in two stages: the raw TOML file plus flags and
//! environment ([`RawConfig`], [`Overrides`]), then a validated [`Config`]
//! with typed fields (absolute roots, durations, parsed remote URLs).
//!
//! Validation has no side effects: it creates no folder and opens no file
//! other than the config file itself. Every error names the file, the key
//! and what is wrong, so the agent refuses to start with a sentence a person
//! can act on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod api;
pub mod edit;

use crate::model::Strategy;
use crate::remote::backend::{PairKeys, PairRemote};
use crate::remote::registry;

pub use crate::remote::backend::RemoteUrl;

/// Where the agent keeps things, after flags, environment and defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// The config file (it may not exist: then the defaults apply).
    pub config_file: PathBuf,
    /// Journal, local trash, staging and the single-instance lock live here.
    pub state_dir: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
}

impl Paths {
    pub fn journal(&self) -> PathBuf {
        self.state_dir.join("journal.db")
    }

    pub fn trash(&self) -> PathBuf {
        self.state_dir.join("trash")
    }

    pub fn staging(&self) -> PathBuf {
        self.state_dir.join("staging")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.state_dir.join("agent.lock")
    }
}

/// What the command line and the environment say, before defaults.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
}

impl Overrides {
    /// Fills unset fields from `PRISM_SYNC_CONFIG`, `PRISM_SYNC_STATE_DIR`
    /// and `PRISM_SYNC_SOCKET`. Flags win over the environment.
    pub fn with_env(mut self) -> Overrides {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        self.config_file = self.config_file.or_else(|| var("PRISM_SYNC_CONFIG"));
        self.state_dir = self.state_dir.or_else(|| var("PRISM_SYNC_STATE_DIR"));
        self.socket = self.socket.or_else(|| var("PRISM_SYNC_SOCKET"));
        self
    }

    /// Resolves the paths against the platform defaults of the
    /// `directories` crate: the config in the user's config dir, the state
    /// in the data dir, the socket in the runtime dir. A state dir given
    /// explicitly keeps its socket inside it, so two agents with separate
    /// state never meet on one socket.
    pub fn resolve(&self) -> Result<Paths, ConfigError> {
        let dirs = project_dirs();
        let config_file = match (&self.config_file, &dirs) {
            (Some(file), _) => absolute(file),
            (None, Some(dirs)) => dirs.config_dir().join("config.toml"),
            (None, None) => return Err(ConfigError::no_home("the config file")),
        };
        let state_dir = match (&self.state_dir, &dirs) {
            (Some(dir), _) => absolute(dir),
            (None, Some(dirs)) => dirs.data_dir().to_path_buf(),
            (None, None) => return Err(ConfigError::no_home("the state dir")),
        };
        let socket = match &self.socket {
            Some(socket) => absolute(socket),
            None if self.state_dir.is_some() => state_dir.join("prism-syncd.sock"),
            None => crate::api::default_socket_path(),
        };
        Ok(Paths {
            config_file,
            state_dir,
            socket,
        })
    }
}

pub(crate) fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "prism-sync")
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub agent: RawAgent,
    #[serde(default)]
    pub pair: Vec<RawPair>,
    /// The optional HTTP listener (see `config::api`).
    #[serde(default)]
    pub api: Option<api::RawApi>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub device: Option<String>,
    pub debounce_ms: Option<u64>,
    pub remote_poll_secs: Option<u64>,
    pub parallel_transfers: Option<usize>,
    pub safety_scan_secs: Option<u64>,
    pub trash_retention_days: Option<u64>,
}

/// One `[[pair]]` table as written. The keys of the remote's backend
/// (`known_hosts`, `username`, `endpoint`, `branch`, …) are kept as
/// written in `remote_keys`: the backend takes its own when the pair is
/// validated, and refuses the rest (see `remote::registry`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawPair {
    pub name: String,
    pub local: String,
    pub remote: String,
    pub conflict: Option<String>,
    #[serde(default)]
    pub ignore: Vec<String>,
    /// `"crypt"`: names and contents on the remote are encrypted in
    /// rclone's crypt format (default: none), whatever the backend. The
    /// password is never here (see `secrets`).
    #[serde(default)]
    pub encryption: Option<String>,
    /// With encryption: `"standard"` (default) or `"off"` (names stay
    /// readable, files get `.bin`).
    #[serde(default)]
    pub filename_encryption: Option<String>,
    /// With encryption: whether folder names are encrypted too (default
    /// true).
    #[serde(default)]
    pub directory_name_encryption: Option<bool>,
    /// The other keys: the remote's backend's own.
    #[serde(flatten)]
    pub remote_keys: BTreeMap<String, toml::Value>,
}

/// The validated configuration the agent runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub agent: AgentConfig,
    pub pairs: Vec<PairConfig>,
    /// The HTTP listener; `None` when the file has no `[api]` listen address.
    pub api: Option<api::ApiConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// The name used in conflict copies and the change log.
    pub device: String,
    /// How long a path must be quiet before its change is synced.
    pub debounce: Duration,
    /// How often remotes without a change feed are listed.
    pub remote_poll: Duration,
    /// How many transfers run at once per pair.
    pub parallel_transfers: usize,
    /// The interval of the jittered safety scan that catches what the
    /// watcher missed.
    pub safety_scan: Duration,
    /// How long overwritten and deleted versions stay in the trash.
    pub trash_retention: Duration,
}

impl AgentConfig {
    /// Long enough to take an editor's save (write a temporary file,
    /// rename it over the old one: microseconds apart) or a burst of writes
    /// as one batch, short enough that a change is on its way at once. A
    /// file still being written when the window ends is held by the scan
    /// (it changed while read) and synced when it settles.
    pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(20);
    pub const DEFAULT_REMOTE_POLL: Duration = Duration::from_secs(30);
    pub const DEFAULT_PARALLEL_TRANSFERS: usize = 4;
    pub const DEFAULT_SAFETY_SCAN: Duration = Duration::from_secs(15 * 60);
    pub const DEFAULT_TRASH_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
    /// A day: a remote listed less often is as good as not watched.
    pub const MAX_REMOTE_POLL_SECS: u64 = 24 * 3600;
    /// A week.
    pub const MAX_SAFETY_SCAN_SECS: u64 = 7 * 24 * 3600;
    /// A hundred years: "keep everything", without overflowing the clock.
    pub const MAX_TRASH_RETENTION_DAYS: u64 = 36_500;
}

/// One local folder and its remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairConfig {
    pub name: String,
    /// An absolute path.
    pub local: PathBuf,
    /// The remote's URL and the settings its backend took from the
    /// pair's keys (how to log in, which branch, …).
    pub remote: PairRemote,
    pub conflict: Strategy,
    pub ignore: Vec<String>,
    /// How the remote is encrypted; `None`: it is not.
    pub crypt: Option<CryptSettings>,
}

/// An encrypted pair's settings, as rclone's crypt remote names them.
/// Never the password: that lives outside the config (see `secrets`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CryptSettings {
    pub filename_encryption: crate::crypt::NameMode,
    pub directory_name_encryption: bool,
}

/// Whether `host` (as written in a URL) names this machine without asking
/// a resolver: `localhost`, `127.0.0.0/8` or `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// The largest config file the agent reads. A real one is a few
/// kilobytes, and parsing TOML costs up to some 250 bytes of memory per
/// byte of text (measured by the config fuzz target), so a file named by
/// mistake (a log, a disk image) is refused instead of read whole.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

fn read_at_most(file: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(file)?
        .take(limit)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// A configuration the agent cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}: `{key}`: {message}")]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
    },
    #[error("cannot find a home folder for {0}; pass it explicitly (see `prism-syncd --help`)")]
    NoHome(&'static str),
}

impl ConfigError {
    fn no_home(what: &'static str) -> ConfigError {
        ConfigError::NoHome(what)
    }
}

impl Config {
    /// Reads and validates the config file. A missing file is an empty
    /// configuration (the agent then runs with no pair until one is added).
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = match read_at_most(file, MAX_CONFIG_BYTES + 1) {
            Ok(text) if text.len() as u64 > MAX_CONFIG_BYTES => {
                return Err(ConfigError::Syntax {
                    file: file.to_path_buf(),
                    message: format!(
                        "the file is larger than {} KiB; a config file is a few kilobytes \
                         (is this the right file?)",
                        MAX_CONFIG_BYTES / 1024
                    ),
                });
            }
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    file: file.to_path_buf(),
                    source,
                });
            }
        };
        Config::parse(&text, file)
    }

    /// Parses and validates config text; `file` is only used in messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        raw.validate(file)
    }
}

impl RawConfig {
    pub fn validate(self, file: &Path) -> Result<Config, ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            key,
            message,
        };
        let agent = self.agent.validate().map_err(|(k, m)| invalid(k, m))?;
        let api = match self.api {
            Some(raw) => raw.validate().map_err(|(k, m)| invalid(k, m))?,
            None => None,
        };
        let mut pairs: Vec<PairConfig> = Vec::new();
        let mut names = BTreeSet::new();
        for (index, raw) in self.pair.into_iter().enumerate() {
            let key = |field: &str| format!("pair[{index}].{field}");
            let pair = raw
                .validate()
                .map_err(|(field, m)| invalid(key(&field), m))?;
            if !names.insert(pair.name.clone()) {
                return Err(invalid(
                    key("name"),
                    format!("another pair is already named {:?}", pair.name),
                ));
            }
            if let Some((field, message)) = pairs.iter().find_map(|other| clash(&pair, other)) {
                return Err(invalid(key(field), message));
            }
            pairs.push(pair);
        }
        Ok(Config { agent, pairs, api })
    }
}

/// Why `pair` cannot run beside `other`, as the field to blame and a
/// sentence: folders that would sync into each other. Two local folders
/// must not nest (each pair would see the other's files as its own), and a
/// `file://` remote must not lie in, at or around another pair's local
/// folder (that pair would sync this pair's remote, metadata and all, and
/// the other way round).
pub fn clash(pair: &PairConfig, other: &PairConfig) -> Option<(&'static str, String)> {
    if overlaps(&pair.local, &other.local) {
        return Some((
            "local",
            format!(
                "{} overlaps the folder of pair {:?} ({}); pairs must not nest",
                pair.local.display(),
                other.name,
                other.local.display()
            ),
        ));
    }
    let remote_folders = [(pair, other), (other, pair)];
    for (with_remote, with_local) in remote_folders {
        if let Some(remote_dir) = with_remote.remote.url().local_folder()
            && overlaps(remote_dir, &with_local.local)
        {
            return Some((
                if std::ptr::eq(with_remote, pair) {
                    "remote"
                } else {
                    "local"
                },
                format!(
                    "the remote folder {} of pair {:?} overlaps the local folder {} of pair \
                     {:?}; a pair's remote must lie apart from every local folder",
                    remote_dir.display(),
                    with_remote.name,
                    with_local.local.display(),
                    with_local.name
                ),
            ));
        }
    }
    None
}

/// True when one folder is the other or lies inside it, once both are
/// resolved as the file system would ([`resolved`]): a symbolic link or a
/// `..` must not hide that two names are one folder.
fn overlaps(a: &Path, b: &Path) -> bool {
    let (a, b) = (resolved(a), resolved(b));
    a.starts_with(&b) || b.starts_with(&a)
}

/// `path` with symbolic links followed and `.` and `..` applied, walking
/// it from the root: each prefix that exists is canonicalized, so a `..`
/// after it goes to its real parent; the part that does not exist yet is
/// taken word by word. Only reads the file system.
fn resolved(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => {
                out.push(other);
                if let Ok(real) = out.canonicalize() {
                    out = real;
                }
            }
        }
    }
    out
}

impl RawAgent {
    fn validate(self) -> Result<AgentConfig, (String, String)> {
        let device = match self.device {
            Some(device) if device.trim().is_empty() => {
                return Err(("agent.device".into(), "must not be empty".into()));
            }
            Some(device) => device,
            None => default_device_name(),
        };
        let debounce_ms = self
            .debounce_ms
            .unwrap_or(AgentConfig::DEFAULT_DEBOUNCE.as_millis() as u64);
        if debounce_ms > 60_000 {
            return Err((
                "agent.debounce_ms".into(),
                format!("{debounce_ms} is more than a minute; use a value from 0 to 60000"),
            ));
        }
        let remote_poll_secs = in_range(
            "agent.remote_poll_secs",
            self.remote_poll_secs,
            AgentConfig::DEFAULT_REMOTE_POLL.as_secs(),
            1..=AgentConfig::MAX_REMOTE_POLL_SECS,
        )?;
        let parallel_transfers = self
            .parallel_transfers
            .unwrap_or(AgentConfig::DEFAULT_PARALLEL_TRANSFERS);
        if !(1..=64).contains(&parallel_transfers) {
            return Err((
                "agent.parallel_transfers".into(),
                format!("{parallel_transfers} is out of range; use 1 to 64"),
            ));
        }
        let safety_scan_secs = in_range(
            "agent.safety_scan_secs",
            self.safety_scan_secs,
            AgentConfig::DEFAULT_SAFETY_SCAN.as_secs(),
            1..=AgentConfig::MAX_SAFETY_SCAN_SECS,
        )?;
        let trash_retention_days = in_range(
            "agent.trash_retention_days",
            self.trash_retention_days,
            AgentConfig::DEFAULT_TRASH_RETENTION.as_secs() / DAY_SECS,
            0..=AgentConfig::MAX_TRASH_RETENTION_DAYS,
        )?;
        Ok(AgentConfig {
            device,
            debounce: Duration::from_millis(debounce_ms),
            remote_poll: Duration::from_secs(remote_poll_secs),
            parallel_transfers,
            safety_scan: Duration::from_secs(safety_scan_secs),
            trash_retention: Duration::from_secs(trash_retention_days * DAY_SECS),
        })
    }
}

const DAY_SECS: u64 = 24 * 3600;

/// `value` (or `default`) if it lies in `range`. Every number that becomes
/// a duration has an upper bound: the agent adds intervals to the clock
/// and scales them, which panics past the clock's range, and a retention
/// in days overflows when turned into seconds.
fn in_range(
    key: &str,
    value: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, (String, String)> {
    let value = value.unwrap_or(default);
    if range.contains(&value) {
        Ok(value)
    } else {
        Err((
            key.to_owned(),
            format!(
                "{value} is out of range; use {} to {}",
                range.start(),
                range.end()
            ),
        ))
    }
}

impl RawPair {
    /// Validates one pair; errors name the field within the pair.
    pub fn validate(self) -> Result<PairConfig, (String, String)> {
        // The name is a folder name in the state dir (the pair's trash):
        // `.` and `..` would be the trash of every pair, or the state dir.
        if self.name.is_empty()
            || self.name == "."
            || self.name == ".."
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err((
                "name".into(),
                format!(
                    "{:?} is not a valid pair name; use letters, digits, '-', '_' and '.' \
                     (not . or .. alone)",
                    self.name
                ),
            ));
        }
        let local = expand_home(&self.local);
        if !local.is_absolute() {
            return Err((
                "local".into(),
                format!(
                    "{:?} is not an absolute path; write the full path, e.g. /home/me/Notes",
                    self.local
                ),
            ));
        }
        let remote = RemoteUrl::parse(&self.remote).map_err(|m| ("remote".to_owned(), m))?;
        if let Some(remote_dir) = remote.local_folder()
            && overlaps(remote_dir, &local)
        {
            return Err((
                "remote".into(),
                format!(
                    "the remote folder {} is the local folder {}, inside it or around it \
                     (after following symbolic links and `..`), so the pair would sync into \
                     itself; choose a remote folder apart from the local one",
                    remote_dir.display(),
                    local.display()
                ),
            ));
        }
        let conflict = match self.conflict.as_deref() {
            None => Strategy::Manual,
            Some(s) => Strategy::parse(s).ok_or_else(|| {
                (
                    "conflict".to_owned(),
                    format!(
                        "{s:?} is not a strategy; use manual, keep_local, keep_remote or auto_merge"
                    ),
                )
            })?,
        };
        for (i, pattern) in self.ignore.iter().enumerate() {
            if pattern.trim().is_empty() {
                return Err((format!("ignore[{i}]"), "an ignore pattern is empty".into()));
            }
        }
        let crypt = crypt_settings(
            self.encryption,
            self.filename_encryption,
            self.directory_name_encryption,
        )?;
        let remote = registry::configure(&remote, PairKeys::new(self.remote_keys))?;
        Ok(PairConfig {
            name: self.name,
            local,
            remote,
            conflict,
            ignore: self.ignore,
            crypt,
        })
    }
}

/// Validates the encryption keys of a pair: `encryption` is `"crypt"` or
/// `"none"`, and the name settings only mean something with it.
fn crypt_settings(
    encryption: Option<String>,
    filename_encryption: Option<String>,
    directory_name_encryption: Option<bool>,
) -> Result<Option<CryptSettings>, (String, String)> {
    use crate::crypt::NameMode;
    let encrypted = match encryption.as_deref() {
        None | Some("none") => false,
        Some("crypt") => true,
        Some(other) => {
            return Err((
                "encryption".to_owned(),
                format!("{other:?} is not an encryption; use \"crypt\" or \"none\""),
            ));
        }
    };
    if !encrypted {
        for (key, set) in [
            ("filename_encryption", filename_encryption.is_some()),
            (
                "directory_name_encryption",
                directory_name_encryption.is_some(),
            ),
        ] {
            if set {
                return Err((
                    key.to_owned(),
                    "only applies with encryption = \"crypt\"; remove it or turn encryption on"
                        .to_owned(),
                ));
            }
        }
        return Ok(None);
    }
    let filename_encryption = match filename_encryption.as_deref() {
        None | Some("standard") => NameMode::Standard,
        Some("off") => NameMode::Off,
        Some(other) => {
            return Err((
                "filename_encryption".to_owned(),
                format!("{other:?} is not supported; use \"standard\" or \"off\""),
            ));
        }
    };
    Ok(Some(CryptSettings {
        filename_encryption,
        directory_name_encryption: directory_name_encryption.unwrap_or(true),
    }))
}

/// `path` with a leading `~/` replaced by the home folder.
pub(crate) fn expand_home(path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = directories::BaseDirs::new()
    {
        return home.home_dir().join(rest);
    }
    PathBuf::from(path)
}

/// The host name, used as the device name unless the config sets one.
pub fn default_device_name() -> String {
    let name = gethostname::gethostname().to_string_lossy().into_owned();
    if name.is_empty() {
        "device".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::git::GitPairSettings;
    use crate::remote::git::settings::GitUrl;
    use crate::remote::local::url::FileUrl;
    use crate::remote::rclone::RclonePairSettings;
    use crate::remote::rclone::settings::RcloneUrl;
    use crate::remote::s3::S3PairSettings;
    use crate::remote::s3::settings::S3Url;
    use crate::remote::sftp::url::{SftpUrl, SshSettings};
    use crate::remote::webdav::url::WebdavSettings;

    /// The settings the pair's backend took from its keys.
    fn settings<S: std::any::Any + Clone>(pair: &PairConfig) -> S {
        pair.remote
            .settings::<S>()
            .cloned()
            .expect("the pair's backend's settings")
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/prism/config.toml"))
    }

    #[test]
    fn a_full_config_parses() {
        let config = parse(
            r#"
            [agent]
            device = "laptop"
            debounce_ms = 50
            remote_poll_secs = 10
            parallel_transfers = 8

            [[pair]]
            name = "notes"
            local = "/home/me/Notes"
            remote = "file:///mnt/nas/notes"
            conflict = "auto_merge"
            ignore = ["*.log", "build/"]

            [[pair]]
            name = "photos"
            local = "/home/me/Photos"
            remote = "sftp://me@nas.local:2222/srv/photos"
            "#,
        )
        .unwrap();
        assert_eq!(config.agent.device, "laptop");
        assert_eq!(config.agent.debounce, Duration::from_millis(50));
        assert_eq!(config.agent.parallel_transfers, 8);
        assert_eq!(config.pairs[0].conflict, Strategy::AutoMerge);
        assert_eq!(
            config.pairs[0].remote.url(),
            &RemoteUrl::new(FileUrl {
                folder: PathBuf::from("/mnt/nas/notes")
            })
        );
        assert_eq!(
            config.pairs[1].remote.url(),
            &RemoteUrl::new(SftpUrl {
                user: Some("me".into()),
                host: "nas.local".into(),
                port: 2222,
                path: "/srv/photos".into()
            })
        );
        assert_eq!(config.pairs[1].conflict, Strategy::Manual);
    }

    #[test]
    fn defaults_apply_to_an_empty_file() {
        let config = parse("").unwrap();
        assert!(config.pairs.is_empty());
        assert_eq!(config.agent.debounce, AgentConfig::DEFAULT_DEBOUNCE);
        assert!(!config.agent.device.is_empty());
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_problem() {
        let cases = [
            (
                "[[pair]]\nname = \"n\"\nlocal = \"rel/dir\"\nremote = \"file:///x\"\n",
                "pair[0].local",
                "not an absolute path",
            ),
            (
                "[[pair]]\nname = \"n\"\nlocal = \"/a\"\nremote = \"ftp://x/y\"\n",
                "pair[0].remote",
                "not supported",
            ),
            // A pair's trash is the state dir's `trash/NAME`.
            (
                "[[pair]]\nname = \"..\"\nlocal = \"/a\"\nremote = \"file:///b\"\n",
                "pair[0].name",
                "not a valid pair name",
            ),
            (
                "[[pair]]\nname = \".\"\nlocal = \"/a\"\nremote = \"file:///b\"\n",
                "pair[0].name",
                "not a valid pair name",
            ),
            (
                "[[pair]]\nname = \"n\"\nlocal = \"/a\"\nremote = \"file:///b\"\nconflict = \"newest\"\n",
                "pair[0].conflict",
                "not a strategy",
            ),
            (
                "[agent]\nparallel_transfers = 0\n",
                "agent.parallel_transfers",
                "out of range",
            ),
            (
                "[[pair]]\nname = \"a\"\nlocal = \"/a\"\nremote = \"file:///b\"\n[[pair]]\nname = \"a\"\nlocal = \"/c\"\nremote = \"file:///d\"\n",
                "pair[1].name",
                "already named",
            ),
            (
                "[[pair]]\nname = \"a\"\nlocal = \"/a\"\nremote = \"file:///b\"\n[[pair]]\nname = \"b\"\nlocal = \"/a/sub\"\nremote = \"file:///d\"\n",
                "pair[1].local",
                "must not nest",
            ),
            (
                "[[pair]]\nname = \"a\"\nlocal = \"/a\"\nremote = \"sftp://me:hunter2@host/x\"\n",
                "pair[0].remote",
                "password",
            ),
            (
                "[[pair]]\nname = \"a\"\nlocal = \"/a\"\nremote = \"sftp://me:hunter2/x@host/x\"\n",
                "pair[0].remote",
                "password",
            ),
            (
                "[[pair]]\nname = \"a\"\nlocal = \"/a\"\nremote = \"webdavs://me:hunter2@cloud/dav\"\n",
                "pair[0].remote",
                "password",
            ),
        ];
        for (text, key, words) in cases {
            let message = parse(text).unwrap_err().to_string();
            assert!(
                message.starts_with("/etc/prism/config.toml: `")
                    && message.contains(key)
                    && message.contains(words),
                "{message:?} should name {key} and say {words:?}"
            );
            assert!(!message.contains("hunter2"), "{message:?} leaks a password");
        }
    }

    /// Found by the config fuzz target: `trash_retention_days` near the
    /// top of TOML's integers overflowed when turned into seconds (a panic
    /// in a debug build, a wrapped retention in a release one), and huge
    /// poll and scan intervals would panic when the agent adds them to the
    /// clock.
    #[test]
    fn durations_beyond_their_range_are_refused_instead_of_overflowing() {
        let huge = i64::MAX;
        for (key, value) in [
            ("trash_retention_days", huge),
            ("trash_retention_days", 36_501),
            ("remote_poll_secs", huge),
            ("remote_poll_secs", 0),
            ("safety_scan_secs", huge),
            ("safety_scan_secs", 0),
        ] {
            let message = parse(&format!("[agent]\n{key} = {value}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                message.contains(&format!("agent.{key}")) && message.contains("out of range"),
                "{message}"
            );
        }
        let config = parse(
            "[agent]\ntrash_retention_days = 36500\nremote_poll_secs = 86400\nsafety_scan_secs = 604800\n",
        )
        .unwrap();
        assert_eq!(
            config.agent.trash_retention,
            Duration::from_secs(36_500 * 24 * 3600)
        );
        assert_eq!(config.agent.remote_poll, Duration::from_secs(86_400));
        assert_eq!(config.agent.safety_scan, Duration::from_secs(604_800));
    }

    #[test]
    fn a_remote_that_resolves_to_the_local_folder_or_near_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let local = root.join("home/Notes");
        std::fs::create_dir_all(&local).unwrap();
        std::fs::create_dir_all(root.join("mnt/backup")).unwrap();
        std::os::unix::fs::symlink(&local, root.join("mnt/alias")).unwrap();
        let shown = root.display().to_string();
        let encoded = format!("{shown}/home/Notes")[1..].replace('/', "%2F");
        let refused = [
            // The local folder itself, spelled with `..`.
            format!("file://{shown}/mnt/../home/Notes"),
            // Through a symbolic link.
            format!("file://{shown}/mnt/alias"),
            // A folder inside it, through the link, not made yet.
            format!("file://{shown}/mnt/alias/sub/remote"),
            // Percent-encoded slashes.
            format!("file:///{encoded}"),
            // A folder around it: the local folder would be synced into
            // the remote's tree as well.
            format!("file://{shown}/home"),
            // rclone's local backend, given in place.
            format!("rclone::local:{shown}/home/Notes"),
            format!("rclone::local,links:{shown}/mnt/alias/sub"),
            format!("rclone::alias,remote='{shown}/home':Notes"),
            format!("rclone::hasher,remote=':local:{shown}/mnt':alias"),
        ];
        for remote in refused {
            let text = format!(
                "[[pair]]\nname = \"n\"\nlocal = \"{}\"\nremote = \"{remote}\"\n",
                local.display()
            );
            let message = parse(&text).unwrap_err().to_string();
            assert!(
                message.contains("`pair[0].remote`") && message.contains("sync into itself"),
                "{remote}: {message}"
            );
        }
        let apart = format!(
            "[[pair]]\nname = \"n\"\nlocal = \"{}\"\nremote = \"file://{shown}/mnt/backup\"\n",
            local.display()
        );
        parse(&apart).unwrap();
    }

    #[test]
    fn a_remote_inside_another_pairs_local_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().display().to_string();
        let text = format!(
            "[[pair]]\nname = \"a\"\nlocal = \"{root}/a\"\nremote = \"file://{root}/r\"\n\
             [[pair]]\nname = \"b\"\nlocal = \"{root}/b\"\nremote = \"file://{root}/a/inside\"\n"
        );
        let message = parse(&text).unwrap_err().to_string();
        assert!(
            message.contains("`pair[1].remote`") && message.contains("of pair \"a\""),
            "{message}"
        );
        // And the other way round: a local folder inside an earlier pair's remote.
        let text = format!(
            "[[pair]]\nname = \"a\"\nlocal = \"{root}/a\"\nremote = \"file://{root}/r\"\n\
             [[pair]]\nname = \"b\"\nlocal = \"{root}/r/b\"\nremote = \"file://{root}/s\"\n"
        );
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.contains("`pair[1].local`"), "{message}");
    }

    #[test]
    fn an_sftp_url_must_name_a_folder() {
        let message = RemoteUrl::parse("sftp://me@nas").unwrap_err();
        assert!(message.contains("names no folder"), "{message}");
        let message = RemoteUrl::parse("sftp://me@nas:2222").unwrap_err();
        assert!(message.contains("names no folder"), "{message}");
        assert_eq!(
            RemoteUrl::parse("sftp://me@nas/").unwrap(),
            RemoteUrl::new(SftpUrl {
                user: Some("me".into()),
                host: "nas".into(),
                port: 22,
                path: "/".into()
            })
        );
    }

    #[test]
    fn a_config_file_over_the_size_limit_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        let mut text = "[agent]\ndevice = \"pc\"\n".to_owned();
        std::fs::write(&file, &text).unwrap();
        assert_eq!(Config::load(&file).unwrap().agent.device, "pc");
        text.push_str(&"#".repeat(MAX_CONFIG_BYTES as usize));
        std::fs::write(&file, &text).unwrap();
        let message = Config::load(&file).unwrap_err().to_string();
        assert!(
            message.contains("config.toml") && message.contains("larger than 1024 KiB"),
            "{message}"
        );
    }

    #[test]
    fn unknown_keys_and_syntax_errors_are_refused_with_the_file_name() {
        let message = parse("[agent]\ndebounce = 5\n").unwrap_err().to_string();
        assert!(
            message.contains("config.toml") && message.contains("debounce"),
            "{message}"
        );
        let message = parse("[[pair]\n").unwrap_err().to_string();
        assert!(message.contains("config.toml"), "{message}");
    }

    #[test]
    fn remote_urls_parse_and_display() {
        for (url, shown) in [
            ("file:///srv/a%20b", "file:///srv/a b"),
            ("sftp://host/x", "sftp://host:22/x"),
            ("webdav://127.0.0.1:8080/dav", "webdav://127.0.0.1:8080/dav"),
            (
                "webdavs://cloud.example/remote.php/dav",
                "webdavs://cloud.example/remote.php/dav",
            ),
        ] {
            assert_eq!(RemoteUrl::parse(url).unwrap().to_string(), shown);
        }
        assert!(RemoteUrl::parse("file://relative").is_err());
        assert!(RemoteUrl::parse("/just/a/path").is_err());
        // Found by the fuzz targets: a signed escape was decoded.
        assert!(RemoteUrl::parse("file:///srv/a%+1").is_err());
        assert!(RemoteUrl::parse("sftp://me%+4@host/x").is_err());
    }

    #[test]
    fn a_remotes_keys_may_sit_in_a_table_of_the_pair() {
        let config = parse(
            "[[pair]]\nname = \"a\"\nlocal = \"/a\"\nremote = \"sftp://me@nas/x\"\n\
             [pair.sftp]\nknown_hosts = \"/etc/prism/known_hosts\"\ncompression = true\n\
             [[pair]]\nname = \"b\"\nlocal = \"/b\"\nremote = \"sftp://me@nas/y\"\n\
             known_hosts = \"/etc/prism/known_hosts\"\ncompression = true\n",
        )
        .unwrap();
        let expected = SshSettings {
            known_hosts: Some(PathBuf::from("/etc/prism/known_hosts")),
            identity_file: None,
            compression: true,
        };
        assert_eq!(settings::<SshSettings>(&config.pairs[0]), expected);
        assert_eq!(settings::<SshSettings>(&config.pairs[1]), expected);
        let message = parse(
            "[[pair]]\nname = \"a\"\nlocal = \"/a\"\nremote = \"sftp://me@nas/x\"\n\
             compression = true\n[pair.sftp]\ncompression = false\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("pair[0].sftp.compression") && message.contains("set twice"),
            "{message}"
        );
    }

    #[test]
    fn ssh_keys_are_absolute_paths_and_only_for_sftp_pairs() {
        let pair = |remote: &str, extra: &str| {
            parse(&format!(
                "[[pair]]\nname = \"a\"\nlocal = \"/a\"\nremote = \"{remote}\"\n{extra}"
            ))
        };
        let config = pair(
            "sftp://me@nas/x",
            "known_hosts = \"/etc/prism/known_hosts\"\nidentity_file = \"/etc/prism/id\"\n",
        )
        .unwrap();
        assert_eq!(
            settings::<SshSettings>(&config.pairs[0]),
            SshSettings {
                known_hosts: Some(PathBuf::from("/etc/prism/known_hosts")),
                identity_file: Some(PathBuf::from("/etc/prism/id")),
                compression: false,
            }
        );
        assert_eq!(
            settings::<SshSettings>(&pair("sftp://me@nas/x", "").unwrap().pairs[0]),
            SshSettings::default()
        );
        let message = pair("sftp://me@nas/x", "known_hosts = \"hosts\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("pair[0].known_hosts") && message.contains("absolute"),
            "{message}"
        );
        let message = pair("file:///b", "identity_file = \"/id\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("pair[0].identity_file") && message.contains("sftp://"),
            "{message}"
        );
    }

    #[test]
    fn a_remote_url_with_a_control_character_is_refused_whatever_its_scheme() {
        for url in [
            "s3://b/with%256space:-10%2\r\n5",
            "file:///srv/a\tb",
            "webdav://host/dav\n",
            "sftp://me@host/x\r",
            "git+file:///srv/notes.git\n",
        ] {
            let message = RemoteUrl::parse(url).unwrap_err();
            assert!(message.contains("control character"), "{url:?}: {message}");
        }
        assert!(RemoteUrl::parse("file:///srv/a%0Ab").is_ok());
    }

    #[test]
    fn rclone_remotes_take_their_config_and_binary_and_only_they_do() {
        let pair = |remote: &str, extra: &str| {
            parse(&format!(
                "[[pair]]\nname = \"a\"\nlocal = \"/a\"\nremote = \"{remote}\"\n{extra}"
            ))
        };
        let config = pair(
            "rclone:gdrive:Notes",
            "rclone_config = \"/etc/rclone.conf\"\nrclone_binary = \"/opt/rclone\"\n",
        )
        .unwrap();
        let only = &config.pairs[0];
        assert_eq!(
            only.remote.url(),
            &RemoteUrl::new(RcloneUrl {
                remote: "gdrive:Notes".into(),
                local: None
            })
        );
        assert_eq!(only.remote.to_string(), "rclone:gdrive:Notes");
        assert_eq!(only.remote.scheme(), "rclone");
        assert_eq!(
            settings::<RclonePairSettings>(only).config.as_deref(),
            Some(Path::new("/etc/rclone.conf"))
        );
        assert_eq!(
            settings::<RclonePairSettings>(only).binary(),
            Path::new("/opt/rclone")
        );
        let plain = pair("rclone::local:/srv/notes", "").unwrap();
        assert_eq!(
            settings::<RclonePairSettings>(&plain.pairs[0]),
            RclonePairSettings::default()
        );
        let message = pair("s3://b/p", "rclone_config = \"/etc/rclone.conf\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("pair[0].rclone_config") && message.contains("rclone:"),
            "{message}"
        );
        let message = pair("rclone::sftp,host=nas,pass=hunter2:x", "")
            .unwrap_err()
            .to_string();
        assert!(!message.contains("hunter2"), "{message}");
        assert!(pair("rclone:notes", "").is_err());
    }

    #[test]
    fn git_remotes_take_branch_author_and_path_and_only_they_do() {
        let pair = |remote: &str, extra: &str| {
            parse(&format!(
                "[[pair]]\nname = \"a\"\nlocal = \"/a\"\nremote = \"{remote}\"\n{extra}"
            ))
        };
        let config = pair(
            "git+git@host:me/notes.git",
            "branch = \"notes\"\nauthor_name = \"Ada\"\nauthor_email = \"ada@example.org\"\n\
             path = \"journal\"\n",
        )
        .unwrap();
        let only = &config.pairs[0];
        assert_eq!(
            only.remote.url(),
            &RemoteUrl::new(GitUrl {
                url: "git@host:me/notes.git".into()
            })
        );
        assert_eq!(only.remote.to_string(), "git+git@host:me/notes.git");
        let git = settings::<GitPairSettings>(only);
        assert_eq!(git.branch.as_deref(), Some("notes"));
        assert_eq!(
            git.path.as_ref().map(crate::model::RelPath::as_str),
            Some("journal")
        );
        for url in [
            "git+ssh://git@host/me/notes.git",
            "git+file:///srv/notes.git",
        ] {
            assert_eq!(pair(url, "").unwrap().pairs[0].remote.to_string(), url);
        }
        let message = pair("s3://b/p", "branch = \"main\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("pair[0].branch") && message.contains("git+"),
            "{message}"
        );
        let message = pair("git+https://me:tok3n@host/x.git", "")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("password") && !message.contains("tok3n"),
            "{message}"
        );
    }

    #[test]
    fn s3_remotes_take_endpoint_region_and_profile_and_only_they_do() {
        let pair = |remote: &str, extra: &str| {
            parse(&format!(
                "[[pair]]\nname = \"a\"\nlocal = \"/a\"\nremote = \"{remote}\"\n{extra}"
            ))
        };
        let config = pair(
            "s3://photos/2024/trip",
            "endpoint = \"http://127.0.0.1:8333\"\nregion = \"eu-west-1\"\nprofile = \"work\"\n",
        )
        .unwrap();
        let only = &config.pairs[0];
        assert_eq!(
            only.remote.url(),
            &RemoteUrl::new(S3Url {
                bucket: "photos".into(),
                prefix: "2024/trip".into()
            })
        );
        assert_eq!(only.remote.to_string(), "s3://photos/2024/trip");
        let s3 = settings::<S3PairSettings>(only);
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s3.profile.as_deref(), Some("work"));
        let plain = pair("s3://photos", "").unwrap();
        assert_eq!(
            settings::<S3PairSettings>(&plain.pairs[0]),
            S3PairSettings::default()
        );
        let message = pair("file:///b", "region = \"eu-west-1\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("pair[0].region") && message.contains("s3://"),
            "{message}"
        );
        let message = pair("s3://b/p", "endpoint = \"ftp://h\"\n")
            .unwrap_err()
            .to_string();
        assert!(message.contains("pair[0].endpoint"), "{message}");
        let message = pair("s3://AKID:hunter2secret@b/p", "")
            .unwrap_err()
            .to_string();
        assert!(!message.contains("hunter2secret"), "{message}");
        let spaced = RemoteUrl::parse("s3://b/with space/100%25").unwrap();
        assert_eq!(
            RemoteUrl::parse(&spaced.to_string()).unwrap(),
            spaced,
            "{spaced}"
        );
    }

    #[test]
    fn compression_is_an_sftp_pair_option_and_must_be_a_boolean() {
        let pair = |remote: &str, extra: &str| {
            parse(&format!(
                "[[pair]]\nname = \"a\"\nlocal = \"/a\"\nremote = \"{remote}\"\n{extra}"
            ))
        };
        let on = pair("sftp://me@nas/x", "compression = true\n").unwrap();
        assert!(settings::<SshSettings>(&on.pairs[0]).compression);
        let off = pair("sftp://me@nas/x", "").unwrap();
        assert!(
            !settings::<SshSettings>(&off.pairs[0]).compression,
            "off unless asked for"
        );
        let message = pair("sftp://me@nas/x", "compression = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("config.toml")
                && message.contains("compression")
                && message.contains("boolean"),
            "{message}"
        );
        let message = pair("file:///b", "compression = true\n")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("pair[0].compression") && message.contains("sftp://"),
            "{message}"
        );
    }

    #[test]
    fn encryption_keys_default_to_rclones_and_need_encryption_on() {
        use crate::crypt::NameMode;
        let pair = |extra: &str| {
            parse(&format!(
                "[[pair]]\nname = \"a\"\nlocal = \"/a\"\nremote = \"file:///b\"\n{extra}"
            ))
        };
        assert_eq!(pair("").unwrap().pairs[0].crypt, None);
        assert_eq!(
            pair("encryption = \"none\"\n").unwrap().pairs[0].crypt,
            None
        );
        assert_eq!(
            pair("encryption = \"crypt\"\n").unwrap().pairs[0].crypt,
            Some(CryptSettings {
                filename_encryption: NameMode::Standard,
                directory_name_encryption: true,
            })
        );
        assert_eq!(
            pair(
                "encryption = \"crypt\"\nfilename_encryption = \"off\"\n\
                 directory_name_encryption = false\n"
            )
            .unwrap()
            .pairs[0]
                .crypt,
            Some(CryptSettings {
                filename_encryption: NameMode::Off,
                directory_name_encryption: false,
            })
        );
        for (extra, key) in [
            ("encryption = \"aes\"\n", "pair[0].encryption"),
            (
                "filename_encryption = \"off\"\n",
                "pair[0].filename_encryption",
            ),
            (
                "directory_name_encryption = false\n",
                "pair[0].directory_name_encryption",
            ),
            (
                "encryption = \"crypt\"\nfilename_encryption = \"obfuscate\"\n",
                "pair[0].filename_encryption",
            ),
            ("encryption = \"crypt\"\npassword = \"x\"\n", "password"),
        ] {
            let message = pair(extra).unwrap_err().to_string();
            assert!(message.contains(key), "{extra}: {message}");
        }
    }

    #[test]
    fn webdav_keys_apply_to_webdav_pairs_and_keep_passwords_off_plain_http() {
        let pair = |remote: &str, extra: &str| {
            parse(&format!(
                "[[pair]]\nname = \"a\"\nlocal = \"/a\"\nremote = \"{remote}\"\n{extra}"
            ))
        };
        let config = pair(
            "webdavs://cloud.example/dav",
            "username = \"me\"\nca_file = \"/etc/prism/ca.pem\"\ntimeout_secs = 300\n",
        )
        .unwrap();
        assert_eq!(
            settings::<WebdavSettings>(&config.pairs[0]),
            WebdavSettings {
                username: Some("me".into()),
                ca_file: Some(PathBuf::from("/etc/prism/ca.pem")),
                allow_insecure_http_auth: false,
                timeout: Some(Duration::from_secs(300)),
            }
        );
        assert!(pair("webdav://127.0.0.1:8080/dav", "username = \"me\"\n").is_ok());
        let message = pair("webdav://nas.lan/dav", "username = \"me\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("pair[0].username") && message.contains("allow_insecure_http_auth"),
            "{message}"
        );
        assert!(
            pair(
                "webdav://nas.lan/dav",
                "username = \"me\"\nallow_insecure_http_auth = true\n"
            )
            .is_ok()
        );
        for (remote, extra, key) in [
            ("file:///b", "username = \"me\"\n", "pair[0].username"),
            (
                "webdav://127.0.0.1/d",
                "ca_file = \"/ca\"\n",
                "pair[0].ca_file",
            ),
            ("webdavs://h/d", "ca_file = \"ca.pem\"\n", "pair[0].ca_file"),
            ("webdavs://h/d", "username = \"a:b\"\n", "pair[0].username"),
            (
                "webdavs://h/d",
                "timeout_secs = 0\n",
                "pair[0].timeout_secs",
            ),
            ("sftp://u@h/d", "timeout_secs = 5\n", "pair[0].timeout_secs"),
        ] {
            let message = pair(remote, extra).unwrap_err().to_string();
            assert!(message.contains(key), "{message}");
        }
        assert!(is_loopback_host("localhost") && is_loopback_host("127.0.0.2"));
        assert!(is_loopback_host("[::1]") && !is_loopback_host("nas.lan"));
    }
}
