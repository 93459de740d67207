//! The agent: what `prism-syncd` runs. It takes the single-instance lock,
//! opens the journal, builds one engine per pair, starts the watchers, the
//! per-pair schedulers and the control socket, and stops all of it cleanly
//! on SIGTERM or SIGINT.
//!
//! The agent owns process-wide concerns (lock, signals, runtime, the set of
//! pairs); it decides nothing about files. `--once` runs every pair one time
//! without watchers or socket, for scripts, cron and benchmarks.

pub mod control;
mod ignore_file;
pub mod local_watch;
pub mod lock;
pub mod notify;
pub mod pair;
pub mod remote_watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::api::auth::TokenKeys;
use crate::api::http;
use crate::clock::Clock;
use crate::config::{AgentConfig, Config, PairConfig, Paths};
use crate::engine::{EngineSettings, PairEngine, SyncRequest};
use crate::journal::{Journal, SyncStatus};
use crate::locks::LockExt;
use crate::model::{Scope, Side};
use crate::remote::{self, LocalFolder};
use crate::tracker::ignore::IgnoreRules;
use crate::tracker::watch::WatchEvent;

use local_watch::LocalWatch;
use lock::InstanceLock;
use pair::{PairMsg, PairStatus, Timing};
use remote_watch::RemoteWatch;

/// Exit codes, decided in one place.
pub mod exit {
    /// Converged (or a clean shutdown).
    pub const OK: u8 = 0;
    /// A sync failed, or the agent hit a runtime error.
    pub const FAILED: u8 = 1;
    /// `--once` finished with unresolved conflicts.
    pub const CONFLICTS: u8 = 3;
    /// The configuration is unusable: restarting will not help
    /// (systemd's `RestartPreventExitStatus`).
    pub const CONFIG: u8 = 78;
}

/// How the agent was asked to run.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub paths: Paths,
    pub config: Config,
    /// Sync every pair once and exit.
    pub once: bool,
    /// Whether `pair add`/`pair remove` may edit the config file: not for
    /// an ad-hoc pair from the command line, which never read it.
    pub config_editable: bool,
}

/// An error that stops the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    /// The journal could not be opened or written at start-up. Its error
    /// names the file and what to do; the path is added only when it does
    /// not.
    #[error("{}", journal_message(path, source))]
    Journal {
        path: PathBuf,
        source: Box<crate::journal::JournalError>,
    },
    #[error("{0}")]
    Runtime(String),
}

fn journal_message(path: &Path, source: &crate::journal::JournalError) -> String {
    use crate::journal::JournalError;
    match source {
        JournalError::Open { .. } | JournalError::TooNew { .. } | JournalError::Migrate { .. } => {
            source.to_string()
        }
        other => format!("the journal {}: {other}", path.display()),
    }
}

impl AgentError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Config(_) => exit::CONFIG,
            _ => exit::FAILED,
        }
    }
}

/// The pairs and the shared state the control API serves.
pub struct Agent {
    pub paths: Paths,
    pub agent_config: AgentConfig,
    pub config_file: Option<PathBuf>,
    pub journal: Arc<Mutex<Journal>>,
    pub pairs: Mutex<BTreeMap<String, PairHandle>>,
    /// Held by whoever adds or removes a pair, from the check that the
    /// pair fits beside the others to the config file written: two adds
    /// at once (HTTP clients, a retrying one) would both pass the check
    /// and both run, and both read the config file before either wrote.
    pub pair_edits: Mutex<()>,
    pub started_at: SystemTime,
    runtime: tokio::runtime::Handle,
}

/// One running pair.
pub struct PairHandle {
    pub config: PairConfig,
    pub engine: Arc<PairEngine>,
    pub status: Arc<Mutex<PairStatus>>,
    pub inbox: mpsc::UnboundedSender<PairMsg>,
    task: tokio::task::JoinHandle<()>,
    pub watcher: local_watch::SharedWatcher,
}

