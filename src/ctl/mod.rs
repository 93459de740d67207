//! `prism-syncctl`: parses the command line, calls the agent through
//! [`api::Client`](crate::api::Client), prints the JSON body (`--json`) or a
//! readable rendering ([`render`]), and decides the exit code in one place.
//!
//! It never builds a request by hand and never talks to the journal: what
//! it shows is what the agent answered.
//!
//! Exit codes: 0 success; 1 the agent refused the request or another error
//! (and `sync wait` on a failed or interrupted run); 2 usage error; 3 `sync
//! wait` on a run that completed with conflicts; 4 the agent is not running;
//! 5 `sync wait --timeout` ran out while the run was still in progress.

mod docs;
mod password;
mod render;
mod service;
mod token;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

use clap::builder::PossibleValue;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::api::wire::{self, Strategy, SyncState};
use crate::api::{Client, ClientError, default_socket_path};
use crate::terminal;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_CONFLICTS: i32 = 3;
pub const EXIT_NOT_RUNNING: i32 = 4;
pub const EXIT_TIMED_OUT: i32 = 5;

/// How often `status --watch` redraws and `sync wait` polls.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Control client for the prism-syncd file-sync agent.
#[derive(Debug, Parser)]
#[command(name = "prism-syncctl", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    /// The agent's socket [default: $PRISM_SYNC_SOCKET, else prism-syncd.sock
    /// in the user's runtime dir].
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the agent's JSON answer (errors as the spec's error object).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES_HELP: &str = "Exit codes: 0 ok, 1 error (or `sync wait` on a failed run), \
2 usage, 3 `sync wait` on a run with conflicts, 4 agent not running, 5 `sync wait` timed out.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the agent, its pairs, transfers and problems.
    Status {
        /// Redraw every half second until Ctrl-C (with --json: one JSON line each time).
        #[arg(long)]
        watch: bool,
    },
    /// Start, inspect or wait for sync runs.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// List conflicts (unresolved ones unless --all).
    Conflicts {
        #[arg(long, value_name = "PAIR")]
        pair: Option<String>,
        /// Include resolved conflicts.
        #[arg(long)]
        all: bool,
    },
    /// Resolve one conflict.
    Resolve {
        conflict_id: String,
        #[arg(long)]
        strategy: Strategy,
        /// With --strategy manual: a file whose content becomes the resolved version.
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
    },
    /// Show the change log, newest first.
    Changes {
        #[arg(long, value_name = "PAIR")]
        pair: Option<String>,
        /// An RFC 3339 time, a date (2025-02-09) or an age (90s, 15m, 2h, 7d).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Only paths equal to PREFIX or below it.
        #[arg(long, value_name = "PREFIX")]
        path: Option<String>,
        /// Only changes made by the device named D (on any device's journal).
        #[arg(long, value_name = "D")]
        device: Option<String>,
        #[arg(long, value_name = "N", default_value_t = wire::DEFAULT_CHANGES_LIMIT)]
        limit: u32,
    },
    /// List the versions of a file the pair still holds: the current one
    /// and those in the trash on either side.
    History {
        /// The file: a path inside a pair's folder, or relative to the
        /// folder of --pair.
        path: PathBuf,
        #[arg(long, value_name = "PAIR")]
        pair: Option<String>,
    },
    /// Bring back a version `history` lists; the file it replaces goes to
    /// the trash, and the next sync carries the restored one everywhere.
    Restore {
        /// The file: a path inside a pair's folder, or relative to the
        /// folder of --pair.
        path: PathBuf,
        /// A version number from `history`.
        #[arg(long, value_name = "V")]
        version: String,
        #[arg(long, value_name = "PAIR")]
        pair: Option<String>,
    },
    /// Stop syncing a pair (every pair without PAIR) until resumed.
    Pause { pair: Option<String> },
    /// Resume a paused pair (every pair without PAIR).
    Resume { pair: Option<String> },
    /// Add, list or remove pairs.
    #[command(subcommand)]
    Pair(PairCommand),
    /// Let a pair apply the deletions the mass-deletion guard held back.
    ConfirmDeletions { pair: String },
    /// Print what happens in the agent as it happens (syncs, conflicts,
    /// pair states, transfers) until Ctrl-C; with --json one line each.
    Events,
    /// Issue, list or revoke bearer tokens for the HTTP API.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Start prism-syncd at login (systemd user unit or launchd agent),
    /// stop doing so, or ask the service manager about it.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Store, remove or locate the login password of an SFTP or WebDAV
    /// remote (OS secret store, else an owner-only file; no agent needed).
    #[command(subcommand)]
    Password(password::PasswordCommand),
    /// Print a shell completion script on stdout.
    Completions {
        shell: docs::Shell,
        /// The binary to complete.
        #[arg(long, value_name = "BINARY", default_value = "prism-syncctl")]
        binary: docs::Binary,
    },
    /// Write the man pages of prism-syncd and prism-syncctl into DIR (for packagers).
    #[command(hide = true)]
    Man {
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SyncCommand {
    /// Start a sync of PAIR, or of every pair.
    Start { pair: Option<String> },
    /// Show one sync run.
    Status { sync_id: String },
    /// Wait until a sync run ends: exit 0 completed, 3 with conflicts, 1 failed or interrupted.
    Wait {
        sync_id: String,
        /// Give up after SECS seconds (exit 5).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum PairCommand {
    /// Add a pair and start syncing it.
    Add {
        name: String,
        #[arg(long, value_name = "DIR")]
        local: PathBuf,
        #[arg(long, value_name = "URL")]
        remote: String,
        /// The default conflict strategy.
        #[arg(long, value_name = "S")]
        conflict: Option<Strategy>,
        /// A gitignore-style pattern; repeat for several.
        #[arg(long, value_name = "PATTERN")]
        ignore: Vec<String>,
    },
    /// List the pairs.
    List,
    /// Stop syncing a pair and forget it (files stay on both sides).
    Remove { name: String },
}

impl ValueEnum for Strategy {
    fn value_variants<'a>() -> &'a [Self] {
        &Strategy::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.as_str()))
    }
}

