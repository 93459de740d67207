//! Where login passwords live, how they are found, and the type that keeps
//! them out of logs.
//!
//! An encrypted pair's crypt password and its optional salt (rclone's
//! "password2") live the same way, under the accounts `crypt://PAIR` and
//! `crypt-password2://PAIR`, the variables `PRISM_SYNC_CRYPT_PASSWORD` and
//! `PRISM_SYNC_CRYPT_PASSWORD2`, and the credentials file `crypt-passwords`
//! (lines `PAIR PASSWORD` and `PAIR:password2 SALT`).
//!
//! A password belongs to an [`Account`]: a kind of remote, a user, a host
//! and a port. Its key is `sftp://user@host:port` or `webdav://user@host:port`
//! (WebDAV over HTTPS too: the port tells them apart, 443 or 80 when the URL
//! has none), or `s3://ACCESS_KEY_ID@host:port` for an S3 pair's
//! `access_key_id` (its secret access key is the password; the host and
//! port are the endpoint's, `s3.amazonaws.com:443` on AWS). Lookup order,
//! first hit wins:
//!
//! 1. the environment variable `PRISM_SYNC_SFTP_PASSWORD`,
//!    `PRISM_SYNC_WEBDAV_PASSWORD` or `PRISM_SYNC_S3_SECRET_ACCESS_KEY` (one
//!    password for every pair of that kind: for scripts and tests);
//! 2. the OS secret store ([`store`]): an item with service `prism-sync`
//!    and the account's key as its user;
//! 3. the credentials file in the config dir ([`file`]), `sftp-passwords`,
//!    `webdav-passwords` or `s3-secrets`: one `user@host:port PASSWORD` line per account,
//!    mode 0600 (a file others can read is refused).
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

/// The environment variable holding an SFTP password.
pub const PASSWORD_ENV: &str = "PRISM_SYNC_SFTP_PASSWORD";

/// The SFTP credentials file's name inside the config dir.
pub const CREDENTIALS_FILE: &str = "sftp-passwords";

/// The environment variable holding a WebDAV password.
pub const WEBDAV_PASSWORD_ENV: &str = "PRISM_SYNC_WEBDAV_PASSWORD";

/// The WebDAV credentials file's name inside the config dir.
pub const WEBDAV_CREDENTIALS_FILE: &str = "webdav-passwords";

/// The environment variable holding an S3 secret access key stored for a
/// pair's `access_key_id` (the AWS variables work without one).
pub const S3_SECRET_ENV: &str = "PRISM_SYNC_S3_SECRET_ACCESS_KEY";

/// The S3 credentials file's name inside the config dir.
pub const S3_CREDENTIALS_FILE: &str = "s3-secrets";

/// The environment variable holding an encrypted pair's crypt password.
pub const CRYPT_PASSWORD_ENV: &str = "PRISM_SYNC_CRYPT_PASSWORD";

/// The environment variable holding an encrypted pair's salt (password2).
pub const CRYPT_PASSWORD2_ENV: &str = "PRISM_SYNC_CRYPT_PASSWORD2";

/// The crypt credentials file's name inside the config dir.
pub const CRYPT_CREDENTIALS_FILE: &str = "crypt-passwords";

pub use store::SERVICE;

/// What to do instead of naming an S3 account by URL.
pub const S3_CREDENTIALS: &str = "an s3:// account is its pair's `access_key_id` at its \
     endpoint: name the pair (`prism-syncctl password set PAIR`), or log in without a stored \
     secret through AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a `profile`";

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

/// The kinds of secret kept: the login passwords of remotes, and the
/// crypt password and salt of an encrypted pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sftp,
    Webdav,
    /// An S3 key pair: the user is the access key id, the password the
    /// secret access key.
    S3,
    /// An encrypted pair's crypt password (the account's user is the pair).
    Crypt,
    /// An encrypted pair's salt, rclone's "password2" (optional).
    CryptSalt,
}

impl Kind {
    fn scheme(self) -> &'static str {
        match self {
            Kind::Sftp => "sftp",
            Kind::Webdav => "webdav",
            Kind::S3 => "s3",
            Kind::Crypt => "crypt",
            Kind::CryptSalt => "crypt-password2",
        }
    }

    /// The environment variable that overrides every other place.
    pub fn env_var(self) -> &'static str {
        match self {
            Kind::Sftp => PASSWORD_ENV,
            Kind::Webdav => WEBDAV_PASSWORD_ENV,
            Kind::S3 => S3_SECRET_ENV,
            Kind::Crypt => CRYPT_PASSWORD_ENV,
            Kind::CryptSalt => CRYPT_PASSWORD2_ENV,
        }
    }

    /// The credentials file's name in the config dir.
    pub fn file_name(self) -> &'static str {
        match self {
            Kind::Sftp => CREDENTIALS_FILE,
            Kind::Webdav => WEBDAV_CREDENTIALS_FILE,
            Kind::S3 => S3_CREDENTIALS_FILE,
            Kind::Crypt | Kind::CryptSalt => CRYPT_CREDENTIALS_FILE,
        }
    }

    fn is_crypt(self) -> bool {
        matches!(self, Kind::Crypt | Kind::CryptSalt)
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

    /// The account of an encrypted pair's crypt password, or with `salt`
    /// of its salt (password2).
    pub fn crypt(pair: &str, salt: bool) -> Account {
        let kind = if salt { Kind::CryptSalt } else { Kind::Crypt };
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
        if scheme == "s3" {
            return Err(S3_CREDENTIALS.to_owned());
        }
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
        if self.kind.is_crypt() {
            return format!("{}://{}", self.kind.scheme(), self.user);
        }
        // URLs keep an IPv6 host in brackets; one given bare gets them here.
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "{}://{}@{host}:{}",
            self.kind.scheme(),
            self.user,
            self.port
        )
    }

    /// The credentials file's line key: `user@host:port`.
    fn file_key(&self) -> String {
        match self.kind {
            Kind::Crypt => return self.user.clone(),
            Kind::CryptSalt => return format!("{}:password2", self.user),
            Kind::Sftp | Kind::Webdav | Kind::S3 => {}
        }
        format!("{}@{}:{}", self.user, self.host, self.port)
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
    let target = match account.kind {
        Kind::Crypt => format!("--crypt {}", account.user),
        Kind::CryptSalt => format!("--crypt --password2 {}", account.user),
        Kind::Sftp | Kind::Webdav | Kind::S3 => account.to_string(),
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
    fn an_encrypted_pairs_password_and_salt_are_accounts_of_their_own() {
        let password = Account::crypt("notes", false);
        let salt = Account::crypt("notes", true);
        assert_eq!(password.key(), "crypt://notes");
        assert_eq!(salt.key(), "crypt-password2://notes");
        assert_eq!(password.file_key(), "notes");
        assert_eq!(salt.file_key(), "notes:password2");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            password.file(dir.path()),
            dir.path().join("crypt-passwords")
        );
        file::write(
            &password.file(dir.path()),
            &password.file_key(),
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
        assert_eq!(read(&password).unwrap().expose(), "pw");
        assert_eq!(read(&salt).unwrap().expose(), "salt");
        assert!(read(&Account::crypt("other", false)).is_none());
        let how = how_to_store(&salt, Some(dir.path()));
        assert!(
            how.contains("password set --crypt --password2 notes")
                && how.contains(CRYPT_PASSWORD2_ENV),
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
