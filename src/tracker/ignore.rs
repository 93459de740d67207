//! Which paths of a pair are not synced.
//!
//! This module owns the ignore rules: built-in defaults (editor swap and
//! backup files, OS clutter), the pair's configured patterns and the pair's
//! `.prismignore` file, all in gitignore syntax, plus a few reserved names
//! that no pattern can un-ignore (our metadata folder, root marker and
//! temporary files, whose names `remote::layout` owns: they are re-exported
//! here for the callers that ask about them beside the rules). It does not
//! walk the tree or watch anything; the scanner and watcher ask it about
//! one path at a time.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::model::RelPath;
pub use crate::remote::layout::{
    METADATA_DIR, ROOT_MARKER_FILE, TEMP_PREFIX, is_partial_name, is_temp_name, partial_name_for,
    temp_name_for,
};

/// The per-pair ignore file at the pair root. It is synced like any file so
/// that every device applies the same rules.
pub const PRISMIGNORE_FILE: &str = ".prismignore";

/// Patterns every pair ignores unless its own rules re-include them:
/// editor swap, backup and lock files (vim, emacs, LibreOffice, MS Office),
/// and files the OS scatters into folders. The `#` of emacs autosave files
/// is escaped because gitignore reads a leading `#` as a comment.
const BUILT_IN_PATTERNS: &[&str] = &[
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    ".#*",
    "\\#*#",
    "4913",
    ".~lock.*#",
    "~$*",
    ".DS_Store",
    "Thumbs.db",
];

/// The effective ignore rules of one pair.
#[derive(Debug)]
pub struct IgnoreRules {
    rules: Gitignore,
    fingerprint: String,
}

/// Where an ignore pattern came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternOrigin {
    BuiltIn,
    /// The `ignore` list of the pair in the config file.
    Config,
    /// A line of the pair's `.prismignore` (1-based).
    PrismIgnore {
        path: PathBuf,
        line: usize,
    },
}

/// Why the ignore rules of a pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    #[error(
        "the ignore pattern {pattern:?} from {origin} is not valid ({reason}); fix or remove it"
    )]
    BadPattern {
        pattern: String,
        origin: PatternOrigin,
        reason: String,
    },
    #[error("cannot read the ignore file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("the ignore rules of {root} cannot be compiled ({reason}); simplify the patterns")]
    Build { root: PathBuf, reason: String },
}

impl fmt::Display for PatternOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternOrigin::BuiltIn => f.write_str("the built-in defaults"),
            PatternOrigin::Config => f.write_str("the pair's `ignore` list in the config file"),
            PatternOrigin::PrismIgnore { path, line } => {
                write!(f, "{} line {line}", path.display())
            }
        }
    }
}

impl IgnoreRules {
    /// Builds the rules of the pair rooted at `root`: built-in defaults, then
    /// `config_patterns`, then the root's `.prismignore` if there is one.
    /// Later patterns win, as in a gitignore file, so `!*~` in `.prismignore`
    /// re-includes backup files.
    pub fn load(root: &Path, config_patterns: &[String]) -> Result<IgnoreRules, IgnoreError> {
        let prismignore_path = root.join(PRISMIGNORE_FILE);
        let prismignore = match std::fs::read_to_string(&prismignore_path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(IgnoreError::Read {
                    path: prismignore_path,
                    source,
                });
            }
        };

        let mut sources: Vec<(&str, PatternOrigin)> = Vec::new();
        sources.extend(
            BUILT_IN_PATTERNS
                .iter()
                .map(|p| (*p, PatternOrigin::BuiltIn)),
        );
        sources.extend(
            config_patterns
                .iter()
                .map(|p| (p.as_str(), PatternOrigin::Config)),
        );
        sources.extend(prismignore.lines().enumerate().map(|(idx, line)| {
            let origin = PatternOrigin::PrismIgnore {
                path: prismignore_path.clone(),
                line: idx + 1,
            };
            (line, origin)
        }));

