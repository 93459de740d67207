//! Readable renderings of the agent's answers: aligned tables, human sizes,
//! relative times. Pure functions from wire values (and `now`) to text, so
//! they are tested without an agent; `--json` output never passes here.
//!
//! Every string the agent sent (names, paths, messages, ids, times) is put
//! in through [`esc`] or a [`table`] cell, which escape control and
//! bidirectional characters: a file name must not drive the terminal.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use crate::api::wire::{
    Ack, AgentStatus, Change, ChangeLog, ConflictInfo, ConflictList, ConflictStatus, Direction,
    Event, History, PairInfo, PairList, PairState, ResolveRequest, ResolveResponse,
    RestoreResponse, Side, StartSyncResponse, SyncStatus, TokenInfo, TokenList, WriteGuarantee,
};
use crate::terminal;
use crate::timefmt;

/// What a pair whose remote only re-checks its writes
/// ([`WriteGuarantee::Rechecked`]) cannot promise, in `status` and `pair
/// list`.
const RECHECKED_WRITES: &str = "writes: re-checked, not conditional (rclone): a change made \
     elsewhere in the moment before a replace or delete can go to the remote's trash instead of \
     staying in place (on a provider that cannot move a file, such as S3, it can be lost)";

/// A value from the agent, as it may be shown on a terminal.
fn esc(value: &str) -> std::borrow::Cow<'_, str> {
    terminal::escape(value)
}

