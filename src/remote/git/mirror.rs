//! The private bare mirror in the state dir, and what crosses the network:
//! `ls-remote` to see whether anything moved, `fetch` only when it did,
//! and `push` without force.
//!
//! The mirror keeps two refs of its own: `refs/prism/tip`, the remote
//! branch as last fetched, and `refs/prism/records`, the agents' records
//! (kept on the remote in `refs/prism-sync/records`, beside the user's
//! branches, so the user's tree holds only their files). Fetching updates
//! these with `+`: someone may rewrite the remote's history, and the
//! mirror follows. Pushing never does: a push that is not a fast-forward
//! is refused by the remote, and that refusal is the compare-and-swap.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use super::command::{Call, Git, GitError};
use super::ssh::SshSharing;
use crate::remote::ReplicaError;

/// The mirror's copy of the remote branch.
pub const TIP_REF: &str = "refs/prism/tip";
/// The mirror's copy of the records.
pub const RECORDS_REF: &str = "refs/prism/records";
/// Where the records live on the remote.
pub const REMOTE_RECORDS_REF: &str = "refs/prism-sync/records";
/// The branch an empty repository gets.
pub const DEFAULT_BRANCH: &str = "main";

/// What `ls-remote` showed.
#[derive(Debug, Default)]
pub struct Advertised {
    /// Branch name → commit.
    pub heads: BTreeMap<String, String>,
    /// The branch HEAD points at, if the server said.
    pub head: Option<String>,
    pub records: Option<String>,
}

/// How a push ended.
pub enum Pushed {
    Done,
    /// The remote refused the push as not a fast-forward, or lost the race
    /// for the ref to another push: fetch and try again. Holds what git
    /// said.
    Rejected(String),
}

/// A mirror of one remote.
pub struct Mirror {
    pub git: Git,
    /// The URL after `git+`.
    url: String,
    /// For messages: `git+URL`.
    shown: String,
    /// The shared ssh connection, decided at the first network call (the
    /// mirror exists then, and git's config can be asked).
    ssh: OnceLock<Option<SshSharing>>,
}

