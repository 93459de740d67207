//! The conformance suite of the `Replica` trait: one test body per
//! behaviour, run against every backend (see `conformance/backends.rs`):
//! a `file://` folder, SFTP on a real sshd, WebDAV on Apache's mod_dav and
//! on `rclone serve webdav` (a server that ignores conditional headers),
//! S3 on moto (which ignores the copy's conditions) and on SeaweedFS
//! (which checks signatures), `rclone:` remotes through rclone's `local`,
//! `sftp` and `s3` (on moto) backends (`sftp` also through the current
//! rclone, whose rcd listens on a Unix socket), and the encrypting layer (rclone's crypt format)
//! over a `file://` folder and over S3 on moto.
//! Each backend's server is started once and shared by the binary; each
//! test works in a folder of its own on it. A test is named
//! `THEME::BEHAVIOUR::BACKEND`, so `cargo test --test conformance sftp`
//! runs every behaviour on one backend.

// Tests take locks with `lock().unwrap()`: a lock poisoned in a test is a
// failed test. The agent's own rule (`prism_sync::locks`) does not apply.
#![allow(clippy::disallowed_methods)]

/// Runs `$body(&Case)` on the backends reached over a network: one line
/// per backend.
macro_rules! network_backends {
    ($body:ident) => {
        #[test]
        fn sftp() {
            super::$body(&$crate::case($crate::backends::sftp(), stringify!($body)));
        }
        #[test]
        fn webdav_apache() {
            super::$body(&$crate::case(
                $crate::backends::webdav_apache(),
                stringify!($body),
            ));
        }
        #[test]
        fn webdav_rclone() {
            super::$body(&$crate::case(
                $crate::backends::webdav_rclone(),
                stringify!($body),
            ));
        }
        #[test]
        fn rclone_sftp() {
            super::$body(&$crate::case(
                $crate::backends::rclone_sftp(),
                stringify!($body),
            ));
        }
        #[test]
        fn rclone_current_sftp() {
            super::$body(&$crate::case(
                $crate::backends::rclone_current_sftp(),
                stringify!($body),
            ));
        }
        #[test]
        fn rclone_s3() {
            super::$body(&$crate::case(
                $crate::backends::rclone_s3(),
                stringify!($body),
            ));
        }
        #[test]
        fn s3_moto() {
            super::$body(&$crate::case(
                $crate::backends::s3_moto(),
                stringify!($body),
            ));
        }
        #[test]
        fn s3_seaweedfs() {
            super::$body(&$crate::case(
                $crate::backends::s3_seaweedfs(),
                stringify!($body),
            ));
        }
        #[test]
        fn crypt_s3_moto() {
            super::$body(&$crate::case(
                $crate::backends::crypt_s3_moto(),
                stringify!($body),
            ));
        }
    };
}

/// `conformance!(a, b)` makes the tests `a::BACKEND` and `b::BACKEND`,
/// each running the body `a` or `b` on one backend; `conformance!(network:
/// a)` on the backends reached over a network only.
macro_rules! conformance {
    (network: $($body:ident),* $(,)?) => {$(
        mod $body {
            network_backends!($body);
        }
    )*};
    ($($body:ident),* $(,)?) => {$(
        mod $body {
            #[test]
            fn local() {
                super::$body(&$crate::case($crate::backends::local(), stringify!($body)));
            }
            #[test]
            fn crypt_local() {
                super::$body(&$crate::case(
                    $crate::backends::crypt_local(),
                    stringify!($body),
                ));
            }
            #[test]
            fn rclone_local() {
                super::$body(&$crate::case(
                    $crate::backends::rclone_local(),
                    stringify!($body),
                ));
            }
            network_backends!($body);
        }
    )*};
}

// The harnesses serve the backend-specific test binaries too; this one
// uses only part of each.
#[allow(dead_code)]
#[path = "support/apache.rs"]
mod apache;
#[allow(dead_code)]
#[path = "support/moto.rs"]
mod moto;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/processes.rs"]
mod processes;
#[allow(dead_code)]
#[path = "support/rclone.rs"]
mod rclone;
#[allow(dead_code)]
#[path = "support/rclone_current.rs"]
mod rclone_current;
#[path = "support/records.rs"]
mod records;
#[allow(dead_code)]
#[path = "support/seaweedfs.rs"]
mod seaweedfs;
#[allow(dead_code)]
#[path = "support/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "support/shared_server.rs"]
mod shared_server;
#[allow(dead_code)]
#[path = "support/sshd.rs"]
mod sshd;

#[path = "conformance/backends.rs"]
mod backends;
#[path = "conformance/link.rs"]
mod link;

#[path = "conformance/agents.rs"]
mod agents;
#[path = "conformance/changes.rs"]
mod changes;
#[path = "conformance/listings.rs"]
mod listings;
#[path = "conformance/names.rs"]
mod names;
#[path = "conformance/outages.rs"]
mod outages;
#[path = "conformance/reads.rs"]
mod reads;

use std::io::Read;

use prism_sync::fsops::Expect;
use prism_sync::model::{BaseEntry, BaseTree, ContentHash, RelPath, Scope, SideEntry};
use prism_sync::remote::{Listing, Replica};
use prism_sync::tracker::ignore::IgnoreRules;

use backends::{Backend, Outside};

/// One behaviour on one backend: the backend, and the folder on its
/// server that this test alone uses (named after the behaviour).
pub struct Case {
    pub backend: &'static dyn Backend,
    pub folder: &'static str,
}

