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
    /// A record's blob, if the records have it (one `cat-file`, which
    /// says `missing` for a name or a ref that is not there).
    pub(super) fn record_blob(&self, name: &str) -> Result<Option<String>, ReplicaError> {
        let out = self
            .mirror
            .git
            .call(["cat-file", "--batch-check"])
            .input(format!("{RECORDS_REF}:{name}\n").into_bytes())
            .text();
        // A name or ref that is not there is a `missing` line and success;
        // a failure is git's (a timeout, a damaged mirror), not an answer.
        let line = out.map_err(|e| self.mirror.local_error(e))?;
        Ok(found(&line).map(|(oid, _, _)| oid.to_owned()))
    }

    /// A record's content, if the records have it: one `cat-file` for
    /// both the lookup and the read. A record larger than `limit` is
    /// refused by its header, before its content is read (whoever can
    /// push to the records ref could make it any size).
    pub(super) fn record_content(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, ReplicaError> {
        use std::io::{BufRead, BufReader, Read};
        let stream = self
            .mirror
            .git
            .call(["cat-file", "--batch"])
            .input(format!("{RECORDS_REF}:{name}\n").into_bytes())
            .stream()
            .map_err(|e| self.mirror.local_error(e))?;
        let unreadable = |what: String| {
            ReplicaError::Other(format!(
                "the record {name} cannot be read from the mirror ({what})"
            ))
        };
        let mut stream = BufReader::new(stream);
        let mut header = String::new();
        stream
            .by_ref()
            .take(1024)
            .read_line(&mut header)
            .map_err(|e| unreadable(e.to_string()))?;
        let header = header.trim_end();
        let Some((_, kind, size)) = found(header) else {
            return Ok(None);
        };
        if kind != "blob" {
            return Err(unreadable(header.to_owned()));
        }
        if size > limit {
            return Err(ReplicaError::Other(format!(
                "the record {name} is larger than {limit} bytes"
            )));
        }
        let mut content = vec![0; size];
        stream
            .read_exact(&mut content)
            .map_err(|e| unreadable(e.to_string()))?;
        Ok(Some(content))
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

/// The object a `cat-file --batch` header names (`OID TYPE SIZE`), or
/// `None` for `NAME missing` (or `ambiguous`).
fn found(header: &str) -> Option<(&str, &str, usize)> {
    let mut fields = header.split_whitespace();
    let (oid, kind, size) = (fields.next()?, fields.next()?, fields.next()?);
    Some((oid, kind, size.parse().ok()?))
}
