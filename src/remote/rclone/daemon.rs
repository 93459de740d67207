//! The one `rclone rcd` an agent runs: started at first use, started again
//! when it died, stopped when the last replica that uses it goes (or, at
//! the latest, with the agent's process).
//!
//! Every start asks the binary its version first (`rclone version`): the
//! user may have upgraded rclone since the last start, and where it
//! listens follows the version ([`super::transport`]): a Unix socket in a
//! fresh 0700 folder of ours where rclone offers it (1.61 on), else a free
//! port of 127.0.0.1. Either way with a random user and password of its
//! own, handed over in its environment (`RCLONE_RC_USER`,
//! `RCLONE_RC_PASS`), never on its command line, which every user of the
//! machine can read. Connection strings reach it there too, as remotes of
//! its own ([`super::connection`]). Its stderr goes to our log at debug
//! level; the log says at info level which version started and where it
//! listens.
//!
//! **Who ends it.** The process gets `PR_SET_PDEATHSIG`: the kernel ends
//! it when the thread that started it ends. That thread is the waiter
//! below, which lives exactly as long as the process, so an agent that
//! dies without dropping anything (a `SIGKILL`) still takes its rclone
//! with it. The waiter leaves the exited process unreaped (`WNOWAIT`)
//! until it has noted the exit, so a signal [`Rcd::stop`] sends can never
//! reach another process that got the same pid.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::connection::Definition;
use super::transport::{self, RcdSocket};
use crate::locks::LockExt;
use crate::secrets::Secret;

/// How long rclone may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a stopped rclone may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How often a start looks whether the rcd accepts on its socket yet.
const SOCKET_POLL: Duration = Duration::from_millis(20);

/// The line rclone writes once it listens on TCP (none for a socket).
const LISTENING: &str = "Serving remote control on ";

/// The URL of calls through a Unix socket (the host is not looked up).
const SOCKET_URL: &str = "http://localhost/";

/// Which rclone, with which config: replicas that agree share one process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RcdSpec {
    /// A path, or a name looked up on `PATH`.
    pub binary: PathBuf,
    /// `None`: rclone's own lookup (`RCLONE_CONFIG`, else its default).
    pub config: Option<PathBuf>,
    /// More of rclone's global flags (tests: fewer low-level retries, so
    /// a server that is away shows as offline in seconds, not a minute).
    pub flags: Vec<String>,
    /// Remotes defined in the process's environment only: the stand-ins
    /// for connection strings ([`super::connection`]).
    pub remotes: Vec<Definition>,
}

/// Where a running rclone answers, and how to log in.
#[derive(Debug)]
pub struct Endpoint {
    /// `http://127.0.0.1:PORT/`, or [`SOCKET_URL`] through `socket`.
    pub url: String,
    /// The Unix socket it listens on, where its version offers one.
    pub socket: Option<PathBuf>,
    /// What `rclone version` said before this start (`v1.75.2`).
    pub version: String,
    pub user: String,
    pub pass: Secret,
    /// Which start of the process this is (1 for the first): a client that
    /// saw a call fail asks for a new one only if it is still this one.
    pub generation: u64,
}

impl Endpoint {
    /// Where it listens, for the log and status: `unix socket PATH` or
    /// `tcp 127.0.0.1:PORT`.
    pub fn transport(&self) -> String {
        match &self.socket {
            Some(socket) => format!("unix socket {}", socket.display()),
            None => format!(
                "tcp {}",
                self.url.trim_start_matches("http://").trim_end_matches('/')
            ),
        }
    }
}

/// Why rclone could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "rclone is not installed ({binary} was not found): install it (apt install rclone, or \
         see https://rclone.org/install/) or set rclone_binary to where it is"
    )]
    Missing { binary: String },
    #[error("cannot start {binary}: {reason}")]
    Failed { binary: String, reason: String },
}

/// One running process.
struct Process {
    endpoint: Arc<Endpoint>,
    pid: libc::pid_t,
    /// Set by the waiter once the process exited (before it is reaped).
    exited: Arc<Mutex<bool>>,
    waiter: Option<std::thread::JoinHandle<()>>,
    /// Removed once the process ended (dropped after it, in [`end`]).
    socket_dir: Option<RcdSocket>,
}

/// A lazily started, restarted-when-dead `rclone rcd`.
pub struct Rcd {
    spec: RcdSpec,
    process: Mutex<Option<Process>>,
    generation: Mutex<u64>,
}

impl Rcd {
    /// The agent's rclone for `spec`: the one already in use by another
    /// replica, or a new (not yet started) one.
    pub fn shared(spec: RcdSpec) -> Arc<Rcd> {
        static RUNNING: Mutex<Option<HashMap<RcdSpec, Weak<Rcd>>>> = Mutex::new(None);
        let mut running = RUNNING.locked();
        let running = running.get_or_insert_with(HashMap::new);
        running.retain(|_, rcd| rcd.strong_count() > 0);
        if let Some(rcd) = running.get(&spec).and_then(Weak::upgrade) {
            return rcd;
        }
        let rcd = Arc::new(Rcd::new(spec.clone()));
        running.insert(spec, Arc::downgrade(&rcd));
        rcd
    }

