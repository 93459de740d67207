//! The agent's side of the control API: answers each request from the
//! journal and the pairs' live status, and turns commands into messages to
//! the pair schedulers.
//!
//! This is the one place that converts core types (journal rows, reports,
//! model enums) into the API's wire types, by hand, so neither side needs
//! to know the other's representation.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::Agent;
use super::pair::{PairMsg, PairState};
use crate::api::auth::{self, Grant, TokenKeys};
use crate::api::events::EventLog;
use crate::api::{ApiError, Control, wire};
use crate::config::{PairConfig, RawPair};
use crate::engine::PairEngine;
use crate::engine::conflicts::ResolveError;
use crate::engine::history::RestoreError;
use crate::engine::progress::Direction;
use crate::journal::{
    ChangeFilter, ChangeRow, ChangeType, ConflictFilter, ConflictRow, ConflictStatus, JournalError,
    SyncRun, SyncStatus, TokenRow,
};
use crate::locks::LockExt;
use crate::model::{RelPath, Side, Strategy};
use crate::secrets::{self, Account, Secret};
use crate::timefmt;

/// The agent as the API sees it.
pub struct AgentControl {
    agent: Arc<Agent>,
    /// Signs the HTTP API's tokens.
    keys: Arc<TokenKeys>,
    events: Arc<EventLog>,
}

impl AgentControl {
    pub fn new(agent: Arc<Agent>, keys: Arc<TokenKeys>) -> AgentControl {
        AgentControl {
            agent,
            keys,
            events: Arc::new(EventLog::default()),
        }
    }

    fn send(&self, pair: &str, message: PairMsg) -> Result<(), ApiError> {
        let pairs = self.agent.pairs.locked();
        let handle = pairs.get(pair).ok_or_else(|| unknown_pair(pair))?;
        handle
            .inbox
            .send(message)
            .map_err(|_| ApiError::internal(format!("pair {pair:?} is shutting down")))
    }

    /// The named pair, or every pair when `None`.
    fn selected(&self, pair: Option<&str>) -> Result<Vec<String>, ApiError> {
        let pairs = self.agent.pairs.locked();
        match pair {
            Some(name) if pairs.contains_key(name) => Ok(vec![name.to_owned()]),
            Some(name) => Err(unknown_pair(name)),
            None => Ok(pairs.keys().cloned().collect()),
        }
    }

    /// A journal error as the API reports it: what the client asked for
    /// that does not exist is a 404 and a bad value a 400, not an agent
    /// failure.
    fn journal_error(e: JournalError) -> ApiError {
        match &e {
            JournalError::NoSuchPair(name) => unknown_pair(name),
            JournalError::NoSuchSync(_) | JournalError::NoSuchConflict(_) => {
                ApiError::not_found(e.to_string())
            }
            JournalError::BadTimestamp { .. } => ApiError::bad_request(e.to_string()),
            JournalError::AlreadyResolved { .. } => ApiError::conflict(e.to_string()),
            _ => ApiError::internal("the journal could not be read").with_details(e.to_string()),
        }
    }
}

impl AgentControl {
    /// The pair a file of a request belongs to, and its path there: an
    /// absolute `path` inside a pair's local folder (of `pair`, when
    /// named), or a path relative to the folder of the named `pair`.
    fn file_in_pair(
        &self,
        pair: Option<&str>,
        path: &str,
    ) -> Result<(String, Arc<PairEngine>, RelPath), ApiError> {
        let pairs = self.agent.pairs.locked();
        let candidates: Vec<(&String, &Arc<PairEngine>)> = match pair {
            Some(name) => {
                let (name, handle) = pairs
                    .get_key_value(name)
                    .ok_or_else(|| unknown_pair(name))?;
                vec![(name, &handle.engine)]
            }
            None => pairs.iter().map(|(name, h)| (name, &h.engine)).collect(),
        };
        let given = std::path::Path::new(path);
        if !given.is_absolute() {
            let [(name, engine)] = candidates.as_slice() else {
                return Err(ApiError::bad_request(format!(
                    "{path:?} is relative: give the file's absolute path, or name its pair"
                )));
            };
            let rel = RelPath::new(path.trim_end_matches('/')).map_err(|e| {
                ApiError::bad_request(format!("{path:?} is not a path in a pair: {e}"))
            })?;
            return Ok(((*name).clone(), Arc::clone(engine), rel));
        }
        // The folder as configured, and as the file system names it (a
        // root reached through a link).
        let inside = |root: &std::path::Path| -> Option<RelPath> {
            let rest = given.strip_prefix(root).ok().or_else(|| {
                let real = root.canonicalize().ok()?;
                given.strip_prefix(real).ok()
            })?;
            RelPath::new(rest.to_str()?).ok()
        };
        candidates
            .into_iter()
            .filter_map(|(name, engine)| {
                let rel = inside(&engine.settings().local_root)?;
                Some((name.clone(), Arc::clone(engine), rel))
            })
            // The innermost folder, should one pair lie inside another.
            .min_by_key(|(_, _, rel)| rel.as_str().len())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{path:?} is not a file inside the folder of {}",
                    match pair {
                        Some(name) => format!("pair {name:?}"),
                        None => "any pair".to_owned(),
                    }
                ))
            })
    }
}

