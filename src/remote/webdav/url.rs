//! What a `webdav://host[:port]/path` (or `webdavs://`, HTTPS) pair says
//! in the config: the server and folder in the URL, and the pair keys
//! `username`, `ca_file`, `allow_insecure_http_auth` and `timeout_secs`.
//! Never a password: those live outside the config (see `secrets`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{DEFAULT_REQUEST_TIMEOUT, WebdavReplica, WebdavTarget};
use crate::config::{PairConfig, expand_home, is_loopback_host};
use crate::remote::backend::{
    Backend, KeyError, Location, PairKeys, PathText, Reach, Registration, RemoteUrl, UrlForm,
    split_authority, split_host_port,
};
use crate::remote::{RemoteHost, Replica, ReplicaError};
use crate::secrets::{Account, Kind};

/// A WebDAV login's password: `webdav://user@host:port` in the secret
/// store (`webdavs://` URLs too), the variable `PRISM_SYNC_WEBDAV_PASSWORD`,
/// the file `webdav-passwords`.
pub const PASSWORD: Kind = Kind::login("webdav", "PRISM_SYNC_WEBDAV_PASSWORD", "webdav-passwords");

pub const REGISTRATION: Registration = Registration {
    forms: &[UrlForm::Host("webdav"), UrlForm::Host("webdavs")],
    keys: &[
        "username",
        "ca_file",
        "allow_insecure_http_auth",
        "timeout_secs",
    ],
    remotes: "webdav:// and webdavs://",
    example: "webdav://host/path",
    parse,
};

/// `webdav[s]://host[:port]/path`; the path as written (%-escapes kept,
/// as they go into request URLs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebdavUrl {
    /// HTTPS (`webdavs://`) or plain HTTP (`webdav://`).
    pub tls: bool,
    pub host: String,
    pub port: Option<u16>,
    pub path: String,
}

/// How a WebDAV pair logs in and which certificates it trusts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebdavSettings {
    /// The Basic-auth user; `None` means no authentication.
    pub username: Option<String>,
    /// An absolute path to PEM CA certificates trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Whether a password may go over plain HTTP to a non-loopback host.
    pub allow_insecure_http_auth: bool,
    /// How long the server may stay silent; `None`: the backend's default.
    pub timeout: Option<Duration>,
}

fn parse(url: &str) -> Result<RemoteUrl, String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = split_authority(rest);
    if authority.contains('@') {
        return Err("the webdav URL contains credentials; keep them out of the config".to_owned());
    }
    let (host, port) = split_host_port(authority, url)?;
    Ok(RemoteUrl::new(WebdavUrl {
        tls: scheme == "webdavs",
        host,
        port,
        path: path.to_owned(),
    }))
}

impl WebdavUrl {
    fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(if self.tls { 443 } else { 80 })
    }
}

impl fmt::Display for WebdavUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        write!(f, "{}://{}{port}{}", self.scheme(), self.host, self.path)
    }
}

impl Backend for WebdavUrl {
    type Settings = WebdavSettings;

    fn scheme(&self) -> &'static str {
        if self.tls { "webdavs" } else { "webdav" }
    }

    /// The user name must fit Basic auth, `ca_file` only means something
    /// for HTTPS, and a password is not sent in the clear across the
    /// network unless the pair says so.
    fn settings(&self, keys: &mut PairKeys) -> Result<WebdavSettings, KeyError> {
        let username = keys.string("username")?;
        let ca_file = keys.string("ca_file")?;
        let allow_insecure_http_auth = keys.boolean("allow_insecure_http_auth")?;
        let timeout_secs = keys.whole_number("timeout_secs")?;
        let WebdavUrl { tls, host, .. } = self;
        if let Some(user) = &username
            && (user.is_empty() || user.contains(':') || user.chars().any(char::is_control))
        {
            return Err((
                "username".into(),
                "must be non-empty, without a colon or control characters (HTTP Basic auth cannot carry them)".into(),
            ));
        }
        let ca_file = match ca_file {
            None => None,
            Some(_) if !tls => {
                return Err((
                    "ca_file".into(),
                    "only applies to webdavs:// (HTTPS) remotes; remove it or use webdavs://"
                        .into(),
                ));
            }
            Some(value) => {
                let path = expand_home(&value);
                if !path.is_absolute() {
                    return Err((
                        "ca_file".into(),
                        format!(
                            "{value:?} is not an absolute path; write the full path to the PEM file"
                        ),
                    ));
                }
                Some(path)
            }
        };
        let allow_insecure_http_auth = allow_insecure_http_auth.unwrap_or(false);
        if username.is_some() && !tls && !allow_insecure_http_auth && !is_loopback_host(host) {
            return Err((
                "username".into(),
                format!(
                    "a password would cross the network unencrypted to {host}; use webdavs:// \
                     (or, if the network is trusted, set allow_insecure_http_auth = true)"
                ),
            ));
        }
        let timeout = match timeout_secs {
            None => None,
            Some(secs @ 1..=3600) => Some(Duration::from_secs(secs)),
            Some(secs) => {
                return Err((
                    "timeout_secs".into(),
                    format!("{secs} is out of range; use 1 to 3600 seconds"),
                ));
            }
        };
        Ok(WebdavSettings {
            username,
            ca_file,
            allow_insecure_http_auth,
            timeout,
        })
    }

    fn open(
        &self,
        settings: &WebdavSettings,
        _pair: &PairConfig,
        host: RemoteHost<'_>,
    ) -> Result<Box<dyn Replica>, ReplicaError> {
        Ok(Box::new(WebdavReplica::new(WebdavTarget {
            tls: self.tls,
            host: self.host.clone(),
            port: self.port,
            path: self.path.clone(),
            username: settings.username.clone(),
            ca_file: settings.ca_file.clone(),
            allow_insecure_http_auth: settings.allow_insecure_http_auth,
            config_dir: host.config_dir.map(Path::to_path_buf),
            timeout: settings.timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            parallel_requests: host.parallel_transfers,
        })?))
    }

    /// The `username`'s, if the pair logs in.
    fn account(&self, settings: &WebdavSettings) -> Option<Account> {
        let user = settings.username.as_ref()?;
        Some(Account::new(
            PASSWORD,
            user,
            &self.host,
            self.port_or_default(),
        ))
    }

    /// Unlike in the config, the user is written in the URL here, because
    /// the config keeps it in `username`.
    fn password_account(&self, user: Option<String>) -> Result<Account, String> {
        let user = user.ok_or_else(|| {
            let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "name the user in the URL, as in {}://USER@{}{port}",
                self.scheme(),
                self.host
            )
        })?;
        Ok(Account::new(
            PASSWORD,
            &user,
            &self.host,
            self.port_or_default(),
        ))
    }

    /// No user: a pair added without keys (as over HTTP) does not log
    /// in, and the path is decoded as the server will decode it.
    fn reach(&self) -> Reach {
        Reach::Server(Location::new(
            self.scheme(),
            None,
            &self.host,
            Some(self.port_or_default()),
            &self.path,
            PathText::Escaped,
        ))
    }
}