/// Runs `prism-syncctl` with the process's arguments and returns the exit
/// code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    let command = match prepare(cli.command) {
        Ok(command) => command,
        Err(err) => {
            let _ = err.print();
            return err.exit_code();
        }
    };
    // These need no agent: they must work before one was ever started.
    let command = match command {
        Command::Service(command) => return service::run(command, cli.json),
        Command::Password(command) => return password::run(command, cli.json),
        Command::Completions { shell, binary } => return docs::completions(shell, binary),
        Command::Man { out_dir } => return docs::man_pages(&out_dir),
        command => command,
    };
    let socket = cli.socket.unwrap_or_else(default_socket_path);
    match execute(command, &socket, cli.json) {
        Ok(code) => code,
        Err(err) => report(&err, cli.json),
    }
}

/// Checks and completes what can be checked without the agent: paths
/// become absolute (the agent's working directory is not ours), and
/// `--from` goes only with `manual`.
fn prepare(mut command: Command) -> Result<Command, clap::Error> {
    use clap::error::ErrorKind;
    let usage = |kind, message: String| Cli::command().error(kind, message);
    match &mut command {
        Command::Resolve {
            strategy,
            from: Some(file),
            ..
        } => {
            if *strategy != Strategy::Manual {
                return Err(usage(
                    ErrorKind::ArgumentConflict,
                    format!(
                        "--from goes only with --strategy manual, not {}",
                        strategy.as_str()
                    ),
                ));
            }
            *file = absolute(file).map_err(|msg| usage(ErrorKind::Io, msg))?;
            if !file.is_file() {
                return Err(usage(
                    ErrorKind::Io,
                    format!("--from {}: no such file", file.display()),
                ));
            }
        }
        Command::Pair(PairCommand::Add { local, .. }) => {
            *local = absolute(local).map_err(|msg| usage(ErrorKind::Io, msg))?;
        }
        // Without --pair the file is named as the shell sees it: from
        // here, which is not the agent's working directory.
        Command::History {
            path, pair: None, ..
        }
        | Command::Restore {
            path, pair: None, ..
        } => {
            *path = absolute(path).map_err(|msg| usage(ErrorKind::Io, msg))?;
        }
        _ => {}
    }
    Ok(command)
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|err| format!("cannot resolve {}: {err}", path.display()))
}

