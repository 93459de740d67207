//! Recording finished steps in the journal, batch by batch, on a thread of
//! its own.
//!
//! A batch is recorded only after both replicas flushed its effects (the
//! folders its renames touched), so the journal is never ahead of the
//! files; a crash loses at most unrecorded batches, which the next sync
//! finds as "both sides already agree". Flushing folders and committing a
//! transaction mostly wait for the disk: done on the thread that executes
//! the plan, they took about half of a first sync of many small files,
//! during which nothing was renamed in. Here the next batch is put in
//! place while the previous one is recorded.
//!
//! Batches are recorded in the order they were handed over. After a batch
//! fails, later ones are not recorded (their effects are found again by
//! the next sync), [`Recorder::has_failed`] turns true so the run stops
//! early, and [`Recorder::finish`] returns the failure.
//!
//! A replica may refuse a batch at its flush because its side changed
//! under it: a git remote whose push lost to a commit that touched a path
//! of the batch. Nothing of the batch reached that side, so none of its
//! steps is recorded, and [`Recorder::finish`] returns
//! [`ReplicaError::Changed`], which the run takes as "plan again", as for
//! a step refused the same way. The journal then holds the base as it was
//! before the batch: the batch's writes on the other side are found again
//! by the next listing, as both sides agreeing where the refused side still
//! holds what was copied from it, or as a change (or a conflict, both
//! versions kept) where the new commit changed it again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::Scope;
use std::time::{Duration, Instant};

use crate::journal::Step;
use crate::locks::LockExt;
use crate::remote::ReplicaError;

/// Finished steps are recorded in batches of at most this many, or after
/// at most [`BATCH_WINDOW`]: one folder flush and one journal transaction
/// for many small files instead of one each.
pub const BATCH_STEPS: usize = 256;
pub const BATCH_WINDOW: Duration = Duration::from_millis(500);

/// Hands batches of steps to a recording thread. Dropping it lets the
/// thread record what it was given and end (the scope it was started in
/// waits for that).
pub struct Recorder {
    pending: Mutex<Pending>,
    /// At most one batch waits while another is recorded: a run that puts
    /// files in place faster than they can be recorded is held back
    /// rather than piling up steps in memory.
    queue: SyncSender<Message>,
    failed: Arc<AtomicBool>,
}

/// Steps whose effects are done but not yet handed over.
struct Pending {
    steps: Vec<Step>,
    since: Instant,
}

enum Message {
    Batch(Vec<Step>),
    /// Answer, once every batch before it is recorded, with the failure
    /// that stopped recording, if one did.
    Finish(mpsc::Sender<Option<Stopped>>),
}

/// Why recording stopped.
#[derive(Clone, Debug)]
enum Stopped {
    /// A replica refused the batch because `path` changed on its side:
    /// the run plans again.
    Changed {
        path: String,
    },
    Failed(String),
}

impl From<Stopped> for ReplicaError {
    fn from(stopped: Stopped) -> ReplicaError {
        match stopped {
            Stopped::Changed { path } => ReplicaError::Changed { path },
            Stopped::Failed(message) => ReplicaError::Other(message),
        }
    }
}

