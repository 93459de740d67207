//! The real `prism-syncd` daemon (not `--once`) on an SFTP pair while the
//! server fails: sshd killed in the middle of an upload, and in the middle
//! of a download (which the retry continues instead of starting over). Status must say
//! `offline` and that it is retrying, the agent must back off instead of
//! spinning, and once sshd is back the pair must converge with nothing lost
//! and no partial upload under a real name. Also a served folder that
//! refuses writes and a served folder on a full disk: per-path problems in
//! status while the rest syncs; and a pair with compression and two
//! parallel transfers, which must use two compressed SSH sessions.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sshd::Sshd;

/// How long a test waits for something the agent should do on its own.
const PATIENCE: Duration = Duration::from_secs(90);

/// One device running the daemon against the harness's sshd.
pub struct Daemon {
    pub home: PathBuf,
    pub local: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Daemon {
    /// Writes a config for one pair (`below` the served folder) and starts
    /// `prism-syncd`, waiting until it answers `status`.
    pub fn start(server: &Sshd, name: &str, below: &str) -> Daemon {
        Daemon::start_with(server, name, below, "", "")
    }

    /// As [`Daemon::start`], with more lines for the `[agent]` table and
    /// the pair.
    pub fn start_with(
        server: &Sshd,
        name: &str,
        below: &str,
        agent_lines: &str,
        pair_lines: &str,
    ) -> Daemon {
        let home = server.scratch(name);
        let local = home.join("local");
        fs::create_dir_all(&local).unwrap();
        let known_hosts = home.join("known_hosts");
        server.write_known_hosts(&known_hosts);
        let config = home.join("config.toml");
        fs::write(
            &config,
            format!(
                "[agent]\ndevice = \"{name}\"\nremote_poll_secs = 1\ndebounce_ms = 100\n{agent_lines}\
                 [[pair]]\nname = \"p\"\nlocal = \"{}\"\nremote = \"{}\"\nknown_hosts = \"{}\"\n\
                 identity_file = \"{}\"\n{pair_lines}",
                local.display(),
                server.url(below),
                known_hosts.display(),
                server.client_key().display(),
            ),
        )
        .unwrap();
        let socket = home.join("s.sock");
        let log = home.join("agent.log");
        let log_file = fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_prism-syncd"))
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(home.join("state"))
            .arg("--socket")
            .arg(&socket)
            .arg("--device")
            .arg(name)
            .env("HOME", &home)
            // The SFTP replica logs each session it opens at debug level.
            .env("RUST_LOG", "info,prism_sync::remote::sftp=debug")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("PRISM_SYNC_SFTP_PASSWORD")
            .env_remove("PRISM_SYNC_CONFIG")
            .env_remove("PRISM_SYNC_STATE_DIR")
            .env_remove("PRISM_SYNC_SOCKET")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start prism-syncd");
        let daemon = Daemon {
            home,
            local,
            socket,
            log,
            child,
        };
        wait_until(
            "the agent answers `status`",
            || daemon.ctl(&["--json", "status"]).status.success(),
            &daemon,
        );
        daemon
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_prism-syncctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("PRISM_SYNC_SOCKET")
            .output()
            .expect("run prism-syncctl")
    }

    /// The pair's entry of `prism-syncctl --json status`.
    pub fn pair_status(&self) -> Value {
        let out = self.ctl(&["--json", "status"]);
        assert!(
            out.status.success(),
            "status failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        let value: Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
        value["pairs"][0].clone()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 50 ms until it holds, or fails after [`PATIENCE`]
/// with the agent's log.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool, daemon: &Daemon) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}\n--- agent log ---\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `size` bytes of varied (not all-zero) content.
pub fn write_big(path: &Path, size: usize) {
    let mut file = fs::File::create(path).unwrap();
    let mut block = vec![0u8; 1 << 20];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..size / block.len() {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        file.write_all(&block).unwrap();
    }
    file.sync_all().unwrap();
}

fn hash(path: &Path) -> Option<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut file = fs::File::open(path).ok()?;
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some(hasher.finalize())
}

/// Names in `dir` starting with `.prism-tmp-`, with their sizes.
fn temps(dir: &Path) -> Vec<(String, u64)> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let size = e.metadata().ok()?.len();
            name.starts_with(".prism-tmp-").then_some((name, size))
        })
        .collect()
}