    /// An rclone of its own (tests; the agent uses [`Rcd::shared`]).
    pub fn new(spec: RcdSpec) -> Rcd {
        Rcd {
            spec,
            process: Mutex::new(None),
            generation: Mutex::new(0),
        }
    }

    pub fn spec(&self) -> &RcdSpec {
        &self.spec
    }

    /// Where the running rclone answers; started first when there is none
    /// or it exited.
    pub fn endpoint(&self) -> Result<Arc<Endpoint>, StartError> {
        let mut slot = self.process.locked();
        self.running(&mut slot)
    }

    /// Starts it again unless that already happened since `generation`
    /// was handed out: for a client whose call found the process gone
    /// (or hung).
    pub fn restart_after(&self, generation: u64) -> Result<Arc<Endpoint>, StartError> {
        let mut slot = self.process.locked();
        if slot
            .as_ref()
            .is_some_and(|p| p.endpoint.generation == generation)
        {
            end(slot.take());
        }
        self.running(&mut slot)
    }

    fn running(&self, slot: &mut Option<Process>) -> Result<Arc<Endpoint>, StartError> {
        if let Some(process) = slot.as_ref() {
            if !*process.exited.locked() {
                return Ok(process.endpoint.clone());
            }
            tracing::info!(
                binary = %self.spec.binary.display(),
                "rclone rcd exited; starting it again"
            );
        }
        end(slot.take());
        let process = self.start()?;
        let endpoint = process.endpoint.clone();
        *slot = Some(process);
        Ok(endpoint)
    }

    /// Where the running process answers, if one runs (nothing is
    /// started: for status).
    pub fn running_endpoint(&self) -> Option<Arc<Endpoint>> {
        let slot = self.process.locked();
        let process = slot.as_ref()?;
        (!*process.exited.locked()).then(|| process.endpoint.clone())
    }

    /// The pid of the running process, if one runs.
    pub fn pid(&self) -> Option<u32> {
        let slot = self.process.locked();
        let process = slot.as_ref()?;
        (!*process.exited.locked()).then_some(process.pid as u32)
    }

    /// Ends the running process, if any: `SIGTERM`, then `SIGKILL` after a
    /// grace period. The next [`Rcd::endpoint`] starts a new one.
    pub fn stop(&self) {
        let process = self.process.locked().take();
        end(process);
    }

    fn start(&self) -> Result<Process, StartError> {
        let binary = self.spec.binary.display().to_string();
        let generation = {
            let mut generation = self.generation.locked();
            *generation += 1;
            *generation
        };
        let user = "prism-sync".to_owned();
        let pass = random_hex(24).map_err(|e| StartError::Failed {
            binary: binary.clone(),
            reason: format!("no random password: {e}"),
        })?;
        // Asked at every start: the binary behind the name may be another
        // one than at the last start.
        let version = transport::probe_version(&self.spec.binary).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StartError::Missing {
                    binary: binary.clone(),
                }
            } else {
                StartError::Failed {
                    binary: binary.clone(),
                    reason: format!("cannot ask its version: {e}"),
                }
            }
        })?;
        let socket_dir = if version.offers_unix_socket() {
            RcdSocket::create().map_err(|e| StartError::Failed {
                binary: binary.clone(),
                reason: format!("no folder for its socket: {e}"),
            })?
        } else {
            None
        };
        let rc_addr = socket_dir
            .as_ref()
            .map_or_else(|| "127.0.0.1:0".to_owned(), RcdSocket::rc_addr);
        let mut command = Command::new(&self.spec.binary);
        command.args(["rcd", "--rc-addr", &rc_addr]);
        command.args([
            "--rc-serve",
            "--log-level",
            "INFO",
            // A move over a file of the same size and modification time
            // (to the backend's precision) would otherwise keep the old
            // one and drop the new as "unchanged": a record rewritten
            // within a second on SFTP, say.
            "--ignore-times",
        ]);
        if let Some(config) = &self.spec.config {
            command.arg("--config").arg(config);
        }
        command.args(&self.spec.flags);
        for definition in &self.spec.remotes {
            command.envs(definition.environment());
        }
        command
            .env("RCLONE_RC_USER", &user)
            .env("RCLONE_RC_PASS", &pass)
            // Our own log says when; rclone's lines need no date.
            .env("RCLONE_LOG_FORMAT", "")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of
        // the parent; it runs in the child between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                // Ended by the kernel when the waiter thread (which lives
                // as long as this process) ends: with the agent at the
                // latest.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let exited = Arc::new(Mutex::new(false));
        let (started, ready) = mpsc::channel();
        let waiter_exited = exited.clone();
        let waiter_binary = binary.clone();
        let waiter = std::thread::Builder::new()
            .name("rclone-rcd".into())
            .spawn(move || run_waiter(command, waiter_binary, started, waiter_exited))
            .map_err(|e| StartError::Failed {
                binary: binary.clone(),
                reason: format!("no thread to watch it: {e}"),
            })?;
        let deadline = Instant::now() + START_TIMEOUT;
        let mut pid = None;
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // On a socket rclone says nothing once it listens: look.
            let wait = if socket_dir.is_some() {
                left.min(SOCKET_POLL)
            } else {
                left
            };
            match ready.recv_timeout(wait) {
                Ok(Started::Spawned(spawned)) => pid = Some(spawned),
                Ok(Started::Listening(url)) => break url,
                Ok(Started::Failed(e)) => {
                    let _ = waiter.join();
                    return Err(e);
                }
                Err(_) if socket_dir.as_ref().is_some_and(RcdSocket::accepts) => {
                    break SOCKET_URL.to_owned();
                }
                Err(_) if socket_dir.is_some() && Instant::now() < deadline => {}
                Err(_) => {
                    if let Some(pid) = pid {
                        let exited = exited.locked();
                        if !*exited {
                            // SAFETY: not reaped yet (see `Rcd::stop`).
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                    }
                    let _ = waiter.join();
                    return Err(StartError::Failed {
                        binary,
                        reason: format!(
                            "rclone rcd did not start listening within {} s",
                            START_TIMEOUT.as_secs()
                        ),
                    });
                }
            }
        };
        let pid = pid.unwrap_or_default();
        let endpoint = Endpoint {
            url,
            socket: socket_dir.as_ref().map(|dir| dir.socket().to_owned()),
            version: version.text,
            user,
            pass: Secret::new(pass),
            generation,
        };
        tracing::info!(
            version = %endpoint.version,
            transport = %endpoint.transport(),
            pid,
            generation,
            "rclone rcd is listening"
        );
        Ok(Process {
            endpoint: Arc::new(endpoint),
            pid,
            exited,
            waiter: Some(waiter),
            socket_dir,
        })
    }
}

