//! The `rclone:NAME:PATH` remote: any remote of the user's rclone config
//! (Google Drive, Dropbox, OneDrive, Box, pCloud, B2, …, set up once with
//! `rclone config`, which keeps their OAuth tokens), or an rclone
//! connection string (`rclone::sftp,host=nas:backup`).
//!
//! **One `rclone rcd` per agent** ([`daemon`]), not a process per call:
//! started at first use on 127.0.0.1 with a random login, started again
//! when it dies, stopped with the last replica that uses it (and by the
//! kernel with the agent). Replicas with the same binary and config share
//! it; a connection string gets one of its own, which knows it as a remote
//! of its environment ([`connection`]). [`rc`] is the small client of its
//! remote control.
//!
//! **Honest guarantees.** rclone has no conditional write. Every replace,
//! move and delete is preceded by a look (a stat, or the listing of its
//! folder taken for a batch at most a second before) whose version token
//! (the provider's hash, else ID, modification time and size) must still
//! be the one the plan saw: a change another writer makes between that look
//! and the step is not kept in place but goes to the trash (or is
//! replaced); where the backend cannot move a file (S3: a move is a copy
//! and a removal, and the look is taken again after the copy), one made
//! between that look and the removal is removed.
//! `Replica::rechecked_writes` declares it (status and `pair list` show
//! it), and the log says so once per pair.

mod calls;
pub mod connection;
pub mod daemon;
mod job;
mod lease;
mod listing;
mod looks;
pub mod rc;
pub mod replica;
pub mod settings;
mod transport;

pub use daemon::{Rcd, RcdSpec};
pub use rc::RcClient;
pub use replica::RcloneReplica;
pub use settings::RclonePairSettings;

#[cfg(test)]
mod s3_tests;
#[cfg(test)]
mod tests;
