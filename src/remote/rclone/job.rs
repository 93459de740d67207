//! A long upload as an rclone job: `operations/copyfile` started with
//! `_async` in a stats group of its own (`_group: prism-upload-RANDOM`),
//! watched while it runs. Its progress comes from `core/stats` of that
//! group: the bytes rclone sent so far, reported to the transfer (its
//! bytes were read from the spool file, not through the source, so
//! nothing else reports them). When the run wants to stop (the agent
//! stopping, the pair paused, the lease lost) the job is stopped with
//! `job/stop` rather than left to finish.
//!
//! A job is known by its group, not by its id alone: every rc call is a
//! job, and an rcd started again after the old one died counts ids from 1
//! again, so the upload's id soon names some other call. A `job/status`
//! whose group is not the upload's means the rcd that ran it ended.
//!
//! Whatever way the watch ends, a job that has not finished is stopped
//! and waited for ([`Watched`]'s drop) before the caller removes what it
//! staged: rclone must not go on writing a name that is being removed.

use std::time::Duration;

use serde_json::{Value, json};

use super::calls::{Remote, changed};
use super::rc::{ErrorKind, RcError};
use crate::remote::{ReplicaError, Source};

/// Uploads at least this large run as a watched job; a smaller one is one
/// call (a job costs a call more and a pause at least).
pub const WATCHED_UPLOAD_BYTES: u64 = 8 * 1024 * 1024;

/// How often a running job is looked at.
const POLL: Duration = Duration::from_millis(200);

/// How long a stopped job may take to end before the run goes on without
/// it (its staged file is then left to the staging sweep).
const STOP_GRACE: Duration = Duration::from_secs(10);

impl Remote {
    /// Runs `operations/copyfile` with `params` as a job, reporting its
    /// bytes to `source` until it ends; the job must leave `size` bytes at
    /// its destination. A job stopped because the run is cancelled is a
    /// change to plan again next time.
    pub(super) fn copy_watched(
        &self,
        mut params: Value,
        size: u64,
        source: &Source<'_>,
        what: &str,
    ) -> Result<(), ReplicaError> {
        let group = format!("prism-upload-{:016x}", fastrand::u64(..));
        params["_async"] = json!(true);
        params["_group"] = json!(group);
        let started = self.call("operations/copyfile", params.clone(), "upload", what)?;
        let Some(job) = started["jobid"].as_i64() else {
            return Err(ReplicaError::Other(format!(
                "cannot upload {what} on {}: rclone started no job ({started})",
                self.shown
            )));
        };
        let mut watched = Watched {
            remote: self,
            job,
            group,
            what,
            over: false,
        };
        watched.follow(source)?;
        // The job said it succeeded; what it left must be the whole file
        // (a second guard against a job that was not ours after all).
        let staged = params["dstRemote"].as_str().unwrap_or_default();
        match self.stat_file(staged)? {
            Some(item) if item.size == size => Ok(()),
            found => Err(ReplicaError::Other(format!(
                "cannot upload {what} on {}: rclone reported the upload done, but the remote \
                 holds {} of its {size} bytes",
                self.shown,
                found.map_or(0, |item| item.size)
            ))),
        }
    }
}

/// What `job/status` says of the upload's job.
enum Seen {
    Running,
    Finished {
        success: bool,
        error: String,
    },
    /// The rcd that ran it ended: no such job, or one of another group.
    Gone,
}

/// An upload's job being watched. Dropped before it is `over`, it stops
/// the job and waits for it to end.
struct Watched<'a> {
    remote: &'a Remote,
    job: i64,
    group: String,
    what: &'a str,
    /// The job ended, or is none of ours to stop.
    over: bool,
}

