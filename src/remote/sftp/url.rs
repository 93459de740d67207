//! What an `sftp://user@host:port/path` pair says in the config: the
//! server and folder in the URL, and the pair keys `known_hosts`,
//! `identity_file` and `compression`. Never a password: those live
//! outside the config (see `secrets`).

use std::fmt;
use std::path::{Path, PathBuf};

use super::{SftpReplica, SftpTarget};
use crate::config::{PairConfig, expand_home};
use crate::remote::backend::{
    Backend, KeyError, Location, PairKeys, PathText, Reach, Registration, RemoteUrl, UrlForm,
    percent_decode, split_authority, split_host_port,
};
use crate::remote::{RemoteHost, Replica, ReplicaError};
use crate::secrets::{Account, Kind, default_user};

/// An SFTP login's password: `sftp://user@host:port` in the secret store,
/// the variable `PRISM_SYNC_SFTP_PASSWORD`, the file `sftp-passwords`.
pub const PASSWORD: Kind = Kind::login("sftp", "PRISM_SYNC_SFTP_PASSWORD", "sftp-passwords");

pub const REGISTRATION: Registration = Registration {
    forms: &[UrlForm::Host("sftp")],
    keys: &["known_hosts", "identity_file", "compression"],
    remotes: "sftp://",
    example: "sftp://user@host/path",
    parse,
};

/// `sftp://[user@]host[:port]/path`, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SftpUrl {
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Where an SFTP pair finds its trusted host keys and its login key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SshSettings {
    /// An absolute path; `None` means `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// An absolute path; `None` means the agent and the default keys.
    pub identity_file: Option<PathBuf>,
    /// Whether the SSH connection is compressed (zlib): worth it on a slow
    /// link with compressible files, a cost in CPU on a fast one.
    pub compression: bool,
}

fn parse(url: &str) -> Result<RemoteUrl, String> {
    let rest = url.strip_prefix("sftp://").unwrap_or(url);
    // Without a path the URL would silently mean the server's root; a
    // folder on the server must be named.
    if !rest.contains('/') {
        return Err(format!(
            "{url:?} names no folder on the server; write the folder after the host, \
             as in sftp://user@host/home/user/backup (sftp://user@host/ for the \
             server's root)"
        ));
    }
    let (authority, path) = split_authority(rest);
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(percent_decode(user)?), host),
        None => (None, authority),
    };
    let (host, port) = split_host_port(host_port, url)?;
    Ok(RemoteUrl::new(SftpUrl {
        user,
        host,
        port: port.unwrap_or(22),
        path: percent_decode(path)?,
    }))
}

impl fmt::Display for SftpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SftpUrl {
            user,
            host,
            port,
            path,
        } = self;
        let user = user.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
        write!(f, "sftp://{user}{host}:{port}{path}")
    }
}

impl Backend for SftpUrl {
    type Settings = SshSettings;

    fn scheme(&self) -> &'static str {
        "sftp"
    }

    fn settings(&self, keys: &mut PairKeys) -> Result<SshSettings, KeyError> {
        let mut path = |key: &str| -> Result<Option<PathBuf>, KeyError> {
            let Some(value) = keys.string(key)? else {
                return Ok(None);
            };
            let path = expand_home(&value);
            if !path.is_absolute() {
                return Err((
                    key.to_owned(),
                    format!(
                        "{value:?} is not an absolute path; write the full path, e.g. ~/.ssh/{key}"
                    ),
                ));
            }
            Ok(Some(path))
        };
        Ok(SshSettings {
            known_hosts: path("known_hosts")?,
            identity_file: path("identity_file")?,
            compression: keys.boolean("compression")?.unwrap_or(false),
        })
    }

    fn open(
        &self,
        settings: &SshSettings,
        _pair: &PairConfig,
        host: RemoteHost<'_>,
    ) -> Result<Box<dyn Replica>, ReplicaError> {
        Ok(Box::new(SftpReplica::new(SftpTarget {
            user: self.user.clone(),
            host: self.host.clone(),
            port: self.port,
            path: self.path.clone(),
            known_hosts: settings.known_hosts.clone(),
            identity_file: settings.identity_file.clone(),
            config_dir: host.config_dir.map(Path::to_path_buf),
            sessions: host.parallel_transfers,
            compression: settings.compression,
        })))
    }

    /// The URL's user, else the local user name.
    fn account(&self, _settings: &SshSettings) -> Option<Account> {
        let user = self.user.clone().unwrap_or_else(default_user);
        Some(Account::new(PASSWORD, &user, &self.host, self.port))
    }

    fn password_account(&self, user: Option<String>) -> Result<Account, String> {
        let user = user.unwrap_or_else(default_user);
        Ok(Account::new(PASSWORD, &user, &self.host, self.port))
    }

    /// The login is the URL's user, else the local user's name (as in
    /// [`Backend::account`]), so both spellings are one place.
    fn reach(&self) -> Reach {
        let user = self.user.clone().unwrap_or_else(default_user);
        Reach::Server(Location::new(
            "sftp",
            Some(&user),
            &self.host,
            Some(self.port),
            &self.path,
            PathText::Decoded,
        ))
    }
}