        let mut builder = GitignoreBuilder::new(root);
        let mut canonical = String::from("prism-ignore-v1\n");
        for (pattern, origin) in sources {
            if let Err(err) = builder.add_line(None, pattern) {
                return Err(IgnoreError::BadPattern {
                    pattern: pattern.to_owned(),
                    origin,
                    reason: glob_reason(err),
                });
            }
            // Blank lines and comments change nothing, so they stay out of
            // the fingerprint; anything else is recorded verbatim, which may
            // make the fingerprint change for an edit that is equivalent
            // (harmless: the engine merely re-discovers the pair).
            if !(pattern.trim().is_empty() || pattern.starts_with('#')) {
                canonical.push_str(pattern);
                canonical.push('\n');
            }
        }
        let rules = builder.build().map_err(|err| IgnoreError::Build {
            root: root.to_path_buf(),
            reason: err.to_string(),
        })?;
        let fingerprint = format!("ignore-v1:{}", blake3::hash(canonical.as_bytes()).to_hex());
        Ok(IgnoreRules { rules, fingerprint })
    }

    /// Rules that ignore only what is reserved for us (the metadata
    /// folder, the root marker, temporary files): for a layer that lists
    /// the replica below it by names the pair's patterns do not apply to
    /// (encrypted ones), and applies the pair's rules itself.
    pub fn reserved_only() -> IgnoreRules {
        IgnoreRules {
            rules: Gitignore::empty(),
            fingerprint: "ignore-v1:reserved-only".to_owned(),
        }
    }

    /// True when `path` is not synced: it is reserved for us, matches a
    /// pattern, or lies inside an ignored folder. As in git, a pattern
    /// cannot re-include a path whose folder is ignored, which keeps this
    /// answer equal to "the scanner never sees it".
    pub fn is_ignored(&self, path: &RelPath, is_dir: bool) -> bool {
        if path.as_str() == PRISMIGNORE_FILE {
            return false;
        }
        if is_reserved(path) {
            return true;
        }
        let ancestor_ignored = path
            .ancestors()
            .any(|ancestor| self.rules.matched(ancestor.as_str(), true).is_ignore());
        ancestor_ignored || self.rules.matched(path.as_str(), is_dir).is_ignore()
    }

    /// A stable text that changes whenever the effective rules change, for
    /// the engine to store and compare.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}

/// A git repository's own folder (or, in a worktree or submodule, the
/// file pointing at it).
pub const GIT_DIR_NAME: &str = ".git";

/// Paths no rule can un-ignore: our metadata folder and root marker at the
/// pair root, our temporary files anywhere, and `.git` anywhere. Syncing
/// them would ship one device's bookkeeping (or half-written data) to the
/// others; a `.git` folder is a repository's database, which two devices
/// writing file by file would corrupt (a folder that is a git checkout is
/// synced as its working tree; a git remote carries the history).
fn is_reserved(path: &RelPath) -> bool {
    let text = path.as_str();
    let first = text.split('/').next().unwrap_or(text);
    first == METADATA_DIR
        || text == ROOT_MARKER_FILE
        || text
            .split('/')
            .any(|name| is_temp_name(name) || name == GIT_DIR_NAME)
}

