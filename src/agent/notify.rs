//! The service-manager readiness protocol (`sd_notify`): one datagram with
//! `READY=1` on the socket named by `$NOTIFY_SOCKET` once the agent serves,
//! `STOPPING=1` when a clean stop begins. systemd's `Type=notify` waits for
//! the first before it calls the unit started, so `systemctl --user start`
//! returns only when `prism-syncctl` can already reach the agent.
//!
//! This module only sends; it never decides when. Without `$NOTIFY_SOCKET`
//! (a shell, launchd, a test) every call is a no-op. It does not send
//! `WATCHDOG=1`: the shipped unit sets no `WatchdogSec=`. No dependency is
//! needed: the protocol is a single `sendto` on a Unix datagram socket.

use std::io;

/// The environment variable the service manager sets.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Tells the service manager the agent is ready, with a one-line status
/// that `systemctl status` shows.
pub fn ready(status: &str) {
    send_logged(&format!("READY=1\nSTATUS={status}"));
}

/// Tells the service manager a clean stop has begun.
pub fn stopping() {
    send_logged("STOPPING=1\nSTATUS=stopping");
}

fn send_logged(message: &str) {
    match send(message) {
        Ok(_) => {}
        // The agent keeps running either way: a service manager that never
        // hears READY=1 reports a start time-out, which names the problem.
        Err(e) => tracing::warn!(error = %e, "cannot notify the service manager"),
    }
}

/// Sends `message` to `$NOTIFY_SOCKET`. Returns `Ok(false)` when the
/// variable is unset or empty (nobody is listening), `Ok(true)` when the
/// datagram was sent.
pub fn send(message: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET).filter(|v| !v.is_empty()) else {
        return Ok(false);
    };
    send_to(&target, message)?;
    Ok(true)
}

#[cfg(unix)]
fn send_to(target: &std::ffi::OsStr, message: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;

    let socket = UnixDatagram::unbound()?;
    let bytes = target.as_bytes();
    match bytes.first() {
        // A leading '@' names a socket in Linux's abstract namespace.
        Some(b'@') => send_abstract(&socket, &bytes[1..], message),
        Some(b'/') => socket
            .send_to(message.as_bytes(), std::path::Path::new(target))
            .map(drop),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{NOTIFY_SOCKET}={} is neither an absolute path nor an abstract socket name",
                target.to_string_lossy()
            ),
        )),
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(
    socket: &std::os::unix::net::UnixDatagram,
    name: &[u8],
    message: &str,
) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(message.as_bytes(), &address).map(drop)
}

#[cfg(all(unix, not(target_os = "linux")))]
fn send_abstract(
    _socket: &std::os::unix::net::UnixDatagram,
    _name: &[u8],
    _message: &str,
) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

#[cfg(not(unix))]
fn send_to(_target: &std::ffi::OsStr, _message: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the notify protocol needs Unix sockets",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;

    #[test]
    fn a_datagram_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), "READY=1").unwrap();
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1");
    }

    #[test]
    fn a_datagram_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("prism-sync-notify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        send_to(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"STOPPING=1");
    }

    #[test]
    fn a_relative_name_is_refused() {
        let err = send_to(std::ffi::OsStr::new("relative/sock"), "READY=1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
