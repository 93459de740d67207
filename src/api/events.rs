//! The event stream: what changed in the agent, as numbered events, for
//! `GET /events` (server-sent events over HTTP, a long poll over the
//! socket, which `prism-syncctl events` uses).
//!
//! Events are found by comparing what the [`Control`] methods answer a few
//! times a second (pair states, the last sync of each pair, unresolved
//! conflicts, live transfers) with what they answered before, so the
//! stream shows exactly what `status`, `sync status` and `conflicts` show,
//! and the engine knows nothing of it. That comparing runs only while a
//! client listens (and for [`LINGER`] after the last one left, so a client
//! that reconnects with `Last-Event-ID` misses nothing): an agent nobody
//! watches spends no CPU on it. Ids increase by one per event, so a client
//! sees a gap when the [`CAPACITY`] most recent events no longer reach back
//! to its last id.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::Control;
use super::wire::{self, PairState, SyncState};
use crate::locks::LockExt;
use crate::timefmt;

/// How often the agent's state is compared while someone listens: a
/// transfer's progress is reported at most this often.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long comparing goes on after the last listener left.
pub const LINGER: Duration = Duration::from_secs(30);
/// How many recent events are kept for clients that resume.
pub const CAPACITY: usize = 1024;

/// The recent events and the comparing task's state.
pub struct EventLog {
    inner: Mutex<Inner>,
    latest: watch::Sender<u64>,
    listeners: AtomicUsize,
    polling: AtomicBool,
}

struct Inner {
    events: VecDeque<wire::Event>,
    next_id: u64,
    last: Option<Snapshot>,
    last_listener_at: Instant,
}

/// Keeps the comparing running while it lives.
pub struct Subscription {
    log: Arc<EventLog>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.log.inner.locked().last_listener_at = Instant::now();
        self.log.listeners.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                next_id: 1,
                last: None,
                last_listener_at: Instant::now(),
            }),
            latest: watch::channel(0).0,
            listeners: AtomicUsize::new(0),
            polling: AtomicBool::new(false),
        }
    }
}

impl EventLog {
    /// Starts comparing (if it is not running) and keeps it running until
    /// the subscription is dropped. Must be called in a Tokio runtime.
    pub fn subscribe(self: &Arc<Self>, control: Arc<dyn Control>) -> Subscription {
        self.listeners.fetch_add(1, Ordering::SeqCst);
        if !self.polling.swap(true, Ordering::SeqCst) {
            tokio::spawn(Arc::clone(self).poll_while_listened(control));
        }
        Subscription {
            log: Arc::clone(self),
        }
    }

    /// The id of the newest event (0 before the first).
    pub fn last_id(&self) -> u64 {
        *self.latest.borrow()
    }

    /// The events after `after`, waiting up to `wait` for one when there
    /// are none yet.
    pub async fn after(&self, after: u64, wait: Duration) -> Vec<wire::Event> {
        let mut latest = self.latest.subscribe();
        let _ = tokio::time::timeout(wait, latest.wait_for(|id| *id > after)).await;
        self.inner
            .locked()
            .events
            .iter()
            .filter(|e| e.id > after)
            .cloned()
            .collect()
    }