impl Mirror {
    pub fn new(git_dir: PathBuf, url: String) -> Mirror {
        let shown = format!("git+{url}");
        Mirror {
            git: Git::new(git_dir),
            url,
            shown,
            ssh: OnceLock::new(),
        }
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A call that crosses the network: the network deadline, and the
    /// shared ssh connection where there is one.
    fn network_call(&self, args: &[&str]) -> Call {
        let call = self.git.call(args).network();
        let sharing = self
            .ssh
            .get_or_init(|| SshSharing::for_remote(&self.git, &self.url));
        match sharing {
            Some(sharing) => call.env("GIT_SSH_COMMAND", sharing.command()),
            None => call,
        }
    }

    /// Creates the mirror when it is not there yet: bare, without the
    /// user's template (which may hold hooks), private to the user.
    pub fn ensure(&self) -> Result<(), ReplicaError> {
        let dir = self.git.git_dir();
        if dir.join("HEAD").exists() {
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(|e| ReplicaError::io("create", dir.display(), e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        self.git
            .call(["init", "--bare", "--quiet", "--template="])
            .run()
            .map_err(|e| self.local_error(e))?;
        Ok(())
    }

    /// The mirror's object format (`sha1`, `sha256`).
    pub fn object_format(&self) -> Result<String, ReplicaError> {
        self.git
            .call(["rev-parse", "--show-object-format"])
            .text()
            .map_err(|e| self.local_error(e))
    }

    /// Makes the mirror use the object format of the remote whose object
    /// ids are `oid`'s length: a mirror of another format cannot fetch
    /// from it, so it is started anew (it only holds what the remote has,
    /// which is fetched again). Returns whether it was.
    pub fn match_format(&self, oid: &str) -> Result<bool, ReplicaError> {
        let wanted = if oid.len() == 64 { "sha256" } else { "sha1" };
        if self.object_format()? == wanted {
            return Ok(false);
        }
        let dir = self.git.git_dir();
        std::fs::remove_dir_all(dir).map_err(|e| ReplicaError::io("remove", dir.display(), e))?;
        std::fs::create_dir_all(dir).map_err(|e| ReplicaError::io("create", dir.display(), e))?;
        self.git
            .call([
                "init",
                "--bare",
                "--quiet",
                "--template=",
                &format!("--object-format={wanted}"),
            ])
            .run()
            .map_err(|e| self.local_error(e))?;
        Ok(true)
    }

    /// One `ls-remote` for HEAD, the branches and the records.
    pub fn advertised(&self) -> Result<Advertised, ReplicaError> {
        let out = self
            .network_call(&[
                "ls-remote",
                "--symref",
                &self.url,
                "HEAD",
                "refs/heads/*",
                REMOTE_RECORDS_REF,
            ])
            .text()
            .map_err(|e| self.network_error(e))?;
        let mut seen = Advertised::default();
        for line in out.lines() {
            let Some((left, name)) = line.split_once('\t') else {
                continue;
            };
            if let Some(target) = left.strip_prefix("ref: ") {
                if name == "HEAD" {
                    seen.head = target.strip_prefix("refs/heads/").map(str::to_owned);
                }
            } else if let Some(branch) = name.strip_prefix("refs/heads/") {
                seen.heads.insert(branch.to_owned(), left.to_owned());
            } else if name == REMOTE_RECORDS_REF {
                seen.records = Some(left.to_owned());
            }
        }
        Ok(seen)
    }

    /// The commit a ref of the mirror points at.
    pub fn local_ref(&self, name: &str) -> Result<Option<String>, ReplicaError> {
        let out = self
            .git
            .call([
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{name}^{{commit}}"),
            ])
            .text();
        match out {
            Ok(oid) if !oid.is_empty() => Ok(Some(oid)),
            Ok(_) => Ok(None),
            // --quiet: a missing ref fails without a word.
            Err(e) if e.stderr().trim().is_empty() => Ok(None),
            Err(e) => Err(self.local_error(e)),
        }
    }

    /// The commits the mirror's own refs (`refs/prism/…`) point at, by
    /// name, read in one call.
    pub fn local_refs(&self) -> Result<BTreeMap<String, String>, ReplicaError> {
        let out = self
            .git
            .call([
                "for-each-ref",
                "--format=%(objectname) %(objecttype) %(refname)",
                "refs/prism/",
            ])
            .text()
            .map_err(|e| self.local_error(e))?;
        let mut refs = BTreeMap::new();
        for line in out.lines() {
            let mut fields = line.splitn(3, ' ');
            let (Some(oid), Some(kind), Some(name)) = (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            // A ref to anything but a commit (a tag someone pushed as the
            // branch) is peeled as `local_ref` peels it.
            let commit = match kind {
                "commit" => Some(oid.to_owned()),
                _ => self.local_ref(name)?,
            };
            if let Some(commit) = commit {
                refs.insert(name.to_owned(), commit);
            }
        }
        Ok(refs)
    }

    /// Makes the mirror's `local` ref, now at `have`, what the remote's
    /// `remote` ref is (`oid`, as advertised; `None`: it has none),
    /// fetching only when they differ.
    pub fn follow(
        &self,
        remote: &str,
        local: &str,
        oid: Option<&str>,
        have: Option<String>,
    ) -> Result<Option<String>, ReplicaError> {
        match oid {
            Some(oid) if have.as_deref() == Some(oid) => Ok(have),
            Some(_) => {
                self.fetch(remote, local)?;
                self.local_ref(local)
            }
            None => {
                if have.is_some() {
                    self.git
                        .call(["update-ref", "-d", local])
                        .run()
                        .map_err(|e| self.local_error(e))?;
                }
                Ok(None)
            }
        }
    }

    /// Fetches the remote's `remote` ref into the mirror's `local`.
    pub fn fetch(&self, remote: &str, local: &str) -> Result<(), ReplicaError> {
        self.network_call(&[
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-auto-gc",
            &self.url,
            &format!("+{remote}:{local}"),
        ])
        .run()
        .map_err(|e| self.network_error(e))?;
        Ok(())
    }

    /// Pushes `commit` to the remote's `remote` ref, never forced.
    pub fn push(&self, commit: &str, remote: &str) -> Result<Pushed, ReplicaError> {
        let pushed = self
            .network_call(&[
                "push",
                "--porcelain",
                "--quiet",
                "--no-verify",
                &self.url,
                &format!("{commit}:{remote}"),
            ])
            .run();
        match pushed {
            Ok(_) => Ok(Pushed::Done),
            Err(e) if is_rejection(&e) => Ok(Pushed::Rejected(e.to_string())),
            // The server answered and said no (a hook, a protected
            // branch): waiting will not change that.
            Err(e) if e.stdout().contains("[remote rejected]") => Err(ReplicaError::Other(
                format!("{} refused the push: {e}", self.shown),
            )),
            Err(e) => Err(self.network_error(e)),
        }
    }

    /// A failed call that never left the machine.
    pub fn local_error(&self, e: GitError) -> ReplicaError {
        ReplicaError::Other(format!("the mirror of {}: {e}", self.shown))
    }

    /// A failed network call: the remote is offline unless git says it
    /// refused us (a login, a permission, a missing repository), which
    /// waiting will not fix.
    pub fn network_error(&self, e: GitError) -> ReplicaError {
        if let (GitError::TimedOut { .. }, Some(Some(sharing))) = (&e, self.ssh.get()) {
            sharing.end_master();
        }
        let said = e.stderr().to_ascii_lowercase();
        let refused = [
            "permission denied",
            "authentication failed",
            "could not read username",
            "could not read password",
            "terminal prompts disabled",
            "access denied",
            "host key verification failed",
            "repository not found",
            "not found",
            "does not appear to be a git repository",
            // HTTP 4xx: forbidden, not found, gone.
            "the requested url returned error: 4",
        ]
        .iter()
        .any(|m| said.contains(m));
        match e {
            GitError::Spawn(_) => ReplicaError::Other(e.to_string()),
            _ if refused => ReplicaError::Other(format!("{}: {e}", self.shown)),
            _ => ReplicaError::Offline {
                remote: self.shown.clone(),
                reason: e.to_string(),
            },
        }
    }
}

/// Whether a failed push was refused because the remote moved on: the
/// ref is not an ancestor of what we push (`[rejected]`), or another push
/// updated it while ours was received (`[remote rejected] (failed to
/// update ref)`: the server's compare-and-swap on the ref). A hook that
/// declines is another matter (see `push_edits`).
fn is_rejection(e: &GitError) -> bool {
    let GitError::Failed { stderr, stdout, .. } = e else {
        return false;
    };
    let said = format!("{stderr}\n{stdout}").to_ascii_lowercase();
    [
        "non-fast-forward",
        "fetch first",
        "[rejected]",
        "stale info",
        "failed to update ref",
        "cannot lock ref",
        "incorrect old value",
    ]
    .iter()
    .any(|m| said.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn failed(stderr: &str) -> GitError {
        GitError::Failed {
            what: "git fetch".into(),
            status: std::process::ExitStatus::from_raw(128 << 8),
            stderr: stderr.into(),
            stdout: String::new(),
        }
    }

    #[test]
    fn a_server_that_answers_no_is_an_error_and_one_that_does_not_answer_is_offline() {
        let mirror = Mirror::new(PathBuf::from("/nonexistent"), "https://h/x.git".into());
        for refused in [
            "fatal: unable to access 'https://h/x.git/': The requested URL returned error: 403",
            "git@h: Permission denied (publickey).\nfatal: Could not read from remote repository.",
            "fatal: could not read Username for 'https://h': terminal prompts disabled",
            "Host key verification failed.\nfatal: Could not read from remote repository.",
        ] {
            let error = mirror.network_error(failed(refused));
            assert!(!error.is_offline(), "{refused}: {error}");
        }
        for away in [
            "fatal: unable to access 'https://h/x.git/': Failed to connect to h port 443: Connection refused",
            "ssh: connect to host h port 22: Connection timed out\nfatal: Could not read from remote repository.",
            "fatal: unable to access 'https://h/x.git/': Could not resolve host: h",
        ] {
            let error = mirror.network_error(failed(away));
            assert!(error.is_offline(), "{away}: {error}");
        }
    }
}