impl Watched<'_> {
    /// Watches the job until it ends: `Ok` when it succeeded.
    fn follow(&mut self, source: &Source<'_>) -> Result<(), ReplicaError> {
        let mut stopped: Option<std::time::Instant> = None;
        loop {
            std::thread::sleep(POLL);
            match self.look()? {
                Seen::Running => {}
                Seen::Gone => {
                    self.over = true;
                    return Err(self.rcd_ended());
                }
                Seen::Finished { success, error } => {
                    self.over = true;
                    return match (success, stopped) {
                        (true, _) => Ok(()),
                        (false, Some(_)) => Err(changed(self.what)),
                        (false, None) => Err(self.remote.error(
                            RcError::Answer {
                                status: 0,
                                message: error,
                            },
                            "upload",
                            self.what,
                        )),
                    };
                }
            }
            match stopped {
                None => {
                    self.report(source);
                    if source.is_cancelled() {
                        tracing::debug!(remote = %self.remote.shown, path = self.what, job = self.job, "the run stops: stopping the upload");
                        self.stop()?;
                        stopped = Some(std::time::Instant::now());
                    }
                }
                // The run was cancelled: whatever rclone still does, this
                // is planned again next time, not a failure of the path.
                // The drop asks once more and waits as long again.
                Some(at) if at.elapsed() > STOP_GRACE => return Err(changed(self.what)),
                Some(_) => {}
            }
        }
    }

    /// Progress is for the status only: a failed look at it is no
    /// failure of the upload.
    fn report(&self, source: &Source<'_>) {
        if let Ok(stats) = self
            .remote
            .client
            .call("core/stats", &json!({ "group": self.group }))
            && let Some(bytes) = stats["bytes"].as_u64()
        {
            source.report(bytes);
        }
    }

    fn look(&self) -> Result<Seen, ReplicaError> {
        let status = match self
            .remote
            .client
            .call("job/status", &json!({ "jobid": self.job }))
        {
            Ok(status) => status,
            // The rcd died with the job (the call found it gone and
            // started a new one, which knows no such job).
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Seen::Gone),
            Err(e) => return Err(self.remote.error(e, "upload", self.what)),
        };
        if status["group"].as_str() != Some(self.group.as_str()) {
            // A new rcd's job that took the upload's id.
            return Ok(Seen::Gone);
        }
        if status["finished"].as_bool() != Some(true) {
            return Ok(Seen::Running);
        }
        Ok(Seen::Finished {
            success: status["success"].as_bool() == Some(true),
            error: status["error"]
                .as_str()
                .filter(|e| !e.is_empty())
                .unwrap_or("the upload failed")
                .to_owned(),
        })
    }

    /// Sends `job/stop`, once the job is known to be still ours (its id
    /// may name another call's job on a new rcd).
    fn stop(&mut self) -> Result<(), ReplicaError> {
        match self.look()? {
            Seen::Running => {}
            Seen::Finished { .. } => return Ok(()),
            Seen::Gone => {
                self.over = true;
                return Err(self.rcd_ended());
            }
        }
        match self
            .remote
            .client
            .call("job/stop", &json!({ "jobid": self.job }))
        {
            Ok(_) => Ok(()),
            // It ended between the look and the stop.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.remote.error(e, "stop the upload of", self.what)),
        }
    }

    /// The upload is tried again when the remote answers, as after any
    /// broken connection.
    fn rcd_ended(&self) -> ReplicaError {
        ReplicaError::Offline {
            remote: self.remote.shown.clone(),
            reason: format!(
                "the rclone rcd ended during the upload of {}; it runs again for the next try",
                self.what
            ),
        }
    }
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        if self.over {
            return;
        }
        tracing::debug!(remote = %self.remote.shown, path = self.what, job = self.job, "the upload is given up: stopping rclone's job");
        let asked = std::time::Instant::now();
        let mut stop_sent = false;
        while asked.elapsed() <= STOP_GRACE {
            match self.look() {
                Ok(Seen::Running) => {}
                Ok(_) => return,
                // A broken connection to a live rcd, or one that died (the
                // next call starts a new one, which knows no such job).
                Err(_) => {
                    std::thread::sleep(POLL);
                    continue;
                }
            }
            if !stop_sent {
                stop_sent = self
                    .remote
                    .client
                    .call("job/stop", &json!({ "jobid": self.job }))
                    .is_ok();
            }
            std::thread::sleep(POLL);
        }
        tracing::warn!(remote = %self.remote.shown, path = self.what, job = self.job, "rclone's upload job did not end when stopped; its staged file is swept later");
    }
}
