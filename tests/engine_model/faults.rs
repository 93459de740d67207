//! A fault injector around a real replica, for the engine model test.
//!
//! [`FaultyReplica`] delegates every call to the real [`LocalFolder`] it
//! wraps; it is not a mock. Armed with a [`Fault`], it counts the calls that
//! touch the replica's content (list, open, write, mkdir, rename, remove)
//! or the agents' records on it
//! and at the chosen call either fails with an I/O error without doing the
//! operation, or does the operation and then "crashes": it sets the
//! engine's cancel flag, answers with an error, and refuses every later
//! call, as a dead process would make none. The test then drops the engine
//! and builds a new one from the same journal file and folders. It can also
//! run a person's edit at a chosen call, racing the sync. It does not
//! decide when to fault or what to edit; the test's seeded generator does.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prism_sync::fsops::Expect;
use prism_sync::model::{BaseTree, ContentHash, Entry, Mode, RelPath, Scope, SideEntry};
use prism_sync::remote::{
    Capabilities, Lease, Listing, LocalFolder, Replica, ReplicaError, RootState, StagedWrite,
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
    pub op: String,
}

/// Something a person does while a sync runs (an edit of a folder).
pub type Interference = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    /// Calls left before the person acts, and what they do.
    interference: Option<(u32, Interference)>,
    /// Calls left before the fault goes off, and the fault.
    armed: Option<(u32, Fault)>,
    /// Set by a crash: every later call fails until the test disarms.
    dead: bool,
    fired: Option<Fired>,
    cancel: Option<Arc<AtomicBool>>,
    /// Counted calls since the last [`Faults::arm`] or [`Faults::disarm`],
    /// up to and including the one a fault went off at: how many replica
    /// operations a fault-free run took, so that a crash can be placed
    /// after each one.
    counted: u32,
}

/// The switch the test holds: arm before a sync, disarm after it.
#[derive(Default)]
pub struct Faults {
    state: Mutex<State>,
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

    /// Makes the call after `calls` further counted calls fail with `fault`.
    pub fn arm(&self, calls: u32, fault: Fault) {
        let mut state = self.lock();
        state.armed = Some((calls, fault));
        state.fired = None;
        state.dead = false;
        state.counted = 0;
    }

    /// Runs `act` just before the call after `calls` further counted
    /// calls, on the engine's thread, as a person racing the sync would.
    pub fn interfere(&self, calls: u32, act: Interference) {
        self.lock().interference = Some((calls, act));
    }

    /// Turns faults (and a pending interference) off and returns the fault
    /// that fired, if any, and how many calls were counted since the last
    /// arm or disarm.
    pub fn disarm(&self) -> (Option<Fired>, u32) {
        let mut state = self.lock();
        state.interference = None;
        state.armed = None;
        state.dead = false;
        let counted = std::mem::take(&mut state.counted);
        (state.fired.take(), counted)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fault state")
    }

    /// The interference due at this call, if any; counts the call.
    fn due_interference(&self) -> Option<Interference> {
        let mut state = self.lock();
        match state.interference.take() {
            Some((0, act)) => Some(act),
            Some((calls, act)) => {
                state.interference = Some((calls - 1, act));
                None
            }
            None => None,
        }
    }

    fn decide(&self, op: &str, path: &str) -> Decision {
        let mut state = self.lock();
        if state.dead {
            return Decision::Fail(ReplicaError::io(
                "reach the replica after the simulated crash",
                path,
                io::Error::other("the agent is dead"),
            ));
        }
        state.counted += 1;
        let Some((calls, fault)) = state.armed else {
            return Decision::Proceed;
        };
        if calls > 0 {
            state.armed = Some((calls - 1, fault));
            return Decision::Proceed;
        }
        state.armed = None;
        state.fired = Some(Fired {
            fault,
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

    /// Runs `call` under the armed fault.
    fn around<T>(
        &self,
        op: &str,
        path: &str,
        call: impl FnOnce() -> Result<T, ReplicaError>,
    ) -> Result<T, ReplicaError> {
        if let Some(act) = self.due_interference() {
            // Run without the state lock: a parallel copy may call in.
            act();
        }
        match self.decide(op, path) {
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
    pub faults: Arc<Faults>,
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
        self.faults
            .around("list", "/", || self.inner.list(scope, cache, ignore))
    }

    fn stat(&self, path: &RelPath) -> Result<Expect, ReplicaError> {
        self.faults
            .around("stat", path.as_str(), || self.inner.stat(path))
    }

    fn open(&self, path: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        self.faults
            .around("open", path.as_str(), || self.inner.open(path))
    }

    fn stage(
        &self,
        path: &RelPath,
        content: &mut dyn Read,
        hash: &ContentHash,
        mtime_ns: i64,
        mode: Option<Mode>,
    ) -> Result<StagedWrite, ReplicaError> {
        self.faults.around("stage", path.as_str(), || {
            self.inner.stage(path, content, hash, mtime_ns, mode)
        })
    }

    fn sync_staged(&self, staged: &[&StagedWrite]) -> Result<(), ReplicaError> {
        self.faults
            .around("sync_staged", "/", || self.inner.sync_staged(staged))
    }

    fn commit_staged(
        &self,
        staged: &StagedWrite,
        expect: &Expect,
    ) -> Result<SideEntry, ReplicaError> {
        let path = staged.path.to_string();
        // A crash here is "renamed into place but not recorded".
        self.faults
            .around("commit", &path, || self.inner.commit_staged(staged, expect))
    }

    fn discard(&self, staged: StagedWrite) {
        self.inner.discard(staged)
    }

    fn flush(&self) -> Result<(), ReplicaError> {
        self.faults.around("flush", "/", || self.inner.flush())
    }

    fn mkdir(&self, path: &RelPath, mode: Option<Mode>) -> Result<SideEntry, ReplicaError> {
        self.faults
            .around("mkdir", path.as_str(), || self.inner.mkdir(path, mode))
    }

    fn set_mode(&self, path: &RelPath, expected: &Entry, mode: Mode) -> Result<(), ReplicaError> {
        self.faults.around("set_mode", path.as_str(), || {
            self.inner.set_mode(path, expected, mode)
        })
    }

    fn rename(&self, from: &RelPath, to: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        let what = format!("{from} -> {to}");
        self.faults
            .around("rename", &what, || self.inner.rename(from, to, expect))
    }

    fn remove(&self, path: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        self.faults
            .around("remove", path.as_str(), || self.inner.remove(path, expect))
    }

    fn lease(&self, device: &str, ttl: Duration) -> Result<Option<Box<dyn Lease>>, ReplicaError> {
        self.inner.lease(device, ttl)
    }

    fn read_record(&self, name: &str) -> Result<Option<String>, ReplicaError> {
        self.faults
            .around("read_record", name, || self.inner.read_record(name))
    }

    fn write_record(&self, name: &str, content: &str) -> Result<(), ReplicaError> {
        // A crash here is "committed in the journal, but the remote's
        // record of it not written".
        self.faults.around("write_record", name, || {
            self.inner.write_record(name, content)
        })
    }
}
