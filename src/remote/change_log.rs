//! The change logs devices keep on a pair's remote: who made which change,
//! readable by every other device (see `engine/change_log.rs` for when they
//! are written and read, and how a change is matched to its origin).
//!
//! Each journal lineage (see `remote/journal_record.rs`) has a log of its
//! own under `.prism-sync/changes/`, written only by the agent whose
//! journal has that lineage, so devices never contend for one:
//!
//! - `LOG.head`, one line `FIRST LAST LAST_ID DEVICE`: the log's oldest and
//!   newest segment and the id of its newest entry. A reader compares it
//!   with how far it read, and reads nothing more when it did not move.
//! - `LOG.N`, segment `N`: one JSON object per line, one line per change,
//!   oldest first. A segment holds at most [`SEGMENT_ENTRIES`] entries and
//!   [`SEGMENT_BYTES`] bytes; the newest is rewritten whole (a record is
//!   replaced in one step) until it is full, older ones are never touched
//!   again, and the oldest are removed once they are older than the trash
//!   retention.
//!
//! Beside it, each lineage keeps a trash log, `LOG-trash` ([`trash_log`]):
//! the versions that device moved to the remote's trash (kind `trashed`,
//! with the version's name below the trash), so every device's `history`
//! lists them and `restore` can bring them back, though only the device
//! that trashed them saw them go. Its ids are the writer's journal ids of
//! those trashed versions.
//!
//! An entry's id is the writer's journal change id: it increases along a
//! log, so "how far I read" is one number. Segments are written before the
//! head, so a reader never follows a head to entries not yet there; an
//! entry beyond the head (a writer that crashed in between) is ignored by
//! readers and written again by the writer.
//!
//! Entries come from other machines: every path goes through
//! [`RelPath::new`], every hash through [`ContentHash::from_hex`], and a
//! line that does not read as an entry is skipped with a warning. The kind
//! of change is kept as text, so a kind a newer agent writes passes through.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Replica, ReplicaError};
use crate::model::{ContentHash, RelPath};
use crate::timefmt;

/// The most entries a segment holds: the newest segment is rewritten
/// whole at each append, so this bounds what an append writes.
pub const SEGMENT_ENTRIES: usize = 128;
/// The most bytes a segment holds: backends read records with a 64 KiB
/// cap, and one entry (two paths of at most 4 KiB) stays far below the
/// rest.
pub const SEGMENT_BYTES: usize = 48 * 1024;

/// The folder of the logs below `.prism-sync/`.
const FOLDER: &str = "changes";

/// One change as its device made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Increases along a log (the writer's journal change id).
    pub id: u64,
    /// When the device recorded it (RFC 3339).
    pub at: String,
    /// The device that made it.
    pub device: String,
    /// `created`, `modified`, `deleted`, `moved`, or a kind a newer agent
    /// knows.
    pub change_type: String,
    pub path: RelPath,
    /// Where a move came from.
    pub from_path: Option<RelPath>,
    pub is_dir: bool,
    pub hash: Option<ContentHash>,
    pub size: Option<u64>,
    /// In a trash log: the version's name below the remote's trash
    /// (`20250209-1600/docs/page.md`) and its mtime.
    pub trashed: Option<TrashedAs>,
}

/// Where a trash log's entry says its version went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrashedAs {
    pub trash_name: RelPath,
    pub mtime_ns: i64,
}

/// A log's head record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// The oldest segment still kept.
    pub first: u64,
    /// The segment written last (it may still grow).
    pub last: u64,
    /// The id of the newest entry; 0 for none.
    pub last_id: u64,
    /// The device writing the log, for a person looking.
    pub device: String,
}

/// How far a reader got in one log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The segment the newest entry read was in.
    pub segment: u64,
    /// The id of the newest entry read.
    pub last_id: u64,
}

/// The entry as a line of a segment.
#[derive(Serialize, Deserialize)]
struct Line {
    id: u64,
    at: String,
    device: String,
    #[serde(rename = "type")]
    change_type: String,
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from_path: Option<String>,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trash_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtime_ns: Option<i64>,
}

fn head_name(log: &str) -> String {
    format!("{FOLDER}/{log}.head")
}

fn segment_name(log: &str, segment: u64) -> String {
    format!("{FOLDER}/{log}.{segment}")
}

