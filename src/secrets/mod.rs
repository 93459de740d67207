//! Where login passwords live, how they are found, and the type that keeps
//! them out of logs.
//!
//! A password belongs to an [`Account`]: a [`Kind`] of secret, a user, a
//! host and a port. The kinds are declared where they are used, by the
//! backend that logs in with them (`remote::sftp::url::PASSWORD`,
//! `remote::webdav::url::PASSWORD`,
//! `remote::s3::settings::SECRET_ACCESS_KEY`) or by the encrypting layer
//! (`remote::crypt::PASSWORD` and `SALT`); this module only keeps them. A kind names its URL scheme (the key's first part), one
//! environment variable and one credentials file. A login's key is
//! `SCHEME://user@host:port` (WebDAV over HTTPS too: the port tells them
//! apart, 443 or 80 when the URL has none; an S3 pair's `access_key_id` at
//! its endpoint's host and port, `s3.amazonaws.com:443` on AWS); a pair's
//! own secret (the crypt password and salt) is keyed `SCHEME://PAIR`.
//! Lookup order, first hit wins:
//!
//! 1. the kind's environment variable, e.g. `PRISM_SYNC_SFTP_PASSWORD` (one
//!    password for every pair of that kind: for scripts and tests);
//! 2. the OS secret store ([`store`]): an item with service `prism-sync`
//!    and the account's key as its user;
//! 3. the kind's credentials file in the config dir ([`file`]), e.g.
//!    `sftp-passwords`: one `user@host:port PASSWORD` line per login (`PAIR
//!    PASSWORD` for a pair's own secret), mode 0600 (a file others can read
//!    is refused).
//!
//! [`store_password`] writes to the secret store when one is reachable and
//! otherwise to the credentials file. No secret store (no D-Bus session on
//! a headless server) is normal and logged at debug level only. Passwords
//! are never read from or written to the config file, the journal or a log,
//! and a [`Secret`] prints as `<redacted>`.

pub mod file;
pub mod store;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::{PairConfig, RemoteUrl};
use store::StoreError;

pub use store::SERVICE;

/// A secret string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself, to hand to the transport and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A password that cannot be found or kept. The messages name files,
/// accounts and stores, never a password.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the credentials file {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the credentials file {file} can be read by other users; restrict it with `chmod 600 {file}`"
    )]
    TooOpen { file: PathBuf },
    #[error("cannot write the credentials file {file}: {source}")]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot keep the password for {account} in the secret store: {why}")]
    Store { account: String, why: String },
    #[error(
        "no secret store is reachable ({why}) and there is no config dir for a credentials file"
    )]
    Nowhere { why: String },
    #[error("the password is not usable: {0}")]
    Unusable(&'static str),
}

/// A kind of secret kept, as the backend or layer that uses it declares
/// it: which URL scheme its accounts' keys start with, the environment
/// variable that overrides every other place, and the credentials file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    scheme: &'static str,
    env_var: &'static str,
    file_name: &'static str,
    owner: Owner,
    /// `prism-syncctl password set` takes the pair's name for it, not a
    /// URL naming the account.
    set_by_pair: bool,
}

/// Whom a kind of secret belongs to, which decides its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// A login at a server: `SCHEME://user@host:port`, file lines
    /// `user@host:port`.
    Login,
    /// A pair's own secret, the account's user being the pair's name:
    /// `SCHEME://PAIR`, file lines `PAIR{line_suffix}`, stored with
    /// `prism-syncctl password set {set_flags} PAIR`.
    Pair {
        line_suffix: &'static str,
        set_flags: &'static str,
    },
}

impl Kind {
    /// The password (or secret key) of a login at a server.
    pub const fn login(
        scheme: &'static str,
        env_var: &'static str,
        file_name: &'static str,
    ) -> Kind {
        Kind {
            scheme,
            env_var,
            file_name,
            owner: Owner::Login,
            set_by_pair: false,
        }
    }

    /// The same kind, stored with `prism-syncctl password set PAIR` only
    /// (its account is no URL a user would write, such as an S3 key id at
    /// an endpoint).
    pub const fn set_by_pair_name(self) -> Kind {
        Kind {
            set_by_pair: true,
            ..self
        }
    }

    /// A secret of one pair (its name is the account's user). Several
    /// kinds may share a credentials file when their `line_suffix`es
    /// differ; `set_flags` are the `prism-syncctl password set` flags that
    /// name this kind.
    pub const fn of_pair(
        scheme: &'static str,
        env_var: &'static str,
        file_name: &'static str,
        line_suffix: &'static str,
        set_flags: &'static str,
    ) -> Kind {
        Kind {
            scheme,
            env_var,
            file_name,
            owner: Owner::Pair {
                line_suffix,
                set_flags,
            },
            set_by_pair: false,
        }
    }

