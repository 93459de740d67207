//! Where login secrets come from, and the type that keeps them out of logs.
//!
//! For this first version a password comes from an environment variable
//! (`PRISM_SYNC_SFTP_PASSWORD` for SFTP, `PRISM_SYNC_WEBDAV_PASSWORD` for
//! WebDAV: one password for every pair of that kind), else from a
//! credentials file in the config dir (`sftp-passwords`, `webdav-passwords`):
//! one `user@host:port PASSWORD` per line, `#` comments, and readable by its
//! owner only (mode 0600; a file others can read is refused). Passwords are
//! never read from the config file, never written anywhere, and a [`Secret`]
//! prints as `<redacted>`. This module does not talk to a system keyring;
//! that is future work.

use std::fmt;
use std::path::{Path, PathBuf};

/// The environment variable holding an SFTP password.
pub const PASSWORD_ENV: &str = "PRISM_SYNC_SFTP_PASSWORD";

/// The SFTP credentials file's name inside the config dir.
pub const CREDENTIALS_FILE: &str = "sftp-passwords";

/// The environment variable holding a WebDAV password.
pub const WEBDAV_PASSWORD_ENV: &str = "PRISM_SYNC_WEBDAV_PASSWORD";

/// The WebDAV credentials file's name inside the config dir.
pub const WEBDAV_CREDENTIALS_FILE: &str = "webdav-passwords";

/// A secret string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself, to hand to the transport and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A credentials file that cannot be used. The messages name the file,
/// never its content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the credentials file {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the credentials file {file} can be read by other users; restrict it with `chmod 600 {file}`"
    )]
    TooOpen { file: PathBuf },
}

/// The password for `user@host:port`: the environment variable first, then
/// the credentials file in `config_dir` (if given). `None` when neither has
/// one.
pub fn sftp_password(
    config_dir: Option<&Path>,
    user: &str,
    host: &str,
    port: u16,
) -> Result<Option<Secret>, SecretError> {
    password(PASSWORD_ENV, CREDENTIALS_FILE, config_dir, user, host, port)
}

/// The WebDAV password for `user@host:port`, looked up as for SFTP but in
/// [`WEBDAV_PASSWORD_ENV`] and [`WEBDAV_CREDENTIALS_FILE`].
pub fn webdav_password(
    config_dir: Option<&Path>,
    user: &str,
    host: &str,
    port: u16,
) -> Result<Option<Secret>, SecretError> {
    password(
        WEBDAV_PASSWORD_ENV,
        WEBDAV_CREDENTIALS_FILE,
        config_dir,
        user,
        host,
        port,
    )
}

fn password(
    env: &str,
    file_name: &str,
    config_dir: Option<&Path>,
    user: &str,
    host: &str,
    port: u16,
) -> Result<Option<Secret>, SecretError> {
    if let Some(value) = std::env::var_os(env)
        && let Some(value) = value.to_str()
        && !value.is_empty()
    {
        return Ok(Some(Secret::new(value.to_owned())));
    }
    let Some(dir) = config_dir else {
        return Ok(None);
    };
    let file = dir.join(file_name);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SecretError::Read { file, source }),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .map_err(|source| SecretError::Read {
                file: file.clone(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(SecretError::TooOpen { file });
        }
    }
    Ok(find_password(&text, &format!("{user}@{host}:{port}")))
}

/// The password on the line for `target` (`user@host:port`), if any.
fn find_password(text: &str, target: &str) -> Option<Secret> {
    text.lines()
        .map(str::trim_start)
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (who, password) = line.split_once(char::is_whitespace)?;
            (who == target).then(|| Secret::new(password.trim().to_owned()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_itself() {
        let secret = Secret::new("hunter2".into());
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn the_credentials_file_is_matched_by_user_host_and_port_and_must_be_private() {
        let text = "# mine\nme@nas:22 first secret\nme@nas:2222 other\n";
        assert_eq!(
            find_password(text, "me@nas:22").unwrap().expose(),
            "first secret"
        );
        assert_eq!(find_password(text, "you@nas:22"), None);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(CREDENTIALS_FILE);
        std::fs::write(&file, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = find_in(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains("chmod 600") && !err.contains("secret"),
                "{err}"
            );
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        if std::env::var_os(PASSWORD_ENV).is_none() {
            assert_eq!(find_in(dir.path()).unwrap().unwrap().expose(), "other");
        }
    }

    fn find_in(dir: &Path) -> Result<Option<Secret>, SecretError> {
        sftp_password(Some(dir), "me", "nas", 2222)
    }
}
