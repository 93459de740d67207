//! Which pairs an admin token may add over HTTP (`api.pair_roots`).
//!
//! A pair joins a folder of this machine with a remote, and the agent
//! reads and writes both with its user's rights. Added by a token, a pair
//! with a folder or remote of the caller's choosing would hand the caller
//! every file of that user: the journal and signing key in the state dir,
//! `~/.ssh`, anything. So over HTTP a pair is added only when every file
//! of this machine it reaches lies inside a folder the owner named in
//! `api.pair_roots`, and apart from the agent's own files:
//!
//! - `local`, and the folder of a `file://` or `git+file://` remote, are
//!   resolved as the file system would reach them ([`resolve`]: symbolic
//!   links followed, `..` refused) and must lie inside a resolved root and
//!   neither inside nor around a protected path (the state dir, the config
//!   dir, the socket's folder, the TLS files, `~/.ssh`);
//! - an `rclone:` remote is refused: a connection string (`:local:`) or a
//!   remote of type `local` reaches any folder, and which one is rclone's
//!   business, not ours;
//! - a git remote is allowed over `ssh`, `https`, `http` and `git` only:
//!   other transports are local paths or remote helpers (programs);
//! - a network remote (SFTP, WebDAV, S3, git over a server) logs in with
//!   the agent user's own credentials (ssh keys and agent, stored
//!   passwords, AWS keys, git's credential helpers), which open far more
//!   than a token should reach: the server, user, port and folder, parsed
//!   and normalised ([`Location`]), must lie at or below an entry of
//!   `api.pair_remotes`, which the owner writes. Without that list no
//!   network remote may be added over HTTP.
//!
//! The local socket's owner may add any pair: none of this applies there.
//! The check only reads the file system; the pair is added after it, by
//! the same [`super::Control::pair_add`] as on the socket.

use std::path::{Component, Path, PathBuf};

use super::{ApiError, auth};
use crate::config::RemoteUrl;
use crate::remote::backend::{Location, Reach};

/// The folders under which tokens may add pairs, and the agent's own paths
/// no such pair may reach. Both are kept as configured and resolved at
/// each check, so a symbolic link changed since the agent started is
/// followed where it leads now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairRoots {
    roots: Vec<PathBuf>,
    protected: Vec<PathBuf>,
    remotes: Vec<Location>,
}

/// Why a path cannot be resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unresolvable {
    /// It is relative.
    Relative,
    /// It has a `..` component, whose meaning depends on symbolic links.
    ParentDir,
    /// A part of it that exists is a symbolic link to nothing (or a loop);
    /// the folder could later appear wherever that link points.
    BrokenLink,
}

impl PairRoots {
    /// `roots` as `api.pair_roots` names them (absolute); `protected`, the
    /// agent's own folders and files; `remotes`, the places on servers
    /// `api.pair_remotes` names. `None` when there are no roots: adding
    /// pairs over HTTP is then off.
    pub fn new(
        roots: Vec<PathBuf>,
        protected: Vec<PathBuf>,
        remotes: Vec<Location>,
    ) -> Option<PairRoots> {
        (!roots.is_empty()).then_some(PairRoots {
            roots,
            protected,
            remotes,
        })
    }

