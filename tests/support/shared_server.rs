//! A server process shared by every test of one test binary, started on
//! first use and stopped when the binary exits.
//!
//! Starting SeaweedFS or moto costs a second or two; the S3 tests share
//! one of each and keep apart by using a prefix (or bucket) of their own.
//! A static is never dropped, so two things stop the process: an `atexit`
//! handler (the test harness ends with `exit`, which runs it) kills it and
//! removes its folder; and, should the binary die without exiting, the
//! kernel kills it through `PR_SET_PDEATHSIG`, set on a thread of its own
//! that lives as long as the binary (the signal follows the thread that
//! started the child, not the process).
//!
//! A harness that starts its servers itself and stops them when dropped
//! (`Sshd`, `Apache`, `Rclone`) is shared the same way through
//! [`drop_at_exit`]: the same handler drops it (without the kernel's
//! safety net should the binary die).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;
use std::sync::mpsc::channel;

/// Children to kill, and folders to remove, at exit.
static TO_STOP: Mutex<Vec<(Child, Option<PathBuf>)>> = Mutex::new(Vec::new());

/// Harnesses that stop their server when dropped, dropped at exit.
static TO_DROP: Mutex<Vec<Box<dyn Send>>> = Mutex::new(Vec::new());

extern "C" fn stop_all() {
    if let Ok(mut harnesses) = TO_DROP.lock() {
        // Dropped one by one, outside the lock's list.
        let harnesses: Vec<_> = harnesses.drain(..).collect();
        drop(harnesses);
    }
    let Ok(mut list) = TO_STOP.lock() else {
        return;
    };
    for (mut child, dir) in list.drain(..) {
        let _ = child.kill();
        let _ = child.wait();
        if let Some(dir) = dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn stop_all_at_exit() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: registers a plain function with the C runtime.
        unsafe {
            libc::atexit(stop_all);
        }
    });
}

/// Keeps `harness` (a server harness that stops its server and removes
/// its folder when dropped, such as `Sshd` or `Apache`) until the binary
/// exits, then drops it. Tests share what they need of it by copying it
/// out first (ports, paths): the harness itself is out of reach.
#[allow(dead_code)] // Not every binary shares a harness of its own.
pub fn drop_at_exit(harness: impl Send + 'static) {
    stop_all_at_exit();
    TO_DROP.lock().unwrap().push(Box::new(harness));
}

/// A process started by [`spawn_for_the_whole_run`].
pub struct SharedChild {
    pub pid: u32,
}

impl SharedChild {
    /// How it ended, if it did.
    pub fn exited(&self) -> Option<ExitStatus> {
        let mut list = TO_STOP.lock().unwrap();
        let (child, _) = list.iter_mut().find(|(c, _)| c.id() == self.pid)?;
        child.try_wait().ok().flatten()
    }
}

/// Spawns `command` from a thread that lives until the binary exits, so
/// the child dies with the binary; `dir` is removed at exit.
pub fn spawn_for_the_whole_run(
    mut command: Command,
    dir: Option<PathBuf>,
) -> std::io::Result<SharedChild> {
    stop_all_at_exit();
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let spawned = command.spawn().map(|child| {
            let pid = child.id();
            TO_STOP.lock().unwrap().push((child, dir));
            SharedChild { pid }
        });
        let _ = tx.send(spawned);
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("the spawning thread answers")
}

/// Every TCP address process `pid` listens on: its socket inodes
/// (/proc/PID/fd) matched with the listening sockets of
/// /proc/PID/net/tcp and tcp6.
pub fn listening(pid: u32) -> Vec<std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path())
            && let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
        {
            inodes.insert(inode.to_owned());
        }
    }
    let mut found = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, state 0A (LISTEN), inode.
            if fields.len() < 10 || fields[3] != "0A" || !inodes.contains(fields[9]) {
                continue;
            }
            let Some((addr, port)) = fields[1].split_once(':') else {
                continue;
            };
            let port = u16::from_str_radix(port, 16).unwrap_or(0);
            let ip = if addr.len() == 8 {
                IpAddr::V4(Ipv4Addr::from(
                    u32::from_str_radix(addr, 16).unwrap_or(0).to_ne_bytes(),
                ))
            } else {
                let mut bytes = [0u8; 16];
                for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                    let word = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).unwrap_or(0);
                    chunk.copy_from_slice(&word.to_ne_bytes());
                }
                IpAddr::V6(Ipv6Addr::from(bytes))
            };
            found.push(SocketAddr::new(ip, port));
        }
    }
    found
}