/// Runs the agent until a signal (or, with `--once`, until every pair has
/// synced once). Returns the process exit code.
pub fn run(options: AgentOptions) -> Result<u8, AgentError> {
    let paths = &options.paths;
    create_private_dir(&paths.state_dir)?;
    let _lock = InstanceLock::acquire(&paths.state_dir, &paths.lock_file())?;
    let journal = Journal::open(&paths.journal()).map_err(|source| AgentError::Journal {
        path: paths.journal(),
        source: Box::new(source),
    })?;
    let interrupted = journal.mark_interrupted_syncs().unwrap_or(0);
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "syncs were interrupted by the last shutdown or crash; they resume now"
        );
    }
    let journal = Arc::new(Mutex::new(journal));

    if options.once {
        return run_once(&options, journal);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("prism-syncd")
        .build()
        .map_err(|e| AgentError::Runtime(format!("cannot start the async runtime: {e}")))?;
    let code = runtime.block_on(serve(options.clone(), journal.clone()))?;
    if let Err(e) = journal.locked().checkpoint() {
        tracing::warn!(error = %e, "cannot checkpoint the journal at shutdown");
    }
    Ok(code)
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), AgentError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        AgentError::Runtime(format!(
            "cannot create the state dir {}: {e}",
            dir.display()
        ))
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// Builds the engine of one pair. Errors here are configuration errors:
/// the pair cannot run as configured.
pub fn build_engine(
    pair: &PairConfig,
    agent: &AgentConfig,
    paths: &Paths,
    journal: &Arc<Mutex<Journal>>,
) -> Result<PairEngine, AgentError> {
    let host = remote::RemoteHost {
        config_dir: paths.config_file.parent(),
        state_dir: &paths.state_dir,
        device: &agent.device,
        parallel_transfers: agent.parallel_transfers,
    };
    let remote = remote::open_remote(pair, host)
        .map_err(|e| AgentError::Config(format!("pair {:?}: {e}", pair.name)))?;
    let ignore = IgnoreRules::load(&pair.local, &pair.ignore)
        .map_err(|e| AgentError::Config(format!("pair {:?}: {e}", pair.name)))?;
    let pair_id = journal
        .locked()
        .upsert_pair(
            &pair.name,
            &pair.local.display().to_string(),
            &pair.remote.to_string(),
        )
        .map_err(|source| AgentError::Journal {
            path: paths.journal(),
            source: Box::new(source),
        })?;
    let local = LocalFolder::local(pair.local.clone(), paths.trash().join(&pair.name));
    let settings = EngineSettings {
        pair_name: pair.name.clone(),
        ignore_patterns: pair.ignore.clone(),
        device: agent.device.clone(),
        parallel_transfers: agent.parallel_transfers,
        strategy: pair.conflict,
        local_root: pair.local.clone(),
        // Long enough for a round with a large transfer (the lease is renewed
        // once per round); a crashed holder on this host is detected at once.
        lease_ttl: Duration::from_secs(600),
        trash_retention: agent.trash_retention,
        clock: Clock::system(),
    };
    Ok(PairEngine::new(
        pair_id,
        Box::new(local),
        remote,
        journal.clone(),
        settings,
        ignore,
    ))
}

fn run_once(options: &AgentOptions, journal: Arc<Mutex<Journal>>) -> Result<u8, AgentError> {
    let mut code = exit::OK;
    for pair in &options.config.pairs {
        let engine = build_engine(pair, &options.config.agent, &options.paths, &journal)?;
        let report = engine.sync(&SyncRequest {
            scope: Scope::Full,
            trigger: "once".to_owned(),
            sync_id: None,
            confirmed: false,
            poll_only: false,
        });
        let counts = &report.counts;
        // A run that found nothing to do takes no sync id.
        let sync_id = if report.sync_id.is_empty() {
            "(nothing to do)"
        } else {
            &report.sync_id
        };
        println!(
            "{}: {} {} (uploaded {}, downloaded {}, deleted {}, moved {}, conflicts {}, errors {})",
            pair.name,
            sync_id,
            report.status.as_str(),
            counts.uploaded,
            counts.downloaded,
            counts.deleted_local + counts.deleted_remote,
            counts.moved,
            counts.conflicts,
            counts.errors
        );
        if let Some(error) = &report.error {
            eprintln!("{}: {error}", pair.name);
        }
        // Not synced, but not failed either: say why.
        if let Some(holder) = &report.waiting {
            eprintln!(
                "{}: not synced, {}",
                pair.name,
                pair::waiting_detail(holder)
            );
        }
        // A failure outranks conflicts, which outrank success: a script
        // must not mistake a failed pair for one that merely has conflicts.
        let this = match report.status {
            SyncStatus::Completed => exit::OK,
            SyncStatus::CompletedWithConflicts => exit::CONFLICTS,
            _ => exit::FAILED,
        };
        if this == exit::FAILED || code == exit::OK {
            code = this;
        }
    }
    if let Err(e) = journal.locked().checkpoint() {
        tracing::warn!(error = %e, "cannot checkpoint the journal");
    }
    Ok(code)
}

