//! Where an `rclone rcd` listens, chosen anew for every start from the
//! version of the binary that is about to run (the user may have
//! upgraded rclone since the last start).
//!
//! rclone 1.61 moved its remote control onto `lib/http`, which listens on
//! a Unix socket when the address is `unix:///PATH` (with `--rc-serve`
//! reads through it too). There the rcd gets a socket in a fresh 0700
//! folder of ours, which keeps every other user out whatever rclone does
//! with the login (1.61 to 1.68 skip it on Unix sockets; the random login
//! is still handed over, in depth). An older rclone (Debian bookworm's
//! 1.60.1) listens on a free port of 127.0.0.1 behind its random login.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::remote::socket_dir::SocketDir;

/// The first rclone whose rcd listens on a Unix socket.
pub const UNIX_SOCKET_SINCE: (u64, u64) = (1, 61);

/// How long `rclone version` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The rcd's socket in its folder.
const SOCKET_NAME: &str = "rc.sock";

/// The version a binary reports with `rclone version`: `v1.75.2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryVersion {
    pub text: String,
    /// `None` where the text has no `MAJOR.MINOR` (a private build).
    pub numbers: Option<(u64, u64)>,
}

impl BinaryVersion {
    /// The first line of `rclone version`'s output: `rclone v1.60.1-DEV`.
    pub fn parse(output: &str) -> BinaryVersion {
        let line = output.lines().next().unwrap_or("").trim();
        let text = line
            .strip_prefix("rclone ")
            .unwrap_or(line)
            .trim()
            .to_owned();
        let mut parts = text.trim_start_matches('v').split(['.', '-']);
        let mut number = || parts.next().and_then(|p| p.parse::<u64>().ok());
        let numbers = number().zip(number());
        BinaryVersion { text, numbers }
    }

    /// Whether its rcd can listen on a Unix socket. A build that does
    /// not say its numbers keeps to TCP, which every rclone offers.
    pub fn offers_unix_socket(&self) -> bool {
        self.numbers.is_some_and(|n| n >= UNIX_SOCKET_SINCE)
    }
}

/// Runs `binary version`; `Err(NotFound)` where there is no such binary.
pub fn probe_version(binary: &Path) -> std::io::Result<BinaryVersion> {
    let mut child = Command::new(binary)
        .arg("version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "`rclone version` did not answer within {} s",
                    PROBE_TIMEOUT.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut output)?;
    }
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "`rclone version` failed ({status})"
        )));
    }
    Ok(BinaryVersion::parse(&output))
}

/// The rcd's socket, in a fresh private folder of ours (see
/// [`SocketDir`]) removed when dropped, that is when the rcd stopped.
#[derive(Debug)]
pub struct RcdSocket {
    /// Held for its removal on drop.
    _dir: SocketDir,
    socket: PathBuf,
}

impl RcdSocket {
    /// `None` where no folder can hold a socket path short enough for the
    /// kernel (TCP is used then).
    pub fn create() -> std::io::Result<Option<RcdSocket>> {
        let dir = SocketDir::create("rcd", SOCKET_NAME.len())?;
        Ok(dir.map(|dir| RcdSocket {
            socket: dir.path().join(SOCKET_NAME),
            _dir: dir,
        }))
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// rclone's address for it.
    pub fn rc_addr(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Whether the rcd accepts connections on it yet.
    pub fn accepts(&self) -> bool {
        std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_rclone_version_and_decide_the_socket() {
        let v = BinaryVersion::parse("rclone v1.60.1-DEV\n- os/version: debian 12.11\n");
        assert_eq!(v.text, "v1.60.1-DEV");
        assert_eq!(v.numbers, Some((1, 60)));
        assert!(!v.offers_unix_socket());
        let v = BinaryVersion::parse("rclone v1.75.2\n- os/version: debian 12.11\n");
        assert_eq!(v.numbers, Some((1, 75)));
        assert!(v.offers_unix_socket());
        assert!(BinaryVersion::parse("rclone v1.61.0\n").offers_unix_socket());
        assert!(BinaryVersion::parse("rclone v2.0.0\n").offers_unix_socket());
        let private = BinaryVersion::parse("rclone private-build\n");
        assert_eq!(private.numbers, None);
        assert!(!private.offers_unix_socket());
    }
}
