//! What a backend declares about itself, and the values the rest of the
//! agent holds without knowing which backend is behind them.
//!
//! A backend is a type implementing [`Backend`]: its parsed URL. It says
//! how that URL is shown, which pair keys it takes and what they mean, how
//! its replica is opened and which password account it logs in with. A
//! [`Registration`] names its URL forms and keys for the table in
//! [`super::registry`], which is the only place that lists the backends.
//!
//! Outside the backends, a parsed URL is a [`RemoteUrl`] and a pair's
//! remote (URL and settings together) a [`PairRemote`]: both are thin
//! values over the backend's own types, so `config`, `secrets` and the
//! agent name no backend.
//!
//! Architecture invariant: nothing outside a backend's own module matches
//! on which backend a remote is; what differs between backends is a method
//! here.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{RemoteHost, Replica, ReplicaError};
use crate::config::PairConfig;
use crate::percent::{self, Plus};
use crate::secrets::Account;

/// A (key, problem) pair: the key is the pair's key as the user wrote it
/// (`known_hosts`), which the config prefixes with the pair (`pair[0].`).
pub type KeyError = (String, String);

/// One backend: its parsed URL, and what it knows about its pairs.
pub trait Backend: Any + Clone + fmt::Debug + fmt::Display + PartialEq + Send + Sync {
    /// The pair keys it takes, validated.
    type Settings: Any + Clone + fmt::Debug + PartialEq + Send + Sync;

    /// The scheme shown in status (`sftp`, `webdavs`, `git`).
    fn scheme(&self) -> &'static str;

    /// Takes the pair keys this backend owns out of `keys` and checks
    /// them; errors name the key. Keys left behind are refused by the
    /// caller (another backend's key, or no key at all).
    fn settings(&self, keys: &mut PairKeys) -> Result<Self::Settings, KeyError>;

    /// The replica of `pair`, whose remote this is. Nothing is connected
    /// yet: a remote that is away is an error of the first sync.
    fn open(
        &self,
        settings: &Self::Settings,
        pair: &PairConfig,
        host: RemoteHost<'_>,
    ) -> Result<Box<dyn Replica>, ReplicaError>;

    /// The account the pair logs in with, if it takes a password the
    /// agent keeps (none by default).
    fn account(&self, _settings: &Self::Settings) -> Option<Account> {
        None
    }

    /// The account `prism-syncctl password set URL` names, with `user` as
    /// written before the URL's `@`; an error says why this backend keeps
    /// no password.
    fn password_account(&self, user: Option<String>) -> Result<Account, String>;

    /// The folder on this machine the remote is, if it is one (two pairs
    /// must not sync into each other's folders).
    fn local_folder(&self) -> Option<&Path> {
        None
    }

    /// Which files of this machine the remote reaches, for a pair added
    /// by a token over HTTP (`api::pair_roots`). No default: a backend
    /// must say, as one that reaches more than it shows would hand a
    /// token its user's files.
    fn reach(&self) -> Reach;
}

/// Which files of this machine a remote reaches with the agent's rights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// A server, logged in to with the agent user's own credentials (ssh
    /// keys and agent, stored passwords, AWS keys, git's credential
    /// helpers): where, for the owner's list of servers tokens may use
    /// (`api.pair_remotes`).
    Server(Location),
    /// This folder, as written (resolved by the caller).
    Folder(PathBuf),
    /// Perhaps any folder, or a program: why, for the refusal.
    Anything(String),
}

/// Where a network remote points, normalised so that two spellings of one
/// place compare equal and no spelling of another place compares below an
/// allowed one: the host in lower case without a trailing dot, the port
/// filled in, the path as its decoded segments without empty and `.`
/// ones. A path with a `..` segment, or an escape that could hide one or a
/// `/`, lies below nothing: what it means is the server's business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    scheme: &'static str,
    user: Option<String>,
    host: String,
    port: Option<u16>,
    /// `None`: a path that lies below nothing (see above).
    path: Option<Vec<String>>,
}