impl Case {
    /// A new replica of the test's folder: another agent, each call.
    pub fn replica(&self) -> Box<dyn Replica> {
        self.backend.replica(self.folder)
    }

    /// A new replica of the test's folder, its root created and marked.
    pub fn marked(&self) -> Box<dyn Replica> {
        let replica = self.replica();
        replica.mark_root().unwrap();
        replica
    }

    /// The server's own view (see [`Outside`]) of the test's folder.
    pub fn outside(&self) -> OutsideOf<'_> {
        OutsideOf {
            outside: self.backend.outside(),
            folder: self.folder,
        }
    }
}

/// The metadata folder as the server shows it, for the record checks
/// shared with the backend-specific binaries.
pub struct MetadataOf<'a>(OutsideOf<'a>);

impl records::Metadata for MetadataOf<'_> {
    fn names(&self, folder: &str) -> Vec<String> {
        self.0.names(&format!(".prism-sync/{folder}"))
    }

    fn read(&self, path: &str) -> Option<String> {
        self.0.read(&format!(".prism-sync/{path}"))
    }
}

/// [`Outside`] for one test's folder.
pub struct OutsideOf<'a> {
    outside: &'a dyn Outside,
    folder: &'a str,
}

impl<'a> OutsideOf<'a> {
    pub fn put(&self, path: impl AsRef<[u8]>, content: impl AsRef<[u8]>) {
        self.outside
            .put(self.folder, path.as_ref(), content.as_ref());
    }

    /// The content at `path` as text, if a file is there.
    pub fn read(&self, path: &str) -> Option<String> {
        self.outside
            .read(self.folder, path)
            .map(|bytes| String::from_utf8(bytes).unwrap())
    }

    pub fn remove(&self, path: &str) {
        self.outside.remove(self.folder, path);
    }

    pub fn names(&self, path: &str) -> Vec<String> {
        self.outside.names(self.folder, path)
    }

    /// The content of every file in the trash as text, sorted.
    pub fn trashed(&self) -> Vec<String> {
        self.outside
            .trashed(self.folder)
            .into_iter()
            .map(|bytes| String::from_utf8(bytes).unwrap())
            .collect()
    }

    pub fn metadata(self) -> MetadataOf<'a> {
        MetadataOf(self)
    }

    pub fn shows_as_is(&self, name: &[u8]) -> bool {
        self.outside.shows_as_is(name)
    }

    pub fn holds(&self, name: &[u8]) -> bool {
        self.outside.holds(name)
    }

    pub fn remove_root(&self) {
        self.outside.remove_root(self.folder);
    }

    pub fn empty_root(&self) {
        self.outside.empty_root(self.folder);
    }
}

pub fn case(backend: &'static dyn Backend, folder: &'static str) -> Case {
    Case { backend, folder }
}

pub fn rel(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

pub fn no_rules() -> IgnoreRules {
    let dir = tempfile::tempdir().unwrap();
    IgnoreRules::load(dir.path(), &[]).unwrap()
}

/// The mtime every write gives its file (where the backend keeps it).
pub const MTIME_NS: i64 = 1_600_000_000_000_000_000;

/// Writes `text` to `path`, which must be as `expect` says.
pub fn write(
    replica: &dyn Replica,
    path: &str,
    text: &str,
    expect: &Expect,
) -> Result<SideEntry, prism_sync::remote::ReplicaError> {
    replica.write(
        &rel(path),
        &mut text.as_bytes(),
        &ContentHash::of_bytes(text.as_bytes()),
        MTIME_NS,
        None,
        expect,
    )
}

/// Writes a new file `path` with `text`.
pub fn create(replica: &dyn Replica, path: &str, text: &str) -> SideEntry {
    write(replica, path, text, &Expect::Absent)
        .unwrap_or_else(|e| panic!("cannot create {path}: {e}"))
}

/// What a step must find where `seen` was seen (listed or written), with
/// the version token it carried, as the engine plans.
pub fn expect_of(seen: &SideEntry) -> Expect {
    Expect::of_version(Some(&seen.entry), seen.version_text().as_deref())
}

/// A full listing with no base (every file read).
pub fn list(replica: &dyn Replica) -> Listing {
    replica
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", replica.describe()))
}

/// The base a sync would record after `listing`.
pub fn base_of(listing: &Listing) -> BaseTree {
    listing
        .tree
        .iter()
        .map(|(path, side)| {
            let mut entry = BaseEntry::new(side.entry);
            entry.remote_id = side.id.clone();
            entry.remote_version = side.version.clone();
            (path.clone(), entry)
        })
        .collect()
}

/// A listing's problems about its paths and names: a note about the
/// remote as a whole (which conditional requests an S3 server ignores,
/// repeated on every listing for `status`) is left out.
pub fn path_problems(listing: &Listing) -> Vec<&prism_sync::remote::Problem> {
    listing
        .problems
        .iter()
        .filter(|p| p.path.is_some() || !p.message.contains(" ignores "))
        .collect()
}

/// The paths of a listing.
pub fn paths(listing: &Listing) -> Vec<&str> {
    listing.tree.keys().map(|p| p.as_str()).collect()
}

/// The content of `path` read through the replica.
pub fn read(replica: &dyn Replica, path: &str) -> String {
    let mut text = String::new();
    replica
        .open(&rel(path))
        .unwrap_or_else(|e| panic!("cannot open {path}: {e}"))
        .read_to_string(&mut text)
        .unwrap();
    text
}
