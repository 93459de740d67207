//! A fault injector around a real replica, for the engine model test.
//!
//! [`FaultyReplica`] delegates every call to the real [`LocalFolder`] it
//! wraps; it is not a mock. A device's engine has two, its local folder and
//! the remote, sharing one [`Faults`]: the device is one process, and a
//! crash on either side ends every call on both. Armed with a [`Fault`] for
//! one side (or either), it counts the calls that touch that side's content
//! (list, stat, open, write, mkdir, rename, remove, flush) or the agents'
//! records on it, and at the chosen call either fails with an I/O error
//! without doing the operation, or does the operation and then "crashes":
//! it sets the engine's cancel flag, answers with an error, and refuses
//! every later call, as a dead process would make none. The test then drops
//! the engine and builds a new one from the same journal file and folders.
//! It can also run a person's edit at a chosen call of one side, racing the
//! sync (a file changed under the engine between its listing and its
//! write). It does not decide when to fault or what to edit; the test's
//! seeded generator does.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use prism_sync::fsops::Expect;
use prism_sync::model::{BaseTree, ContentHash, Entry, Mode, RelPath, Scope, Side, SideEntry};
use prism_sync::remote::{
    Capabilities, Lease, Listing, LocalFolder, Replica, ReplicaError, RootState, Source,
    StagedWrite,
};
use prism_sync::tracker::ignore::IgnoreRules;

/// What happens at the armed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with this errno and does nothing.
    Io(i32),
    /// The call is carried out, then the agent "crashes".
    Crash,
}

/// A fault that went off, for the step log.
#[derive(Clone, Debug)]
pub struct Fired {
    pub fault: Fault,
    pub side: Side,
    pub op: String,
}

/// A fault waiting for its call: the `calls`-th further call on `on`
/// (on either side when `None`).
#[derive(Clone, Copy, Debug)]
struct Armed {
    calls: u32,
    on: Option<Side>,
    fault: Fault,
}

/// Something a person does while a sync runs (an edit of a folder).
pub type Interference = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    /// Calls on a side left before the person acts, the side, and what
    /// they do.
    interference: Option<(u32, Side, Interference)>,
    /// The faults waiting for their calls.
    armed: Vec<Armed>,
    /// Set by a crash: every later call fails until the test disarms.
    dead: bool,
    fired: Vec<Fired>,
    cancel: Option<Arc<AtomicBool>>,
    /// Counted calls on both sides since the last [`Faults::arm`] or
    /// [`Faults::disarm`], up to and including the one a crash went off
    /// at: how many replica operations a fault-free run took, so that a
    /// crash can be placed after each one.
    counted: u32,
    /// Listings of each side that ended (local) or began (remote): see
    /// [`Faults::remote_listing_turn`].
    local_listings_ended: u64,
    remote_listings_begun: u64,
}

/// The switch the test holds: arm before a sync, disarm after it.
#[derive(Default)]
pub struct Faults {
    state: Mutex<State>,
    /// Signalled when a local listing ends.
    listed: Condvar,
}

/// What one call must do.
enum Decision {
    Proceed,
    Fail(ReplicaError),
    ProceedThenCrash,
}

impl Faults {
    /// The flag a crash sets; the engine's own, so it stops between actions.
    pub fn set_cancel(&self, cancel: Arc<AtomicBool>) {
        self.lock().cancel = Some(cancel);
    }

    /// Makes the call after `calls` further counted calls on `on` (on
    /// either side: `None`) fail with `fault`. Faults armed together count
    /// apart, and each goes off at its own call.
    pub fn arm(&self, calls: u32, on: Option<Side>, fault: Fault) {
        let mut state = self.lock();
        state.armed.push(Armed { calls, on, fault });
        state.dead = false;
        state.counted = 0;
    }

    /// Runs `act` just before the call after `calls` further counted
    /// calls on `on`, on the engine's thread, as a person racing the sync
    /// would.
    pub fn interfere(&self, calls: u32, on: Side, act: Interference) {
        self.lock().interference = Some((calls, on, act));
    }

