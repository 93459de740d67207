//! Live progress of a pair's transfers, shared between the executor's
//! workers (which advance it) and status requests (which read it).
//!
//! Counters are atomics so a streaming copy never waits on a status
//! reader; the map of running transfers is touched only when one starts or
//! ends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::locks::LockExt;
use crate::model::RelPath;

/// Which way bytes flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Upload,
    Download,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
        }
    }
}

/// One transfer as status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferView {
    pub path: RelPath,
    pub direction: Direction,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

struct Running {
    path: RelPath,
    direction: Direction,
    total: u64,
    done: Arc<AtomicU64>,
}

/// The running transfers of one pair.
#[derive(Default)]
pub struct Progress {
    running: Mutex<BTreeMap<u64, Running>>,
    next_id: AtomicU64,
}

impl Progress {
    /// Registers a transfer; it disappears when the returned guard drops.
    pub fn start_transfer(&self, path: &RelPath, direction: Direction, total: u64) -> Transfer<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let done = Arc::new(AtomicU64::new(0));
        self.running.locked().insert(
            id,
            Running {
                path: path.clone(),
                direction,
                total,
                done: done.clone(),
            },
        );
        Transfer {
            progress: self,
            id,
            done,
        }
    }

    /// The transfers running now, oldest first.
    pub fn transfers(&self) -> Vec<TransferView> {
        self.running
            .locked()
            .values()
            .map(|r| TransferView {
                path: r.path.clone(),
                direction: r.direction,
                bytes_done: r.done.load(Ordering::Relaxed),
                bytes_total: r.total,
            })
            .collect()
    }
}

/// A running transfer; dropping it removes it from the progress.
pub struct Transfer<'a> {
    progress: &'a Progress,
    id: u64,
    done: Arc<AtomicU64>,
}

impl Transfer<'_> {
    /// How many of the file's bytes are done now. A transfer that starts
    /// over (a continued partial that did not verify) goes back, so the
    /// progress never passes the size.
    pub fn set_done(&self, bytes: u64) {
        self.done.store(bytes, Ordering::Relaxed);
    }
}

impl Drop for Transfer<'_> {
    fn drop(&mut self) {
        self.progress.running.locked().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_are_listed_while_they_run() {
        let progress = Progress::default();
        let path = RelPath::new("big.bin").unwrap();
        {
            let transfer = progress.start_transfer(&path, Direction::Upload, 100);
            transfer.set_done(40);
            assert_eq!(
                progress.transfers(),
                [TransferView {
                    path: path.clone(),
                    direction: Direction::Upload,
                    bytes_done: 40,
                    bytes_total: 100
                }]
            );
        }
        assert!(progress.transfers().is_empty());
    }
}
