//! Running `prism-syncd` at login: `prism-syncctl service install`,
//! `uninstall` and `status`. On Linux it writes a systemd user unit to
//! `$XDG_CONFIG_HOME/systemd/user/` and drives `systemctl --user`; on macOS
//! it writes a launchd agent to `~/Library/LaunchAgents/` and drives
//! `launchctl`. The unit and the plist are the files in `systemd/` and
//! `launchd/`, compiled in, with the real path of the `prism-syncd` that
//! sits next to the running `prism-syncctl` filled in.
//!
//! What install wrote is recognised by a marker comment in the file, so
//! uninstall removes only that, and never a unit a person wrote by hand.
//! Files are written before the service manager is asked anything, and on
//! systemd the unit is enabled before the manager is reloaded, because
//! `systemctl --user enable` and `disable` edit links on disk and work
//! without a running user manager: where there is no user session (a
//! server reached by `su`, a container, CI), install still leaves the agent
//! set to start at the next login, and the error says so and what to do. This module does not print: it returns what it did (or
//! would do, with `dry_run`) as [`Action`]s and a [`ServiceStatus`], and
//! `ctl` renders them. It never talks to the agent's socket.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unit as shipped (`ExecStart=/usr/bin/prism-syncd`, the packaged path).
pub const UNIT_TEMPLATE: &str = include_str!("../systemd/prism-syncd.service");
/// The launchd agent with `@PRISM_SYNCD@` and `@LOG_DIR@` placeholders.
pub const PLIST_TEMPLATE: &str = include_str!("../launchd/com.prism-sync.prism-syncd.plist");
/// The systemd unit's name.
pub const UNIT_NAME: &str = "prism-syncd.service";
/// The launchd job's label (also the plist's file stem).
pub const LAUNCHD_LABEL: &str = "com.prism-sync.prism-syncd";

/// The `ExecStart=` line of [`UNIT_TEMPLATE`] that install replaces.
const PACKAGED_EXEC_START: &str = "ExecStart=/usr/bin/prism-syncd";
/// The first line of every unit install writes.
pub const UNIT_MARKER: &str =
    "# Written by `prism-syncctl service install`; `prism-syncctl service uninstall` removes it.";
/// The plist's equivalent of [`UNIT_MARKER`] (XML comments cannot hold `--`).
pub const PLIST_MARKER: &str = "<!-- Written by prism-syncctl service install; prism-syncctl service uninstall removes it. -->";

/// Which service manager runs the agent on this system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    /// A systemd user unit (Linux and other systemd systems).
    Systemd,
    /// A launchd agent in the user's GUI domain (macOS).
    Launchd,
}

impl Manager {
    /// The manager of the platform this binary was built for.
    pub fn native() -> Manager {
        if cfg!(target_os = "macos") {
            Manager::Launchd
        } else {
            Manager::Systemd
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Manager::Systemd => "systemd",
            Manager::Launchd => "launchd",
        }
    }
}

/// Where everything goes, worked out from the environment once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub manager: Manager,
    /// The unit or plist install writes.
    pub service_file: PathBuf,
    /// The agent the service runs: absolute, symlinks resolved.
    pub daemon: PathBuf,
    /// launchd only: where the agent's stdout and stderr go.
    pub log_dir: Option<PathBuf>,
    /// systemd only: the link `systemctl enable` makes for `WantedBy=`.
    pub enable_link: Option<PathBuf>,
    /// launchd only: the user id of the `gui/UID` domain.
    pub uid: u32,
}

impl Layout {
    /// The layout for this user and this platform: `$XDG_CONFIG_HOME` (else
    /// `~/.config`) or `~/Library`, and the `prism-syncd` next to the
    /// running executable.
    pub fn detect() -> Result<Layout, ServiceError> {
        let exe = std::env::current_exe().map_err(|e| ServiceError::NoExecutable {
            reason: e.to_string(),
        })?;
        let exe = exe.canonicalize().unwrap_or(exe);
        let dir = exe.parent().unwrap_or(Path::new("/"));
        let daemon = dir.join(daemon_file_name());
        let daemon = daemon
            .canonicalize()
            .map_err(|_| ServiceError::DaemonMissing {
                expected: daemon.clone(),
            })?;
        let dirs = directories::BaseDirs::new().ok_or(ServiceError::NoHome)?;
        Ok(Layout::for_manager(
            Manager::native(),
            dirs.home_dir(),
            dirs.config_dir(),
            daemon,
            current_uid(),
        ))
    }