/// What a trash log's name adds to its lineage.
const TRASH_LOG_SUFFIX: &str = "-trash";

/// The name of the trash log of the lineage whose change log is `log`.
pub fn trash_log(log: &str) -> String {
    format!("{log}{TRASH_LOG_SUFFIX}")
}

/// Whether `log` is a trash log.
pub fn is_trash_log(log: &str) -> bool {
    log.ends_with(TRASH_LOG_SUFFIX)
}

/// Whether `log` is a log's name: a lineage, 32 lowercase hex digits, or a
/// lineage's trash log, so it cannot leave the folder.
fn is_log_name(log: &str) -> bool {
    let lineage = log.strip_suffix(TRASH_LOG_SUFFIX).unwrap_or(log);
    lineage.len() == 32
        && lineage
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The logs on `remote` that have a head.
pub fn logs(remote: &dyn Replica) -> Result<Vec<String>, ReplicaError> {
    let mut logs: Vec<String> = remote
        .list_records(FOLDER)?
        .into_iter()
        .filter_map(|name| name.strip_suffix(".head").map(str::to_owned))
        .filter(|log| is_log_name(log))
        .collect();
    logs.sort();
    Ok(logs)
}

/// The head of `log`; `None` when there is none or it is damaged.
pub fn read_head(remote: &dyn Replica, log: &str) -> Result<Option<Head>, ReplicaError> {
    let Some(text) = remote.read_record(&head_name(log))? else {
        return Ok(None);
    };
    let head = parse_head(&text);
    if head.is_none() {
        tracing::warn!(remote = %remote.describe(), log, "a change log's head is damaged; it is skipped");
    }
    Ok(head)
}

fn parse_head(text: &str) -> Option<Head> {
    let mut words = text.lines().next()?.split_whitespace();
    let mut number = || words.next()?.parse::<u64>().ok();
    let (first, last, last_id) = (number()?, number()?, number()?);
    let device = words.next().unwrap_or_default().to_owned();
    (first <= last).then_some(Head {
        first,
        last,
        last_id,
        device,
    })
}

fn head_text(head: &Head) -> String {
    let device = head.device.split_whitespace().collect::<Vec<_>>().join("_");
    format!("{} {} {} {device}\n", head.first, head.last, head.last_id)
}

fn encode(entry: &LogEntry) -> String {
    let line = Line {
        id: entry.id,
        at: entry.at.clone(),
        device: entry.device.clone(),
        change_type: entry.change_type.clone(),
        path: entry.path.as_str().to_owned(),
        from_path: entry.from_path.as_ref().map(|p| p.as_str().to_owned()),
        kind: if entry.is_dir { "dir" } else { "file" }.to_owned(),
        hash: entry.hash.map(|h| h.to_hex()),
        size: entry.size,
        trash_name: entry
            .trashed
            .as_ref()
            .map(|t| t.trash_name.as_str().to_owned()),
        mtime_ns: entry.trashed.as_ref().map(|t| t.mtime_ns),
    };
    serde_json::to_string(&line).expect("a log entry serializes")
}

fn decode(text: &str) -> Option<LogEntry> {
    let line: Line = serde_json::from_str(text).ok()?;
    let is_dir = match line.kind.as_str() {
        "dir" => true,
        "file" => false,
        _ => return None,
    };
    let well_formed = |s: &str| !s.is_empty() && s.len() <= 64 && !s.contains(char::is_control);
    if !well_formed(&line.change_type) || timefmt::parse(&line.at).is_none() {
        return None;
    }
    Some(LogEntry {
        id: line.id,
        at: line.at,
        device: line.device,
        change_type: line.change_type,
        path: RelPath::new(&line.path).ok()?,
        from_path: match line.from_path {
            Some(p) => Some(RelPath::new(&p).ok()?),
            None => None,
        },
        is_dir,
        hash: match line.hash {
            Some(h) => Some(ContentHash::from_hex(&h)?),
            None => None,
        },
        size: line.size,
        trashed: match line.trash_name {
            Some(name) => Some(TrashedAs {
                trash_name: RelPath::new(&name).ok()?,
                mtime_ns: line.mtime_ns.unwrap_or(0),
            }),
            None => None,
        },
    })
}

/// The entries of a segment's text that read as entries, in order.
fn parse_segment(remote: &dyn Replica, log: &str, text: &str) -> Vec<LogEntry> {
    let mut entries = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match decode(line) {
            Some(entry) => entries.push(entry),
            None => tracing::warn!(
                remote = %remote.describe(),
                log,
                "a change log entry does not read as one; it is skipped"
            ),
        }
    }
    entries
}

