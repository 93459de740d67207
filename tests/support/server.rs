//! What the end-to-end tests need from a WebDAV server harness, so one test
//! body runs against every real server (Apache's mod_dav and rclone). It
//! does not start anything itself.

use std::path::{Path, PathBuf};

use crate::apache::{Apache, Share};

pub trait Dav {
    /// The `webdav://` URL of `below` inside a share (`below` may be empty).
    fn url(&self, share: Share, below: &str) -> String;
    /// The folder on disk behind a share.
    fn served(&self, share: Share) -> PathBuf;
    /// A folder for the test's own files (configs, local folders).
    fn scratch(&self, name: &str) -> PathBuf;
    /// Makes a path the test wrote into a share the server's own.
    fn hand_over(&self, path: &Path);
    /// What the server logged so far.
    fn log(&self) -> String;
    /// The port and server path of `below` inside the open share.
    #[allow(dead_code)] // Only the conformance suite opens replicas by it.
    fn open_target(&self, below: &str) -> (u16, String);
}

impl Dav for Apache {
    fn url(&self, share: Share, below: &str) -> String {
        Apache::url(self, share, below)
    }

    fn served(&self, share: Share) -> PathBuf {
        Apache::served(self, share)
    }

    fn scratch(&self, name: &str) -> PathBuf {
        Apache::scratch(self, name)
    }

    fn hand_over(&self, path: &Path) {
        Apache::hand_over(self, path)
    }

    fn log(&self) -> String {
        Apache::log(self)
    }

    fn open_target(&self, below: &str) -> (u16, String) {
        (self.port(), format!("/open/{below}"))
    }
}
