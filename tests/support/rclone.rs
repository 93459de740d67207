//! A real `rclone serve webdav` for the WebDAV tests: a second server, one
//! that ignores conditional headers (`If-None-Match`, `If-Match`), so the
//! remote's fallbacks for such servers run against the real thing.
//!
//! It runs two rclone processes on free loopback ports, each serving a
//! folder of its own from a temporary directory: the open share without a
//! login and the auth share behind Basic auth for [`Apache::USER`] with
//! [`Apache::PASSWORD`] (rclone's `--user`/`--pass`), so the tests written
//! for Apache's two shares run unchanged. The directory cache is turned off
//! (`--dir-cache-time 0s`) so files a test writes into a served folder
//! directly are listed at once. A missing rclone fails the test with a
//! message saying what to install; it never skips. Both processes are
//! killed when the harness is dropped. It does not offer HTTPS.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::apache::{Apache, Share};
use crate::ports::free_port;
use crate::server::Dav;

/// Two running `rclone serve webdav` processes and their folders.
pub struct Rclone {
    dir: tempfile::TempDir,
    open_port: u16,
    auth_port: u16,
    children: Vec<Child>,
}

impl Rclone {
    /// Starts both servers and waits until they accept.
    pub fn start() -> Rclone {
        let dir = tempfile::tempdir().expect("a temp dir for rclone");
        let mut rclone = Rclone {
            dir,
            open_port: free_port(),
            auth_port: free_port(),
            children: Vec::new(),
        };
        for share in [Share::Open, Share::Auth] {
            fs::create_dir_all(rclone.served(share)).unwrap();
            let port = rclone.port(share);
            let mut command = Command::new("rclone");
            command
                .args(["serve", "webdav"])
                .arg(rclone.served(share))
                .arg("--addr")
                .arg(format!("127.0.0.1:{port}"))
                .args(["--dir-cache-time", "0s", "--config", "/dev/null"]);
            if share == Share::Auth {
                command.args(["--user", Apache::USER, "--pass", Apache::PASSWORD]);
            }
            let log = fs::File::create(rclone.dir.path().join(format!("{share:?}.log"))).unwrap();
            let child = command
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start rclone ({e}): install the rclone package \
                         (apt-get install rclone) to run the WebDAV tests against it"
                    )
                });
            rclone.children.push(child);
            rclone.wait_for(port);
        }
        rclone
    }

    fn wait_for(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let child = self.children.last_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "rclone exited with {status} before accepting:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "rclone did not accept on port {port} within 10 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn port(&self, share: Share) -> u16 {
        match share {
            Share::Open => self.open_port,
            Share::Auth => self.auth_port,
        }
    }
}

impl Dav for Rclone {
    fn url(&self, share: Share, below: &str) -> String {
        format!("webdav://127.0.0.1:{}/{below}", self.port(share))
    }

    fn served(&self, share: Share) -> PathBuf {
        self.dir.path().join(format!("{share:?}").to_lowercase())
    }

    fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join("scratch").join(name);
        fs::create_dir_all(&path).unwrap();
        path
    }

    fn hand_over(&self, _path: &Path) {
        // rclone runs as the test's own user: nothing to hand over.
    }

    fn log(&self) -> String {
        [Share::Open, Share::Auth]
            .iter()
            .map(|share| {
                fs::read_to_string(self.dir.path().join(format!("{share:?}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn open_target(&self, below: &str) -> (u16, String) {
        (self.open_port, format!("/{below}"))
    }
}

impl Drop for Rclone {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