    /// Whether a pair of `local` and `remote` reaches files of this machine
    /// only inside the roots: `Ok`, a 403 naming the rule it breaks, or a
    /// 400 for a remote that is no remote URL. No answer echoes the remote
    /// URL, which may carry secrets (an rclone connection string): a 403
    /// names at most the folder of a file remote, and a 400 says what the
    /// URL parser says, which never repeats a password.
    pub fn check(&self, local: &str, remote: &str) -> Result<(), ApiError> {
        self.check_folder("local", Path::new(local))?;
        let remote = RemoteUrl::parse(remote).map_err(|message| {
            ApiError::bad_request("the remote is not one this agent can use")
                .with_details(format!("remote: {message}"))
        })?;
        match remote.reach() {
            Reach::Server(place) if self.remotes.iter().any(|allowed| place.within(allowed)) => {
                Ok(())
            }
            Reach::Server(_) => Err(auth::forbidden(format!(
                "a pair added over HTTP logs in to its server with the credentials of the user \
                 the agent runs as, so its remote must lie at or below an entry of \
                 api.pair_remotes, {}. Add the pair on the local socket (`prism-syncctl pair \
                 add`), or ask the owner to add the server's folder to api.pair_remotes",
                if self.remotes.is_empty() {
                    "which is not set: network remotes cannot be added over HTTP"
                } else {
                    "and this one is not (same scheme, user, host and port, and a folder at or \
                     below the entry's)"
                }
            ))),
            Reach::Folder(folder) => self.check_folder("the remote's folder", &folder),
            Reach::Anything(why) => Err(auth::forbidden(format!(
                "{why}. Add the pair on the local socket (`prism-syncctl pair add`) as the user \
                 the agent runs as, or use a remote inside api.pair_roots"
            ))),
        }
    }

    /// `folder` (`what` names it in answers) must resolve inside a root
    /// and apart from every protected path.
    fn check_folder(&self, what: &str, folder: &Path) -> Result<(), ApiError> {
        let real = resolve(folder).map_err(|why| {
            auth::forbidden(format!(
                "{what} {}: {}",
                folder.display(),
                match why {
                    Unresolvable::Relative => "must be an absolute path",
                    Unresolvable::ParentDir => "must not contain a `..` component",
                    Unresolvable::BrokenLink =>
                        "passes through a symbolic link that leads nowhere; a folder added \
                         over HTTP must lie inside api.pair_roots however its links change",
                }
            ))
        })?;
        let roots: Vec<PathBuf> = self
            .roots
            .iter()
            .filter_map(|root| resolve(root).ok())
            .collect();
        if !roots.iter().any(|root| real.starts_with(root)) {
            let named = self
                .roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let how = if self.roots.iter().any(|root| folder.starts_with(root)) {
                "leads through a symbolic link out of every folder of api.pair_roots"
            } else {
                "is not inside any folder of api.pair_roots"
            };
            return Err(auth::forbidden(format!(
                "{what} {} {how} ({named}); over HTTP a pair may reach only folders inside \
                 them. Add the pair on the local socket (`prism-syncctl pair add`) to use \
                 another folder",
                folder.display()
            )));
        }
        let reaches_own = self.protected.iter().any(|own| {
            let own = resolve(own).unwrap_or_else(|_| own.clone());
            real.starts_with(&own) || own.starts_with(&real)
        });
        if reaches_own {
            // Where the agent keeps its files is not the token's business
            // (`GET /status` hides it too): the rule, not the path.
            return Err(auth::forbidden(format!(
                "{what} {} lies inside or around the agent's own files (its state, config or \
                 socket folder, its TLS files, or ~/.ssh); choose a folder apart from them",
                folder.display()
            )));
        }
        Ok(())
    }
}