    /// Turns faults (and a pending interference) off and returns the
    /// faults that fired, and how many calls were counted since the last
    /// arm or disarm.
    pub fn disarm(&self) -> (Vec<Fired>, u32) {
        let mut state = self.lock();
        state.interference = None;
        state.armed.clear();
        state.dead = false;
        let counted = std::mem::take(&mut state.counted);
        (std::mem::take(&mut state.fired), counted)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fault state")
    }

    /// Waits until the local side's listing of this sync has ended. The
    /// engine lists both sides at once; which of the two calls came first
    /// would then depend on the threads, so a crash counted on either
    /// side, or an edit placed before the remote's listing, would land at
    /// a different point on a replay of the same seed. Taking the
    /// listings in turn keeps the order a seed replays by (the local one
    /// first, as the engine once listed them). Every sync lists both.
    fn remote_listing_turn(&self) {
        let mut state = self.lock();
        state.remote_listings_begun += 1;
        let (state, waited) = self
            .listed
            .wait_timeout_while(state, Duration::from_secs(60), |s| {
                s.local_listings_ended < s.remote_listings_begun
            })
            .expect("fault state");
        drop(state);
        assert!(
            !waited.timed_out(),
            "the remote was listed without the local side"
        );
    }

    fn local_listing_ended(&self) {
        self.lock().local_listings_ended += 1;
        self.listed.notify_all();
    }

    /// The interference due at this call on `side`, if any; counts the
    /// call.
    fn due_interference(&self, side: Side) -> Option<Interference> {
        let mut state = self.lock();
        match state.interference.take() {
            Some((0, on, act)) if on == side => Some(act),
            Some((calls, on, act)) if on == side => {
                state.interference = Some((calls - 1, on, act));
                None
            }
            other => {
                state.interference = other;
                None
            }
        }
    }

    fn decide(&self, side: Side, op: &str, path: &str) -> Decision {
        let mut state = self.lock();
        if state.dead {
            return Decision::Fail(ReplicaError::io(
                "reach the replica after the simulated crash",
                path,
                io::Error::other("the agent is dead"),
            ));
        }
        state.counted += 1;
        let mut due = None;
        for (index, armed) in state.armed.iter_mut().enumerate() {
            if armed.on.is_some_and(|on| on != side) {
                continue;
            }
            if armed.calls > 0 {
                armed.calls -= 1;
            } else if due.is_none() {
                due = Some(index);
            }
        }
        let Some(index) = due else {
            return Decision::Proceed;
        };
        let fault = state.armed.remove(index).fault;
        state.fired.push(Fired {
            fault,
            side,
            op: format!("{op} {path}"),
        });
        match fault {
            Fault::Io(errno) => Decision::Fail(ReplicaError::io(
                "inject a fault into",
                path,
                io::Error::from_raw_os_error(errno),
            )),
            Fault::Crash => {
                state.dead = true;
                if let Some(cancel) = &state.cancel {
                    cancel.store(true, Ordering::Relaxed);
                }
                Decision::ProceedThenCrash
            }
        }
    }

    /// Runs `call`, a call on `side`, under the armed faults.
    fn around<T>(
        &self,
        side: Side,
        op: &str,
        path: &str,
        call: impl FnOnce() -> Result<T, ReplicaError>,
    ) -> Result<T, ReplicaError> {
        if let Some(act) = self.due_interference(side) {
            // Run without the state lock: a parallel copy may call in.
            act();
        }
        match self.decide(side, op, path) {
            Decision::Proceed => call(),
            Decision::Fail(error) => Err(error),
            Decision::ProceedThenCrash => {
                // The operation happened (or failed on its own); either way
                // the agent dies before it can record anything about it.
                let _ = call();
                Err(ReplicaError::io(
                    "finish (simulated crash after)",
                    format!("{op} {path}"),
                    io::Error::other("the agent crashed"),
                ))
            }
        }
    }
}

/// A real replica with faults injected around its calls.
pub struct FaultyReplica {
    pub inner: LocalFolder,
    /// Which side of the pair it is, for faults armed on one side.
    pub side: Side,
    pub faults: Arc<Faults>,
}

