//! Running the agent as a service, tested with the real tools: the unit
//! passes `systemd-analyze verify`, the plist parses with Python's
//! `plistlib`, `prism-syncctl service install` writes exactly the expected
//! files into a temporary `HOME`/`XDG_CONFIG_HOME` and, with no user
//! systemd session (as in CI), says what to do; uninstall removes only what
//! install wrote. The real `prism-syncd` sends `READY=1`/`STOPPING=1` to a
//! `NOTIFY_SOCKET` this test owns, and under a supervisor loop that
//! restarts it like `Restart=on-failure` it survives `kill -9` and resumes
//! from its journal.
//!
//! The service manager itself is never faked: where no user session
//! exists, the tests check the files and the error a user would see.
//! `systemd-analyze`, `systemctl` and `python3` must be installed (`.ci/run`
//! installs the `systemd` package); a missing tool fails the test.

// Tests take locks with `lock().unwrap()`: a lock poisoned in a test is a
// failed test. The agent's own rule (`prism_sync::locks`) does not apply.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use prism_sync::service::{self, UNIT_MARKER};

const SYNCD: &str = env!("CARGO_BIN_EXE_prism-syncd");
const SYNCCTL: &str = env!("CARGO_BIN_EXE_prism-syncctl");
const PATIENCE: Duration = Duration::from_secs(20);

fn temp_dir() -> tempfile::TempDir {
    // Short paths under /tmp keep socket addresses under 108 bytes.
    tempfile::Builder::new().tempdir_in("/tmp").unwrap()
}

/// The `prism-syncd` that `service install` must name: the one next to
/// `prism-syncctl`, symlinks resolved.
fn installed_daemon() -> PathBuf {
    Path::new(SYNCCTL)
        .canonicalize()
        .unwrap()
        .with_file_name("prism-syncd")
        .canonicalize()
        .unwrap()
}

/// Runs a tool the test depends on; a missing tool fails with the package
/// that provides it.
fn tool(program: &str, package: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed: install the {package} package (`.ci/run` does)"
    );
    Command::new(program)
}

/// `prism-syncctl` in a sandboxed home: its own `HOME` and
/// `XDG_CONFIG_HOME`, and no way to reach a user systemd session (no
/// `XDG_RUNTIME_DIR`, no D-Bus address), so it can never touch the
/// developer's real services.
fn syncctl_in(home: &Path) -> Command {
    let mut command = Command::new(SYNCCTL);
    command
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .stdin(Stdio::null());
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// Every file under `root`, relative, with its content; a symlink as
/// `-> TARGET`.
fn files_under(root: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).unwrap();
                files.insert(rel, format!("-> {}", target.display()));
            } else if meta.is_dir() {
                stack.push(path);
            } else {
                files.insert(rel, fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    files
}

/// `systemd-analyze verify` in user mode on `unit`. It needs a runtime dir
/// (a private temporary one) but no running systemd, so it works in a
/// container; `--man=no` skips checking that the man pages exist.
fn systemd_analyze_verify(unit: &Path) -> Output {
    let runtime = temp_dir();
    fs::set_permissions(runtime.path(), fs::Permissions::from_mode(0o700)).unwrap();
    tool("systemd-analyze", "systemd")
        .args(["verify", "--user", "--man=no"])
        .arg(unit)
        .env("XDG_RUNTIME_DIR", runtime.path())
        .output()
        .unwrap()
}

/// Warnings (an unknown key, a bad value) exit 0, so any output at all
/// fails the check.
fn verify_unit(unit: &Path) {
    let output = systemd_analyze_verify(unit);
    assert!(
        output.status.success() && output.stderr.is_empty() && output.stdout.is_empty(),
        "systemd-analyze verify {}: {}",
        unit.display(),
        describe(&output)
    );
}

#[test]
fn the_shipped_unit_passes_systemd_analyze_verify() {
    // The shipped unit names /usr/bin/prism-syncd, which verify checks for
    // existence: point a copy at the binary this build made.
    let dir = temp_dir();
    let unit = dir.path().join(service::UNIT_NAME);
    let shipped = fs::read_to_string("systemd/prism-syncd.service").unwrap();
    assert!(shipped.contains("\nExecStart=/usr/bin/prism-syncd\n"));
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "RestartSec=5",
        "RestartPreventExitStatus=78",
        "StartLimitBurst=5",
        "StandardError=journal",
        "WantedBy=default.target",
    ] {
        assert!(shipped.lines().any(|l| l == line), "the unit lacks {line}");
    }
    fs::write(
        &unit,
        shipped.replace(
            "ExecStart=/usr/bin/prism-syncd",
            &format!("ExecStart={SYNCD}"),
        ),
    )
    .unwrap();
    verify_unit(&unit);
}