/// `path` as the file system reaches it, without trusting its symbolic
/// links: the longest part of it that exists (a symbolic link counts, even
/// one that leads nowhere) is canonicalized, and the rest, which does not
/// exist yet, is appended word by word. Refuses relative paths, `..` (its
/// meaning depends on the links before it) and a link that leads nowhere.
/// Only reads the file system.
pub fn resolve(path: &Path) -> Result<PathBuf, Unresolvable> {
    if !path.is_absolute() {
        return Err(Unresolvable::Relative);
    }
    let parts: Vec<Component<'_>> = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    if parts.contains(&Component::ParentDir) {
        return Err(Unresolvable::ParentDir);
    }
    for existing in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..existing].iter().collect();
        if std::fs::symlink_metadata(&prefix).is_err() {
            continue;
        }
        let mut real = prefix
            .canonicalize()
            .map_err(|_| Unresolvable::BrokenLink)?;
        real.extend(&parts[existing..]);
        return Ok(real);
    }
    // Not even the root exists: nothing to follow.
    Ok(parts.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary tree: `roots/in` (a root), `outside`, and `state`.
    struct Tree {
        dir: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Tree {
            let dir = tempfile::tempdir().unwrap();
            for folder in ["roots/in", "outside", "state"] {
                std::fs::create_dir_all(dir.path().join(folder)).unwrap();
            }
            Tree { dir }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn text(&self, rel: &str) -> String {
            self.path(rel).to_str().unwrap().to_owned()
        }

        /// Roots under which [`NETWORK`] is allowed.
        fn roots(&self, roots: &[&str], protected: &[&str]) -> PairRoots {
            self.roots_and_remotes(roots, protected, &[NETWORK])
        }

        fn roots_and_remotes(
            &self,
            roots: &[&str],
            protected: &[&str],
            remotes: &[&str],
        ) -> PairRoots {
            PairRoots::new(
                roots.iter().map(|r| self.path(r)).collect(),
                protected.iter().map(|p| self.path(p)).collect(),
                remotes.iter().map(|r| place(r)).collect(),
            )
            .unwrap()
        }
    }

    fn place(remote: &str) -> Location {
        match RemoteUrl::parse(remote).unwrap().reach() {
            Reach::Server(place) => place,
            other => panic!("{remote}: {other:?}"),
        }
    }

    fn refusal(result: Result<(), ApiError>) -> String {
        let err = result.unwrap_err();
        assert_eq!(err.code, 403, "{err}");
        err.details.unwrap()
    }

    const NETWORK: &str = "sftp://me@nas.example/backup";

    #[test]
    fn no_roots_means_adding_pairs_is_off() {
        assert_eq!(
            PairRoots::new(Vec::new(), vec!["/state".into()], vec![place(NETWORK)]),
            None
        );
    }

    #[test]
    fn a_folder_inside_a_root_passes_and_one_outside_does_not() {
        let tree = Tree::new();
        let roots = tree.roots(&["roots"], &["state"]);
        // Existing, not yet existing, and the root itself.
        for local in ["roots/in", "roots/in/new/deeper", "roots"] {
            assert_eq!(roots.check(&tree.text(local), NETWORK), Ok(()), "{local}");
        }
        let why = refusal(roots.check(&tree.text("outside"), NETWORK));
        assert!(
            why.contains("not inside any folder of api.pair_roots"),
            "{why}"
        );
        // A sibling whose name starts with the root's is not inside it.
        let why = refusal(roots.check(&tree.text("roots-evil"), NETWORK));
        assert!(why.contains("not inside"), "{why}");
    }

    #[test]
    fn a_symbolic_link_out_of_a_root_is_followed_and_refused() {
        let tree = Tree::new();
        std::os::unix::fs::symlink(tree.path("outside"), tree.path("roots/escape")).unwrap();
        std::os::unix::fs::symlink(tree.path("roots/in"), tree.path("roots/inward")).unwrap();
        std::os::unix::fs::symlink(tree.path("nowhere"), tree.path("roots/dangling")).unwrap();
        let roots = tree.roots(&["roots"], &["state"]);
        for local in ["roots/escape", "roots/escape/sub/new"] {
            let why = refusal(roots.check(&tree.text(local), NETWORK));
            assert!(why.contains("symbolic link out of"), "{why}");
        }
        assert_eq!(roots.check(&tree.text("roots/inward/x"), NETWORK), Ok(()));
        // A link to nothing could later lead anywhere.
        let why = refusal(roots.check(&tree.text("roots/dangling/x"), NETWORK));
        assert!(why.contains("leads nowhere"), "{why}");
        // A root that is itself a link counts where it leads.
        std::os::unix::fs::symlink(tree.path("roots/in"), tree.path("linked-root")).unwrap();
        let roots = tree.roots(&["linked-root"], &["state"]);
        assert_eq!(roots.check(&tree.text("roots/in/a"), NETWORK), Ok(()));
        assert_eq!(roots.check(&tree.text("linked-root/a"), NETWORK), Ok(()));
    }

    #[test]
    fn parent_components_and_relative_paths_are_refused() {
        let tree = Tree::new();
        let roots = tree.roots(&["roots"], &["state"]);
        let why = refusal(roots.check(&tree.text("roots/in/../../outside"), NETWORK));
        assert!(why.contains("`..`"), "{why}");
        // Even one that stays inside: its meaning depends on the links.
        let why = refusal(roots.check(&tree.text("roots/in/../in"), NETWORK));
        assert!(why.contains("`..`"), "{why}");
        let why = refusal(roots.check("roots/in", NETWORK));
        assert!(why.contains("absolute"), "{why}");
        assert_eq!(resolve(Path::new("/a/./b")), Ok(PathBuf::from("/a/b")));
    }

    #[test]
    fn the_agents_own_folders_are_off_limits_inside_a_root_and_around_one() {
        let tree = Tree::new();
        std::fs::create_dir_all(tree.path("roots/state")).unwrap();
        // The state dir inside a root: neither it, nor a folder inside it,
        // nor a folder around it may be a pair's.
        let roots = tree.roots(&["roots"], &["roots/state"]);
        for local in ["roots/state", "roots/state/journal", "roots"] {
            let why = refusal(roots.check(&tree.text(local), NETWORK));
            assert!(why.contains("the agent's own files"), "{local}: {why}");
        }
        let why = refusal(roots.check(&tree.text("roots"), NETWORK));
        assert!(
            !why.contains("roots/state"),
            "no path of the agent's: {why}"
        );
        assert_eq!(roots.check(&tree.text("roots/in"), NETWORK), Ok(()));
        // A root inside the state dir admits nothing.
        let roots = tree.roots(&["state/sub"], &["state"]);
        std::fs::create_dir_all(tree.path("state/sub")).unwrap();
        let why = refusal(roots.check(&tree.text("state/sub/x"), NETWORK));
        assert!(why.contains("the agent's own files"), "{why}");
        // A protected path reached through a link is still protected.
        std::os::unix::fs::symlink(tree.path("roots/in"), tree.path("state-link")).unwrap();
        let roots = tree.roots(&["roots"], &["state-link"]);
        let why = refusal(roots.check(&tree.text("roots/in/x"), NETWORK));
        assert!(why.contains("the agent's own files"), "{why}");
    }

    #[test]
    fn file_remotes_follow_the_rule_of_local_folders() {
        let tree = Tree::new();
        std::fs::create_dir_all(tree.path("roots/other")).unwrap();
        std::fs::create_dir_all(tree.path("roots/state")).unwrap();
        std::os::unix::fs::symlink(tree.path("outside"), tree.path("roots/escape")).unwrap();
        let roots = tree.roots(&["roots"], &["roots/state"]);
        let local = tree.text("roots/in");
        let file = |rel: &str| format!("file://{}", tree.text(rel));
        assert_eq!(roots.check(&local, &file("roots/other")), Ok(()));
        assert_eq!(
            roots.check(&local, &format!("git+{}", file("roots/other/r.git"))),
            Ok(())
        );
        for remote in [
            file("outside"),
            file("roots/escape"),
            format!("git+{}", file("outside/r.git")),
            format!("git+{}", file("roots/escape/r.git")),
        ] {
            let why = refusal(roots.check(&local, &remote));
            assert!(why.contains("remote"), "{remote}: {why}");
        }
        let why = refusal(roots.check(&local, &file("roots/state/trash")));
        assert!(why.contains("the agent's own files"), "{why}");
        let escaped = format!("git+file://{}", tree.text("roots/%2E%2E/outside"));
        let why = refusal(roots.check(&local, &escaped));
        assert!(why.contains("%-escapes"), "{why}");
    }

    #[test]
    fn rclone_and_unknown_git_transports_are_refused() {
        let tree = Tree::new();
        let roots = tree.roots(&["roots"], &["state"]);
        let local = tree.text("roots/in");
        for remote in ["rclone::local:/etc", "rclone:gdrive:Notes"] {
            let why = refusal(roots.check(&local, remote));
            assert!(why.contains("local socket"), "{why}");
            assert!(!why.contains("gdrive"), "the remote is not echoed: {why}");
        }
        let why = refusal(roots.check(&local, "git+ftp://host/repo.git"));
        assert!(why.contains("git transport"), "{why}");
        assert_eq!(roots.check(&local, "nonsense").unwrap_err().code, 400);
        // A password written where no URL rule expects one is not echoed.
        for remote in ["me:hunter2@nas/backup", "file://me:hunter2@nas/x"] {
            let err = roots.check(&local, remote).unwrap_err();
            assert_eq!(err.code, 400, "{remote}: {err}");
            let details = err.details.unwrap();
            assert!(!details.contains("hunter2"), "{remote}: {details}");
        }
    }

    #[test]
    fn network_remotes_are_refused_without_pair_remotes() {
        let tree = Tree::new();
        let roots = tree.roots_and_remotes(&["roots"], &["state"], &[]);
        let local = tree.text("roots/in");
        for remote in [
            "sftp://me@build-server/home/me/.ssh",
            "webdavs://attacker.example/p",
            "s3://private-bucket/x",
            "git+ssh://git@github.com/me/private.git",
            "git+git@github.com:me/private.git",
            "git+https://github.com/me/private.git",
        ] {
            let why = refusal(roots.check(&local, remote));
            assert!(why.contains("api.pair_remotes"), "{remote}: {why}");
            assert!(why.contains("not set"), "{remote}: {why}");
            for part in ["build-server", "attacker", "private", "github", "://"] {
                assert!(!why.contains(part), "the remote is not echoed: {why}");
            }
        }
        // A file remote inside the roots needs no entry.
        std::fs::create_dir_all(tree.path("roots/other")).unwrap();
        let file = format!("file://{}", tree.text("roots/other"));
        assert_eq!(roots.check(&local, &file), Ok(()));
    }

    #[test]
    fn network_remotes_pass_only_at_or_below_an_entry_of_pair_remotes() {
        let tree = Tree::new();
        let entries = [
            "sftp://me@nas.local/shared/",
            "webdavs://dav.example/team/notes",
            "s3://team-bucket/shared",
            "git+ssh://git@git.example/team/",
        ];
        let roots = tree.roots_and_remotes(&["roots"], &["state"], &entries);
        let local = tree.text("roots/in");
        for remote in [
            "sftp://me@nas.local/shared",
            "sftp://me@nas.local/shared/a/b",
            "sftp://me@NAS.local./shared//a/./b",
            "sftp://me@nas.local:22/shared/a",
            "webdavs://dav.example:443/team/notes/x",
            "webdavs://DAV.example/team/%6Eotes/x",
            "s3://team-bucket/shared/x",
            "git+ssh://git@git.example:22/team/repo.git",
            "git+git@git.example:/team/repo.git",
        ] {
            assert_eq!(roots.check(&local, remote), Ok(()), "{remote}");
        }
        for remote in [
            // Another user, host, port or scheme.
            "sftp://root@nas.local/shared/a",
            "sftp://nas.local/shared/a",
            "sftp://me@nas.local.evil.example/shared/a",
            "sftp://me@nas.local:2222/shared/a",
            "webdav://dav.example/team/notes/x",
            "webdavs://dav.example:8443/team/notes/x",
            "git+https://git.example/team/repo.git",
            "s3://team-bucket2/shared/x",
            // Not on a segment boundary, above the entry, or escaping it.
            "sftp://me@nas.local/shared2",
            "sftp://me@nas.local/",
            "sftp://me@nas.local/shared/../home/me/.ssh",
            "sftp://me@nas.local/shared/%2E%2E/home",
            "webdavs://dav.example/team/notes/%2E%2E/other",
            "webdavs://dav.example/team/notes%2F..%2Fother",
            "webdavs://dav.example/team/notes2",
            "s3://team-bucket/shared2/x",
            "s3://team-bucket/",
            // scp-like without `/` is below the home folder, not /team.
            "git+git@git.example:team/repo.git",
        ] {
            let why = refusal(roots.check(&local, remote));
            assert!(why.contains("api.pair_remotes"), "{remote}: {why}");
        }
        let why = refusal(roots.check(&local, "git+ssh://git@git.example/team/%2e%2e/x"));
        assert!(why.contains("%-escapes"), "{why}");
    }
}