    /// The layout for `manager`, given the user's home and config dirs.
    /// Pure: used by [`Layout::detect`] and by tests of the other platform.
    pub fn for_manager(
        manager: Manager,
        home: &Path,
        config_dir: &Path,
        daemon: PathBuf,
        uid: u32,
    ) -> Layout {
        match manager {
            Manager::Systemd => {
                let units = config_dir.join("systemd").join("user");
                Layout {
                    manager,
                    service_file: units.join(UNIT_NAME),
                    daemon,
                    log_dir: None,
                    enable_link: Some(units.join("default.target.wants").join(UNIT_NAME)),
                    uid,
                }
            }
            Manager::Launchd => Layout {
                manager,
                service_file: home
                    .join("Library/LaunchAgents")
                    .join(format!("{LAUNCHD_LABEL}.plist")),
                daemon,
                log_dir: Some(home.join("Library/Logs/prism-sync")),
                enable_link: None,
                uid,
            },
        }
    }

    /// The service file's content for this layout.
    pub fn render(&self) -> String {
        match self.manager {
            Manager::Systemd => render_unit(&self.daemon),
            Manager::Launchd => render_plist(
                &self.daemon,
                self.log_dir.as_deref().unwrap_or(Path::new("/tmp")),
            ),
        }
    }

    fn launchd_target(&self) -> String {
        format!("gui/{}/{LAUNCHD_LABEL}", self.uid)
    }
}

fn daemon_file_name() -> &'static str {
    if cfg!(windows) {
        "prism-syncd.exe"
    } else {
        "prism-syncd"
    }
}

#[cfg(unix)]
fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

#[cfg(not(unix))]
fn current_uid() -> u32 {
    0
}

/// The shipped unit with install's marker and `ExecStart=` pointing at
/// `daemon`.
pub fn render_unit(daemon: &Path) -> String {
    let exec_start = format!("ExecStart={}", systemd_quote(&daemon.to_string_lossy()));
    let body = UNIT_TEMPLATE.replacen(PACKAGED_EXEC_START, &exec_start, 1);
    format!("{UNIT_MARKER}\n{body}")
}

/// The launchd agent with the placeholders filled in and install's marker
/// after the XML declaration.
pub fn render_plist(daemon: &Path, log_dir: &Path) -> String {
    let body = PLIST_TEMPLATE
        .replace("@PRISM_SYNCD@", &xml_escape(&daemon.to_string_lossy()))
        .replace("@LOG_DIR@", &xml_escape(&log_dir.to_string_lossy()));
    match body.split_once('\n') {
        Some((declaration, rest)) => format!("{declaration}\n{PLIST_MARKER}\n{rest}"),
        None => body,
    }
}

/// One word of an `ExecStart=` line: `%` and `$` are doubled so systemd
/// neither expands specifiers nor variables, and a path with blanks,
/// quotes or backslashes is double-quoted with C-style escapes.
fn systemd_quote(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    if escaped
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\' || c == ';')
    {
        let inner = escaped.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{inner}\"")
    } else {
        escaped
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Whether a service file was written by install (its marker is there).
pub fn written_by_install(content: &str) -> bool {
    content.contains(UNIT_MARKER) || content.contains(PLIST_MARKER)
}

/// One step of install or uninstall, done or (with `dry_run`) planned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    CreateDir(PathBuf),
    Write {
        path: PathBuf,
        content: String,
    },
    Remove(PathBuf),
    Run(Vec<String>),
    /// Nothing to do, and why.
    Note(String),
}

impl fmt::Display for Action {
    /// One line for a person (`Write` without its content).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateDir(dir) => write!(f, "create {}", dir.display()),
            Action::Write { path, .. } => write!(f, "write {}", path.display()),
            Action::Remove(path) => write!(f, "remove {}", path.display()),
            Action::Run(argv) => write!(f, "run {}", argv.join(" ")),
            Action::Note(text) => f.write_str(text),
        }
    }
}