    /// The environment variable that overrides every other place.
    pub fn env_var(self) -> &'static str {
        self.env_var
    }

    /// The credentials file's name in the config dir.
    pub fn file_name(self) -> &'static str {
        self.file_name
    }
}

/// Who logs in where: the thing a password belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub kind: Kind,
    pub user: String,
    pub host: String,
    pub port: u16,
}

impl Account {
    pub fn new(kind: Kind, user: &str, host: &str, port: u16) -> Account {
        Account {
            kind,
            user: user.to_owned(),
            host: host.to_owned(),
            port,
        }
    }

    /// The account of `pair`'s own secret of `kind`.
    pub fn of_pair(kind: Kind, pair: &str) -> Account {
        Account::new(kind, pair, "", 0)
    }

    /// The account a pair logs in with, if its remote takes a password,
    /// as its backend says (`remote::backend::Backend::account`): SFTP
    /// (the URL's user, else the local user name), WebDAV with a
    /// `username`, S3 with an `access_key_id`.
    pub fn for_pair(pair: &PairConfig) -> Option<Account> {
        pair.remote.account()
    }

    /// An account from a URL: `sftp://[user@]host[:port][/path]` or
    /// `webdav[s]://user@host[:port][/path]`. Unlike in the config, the
    /// user may be written in a WebDAV URL here, because the config keeps
    /// it in `username`. A password in the URL is refused.
    pub fn parse(url: &str) -> Result<Account, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} is neither a pair name nor a URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((user, host_port)) => (Some(user), host_port),
            None => (None, authority),
        };
        if user.is_some_and(|u| u.contains(':')) {
            return Err(format!(
                "the {scheme} URL has a ':' before its '@', which would be a password; \
                 name only the user, and type the password when asked"
            ));
        }
        // An account names no folder (`sftp://me@nas`); a remote URL must,
        // so the root stands in for it.
        let path = if path.is_empty() { "/" } else { path };
        let parsed = RemoteUrl::parse(&format!("{scheme}://{host_port}{path}"))?;
        parsed.password_account(user.map(str::to_owned))
    }

    /// The secret store's user for this account: `sftp://user@host:port`.
    pub fn key(&self) -> String {
        if let Owner::Pair { .. } = self.kind.owner {
            return format!("{}://{}", self.kind.scheme, self.user);
        }
        // URLs keep an IPv6 host in brackets; one given bare gets them here.
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{}://{}@{host}:{}", self.kind.scheme, self.user, self.port)
    }

    /// The credentials file's line key: `user@host:port`.
    fn file_key(&self) -> String {
        match self.kind.owner {
            Owner::Pair { line_suffix, .. } => format!("{}{line_suffix}", self.user),
            Owner::Login => format!("{}@{}:{}", self.user, self.host, self.port),
        }
    }

    /// The credentials file for this account inside `config_dir`.
    pub fn file(&self, config_dir: &Path) -> PathBuf {
        config_dir.join(self.kind.file_name())
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// A place a password can be kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// An environment variable of this process.
    Environment(&'static str),
    /// The OS secret store.
    SecretStore,
    /// A credentials file.
    File(PathBuf),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Environment(name) => write!(f, "the environment variable {name}"),
            Place::SecretStore => write!(f, "the secret store (service \"{SERVICE}\")"),
            Place::File(file) => write!(f, "the credentials file {}", file.display()),
        }
    }
}

/// The user an `sftp://` URL without one logs in as: the local user, as
/// `ssh` does; such a pair's password is keyed by this name too.
pub fn default_user() -> String {
    std::env::var("USER")
        .ok()
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "root".to_owned())
}

/// The password for `account`, from the first place in the lookup order
/// that has one; `None` when none has.
pub fn password(
    account: &Account,
    config_dir: Option<&Path>,
) -> Result<Option<Secret>, SecretError> {
    if let Some(secret) = from_env(account.kind) {
        return Ok(Some(secret));
    }
    match store::get(&account.key()) {
        Ok(Some(secret)) => return Ok(Some(secret)),
        Ok(None) => {}
        Err(StoreError::Unreachable(why)) => {
            tracing::debug!(%account, %why, "no secret store; looking in the credentials file");
        }
        Err(StoreError::Failed(why)) => {
            tracing::warn!(%account, %why, "the secret store did not answer; looking in the credentials file");
        }
    }
    match config_dir {
        Some(dir) => file::read(&account.file(dir), &account.file_key()),
        None => Ok(None),
    }
}

