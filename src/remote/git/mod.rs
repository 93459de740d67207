//! The `git+URL` remote: a git repository's branch as the remote side of
//! a pair ([`replica`]: how files, batches and conflicts map onto commits;
//! `view`: the listed tip plus the batch not pushed yet, which every step
//! checks against; `listing`: the tip's tree as a side tree; `records`:
//! the agents' records in a ref of their own; [`mirror`]: the private bare
//! mirror and the network; `ssh`: one shared ssh connection for the
//! calls, where git would run plain `ssh`).
//!
//! **Why the `git` command line.** Not libgit2 or gitoxide: the CLI is
//! what honours the user's `~/.ssh/config` (through their ssh), their
//! ssh-agent, their credential helpers and `url.*.insteadOf` rules, and it
//! can push over every transport (gitoxide cannot push yet). Cargo and jj
//! shell out to git for the same reasons. Every call runs with one
//! environment ([`command`]): no terminal prompts, the C locale, a
//! deadline, and no config of the user's that would change what plumbing
//! does (hooks, signing, automatic gc).
//!
//! **Where things live.** The working store is a private bare mirror in the
//! state dir (`STATE/git/KEY.git`); the user's own checkouts are never
//! touched. On the remote, the synced files are the branch's tree; the
//! agents' records (the root marker, change logs, journal records) are in
//! a ref of their own, `refs/prism-sync/records`, so the user's tree holds
//! only their files.
//!
//! **No lease and no trash.** A push that is not a fast-forward is refused
//! by the remote: that refusal is the compare-and-swap, so agents need no
//! lease. Every replaced or deleted version stays in the history.

pub mod command;
mod history;
mod listing;
pub mod mirror;
mod records;
pub mod replica;
pub mod settings;
mod ssh;
mod view;

pub use replica::GitReplica;
pub use settings::GitPairSettings;

#[cfg(test)]
mod tests;