impl FaultyReplica {
    fn around<T>(
        &self,
        op: &str,
        path: &str,
        call: impl FnOnce() -> Result<T, ReplicaError>,
    ) -> Result<T, ReplicaError> {
        self.faults.around(self.side, op, path, call)
    }
}

impl Replica for FaultyReplica {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn root_state(&self) -> Result<RootState, ReplicaError> {
        self.inner.root_state()
    }

    fn mark_root(&self) -> Result<(), ReplicaError> {
        self.inner.mark_root()
    }

    fn list(
        &self,
        scope: &Scope,
        cache: &BaseTree,
        ignore: &IgnoreRules,
    ) -> Result<Listing, ReplicaError> {
        let list = || self.around("list", "/", || self.inner.list(scope, cache, ignore));
        match self.side {
            Side::Local => {
                // Ended even when the listing panics: the remote's waits.
                struct Ended<'f>(&'f Faults);
                impl Drop for Ended<'_> {
                    fn drop(&mut self) {
                        self.0.local_listing_ended();
                    }
                }
                let _ended = Ended(&self.faults);
                list()
            }
            Side::Remote => {
                self.faults.remote_listing_turn();
                list()
            }
        }
    }

    fn stat(&self, path: &RelPath) -> Result<Expect, ReplicaError> {
        self.around("stat", path.as_str(), || self.inner.stat(path))
    }

    fn open(&self, path: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        self.around("open", path.as_str(), || self.inner.open(path))
    }

    fn stage(
        &self,
        path: &RelPath,
        content: &mut dyn Read,
        hash: &ContentHash,
        mtime_ns: i64,
        mode: Option<Mode>,
    ) -> Result<StagedWrite, ReplicaError> {
        self.around("stage", path.as_str(), || {
            self.inner.stage(path, content, hash, mtime_ns, mode)
        })
    }

    fn stage_from(
        &self,
        path: &RelPath,
        source: &Source<'_>,
        mtime_ns: i64,
        mode: Option<Mode>,
    ) -> Result<StagedWrite, ReplicaError> {
        // The real one: the local side continues partial downloads.
        self.around("stage", path.as_str(), || {
            self.inner.stage_from(path, source, mtime_ns, mode)
        })
    }

    fn sync_staged(&self, staged: &[&StagedWrite]) -> Result<(), ReplicaError> {
        self.around("sync_staged", "/", || self.inner.sync_staged(staged))
    }

    fn commit_staged(
        &self,
        staged: &StagedWrite,
        expect: &Expect,
    ) -> Result<SideEntry, ReplicaError> {
        let path = staged.path.to_string();
        // A crash here is "renamed into place but not recorded".
        self.around("commit", &path, || self.inner.commit_staged(staged, expect))
    }

    fn discard(&self, staged: StagedWrite) {
        self.inner.discard(staged)
    }

    fn flush(&self) -> Result<(), ReplicaError> {
        self.around("flush", "/", || self.inner.flush())
    }

    fn mkdir(&self, path: &RelPath, mode: Option<Mode>) -> Result<SideEntry, ReplicaError> {
        self.around("mkdir", path.as_str(), || self.inner.mkdir(path, mode))
    }

    fn set_mode(&self, path: &RelPath, expected: &Entry, mode: Mode) -> Result<(), ReplicaError> {
        self.around("set_mode", path.as_str(), || {
            self.inner.set_mode(path, expected, mode)
        })
    }

    fn rename(&self, from: &RelPath, to: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        let what = format!("{from} -> {to}");
        self.around("rename", &what, || self.inner.rename(from, to, expect))
    }

    fn remove(&self, path: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        self.around("remove", path.as_str(), || self.inner.remove(path, expect))
    }

    fn lease(&self, device: &str, ttl: Duration) -> Result<Option<Box<dyn Lease>>, ReplicaError> {
        self.inner.lease(device, ttl)
    }

    fn read_record(&self, name: &str) -> Result<Option<String>, ReplicaError> {
        self.around("read_record", name, || self.inner.read_record(name))
    }

    fn write_record(&self, name: &str, content: &str) -> Result<(), ReplicaError> {
        // A crash here is "committed in the journal, but the remote's
        // record of it not written".
        self.around("write_record", name, || {
            self.inner.write_record(name, content)
        })
    }
}