/// What a refused login tells the user to do about the password: the
/// command that stores it, where it then goes, and the variable.
pub fn how_to_store(account: &Account, config_dir: Option<&Path>) -> String {
    let file = match config_dir {
        Some(dir) => account.file(dir).display().to_string(),
        None => account.kind.file_name().to_owned(),
    };
    let target = match account.kind.owner {
        Owner::Pair { set_flags, .. } => format!("{set_flags} {}", account.user),
        Owner::Login if account.kind.set_by_pair => "PAIR".to_owned(),
        Owner::Login => account.to_string(),
    };
    format!(
        "store the password with `prism-syncctl password set {target}` (it goes to the OS \
         secret store, else to {file}), or set {}",
        account.kind.env_var()
    )
}

fn from_env(kind: Kind) -> Option<Secret> {
    let value = std::env::var_os(kind.env_var())?;
    let value = value.to_str()?;
    (!value.is_empty()).then(|| Secret::new(value.to_owned()))
}

/// Keeps `secret` for `account`: in the secret store when one is reachable
/// (and then an older line for it in the credentials file is removed, so no
/// stale copy stays in a plain file), else in the credentials file in
/// `config_dir`. A store that is reachable but refuses (locked, access
/// denied) is an error, not a reason to fall back to a plain file the user
/// did not ask for. Returns where it went.
pub fn store_password(
    account: &Account,
    config_dir: Option<&Path>,
    secret: &Secret,
) -> Result<Place, SecretError> {
    let value = secret.expose();
    if value.is_empty() {
        return Err(SecretError::Unusable("it is empty"));
    }
    if value.contains(['\n', '\r', '\0']) {
        return Err(SecretError::Unusable("it holds a line break or a NUL"));
    }
    match store::set(&account.key(), secret) {
        Ok(()) => {
            if let Some(dir) = config_dir {
                file::remove(&account.file(dir), &account.file_key())?;
            }
            Ok(Place::SecretStore)
        }
        Err(StoreError::Unreachable(why)) => {
            tracing::debug!(%account, %why, "no secret store; keeping the password in the credentials file");
            let Some(dir) = config_dir else {
                return Err(SecretError::Nowhere { why });
            };
            if value.trim() != value {
                // The file's format trims each line's password.
                return Err(SecretError::Unusable(
                    "it starts or ends with a space, which the credentials file cannot keep",
                ));
            }
            let path = account.file(dir);
            file::write(&path, &account.file_key(), secret)?;
            Ok(Place::File(path))
        }
        Err(StoreError::Failed(why)) => Err(SecretError::Store {
            account: account.key(),
            why,
        }),
    }
}

/// Removes the password for `account` from the secret store and the
/// credentials file. Returns the places it was removed from.
pub fn remove_password(
    account: &Account,
    config_dir: Option<&Path>,
) -> Result<Vec<Place>, SecretError> {
    let mut removed = Vec::new();
    match store::delete(&account.key()) {
        Ok(true) => removed.push(Place::SecretStore),
        Ok(false) => {}
        Err(StoreError::Unreachable(why)) => {
            tracing::debug!(%account, %why, "no secret store to remove the password from");
        }
        Err(StoreError::Failed(why)) => {
            return Err(SecretError::Store {
                account: account.key(),
                why,
            });
        }
    }
    if let Some(dir) = config_dir {
        let path = account.file(dir);
        if file::remove(&path, &account.file_key())? {
            removed.push(Place::File(path));
        }
    }
    Ok(removed)
}

