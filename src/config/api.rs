//! The `[api]` table: where the optional HTTP listener listens, the TLS
//! certificate it serves, and the folders in which admin tokens may add
//! pairs (`pair_roots`). No table, no listener.
//!
//! The rule that matters: a listener reachable from other machines must
//! speak TLS, because bearer tokens and `/sync/start` credentials cross it.
//! An address that is not loopback without `tls_cert`/`tls_key` is refused
//! here, so the agent never starts such a listener. Like the rest of
//! `config`, this reads no file: the certificate is loaded when the
//! listener starts, and the roots are resolved at each request
//! (`api::pair_roots`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Component, PathBuf};

use serde::Deserialize;

use super::expand_home;
use crate::remote::backend::{Location, Reach, RemoteUrl};

/// The `[api]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// `127.0.0.1:8384`, `[::1]:8384`, `localhost:8384`, `0.0.0.0:8384`…
    pub listen: Option<String>,
    /// A PEM certificate chain, leaf first.
    pub tls_cert: Option<String>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<String>,
    /// The folders under which an admin token may add pairs over HTTP;
    /// none: no token may.
    #[serde(default)]
    pub pair_roots: Vec<String>,
    /// The network remotes (URL prefixes) such a pair may use; none: only
    /// `file://` remotes inside `pair_roots`.
    #[serde(default)]
    pub pair_remotes: Vec<String>,
}

/// The validated `[api]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// `None`: plain HTTP, which validation allows on loopback only.
    pub tls: Option<TlsFiles>,
    /// Absolute folders, `~` expanded, without `..`; empty: adding pairs
    /// over HTTP is off.
    pub pair_roots: Vec<PathBuf>,
    /// Where on which servers a pair added over HTTP may log in with the
    /// agent user's credentials; empty: nowhere.
    pub pair_remotes: Vec<Location>,
}

