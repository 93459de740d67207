//! What an `rclone:` pair says in the config: the remote after the prefix
//! exactly as rclone takes it (`NAME:PATH` for a remote of the user's
//! rclone config, `:BACKEND,KEY=VALUE:PATH` for a connection string), and
//! the pair keys `rclone_config` (which rclone config file; default:
//! rclone's own lookup, `RCLONE_CONFIG` or its default path) and
//! `rclone_binary` (default: `rclone` on `PATH`).
//!
//! Logins stay in the rclone config, where `rclone config` put them (OAuth
//! tokens, obscured passwords): a connection string that carries a
//! password or a token would put it in our config in plain text, and is
//! refused.

use std::fmt;
use std::path::{Path, PathBuf};

use super::RcloneReplica;
use super::connection;
use crate::config::{PairConfig, expand_home};
use crate::remote::backend::{
    Backend, KeyError, PairKeys, Reach, Registration, RemoteUrl, UrlForm,
};
use crate::remote::{RemoteHost, Replica, ReplicaError};
use crate::secrets::Account;

/// The pair keys that only an rclone remote takes.
pub const KEYS: [&str; 2] = ["rclone_config", "rclone_binary"];

pub const REGISTRATION: Registration = Registration {
    forms: &[UrlForm::Prefix {
        prefix: "rclone:",
        rest: "NAME:PATH",
    }],
    keys: &KEYS,
    remotes: "rclone:",
    example: "rclone:NAME:PATH",
    parse: parse_remote_url,
};

/// `rclone:REMOTE`: the remote after the prefix as rclone takes it
/// (`NAME:PATH`, or a connection string `:BACKEND,KEY=VALUE:PATH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RcloneUrl {
    pub remote: String,
    /// The folder of this machine the remote is, where a connection
    /// string says so ([`local_folder_of`]): it must lie apart from every
    /// local folder of a pair.
    pub local: Option<PathBuf>,
}

fn parse_remote_url(url: &str) -> Result<RemoteUrl, String> {
    let remote = parse_url(url.strip_prefix("rclone:").unwrap_or(url))?;
    let local = local_folder_of(&remote);
    Ok(RemoteUrl::new(RcloneUrl { remote, local }))
}

impl fmt::Display for RcloneUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rclone:{}", self.remote)
    }
}

impl Backend for RcloneUrl {
    type Settings = RclonePairSettings;

    fn scheme(&self) -> &'static str {
        "rclone"
    }

    fn settings(&self, keys: &mut PairKeys) -> Result<RclonePairSettings, KeyError> {
        let [config, binary] = KEYS;
        validate(keys.string(config)?, keys.string(binary)?, expand_home)
    }

    fn open(
        &self,
        settings: &RclonePairSettings,
        _pair: &PairConfig,
        host: RemoteHost<'_>,
    ) -> Result<Box<dyn Replica>, ReplicaError> {
        Ok(Box::new(RcloneReplica::for_agent(
            &self.remote,
            settings,
            host.parallel_transfers,
            host.state_dir,
        )?))
    }

    fn password_account(&self, _user: Option<String>) -> Result<Account, String> {
        Err(
            "an rclone remote logs in with what `rclone config` keeps for it; Prism Sync \
             keeps no password for it"
                .to_owned(),
        )
    }

    fn local_folder(&self) -> Option<&Path> {
        self.local.as_deref()
    }

    /// Which folder a remote of rclone's reaches is rclone's business: a
    /// connection string such as `:local:` or a remote of type `local`
    /// reaches any.
    fn reach(&self) -> Reach {
        Reach::Anything(
            "an rclone: remote may not be added over HTTP: a connection string such as \
             :local: or a remote of type local reaches any folder of this machine"
                .to_owned(),
        )
    }
}

/// The folder of this machine that `remote` is, as rclone takes it: an
/// absolute local path, rclone's local backend given in place
/// (`:local:/srv/notes`), or a backend given in place that wraps one of
/// these (`:alias,remote=/srv:notes`, `:hasher`, `:chunker`, `:compress`),
/// with the path joined below it. A remote of the rclone config of type
/// `local` is not known without reading that config.
pub fn local_folder_of(remote: &str) -> Option<PathBuf> {
    if remote.starts_with('/') {
        return Some(PathBuf::from(remote));
    }
    let parsed = connection::parse(remote).ok()?;
    let path = parsed.path();
    match parsed.name() {
        ":local" => Path::new(path).is_absolute().then(|| PathBuf::from(path)),
        ":alias" | ":hasher" | ":chunker" | ":compress" => {
            let (_, wrapped) = parsed.options().iter().find(|(key, _)| key == "remote")?;
            let below = path.trim_start_matches('/');
            local_folder_of(wrapped).map(|folder| folder.join(below))
        }
        _ => None,
    }
}