    async fn poll_while_listened(self: Arc<Self>, control: Arc<dyn Control>) {
        loop {
            let idle = self.listeners.load(Ordering::SeqCst) == 0
                && self.inner.locked().last_listener_at.elapsed() >= LINGER;
            if idle {
                self.inner.locked().last = None;
                self.polling.store(false, Ordering::SeqCst);
                // A listener that came in just now may have seen `polling`
                // still set: take the work back rather than strand it.
                if self.listeners.load(Ordering::SeqCst) == 0
                    || self.polling.swap(true, Ordering::SeqCst)
                {
                    return;
                }
            }
            let control_now = Arc::clone(&control);
            let previous = self.inner.locked().last.take();
            let compared = tokio::task::spawn_blocking(move || {
                let now = Snapshot::take(control_now.as_ref());
                let events = match &previous {
                    Some(before) => changes(before, &now, control_now.as_ref()),
                    None => Vec::new(),
                };
                (now, events)
            })
            .await;
            if let Ok((now, events)) = compared {
                self.record(now, events);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn record(&self, snapshot: Snapshot, events: Vec<(String, Option<String>, Value)>) {
        let mut inner = self.inner.locked();
        inner.last = Some(snapshot);
        if events.is_empty() {
            return;
        }
        let at = timefmt::rfc3339(SystemTime::now());
        for (kind, pair, data) in events {
            let id = inner.next_id;
            inner.next_id += 1;
            inner.events.push_back(wire::Event {
                id,
                kind,
                at: at.clone(),
                pair,
                data,
            });
            if inner.events.len() > CAPACITY {
                inner.events.pop_front();
            }
        }
        let last = inner.next_id - 1;
        drop(inner);
        self.latest.send_replace(last);
    }
}

/// What the comparing looks at.
#[derive(Default)]
struct Snapshot {
    pairs: BTreeMap<String, PairSnapshot>,
    /// Unresolved conflicts: id → (pair, path).
    conflicts: BTreeMap<String, (String, String, String)>,
}

struct PairSnapshot {
    state: PairState,
    detail: String,
    last_sync: Option<(String, SyncState)>,
    transfers: BTreeMap<String, wire::Transfer>,
}

impl Snapshot {
    fn take(control: &dyn Control) -> Snapshot {
        let status = control.status();
        let pairs = status
            .pairs
            .into_iter()
            .map(|p| {
                let snapshot = PairSnapshot {
                    state: p.state,
                    detail: p.state_detail,
                    last_sync: p.last_sync.map(|l| (l.sync_id, l.status)),
                    transfers: p
                        .transfers
                        .into_iter()
                        .map(|t| (t.path.clone(), t))
                        .collect(),
                };
                (p.name, snapshot)
            })
            .collect();
        let conflicts = control
            .conflicts(None, false)
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.conflict_id, (c.pair, c.file_path, c.kind)))
            .collect();
        Snapshot { pairs, conflicts }
    }
}

/// The events that lead from `before` to `now`: `(type, pair, data)`.
fn changes(
    before: &Snapshot,
    now: &Snapshot,
    control: &dyn Control,
) -> Vec<(String, Option<String>, Value)> {
    let mut out = Vec::new();
    let mut push = |kind: &str, pair: &str, data: Value| {
        out.push((kind.to_owned(), Some(pair.to_owned()), data));
    };
    for name in before.pairs.keys().filter(|n| !now.pairs.contains_key(*n)) {
        push("pair_removed", name, json!({}));
    }
    for (name, pair) in &now.pairs {
        let Some(old) = before.pairs.get(name) else {
            push("pair_added", name, json!({"state": pair.state.as_str()}));
            continue;
        };
        if old.state != pair.state || old.detail != pair.detail {
            push(
                "pair_state",
                name,
                json!({"state": pair.state.as_str(), "state_detail": pair.detail}),
            );
            if pair.state == PairState::WaitingForConfirmation
                && old.state != PairState::WaitingForConfirmation
            {
                push("deletions_held", name, json!({"state_detail": pair.detail}));
            }
        }
        if old.last_sync != pair.last_sync
            && let Some((sync_id, status)) = &pair.last_sync
        {
            let was_running = old
                .last_sync
                .as_ref()
                .is_some_and(|(id, s)| id == sync_id && *s == SyncState::SyncInProgress);
            if *status == SyncState::SyncInProgress {
                push("sync_started", name, json!({"sync_id": sync_id}));
            } else {
                if !was_running {
                    push("sync_started", name, json!({"sync_id": sync_id}));
                }
                let finished = control.sync_status(sync_id).ok();
                push(
                    "sync_finished",
                    name,
                    json!({
                        "sync_id": sync_id,
                        "status": status.as_str(),
                        "counts": finished.as_ref().map(|s| serde_json::to_value(&s.counts).unwrap_or_default()),
                        "error": finished.and_then(|s| s.error),
                    }),
                );
            }
        }
        for (path, transfer) in &pair.transfers {
            let moved = old
                .transfers
                .get(path)
                .is_none_or(|t| t.bytes_done != transfer.bytes_done);
            if moved {
                push(
                    "transfer",
                    name,
                    serde_json::to_value(transfer).unwrap_or_default(),
                );
            }
        }
    }
    for (id, (pair, path, kind)) in &now.conflicts {
        if !before.conflicts.contains_key(id) {
            push(
                "conflict_found",
                pair,
                json!({"conflict_id": id, "file_path": path, "kind": kind}),
            );
        }
    }
    for (id, (pair, path, _)) in &before.conflicts {
        if !now.conflicts.contains_key(id) {
            push(
                "conflict_resolved",
                pair,
                json!({"conflict_id": id, "file_path": path}),
            );
        }
    }
    out
}