/// Why install, uninstall or status could not finish. Each message says
/// what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot tell where prism-syncctl runs from ({reason}); run it by its full path")]
    NoExecutable { reason: String },
    #[error(
        "prism-syncd is not next to prism-syncctl (expected {}); install both binaries in one folder (`cargo install --path .` does) and run that folder's prism-syncctl",
        expected.display()
    )]
    DaemonMissing { expected: PathBuf },
    #[error("cannot find your home folder; set HOME")]
    NoHome,
    #[error(
        "{} exists and was not written by `prism-syncctl service install`; it is left alone: move it away first, or manage it yourself with {}",
        path.display(),
        match manager { Manager::Systemd => "systemctl --user", Manager::Launchd => "launchctl" }
    )]
    NotOurs { path: PathBuf, manager: Manager },
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{program} was not found: this system has no {}{}; start prism-syncd from your shell profile (e.g. `prism-syncd &` in ~/.profile) or from your init system instead",
        manager.as_str(),
        progress
    )]
    NoServiceManager {
        program: &'static str,
        manager: Manager,
        progress: Progress,
    },
    #[error(
        "no user systemd session (`{command}` said: {said}){}; run prism-syncd from your shell profile, or start a session that runs `systemd --user` (a desktop or SSH login with systemd-logind; `loginctl enable-linger $USER` keeps one running) and run `prism-syncctl service {retry}` again",
        progress
    )]
    NoUserSession {
        command: String,
        said: String,
        progress: Progress,
        retry: &'static str,
    },
    #[error("`{command}` failed ({said}){progress}")]
    CommandFailed {
        command: String,
        said: String,
        progress: Progress,
    },
    #[error(
        "{} is enabled, but there is no user systemd session to disable it (`{command}` said: {said}); run `prism-syncctl service uninstall` in a login session",
        path.display()
    )]
    StillEnabled {
        path: PathBuf,
        command: String,
        said: String,
    },
}

/// How far install got before a command failed, for the error message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The service file install wrote.
    pub written: Option<PathBuf>,
    /// `systemctl --user enable` succeeded: the next login starts the agent.
    pub enabled: bool,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.written, self.enabled) {
            (Some(path), true) => write!(
                f,
                "; the service file is in place at {} and enabled, so prism-syncd starts at your next login, but it could not be started now",
                path.display()
            ),
            (Some(path), false) => {
                write!(f, "; the service file is in place at {}", path.display())
            }
            (None, _) => Ok(()),
        }
    }
}

/// What the service manager says about the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceStatus {
    pub manager: Manager,
    pub service_file: PathBuf,
    /// The service file exists.
    pub installed: bool,
    /// It carries install's marker.
    pub written_by_install: bool,
    /// Running now, as the manager sees it.
    pub running: bool,
    /// The manager's words: systemd's `ActiveState (SubState)`, launchd's
    /// `state`; `not loaded` when the manager does not know the service.
    pub state: String,
    pub pid: Option<u32>,
    /// systemd's `UnitFileState` (`enabled`, `disabled`, …); launchd: None.
    pub enabled: Option<String>,
    /// The agent's own status line (systemd's `StatusText`) or launchd's
    /// last exit code.
    pub detail: Option<String>,
    /// Where the logs are.
    pub logs: String,
}