fn read_segment(
    remote: &dyn Replica,
    log: &str,
    segment: u64,
) -> Result<Vec<LogEntry>, ReplicaError> {
    Ok(match remote.read_record(&segment_name(log, segment))? {
        Some(text) => parse_segment(remote, log, &text),
        None => Vec::new(),
    })
}

/// The entries of `log` after `cursor`, up to its `head`, and the cursor
/// after them. Reads only the segments that can hold new entries.
pub fn read_new(
    remote: &dyn Replica,
    log: &str,
    head: &Head,
    cursor: Cursor,
) -> Result<(Vec<LogEntry>, Cursor), ReplicaError> {
    let done = Cursor {
        segment: head.last,
        last_id: head.last_id,
    };
    if head.last_id <= cursor.last_id && head.last >= cursor.segment {
        return Ok((Vec::new(), done.max_id(cursor)));
    }
    // A log that starts lower than the cursor was begun again (its head
    // was lost): read it whole.
    let from = if head.last < cursor.segment {
        head.first
    } else {
        cursor.segment.max(head.first)
    };
    let mut entries = Vec::new();
    for segment in from..=head.last {
        entries.extend(
            read_segment(remote, log, segment)?
                .into_iter()
                .filter(|e| e.id > cursor.last_id && e.id <= head.last_id),
        );
    }
    Ok((entries, done))
}

impl Cursor {
    fn max_id(self, other: Cursor) -> Cursor {
        Cursor {
            segment: self.segment,
            last_id: self.last_id.max(other.last_id),
        }
    }
}

/// The writing end of this device's own log, with the newest segment kept
/// in memory once read (at the first append), so appending costs two
/// writes (the segment and the head) and no read.
#[derive(Debug)]
pub struct LogWriter {
    log: String,
    head: Head,
    /// The newest segment's lines, once read: only an append needs them,
    /// so a run with nothing to publish reads the head alone.
    tail: Option<Vec<String>>,
}

impl LogWriter {
    /// Opens `log` to append to it. A log with a head continues where its
    /// head says (entries beyond it, from a writer that crashed before
    /// writing the head, are dropped: they are written again). A log
    /// without one continues after the newest segment found, or starts
    /// empty with its newest id at `start_after`, and its head is written
    /// at once, so entries after that point are never skipped.
    pub fn open(
        remote: &dyn Replica,
        log: &str,
        device: &str,
        start_after: u64,
    ) -> Result<LogWriter, ReplicaError> {
        assert!(is_log_name(log), "a log is named after a lineage");
        if let Some(head) = read_head(remote, log)? {
            return Ok(LogWriter {
                log: log.to_owned(),
                head: Head {
                    device: device.to_owned(),
                    ..head
                },
                tail: None,
            });
        }
        // No head (a backend that replaces by remove-then-rename lost it in
        // a crash, or a new log): rebuild it from the segments, if any.
        let prefix = format!("{log}.");
        let segments: Vec<u64> = remote
            .list_records(FOLDER)?
            .iter()
            .filter_map(|name| name.strip_prefix(&prefix)?.parse().ok())
            .collect();
        let mut head = Head {
            first: segments.iter().copied().min().unwrap_or(0),
            last: segments.iter().copied().max().unwrap_or(0),
            last_id: start_after,
            device: device.to_owned(),
        };
        let tail_entries = read_segment(remote, log, head.last)?;
        if let Some(newest) = tail_entries.iter().map(|e| e.id).max() {
            head.last_id = head.last_id.max(newest);
        }
        remote.write_record(&head_name(log), &head_text(&head))?;
        Ok(LogWriter {
            log: log.to_owned(),
            head,
            tail: Some(tail_entries.iter().map(encode).collect()),
        })
    }

    /// The log's name (the lineage it belongs to).
    pub fn log(&self) -> &str {
        &self.log
    }

    /// The id of the newest entry written.
    pub fn last_id(&self) -> u64 {
        self.head.last_id
    }