/// How a backend's path is written: decoded already, or with %-escapes
/// the server decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathText {
    Decoded,
    Escaped,
}

impl Location {
    /// `port` is the port used (defaults filled in by the backend), `None`
    /// only for a backend whose URL names no port.
    pub fn new(
        scheme: &'static str,
        user: Option<&str>,
        host: &str,
        port: Option<u16>,
        path: &str,
        text: PathText,
    ) -> Location {
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host).to_owned();
        Location {
            scheme,
            user: user.map(str::to_owned),
            host,
            port,
            path: segments(path, text),
        }
    }

    /// Whether this lies at or below `allowed`: the same scheme, user,
    /// host and port, and a path that is `allowed`'s or below it on a
    /// segment boundary (`/shared` admits `/shared/x`, not `/shared2`).
    pub fn within(&self, allowed: &Location) -> bool {
        let (Some(path), Some(base)) = (&self.path, &allowed.path) else {
            return false;
        };
        self.scheme == allowed.scheme
            && self.user == allowed.user
            && self.host == allowed.host
            && self.port == allowed.port
            && path.starts_with(base)
    }

    /// Whether anything can lie below it (its path has no `..`).
    pub fn has_plain_path(&self) -> bool {
        self.path.is_some()
    }
}

/// The segments of `path`, or `None` when one is `..` or decodes to
/// something holding a `/` or a NUL, or an escape is malformed.
fn segments(path: &str, text: PathText) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for segment in path.split('/') {
        let segment = match text {
            PathText::Decoded => segment.to_owned(),
            PathText::Escaped => {
                let bytes = percent::decode(segment, Plus::Literal)?;
                let decoded = String::from_utf8(bytes).ok()?;
                if decoded.contains(['/', '\\', '\0']) {
                    return None;
                }
                decoded
            }
        };
        match segment.as_str() {
            "" | "." => {}
            ".." => return None,
            _ => out.push(segment),
        }
    }
    Some(out)
}

/// How a backend's URLs begin, for the registry's dispatch and messages.
#[derive(Clone, Copy, Debug)]
pub enum UrlForm {
    /// `SCHEME://[user@]host…`: a password before the `@` is refused
    /// before the backend sees the URL.
    Host(&'static str),
    /// `SCHEME:///path`: no host, so no login in the URL.
    Path(&'static str),
    /// `PREFIX…`, the rest the backend's own (`git+URL`): the backend
    /// refuses passwords itself. `rest` names the rest in messages.
    Prefix {
        prefix: &'static str,
        rest: &'static str,
    },
}

/// A backend's line in the registry.
#[derive(Clone, Copy, Debug)]
pub struct Registration {
    pub forms: &'static [UrlForm],
    /// The pair keys only this backend takes.
    pub keys: &'static [&'static str],
    /// The remotes its keys apply to, for the message when another
    /// remote sets one: `sftp://`, `webdav:// and webdavs://`.
    pub remotes: &'static str,
    /// An example URL, for the message when a URL is not one.
    pub example: &'static str,
    /// Parses a URL in one of `forms` (the whole URL, as written).
    pub parse: fn(&str) -> Result<RemoteUrl, String>,
}

/// The backend-specific keys of one `[[pair]]` table, as written, until
/// the backend takes its own.
#[derive(Debug, Default)]
pub struct PairKeys {
    keys: BTreeMap<String, toml::Value>,
}

impl PairKeys {
    pub fn new(keys: BTreeMap<String, toml::Value>) -> PairKeys {
        PairKeys { keys }
    }

    /// Takes `key` if it is set: it must be a string.
    pub fn string(&mut self, key: &str) -> Result<Option<String>, KeyError> {
        match self.keys.remove(key) {
            None => Ok(None),
            Some(toml::Value::String(value)) => Ok(Some(value)),
            Some(other) => Err(wrong_type(key, "a string", &other)),
        }
    }

    /// Takes `key` if it is set: it must be `true` or `false`.
    pub fn boolean(&mut self, key: &str) -> Result<Option<bool>, KeyError> {
        match self.keys.remove(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(value)) => Ok(Some(value)),
            Some(other) => Err(wrong_type(key, "a boolean (true or false)", &other)),
        }
    }

