//! A long upload as an rclone job: `operations/copyfile` started with
//! `_async`, watched while it runs. Its progress comes from `core/stats`
//! of the job's own stats group (`job/ID`): the bytes rclone sent so far,
//! reported to the transfer (its bytes were read from the spool file, not
//! through the source, so nothing else reports them). When the run wants
//! to stop (the agent stopping, the pair paused, the lease lost) the job
//! is stopped with `job/stop` rather than left to finish.

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

/// How long a stopped job may take to end before the upload is given up
/// as failed all the same.
const STOP_GRACE: Duration = Duration::from_secs(10);

impl Remote {
    /// Runs `operations/copyfile` with `params` as a job, reporting its
    /// bytes to `source` until it ends. A job stopped because the run is
    /// cancelled is a change to plan again next time.
    pub(super) fn copy_watched(
        &self,
        mut params: Value,
        source: &Source<'_>,
        what: &str,
    ) -> Result<(), ReplicaError> {
        params["_async"] = json!(true);
        let started = self.call("operations/copyfile", params, "upload", what)?;
        let Some(job) = started["jobid"].as_i64() else {
            return Err(ReplicaError::Other(format!(
                "cannot upload {what} on {}: rclone started no job ({started})",
                self.shown
            )));
        };
        let group = format!("job/{job}");
        let mut stopped: Option<std::time::Instant> = None;
        loop {
            std::thread::sleep(POLL);
            let status = match self.client.call("job/status", &json!({ "jobid": job })) {
                Ok(status) => status,
                // The rcd died with the job (the call found it gone and
                // started a new one, which knows no such job): the upload
                // is tried again when the remote answers, as after any
                // broken connection.
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(ReplicaError::Offline {
                        remote: self.shown.clone(),
                        reason: format!(
                            "the rclone rcd ended during the upload of {what}; it runs again \
                             for the next try"
                        ),
                    });
                }
                Err(e) => return Err(self.error(e, "upload", what)),
            };
            if status["finished"].as_bool() == Some(true) {
                return match (status["success"].as_bool() == Some(true), stopped) {
                    (true, _) => Ok(()),
                    (false, Some(_)) => Err(changed(what)),
                    (false, None) => {
                        let message = status["error"]
                            .as_str()
                            .unwrap_or("the upload failed")
                            .to_owned();
                        Err(self.error(RcError::Answer { status: 0, message }, "upload", what))
                    }
                };
            }
            match stopped {
                None => {
                    // Progress is for the status only: a failed look at it
                    // is no failure of the upload.
                    if let Ok(stats) = self.client.call("core/stats", &json!({ "group": group }))
                        && let Some(bytes) = stats["bytes"].as_u64()
                    {
                        source.report(bytes);
                    }
                    if source.is_cancelled() {
                        tracing::debug!(remote = %self.shown, path = what, job, "the run stops: stopping the upload");
                        self.call(
                            "job/stop",
                            json!({ "jobid": job }),
                            "stop the upload of",
                            what,
                        )?;
                        stopped = Some(std::time::Instant::now());
                    }
                }
                Some(at) if at.elapsed() > STOP_GRACE => {
                    return Err(ReplicaError::Other(format!(
                        "cannot stop the upload of {what} on {}: rclone's job {job} still runs",
                        self.shown
                    )));
                }
                Some(_) => {}
            }
        }
    }
}