    /// Appends `entries` (ids above [`Self::last_id`], in order): fills the
    /// newest segment, starts new ones as segments fill up, then writes the
    /// head, and removes the segments older than `retention`. Nothing of
    /// the writer's state changes unless every write succeeded.
    pub fn append(
        &mut self,
        remote: &dyn Replica,
        entries: &[LogEntry],
        retention: Duration,
        now: SystemTime,
    ) -> Result<(), ReplicaError> {
        let entries: Vec<&LogEntry> = entries
            .iter()
            .filter(|e| e.id > self.head.last_id)
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        let mut head = self.head.clone();
        let mut tail = match &self.tail {
            Some(tail) => tail.clone(),
            // Entries beyond the head (from a writer that crashed before
            // writing it) are dropped: they are written again.
            None => read_segment(remote, &self.log, head.last)?
                .iter()
                .filter(|e| e.id <= head.last_id)
                .map(encode)
                .collect(),
        };
        let mut tail_bytes: usize = tail.iter().map(|l| l.len() + 1).sum();
        let mut full: Vec<(u64, Vec<String>)> = Vec::new();
        for entry in entries {
            let line = encode(entry);
            if !tail.is_empty()
                && (tail.len() >= SEGMENT_ENTRIES || tail_bytes + line.len() + 1 > SEGMENT_BYTES)
            {
                full.push((head.last, std::mem::take(&mut tail)));
                head.last += 1;
                tail_bytes = 0;
            }
            tail_bytes += line.len() + 1;
            tail.push(line);
            head.last_id = entry.id;
        }
        let rotated = !full.is_empty();
        for (segment, lines) in full.iter().chain([(head.last, tail.clone())].iter()) {
            remote.write_record(&segment_name(&self.log, *segment), &segment_text(lines))?;
        }
        let expired = if rotated {
            self.expired(remote, &head, retention, now)?
        } else {
            Vec::new()
        };
        head.first += expired.len() as u64;
        remote.write_record(&head_name(&self.log), &head_text(&head))?;
        self.head = head;
        self.tail = Some(tail);
        for segment in expired {
            remote.remove_record(&segment_name(&self.log, segment))?;
        }
        Ok(())
    }

    /// The oldest segments whose newest entry is older than `retention`
    /// (never the newest segment).
    fn expired(
        &self,
        remote: &dyn Replica,
        head: &Head,
        retention: Duration,
        now: SystemTime,
    ) -> Result<Vec<u64>, ReplicaError> {
        let mut expired = Vec::new();
        for segment in head.first..head.last {
            let newest = read_segment(remote, &self.log, segment)?
                .last()
                .and_then(|e| timefmt::parse(&e.at));
            match newest {
                Some(at) if at + retention < now => expired.push(segment),
                // A lost or damaged segment holds nothing worth keeping.
                None => expired.push(segment),
                Some(_) => break,
            }
        }
        Ok(expired)
    }
}

