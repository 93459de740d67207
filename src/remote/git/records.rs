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
        match out {
            Ok(line) => Ok(found(&line).map(|(oid, _, _)| oid.to_owned())),
            _ => Ok(None),
        }
    }

    /// A record's content, if the records have it: one `cat-file` for
    /// both the lookup and the read.
    pub(super) fn record_content(&self, name: &str) -> Result<Option<Vec<u8>>, ReplicaError> {
        let out = self
            .mirror
            .git
            .call(["cat-file", "--batch"])
            .input(format!("{RECORDS_REF}:{name}\n").into_bytes())
            .run()
            .map_err(|e| self.mirror.local_error(e))?;
        let newline = out.iter().position(|b| *b == b'\n').unwrap_or(out.len());
        let header = String::from_utf8_lossy(&out[..newline]);
        let Some((_, kind, size)) = found(&header) else {
            return Ok(None);
        };
        let content = out.get(newline + 1..newline + 1 + size);
        match content {
            Some(content) if kind == "blob" => Ok(Some(content.to_vec())),
            _ => Err(ReplicaError::Other(format!(
                "the record {name} cannot be read from the mirror ({header})"
            ))),
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

/// The object a `cat-file --batch` header names (`OID TYPE SIZE`), or
/// `None` for `NAME missing` (or `ambiguous`).
fn found(header: &str) -> Option<(&str, &str, usize)> {
    let mut fields = header.split_whitespace();
    let (oid, kind, size) = (fields.next()?, fields.next()?, fields.next()?);
    Some((oid, kind, size.parse().ok()?))
}