impl Drop for Rcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Ends `process` (if any) and waits for its waiter.
fn end(process: Option<Process>) {
    let Some(mut process) = process else {
        return;
    };
    let signal = |sig: libc::c_int| {
        let exited = process.exited.locked();
        if !*exited {
            // SAFETY: kill(2) with a pid the waiter has not reaped yet (it
            // reaps only after setting `exited`, under this lock).
            unsafe { libc::kill(process.pid, sig) };
        }
    };
    signal(libc::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while !*process.exited.locked() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(libc::SIGKILL);
    if let Some(waiter) = process.waiter.take() {
        let _ = waiter.join();
    }
    // Only now that the process is gone: it may still have listened.
    drop(process.socket_dir.take());
}

/// What the waiter tells the starter.
enum Started {
    Spawned(libc::pid_t),
    Listening(String),
    Failed(StartError),
}

/// The thread that starts the process and lives exactly as long as it:
/// it reports the address rclone listens on, passes its stderr on to our
/// log, and notes its exit.
fn run_waiter(
    mut command: Command,
    binary: String,
    started: mpsc::Sender<Started>,
    exited: Arc<Mutex<bool>>,
) {
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            *exited.locked() = true;
            let error = if e.kind() == std::io::ErrorKind::NotFound {
                StartError::Missing { binary }
            } else {
                StartError::Failed {
                    binary,
                    reason: e.to_string(),
                }
            };
            let _ = started.send(Started::Failed(error));
            return;
        }
    };
    let pid = child.id() as libc::pid_t;
    let _ = started.send(Started::Spawned(pid));
    let stderr = child.stderr.take().map(BufReader::new);
    let mut reported = false;
    let mut early = Vec::new();
    if let Some(stderr) = stderr {
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            if !reported {
                if let Some(at) = line.find(LISTENING) {
                    let url = line[at + LISTENING.len()..].trim().to_owned();
                    reported = true;
                    let _ = started.send(Started::Listening(url));
                } else if early.len() < 20 {
                    early.push(line.clone());
                }
            }
            tracing::debug!(target: "rclone", pid, "{line}");
        }
    }
    // Exited (or closed its stderr): wait for the exit without reaping,
    // note it, then reap. Until it is noted, the pid cannot be reused.
    // SAFETY: waitid(2) with a zeroed siginfo it fills in.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        );
    }
    *exited.locked() = true;
    let status = child.wait();
    if !reported {
        let _ = started.send(Started::Failed(StartError::Failed {
            binary,
            reason: format!(
                "rclone rcd exited ({}) before it listened: {}",
                status
                    .as_ref()
                    .map_or_else(|e| e.to_string(), |s| s.to_string()),
                early.join(" / ")
            ),
        }));
    }
    tracing::debug!(pid, ?status, "rclone rcd exited");
}

/// `bytes` random bytes as hex.
fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(std::io::Error::other)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