fn unknown_pair(name: &str) -> ApiError {
    ApiError::not_found(format!("no pair is named {name:?}"))
        .with_details("`prism-syncctl pair list` shows the configured pairs".to_owned())
}

fn sync_state(status: SyncStatus) -> wire::SyncState {
    match status {
        SyncStatus::InProgress => wire::SyncState::SyncInProgress,
        SyncStatus::Completed => wire::SyncState::Completed,
        SyncStatus::CompletedWithConflicts => wire::SyncState::CompletedWithConflicts,
        SyncStatus::Failed => wire::SyncState::Failed,
        SyncStatus::Interrupted => wire::SyncState::Interrupted,
    }
}

fn wire_strategy(strategy: Strategy) -> wire::Strategy {
    match strategy {
        Strategy::Manual => wire::Strategy::Manual,
        Strategy::KeepLocal => wire::Strategy::KeepLocal,
        Strategy::KeepRemote => wire::Strategy::KeepRemote,
        Strategy::AutoMerge => wire::Strategy::AutoMerge,
    }
}

fn core_strategy(strategy: wire::Strategy) -> Strategy {
    match strategy {
        wire::Strategy::Manual => Strategy::Manual,
        wire::Strategy::KeepLocal => Strategy::KeepLocal,
        wire::Strategy::KeepRemote => Strategy::KeepRemote,
        wire::Strategy::AutoMerge => Strategy::AutoMerge,
    }
}

fn conflict_info(row: &ConflictRow) -> wire::ConflictInfo {
    let version = |hash: Option<crate::model::ContentHash>, at: &Option<String>| wire::Version {
        hash: hash.map(|h| h.to_hex()),
        modified_at: at.clone(),
    };
    wire::ConflictInfo {
        conflict_id: row.id.clone(),
        file_path: row.path.to_string(),
        local_version: version(row.local_hash, &row.local_modified_at),
        remote_version: version(row.remote_hash, &row.remote_modified_at),
        status: match row.status {
            ConflictStatus::Unresolved => wire::ConflictStatus::Unresolved,
            ConflictStatus::Resolved => wire::ConflictStatus::Resolved,
        },
        pair: row.pair.clone(),
        kind: row.kind.as_str().to_owned(),
        detected_at: row.detected_at.clone(),
        copy_path: row.copy_path.as_ref().map(|p| p.to_string()),
        strategy: row.strategy.map(wire_strategy),
        note: row.note.clone(),
        resolved_at: row.resolved_at.clone(),
    }
}

fn change(row: &ChangeRow) -> wire::Change {
    wire::Change {
        kind: match row.change_type {
            ChangeType::Created => wire::ChangeKind::Created,
            ChangeType::Modified => wire::ChangeKind::Modified,
            ChangeType::Deleted => wire::ChangeKind::Deleted,
            ChangeType::Moved => wire::ChangeKind::Moved,
        },
        path: row.path.to_string(),
        timestamp: row.at.clone(),
        pair: row.pair.clone(),
        from_path: row.from_path.as_ref().map(|p| p.to_string()),
        origin_side: match row.origin_side {
            Side::Local => wire::Side::Local,
            Side::Remote => wire::Side::Remote,
        },
        origin_device: Some(row.origin_device.clone()),
        origin_at: row.origin_at.clone(),
        sync_id: row.sync_id.clone(),
        hash: row.hash.map(|h| h.to_hex()),
        size: row.size,
    }
}