    /// Takes `key` if it is set: it must be a whole number from 0 up.
    pub fn whole_number(&mut self, key: &str) -> Result<Option<u64>, KeyError> {
        match self.keys.remove(key) {
            None => Ok(None),
            Some(toml::Value::Integer(value)) => u64::try_from(value).map(Some).map_err(|_| {
                (
                    key.to_owned(),
                    format!("{value} is out of range; use a whole number from 0 up"),
                )
            }),
            Some(other) => Err(wrong_type(key, "a whole number", &other)),
        }
    }

    /// Moves the keys of the table `table` (`[pair.sftp]`, the form in
    /// which a backend's keys sit in a table of their own) among the
    /// pair's own keys. A key set both ways is an error naming it.
    pub fn merge_table(&mut self, table: &str) -> Result<(), KeyError> {
        let Some(value) = self.keys.remove(table) else {
            return Ok(());
        };
        let toml::Value::Table(entries) = value else {
            return Err((
                table.to_owned(),
                format!(
                    "must be a table of the remote's keys, as in [pair.{table}], not {}",
                    value.type_str()
                ),
            ));
        };
        for (key, value) in entries {
            if self.keys.contains_key(&key) {
                return Err((
                    format!("{table}.{key}"),
                    format!("is set twice, in [pair.{table}] and as `{key}` of the pair; keep one"),
                ));
            }
            self.keys.insert(key, value);
        }
        Ok(())
    }

    /// The keys no one has taken yet.
    pub fn remaining(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

fn wrong_type(key: &str, expected: &str, found: &toml::Value) -> KeyError {
    (
        key.to_owned(),
        format!("must be {expected}, not {}", found.type_str()),
    )
}

/// A parsed remote URL, whichever backend it names. Secrets never live
/// here: a password in a URL is refused at parse time.
#[derive(Clone)]
pub struct RemoteUrl(Arc<dyn AnyUrl>);

impl RemoteUrl {
    /// Parses `url` with the backend the registry finds for it.
    pub fn parse(url: &str) -> Result<RemoteUrl, String> {
        super::registry::parse(url)
    }

    pub fn new<B: Backend>(url: B) -> RemoteUrl {
        RemoteUrl(Arc::new(url))
    }

    pub fn scheme(&self) -> &'static str {
        self.0.scheme()
    }

    /// The backend's own URL, if this is one of `B`'s.
    pub fn get<B: Backend>(&self) -> Option<&B> {
        self.0.as_any().downcast_ref()
    }

    /// See [`Backend::local_folder`].
    pub fn local_folder(&self) -> Option<&Path> {
        self.0.local_folder()
    }

    /// See [`Backend::password_account`].
    pub fn password_account(&self, user: Option<String>) -> Result<Account, String> {
        self.0.password_account(user)
    }

    /// See [`Backend::reach`].
    pub fn reach(&self) -> Reach {
        self.0.reach()
    }

    /// Validates the pair keys for this remote: the backend takes its
    /// own; what is left is refused by the caller.
    pub fn configure(&self, keys: &mut PairKeys) -> Result<PairRemote, KeyError> {
        self.0.configure(keys)
    }
}

impl PartialEq for RemoteUrl {
    fn eq(&self, other: &RemoteUrl) -> bool {
        self.0.eq_any(other.0.as_any())
    }
}

impl Eq for RemoteUrl {}

impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A pair's remote: its URL and the settings its backend took from the
/// pair's keys, which always belong to one backend.
#[derive(Clone)]
pub struct PairRemote(Arc<dyn AnyPairRemote>);

impl PairRemote {
    pub fn url(&self) -> &RemoteUrl {
        self.0.url()
    }

    pub fn scheme(&self) -> &'static str {
        self.url().scheme()
    }

    /// The backend's settings, if the remote is `S`'s backend's.
    pub fn settings<S: Any>(&self) -> Option<&S> {
        self.0.settings_any().downcast_ref()
    }