pub fn status(status: &AgentStatus, now: SystemTime) -> String {
    let agent = &status.agent;
    let mut out = format!(
        "prism-syncd {} on {}, pid {}, up {} (protocol {}, socket {})\n",
        esc(&agent.version),
        esc(&agent.device),
        agent.pid,
        since(&agent.started_at, now).map_or_else(|| "?".to_owned(), words),
        esc(&status.protocol),
        esc(agent.socket.as_deref().unwrap_or("?")),
    );
    if status.pairs.is_empty() {
        out.push_str(
            "\nNo pairs. Add one with `prism-syncctl pair add NAME --local DIR --remote URL`.\n",
        );
        return out;
    }
    let rows = status
        .pairs
        .iter()
        .map(|p| {
            let last = p.last_sync.as_ref().map_or_else(
                || "never".to_owned(),
                |l| {
                    let when = l.finished_at.as_deref().map(|t| ago(t, now));
                    format!(
                        "{} {}{}",
                        l.sync_id,
                        l.status.as_str(),
                        when.map(|w| format!(" {w}")).unwrap_or_default()
                    )
                },
            );
            vec![
                p.name.clone(),
                p.state.as_str().to_owned(),
                p.pending.to_string(),
                p.unresolved_conflicts.to_string(),
                last,
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &["PAIR", "STATE", "PENDING", "CONFLICTS", "LAST SYNC"],
        rows,
    ));
    for pair in &status.pairs {
        let mut lines = Vec::new();
        if pair.state != PairState::Idle && !pair.state_detail.is_empty() {
            lines.push(esc(&pair.state_detail).into_owned());
        }
        for t in &pair.transfers {
            let arrow = match t.direction {
                Direction::Upload => "upload  ",
                Direction::Download => "download",
            };
            let percent = (t.bytes_done * 100)
                .checked_div(t.bytes_total)
                .unwrap_or(100);
            lines.push(format!(
                "{arrow} {}  {} / {} ({percent}%)",
                esc(&t.path),
                size(t.bytes_done),
                size(t.bytes_total)
            ));
        }
        // A problem's message does not repeat its path; one without a path
        // names what it is about itself.
        for problem in &pair.problems {
            lines.push(match problem.path.as_str() {
                "" => format!("problem: {}", esc(&problem.message)),
                path => format!("problem: {}: {}", esc(path), esc(&problem.message)),
            });
        }
        if pair.watcher != "ok" {
            lines.push(format!("watcher: {}", esc(&pair.watcher)));
        }
        if pair.write_guarantee == WriteGuarantee::Rechecked {
            lines.push(RECHECKED_WRITES.to_owned());
        }
        if let Some(transport) = &pair.remote_transport {
            lines.push(format!("transport: {}", esc(transport)));
        }
        if !lines.is_empty() {
            let _ = writeln!(out, "\n{}:", esc(&pair.name));
            for line in lines {
                let _ = writeln!(out, "  {line}");
            }
        }
    }
    out
}

pub fn started(resp: &StartSyncResponse) -> String {
    resp.syncs
        .iter()
        .map(|s| format!("Started {} for pair {}\n", esc(&s.sync_id), esc(&s.pair)))
        .collect()
}

pub fn sync_status(s: &SyncStatus, now: SystemTime) -> String {
    let c = &s.counts;
    let mut out = format!(
        "{} (pair {}): {}\n",
        esc(&s.sync_id),
        esc(&s.pair),
        s.status.as_str()
    );
    let _ = writeln!(
        out,
        "started   {} ({})",
        esc(&s.started_at),
        ago(&s.started_at, now)
    );
    if let Some(finished) = &s.finished_at {
        let _ = writeln!(out, "finished  {} ({})", esc(finished), ago(finished, now));
    }
    let _ = writeln!(
        out,
        "files     {} uploaded, {} downloaded, {} deleted here, {} deleted remotely, {} moved",
        c.uploaded, c.downloaded, c.deleted_local, c.deleted_remote, c.moved
    );
    let _ = writeln!(
        out,
        "bytes     {} up, {} down",
        size(c.bytes_up),
        size(c.bytes_down)
    );
    let _ = writeln!(
        out,
        "outcome   conflicts {}, errors {}",
        c.conflicts, c.errors
    );
    if let Some(error) = &s.error {
        let _ = writeln!(out, "error     {}", esc(error));
    }
    if !s.conflicts.is_empty() {
        out.push('\n');
        out.push_str(&conflict_table(&s.conflicts, false, now));
    }
    out
}

pub fn conflicts(list: &ConflictList, all: bool, now: SystemTime) -> String {
    if list.conflicts.is_empty() {
        return if all {
            "No conflicts.\n"
        } else {
            "No unresolved conflicts.\n"
        }
        .to_owned();
    }
    let mut out = conflict_table(&list.conflicts, all, now);
    if list
        .conflicts
        .iter()
        .any(|c| c.status == ConflictStatus::Unresolved)
    {
        out.push_str(
            "\nResolve one with: prism-syncctl resolve ID --strategy \
             keep_local|keep_remote|auto_merge|manual\n",
        );
    }
    out
}

fn conflict_table(conflicts: &[ConflictInfo], with_status: bool, now: SystemTime) -> String {
    let mut headers = vec!["ID", "PAIR", "PATH", "KIND", "DETECTED"];
    if with_status {
        headers.push("STATUS");
    }
    let rows = conflicts
        .iter()
        .map(|c| {
            let mut row = vec![
                c.conflict_id.clone(),
                c.pair.clone(),
                c.file_path.clone(),
                c.kind.clone(),
                ago(&c.detected_at, now),
            ];
            if with_status {
                row.push(match c.status {
                    ConflictStatus::Unresolved => "unresolved".to_owned(),
                    ConflictStatus::Resolved => {
                        format!("resolved ({})", c.strategy.map_or("?", |s| s.as_str()))
                    }
                });
            }
            row
        })
        .collect();
    table(&headers, rows)
}

pub fn resolved(req: &ResolveRequest, resp: &ResolveResponse) -> String {
    let mut out = match (resp.status, &resp.resolved_at) {
        (ConflictStatus::Resolved, Some(at)) => format!(
            "Resolved {} with {} at {}\n",
            esc(&req.conflict_id),
            req.resolution_strategy.as_str(),
            esc(at)
        ),
        (ConflictStatus::Resolved, None) => format!(
            "Resolved {} with {}\n",
            esc(&req.conflict_id),
            req.resolution_strategy.as_str()
        ),
        (ConflictStatus::Unresolved, _) => {
            format!("{} is still unresolved\n", esc(&req.conflict_id))
        }
    };
    if let Some(note) = &resp.note {
        let _ = writeln!(out, "{}", esc(note));
    }
    out
}

pub fn changes(log: &ChangeLog) -> String {
    if log.changes.is_empty() {
        return "No changes.\n".to_owned();
    }
    let rows = log.changes.iter().map(change_row).collect();
    table(&["TIME", "TYPE", "PAIR", "PATH", "ORIGIN"], rows)
}

fn change_row(change: &Change) -> Vec<String> {
    let path = match &change.from_path {
        Some(from) => format!("{from} -> {}", change.path),
        None => change.path.clone(),
    };
    let side = match change.origin_side {
        Side::Local => "local",
        Side::Remote => "remote",
    };
    let origin = match &change.origin_device {
        Some(device) => format!("{side} ({device})"),
        None => side.to_owned(),
    };
    vec![
        change.timestamp.clone(),
        change.kind.as_str().to_owned(),
        change.pair.clone(),
        path,
        origin,
    ]
}

pub fn history(history: &History) -> String {
    let mut out = format!("{} in pair {}\n", esc(&history.path), esc(&history.pair));
    if history.versions.is_empty() {
        out.push_str(
            "No versions are held: the file is not synced, and no sync trashed a version of it.\n",
        );
        return out;
    }
    let rows = history
        .versions
        .iter()
        .map(|v| {
            vec![
                v.version.clone(),
                v.place.replace('_', " "),
                v.modified_at.clone(),
                size(v.size),
                v.origin_device.clone(),
                v.hash.chars().take(12).collect(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["VERSION", "WHERE", "MODIFIED", "SIZE", "ORIGIN", "HASH"],
        rows,
    ));
    out
}

pub fn restored(resp: &RestoreResponse) -> String {
    let mut out = format!(
        "Restored version {} of {} in pair {} ({}); the next sync carries it to the remote\n",
        esc(&resp.version),
        esc(&resp.path),
        esc(&resp.pair),
        size(resp.size)
    );
    if let Some(replaced) = &resp.replaced {
        let _ = writeln!(
            out,
            "The file it replaced is in the local trash as {}",
            esc(replaced)
        );
    }
    if let Some(warning) = &resp.warning {
        let _ = writeln!(out, "Warning: {}", esc(warning));
    }
    out
}

pub fn ack(ack: &Ack) -> String {
    let subject = match &ack.pair {
        Some(pair) => format!("pair {}", esc(pair)),
        None => "all pairs".to_owned(),
    };
    match ack.status.as_str() {
        "paused" => format!("Paused {subject}\n"),
        "resumed" => format!("Resumed {subject}\n"),
        "removed" => format!("Removed {subject}; its files stay on both sides\n"),
        "confirmed" => {
            format!("Confirmed the deletions of {subject}; the next sync applies them\n")
        }
        other => format!("{}: {subject}\n", esc(other)),
    }
}

pub fn pair_added(pair: &PairInfo) -> String {
    format!(
        "Added pair {}: {} <-> {} (conflicts: {})\n",
        esc(&pair.name),
        esc(&pair.local),
        esc(&pair.remote),
        pair.conflict.as_str()
    )
}

pub fn pairs(list: &PairList) -> String {
    if list.pairs.is_empty() {
        return "No pairs. Add one with `prism-syncctl pair add NAME --local DIR --remote URL`.\n"
            .to_owned();
    }
    let rows = list
        .pairs
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.local.clone(),
                p.remote.clone(),
                p.conflict.as_str().to_owned(),
                p.ignore.join(" "),
            ]
        })
        .collect();
    let mut out = table(&["NAME", "LOCAL", "REMOTE", "CONFLICTS", "IGNORE"], rows);
    for pair in &list.pairs {
        if pair.write_guarantee == WriteGuarantee::Rechecked {
            let _ = writeln!(out, "\n{}:\n  {RECHECKED_WRITES}", esc(&pair.name));
        }
    }
    out
}