fn execute(command: Command, socket: &Path, json: bool) -> Result<i32, ClientError> {
    let mut client = Client::connect(socket)?;
    let now = SystemTime::now();
    match command {
        Command::Status { watch: false } => {
            let status = client.status()?;
            Ok(emit(json, &status, |s| render::status(s, now)))
        }
        Command::Status { watch: true } => watch_status(&mut client, json),
        Command::Sync(SyncCommand::Start { pair }) => {
            let req = wire::StartSyncRequest {
                pair,
                ..wire::StartSyncRequest::default()
            };
            Ok(emit(json, &client.start_sync(&req)?, render::started))
        }
        Command::Sync(SyncCommand::Status { sync_id }) => {
            let status = client.sync_status(&sync_id)?;
            Ok(emit(json, &status, |s| render::sync_status(s, now)))
        }
        Command::Sync(SyncCommand::Wait { sync_id, timeout }) => wait_for_sync(
            &mut client,
            &sync_id,
            timeout.map(Duration::from_secs),
            json,
        ),
        Command::Conflicts { pair, all } => {
            let list = client.conflicts(pair.as_deref(), all)?;
            Ok(emit(json, &list, |l| render::conflicts(l, all, now)))
        }
        Command::Resolve {
            conflict_id,
            strategy,
            from,
        } => {
            let req = wire::ResolveRequest {
                conflict_id,
                resolution_strategy: strategy,
                merged_file: from.map(|f| f.to_string_lossy().into_owned()),
            };
            let resp = client.resolve(&req)?;
            Ok(emit(json, &resp, |r| render::resolved(&req, r)))
        }
        Command::Changes {
            pair,
            since,
            path,
            device,
            limit,
        } => {
            let query = wire::ChangesQuery {
                pair,
                since,
                path,
                device,
                limit,
            };
            Ok(emit(json, &client.changes(&query)?, render::changes))
        }
        Command::History { path, pair } => {
            let query = wire::HistoryQuery {
                pair,
                path: path.to_string_lossy().into_owned(),
            };
            Ok(emit(json, &client.history(&query)?, render::history))
        }
        Command::Restore {
            path,
            version,
            pair,
        } => {
            let req = wire::RestoreRequest {
                pair,
                path: path.to_string_lossy().into_owned(),
                version,
            };
            Ok(emit(json, &client.restore(&req)?, render::restored))
        }
        Command::Pause { pair } => Ok(emit(json, &client.pause(pair.as_deref())?, render::ack)),
        Command::Resume { pair } => Ok(emit(json, &client.resume(pair.as_deref())?, render::ack)),
        Command::Pair(PairCommand::Add {
            name,
            local,
            remote,
            conflict,
            ignore,
        }) => {
            let spec = wire::PairSpec {
                name,
                local: local.to_string_lossy().into_owned(),
                remote,
                conflict,
                ignore,
            };
            Ok(emit(json, &client.pair_add(&spec)?, render::pair_added))
        }
        Command::Pair(PairCommand::List) => Ok(emit(json, &client.pair_list()?, render::pairs)),
        Command::Pair(PairCommand::Remove { name }) => {
            Ok(emit(json, &client.pair_remove(&name)?, render::ack))
        }
        Command::ConfirmDeletions { pair } => {
            Ok(emit(json, &client.confirm_deletions(&pair)?, render::ack))
        }
        Command::Token(token::TokenCommand::Issue {
            role,
            pairs,
            ttl,
            name,
        }) => {
            let issued = client.issue_token(&token::request(role, pairs, ttl, name))?;
            // The token alone, so `TOKEN=$(prism-syncctl token issue …)` works.
            Ok(emit(json, &issued, |t| format!("{}\n", t.token)))
        }
        Command::Events => follow_events(&mut client, json),
        Command::Token(token::TokenCommand::List) => {
            Ok(emit(json, &client.tokens()?, |l| render::tokens(l, now)))
        }
        Command::Token(token::TokenCommand::Revoke { id }) => Ok(emit(
            json,
            &client.revoke_token(&id)?,
            render::token_revoked,
        )),
        Command::Service(_)
        | Command::Password(_)
        | Command::Completions { .. }
        | Command::Man { .. } => {
            unreachable!("run() handles the commands that need no agent")
        }
    }
}

/// Prints `value` as pretty JSON or through `render`, and reports success.
fn emit<T: Serialize>(json: bool, value: &T, render: impl FnOnce(&T) -> String) -> i32 {
    if json {
        print_json(value, true);
    } else {
        print_out(&render(value));
    }
    EXIT_OK
}

/// Prints `value` as JSON, exactly: its strings are the agent's, and the
/// JSON encoder escapes control characters itself.
fn print_json<T: Serialize>(value: &T, pretty: bool) {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    write_stdout(&format!("{}\n", text.expect("wire types always serialize")));
}

/// Prints human output. Values that came from names, servers or the
/// journal are escaped where they are put in (a line break in one too);
/// this escapes whatever control or bidirectional character is left, so
/// none reaches the terminal even if a value was missed.
fn print_out(text: &str) {
    write_stdout(&terminal::escape_keeping_lines(text));
}