fn counts(c: &crate::journal::SyncCounts) -> wire::SyncCounts {
    wire::SyncCounts {
        uploaded: c.uploaded,
        downloaded: c.downloaded,
        deleted_local: c.deleted_local,
        deleted_remote: c.deleted_remote,
        moved: c.moved,
        conflicts: c.conflicts,
        errors: c.errors,
        bytes_up: c.bytes_up,
        bytes_down: c.bytes_down,
    }
}

fn pair_info(config: &PairConfig, engine: &PairEngine) -> wire::PairInfo {
    wire::PairInfo {
        name: config.name.clone(),
        local: config.local.display().to_string(),
        remote: config.remote.to_string(),
        conflict: wire_strategy(config.conflict),
        ignore: config.ignore.clone(),
        write_guarantee: write_guarantee(engine),
    }
}

fn write_guarantee(engine: &PairEngine) -> wire::WriteGuarantee {
    if engine.remote_writes_rechecked() {
        wire::WriteGuarantee::Rechecked
    } else {
        wire::WriteGuarantee::Conditional
    }
}

impl Control for AgentControl {
    fn status(&self) -> wire::AgentStatus {
        let agent = &self.agent;
        let info = wire::AgentInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            device: agent.agent_config.device.clone(),
            pid: std::process::id(),
            started_at: timefmt::rfc3339(agent.started_at),
            state_dir: Some(agent.paths.state_dir.display().to_string()),
            socket: Some(agent.paths.socket.display().to_string()),
        };
        let pairs = agent.pairs.locked();
        let journal = agent.journal.locked();
        let statuses = pairs
            .values()
            .map(|handle| {
                let status = handle.status.locked().clone();
                let last = journal
                    .recent_syncs(Some(handle.engine.pair), 1)
                    .ok()
                    .and_then(|mut runs| runs.pop());
                let unresolved = journal
                    .conflicts(&ConflictFilter {
                        pair: Some(handle.config.name.clone()),
                        include_resolved: false,
                    })
                    .map(|rows| rows.len() as u64)
                    .unwrap_or(0);
                let mut problems: Vec<wire::Problem> = status
                    .problems
                    .iter()
                    .map(|p| wire::Problem {
                        path: p.path.as_ref().map(|p| p.to_string()).unwrap_or_default(),
                        message: p.message.clone(),
                    })
                    .collect();
                for (path, error) in handle.engine.failing_paths() {
                    if !problems.iter().any(|p| p.path == path.as_str()) {
                        problems.push(wire::Problem {
                            path: path.to_string(),
                            message: format!("{error} (retrying with back-off)"),
                        });
                    }
                }
                wire::PairStatus {
                    name: handle.config.name.clone(),
                    local: handle.config.local.display().to_string(),
                    remote: handle.config.remote.to_string(),
                    state: match status.state {
                        PairState::Idle => wire::PairState::Idle,
                        PairState::Syncing => wire::PairState::Syncing,
                        PairState::Paused => wire::PairState::Paused,
                        PairState::WaitingForConfirmation => {
                            wire::PairState::WaitingForConfirmation
                        }
                        PairState::Offline => wire::PairState::Offline,
                        PairState::Error => wire::PairState::Error,
                    },
                    // A run waiting for another agent's lease says so.
                    state_detail: status
                        .detail
                        .clone()
                        .or_else(|| {
                            handle
                                .engine
                                .waiting_for_lease()
                                .map(|holder| crate::agent::pair::waiting_detail(&holder))
                        })
                        .unwrap_or_default(),
                    last_sync: last.map(|run| wire::LastSync {
                        sync_id: run.id,
                        status: sync_state(run.status),
                        finished_at: run.finished_at,
                    }),
                    pending: status.pending as u64,
                    unresolved_conflicts: unresolved,
                    transfers: handle
                        .engine
                        .progress
                        .transfers()
                        .into_iter()
                        .map(|t| wire::Transfer {
                            path: t.path.to_string(),
                            direction: match t.direction {
                                Direction::Upload => wire::Direction::Upload,
                                Direction::Download => wire::Direction::Download,
                            },
                            bytes_done: t.bytes_done,
                            bytes_total: t.bytes_total,
                        })
                        .collect(),
                    problems,
                    watcher: watcher_health(handle, &status.watcher),
                    write_guarantee: write_guarantee(&handle.engine),
                    remote_transport: handle.engine.remote_transport(),
                }
            })
            .collect();
        wire::AgentStatus::new(info, statuses)
    }

    fn start_sync(
        &self,
        pair: Option<&str>,
        by: Option<&str>,
    ) -> Result<Vec<wire::SyncStarted>, ApiError> {
        let names = self.selected(pair)?;
        let mut started = Vec::new();
        for name in names {
            let pair_id = {
                let pairs = self.agent.pairs.locked();
                pairs
                    .get(&name)
                    .map(|h| h.engine.pair)
                    .ok_or_else(|| unknown_pair(&name))?
            };
            let sync_id = {
                let journal = self.agent.journal.locked();
                let sync_id = journal
                    .begin_sync(pair_id, "api")
                    .map_err(Self::journal_error)?;
                if let Some(token) = by {
                    journal
                        .set_sync_started_by(&sync_id, token)
                        .map_err(Self::journal_error)?;
                }
                sync_id
            };
            self.send(
                &name,
                PairMsg::SyncNow {
                    sync_id: sync_id.clone(),
                },
            )?;
            started.push(wire::SyncStarted {
                pair: name,
                sync_id,
            });
        }
        Ok(started)
    }

    fn sync_status(&self, sync_id: &str) -> Result<wire::SyncStatus, ApiError> {
        let journal = self.agent.journal.locked();
        let run: SyncRun = journal
            .sync_run(sync_id)
            .map_err(Self::journal_error)?
            .ok_or_else(|| ApiError::not_found(format!("no sync is named {sync_id:?}")))?;
        let conflicts = journal
            .conflicts(&ConflictFilter {
                pair: Some(run.pair.clone()),
                include_resolved: true,
            })
            .map_err(Self::journal_error)?
            .iter()
            .filter(|row| row.sync_id.as_deref() == Some(sync_id))
            .map(conflict_info)
            .collect();
        let last_synced_at = journal
            .last_completed_sync(run.pair_id)
            .map_err(Self::journal_error)?
            .and_then(|r| r.finished_at);
        Ok(wire::SyncStatus {
            status: sync_state(run.status),
            last_synced_at,
            conflicts,
            sync_id: run.id,
            pair: run.pair,
            started_at: run.started_at,
            finished_at: run.finished_at,
            counts: counts(&run.counts),
            error: run.error,
        })
    }

    fn conflicts(
        &self,
        pair: Option<&str>,
        include_resolved: bool,
    ) -> Result<Vec<wire::ConflictInfo>, ApiError> {
        let rows = self
            .agent
            .journal
            .locked()
            .conflicts(&ConflictFilter {
                pair: pair.map(str::to_owned),
                include_resolved,
            })
            .map_err(Self::journal_error)?;
        Ok(rows.iter().map(conflict_info).collect())
    }

    fn conflict(&self, conflict_id: &str) -> Result<wire::ConflictInfo, ApiError> {
        let row = self
            .agent
            .journal
            .locked()
            .conflict(conflict_id)
            .map_err(Self::journal_error)?
            .ok_or_else(|| ApiError::not_found(format!("no conflict is named {conflict_id:?}")))?;
        Ok(conflict_info(&row))
    }

    fn resolve(
        &self,
        req: &wire::ResolveRequest,
        by: Option<&str>,
    ) -> Result<wire::ResolveResponse, ApiError> {
        req.validate()?;
        let row = self
            .agent
            .journal
            .locked()
            .conflict(&req.conflict_id)
            .map_err(Self::journal_error)?
            .ok_or_else(|| {
                ApiError::not_found(format!("no conflict is named {:?}", req.conflict_id))
            })?;
        let (reply, answer) = oneshot::channel();
        let pair = row.pair.clone();
        self.send(
            &pair,
            PairMsg::Resolve {
                row: Box::new(row),
                strategy: core_strategy(req.resolution_strategy),
                merged_file: req.merged_file.as_deref().map(PathBuf::from),
                reply,
            },
        )?;
        let result = answer
            .blocking_recv()
            .map_err(|_| ApiError::internal("the pair stopped before resolving the conflict"))?;
        // The resolution is committed by the pair; who asked is recorded
        // right after. A crash in between loses only that audit note.
        if let (Ok(_), Some(token)) = (&result, by) {
            self.agent
                .journal
                .locked()
                .set_conflict_resolved_by(&req.conflict_id, token)
                .map_err(Self::journal_error)?;
        }
        match result {
            Ok(resolved) => Ok(wire::ResolveResponse {
                status: wire::ConflictStatus::Resolved,
                resolved_at: Some(resolved.resolved_at),
                note: Some(resolved.note),
            }),
            Err(e @ ResolveError::AlreadyResolved(_)) => Err(ApiError::conflict(e.to_string())),
            Err(e @ ResolveError::NotClean(_)) => {
                Err(ApiError::conflict("Conflict not resolved").with_details(e.to_string()))
            }
            Err(e @ ResolveError::Invalid(_)) => Err(ApiError::bad_request(e.to_string())),
            Err(e) => Err(ApiError::internal("the resolution failed").with_details(e.to_string())),
        }
    }

    fn history(&self, query: &wire::HistoryQuery) -> Result<wire::History, ApiError> {
        let (pair, engine, path) = self.file_in_pair(query.pair.as_deref(), &query.path)?;
        let versions = engine
            .history(&path)
            .map_err(Self::journal_error)?
            .into_iter()
            .map(|v| wire::VersionInfo {
                version: v.version,
                hash: v.hash.to_hex(),
                size: v.size,
                modified_at: v.modified_at,
                origin_device: v.origin_device,
                place: v.place.as_str().to_owned(),
                trashed_at: v.trashed_at,
                trashed_by: v.trashed_by,
            })
            .collect();
        Ok(wire::History {
            pair,
            path: path.to_string(),
            versions,
        })
    }

    fn restore(
        &self,
        req: &wire::RestoreRequest,
        by: Option<&str>,
    ) -> Result<wire::RestoreResponse, ApiError> {
        let (pair, _, path) = self.file_in_pair(req.pair.as_deref(), &req.path)?;
        let (reply, answer) = oneshot::channel();
        self.send(
            &pair,
            PairMsg::Restore {
                path: path.clone(),
                version: req.version.clone(),
                by: by.map(str::to_owned),
                reply,
            },
        )?;
        let result = answer
            .blocking_recv()
            .map_err(|_| ApiError::internal("the pair stopped before restoring the version"))?;
        match result {
            Ok(restored) => Ok(wire::RestoreResponse {
                status: "restored".to_owned(),
                pair,
                path: path.to_string(),
                version: restored.version,
                hash: restored.hash.to_hex(),
                size: restored.size,
                replaced: restored.replaced.map(|name| name.to_string()),
                warning: restored.warning,
            }),
            Err(e @ RestoreError::NoSuchVersion(_)) => Err(ApiError::not_found(e.to_string())),
            Err(e @ RestoreError::Gone(_)) => {
                Err(ApiError::new(410, "Version gone").with_details(e.to_string()))
            }
            Err(e @ RestoreError::Invalid(_)) => Err(ApiError::conflict(e.to_string())),
            Err(e) => Err(ApiError::internal("the restore failed").with_details(e.to_string())),
        }
    }

    fn changes(&self, query: &wire::ChangesQuery) -> Result<wire::ChangeLog, ApiError> {
        let path_prefix = match &query.path {
            Some(p) => Some(
                RelPath::new(p.trim_end_matches('/'))
                    .map_err(|e| ApiError::bad_request(format!("invalid path filter: {e}")))?,
            ),
            None => None,
        };
        let rows = self
            .agent
            .journal
            .locked()
            .changes(&ChangeFilter {
                pair: query.pair.clone(),
                since: query.since.clone(),
                path_prefix,
                device: query.device.clone(),
                limit: Some(query.limit as usize),
            })
            .map_err(Self::journal_error)?;
        // The journal hands the rows oldest first; the protocol (and the
        // specification's example) lists the newest first.
        Ok(wire::ChangeLog {
            changes: rows.iter().rev().map(change).collect(),
        })
    }

    fn pause(&self, pair: Option<&str>) -> Result<(), ApiError> {
        for name in self.selected(pair)? {
            self.send(&name, PairMsg::Pause)?;
        }
        Ok(())
    }

    fn resume(&self, pair: Option<&str>) -> Result<(), ApiError> {
        for name in self.selected(pair)? {
            self.send(&name, PairMsg::Resume)?;
        }
        Ok(())
    }

    fn pair_add(&self, spec: &wire::PairSpec) -> Result<wire::PairInfo, ApiError> {
        let raw = RawPair {
            name: spec.name.clone(),
            local: spec.local.clone(),
            remote: spec.remote.clone(),
            conflict: spec.conflict.map(|s| s.as_str().to_owned()),
            ignore: spec.ignore.clone(),
            ..RawPair::default()
        };
        let config = raw
            .clone()
            .validate()
            .map_err(|(key, message)| ApiError::bad_request(format!("{key}: {message}")))?;
        // Held until the config file is written: see `Agent::pair_edits`.
        let _editing = self.agent.pair_edits.locked();
        {
            let pairs = self.agent.pairs.locked();
            if pairs.contains_key(&config.name) {
                return Err(ApiError::conflict(format!(
                    "a pair named {:?} already exists",
                    config.name
                )));
            }
            if let Some((field, message)) = pairs
                .values()
                .find_map(|h| crate::config::clash(&config, &h.config))
            {
                return Err(ApiError::conflict(format!("{field}: {message}")));
            }
        }
        // Start it first: a pair that cannot run must not reach the config
        // file, where it would stop the next start of the agent.
        self.agent
            .start_pair(config.clone())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if let Some(file) = &self.agent.config_file
            && let Err(e) = crate::config::edit::add_pair(file, &raw)
        {
            let agent = self.agent.clone();
            let name = config.name.clone();
            agent
                .runtime
                .clone()
                .block_on(async move { agent.stop_pair(&name).await });
            return Err(
                ApiError::internal("cannot save the pair in the config file")
                    .with_details(e.to_string()),
            );
        }
        let pairs = self.agent.pairs.locked();
        let engine = &pairs
            .get(&config.name)
            .ok_or_else(|| unknown_pair(&config.name))?
            .engine;
        Ok(pair_info(&config, engine))
    }

    fn pair_list(&self) -> Result<Vec<wire::PairInfo>, ApiError> {
        let pairs = self.agent.pairs.locked();
        Ok(pairs
            .values()
            .map(|h| pair_info(&h.config, &h.engine))
            .collect())
    }

    fn pair_remove(&self, name: &str) -> Result<(), ApiError> {
        let _editing = self.agent.pair_edits.locked();
        if !self.agent.pairs.locked().contains_key(name) {
            return Err(unknown_pair(name));
        }
        if let Some(file) = &self.agent.config_file {
            crate::config::edit::remove_pair(file, name).map_err(|e| {
                ApiError::internal("cannot update the config file").with_details(e.to_string())
            })?;
        }
        let agent = self.agent.clone();
        let name = name.to_owned();
        agent
            .runtime
            .clone()
            .block_on(async move { agent.stop_pair(&name).await });
        Ok(())
    }

    fn confirm_deletions(&self, pair: &str) -> Result<(), ApiError> {
        self.send(pair, PairMsg::ConfirmDeletions)
    }

    fn store_credentials(
        &self,
        pair: &str,
        credentials: &wire::Credentials,
    ) -> Result<bool, ApiError> {
        let (config, engine) = {
            let pairs = self.agent.pairs.locked();
            let handle = pairs.get(pair).ok_or_else(|| unknown_pair(pair))?;
            (handle.config.clone(), handle.engine.clone())
        };
        let Some(account) = Account::for_pair(&config) else {
            return Ok(false);
        };
        if account.user != credentials.username {
            return Err(ApiError::bad_request(format!(
                "pair {pair:?} logs in as {:?}, not as credentials.username {:?}",
                account.user, credentials.username
            ))
            .with_details(
                "an SFTP pair's user is in its remote URL, a WebDAV pair's in `username` in \
                 the config; nothing was stored",
            ));
        }
        let secret = Secret::new(credentials.password.clone());
        let place =
            secrets::store_password(&account, self.agent.paths.config_file.parent(), &secret)
                .map_err(|e| match e {
                    secrets::SecretError::Unusable(_) => ApiError::bad_request(e.to_string()),
                    e => {
                        ApiError::internal("cannot store the password").with_details(e.to_string())
                    }
                })?;
        // The sync this request starts must log in with what was given,
        // not keep a connection an earlier password opened.
        engine.forget_remote_login();
        tracing::info!(pair, %account, %place, "stored the password given with a sync request");
        Ok(true)
    }

    fn pairs_sharing_login(&self, pair: &str) -> Result<Vec<String>, ApiError> {
        let pairs = self.agent.pairs.locked();
        let handle = pairs.get(pair).ok_or_else(|| unknown_pair(pair))?;
        let Some(account) = Account::for_pair(&handle.config) else {
            return Ok(Vec::new());
        };
        Ok(pairs
            .iter()
            .filter(|(name, other)| {
                name.as_str() != pair && Account::for_pair(&other.config).as_ref() == Some(&account)
            })
            .map(|(name, _)| name.clone())
            .collect())
    }

    fn issue_token(&self, req: &wire::TokenRequest) -> Result<wire::IssuedToken, ApiError> {
        {
            let pairs = self.agent.pairs.locked();
            if let Some(name) = req.pairs.iter().find(|p| !pairs.contains_key(p.as_str())) {
                return Err(unknown_pair(name));
            }
        }
        let now = std::time::SystemTime::now();
        let expires = auth::expiry(now, req.ttl_secs)?;
        let mut pairs = req.pairs.clone();
        pairs.sort();
        pairs.dedup();
        let grant = Grant {
            id: auth::new_token_id(),
            role: req.role,
            pairs,
        };
        let row = TokenRow {
            id: grant.id.clone(),
            name: req.name.clone(),
            role: grant.role.as_str().to_owned(),
            pairs: grant.pairs.clone(),
            issued_at: timefmt::rfc3339(now),
            expires_at: timefmt::rfc3339(expires),
            revoked_at: None,
        };
        // Recorded before it is handed out: a token the journal does not
        // know is refused, so a failure here leaves nothing usable behind.
        self.agent
            .journal
            .locked()
            .add_token(&row)
            .map_err(Self::journal_error)?;
        tracing::info!(id = %grant.id, role = grant.role.as_str(), "issued an API token");
        Ok(wire::IssuedToken {
            token: self.keys.sign(&grant, now, expires),
            id: grant.id,
            role: grant.role,
            pairs: grant.pairs,
            expires_at: row.expires_at,
            name: row.name,
        })
    }

    fn tokens(&self) -> Result<Vec<wire::TokenInfo>, ApiError> {
        let rows = self
            .agent
            .journal
            .locked()
            .tokens()
            .map_err(Self::journal_error)?;
        rows.into_iter().map(token_info).collect()
    }

    fn token(&self, id: &str) -> Result<Option<wire::TokenInfo>, ApiError> {
        let row = self
            .agent
            .journal
            .locked()
            .token(id)
            .map_err(Self::journal_error)?;
        row.map(token_info).transpose()
    }

    fn revoke_token(&self, id: &str) -> Result<wire::TokenInfo, ApiError> {
        let journal = self.agent.journal.locked();
        if !journal.revoke_token(id).map_err(Self::journal_error)? {
            return Err(ApiError::not_found(format!("no token has the id {id:?}"))
                .with_details("`prism-syncctl token list` shows the tokens"));
        }
        tracing::info!(id, "revoked an API token");
        let row = journal
            .token(id)
            .map_err(Self::journal_error)?
            .ok_or_else(|| ApiError::internal(format!("token {id:?} vanished while revoked")))?;
        token_info(row)
    }

    fn events(&self) -> Option<Arc<EventLog>> {
        Some(self.events.clone())
    }
}