/// Writes the service file and starts the service. With `dry_run`, only
/// returns what it would do.
pub fn install(layout: &Layout, dry_run: bool) -> Result<Vec<Action>, ServiceError> {
    refuse_foreign_file(layout)?;
    let mut plan = Vec::new();
    let parent = layout.service_file.parent().unwrap_or(Path::new("/"));
    if !parent.is_dir() {
        plan.push(Action::CreateDir(parent.to_owned()));
    }
    if let Some(log_dir) = &layout.log_dir
        && !log_dir.is_dir()
    {
        plan.push(Action::CreateDir(log_dir.clone()));
    }
    let already_loaded = layout.service_file.exists();
    if layout.manager == Manager::Launchd && already_loaded {
        // `bootstrap` refuses a job that is already loaded: unload the old
        // one first, so install also upgrades.
        plan.push(Action::Run(launchctl(&[
            "bootout",
            &layout.launchd_target(),
        ])));
    }
    plan.push(Action::Write {
        path: layout.service_file.clone(),
        content: layout.render(),
    });
    match layout.manager {
        Manager::Systemd => {
            plan.push(Action::Run(systemctl(&["enable", UNIT_NAME])));
            plan.push(Action::Run(systemctl(&["daemon-reload"])));
            plan.push(Action::Run(systemctl(&["start", UNIT_NAME])));
        }
        Manager::Launchd => {
            let domain = format!("gui/{}", layout.uid);
            let plist = layout.service_file.to_string_lossy().into_owned();
            plan.push(Action::Run(launchctl(&["bootstrap", &domain, &plist])));
        }
    }
    if dry_run {
        return Ok(plan);
    }
    let mut progress = Progress::default();
    for action in &plan {
        match action {
            Action::CreateDir(dir) => create_dir(dir)?,
            Action::Write { path, content } => {
                write_file(path, content)?;
                progress.written = Some(path.clone());
            }
            Action::Run(argv) if argv.get(1).map(String::as_str) == Some("bootout") => {
                // Not loaded is fine: the point is that it is not.
                let _ = run(argv);
            }
            Action::Run(argv) => {
                run(argv).map_err(|failure| {
                    failure.into_error(layout.manager, progress.clone(), "install")
                })?;
                if argv.iter().any(|a| a == "enable") {
                    progress.enabled = true;
                }
            }
            Action::Remove(_) | Action::Note(_) => {}
        }
    }
    Ok(plan)
}

/// Stops and disables the service and removes the file install wrote.
/// With `dry_run`, only returns what it would do.
pub fn uninstall(layout: &Layout, dry_run: bool) -> Result<Vec<Action>, ServiceError> {
    if !layout.service_file.exists() {
        return Ok(vec![Action::Note(format!(
            "nothing to uninstall: {} does not exist",
            layout.service_file.display()
        ))]);
    }
    refuse_foreign_file(layout)?;
    let stop = match layout.manager {
        Manager::Systemd => systemctl(&["disable", "--now", UNIT_NAME]),
        Manager::Launchd => launchctl(&["bootout", &layout.launchd_target()]),
    };
    let mut plan = vec![
        Action::Run(stop.clone()),
        Action::Remove(layout.service_file.clone()),
    ];
    if layout.manager == Manager::Systemd {
        plan.push(Action::Run(systemctl(&["daemon-reload"])));
    }
    if dry_run {
        return Ok(plan);
    }
    let mut manager_reachable = true;
    match run(&stop) {
        Ok(_) => {}
        // launchd answers "not loaded" with an error; that is the state
        // uninstall wants anyway.
        Err(_) if layout.manager == Manager::Launchd => {}
        Err(failure) => {
            // Without a user session nothing can be running under systemd.
            // The file may still go, unless `enable` linked it somewhere a
            // later session would follow: then the link must be removed by
            // systemctl, which owns it.
            let enabled = layout
                .enable_link
                .as_deref()
                .is_some_and(|link| link.symlink_metadata().is_ok());
            if enabled || !failure.is_no_session() {
                return Err(if enabled && failure.is_no_session() {
                    ServiceError::StillEnabled {
                        path: layout.service_file.clone(),
                        command: failure.command,
                        said: failure.said,
                    }
                } else {
                    failure.into_error(layout.manager, Progress::default(), "uninstall")
                });
            }
            manager_reachable = false;
        }
    }
    std::fs::remove_file(&layout.service_file).map_err(|source| ServiceError::Io {
        what: "remove",
        path: layout.service_file.clone(),
        source,
    })?;
    if layout.manager == Manager::Systemd && manager_reachable {
        let _ = run(&systemctl(&["daemon-reload"]));
    }
    if !manager_reachable {
        plan.retain(|action| matches!(action, Action::Remove(_)));
        plan.insert(0, Action::Run(stop));
        plan.push(Action::Note(
            "(`systemctl --user disable` works without a session and removed the login link; there is no user systemd session, so nothing was running to stop)".to_owned(),
        ));
    }
    Ok(plan)
}