    /// See [`Backend::account`].
    pub fn account(&self) -> Option<Account> {
        self.0.account()
    }

    /// See [`Backend::open`].
    pub fn open(
        &self,
        pair: &PairConfig,
        host: RemoteHost<'_>,
    ) -> Result<Box<dyn Replica>, ReplicaError> {
        self.0.open(pair, host)
    }
}

impl PartialEq for PairRemote {
    fn eq(&self, other: &PairRemote) -> bool {
        self.url() == other.url() && self.0.settings_eq(other.0.settings_any())
    }
}

impl Eq for PairRemote {}

impl fmt::Display for PairRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.url(), f)
    }
}

impl fmt::Debug for PairRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// [`Backend`] without its types, for [`RemoteUrl`].
trait AnyUrl: fmt::Debug + fmt::Display + Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn eq_any(&self, other: &dyn Any) -> bool;
    fn scheme(&self) -> &'static str;
    fn local_folder(&self) -> Option<&Path>;
    fn reach(&self) -> Reach;
    fn password_account(&self, user: Option<String>) -> Result<Account, String>;
    fn configure(&self, keys: &mut PairKeys) -> Result<PairRemote, KeyError>;
}

impl<B: Backend> AnyUrl for B {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn eq_any(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<B>() == Some(self)
    }

    fn scheme(&self) -> &'static str {
        Backend::scheme(self)
    }

    fn local_folder(&self) -> Option<&Path> {
        Backend::local_folder(self)
    }

    fn reach(&self) -> Reach {
        Backend::reach(self)
    }

    fn password_account(&self, user: Option<String>) -> Result<Account, String> {
        Backend::password_account(self, user)
    }

    fn configure(&self, keys: &mut PairKeys) -> Result<PairRemote, KeyError> {
        let settings = self.settings(keys)?;
        Ok(PairRemote(Arc::new(Configured {
            url: RemoteUrl::new(self.clone()),
            backend: self.clone(),
            settings,
        })))
    }
}

/// A backend's URL with its settings.
#[derive(Debug)]
struct Configured<B: Backend> {
    url: RemoteUrl,
    backend: B,
    settings: B::Settings,
}

/// [`Configured`] without its types, for [`PairRemote`].
trait AnyPairRemote: fmt::Debug + Send + Sync {
    fn url(&self) -> &RemoteUrl;
    fn settings_any(&self) -> &dyn Any;
    fn settings_eq(&self, other: &dyn Any) -> bool;
    fn account(&self) -> Option<Account>;
    fn open(
        &self,
        pair: &PairConfig,
        host: RemoteHost<'_>,
    ) -> Result<Box<dyn Replica>, ReplicaError>;
}

impl<B: Backend> AnyPairRemote for Configured<B> {
    fn url(&self) -> &RemoteUrl {
        &self.url
    }

    fn settings_any(&self) -> &dyn Any {
        &self.settings
    }

    fn settings_eq(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<B::Settings>() == Some(&self.settings)
    }

    fn account(&self) -> Option<Account> {
        self.backend.account(&self.settings)
    }

    fn open(
        &self,
        pair: &PairConfig,
        host: RemoteHost<'_>,
    ) -> Result<Box<dyn Replica>, ReplicaError> {
        self.backend.open(&self.settings, pair, host)
    }
}

/// Splits `host[:port]/path` after the `://` at the first `/`; no path is
/// the root.
pub fn split_authority(rest: &str) -> (&str, &str) {
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    }
}

/// Splits `host[:port]` (a host may be a bracketed IPv6 address); `url`
/// is named in messages.
pub fn split_host_port(host_port: &str, url: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("{url:?} has an invalid port {port:?}"))?;
            (host, Some(port))
        }
        _ => (host_port, None),
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok((host.to_owned(), port))
}

/// Decodes the %-escapes of a part of a URL into UTF-8.
pub fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = percent::decode(s, Plus::Literal)
        .ok_or_else(|| format!("{s:?} has a malformed %-escape"))?;
    String::from_utf8(bytes).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}
