//! The versions of a file a git remote keeps: the commits of the branch
//! (as last fetched) that left a version of it, read from the mirror.

use std::io::Read;

use super::mirror::TIP_REF;
use super::replica::GitReplica;
use crate::model::RelPath;
use crate::remote::{KeptVersion, ReplicaError};

impl GitReplica {
    /// The versions of `path` in the branch's history, newest first: each
    /// commit that touched it and left a file there (a commit that
    /// deleted it leaves none).
    pub(super) fn history_of(
        &self,
        path: &RelPath,
        limit: usize,
    ) -> Result<Vec<KeptVersion>, ReplicaError> {
        self.mirror.ensure()?;
        if self.mirror.local_ref(TIP_REF)?.is_none() {
            return Ok(Vec::new());
        }
        let git = &self.mirror.git;
        let repo_path = self.repo_path(path.as_str());
        let log = git
            .call([
                "log",
                "--no-show-signature",
                "--format=%H %ct %an",
                TIP_REF,
                "--",
                &repo_path,
            ])
            .env("GIT_LITERAL_PATHSPECS", "1")
            .text()
            .map_err(|e| self.mirror.local_error(e))?;
        // (commit, time, author, blob, size)
        let mut found = Vec::new();
        for line in log.lines() {
            if found.len() >= limit {
                break;
            }
            let mut fields = line.splitn(3, ' ');
            let (Some(commit), Some(time)) = (fields.next(), fields.next()) else {
                continue;
            };
            let author = fields.next().unwrap_or_default().to_owned();
            let Some((oid, size)) = self.blob_at(commit, &repo_path)? else {
                continue;
            };
            let time: i64 = time.parse().unwrap_or(0);
            found.push((commit.to_owned(), time, author, oid, size));
        }
        let oids: Vec<String> = found.iter().map(|f| f.3.clone()).collect();
        let hashes = self.hash_blobs(&oids)?;
        Ok(found
            .into_iter()
            .filter_map(|(commit, time, author, oid, size)| {
                Some(KeptVersion {
                    version: commit,
                    hash: *hashes.get(&oid)?,
                    size,
                    time_ns: time.saturating_mul(1_000_000_000),
                    author,
                })
            })
            .collect())
    }

    /// Reads `path` as commit `version` holds it.
    pub(super) fn open_at_commit(
        &self,
        path: &RelPath,
        version: &str,
    ) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        let not_kept = || {
            ReplicaError::io(
                "read",
                format!("{path} at {version}"),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        };
        // A commit id and nothing else: never an option or a revision
        // expression.
        if !matches!(version.len(), 40 | 64) || !version.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_kept());
        }
        let repo_path = self.repo_path(path.as_str());
        let (oid, _) = self.blob_at(version, &repo_path)?.ok_or_else(not_kept)?;
        let stream = self
            .mirror
            .git
            .call(["cat-file", "blob", &oid])
            .stream()
            .map_err(|e| self.mirror.local_error(e))?;
        Ok(Box::new(stream))
    }

    /// The blob and size of the file `repo_path` in `commit`, if it holds
    /// one there.
    fn blob_at(
        &self,
        commit: &str,
        repo_path: &str,
    ) -> Result<Option<(String, u64)>, ReplicaError> {
        let out = self
            .mirror
            .git
            .call([
                "ls-tree",
                "-l",
                "-z",
                "--full-tree",
                commit,
                "--",
                repo_path,
            ])
            .env("GIT_LITERAL_PATHSPECS", "1")
            .run();
        let Ok(out) = out else {
            // Not a commit of the mirror.
            return Ok(None);
        };
        let Some(record) = out.split(|b| *b == 0).find(|r| !r.is_empty()) else {
            return Ok(None);
        };
        let Some(tab) = record.iter().position(|b| *b == b'\t') else {
            return Ok(None);
        };
        if &record[tab + 1..] != repo_path.as_bytes() {
            return Ok(None);
        }
        let meta = String::from_utf8_lossy(&record[..tab]);
        let fields: Vec<&str> = meta.split_whitespace().collect();
        match fields.as_slice() {
            [mode, "blob", oid, size] if *mode == "100644" || *mode == "100755" => {
                Ok(Some(((*oid).to_owned(), size.parse().unwrap_or(0))))
            }
            _ => Ok(None),
        }
    }
}