impl Recorder {
    /// Starts the recording thread in `scope`; `record` flushes the
    /// replicas and writes one batch in one transaction.
    pub fn start<'scope, 'env>(
        scope: &'scope Scope<'scope, 'env>,
        mut record: impl FnMut(&[Step]) -> Result<(), ReplicaError> + Send + 'scope,
    ) -> Recorder {
        let (queue, messages) = mpsc::sync_channel::<Message>(1);
        let failed = Arc::new(AtomicBool::new(false));
        let raise = Arc::clone(&failed);
        scope.spawn(move || {
            let mut failure: Option<Stopped> = None;
            for message in messages {
                match message {
                    Message::Batch(steps) if failure.is_none() => {
                        // A panic (a bug) is a failure like another: the
                        // run must not wait for a thread that is gone.
                        let recorded =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                record(&steps)
                            }));
                        failure = match recorded {
                            Ok(Ok(())) => None,
                            Ok(Err(ReplicaError::Changed { path })) => {
                                Some(Stopped::Changed { path })
                            }
                            Ok(Err(error)) => Some(Stopped::Failed(error.to_string())),
                            Err(panic) => {
                                Some(Stopped::Failed(crate::engine::crash_report(panic.as_ref())))
                            }
                        };
                        if failure.is_some() {
                            raise.store(true, Ordering::Relaxed);
                        }
                    }
                    Message::Batch(_) => {}
                    Message::Finish(answer) => {
                        let _ = answer.send(failure.clone());
                    }
                }
            }
        });
        Recorder {
            pending: Mutex::new(Pending {
                steps: Vec::new(),
                since: Instant::now(),
            }),
            queue,
            failed,
        }
    }

    /// Adds one finished action's step; hands the batch over when it is
    /// full or old enough.
    pub fn add(&self, step: Step) {
        let due = {
            let mut pending = self.pending.locked();
            pending.steps.push(step);
            pending.steps.len() >= BATCH_STEPS || pending.since.elapsed() >= BATCH_WINDOW
        };
        if due {
            self.hand_over();
        }
    }

    /// Whether a batch could not be recorded: the run should stop.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Hands over what is pending and waits until everything handed over
    /// is recorded; returns the failure that stopped recording, if any
    /// ([`ReplicaError::Changed`] when a replica refused a batch because
    /// its side changed: plan again).
    pub fn finish(&self) -> Result<(), ReplicaError> {
        self.hand_over();
        let (answer, answered) = mpsc::channel();
        let stopped = || ReplicaError::Other("the journal's recording thread stopped".into());
        self.queue
            .send(Message::Finish(answer))
            .map_err(|_| stopped())?;
        match answered.recv().map_err(|_| stopped())? {
            None => Ok(()),
            Some(failure) => Err(failure.into()),
        }
    }

    fn hand_over(&self) {
        let steps = {
            let mut pending = self.pending.locked();
            pending.since = Instant::now();
            std::mem::take(&mut pending.steps)
        };
        if !steps.is_empty() && self.queue.send(Message::Batch(steps)).is_err() {
            // The thread is gone (it ends only with its scope, or by a
            // panic outside `record`): nothing more can be recorded.
            self.failed.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::BaseEdit;
    use crate::model::RelPath;

    /// A step that says which one it is.
    fn step(n: usize) -> Step {
        Step {
            base: vec![BaseEdit::Remove(RelPath::new(&format!("f{n}")).unwrap())],
            changes: Vec::new(),
            blobs: Vec::new(),
            trashed: Vec::new(),
        }
    }

    fn number(step: &Step) -> usize {
        match &step.base[0] {
            BaseEdit::Remove(path) => path.as_str()[1..].parse().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batches_are_recorded_in_order_and_finish_waits_for_all() {
        let recorded: Mutex<Vec<Vec<usize>>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            let recorder = Recorder::start(scope, |steps| {
                // Slower than handing over: the queue must hold back.
                std::thread::sleep(Duration::from_millis(2));
                recorded.locked().push(steps.iter().map(number).collect());
                Ok(())
            });
            for n in 0..(3 * BATCH_STEPS + 5) {
                recorder.add(step(n));
            }
            recorder.finish().unwrap();
            let batches = recorded.locked().clone();
            assert!(batches.iter().all(|b| b.len() <= BATCH_STEPS));
            let all: Vec<usize> = batches.into_iter().flatten().collect();
            assert_eq!(all, (0..(3 * BATCH_STEPS + 5)).collect::<Vec<_>>());
            assert!(!recorder.has_failed());
            recorder.finish().unwrap();
        });
    }

    #[test]
    fn after_a_failed_batch_nothing_more_is_recorded_and_the_run_is_told() {
        let calls = Mutex::new(0);
        std::thread::scope(|scope| {
            let recorder = Recorder::start(scope, |_| {
                let mut calls = calls.locked();
                *calls += 1;
                if *calls == 1 {
                    Err(ReplicaError::Other("the disk is full".into()))
                } else {
                    Ok(())
                }
            });
            for n in 0..(4 * BATCH_STEPS) {
                recorder.add(step(n));
            }
            let error = recorder.finish().unwrap_err();
            assert!(error.to_string().contains("the disk is full"), "{error}");
            assert!(recorder.has_failed());
            assert_eq!(*calls.locked(), 1, "nothing recorded after the failure");
        });
    }

    #[test]
    fn a_batch_refused_because_a_side_changed_is_a_change_to_plan_again() {
        let recorded = Mutex::new(0);
        std::thread::scope(|scope| {
            let recorder = Recorder::start(scope, |_| {
                let mut recorded = recorded.locked();
                if *recorded == 1 {
                    return Err(ReplicaError::Changed {
                        path: "notes/a.md".into(),
                    });
                }
                *recorded += 1;
                Ok(())
            });
            for n in 0..(3 * BATCH_STEPS) {
                recorder.add(step(n));
            }
            match recorder.finish().unwrap_err() {
                ReplicaError::Changed { path } => assert_eq!(path, "notes/a.md"),
                other => panic!("not a change to plan again: {other:?}"),
            }
            assert!(recorder.has_failed(), "the run stops and plans again");
            assert_eq!(*recorded.locked(), 1, "nothing recorded after the refusal");
        });
    }

    #[test]
    fn a_panic_while_recording_is_a_failure_not_a_hang() {
        std::thread::scope(|scope| {
            let recorder = Recorder::start(scope, |_| panic!("a bug"));
            recorder.add(step(0));
            let error = recorder.finish().unwrap_err();
            let error = error.to_string();
            assert!(
                error.contains("internal error") && error.contains("a bug"),
                "the failure says what happened: {error}"
            );
            assert!(recorder.has_failed());
        });
    }
}
