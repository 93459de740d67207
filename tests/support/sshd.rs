//! A real OpenSSH server for the SFTP tests: `/usr/sbin/sshd -D -e -f CONFIG`
//! on a free loopback port, with its own config, host key, client key and
//! authorized key in a temporary folder, and a folder it serves.
//!
//! The server runs as the user running the tests (root in CI), serves SFTP
//! through `internal-sftp`, and accepts the harness's key for that user and
//! passwords (so a wrong password can be refused for real). No system file
//! is changed: no test user is created and no password is set, so the
//! password tests only ever present a password that must fail. A missing
//! sshd fails the test with a message saying what to install; it never
//! skips. The server is killed when the harness is dropped.

use std::fs;
use std::io::Read;
use std::net::TcpStream;

use crate::ports::free_port;
use crate::processes::descendants;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";
/// OpenSSH's SFTP server as a program of its own, which can log each
/// request it answers (`internal-sftp` logs only through sshd's syslog).
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// One running sshd and everything it needs.
pub struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// The user the server lets in with `client_key` (the test's own user).
    pub user: String,
    /// Whether each SFTP request is logged to `requests.log`.
    log_requests: bool,
    /// How many channels one SSH connection may open.
    max_sessions: u32,
}

impl Sshd {
    /// Starts a server on a free loopback port and waits until it accepts.
    pub fn start() -> Sshd {
        Sshd::start_with(false, 64)
    }

    /// Starts a server that lets each SSH connection open one channel
    /// only (`MaxSessions 1`), as some hosting providers configure theirs.
    pub fn start_one_channel_per_connection() -> Sshd {
        Sshd::start_with(false, 1)
    }

    /// Starts a server that logs every SFTP request it answers (see
    /// [`Sshd::requests`]), through OpenSSH's `sftp-server` program.
    pub fn start_logging_requests() -> Sshd {
        assert!(
            Path::new(SFTP_SERVER).exists(),
            "{SFTP_SERVER} is missing: install the openssh-sftp-server package"
        );
        Sshd::start_with(true, 64)
    }

    fn start_with(log_requests: bool, max_sessions: u32) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install the openssh-server package (apt-get install openssh-server) to run the SFTP tests"
        );
        let dir = tempfile::tempdir().expect("a temp dir for sshd");
        let root = dir.path();
        fs::create_dir_all(root.join("served")).unwrap();
        keygen(&root.join("host_key"));
        keygen(&root.join("client_key"));
        fs::copy(root.join("client_key.pub"), root.join("authorized_keys")).unwrap();
        if is_root() {
            // sshd refuses to start without its privilege-separation folder.
            fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        }
        let user = current_user();
        let mut sshd = Sshd {
            dir,
            port: 0,
            child: None,
            user,
            log_requests,
            max_sessions,
        };
        sshd.port = free_port();
        sshd.write_config();
        sshd.restart();
        sshd
    }

    fn write_config(&self) {
        let root = self.dir.path();
        // The subsystem runs through the user's shell, which sends the
        // server's log (`-e`: to its stderr) to a file of the harness.
        let subsystem = if self.log_requests {
            format!(
                "{SFTP_SERVER} -e -l DEBUG3 2>>{}",
                root.join("requests.log").display()
            )
        } else {
            "internal-sftp".to_owned()
        };
        let config = format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {root}/host_key\n\
             PidFile {root}/sshd.pid\n\
             AuthorizedKeysFile {root}/authorized_keys\n\
             Subsystem sftp {subsystem}\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin yes\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\n\
             MaxStartups 64\n\
             MaxSessions {max_sessions}\n\
             LogLevel VERBOSE\n",
            port = self.port,
            root = root.display(),
            max_sessions = self.max_sessions,
        );
        fs::write(root.join("sshd_config"), config).unwrap();
    }

    /// Starts the server (again, after [`Sshd::stop`]) on the same port
    /// with the same keys, and waits until the port accepts.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "sshd is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sshd.log"))
            .unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(self.dir.path().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // sshd's banner, not just a connection: a connect to a port
            // nothing listens on can succeed on its own (a TCP
            // self-connect from the same ephemeral port), which would
            // hide an sshd that failed to bind.
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::Read;
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut banner = [0u8; 4];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "sshd exited with {status} before accepting:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not accept on port {} within 10 s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server and every connection it serves, as a crashed or
    /// rebooted server would: clients see their connections drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The per-connection processes call setsid(), so they are not in
            // the listener's process group: find them as its descendants.
            // The tree is frozen before it is killed: a stopped process
            // cannot fork, so a connection accepted while we look cannot
            // outlive the kill as an orphan (a client would then go on
            // syncing through a server that is "stopped").
            let listener = child.id() as i32;
            // SAFETY: kill(2) of the listener this harness started.
            unsafe {
                libc::kill(listener, libc::SIGSTOP);
            }
            let mut frozen: Vec<i32> = vec![listener];
            loop {
                let found: Vec<i32> = descendants(listener)
                    .into_iter()
                    .filter(|pid| !frozen.contains(pid))
                    .collect();
                if found.is_empty() {
                    break;
                }
                for &pid in &found {
                    // SAFETY: kill(2) of a process this harness started
                    // (the listener or one of its descendants).
                    unsafe {
                        libc::kill(pid, libc::SIGSTOP);
                    }
                }
                frozen.extend(found);
            }
            for pid in frozen {
                // SAFETY: as above.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            let _ = child.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder the tests sync with (an absolute path on the server).
    pub fn served(&self) -> PathBuf {
        self.dir.path().join("served")
    }

    /// The private key the server accepts for [`Sshd::user`].
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// The server's public host key line (`ssh-ed25519 AAAA…`).
    pub fn host_key_line(&self) -> String {
        let text = fs::read_to_string(self.dir.path().join("host_key.pub")).unwrap();
        let mut fields = text.split_whitespace();
        format!("{} {}", fields.next().unwrap(), fields.next().unwrap())
    }

    /// The server's SHA256 host-key fingerprint as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.path().join("host_key.pub"))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.split_whitespace().nth(1).unwrap().to_owned()
    }

    /// Writes a known_hosts file trusting this server at `path`.
    pub fn write_known_hosts(&self, path: &Path) {
        let line = format!("[127.0.0.1]:{} {}\n", self.port, self.host_key_line());
        fs::write(path, line).unwrap();
    }

    /// The `sftp://` URL of `path` below the served folder.
    pub fn url(&self, below: &str) -> String {
        let path = self.served().join(below);
        format!(
            "sftp://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            path.display()
        )
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(self.dir.path().join("sshd.log")) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// The SFTP requests the server answered so far, in the order it
    /// logged them, each by its name (`open`, `lstat`, `rename`, ...);
    /// only for a server from [`Sshd::start_logging_requests`].
    pub fn requests(&self) -> Vec<String> {
        assert!(self.log_requests, "this server does not log its requests");
        let text = fs::read_to_string(self.dir.path().join("requests.log")).unwrap_or_default();
        // `debugN: request ID: NAME ...`, and `request ID: sent ...` for
        // the answer, which is not counted.
        text.lines()
            .filter_map(|line| line.split_once(": request ")?.1.split_once(": "))
            .map(|(_, what)| what.split_whitespace().next().unwrap_or_default())
            .filter(|name| *name != "sent")
            .map(str::to_owned)
            .collect()
    }

    /// A folder for the test's own files (known_hosts, configs).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::create_dir_all(&path).unwrap();
        path
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "prism-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen is missing: install the openssh-client package");
    assert!(status.success(), "ssh-keygen failed");
}

fn is_root() -> bool {
    current_uid() == 0
}

fn current_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