/// Prints a human error sentence on stderr, escaped like [`print_out`].
fn print_err(sentence: &str) {
    let text = format!("prism-syncctl: {sentence}\n");
    let _ = std::io::stderr().write_all(terminal::escape_keeping_lines(&text).as_bytes());
}

/// Writes to stdout, ignoring a closed pipe (`prism-syncctl changes | head`).
fn write_stdout(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// Redraws the status until interrupted or the agent goes away.
fn watch_status(client: &mut Client, json: bool) -> Result<i32, ClientError> {
    loop {
        let status = client.status()?;
        if json {
            print_json(&status, false);
        } else {
            // Clear the screen and move the cursor home before each frame:
            // the one escape sequence of ours, written apart from the text.
            write_stdout("\x1b[H\x1b[2J");
            print_out(&render::status(&status, SystemTime::now()));
        }
        sleep(POLL_INTERVAL);
    }
}

/// Prints events as they come, until interrupted or the agent goes away.
fn follow_events(client: &mut Client, json: bool) -> Result<i32, ClientError> {
    let mut after = None;
    loop {
        let list = client.events(after)?;
        for event in &list.events {
            if json {
                print_json(event, false);
            } else {
                print_out(&render::event(event));
            }
        }
        after = Some(list.last_id);
    }
}

fn wait_for_sync(
    client: &mut Client,
    sync_id: &str,
    timeout: Option<Duration>,
    json: bool,
) -> Result<i32, ClientError> {
    let started = Instant::now();
    loop {
        let status = client.sync_status(sync_id)?;
        let code = match status.status {
            SyncState::SyncInProgress => match timeout {
                Some(limit) if started.elapsed() >= limit => EXIT_TIMED_OUT,
                _ => {
                    sleep(POLL_INTERVAL);
                    continue;
                }
            },
            SyncState::Completed => EXIT_OK,
            SyncState::CompletedWithConflicts => EXIT_CONFLICTS,
            SyncState::Failed | SyncState::Interrupted => EXIT_FAILURE,
        };
        emit(json, &status, |s| render::sync_status(s, SystemTime::now()));
        if code == EXIT_TIMED_OUT && !json {
            print_err(&format!(
                "{sync_id} is still in progress after {} s",
                started.elapsed().as_secs()
            ));
        }
        return Ok(code);
    }
}

/// Prints an error (the spec's error object on stdout with `--json`, a
/// sentence on stderr without) and returns its exit code.
fn report(err: &ClientError, json: bool) -> i32 {
    if json {
        print_json(&error_body(err), true);
    } else {
        let text = match err {
            ClientError::Api(api) => match &api.details {
                Some(details) => format!(
                    "{}: {}",
                    terminal::escape(&api.message),
                    terminal::escape(details)
                ),
                None => terminal::escape(&api.message).into_owned(),
            },
            other => other.to_string(),
        };
        print_err(&text);
    }
    match err {
        ClientError::NotRunning { .. } => EXIT_NOT_RUNNING,
        _ => EXIT_FAILURE,
    }
}

/// The spec's error object for any client error; failures that happen
/// before or around the agent get the HTTP status that fits them best.
fn error_body(err: &ClientError) -> wire::ErrorBody {
    let code = match err {
        ClientError::Api(api) => return wire::ErrorBody::from(api),
        ClientError::NotRunning { .. } => 503,
        ClientError::Timeout { .. } => 504,
        ClientError::VersionMismatch { .. } => 505,
        ClientError::Connect { .. }
        | ClientError::Connection { .. }
        | ClientError::BadResponse { .. } => 502,
    };
    wire::ErrorBody::from(&crate::api::ApiError::new(code, err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn from_requires_manual() {
        let cli = Cli::try_parse_from([
            "prism-syncctl",
            "resolve",
            "conflict-1",
            "--strategy",
            "keep_local",
            "--from",
            "/etc/hostname",
        ])
        .unwrap();
        let err = prepare(cli.command).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_USAGE);
        assert!(
            err.to_string().contains("only with --strategy manual"),
            "{err}"
        );
    }

    #[test]
    fn relative_paths_become_absolute() {
        let cli = Cli::try_parse_from([
            "prism-syncctl",
            "pair",
            "add",
            "notes",
            "--local",
            "notes-dir",
            "--remote",
            "file:///srv/notes",
        ])
        .unwrap();
        match prepare(cli.command).unwrap() {
            Command::Pair(PairCommand::Add { local, .. }) => {
                assert!(local.is_absolute(), "{}", local.display());
                assert!(local.ends_with("notes-dir"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