fn segment_text(lines: &[String]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64) -> LogEntry {
        LogEntry {
            id,
            at: "2025-02-09T16:00:00.000Z".to_owned(),
            device: "laptop".to_owned(),
            change_type: "moved".to_owned(),
            path: RelPath::new("docs/new name.md").unwrap(),
            from_path: Some(RelPath::new("docs/old.md").unwrap()),
            is_dir: false,
            hash: Some(ContentHash::of_bytes(b"x")),
            size: Some(1),
            trashed: None,
        }
    }

    #[test]
    fn a_trash_log_entry_names_where_its_version_went() {
        let trashed = LogEntry {
            change_type: "trashed".to_owned(),
            from_path: None,
            trashed: Some(TrashedAs {
                trash_name: RelPath::new("20250209-1600/docs/new name.md").unwrap(),
                mtime_ns: 1_739_116_800_000_000_000,
            }),
            ..entry(3)
        };
        assert_eq!(decode(&encode(&trashed)), Some(trashed.clone()));
        let hostile = encode(&trashed).replace("20250209-1600/docs", "../../docs");
        assert_eq!(decode(&hostile), None);
        let lineage = "0123456789abcdef0123456789abcdef";
        assert_eq!(trash_log(lineage), format!("{lineage}-trash"));
        assert!(is_log_name(&trash_log(lineage)) && is_trash_log(&trash_log(lineage)));
        assert!(!is_trash_log(lineage));
        assert!(!is_log_name("../0123456789abcdef0123456789abcdef-trash"));
        assert!(!is_log_name("-trash"));
    }

    #[test]
    fn an_entry_reads_back_and_a_hostile_one_reads_as_none() {
        assert_eq!(decode(&encode(&entry(7))), Some(entry(7)));
        let hostile = encode(&entry(7)).replace("docs/old.md", "../etc/passwd");
        assert_eq!(decode(&hostile), None);
        let later_kind = encode(&entry(7)).replace("\"moved\"", "\"chmod\"");
        assert_eq!(decode(&later_kind).unwrap().change_type, "chmod");
        assert_eq!(decode("{\"id\": 1}"), None);
        assert_eq!(decode("not json"), None);
    }

    #[test]
    fn a_head_reads_back_and_a_damaged_one_reads_as_none() {
        let head = Head {
            first: 2,
            last: 5,
            last_id: 981,
            device: "my laptop".to_owned(),
        };
        let text = head_text(&head);
        assert_eq!(text, "2 5 981 my_laptop\n");
        assert_eq!(
            parse_head(&text),
            Some(Head {
                device: "my_laptop".to_owned(),
                ..head
            })
        );
        assert_eq!(parse_head("5 2 9 laptop\n"), None);
        assert_eq!(parse_head("x 2 9\n"), None);
        assert_eq!(parse_head(""), None);
    }

    /// A remote folder that counts the records read.
    struct Counting {
        inner: crate::remote::LocalFolder,
        reads: std::sync::atomic::AtomicUsize,
    }

    impl Counting {
        fn reads(&self) -> usize {
            self.reads.swap(0, std::sync::atomic::Ordering::Relaxed)
        }
    }

    /// Only the record calls matter here; the rest is never called.
    impl Replica for Counting {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn root_state(&self) -> Result<crate::remote::RootState, ReplicaError> {
            self.inner.root_state()
        }
        fn mark_root(&self) -> Result<(), ReplicaError> {
            self.inner.mark_root()
        }
        fn list(
            &self,
            scope: &crate::model::Scope,
            cache: &crate::model::BaseTree,
            ignore: &crate::tracker::ignore::IgnoreRules,
        ) -> Result<crate::remote::Listing, ReplicaError> {
            self.inner.list(scope, cache, ignore)
        }
        fn stat(&self, path: &RelPath) -> Result<crate::fsops::Expect, ReplicaError> {
            self.inner.stat(path)
        }
        fn open(&self, path: &RelPath) -> Result<Box<dyn std::io::Read + Send + '_>, ReplicaError> {
            self.inner.open(path)
        }
        fn stage(
            &self,
            path: &RelPath,
            content: &mut dyn std::io::Read,
            hash: &ContentHash,
            mtime_ns: i64,
            mode: Option<crate::model::Mode>,
        ) -> Result<crate::remote::StagedWrite, ReplicaError> {
            self.inner.stage(path, content, hash, mtime_ns, mode)
        }
        fn commit_staged(
            &self,
            staged: &crate::remote::StagedWrite,
            expect: &crate::fsops::Expect,
        ) -> Result<crate::model::SideEntry, ReplicaError> {
            self.inner.commit_staged(staged, expect)
        }
        fn discard(&self, staged: crate::remote::StagedWrite) {
            self.inner.discard(staged)
        }
        fn mkdir(
            &self,
            path: &RelPath,
            mode: Option<crate::model::Mode>,
        ) -> Result<crate::model::SideEntry, ReplicaError> {
            self.inner.mkdir(path, mode)
        }
        fn rename(
            &self,
            from: &RelPath,
            to: &RelPath,
            expect: &crate::fsops::Expect,
        ) -> Result<(), ReplicaError> {
            self.inner.rename(from, to, expect)
        }
        fn remove(
            &self,
            path: &RelPath,
            expect: &crate::fsops::Expect,
        ) -> Result<(), ReplicaError> {
            self.inner.remove(path, expect)
        }
        fn read_record(&self, name: &str) -> Result<Option<String>, ReplicaError> {
            self.reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.read_record(name)
        }
        fn write_record(&self, name: &str, content: &str) -> Result<(), ReplicaError> {
            self.inner.write_record(name, content)
        }
        fn list_records(&self, folder: &str) -> Result<Vec<String>, ReplicaError> {
            self.inner.list_records(folder)
        }
        fn remove_record(&self, name: &str) -> Result<(), ReplicaError> {
            self.inner.remove_record(name)
        }
    }

    #[test]
    fn a_reader_reads_only_the_head_until_the_log_grows_and_then_only_the_new_segment() {
        let dir = tempfile::TempDir::new().unwrap();
        let remote = Counting {
            inner: crate::remote::LocalFolder::remote(dir.path().to_path_buf()),
            reads: Default::default(),
        };
        let log = "0123456789abcdef0123456789abcdef";
        let mut writer = LogWriter::open(&remote, log, "laptop", 0).unwrap();
        let entries: Vec<LogEntry> = (1..=(3 * SEGMENT_ENTRIES as u64))
            .map(|id| LogEntry { id, ..entry(id) })
            .collect();
        let month = Duration::from_secs(30 * 24 * 3600);
        // Written now: nothing is old enough to be pruned.
        let now = timefmt::parse("2025-02-10T00:00:00Z").unwrap();
        writer.append(&remote, &entries, month, now).unwrap();
        remote.reads();

        let head = read_head(&remote, log).unwrap().unwrap();
        let (read, cursor) = read_new(&remote, log, &head, Cursor::default()).unwrap();
        assert_eq!(read.len(), entries.len());
        assert_eq!(remote.reads(), 1 + 3, "the head and each segment once");

        let head = read_head(&remote, log).unwrap().unwrap();
        let (read, same) = read_new(&remote, log, &head, cursor).unwrap();
        assert!(read.is_empty());
        assert_eq!(same, cursor);
        assert_eq!(remote.reads(), 1, "nothing new: the head only");

        let next = 3 * SEGMENT_ENTRIES as u64 + 1;
        let one = |id: u64| [LogEntry { id, ..entry(id) }];
        writer.append(&remote, &one(next), month, now).unwrap();
        assert_eq!(
            remote.reads(),
            1,
            "starting a segment reads the oldest, to see whether it expired"
        );
        writer.append(&remote, &one(next + 1), month, now).unwrap();
        assert_eq!(remote.reads(), 0, "appending to a segment reads nothing");
        let head = read_head(&remote, log).unwrap().unwrap();
        let (read, _) = read_new(&remote, log, &head, cursor).unwrap();
        assert_eq!(
            read.iter().map(|e| e.id).collect::<Vec<_>>(),
            [next, next + 1]
        );
        assert_eq!(
            remote.reads(),
            1 + 2,
            "the head, the last full segment again and the new one"
        );
    }

    /// A run with nothing to publish reads the head alone; the newest
    /// segment is read at the first append, which continues it whole.
    #[test]
    fn a_writer_reopened_reads_its_newest_segment_only_when_it_appends() {
        let dir = tempfile::TempDir::new().unwrap();
        let remote = Counting {
            inner: crate::remote::LocalFolder::remote(dir.path().to_path_buf()),
            reads: Default::default(),
        };
        let log = "0123456789abcdef0123456789abcdef";
        let month = Duration::from_secs(30 * 24 * 3600);
        let now = timefmt::parse("2025-02-10T00:00:00Z").unwrap();
        let one = |id: u64| [LogEntry { id, ..entry(id) }];
        let mut writer = LogWriter::open(&remote, log, "laptop", 0).unwrap();
        writer.append(&remote, &one(1), month, now).unwrap();
        remote.reads();

        let mut reopened = LogWriter::open(&remote, log, "laptop", 0).unwrap();
        assert_eq!(remote.reads(), 1, "the head only");
        assert_eq!(reopened.last_id(), 1);
        reopened.append(&remote, &one(2), month, now).unwrap();
        assert_eq!(remote.reads(), 1, "the newest segment, once");
        reopened.append(&remote, &one(3), month, now).unwrap();
        assert_eq!(remote.reads(), 0);
        let head = read_head(&remote, log).unwrap().unwrap();
        let (read, _) = read_new(&remote, log, &head, Cursor::default()).unwrap();
        assert_eq!(read.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn log_names_are_lineages_only() {
        assert!(is_log_name("0123456789abcdef0123456789abcdef"));
        assert!(!is_log_name("../0123456789abcdef0123456789abc"));
        assert!(!is_log_name("0123456789ABCDEF0123456789ABCDEF"));
    }
}