impl Agent {
    /// Starts a pair: its engine, watcher and scheduler.
    pub fn start_pair(&self, pair: PairConfig) -> Result<(), AgentError> {
        let engine = Arc::new(build_engine(
            &pair,
            &self.agent_config,
            &self.paths,
            &self.journal,
        )?);
        let (inbox, receiver) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(PairStatus::default()));
        let local_watch = LocalWatch::start(
            &pair.name,
            pair.local.clone(),
            engine.ignore_rules(),
            self.forward_events(&inbox, PairMsg::Watch),
            &status,
        );
        let watcher = local_watch.shared();
        let remote_watch = engine.remote().watch_root().map(|root| {
            RemoteWatch::start(
                &pair.name,
                root.to_path_buf(),
                engine.ignore_rules(),
                self.forward_events(&inbox, PairMsg::RemoteWatch),
            )
        });
        let timing = Timing {
            debounce: self.agent_config.debounce,
            remote_poll: self.agent_config.remote_poll,
            safety_scan: self.agent_config.safety_scan,
        };
        let task = self.runtime.spawn(pair::run(
            engine.clone(),
            receiver,
            status.clone(),
            timing,
            remote_watch,
            local_watch,
        ));
        let handle = PairHandle {
            config: pair.clone(),
            engine,
            status,
            inbox,
            task,
            watcher,
        };
        self.pairs.locked().insert(pair.name.clone(), handle);
        Ok(())
    }

    /// A channel for a watcher's events, each passed on to the pair's
    /// scheduler as `wrap` makes it a message.
    fn forward_events(
        &self,
        inbox: &mpsc::UnboundedSender<PairMsg>,
        wrap: fn(WatchEvent) -> PairMsg,
    ) -> mpsc::UnboundedSender<WatchEvent> {
        let (events, mut receiver) = mpsc::unbounded_channel();
        let forward = inbox.clone();
        self.runtime.spawn(async move {
            while let Some(event) = receiver.recv().await {
                if forward.send(wrap(event)).is_err() {
                    break;
                }
            }
        });
        events
    }

    /// Removes trashed versions older than the retention, on both sides of
    /// every pair.
    pub fn purge_trash(&self) {
        let retention = self.agent_config.trash_retention;
        let engines: Vec<Arc<PairEngine>> = self
            .pairs
            .locked()
            .values()
            .map(|h| h.engine.clone())
            .collect();
        for engine in engines {
            for (side, replica) in [
                (Side::Local, engine.local()),
                (Side::Remote, engine.remote()),
            ] {
                let purged = replica.purge_trash(retention);
                if purged.is_ok() {
                    engine.forget_purged_versions(side, retention);
                }
                match purged {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(pair = %engine.name, trash = %replica.describe(), batches = n, "purged old trash")
                    }
                    Err(e) => {
                        tracing::warn!(pair = %engine.name, error = %e, "cannot purge the trash")
                    }
                }
            }
        }
    }

    /// Stops a pair's scheduler (after its current action) and forgets it.
    pub async fn stop_pair(&self, name: &str) -> bool {
        let handle = self.pairs.locked().remove(name);
        match handle {
            Some(handle) => {
                handle
                    .engine
                    .cancel_flag()
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                let _ = handle.inbox.send(PairMsg::Shutdown);
                let _ = handle.task.await;
                true
            }
            None => false,
        }
    }
}