/// Absolute paths to the PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl RawApi {
    /// `Ok(None)` when the table names no `listen` address (and nothing
    /// else). Errors are `(key, message)`.
    pub fn validate(self) -> Result<Option<ApiConfig>, (String, String)> {
        let tls = match (self.tls_cert, self.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: absolute_file("api.tls_cert", &cert)?,
                key: absolute_file("api.tls_key", &key)?,
            }),
            (Some(_), None) => {
                return Err(("api.tls_key".into(), "tls_cert needs a tls_key".into()));
            }
            (None, Some(_)) => {
                return Err(("api.tls_cert".into(), "tls_key needs a tls_cert".into()));
            }
        };
        let pair_roots = self
            .pair_roots
            .iter()
            .map(|root| pair_root(root))
            .collect::<Result<Vec<_>, _>>()?;
        let pair_remotes = self
            .pair_remotes
            .iter()
            .enumerate()
            .map(|(i, remote)| pair_remote(i, remote))
            .collect::<Result<Vec<_>, _>>()?;
        if !pair_remotes.is_empty() && pair_roots.is_empty() {
            return Err((
                "api.pair_remotes".into(),
                "is set but pair_roots is not, so no token may add a pair to use it; add the \
                 folders such pairs may sync to pair_roots (or remove pair_remotes)"
                    .into(),
            ));
        }
        let Some(listen) = self.listen else {
            if tls.is_some() {
                return Err((
                    "api.listen".into(),
                    "a certificate is configured but no listen address; add listen = \
                     \"127.0.0.1:8384\" (or remove the [api] table)"
                        .into(),
                ));
            }
            if !pair_roots.is_empty() {
                return Err((
                    "api.listen".into(),
                    "pair_roots is set but no listen address, so no token could use it; add \
                     listen = \"127.0.0.1:8384\" (or remove pair_roots)"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let listen = parse_listen(&listen).ok_or_else(|| {
            (
                "api.listen".to_owned(),
                format!(
                    "{listen:?} is not an address and port; write it as 127.0.0.1:8384, \
                     [::1]:8384 or localhost:8384"
                ),
            )
        })?;
        if tls.is_none() && !listen.ip().is_loopback() {
            return Err((
                "api.listen".into(),
                format!(
                    "{listen} is reachable from other machines, and without TLS its bearer \
                     tokens would cross the network readable; set tls_cert and tls_key, or \
                     listen on 127.0.0.1"
                ),
            ));
        }
        Ok(Some(ApiConfig {
            listen,
            tls,
            pair_roots,
            pair_remotes,
        }))
    }
}

/// An IP address and port; `localhost` means 127.0.0.1 (no resolver is
/// asked, so a hosts file cannot turn it into a public address).
fn parse_listen(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let port = text.strip_prefix("localhost:")?.parse::<u16>().ok()?;
    Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}

fn absolute_file(key: &str, path: &str) -> Result<PathBuf, (String, String)> {
    let path = expand_home(path);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err((
            key.to_owned(),
            format!(
                "{} must be an absolute path (or start with ~/)",
                path.display()
            ),
        ))
    }
}

/// One folder of `pair_roots`: absolute once `~` is expanded, and without
/// `..`, whose meaning would depend on the symbolic links before it.
fn pair_root(root: &str) -> Result<PathBuf, (String, String)> {
    let path = expand_home(root);
    if !path.is_absolute() {
        return Err((
            "api.pair_roots".into(),
            format!("{root:?} must be an absolute folder (or start with ~/)"),
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err((
            "api.pair_roots".into(),
            format!("{root:?} must not contain `..`; name the folder itself"),
        ));
    }
    Ok(path)
}

/// One entry of `pair_remotes` (the `index`th): a network remote URL,
/// parsed and placed as a pair's remote is, so the comparison is of
/// places, not of spellings. Not echoed: the parser's message never
/// repeats a password.
fn pair_remote(index: usize, text: &str) -> Result<Location, (String, String)> {
    let key = format!("api.pair_remotes[{index}]");
    let url = RemoteUrl::parse(text).map_err(|message| (key.clone(), message))?;
    match url.reach() {
        Reach::Server(location) if location.has_plain_path() => Ok(location),
        Reach::Server(_) => Err((
            key,
            "its path has a `..` segment or a %-escape of `/` or `.`; name the folder itself"
                .into(),
        )),
        Reach::Folder(_) => Err((
            key,
            "is a folder of this machine; those go in pair_roots".into(),
        )),
        Reach::Anything(why) => Err((key, format!("cannot be allowed: {why}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(listen: Option<&str>, cert: Option<&str>, key: Option<&str>) -> RawApi {
        RawApi {
            listen: listen.map(str::to_owned),
            tls_cert: cert.map(str::to_owned),
            tls_key: key.map(str::to_owned),
            pair_roots: Vec::new(),
            pair_remotes: Vec::new(),
        }
    }

    #[test]
    fn pair_roots_are_absolute_folders_with_home_expanded() {
        let with_roots = |roots: &[&str]| RawApi {
            pair_roots: roots.iter().map(|r| (*r).to_owned()).collect(),
            ..raw(Some("127.0.0.1:8384"), None, None)
        };
        let config = with_roots(&["/srv/shared", "~/Sync"])
            .validate()
            .unwrap()
            .unwrap();
        assert_eq!(config.pair_roots[0], PathBuf::from("/srv/shared"));
        assert!(config.pair_roots[1].is_absolute());
        assert!(config.pair_roots[1].ends_with("Sync"));
        assert_eq!(
            raw(Some("127.0.0.1:8384"), None, None)
                .validate()
                .unwrap()
                .unwrap()
                .pair_roots,
            Vec::<PathBuf>::new()
        );
        for bad in ["Sync", "", "/srv/../etc", "~/a/../.."] {
            let (key, message) = with_roots(&[bad]).validate().unwrap_err();
            assert_eq!(key, "api.pair_roots", "{bad}: {message}");
        }
        let no_listener = RawApi {
            listen: None,
            ..with_roots(&["/srv/shared"])
        };
        assert_eq!(no_listener.validate().unwrap_err().0, "api.listen");
    }

    #[test]
    fn pair_remotes_are_network_remotes_placed_as_pairs_are() {
        let with_remotes = |remotes: &[&str]| RawApi {
            pair_roots: vec!["/srv/shared".into()],
            pair_remotes: remotes.iter().map(|r| (*r).to_owned()).collect(),
            ..raw(Some("127.0.0.1:8384"), None, None)
        };
        let config = with_remotes(&["sftp://me@nas.local/shared/", "s3://team-bucket/"])
            .validate()
            .unwrap()
            .unwrap();
        assert_eq!(config.pair_remotes.len(), 2);
        for bad in [
            "nas.local/shared",
            "sftp://me:hunter2@nas.local/shared",
            "file:///srv/shared",
            "rclone:gdrive:Notes",
            "sftp://me@nas.local/shared/../home",
            "webdavs://dav.example/a/%2E%2E/b",
        ] {
            let (key, message) = with_remotes(&["s3://ok/", bad]).validate().unwrap_err();
            assert_eq!(key, "api.pair_remotes[1]", "{bad}: {message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        let without_roots = RawApi {
            pair_roots: Vec::new(),
            ..with_remotes(&["s3://team-bucket/"])
        };
        assert_eq!(without_roots.validate().unwrap_err().0, "api.pair_remotes");
    }

    #[test]
    fn loopback_listens_without_tls_and_localhost_means_127_0_0_1() {
        for (text, addr) in [
            ("127.0.0.1:8384", "127.0.0.1:8384"),
            ("[::1]:8384", "[::1]:8384"),
            ("localhost:8384", "127.0.0.1:8384"),
        ] {
            let config = raw(Some(text), None, None).validate().unwrap().unwrap();
            assert_eq!(config.listen.to_string(), addr);
            assert_eq!(config.tls, None);
        }
        assert_eq!(raw(None, None, None).validate().unwrap(), None);
    }

    #[test]
    fn a_listener_other_machines_reach_needs_tls() {
        for text in ["0.0.0.0:8384", "[::]:8384", "192.168.1.5:8384"] {
            let (key, message) = raw(Some(text), None, None).validate().unwrap_err();
            assert_eq!(key, "api.listen");
            assert!(message.contains("tls_cert"), "{message}");
        }
        let config = raw(Some("0.0.0.0:8384"), Some("/etc/c.pem"), Some("/etc/k.pem"))
            .validate()
            .unwrap()
            .unwrap();
        assert_eq!(
            config.tls,
            Some(TlsFiles {
                cert: "/etc/c.pem".into(),
                key: "/etc/k.pem".into()
            })
        );
    }

    #[test]
    fn bad_addresses_and_half_tls_are_refused_naming_the_key() {
        let key_of = |r: RawApi| r.validate().unwrap_err().0;
        assert_eq!(key_of(raw(Some("8384"), None, None)), "api.listen");
        assert_eq!(
            key_of(raw(Some("nas.local:8384"), None, None)),
            "api.listen"
        );
        assert_eq!(
            key_of(raw(Some("127.0.0.1:8384"), Some("/c"), None)),
            "api.tls_key"
        );
        assert_eq!(
            key_of(raw(Some("127.0.0.1:8384"), None, Some("/k"))),
            "api.tls_cert"
        );
        assert_eq!(
            key_of(raw(Some("127.0.0.1:8384"), Some("c.pem"), Some("/k"))),
            "api.tls_cert"
        );
        assert_eq!(key_of(raw(None, Some("/c"), Some("/k"))), "api.listen");
    }
}
