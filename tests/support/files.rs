//! Reading and writing the trees the daemon-level SFTP and WebDAV tests
//! compare, and showing a finished command's output on failure.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Output;

/// A finished command's exit code and output, for failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file below `root` (outside our metadata) and its content.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.starts_with(".prism-sync") {
                continue;
            }
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                out.insert(rel, fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    out
}

pub fn put(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// Puts copies of the journal's files (the database and what SQLite keeps
/// beside it) found in `from` into `to`, in place of those there: a backup
/// of a stopped agent's journal, or its restore.
pub fn copy_journal(from: &Path, to: &Path) {
    let journal_files = |dir: &Path| -> Vec<std::path::PathBuf> {
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("journal.db"))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    fs::create_dir_all(to).unwrap();
    for old in journal_files(to) {
        fs::remove_file(old).unwrap();
    }
    for file in journal_files(from) {
        fs::copy(&file, to.join(file.file_name().unwrap())).unwrap();
    }
}

/// The contents of every file below `dir` (a trash, say), sorted.
pub fn contents_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                out.push(fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    out.sort();
    out
}