/// The long-running agent: pairs, socket, signals.
async fn serve(options: AgentOptions, journal: Arc<Mutex<Journal>>) -> Result<u8, AgentError> {
    let agent = Arc::new(Agent {
        paths: options.paths.clone(),
        agent_config: options.config.agent.clone(),
        config_file: options
            .config_editable
            .then(|| options.paths.config_file.clone()),
        journal,
        pairs: Mutex::new(BTreeMap::new()),
        pair_edits: Mutex::new(()),
        started_at: SystemTime::now(),
        runtime: tokio::runtime::Handle::current(),
    });
    crate::remote::git::replica::remove_stale_mirrors(
        &options.paths.state_dir,
        &options.config.pairs,
    );
    for pair in &options.config.pairs {
        agent.start_pair(pair.clone())?;
    }
    let purger = agent.clone();
    tokio::spawn(async move {
        let mut daily = tokio::time::interval(Duration::from_secs(24 * 3600));
        loop {
            daily.tick().await;
            let agent = purger.clone();
            let _ = tokio::task::spawn_blocking(move || agent.purge_trash()).await;
        }
    });
    let shutdown = async {
        shutdown_signal().await;
        notify::stopping();
    };
    let keys = Arc::new(
        TokenKeys::load_or_create(&options.paths.state_dir)
            .map_err(|e| AgentError::Runtime(e.to_string()))?,
    );
    let control: Arc<dyn crate::api::Control> =
        Arc::new(control::AgentControl::new(agent.clone(), keys.clone()));
    // The HTTP listener binds before anything is served, so a bad address
    // or certificate stops the agent at start-up (exit 78) rather than
    // leaving it half reachable.
    let http = match &options.config.api {
        Some(config) => Some(
            http::bind(config)
                .await
                .map_err(|e| AgentError::Config(e.to_string()))?,
        ),
        None => None,
    };
    let bound =
        crate::api::bind(&options.paths.socket).map_err(|e| AgentError::Runtime(e.to_string()))?;
    tracing::info!(
        pairs = options.config.pairs.len(),
        socket = %options.paths.socket.display(),
        state_dir = %options.paths.state_dir.display(),
        "prism-syncd is running"
    );
    // Ready means a client can connect: the journal is open, every pair has
    // started and the socket listens (connections queue until `serve`
    // accepts them).
    notify::ready(&format!(
        "syncing {} pair(s); control socket {}",
        options.config.pairs.len(),
        options.paths.socket.display()
    ));
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let http_task = http.map(|listener| {
        let control = control.clone();
        let mut stopped = http_stopped.clone();
        let pair_roots = options
            .config
            .api
            .as_ref()
            .and_then(|api| pair_roots(api, &options.paths));
        tokio::spawn(listener.serve(control, keys, pair_roots, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }))
    });
    bound.serve(control, shutdown).await;
    let _ = stop_http.send(true);
    if let Some(task) = http_task {
        let _ = task.await;
    }
    tracing::info!("stopping");
    let names: Vec<String> = agent.pairs.locked().keys().cloned().collect();
    for name in &names {
        if let Some(handle) = agent.pairs.locked().get(name) {
            handle
                .engine
                .cancel_flag()
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    for name in names {
        agent.stop_pair(&name).await;
    }
    Ok(exit::OK)
}

/// Resolves on SIGTERM or SIGINT.
/// Where admin tokens may add pairs over HTTP (`api.pair_roots`), kept
/// apart from the agent's own files: its state dir, its config dir, the
/// socket's folder, the TLS certificate and key, and `~/.ssh` (the keys
/// its SFTP and git pairs log in with). `None` without roots.
fn pair_roots(
    api: &crate::config::api::ApiConfig,
    paths: &crate::config::Paths,
) -> Option<crate::api::pair_roots::PairRoots> {
    let mut own: Vec<&Path> = vec![&paths.state_dir];
    own.extend(paths.config_file.parent());
    own.extend(paths.socket.parent());
    if let Some(tls) = &api.tls {
        own.extend([tls.cert.as_path(), tls.key.as_path()]);
    }
    let ssh = directories::BaseDirs::new().map(|dirs| dirs.home_dir().join(".ssh"));
    own.extend(ssh.as_deref());
    // Flags may name them relative to where the agent started; the check
    // compares absolute paths.
    let protected = own
        .into_iter()
        .map(|path| {
            if path.as_os_str().is_empty() {
                Path::new(".")
            } else {
                path
            }
        })
        .filter_map(|path| std::path::absolute(path).ok())
        .collect();
    crate::api::pair_roots::PairRoots::new(
        api.pair_roots.clone(),
        protected,
        api.pair_remotes.clone(),
    )
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
