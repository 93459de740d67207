//! The command line of `prism-syncd`: flags, environment, logging set-up,
//! and the one place that turns an outcome into an exit code.
//!
//! It builds the validated configuration (from the file, or from
//! `--local`/`--remote` for one ad-hoc pair) and calls [`agent::run`].

use std::path::PathBuf;

use clap::Parser;

use crate::agent::{self, AgentOptions, exit};
use crate::config::{Config, ConfigError, Overrides, RawPair};
use crate::model::Strategy;

/// Keeps local folders in two-way sync with a remote.
#[derive(Debug, Parser)]
#[command(name = "prism-syncd", version, about, long_about = None)]
pub struct SyncdArgs {
    /// The config file [env: PRISM_SYNC_CONFIG] [default: the user's config dir]/prism-sync/config.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the journal, trash and lock live [env: PRISM_SYNC_STATE_DIR].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The control socket [env: PRISM_SYNC_SOCKET].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Sync one ad-hoc pair: this local folder ...
    #[arg(long, value_name = "DIR", requires = "remote")]
    pub local: Option<PathBuf>,
    /// ... with this remote (file:///path, sftp://…, webdav://…).
    #[arg(long, value_name = "URL", requires = "local")]
    pub remote: Option<String>,
    /// The conflict strategy of the ad-hoc pair.
    #[arg(long, value_name = "STRATEGY", requires = "local", value_parser = ["manual", "keep_local", "keep_remote", "auto_merge"])]
    pub conflict: Option<String>,
    /// The device name (overrides the config; default: the host name).
    #[arg(long, value_name = "NAME")]
    pub device: Option<String>,
    /// Sync every pair once and exit: 0 converged, 1 errors, 3 unresolved conflicts.
    #[arg(long)]
    pub once: bool,
    /// Log format on stderr.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// Runs `prism-syncd` and returns its exit code.
pub fn syncd_main() -> u8 {
    let args = SyncdArgs::parse();
    init_logging(&args.log_format);
    match build_options(&args) {
        Ok(options) => match agent::run(options) {
            Ok(code) => code,
            Err(e) => {
                // One line: a text log goes to stderr too, so the error is
                // logged only where the log is meant for a machine.
                if args.log_format == "json" {
                    tracing::error!("{e}");
                } else {
                    eprintln!("prism-syncd: {e}");
                }
                e.exit_code()
            }
        },
        Err(e) => {
            eprintln!("prism-syncd: {e}");
            exit::CONFIG
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a terminal: under systemd or launchd stderr is
    // the journal or a log file, where escape sequences are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn build_options(args: &SyncdArgs) -> Result<AgentOptions, ConfigError> {
    let overrides = Overrides {
        config_file: args.config.clone(),
        state_dir: args.state_dir.clone(),
        socket: args.socket.clone(),
    }
    .with_env();
    let paths = overrides.resolve()?;
    let mut config = match (&args.local, &args.remote) {
        (Some(local), Some(remote)) => {
            adhoc_config(local, remote, args.conflict.as_deref(), &paths.config_file)?
        }
        _ => Config::load(&paths.config_file)?,
    };
    if let Some(device) = &args.device {
        config.agent.device = device.clone();
    }
    Ok(AgentOptions {
        paths,
        config,
        once: args.once,
        config_editable: args.local.is_none(),
    })
}

/// One pair named `default` from the command line, with default agent
/// settings (no config file is read).
fn adhoc_config(
    local: &std::path::Path,
    remote: &str,
    conflict: Option<&str>,
    file: &std::path::Path,
) -> Result<Config, ConfigError> {
    let local = std::path::absolute(local).unwrap_or_else(|_| local.to_path_buf());
    let raw = RawPair {
        name: "default".to_owned(),
        local: local.display().to_string(),
        remote: remote.to_owned(),
        conflict: Some(conflict.unwrap_or(Strategy::Manual.as_str()).to_owned()),
        ignore: Vec::new(),
        ..RawPair::default()
    };
    let config = crate::config::RawConfig {
        agent: Default::default(),
        pair: vec![raw],
        api: None,
    };
    config.validate(&file.with_file_name("(command line)"))
}