/// One line: time, id, pair, type and the event's fields.
pub fn event(event: &Event) -> String {
    let fields = match &event.data {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={}", esc(s)),
                other => format!("{k}={}", esc(&other.to_string())),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => esc(&other.to_string()).into_owned(),
    };
    format!(
        "{} #{} {} {} {}\n",
        esc(&event.at),
        event.id,
        esc(event.pair.as_deref().unwrap_or("-")),
        esc(&event.kind),
        fields
    )
}

pub fn tokens(list: &TokenList, now: SystemTime) -> String {
    if list.tokens.is_empty() {
        return "No tokens. Issue one with `prism-syncctl token issue --role viewer`.\n".to_owned();
    }
    let expired = |t: &TokenInfo| timefmt::parse(&t.expires_at).is_some_and(|at| at <= now);
    let rows = list
        .tokens
        .iter()
        .map(|t| {
            let state = if t.revoked_at.is_some() {
                "revoked"
            } else if expired(t) {
                "expired"
            } else {
                "valid"
            };
            vec![
                t.id.clone(),
                t.name.clone().unwrap_or_default(),
                t.role.as_str().to_owned(),
                if t.pairs.is_empty() {
                    "(all)".to_owned()
                } else {
                    t.pairs.join(" ")
                },
                t.expires_at.clone(),
                state.to_owned(),
            ]
        })
        .collect();
    table(&["ID", "NAME", "ROLE", "PAIRS", "EXPIRES", "STATE"], rows)
}

pub fn token_revoked(token: &TokenInfo) -> String {
    format!(
        "Revoked token {}{}\n",
        esc(&token.id),
        token
            .name
            .as_deref()
            .map(|n| format!(" ({})", esc(n)))
            .unwrap_or_default()
    )
}