/// Starts the agent on the server's folder `pair` and waits until its
/// first sync brought `first`, a file already on the server, down.
fn start_synced(server: &Sshd, first: &str) -> Daemon {
    let daemon = Daemon::start(server, "laptop", "pair");
    wait_until(
        "the first sync brings the server's files down",
        || daemon.local.join(first).exists(),
        &daemon,
    );
    daemon
}

/// Writes `size` bytes at `staging` and moves them to `target` (on the
/// same file system), so a watcher or a poll sees the file whole at once;
/// returns its hash.
fn move_in_big(staging: &Path, target: &Path, size: usize) -> blake3::Hash {
    write_big(staging, size);
    let expected = hash(staging).unwrap();
    fs::rename(staging, target).unwrap();
    expected
}

#[test]
fn sshd_killed_mid_upload_shows_offline_backs_off_and_converges_when_it_is_back() {
    const SIZE: usize = 128 << 20;
    let mut server = Sshd::start();
    let served = server.served().join("pair");
    fs::create_dir_all(&served).unwrap();
    fs::write(served.join("small-from-server.txt"), "server\n").unwrap();
    let daemon = start_synced(&server, "small-from-server.txt");
    let expected = move_in_big(
        &daemon.home.join("big.bin"),
        &daemon.local.join("big.bin"),
        SIZE,
    );

    // Kill sshd as soon as the upload has started and is not finished.
    let deadline = Instant::now() + PATIENCE;
    let started_at = loop {
        let partial = temps(&served)
            .into_iter()
            .find(|(name, size)| name.ends_with("big.bin") && *size > 0);
        if let Some((_, size)) = partial {
            break size;
        }
        assert!(
            Instant::now() < deadline,
            "the upload never started\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    server.stop();
    let stopped = Instant::now();
    assert!((started_at as usize) < SIZE, "sshd was stopped mid-upload");
    assert!(
        !served.join("big.bin").exists(),
        "the upload was cut off before it finished: {:?}",
        temps(&served)
    );

    wait_until(
        "status says offline",
        || daemon.pair_status()["state"] == "offline",
        &daemon,
    );
    let status = daemon.pair_status();
    let detail = status["state_detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.starts_with("offline, retrying in ") && detail.contains("cannot be reached"),
        "{status:#}"
    );
    let human = String::from_utf8_lossy(&daemon.ctl(&["status"]).stdout).into_owned();
    assert!(human.contains("offline"), "{human}");

    // While the server is away the agent backs off: in 8 s it tries at
    // most at 2, 2+4 s (and maybe once more on the edge), not in a loop.
    std::thread::sleep(Duration::from_secs(8).saturating_sub(stopped.elapsed()));
    let attempts = daemon.log_text().matches("the remote is offline").count();
    assert!(
        (1..=4).contains(&attempts),
        "{attempts} offline attempts in 8 s\n{}",
        daemon.log_text()
    );
    let status = daemon.pair_status();
    assert_eq!(status["state"], "offline", "{status:#}");
    // The cut upload is not blamed on the file: no per-path back-off.
    assert!(
        !problems(&status).iter().any(|(path, _)| path == "big.bin"),
        "{status:#}"
    );
    assert!(!served.join("big.bin").exists());

    server.restart();
    wait_until(
        "the big file is on the server with its content",
        || hash(&served.join("big.bin")) == Some(expected),
        &daemon,
    );
    wait_until(
        "status is idle again",
        || {
            let status = daemon.pair_status();
            status["state"] == "idle" && status["state_detail"] == ""
        },
        &daemon,
    );
    assert_eq!(hash(&daemon.local.join("big.bin")), Some(expected));
    assert_eq!(
        fs::read_to_string(daemon.local.join("small-from-server.txt")).unwrap(),
        "server\n"
    );
    // The killed upload may leave its temporary file (it is aged out
    // later and never listed), but never under the real name: the real
    // name holds the whole file, checked above by hash.
    for (name, size) in temps(&served) {
        assert!(name.starts_with(".prism-tmp-"), "{name}");
        assert!(size < SIZE as u64 + 1, "{name} {size}");
    }
    // Every failed run was an offline one: coming back needs no extra
    // failing run (such as being locked out by its own old lease).
    let log = daemon.log_text();
    assert_eq!(
        log.matches("status=\"failed\"").count(),
        log.matches("the remote is offline").count(),
        "{log}"
    );
    assert!(log.contains("trigger=retry"), "{log}");
}

#[test]
fn sshd_killed_mid_download_keeps_the_partial_and_the_retry_continues_it() {
    const SIZE: usize = 128 << 20;
    let mut server = Sshd::start();
    let served = server.served().join("pair");
    fs::create_dir_all(&served).unwrap();
    fs::write(served.join("small.txt"), "server\n").unwrap();
    let daemon = start_synced(&server, "small.txt");

    // Written beside the served folder and moved in, so the agent's poll
    // sees it whole.
    let expected = move_in_big(
        &server.scratch("staging").join("big.bin"),
        &served.join("big.bin"),
        SIZE,
    );

    // Kill sshd once the download has started and is not finished.
    let deadline = Instant::now() + PATIENCE;
    let partial = || {
        temps(&daemon.local)
            .into_iter()
            .find(|(name, size)| name.starts_with(".prism-tmp-part-") && *size > 0)
    };
    let (name, _) = loop {
        if let Some(found) = partial() {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the download never started\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    server.stop();
    wait_until(
        "status says offline",
        || daemon.pair_status()["state"] == "offline",
        &daemon,
    );
    assert!(!daemon.local.join("big.bin").exists());
    let (kept_name, kept) = partial().expect("the partial download is kept while offline");
    assert_eq!(kept_name, name);
    assert!((kept as usize) < SIZE, "sshd was stopped mid-download");

    server.restart();
    wait_until(
        "the big file arrives with its content",
        || hash(&daemon.local.join("big.bin")) == Some(expected),
        &daemon,
    );
    // The retry read only what was missing: it continued the partial at
    // the offset it had reached.
    let log = daemon.log_text();
    assert!(
        log.contains(&format!("resuming download of big.bin at {kept} bytes")),
        "{log}"
    );
    assert!(
        partial().is_none() && temps(&daemon.local).is_empty(),
        "{:?}",
        temps(&daemon.local)
    );
    assert_eq!(
        fs::read_to_string(daemon.local.join("small.txt")).unwrap(),
        "server\n"
    );
}

/// Makes a folder on the served side refuse writes for as long as it
/// lives. sshd runs as the test's user, root in CI, and root ignores
/// permission bits, so as root the folder is made immutable
/// (`chattr +i`, which needs CAP_LINUX_IMMUTABLE and a file system with
/// the attribute, such as ext4): then even root gets EPERM, which sshd
/// answers as "permission denied". As another user `chmod 0555` does it.
/// Either failing fails the test: it never passes without a real refusal.
struct WriteBlock {
    dir: PathBuf,
    immutable: bool,
}

impl WriteBlock {
    fn new(dir: &Path) -> WriteBlock {
        let immutable = is_root();
        if immutable {
            let out = Command::new("chattr").arg("+i").arg(dir).output().expect(
                "chattr is missing: install the e2fsprogs package to run the permission test",
            );
            assert!(
                out.status.success(),
                "chattr +i {} failed (the test needs a file system with the immutable \
                 attribute, such as ext4, and CAP_LINUX_IMMUTABLE): {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            set_mode(dir, 0o555);
        }
        let block = WriteBlock {
            dir: dir.to_path_buf(),
            immutable,
        };
        assert!(
            fs::write(dir.join(".probe"), "x").is_err(),
            "{} still accepts writes",
            dir.display()
        );
        block
    }
}

impl Drop for WriteBlock {
    fn drop(&mut self) {
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(&self.dir).status();
        } else {
            set_mode(&self.dir, 0o755);
        }
    }
}

fn set_mode(dir: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// The pair's problems as (path, message).
fn problems(status: &Value) -> Vec<(String, String)> {
    status["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["path"].as_str().unwrap_or_default().to_owned(),
                p["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until the pair's status names `path` with a message containing
/// `needle`.
fn wait_for_problem(daemon: &Daemon, path: &str, needle: &str) {
    wait_until(
        &format!("status names {path} with \"{needle}\""),
        || {
            problems(&daemon.pair_status())
                .iter()
                .any(|(named, message)| named == path && message.contains(needle))
        },
        daemon,
    );
}

/// Waits until every file holds its content.
fn wait_for_contents(daemon: &Daemon, what: &str, files: &[(&Path, &str)]) {
    wait_until(
        what,
        || {
            files
                .iter()
                .all(|(path, content)| fs::read_to_string(path).ok().as_deref() == Some(*content))
        },
        daemon,
    );
}

#[test]
fn a_server_folder_that_refuses_writes_is_a_per_path_problem_and_the_rest_syncs() {
    let server = Sshd::start();
    let served = server.served().join("pair");
    fs::create_dir_all(served.join("locked")).unwrap();
    fs::write(served.join("locked/old.txt"), "old\n").unwrap();
    let daemon = start_synced(&server, "locked/old.txt");

    let block = WriteBlock::new(&served.join("locked"));
    fs::write(daemon.local.join("locked/new.txt"), "must not be lost\n").unwrap();
    fs::create_dir_all(daemon.local.join("open")).unwrap();
    fs::write(daemon.local.join("open/ok.txt"), "goes through\n").unwrap();
    fs::write(served.join("from-server.txt"), "comes down\n").unwrap();

    wait_for_problem(&daemon, "locked/new.txt", "denied");
    wait_for_contents(
        &daemon,
        "the rest of the pair syncs",
        &[
            (&served.join("open/ok.txt"), "goes through\n"),
            (&daemon.local.join("from-server.txt"), "comes down\n"),
        ],
    );
    let status = daemon.pair_status();
    assert_ne!(status["state"], "offline", "{status:#}");
    let refused: Vec<_> = problems(&status)
        .into_iter()
        .filter(|(path, _)| path == "locked/new.txt")
        .collect();
    assert!(
        refused.iter().any(
            |(_, message)| message.contains("cannot write locked/new.txt")
                && message.contains("check the owner and permissions")
        ),
        "{status:#}"
    );
    let human = String::from_utf8_lossy(&daemon.ctl(&["status"]).stdout).into_owned();
    assert!(human.contains("locked/new.txt"), "{human}");
    // Nothing is lost or half-written on either side.
    assert_eq!(
        fs::read_to_string(daemon.local.join("locked/new.txt")).unwrap(),
        "must not be lost\n"
    );
    assert_eq!(
        fs::read_to_string(daemon.local.join("locked/old.txt")).unwrap(),
        "old\n"
    );
    assert_eq!(
        fs::read_to_string(served.join("locked/old.txt")).unwrap(),
        "old\n"
    );
    assert!(!served.join("locked/new.txt").exists());
    assert!(temps(&served.join("locked")).is_empty());

    // Once the folder accepts writes again, the back-off retry delivers.
    drop(block);
    wait_until(
        "locked/new.txt arrives after the folder is writable again",
        || {
            fs::read_to_string(served.join("locked/new.txt"))
                .ok()
                .as_deref()
                == Some("must not be lost\n")
        },
        &daemon,
    );
    wait_until(
        "the problem is gone from status",
        || {
            let status = daemon.pair_status();
            problems(&status).is_empty() && status["state"] == "idle"
        },
        &daemon,
    );
}

#[test]
fn a_pair_with_compression_and_two_transfers_syncs_over_two_compressed_sessions() {
    let server = Sshd::start();
    let served = server.served().join("pair");
    fs::create_dir_all(&served).unwrap();
    fs::write(
        served.join("from-server.txt"),
        "server line\n".repeat(10_000),
    )
    .unwrap();
    let daemon = Daemon::start_with(
        &server,
        "laptop",
        "pair",
        "parallel_transfers = 2\n",
        "compression = true\n",
    );
    wait_until(
        "the server's file comes down",
        || daemon.local.join("from-server.txt").exists(),
        &daemon,
    );
    // Written beside the folder and moved in, so the agent sees all the
    // files at once and has more copies than sessions to run.
    let batch = daemon.home.join("batch");
    fs::create_dir_all(&batch).unwrap();
    let mut expected = Vec::new();
    for i in 0..6 {
        let path = batch.join(format!("big{i}.bin"));
        write_big(&path, 4 << 20);
        expected.push((format!("batch/big{i}.bin"), hash(&path).unwrap()));
    }
    fs::rename(&batch, daemon.local.join("batch")).unwrap();
    wait_until(
        "every file is on the server with its content",
        || {
            expected
                .iter()
                .all(|(name, want)| hash(&served.join(name)) == Some(*want))
        },
        &daemon,
    );
    assert_eq!(
        fs::read_to_string(daemon.local.join("from-server.txt")).unwrap(),
        "server line\n".repeat(10_000)
    );
    // Two transfers at once took two sessions, and never more.
    let logins = server.log().matches("Accepted publickey").count();
    assert_eq!(logins, 2, "{}", server.log());
    let log = daemon.log_text();
    let connected: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("connected over SFTP"))
        .collect();
    assert_eq!(connected.len(), 2, "{log}");
    assert!(
        connected.iter().all(|line| line.contains("zlib")),
        "every session is compressed: {connected:?}"
    );
}

/// A tiny file system (tmpfs with a size limit) mounted on a folder of the
/// served tree for as long as it lives, so the server runs out of space
/// there for real. Mounting needs root (CAP_SYS_ADMIN), as `.ci/run`
/// runs; anything else fails the test, which never passes without a real
/// full disk. Dropping it unmounts, also when the test failed.
struct TinyFs {
    dir: PathBuf,
}

impl TinyFs {
    fn mount(dir: &Path, size: &str) -> TinyFs {
        assert!(
            is_root(),
            "the disk-full test mounts a tmpfs, which needs root (CAP_SYS_ADMIN); run the suite as root, as .ci/run does"
        );
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size}"))
            .arg("tmpfs")
            .arg(dir)
            .output()
            .expect("mount is missing: install the mount package");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} failed (the test needs CAP_SYS_ADMIN, e.g. a privileged container): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        TinyFs {
            dir: dir.to_path_buf(),
        }
    }

    /// Gives the file system more room, keeping what is on it.
    fn grow(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o"])
            .arg(format!("remount,size={size}"))
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        // Lazy: sshd's sftp-server may still hold the folder open; the
        // mount goes as soon as it lets go.
        let _ = Command::new("umount").arg("--lazy").arg(&self.dir).status();
    }
}

#[test]
fn a_full_disk_on_the_server_is_a_per_path_problem_and_the_file_arrives_once_there_is_room() {
    const SIZE: usize = 4 << 20;
    let server = Sshd::start();
    let served = server.served().join("pair");
    fs::create_dir_all(served.join("tiny")).unwrap();
    let tiny = TinyFs::mount(&served.join("tiny"), "1m");
    fs::write(served.join("tiny/small.txt"), "fits\n").unwrap();
    let daemon = start_synced(&server, "tiny/small.txt");
    let expected = move_in_big(
        &daemon.home.join("big.bin"),
        &daemon.local.join("tiny/big.bin"),
        SIZE,
    );
    fs::write(daemon.local.join("elsewhere.txt"), "still syncs\n").unwrap();
    fs::write(served.join("from-server.txt"), "comes down\n").unwrap();

    wait_for_problem(&daemon, "tiny/big.bin", "out of space");
    wait_for_contents(
        &daemon,
        "the rest of the pair syncs",
        &[
            (&served.join("elsewhere.txt"), "still syncs\n"),
            (&daemon.local.join("from-server.txt"), "comes down\n"),
        ],
    );
    let status = daemon.pair_status();
    assert_ne!(status["state"], "offline", "{status:#}");
    let message = problems(&status)
        .into_iter()
        .find(|(path, _)| path == "tiny/big.bin")
        .map(|(_, message)| message)
        .unwrap_or_default();
    assert!(
        message.contains("cannot write tiny/big.bin") && message.contains("free some space"),
        "{status:#}"
    );
    let human = String::from_utf8_lossy(&daemon.ctl(&["status"]).stdout).into_owned();
    assert!(human.contains("out of space"), "{human}");
    // Nothing partial under the real name, and the cut upload is removed.
    assert!(!served.join("tiny/big.bin").exists());
    assert!(
        temps(&served.join("tiny")).is_empty(),
        "{:?}",
        temps(&served.join("tiny"))
    );
    assert_eq!(hash(&daemon.local.join("tiny/big.bin")), Some(expected));

    tiny.grow("64m");
    wait_until(
        "tiny/big.bin arrives once there is room",
        || hash(&served.join("tiny/big.bin")) == Some(expected),
        &daemon,
    );
    wait_until(
        "the problem is gone from status",
        || {
            let status = daemon.pair_status();
            problems(&status).is_empty() && status["state"] == "idle"
        },
        &daemon,
    );
    assert_eq!(
        fs::read_to_string(served.join("tiny/small.txt")).unwrap(),
        "fits\n"
    );
    assert_eq!(hash(&daemon.local.join("tiny/big.bin")), Some(expected));
    assert!(temps(&served.join("tiny")).is_empty());
}

/// Every file below `dir`, as text.
fn texts_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in fs::read_dir(&folder).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_version_in_the_server_trash_is_listed_and_restored_to_every_side() {
    let server = Sshd::start();
    let served = server.served().join("pair");
    let daemon = Daemon::start(&server, "laptop", "pair");
    let file = daemon.local.join("notes.txt");
    let on_server = served.join("notes.txt");
    let server_has = |text: &str| fs::read_to_string(&on_server).is_ok_and(|t| t == text);
    fs::write(&file, "first\n").unwrap();
    wait_until(
        "the server has the first version",
        || server_has("first\n"),
        &daemon,
    );
    fs::write(&file, "second, longer\n").unwrap();
    wait_until(
        "the server has the second version",
        || server_has("second, longer\n"),
        &daemon,
    );

    let path = file.to_str().unwrap();
    let out = daemon.ctl(&["--json", "history", path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["where"] == "remote_trash")
        .unwrap_or_else(|| panic!("no version in the server's trash: {history}"));
    assert_eq!(
        first["hash"],
        blake3::hash(b"first\n").to_hex().as_str(),
        "{history}"
    );
    assert_eq!(first["origin_device"], "laptop");

    let version = first["version"].as_str().unwrap();
    let out = daemon.ctl(&["restore", path, "--version", version]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "first\n");
    wait_until(
        "the restored version reaches the server",
        || server_has("first\n"),
        &daemon,
    );
    wait_until(
        "the replaced version is in the server's trash",
        || texts_below(&served.join(".prism-sync/trash")).contains(&"second, longer\n".to_owned()),
        &daemon,
    );
}

/// A trash name may come from another device's log: a folder of the trash
/// replaced by a link (to a copy of the batch outside the remote folder)
/// is not read through, and nothing changes.
#[test]
fn a_trash_folder_swapped_for_a_link_is_not_read_through() {
    let server = Sshd::start();
    let served = server.served().join("pair");
    let daemon = Daemon::start(&server, "laptop", "pair");
    let file = daemon.local.join("notes.txt");
    let on_server = served.join("notes.txt");
    let server_has = |text: &str| fs::read_to_string(&on_server).is_ok_and(|t| t == text);
    fs::write(&file, "first\n").unwrap();
    wait_until("the first version", || server_has("first\n"), &daemon);
    fs::write(&file, "second, longer\n").unwrap();
    wait_until(
        "the second version",
        || server_has("second, longer\n"),
        &daemon,
    );
    let path = file.to_str().unwrap();
    let out = daemon.ctl(&["--json", "history", path]);
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    let version = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["where"] == "remote_trash")
        .unwrap_or_else(|| panic!("no version in the server's trash: {history}"))["version"]
        .as_str()
        .unwrap()
        .to_owned();

    let trash = served.join(".prism-sync/trash");
    let batch = fs::read_dir(&trash)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| texts_below(p).contains(&"first\n".to_owned()))
        .expect("the batch holding the first version");
    let outside = server.served().join("outside-batch");
    fs::rename(&batch, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &batch).unwrap();

    let out = daemon.ctl(&["restore", path, "--version", &version]);
    assert!(!out.status.success(), "restored through a link");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no longer in the remote trash"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "second, longer\n");
}
