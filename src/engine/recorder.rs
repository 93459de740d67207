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
//! the next sync) and every later call returns the failure, so the run
//! ends with it.

use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::Scope;
use std::time::{Duration, Instant};

use crate::journal::Step;
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
    queue: SyncSender<Vec<Step>>,
    shared: Arc<Shared>,
}

/// Steps whose effects are done but not yet handed over.
struct Pending {
    steps: Vec<Step>,
    since: Instant,
}

/// What the recording thread reports back.
struct Shared {
    state: Mutex<State>,
    idle: Condvar,
}

struct State {
    /// Batches handed over and not yet recorded (or given up).
    in_flight: usize,
    /// Why recording stopped, once it has.
    failure: Option<String>,
}

impl Recorder {
    /// Starts the recording thread in `scope`; `record` flushes the
    /// replicas and writes one batch in one transaction.
    pub fn start<'scope, 'env>(
        scope: &'scope Scope<'scope, 'env>,
        mut record: impl FnMut(&[Step]) -> Result<(), ReplicaError> + Send + 'scope,
    ) -> Recorder {
        let (queue, batches) = mpsc::sync_channel::<Vec<Step>>(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                in_flight: 0,
                failure: None,
            }),
            idle: Condvar::new(),
        });
        let reports = Arc::clone(&shared);
        scope.spawn(move || {
            for steps in batches {
                let failed = reports.state.lock().expect("recorder").failure.is_some();
                // A panic (a bug) must not leave `finish` waiting forever
                // for a batch that will never be recorded.
                let result = if failed {
                    Ok(())
                } else {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| record(&steps)))
                        .unwrap_or_else(|_| {
                            Err(ReplicaError::Other(
                                "recording the changes in the journal failed unexpectedly".into(),
                            ))
                        })
                };
                let mut state = reports.state.lock().expect("recorder");
                state.in_flight -= 1;
                if let Err(error) = result {
                    state.failure.get_or_insert(error.to_string());
                }
                reports.idle.notify_all();
            }
        });
        Recorder {
            pending: Mutex::new(Pending {
                steps: Vec::new(),
                since: Instant::now(),
            }),
            queue,
            shared,
        }
    }

    /// Adds one finished action's step; hands the batch over when it is
    /// full or old enough. Fails once an earlier batch could not be
    /// recorded.
    pub fn add(&self, step: Step) -> Result<(), ReplicaError> {
        let due = {
            let mut pending = self.pending.lock().expect("pending steps");
            pending.steps.push(step);
            pending.steps.len() >= BATCH_STEPS || pending.since.elapsed() >= BATCH_WINDOW
        };
        if due {
            self.hand_over()?;
        }
        self.failure()
    }

    /// Hands over what is pending and waits until everything handed over
    /// is recorded.
    pub fn finish(&self) -> Result<(), ReplicaError> {
        self.hand_over()?;
        let mut state = self.shared.state.lock().expect("recorder");
        while state.in_flight > 0 {
            state = self.shared.idle.wait(state).expect("recorder");
        }
        drop(state);
        self.failure()
    }

    fn hand_over(&self) -> Result<(), ReplicaError> {
        let steps = {
            let mut pending = self.pending.lock().expect("pending steps");
            pending.since = Instant::now();
            std::mem::take(&mut pending.steps)
        };
        if steps.is_empty() {
            return Ok(());
        }
        self.shared.state.lock().expect("recorder").in_flight += 1;
        if self.queue.send(steps).is_err() {
            // The thread is gone (it ends only with its scope): nothing
            // more can be recorded in this run.
            let mut state = self.shared.state.lock().expect("recorder");
            state.in_flight -= 1;
            let failure = state
                .failure
                .get_or_insert("the journal's recording thread stopped".into());
            return Err(ReplicaError::Other(failure.clone()));
        }
        Ok(())
    }

    fn failure(&self) -> Result<(), ReplicaError> {
        match &self.shared.state.lock().expect("recorder").failure {
            None => Ok(()),
            Some(message) => Err(ReplicaError::Other(message.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> Step {
        Step {
            base: Vec::new(),
            changes: Vec::new(),
            blobs: Vec::new(),
        }
    }

    #[test]
    fn batches_are_recorded_in_order_and_finish_waits_for_all() {
        let recorded = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            let recorder = Recorder::start(scope, |steps| {
                // Slower than handing over: the queue must hold back.
                std::thread::sleep(Duration::from_millis(2));
                recorded.lock().unwrap().push(steps.len());
                Ok(())
            });
            for _ in 0..(3 * BATCH_STEPS + 5) {
                recorder.add(step()).unwrap();
            }
            recorder.finish().unwrap();
            assert_eq!(
                *recorded.lock().unwrap(),
                [BATCH_STEPS, BATCH_STEPS, BATCH_STEPS, 5]
            );
            recorder.finish().unwrap();
        });
    }

    #[test]
    fn after_a_failed_batch_nothing_more_is_recorded_and_the_failure_is_returned() {
        let calls = Mutex::new(0);
        std::thread::scope(|scope| {
            let recorder = Recorder::start(scope, |_| {
                let mut calls = calls.lock().unwrap();
                *calls += 1;
                if *calls == 1 {
                    Err(ReplicaError::Other("the disk is full".into()))
                } else {
                    Ok(())
                }
            });
            for _ in 0..(4 * BATCH_STEPS) {
                // Steps added before the failure is known are accepted.
                let _ = recorder.add(step());
            }
            let error = recorder.finish().unwrap_err();
            assert!(error.to_string().contains("the disk is full"), "{error}");
            assert_eq!(
                *calls.lock().unwrap(),
                1,
                "nothing recorded after the failure"
            );
            // Once the failure is known, every call reports it.
            assert!(recorder.add(step()).is_err());
        });
    }
}