fn token_info(row: TokenRow) -> Result<wire::TokenInfo, ApiError> {
    let role = wire::Role::parse(&row.role).ok_or_else(|| {
        ApiError::internal("the journal could not be read").with_details(format!(
            "api_tokens row {} has the unknown role {:?}",
            row.id, row.role
        ))
    })?;
    Ok(wire::TokenInfo {
        id: row.id,
        name: row.name,
        role,
        pairs: row.pairs,
        issued_at: row.issued_at,
        expires_at: row.expires_at,
        revoked_at: row.revoked_at,
    })
}

/// "ok", or a sentence about what the watcher cannot see and what to do.
fn watcher_health(handle: &super::PairHandle, last_problem: &str) -> String {
    let Some(health) = handle.watcher.locked().as_ref().map(|w| w.health()) else {
        return last_problem.to_owned();
    };
    if health.limit_reached {
        return format!(
            "the inotify watch limit is reached: {} folders are not watched and their changes are found only by periodic scans; raise it with `sudo sysctl fs.inotify.max_user_watches=524288`",
            health.unwatched_folders
        );
    }
    if health.unwatched_folders > 0 {
        return format!(
            "{} folders cannot be watched (see problems); their changes are found by periodic scans",
            health.unwatched_folders
        );
    }
    last_problem.to_owned()
}