/// Left-aligned columns two spaces apart, with no trailing blanks. Cells
/// are escaped here, so every table is safe to print whatever it holds.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| row.iter().map(|cell| esc(cell).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header_row = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(header_row).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `532 B`, `1.5 KiB`, `12.0 MiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How long ago `timestamp` was, as `5 min ago`; the timestamp itself when
/// it cannot be read.
fn ago(timestamp: &str, now: SystemTime) -> String {
    match since(timestamp, now) {
        Some(age) if age < Duration::from_secs(1) => "just now".to_owned(),
        Some(age) => format!("{} ago", words(age)),
        None => esc(timestamp).into_owned(),
    }
}

fn since(timestamp: &str, now: SystemTime) -> Option<Duration> {
    now.duration_since(timefmt::parse(timestamp)?).ok()
}

/// `42 s`, `5 min`, `3 h`, `2 d`.
fn words(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::{AgentInfo, LastSync, PairStatus, Problem, SyncState, Transfer};

    fn now() -> SystemTime {
        timefmt::parse("2025-02-09T16:00:00Z").unwrap()
    }

    #[test]
    fn table_aligns_columns_without_trailing_blanks() {
        let text = table(
            &["ID", "PATH"],
            vec![
                vec!["conflict-1".into(), "a.md".into()],
                vec!["c-2".into(), "docs/b.md".into()],
                vec!["c-3".into(), String::new()],
            ],
        );
        assert_eq!(
            text,
            "ID          PATH\nconflict-1  a.md\nc-2         docs/b.md\nc-3\n"
        );
    }

    #[test]
    fn sizes_and_ages_read_naturally() {
        assert_eq!(size(532), "532 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(12 * 1024 * 1024), "12.0 MiB");
        assert_eq!(ago("2025-02-09T15:55:00Z", now()), "5 min ago");
        assert_eq!(ago("2025-02-09T16:00:00Z", now()), "just now");
        assert_eq!(ago("2025-02-07T16:00:00Z", now()), "2 d ago");
        assert_eq!(ago("not a time", now()), "not a time");
    }

    #[test]
    fn status_shows_pairs_transfers_and_details() {
        let status = AgentStatus::new(
            AgentInfo {
                version: "0.1.0".into(),
                device: "laptop".into(),
                pid: 42,
                started_at: "2025-02-09T13:00:00Z".into(),
                state_dir: Some("/state".into()),
                socket: Some("/run/prism-syncd.sock".into()),
            },
            vec![PairStatus {
                name: "notes".into(),
                local: "/home/u/notes".into(),
                remote: "sftp://nas/notes".into(),
                state: PairState::Offline,
                state_detail: "offline, retrying in 8 s: connection refused".into(),
                last_sync: Some(LastSync {
                    sync_id: "sync-12".into(),
                    status: SyncState::Completed,
                    finished_at: Some("2025-02-09T15:55:00Z".into()),
                }),
                pending: 3,
                unresolved_conflicts: 1,
                transfers: vec![Transfer {
                    path: "big.iso".into(),
                    direction: Direction::Upload,
                    bytes_done: 1024 * 1024,
                    bytes_total: 4 * 1024 * 1024,
                }],
                problems: vec![],
                watcher: "ok".into(),
                write_guarantee: WriteGuarantee::Conditional,
                remote_transport: None,
            }],
        );
        let text = status_text(&status);
        assert!(
            text.starts_with("prism-syncd 0.1.0 on laptop, pid 42, up 3 h"),
            "{text}"
        );
        assert!(
            text.contains("notes  offline  3        1          sync-12 completed 5 min ago"),
            "{text}"
        );
        assert!(
            text.contains("  offline, retrying in 8 s: connection refused\n"),
            "{text}"
        );
        assert!(
            text.contains("upload   big.iso  1.0 MiB / 4.0 MiB (25%)"),
            "{text}"
        );
    }

    #[test]
    fn pairs_whose_writes_are_only_rechecked_say_so_in_status_and_pair_list() {
        let pair = |name: &str, remote: &str, write_guarantee| PairInfo {
            name: name.into(),
            local: format!("/home/u/{name}"),
            remote: remote.into(),
            conflict: crate::api::wire::Strategy::Manual,
            ignore: vec![],
            write_guarantee,
        };
        let list = PairList {
            pairs: vec![
                pair("nas", "sftp://nas/notes", WriteGuarantee::Conditional),
                pair("drive", "rclone:gdrive:Notes", WriteGuarantee::Rechecked),
            ],
        };
        let text = pairs(&list);
        assert!(
            text.ends_with(&format!("\ndrive:\n  {RECHECKED_WRITES}\n")),
            "{text}"
        );
        assert!(!text.contains("nas:"), "{text}");

        let status = |write_guarantee, remote_transport: Option<String>| {
            status_text(&AgentStatus::new(
                AgentInfo {
                    version: "0.1.0".into(),
                    device: "laptop".into(),
                    pid: 42,
                    started_at: "2025-02-09T13:00:00Z".into(),
                    state_dir: None,
                    socket: None,
                },
                vec![PairStatus {
                    name: "drive".into(),
                    local: "/home/u/drive".into(),
                    remote: "rclone:gdrive:Notes".into(),
                    state: PairState::Idle,
                    state_detail: String::new(),
                    last_sync: None,
                    pending: 0,
                    unresolved_conflicts: 0,
                    transfers: vec![],
                    problems: vec![],
                    watcher: "ok".into(),
                    write_guarantee,
                    remote_transport: remote_transport.clone(),
                }],
            ))
        };
        let text = status(WriteGuarantee::Rechecked, None);
        assert!(
            text.contains(&format!("\ndrive:\n  {RECHECKED_WRITES}\n")),
            "{text}"
        );
        let socket =
            "rclone v1.75.2, rcd on unix socket /run/user/1000/prism-sync-rcd-0a1b/rc.sock";
        let text = status(WriteGuarantee::Rechecked, Some(socket.into()));
        assert!(
            text.contains(&format!("\n  {RECHECKED_WRITES}\n  transport: {socket}\n")),
            "{text}"
        );
        let text = status(WriteGuarantee::Conditional, None);
        assert!(
            !text.contains("re-checked") && !text.contains("drive:"),
            "{text}"
        );
    }

    #[test]
    fn hostile_names_are_shown_escaped_and_problems_name_their_path_once() {
        let evil = "evil\x1b]0;PWNED\x07\x1b[2J\u{202e}txt.exe";
        let status = AgentStatus::new(
            AgentInfo {
                version: "0.1.0".into(),
                device: "laptop".into(),
                pid: 42,
                started_at: "2025-02-09T13:00:00Z".into(),
                state_dir: Some("/state".into()),
                socket: Some("/run/prism-syncd.sock".into()),
            },
            vec![PairStatus {
                name: "notes".into(),
                local: "/home/u/notes".into(),
                remote: "file:///srv/notes".into(),
                state: PairState::Idle,
                state_detail: String::new(),
                last_sync: None,
                pending: 0,
                unresolved_conflicts: 0,
                transfers: vec![Transfer {
                    path: evil.into(),
                    direction: Direction::Download,
                    bytes_done: 1,
                    bytes_total: 2,
                }],
                problems: vec![
                    Problem {
                        path: "outlink".into(),
                        message: "symbolic links are not synced; it is skipped".into(),
                    },
                    Problem {
                        path: String::new(),
                        message: format!("/home/u/notes/{evil}\nforged line is not synced"),
                    },
                ],
                watcher: "ok".into(),
                write_guarantee: WriteGuarantee::Conditional,
                remote_transport: None,
            }],
        );
        let text = status_text(&status);
        let shown = "evil\\x1b]0;PWNED\\x07\\x1b[2J\\u{202e}txt.exe";
        assert!(!text.contains(['\x1b', '\x07', '\u{202e}']), "{text:?}");
        assert!(
            text.contains(&format!("download {shown}  1 B / 2 B")),
            "{text}"
        );
        assert!(
            text.contains("  problem: outlink: symbolic links are not synced; it is skipped\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "  problem: /home/u/notes/{shown}\\x0aforged line is not synced\n"
            )),
            "{text}"
        );
    }

    #[test]
    fn tables_escape_every_cell() {
        let log = ChangeLog {
            changes: vec![Change {
                kind: crate::api::wire::ChangeKind::Created,
                path: "a\u{2066}b".into(),
                timestamp: "2025-02-09T15:55:00Z".into(),
                pair: "notes".into(),
                from_path: None,
                origin_side: Side::Remote,
                origin_device: Some("nas\x1b[31m".into()),
                origin_at: None,
                sync_id: None,
                hash: None,
                size: None,
            }],
        };
        let text = changes(&log);
        assert!(text.contains("a\\u{2066}b"), "{text}");
        assert!(text.contains("remote (nas\\x1b[31m)"), "{text}");
        assert!(!text.contains(['\x1b', '\u{2066}']), "{text:?}");
    }

    fn status_text(status: &AgentStatus) -> String {
        super::status(status, now())
    }
}