/// Asks the service manager about the agent.
pub fn status(layout: &Layout) -> Result<ServiceStatus, ServiceError> {
    let content = std::fs::read_to_string(&layout.service_file).ok();
    let mut status = ServiceStatus {
        manager: layout.manager,
        service_file: layout.service_file.clone(),
        installed: content.is_some(),
        written_by_install: content.as_deref().is_some_and(written_by_install),
        running: false,
        state: "not loaded".to_owned(),
        pid: None,
        enabled: None,
        detail: None,
        logs: match layout.manager {
            Manager::Systemd => "journalctl --user -u prism-syncd".to_owned(),
            Manager::Launchd => layout
                .log_dir
                .as_deref()
                .unwrap_or(Path::new("~/Library/Logs/prism-sync"))
                .display()
                .to_string(),
        },
    };
    match layout.manager {
        Manager::Systemd => {
            let argv = systemctl(&[
                "show",
                UNIT_NAME,
                "--property=LoadState,ActiveState,SubState,MainPID,UnitFileState,StatusText",
            ]);
            let out = match run(&argv) {
                Ok(out) => out,
                Err(failure) if failure.is_no_session() => {
                    // Nothing runs under a user manager that does not run;
                    // whether the next login starts the agent can still be
                    // read from the links on disk.
                    status.state = "not running: no user systemd session".to_owned();
                    status.enabled = match run(&systemctl(&["is-enabled", UNIT_NAME])) {
                        Ok(out) => Some(out),
                        // `is-enabled` answers `disabled` with a failure status.
                        Err(f) => Some(f.stdout),
                    }
                    .map(|out| out.trim().to_owned())
                    .filter(|s| !s.is_empty());
                    status.detail = Some(failure.said);
                    return Ok(status);
                }
                Err(failure) => {
                    return Err(failure.into_error(layout.manager, Progress::default(), "status"));
                }
            };
            let field = |name: &str| {
                out.lines()
                    .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                    .map(str::to_owned)
                    .filter(|v| !v.is_empty())
            };
            let active = field("ActiveState").unwrap_or_default();
            if field("LoadState").as_deref() != Some("not-found") {
                status.state = match field("SubState") {
                    Some(sub) => format!("{active} ({sub})"),
                    None => active.clone(),
                };
            }
            status.running = active == "active" || active == "reloading";
            status.pid = field("MainPID")
                .and_then(|p| p.parse().ok())
                .filter(|&p| p != 0);
            status.enabled = field("UnitFileState");
            status.detail = field("StatusText");
        }
        Manager::Launchd => {
            // `launchctl print` fails when the job is not loaded: that is
            // the answer "not loaded", not an error.
            if let Ok(out) = run(&launchctl(&["print", &layout.launchd_target()])) {
                let field = |name: &str| {
                    out.lines()
                        .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(" = "))
                        .map(str::to_owned)
                };
                status.state = field("state").unwrap_or_else(|| "loaded".to_owned());
                status.running = status.state == "running";
                status.pid = field("pid").and_then(|p| p.parse().ok());
                status.detail = field("last exit code").map(|c| format!("last exit code {c}"));
            }
        }
    }
    Ok(status)
}

fn refuse_foreign_file(layout: &Layout) -> Result<(), ServiceError> {
    match std::fs::read_to_string(&layout.service_file) {
        Ok(content) if !written_by_install(&content) => Err(ServiceError::NotOurs {
            path: layout.service_file.clone(),
            manager: layout.manager,
        }),
        _ => Ok(()),
    }
}

fn systemctl(args: &[&str]) -> Vec<String> {
    ["systemctl", "--user"]
        .iter()
        .chain(args)
        .map(|s| (*s).to_owned())
        .collect()
}

fn launchctl(args: &[&str]) -> Vec<String> {
    std::iter::once("launchctl")
        .chain(args.iter().copied())
        .map(str::to_owned)
        .collect()
}

fn create_dir(dir: &Path) -> Result<(), ServiceError> {
    std::fs::create_dir_all(dir).map_err(|source| ServiceError::Io {
        what: "create the folder",
        path: dir.to_owned(),
        source,
    })
}

/// Writes `content` under a temporary name and renames it into place, so
/// the service manager never reads half a file.
fn write_file(path: &Path, content: &str) -> Result<(), ServiceError> {
    let io_error = |source| ServiceError::Io {
        what: "write",
        path: path.to_owned(),
        source,
    };
    let temp = path.with_extension("prism-tmp");
    std::fs::write(&temp, content).map_err(io_error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o644))
            .map_err(io_error)?;
    }
    std::fs::rename(&temp, path).map_err(io_error)
}