#[test]
fn a_broken_unit_fails_the_verify_check() {
    // The check above is only worth something if verify's warnings count.
    let dir = temp_dir();
    let unit = dir.path().join(service::UNIT_NAME);
    fs::write(
        &unit,
        format!("[Service]\nExecStart={SYNCD}\nRestartPreventExitStatus=seventy-eight\n"),
    )
    .unwrap();
    let output = systemd_analyze_verify(&unit);
    assert!(
        text(&output.stderr).contains("seventy-eight"),
        "{}",
        describe(&output)
    );
}

/// Parses a plist with Python's plistlib and returns it as JSON.
fn parse_plist(path: &Path) -> serde_json::Value {
    let output = tool("python3", "python3")
        .args([
            "-c",
            "import json, plistlib, sys\nwith open(sys.argv[1], 'rb') as f:\n    print(json.dumps(plistlib.load(f)))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(output.status.success(), "plistlib: {}", describe(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_launchd_plist_parses_with_plistlib_and_has_its_keys() {
    let dir = temp_dir();
    let daemon = Path::new("/Users/me & co/bin/prism-syncd");
    let logs = Path::new("/Users/me & co/Library/Logs/prism-sync");
    let plist = dir.path().join("com.prism-sync.prism-syncd.plist");
    fs::write(&plist, service::render_plist(daemon, logs)).unwrap();
    let parsed = parse_plist(&plist);
    assert_eq!(parsed["Label"], "com.prism-sync.prism-syncd");
    assert_eq!(
        parsed["ProgramArguments"],
        serde_json::json!(["/Users/me & co/bin/prism-syncd"])
    );
    assert_eq!(parsed["RunAtLoad"], true);
    assert_eq!(
        parsed["KeepAlive"],
        serde_json::json!({"SuccessfulExit": false})
    );
    assert_eq!(parsed["ProcessType"], "Background");
    assert_eq!(parsed["ThrottleInterval"], 60);
    assert_eq!(
        parsed["StandardOutPath"],
        "/Users/me & co/Library/Logs/prism-sync/prism-syncd.out.log"
    );
    assert_eq!(
        parsed["StandardErrorPath"],
        "/Users/me & co/Library/Logs/prism-sync/prism-syncd.err.log"
    );
    // The template in the repository parses too (placeholders are strings).
    let template = parse_plist(Path::new("launchd/com.prism-sync.prism-syncd.plist"));
    assert_eq!(
        template["ProgramArguments"],
        serde_json::json!(["@PRISM_SYNCD@"])
    );
}

#[test]
fn install_dry_run_prints_the_unit_and_commands_and_writes_nothing() {
    let home = temp_dir();
    let output = syncctl_in(home.path())
        .args(["service", "install", "--dry-run"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = text(&output.stdout);
    let unit_path = home.path().join("config/systemd/user/prism-syncd.service");
    assert!(
        stdout.contains(&format!("would write {}:", unit_path.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("    ExecStart={}\n", installed_daemon().display())),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("    {UNIT_MARKER}\n")), "{stdout}");
    assert!(stdout.ends_with(
        "would run systemctl --user enable prism-syncd.service\n\
         would run systemctl --user daemon-reload\n\
         would run systemctl --user start prism-syncd.service\n"
    ));
    assert!(
        fs::read_dir(home.path()).unwrap().next().is_none(),
        "a dry run created {:?}",
        files_under(home.path())
    );
}

#[test]
fn install_without_a_user_session_writes_the_unit_and_says_what_to_do() {
    let home = temp_dir();
    let output = syncctl_in(home.path())
        .args(["service", "install"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let unit_path = home.path().join("config/systemd/user/prism-syncd.service");
    for expected in [
        "no user systemd session",
        "run prism-syncd from your shell profile",
        "`systemctl --user daemon-reload` said: ",
        &format!(
            "the service file is in place at {} and enabled, so prism-syncd starts at your next login",
            unit_path.display()
        ),
        "prism-syncctl service install` again",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in {stderr}"
        );
    }

    // File by file: the shipped unit with the marker and the real daemon
    // path, and the link `systemctl --user enable` made without a session
    // for WantedBy=default.target (what the next login's manager follows).
    let files = files_under(home.path());
    let expected = service::render_unit(&installed_daemon());
    assert_eq!(
        files,
        BTreeMap::from([
            (
                "config/systemd/user/prism-syncd.service".to_owned(),
                expected
            ),
            (
                "config/systemd/user/default.target.wants/prism-syncd.service".to_owned(),
                format!("-> {}", unit_path.display())
            ),
        ])
    );
    let mode = fs::metadata(&unit_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    verify_unit(&unit_path);

    // Installing again over its own file is fine (an upgrade).
    let again = syncctl_in(home.path())
        .args(["service", "install"])
        .output()
        .unwrap();
    assert!(
        text(&again.stderr).contains("no user systemd session"),
        "{}",
        describe(&again)
    );

    // Status cannot ask a manager that does not run, says so, and still
    // reads from disk that the next login starts the agent.
    let status = syncctl_in(home.path())
        .args(["service", "status"])
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(4), "{}", describe(&status));
    let shown = text(&status.stdout);
    assert!(
        shown.contains("state:           not running: no user systemd session, enabled\n"),
        "{}",
        describe(&status)
    );
    assert!(shown.contains("(written by service install)"), "{shown}");
    assert!(shown.contains("logs:            journalctl --user -u prism-syncd"));

    // `disable` works without a session too: uninstall removes the link
    // and the unit, and leaves nothing behind.
    let uninstall = syncctl_in(home.path())
        .args(["service", "uninstall"])
        .output()
        .unwrap();
    assert!(uninstall.status.success(), "{}", describe(&uninstall));
    assert!(
        text(&uninstall.stdout).contains(&format!("did remove {}", unit_path.display())),
        "{}",
        describe(&uninstall)
    );
    assert!(!unit_path.exists());
    assert!(files_under(home.path()).is_empty());

    let nothing = syncctl_in(home.path())
        .args(["service", "uninstall"])
        .output()
        .unwrap();
    assert!(nothing.status.success(), "{}", describe(&nothing));
    assert!(text(&nothing.stdout).contains("nothing to uninstall"));
}

#[test]
fn a_unit_written_by_hand_is_never_replaced_or_removed() {
    let home = temp_dir();
    let unit_path = home.path().join("config/systemd/user/prism-syncd.service");
    fs::create_dir_all(unit_path.parent().unwrap()).unwrap();
    let own = "[Service]\nExecStart=/opt/mine/prism-syncd --config /etc/mine.toml\n";
    fs::write(&unit_path, own).unwrap();
    for verb in ["install", "uninstall"] {
        let output = syncctl_in(home.path())
            .args(["service", verb])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
        assert!(
            text(&output.stderr).contains("was not written by `prism-syncctl service install`"),
            "{}",
            describe(&output)
        );
        assert_eq!(fs::read_to_string(&unit_path).unwrap(), own);
    }
}

/// A datagram socket standing in for the service manager's end of the
/// notify protocol: the same socket type and messages systemd uses.
struct NotifyListener {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifyListener {
    fn bind(dir: &Path) -> NotifyListener {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        NotifyListener { socket, path }
    }

    /// The next message, or a failure naming what was expected.
    fn receive(&self, expecting: &str) -> String {
        let mut buffer = [0u8; 4096];
        match self.socket.recv(&mut buffer) {
            Ok(n) => text(&buffer[..n]),
            Err(e) => panic!("no {expecting} on NOTIFY_SOCKET within {PATIENCE:?}: {e}"),
        }
    }
}

/// A sandbox with one ad-hoc pair and the agent's command line.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let setup = Setup { dir: temp_dir() };
        fs::create_dir_all(setup.local()).unwrap();
        fs::create_dir_all(setup.remote()).unwrap();
        setup
    }

    fn local(&self) -> PathBuf {
        self.dir.path().join("local")
    }

    fn remote(&self) -> PathBuf {
        self.dir.path().join("remote")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("s.sock")
    }

    fn syncd(&self, notify: &Path) -> Command {
        let mut command = Command::new(SYNCD);
        command
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--socket")
            .arg(self.socket())
            .arg("--local")
            .arg(self.local())
            .arg("--remote")
            .arg(format!("file://{}", self.remote().display()))
            .env("NOTIFY_SOCKET", notify)
            .env("HOME", self.dir.path())
            .env_remove("PRISM_SYNC_CONFIG")
            .env_remove("PRISM_SYNC_STATE_DIR")
            .env_remove("PRISM_SYNC_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    fn syncctl(&self, args: &[&str]) -> Output {
        Command::new(SYNCCTL)
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(Duration::from_millis(25));
    }
}

/// Waits for a child without blocking forever.
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("prism-syncd did not exit within {PATIENCE:?}");
        }
        sleep(Duration::from_millis(25));
    }
}

#[test]
fn the_agent_reports_ready_once_it_serves_and_stopping_on_sigterm() {
    let setup = Setup::new();
    let notify = NotifyListener::bind(setup.dir.path());
    let mut child = setup.syncd(&notify.path).spawn().unwrap();
    let ready = notify.receive("READY=1");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(ready.contains("STATUS=syncing 1 pair(s)"), "{ready:?}");
    // Ready means a client can connect right now, with no retry.
    let status = setup.syncctl(&["status"]);
    assert!(status.status.success(), "{}", describe(&status));

    // SAFETY: kill on a child we own and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stopping = notify.receive("STOPPING=1");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}

/// A small supervisor with the unit's rules: start the agent, wait for
/// READY=1, and when it dies of anything but a clean exit or exit 78,
/// start it again after a pause (`Restart=on-failure`, `RestartSec`).
struct Supervisor {
    pid: Arc<AtomicU32>,
    starts: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Option<i32>>>>,
}

impl Supervisor {
    fn start(
        mut command: impl FnMut() -> Command + Send + 'static,
        notify: NotifyListener,
    ) -> Self {
        let pid = Arc::new(AtomicU32::new(0));
        let starts = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (pid2, starts2, stop2) = (pid.clone(), starts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut exits = Vec::new();
            loop {
                let mut child = command().spawn().unwrap();
                let ready = notify.receive("READY=1 after a (re)start");
                assert!(ready.contains("READY=1"), "{ready:?}");
                pid2.store(child.id(), Ordering::SeqCst);
                starts2.fetch_add(1, Ordering::SeqCst);
                let status = loop {
                    if stop2.load(Ordering::SeqCst) {
                        // SAFETY: kill on a child we own and have not reaped.
                        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                        break wait_exit(&mut child);
                    }
                    if let Some(status) = child.try_wait().unwrap() {
                        break status;
                    }
                    sleep(Duration::from_millis(20));
                };
                exits.push(status.code());
                let restart = !status.success() && status.code() != Some(78);
                if !restart || stop2.load(Ordering::SeqCst) {
                    return exits;
                }
                sleep(Duration::from_millis(200));
            }
        });
        Supervisor {
            pid,
            starts,
            stop,
            thread: Some(thread),
        }
    }

    fn wait_for_start(&self, n: u32) {
        wait_until(&format!("the agent started {n} time(s)"), || {
            self.starts.load(Ordering::SeqCst) >= n
        });
    }

    fn finish(mut self) -> Vec<Option<i32>> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn changes_of(setup: &Setup, path: &str) -> Vec<serde_json::Value> {
    let output = setup.syncctl(&["--json", "changes"]);
    assert!(output.status.success(), "{}", describe(&output));
    let log: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    log["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["path"] == path)
        .cloned()
        .collect()
}

#[test]
fn a_supervised_agent_killed_with_sigkill_restarts_and_resumes_from_its_journal() {
    let setup = Arc::new(Setup::new());
    let notify = NotifyListener::bind(setup.dir.path());
    let notify_path = notify.path.clone();
    let for_command = setup.clone();
    let supervisor = Supervisor::start(move || for_command.syncd(&notify_path), notify);
    supervisor.wait_for_start(1);

    fs::write(setup.local().join("before.txt"), "written before the crash").unwrap();
    wait_until("before.txt reaches the remote", || {
        fs::read_to_string(setup.remote().join("before.txt"))
            .ok()
            .as_deref()
            == Some("written before the crash")
    });
    wait_until("the change log records before.txt", || {
        !changes_of(&setup, "before.txt").is_empty()
    });
    let first_pid = supervisor.pid.load(Ordering::SeqCst);

    // SAFETY: the supervisor's child; it reaps it.
    unsafe { libc::kill(first_pid as i32, libc::SIGKILL) };
    supervisor.wait_for_start(2);
    assert_ne!(supervisor.pid.load(Ordering::SeqCst), first_pid);

    // The restarted agent answers, and its journal still holds what the
    // killed one recorded: the old change, carried once, not re-sent.
    fs::write(setup.local().join("after.txt"), "written after the restart").unwrap();
    wait_until("after.txt reaches the remote", || {
        fs::read_to_string(setup.remote().join("after.txt"))
            .ok()
            .as_deref()
            == Some("written after the restart")
    });
    wait_until("the change log records after.txt", || {
        !changes_of(&setup, "after.txt").is_empty()
    });
    let before = changes_of(&setup, "before.txt");
    assert_eq!(
        before.len(),
        1,
        "before.txt was carried again after the restart: {before:#?}"
    );
    assert_eq!(before[0]["type"], "created");

    let exits = supervisor.finish();
    // The SIGKILL shows as no exit code; the final SIGTERM as a clean 0.
    assert_eq!(exits, vec![None, Some(0)]);
}
