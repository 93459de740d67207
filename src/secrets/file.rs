//! The credentials files: `sftp-passwords` and `webdav-passwords` in the
//! config dir, one `user@host:port PASSWORD` line per account, `#`
//! comments. Used where no secret store is reachable.
//!
//! A file others can read is refused rather than used, so a password never
//! sits readable by others without the user hearing about it. Writes build
//! the whole new file under a temporary name created with mode 0600 from
//! the start (never a wider mode for an instant, whatever the umask), flush
//! it, and rename it over the old one, so a crash leaves the old file or
//! the new one, never half of either.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Secret, SecretError};

/// The password on `file`'s line for `who` (`user@host:port`). `None` when
/// the file or the line does not exist.
pub fn read(file: &Path, who: &str) -> Result<Option<Secret>, SecretError> {
    let Some(text) = read_private(file)? else {
        return Ok(None);
    };
    Ok(find_password(&text, who))
}

/// Puts `who`'s line in `file` (replacing an older one, keeping every other
/// line and comment), creating the file and its folder if needed.
pub fn write(file: &Path, who: &str, secret: &Secret) -> Result<(), SecretError> {
    let old = read_for_rewrite(file)?;
    let mut lines = without(&old, who);
    lines.push(format!("{who} {}", secret.expose()));
    replace(file, &lines)
}

/// Removes `who`'s line from `file`; `false` when it had none.
pub fn remove(file: &Path, who: &str) -> Result<bool, SecretError> {
    let old = read_for_rewrite(file)?;
    if find_password(&old, who).is_none() {
        return Ok(false);
    }
    replace(file, &without(&old, who))?;
    Ok(true)
}

/// The file's text, checked to be private; `None` when it does not exist.
fn read_private(file: &Path) -> Result<Option<String>, SecretError> {
    let read_error = |source| SecretError::Read {
        file: file.to_path_buf(),
        source,
    };
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(read_error(source)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file)
            .map_err(read_error)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(SecretError::TooOpen {
                file: file.to_path_buf(),
            });
        }
    }
    Ok(Some(text))
}

/// The current text for a rewrite. A file others can read is rewritten
/// too: the rewrite makes it private, which is the fix the read side asks
/// for.
fn read_for_rewrite(file: &Path) -> Result<String, SecretError> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(SecretError::Read {
            file: file.to_path_buf(),
            source,
        }),
    }
}

/// Every line of `text` except `who`'s.
fn without(text: &str, who: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line_account(line) != Some(who))
        .map(str::to_owned)
        .collect()
}

/// The account a non-comment line is for.
fn line_account(line: &str) -> Option<&str> {
    let line = line.trim_start();
    if line.starts_with('#') {
        return None;
    }
    line.split_once(char::is_whitespace).map(|(who, _)| who)
}

/// The password on the line for `who` (`user@host:port`), if any.
pub(super) fn find_password(text: &str, who: &str) -> Option<Secret> {
    text.lines().find_map(|line| {
        let line = line.trim_start();
        let (account, password) = line.split_once(char::is_whitespace)?;
        (!line.starts_with('#') && account == who).then(|| Secret::new(password.trim().to_owned()))
    })
}

fn replace(file: &Path, lines: &[String]) -> Result<(), SecretError> {
    let write_error = |source| SecretError::Write {
        file: file.to_path_buf(),
        source,
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(write_error)?;
    let temp = temp_name(file);
    let result = (|| {
        let mut out = create_private(&temp)?;
        for line in lines {
            writeln!(out, "{line}")?;
        }
        out.sync_all()?;
        drop(out);
        std::fs::rename(&temp, file)?;
        // The rename is durable only once the folder is flushed.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(write_error)
}

/// A new file that only its owner may read or write, from its creation on.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn temp_name(file: &Path) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.with_file_name(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn lines_are_matched_by_user_host_and_port() {
        let text = "# mine\nme@nas:22 first secret\nme@nas:2222 other\n";
        assert_eq!(
            find_password(text, "me@nas:22").unwrap().expose(),
            "first secret"
        );
        assert_eq!(find_password(text, "you@nas:22"), None);
        assert_eq!(find_password("# me@nas:22 commented\n", "me@nas:22"), None);
    }

    #[test]
    fn writes_replace_one_line_keep_the_rest_and_leave_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub").join("webdav-passwords");
        write(&file, "me@nas:80", &Secret::new("one".into())).unwrap();
        #[cfg(unix)]
        assert_eq!(mode(&file), 0o600);
        std::fs::write(&file, "# keep me\nme@nas:80 one\nyou@nas:80 yours\n").unwrap();
        write(&file, "me@nas:80", &Secret::new("two".into())).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text, "# keep me\nyou@nas:80 yours\nme@nas:80 two\n");
        assert_eq!(read(&file, "me@nas:80").unwrap().unwrap().expose(), "two");

        assert!(remove(&file, "me@nas:80").unwrap());
        assert!(!remove(&file, "me@nas:80").unwrap());
        assert_eq!(read(&file, "me@nas:80").unwrap(), None);
        assert_eq!(
            read(&file, "you@nas:80").unwrap().unwrap().expose(),
            "yours"
        );
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_refused_and_a_write_makes_it_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sftp-passwords");
        std::fs::write(&file, "me@nas:22 s3cr3t-value\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read(&file, "me@nas:22").unwrap_err().to_string();
        assert!(
            err.contains("chmod 600") && !err.contains("s3cr3t"),
            "{err}"
        );
        write(&file, "me@nas:22", &Secret::new("new".into())).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(read(&file, "me@nas:22").unwrap().unwrap().expose(), "new");
    }
}
