//! The agents' records on a git remote: files in the tree of the ref
//! `refs/prism-sync/records` (the mirror's copy: `refs/prism/records`),
//! each write or removal one commit pushed without force, out of the
//! user's branch.

use super::mirror::{RECORDS_REF, REMOTE_RECORDS_REF};
use super::replica::GitReplica;
use super::view::Blob;
use crate::locks::LockExt;
use crate::remote::ReplicaError;

impl GitReplica {
    /// A record's blob, if the records have it.
    pub(super) fn record_blob(&self, name: &str) -> Result<Option<String>, ReplicaError> {
        let out = self
            .mirror
            .git
            .call([
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{RECORDS_REF}:{name}"),
            ])
            .text();
        match out {
            Ok(oid) if !oid.is_empty() => Ok(Some(oid)),
            _ => Ok(None),
        }
    }

    /// Writes (`Some`) or removes (`None`) one record in one commit on the
    /// records ref, again on the newer records when another agent pushed
    /// meanwhile (agents write records of their own, so the edit applies).
    pub(super) fn edit_record(
        &self,
        name: &str,
        content: Option<&str>,
    ) -> Result<(), ReplicaError> {
        if name.is_empty()
            || name
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(ReplicaError::Other(format!(
                "{name:?} is not a record name"
            )));
        }
        let _one_at_a_time = self.records.locked();
        self.mirror.ensure()?;
        let blob = match content {
            Some(content) => {
                let oid = self
                    .mirror
                    .git
                    .call(["hash-object", "-w", "--stdin", "--no-filters"])
                    .input(content.as_bytes().to_vec())
                    .text()
                    .map_err(|e| self.mirror.local_error(e))?;
                Some(Blob {
                    mode: "100644".into(),
                    oid,
                    size: content.len() as u64,
                })
            }
            None => {
                if self.record_blob(name)?.is_none() {
                    return Ok(());
                }
                None
            }
        };
        let parent = self.mirror.local_ref(RECORDS_REF)?;
        let verb = if content.is_some() { "write" } else { "remove" };
        let message = format!("{}: {verb} {name}", self.device);
        self.push_edits(
            parent,
            &[(name.to_owned(), blob)],
            &message,
            (REMOTE_RECORDS_REF, RECORDS_REF),
            |_, _| Ok(()),
        )?;
        Ok(())
    }
}