/// A service-manager command that did not succeed.
struct Failure {
    command: String,
    said: String,
    /// What the command printed on stdout.
    stdout: String,
    not_found: bool,
}

impl Failure {
    /// systemctl's words when it cannot reach a user manager: no D-Bus
    /// session, no `$XDG_RUNTIME_DIR`, or no `systemd --user` behind them.
    fn is_no_session(&self) -> bool {
        let said = self.said.to_lowercase();
        [
            "connect to bus",
            "no medium found",
            "xdg_runtime_dir",
            "dbus_session_bus_address",
        ]
        .iter()
        .any(|needle| said.contains(needle))
    }

    fn into_error(self, manager: Manager, progress: Progress, retry: &'static str) -> ServiceError {
        if self.not_found {
            ServiceError::NoServiceManager {
                program: match manager {
                    Manager::Systemd => "systemctl",
                    Manager::Launchd => "launchctl",
                },
                manager,
                progress,
            }
        } else if manager == Manager::Systemd && self.is_no_session() {
            ServiceError::NoUserSession {
                command: self.command,
                said: self.said,
                progress,
                retry,
            }
        } else {
            ServiceError::CommandFailed {
                command: self.command,
                said: self.said,
                progress,
            }
        }
    }
}

/// Runs a service-manager command and returns its stdout, or what went
/// wrong in one line.
fn run(argv: &[String]) -> Result<String, Failure> {
    let command = argv.join(" ");
    let output = match Command::new(&argv[0]).args(&argv[1..]).output() {
        Ok(output) => output,
        Err(e) => {
            return Err(Failure {
                command,
                said: e.to_string(),
                stdout: String::new(),
                not_found: e.kind() == io::ErrorKind::NotFound,
            });
        }
    };
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    Err(Failure {
        command,
        said: if said.is_empty() {
            format!("exit status {}", output.status)
        } else {
            said
        },
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        not_found: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_the_given_binary_and_carries_the_marker() {
        let unit = render_unit(Path::new("/opt/prism sync/bin/prism-syncd"));
        assert!(unit.starts_with(UNIT_MARKER));
        assert!(
            unit.contains("\nExecStart=\"/opt/prism sync/bin/prism-syncd\"\n"),
            "{unit}"
        );
        assert!(!unit.contains(PACKAGED_EXEC_START));
        assert!(written_by_install(&unit));
        assert!(!written_by_install(UNIT_TEMPLATE));
    }

    #[test]
    fn systemd_specifiers_and_variables_are_escaped() {
        assert_eq!(systemd_quote("/home/a%b/$HOME/x"), "/home/a%%b/$$HOME/x");
        assert_eq!(systemd_quote("/a\"b c"), "\"/a\\\"b c\"");
    }

    #[test]
    fn the_plist_has_no_placeholders_left() {
        let plist = render_plist(
            Path::new("/Users/me/bin/prism-syncd"),
            Path::new("/Users/me/Library/Logs/prism-sync"),
        );
        assert!(!plist.contains('@'), "{plist}");
        assert!(plist.contains("<string>/Users/me/bin/prism-syncd</string>"));
        assert!(plist.contains("/Users/me/Library/Logs/prism-sync/prism-syncd.err.log"));
        assert!(plist.starts_with("<?xml"));
        assert!(written_by_install(&plist));
        assert!(!PLIST_MARKER[4..PLIST_MARKER.len() - 3].contains("--"));
    }

    #[test]
    fn the_launchd_layout_uses_the_users_library() {
        let layout = Layout::for_manager(
            Manager::Launchd,
            Path::new("/Users/me"),
            Path::new("/Users/me/Library/Application Support"),
            PathBuf::from("/usr/local/bin/prism-syncd"),
            501,
        );
        assert_eq!(
            layout.service_file,
            Path::new("/Users/me/Library/LaunchAgents/com.prism-sync.prism-syncd.plist")
        );
        assert_eq!(
            layout.launchd_target(),
            "gui/501/com.prism-sync.prism-syncd"
        );
        let plan = install(&layout, true).unwrap();
        assert_eq!(
            plan.last().unwrap().to_string(),
            "run launchctl bootstrap gui/501 /Users/me/Library/LaunchAgents/com.prism-sync.prism-syncd.plist"
        );
    }
}