/// The reason part of a glob error, without the crate's own framing.
fn glob_reason(err: ignore::Error) -> String {
    match err {
        ignore::Error::Glob { err, .. } => err,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn rules_with(config: &[&str], prismignore: Option<&str>) -> (tempfile::TempDir, IgnoreRules) {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = prismignore {
            std::fs::write(dir.path().join(PRISMIGNORE_FILE), text).unwrap();
        }
        let config: Vec<String> = config.iter().map(|s| s.to_string()).collect();
        let rules = IgnoreRules::load(dir.path(), &config).unwrap();
        (dir, rules)
    }

    #[test]
    fn built_in_defaults_ignore_editor_and_os_files() {
        let (_dir, rules) = rules_with(&[], None);
        for name in [
            "a.swp",
            "d/.a.txt.swo",
            "a.swx",
            "notes.md~",
            ".#notes.md",
            "#notes.md#",
            "4913",
            ".~lock.report.odt#",
            "~$report.docx",
            ".DS_Store",
            "sub/Thumbs.db",
        ] {
            assert!(
                rules.is_ignored(&rel(name), false),
                "{name} must be ignored"
            );
        }
        for name in ["notes.md", "swp", "a.swp.txt", "49130", "#notes.md"] {
            assert!(
                !rules.is_ignored(&rel(name), false),
                "{name} must be synced"
            );
        }
    }

    #[test]
    fn reserved_names_cannot_be_re_included() {
        let (_dir, rules) = rules_with(&["!.prism-sync", "!.prism-tmp-*"], None);
        assert!(rules.is_ignored(&rel(".prism-sync"), true));
        assert!(rules.is_ignored(&rel(".prism-sync/trash/a.txt"), false));
        assert!(rules.is_ignored(&rel(ROOT_MARKER_FILE), false));
        assert!(rules.is_ignored(&rel("d/.prism-tmp-abc-notes.md"), false));
        // A repository's own folder, at any depth, whatever the rules say.
        let (_dir, with_git) = rules_with(&["!.git", "!.git/**"], None);
        assert!(with_git.is_ignored(&rel(".git"), true));
        assert!(with_git.is_ignored(&rel(".git/config"), false));
        assert!(with_git.is_ignored(&rel("code/lib/.git"), false));
        assert!(!with_git.is_ignored(&rel(".gitignore"), false));
        assert!(!with_git.is_ignored(&rel("code/.github/ci.yml"), false));
        // Only the root's metadata folder and marker are ours.
        assert!(!rules.is_ignored(&rel("d/.prism-sync"), true));
        assert!(!rules.is_ignored(&rel("d/.prism-sync-root"), false));
    }

    #[test]
    fn prismignore_is_synced_even_when_a_pattern_matches_it() {
        let (_dir, rules) = rules_with(&[".*"], Some(".*\n"));
        assert!(!rules.is_ignored(&rel(PRISMIGNORE_FILE), false));
        assert!(rules.is_ignored(&rel(".hidden"), false));
    }

    #[test]
    fn config_and_prismignore_patterns_apply_in_order() {
        let (_dir, rules) = rules_with(
            &["*.log", "build/"],
            Some("# comment\n\n!keep.log\n/top-only.txt\ncache\n"),
        );
        assert!(rules.is_ignored(&rel("x.log"), false));
        assert!(!rules.is_ignored(&rel("keep.log"), false));
        assert!(rules.is_ignored(&rel("top-only.txt"), false));
        assert!(!rules.is_ignored(&rel("d/top-only.txt"), false));
        assert!(rules.is_ignored(&rel("build"), true));
        // `build/` names folders only.
        assert!(!rules.is_ignored(&rel("build"), false));
        assert!(rules.is_ignored(&rel("a/cache"), true));
    }

    #[test]
    fn paths_inside_an_ignored_folder_are_ignored_even_if_re_included() {
        let (_dir, rules) = rules_with(&["build/", "!build/keep.txt", "a"], None);
        assert!(rules.is_ignored(&rel("build/out/x.o"), false));
        assert!(rules.is_ignored(&rel("build/keep.txt"), false));
        assert!(rules.is_ignored(&rel("src/build/x.o"), false));
        // `a` names a component, not a prefix.
        assert!(rules.is_ignored(&rel("a/b"), false));
        assert!(!rules.is_ignored(&rel("ab"), false));
        assert!(!rules.is_ignored(&rel("ab/c"), false));
    }

    #[test]
    fn a_bad_pattern_names_the_pattern_and_its_origin() {
        let dir = tempfile::tempdir().unwrap();
        let err = IgnoreRules::load(dir.path(), &["{a,b".to_string()]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("{a,b"), "{message}");
        assert!(message.contains("config file"), "{message}");

        std::fs::write(dir.path().join(PRISMIGNORE_FILE), "ok\n[z-a]\n").unwrap();
        let err = IgnoreRules::load(dir.path(), &[]).unwrap_err();
        assert!(
            matches!(
                &err,
                IgnoreError::BadPattern {
                    origin: PatternOrigin::PrismIgnore { line: 2, .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains(".prismignore line 2"), "{err}");
    }

    #[test]
    fn fingerprint_changes_with_rules_but_not_with_comments() {
        let (_d1, plain) = rules_with(&["*.log"], None);
        let (_d2, same) = rules_with(&["*.log"], Some("# only a comment\n\n"));
        let (_d3, more) = rules_with(&["*.log"], Some("*.tmp\n"));
        let (_d4, other_config) = rules_with(&["*.txt"], None);
        assert_eq!(plain.fingerprint(), same.fingerprint());
        assert_ne!(plain.fingerprint(), more.fingerprint());
        assert_ne!(plain.fingerprint(), other_config.fingerprint());
    }

    #[test]
    fn partial_names_are_reserved_anywhere() {
        let name = partial_name_for("big.bin", &"ab".repeat(32));
        assert!(is_reserved(&RelPath::new(&format!("d/{name}")).unwrap()));
    }
}