/// The binary run when the pair names none.
pub const DEFAULT_BINARY: &str = "rclone";

/// The pair keys of an rclone remote, as validated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RclonePairSettings {
    /// An absolute path; `None`: rclone's own lookup.
    pub config: Option<PathBuf>,
    /// A path, or a name looked up on `PATH`; `None`: `rclone`.
    pub binary: Option<PathBuf>,
}

impl RclonePairSettings {
    /// The binary to run.
    pub fn binary(&self) -> PathBuf {
        self.binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY))
    }
}

/// Checks what is written after `rclone:`: a remote rclone can open, with
/// no login secret in it ([`connection::parse`]). Returns it unchanged.
pub fn parse_url(remote: &str) -> Result<String, String> {
    connection::parse(remote)?;
    Ok(remote.to_owned())
}

/// Validates the rclone pair keys, each error naming its key.
pub fn validate(
    config: Option<String>,
    binary: Option<String>,
    expand_home: impl Fn(&str) -> PathBuf,
) -> Result<RclonePairSettings, (String, String)> {
    let config = match config {
        None => None,
        Some(value) => {
            let path = expand_home(&value);
            if !path.is_absolute() {
                return Err((
                    "rclone_config".into(),
                    format!(
                        "{value:?} is not an absolute path; write the full path, e.g. \
                         ~/.config/rclone/rclone.conf"
                    ),
                ));
            }
            Some(path)
        }
    };
    let binary = match binary {
        None => None,
        Some(value) if value.trim().is_empty() || value.starts_with('-') => {
            return Err((
                "rclone_binary".into(),
                "must name the rclone program: a path, or a name found on PATH".into(),
            ));
        }
        Some(value) => Some(expand_home(&value)),
    };
    Ok(RclonePairSettings { config, binary })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_and_connection_strings_pass_and_secrets_do_not() {
        for remote in [
            "gdrive:Notes",
            "gdrive:",
            "my remote:/abs/path",
            ":local:/srv/notes",
            ":sftp,host=nas,user=me:backup",
            ":webdav,url='http://127.0.0.1:8080/dav':x",
        ] {
            assert_eq!(parse_url(remote).unwrap(), remote);
        }
        let message = parse_url(":sftp,host=nas,pass=hunter2:x").unwrap_err();
        assert!(
            message.contains("secret") && !message.contains("hunter2"),
            "{message}"
        );
        assert!(parse_url(":s3,secret_access_key=abc:b").is_err());
        assert!(parse_url(":sftp,key_file=/k:x").is_ok());
        assert!(parse_url("notes").is_err());
        assert!(parse_url("/abs/path").is_err());
        assert!(parse_url("-x:y").is_err());
        assert!(parse_url("").is_err());
    }

    #[test]
    fn the_local_folder_a_connection_string_reaches_is_known() {
        let folder = |remote: &str| local_folder_of(remote);
        assert_eq!(folder(":local:/srv/notes"), Some("/srv/notes".into()));
        assert_eq!(folder(":local,links:/srv"), Some("/srv".into()));
        assert_eq!(
            folder(":alias,remote=/srv:notes/a"),
            Some("/srv/notes/a".into())
        );
        assert_eq!(
            folder(":hasher,remote=':local:/srv':/notes"),
            Some("/srv/notes".into())
        );
        // Not a folder of this machine, or not one known here.
        assert_eq!(folder("gdrive:Notes"), None);
        assert_eq!(folder(":alias,remote=gdrive:notes"), None);
        assert_eq!(folder(":sftp,host=nas:/srv"), None);
        assert_eq!(folder(":local:relative"), None);
    }

    #[test]
    fn keys_are_checked_one_by_one() {
        let home = |p: &str| PathBuf::from(p.replace('~', "/home/me"));
        let ok = validate(Some("~/rc.conf".into()), Some("/opt/rclone".into()), home).unwrap();
        assert_eq!(ok.config.unwrap(), PathBuf::from("/home/me/rc.conf"));
        assert_eq!(ok.binary.unwrap(), PathBuf::from("/opt/rclone"));
        let (key, _) = validate(Some("rc.conf".into()), None, home).unwrap_err();
        assert_eq!(key, "rclone_config");
        let (key, _) = validate(None, Some("--help".into()), home).unwrap_err();
        assert_eq!(key, "rclone_binary");
        assert_eq!(
            validate(None, None, home).unwrap().binary(),
            PathBuf::from("rclone")
        );
    }
}
