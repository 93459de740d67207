//! What a `file:///path` pair says in the config: another folder on this
//! machine (a NAS mount, a USB disk), and no key of its own.

use std::fmt;
use std::path::{Path, PathBuf};

use super::LocalFolder;
use crate::config::PairConfig;
use crate::remote::backend::{
    Backend, KeyError, PairKeys, Reach, Registration, RemoteUrl, UrlForm, percent_decode,
};
use crate::remote::{RemoteHost, Replica, ReplicaError};
use crate::secrets::Account;

pub const REGISTRATION: Registration = Registration {
    forms: &[UrlForm::Path("file")],
    keys: &[],
    remotes: "file://",
    example: "file:///path",
    parse,
};

/// `file:///path`: the folder, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileUrl {
    pub folder: PathBuf,
}

fn parse(url: &str) -> Result<RemoteUrl, String> {
    let rest = url.strip_prefix("file://").unwrap_or(url);
    if !rest.starts_with('/') {
        return Err(format!(
            "{url:?} must name an absolute folder, as in file:///home/me/backup"
        ));
    }
    Ok(RemoteUrl::new(FileUrl {
        folder: PathBuf::from(percent_decode(rest)?),
    }))
}

impl fmt::Display for FileUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file://{}", self.folder.display())
    }
}

impl Backend for FileUrl {
    type Settings = ();

    fn scheme(&self) -> &'static str {
        "file"
    }

    fn settings(&self, _keys: &mut PairKeys) -> Result<(), KeyError> {
        Ok(())
    }

    fn open(
        &self,
        _settings: &(),
        _pair: &PairConfig,
        _host: RemoteHost<'_>,
    ) -> Result<Box<dyn Replica>, ReplicaError> {
        Ok(Box::new(LocalFolder::remote(self.folder.clone())))
    }

    fn password_account(&self, _user: Option<String>) -> Result<Account, String> {
        Err("a file:// remote needs no password".to_owned())
    }

    fn reach(&self) -> Reach {
        Reach::Folder(self.folder.clone())
    }

    fn local_folder(&self) -> Option<&Path> {
        Some(&self.folder)
    }
}