/// Every place that holds a password for `account`, in lookup order: the
/// first one is the one a login uses.
pub fn locate_password(
    account: &Account,
    config_dir: Option<&Path>,
) -> Result<Vec<Place>, SecretError> {
    let mut found = Vec::new();
    if from_env(account.kind).is_some() {
        found.push(Place::Environment(account.kind.env_var()));
    }
    match store::get(&account.key()) {
        Ok(Some(_)) => found.push(Place::SecretStore),
        Ok(None) => {}
        Err(StoreError::Unreachable(why)) => {
            tracing::debug!(%account, %why, "no secret store to look in");
        }
        Err(StoreError::Failed(why)) => {
            return Err(SecretError::Store {
                account: account.key(),
                why,
            });
        }
    }
    if let Some(dir) = config_dir {
        let path = account.file(dir);
        if file::read(&path, &account.file_key())?.is_some() {
            found.push(Place::File(path));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_itself() {
        let secret = Secret::new("hunter2".into());
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn accounts_come_from_urls_with_their_default_ports() {
        let a = Account::parse("sftp://me@nas.local:2222/srv/notes").unwrap();
        assert_eq!(a.key(), "sftp://me@nas.local:2222");
        assert_eq!(a.file_key(), "me@nas.local:2222");
        assert_eq!(Account::parse("sftp://me@nas").unwrap().port, 22);
        let w = Account::parse("webdavs://alice@cloud.example/remote.php/dav").unwrap();
        assert_eq!(w.key(), "webdav://alice@cloud.example:443");
        assert_eq!(
            Account::parse("webdav://alice@127.0.0.1").unwrap().key(),
            "webdav://alice@127.0.0.1:80"
        );
        assert_eq!(
            Account::parse("webdav://alice@[::1]:8080/x").unwrap().key(),
            "webdav://alice@[::1]:8080"
        );
        let err = Account::parse("webdav://host/x").unwrap_err();
        assert!(err.contains("USER@host"), "{err}");
        let err = Account::parse("sftp://me:hunter2@nas/x").unwrap_err();
        assert!(
            err.contains("password") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(Account::parse("file:///tmp").is_err());
        assert!(Account::parse("notes").is_err());
    }

    #[test]
    fn a_pairs_own_secrets_are_accounts_of_their_own_and_may_share_a_file() {
        const KEY: Kind = Kind::of_pair("k", "PRISM_SYNC_TEST_KEY", "keys", "", "--key");
        const SALT: Kind = Kind::of_pair(
            "k-salt",
            "PRISM_SYNC_TEST_SALT",
            "keys",
            ":salt",
            "--key --salt",
        );
        let key = Account::of_pair(KEY, "notes");
        let salt = Account::of_pair(SALT, "notes");
        assert_eq!(key.key(), "k://notes");
        assert_eq!(salt.key(), "k-salt://notes");
        assert_eq!(key.file_key(), "notes");
        assert_eq!(salt.file_key(), "notes:salt");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(key.file(dir.path()), dir.path().join("keys"));
        assert_eq!(salt.file(dir.path()), key.file(dir.path()));
        file::write(
            &key.file(dir.path()),
            &key.file_key(),
            &Secret::new("pw".into()),
        )
        .unwrap();
        file::write(
            &salt.file(dir.path()),
            &salt.file_key(),
            &Secret::new("salt".into()),
        )
        .unwrap();
        let read = |a: &Account| file::read(&a.file(dir.path()), &a.file_key()).unwrap();
        assert_eq!(read(&key).unwrap().expose(), "pw");
        assert_eq!(read(&salt).unwrap().expose(), "salt");
        assert!(read(&Account::of_pair(KEY, "other")).is_none());
        let how = how_to_store(&salt, Some(dir.path()));
        assert!(
            how.contains("password set --key --salt notes") && how.contains("PRISM_SYNC_TEST_SALT"),
            "{how}"
        );
    }

    #[test]
    fn a_pair_names_its_account_only_when_it_logs_in_with_a_password() {
        let pair = |remote: &str, username: Option<&str>| {
            let mut pair = crate::config::RawPair {
                name: "p".into(),
                local: "/tmp/p".into(),
                remote: remote.into(),
                ..Default::default()
            };
            if let Some(username) = username {
                pair.remote_keys.insert("username".into(), username.into());
            }
            pair.validate().unwrap()
        };
        assert_eq!(Account::for_pair(&pair("file:///srv/x", None)), None);
        assert_eq!(
            Account::for_pair(&pair("webdav://127.0.0.1:8080/x", None)),
            None
        );
        assert_eq!(
            Account::for_pair(&pair("webdav://127.0.0.1:8080/x", Some("alice")))
                .unwrap()
                .key(),
            "webdav://alice@127.0.0.1:8080"
        );
        assert_eq!(
            Account::for_pair(&pair("sftp://me@nas/x", None))
                .unwrap()
                .key(),
            "sftp://me@nas:22"
        );
        assert_eq!(Account::for_pair(&pair("s3://bucket/x", None)), None);
        let mut s3 = crate::config::RawPair {
            name: "p".into(),
            local: "/tmp/p".into(),
            remote: "s3://bucket/x".into(),
            ..Default::default()
        };
        s3.remote_keys
            .insert("access_key_id".into(), "AKIDEXAMPLE".into());
        assert_eq!(
            Account::for_pair(&s3.clone().validate().unwrap())
                .unwrap()
                .key(),
            "s3://AKIDEXAMPLE@s3.amazonaws.com:443"
        );
        s3.remote_keys
            .insert("endpoint".into(), "http://127.0.0.1:8333".into());
        assert_eq!(
            Account::for_pair(&s3.validate().unwrap()).unwrap().key(),
            "s3://AKIDEXAMPLE@127.0.0.1:8333"
        );
        assert!(Account::parse("s3://AKID@127.0.0.1:8333").is_err());
    }
}
