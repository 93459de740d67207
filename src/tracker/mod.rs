//! The tracker: what the local folder of a pair looks like, and when to look
//! again.
//!
//! It owns everything that reads the local file system to learn about
//! changes: the scanner ([`scan`]) that turns a folder into a
//! [`SideTree`](crate::model::SideTree) with BLAKE3 hashes reused through a
//! stat cache, the watcher ([`watch`]) whose events are only hints for the
//! next scan, the ignore rules ([`ignore`]) both of them apply, and content
//! hashing ([`hash`]). It never writes to a pair, never talks to the journal
//! or a remote, and decides nothing about syncing; it is the only module that
//! touches `notify`.

pub mod hash;
pub mod ignore;
pub mod scan;
pub mod watch;
