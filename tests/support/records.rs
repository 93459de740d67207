//! The records agents keep on a remote (`Replica::read_record` and
//! `write_record`), checked the same way on every backend: absent until
//! written, replaced whole by a longer or a shorter content, nothing staged
//! left beside them, and the journal record's format on top.

use std::fs;
use std::path::Path;

use prism_sync::remote::{Replica, journal_record};

/// The server's own view of a replica's metadata folder (`.prism-sync`),
/// to see what a record write left there.
pub trait Metadata {
    /// The names in the folder `folder` of the metadata folder, sorted.
    fn names(&self, folder: &str) -> Vec<String>;
    /// The content of the file `path` in the metadata folder.
    fn read(&self, path: &str) -> Option<String>;
}

/// A metadata folder on this machine's disk.
impl Metadata for Path {
    fn names(&self, folder: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.join(folder))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn read(&self, path: &str) -> Option<String> {
        fs::read_to_string(self.join(path)).ok()
    }
}

impl Metadata for std::path::PathBuf {
    fn names(&self, folder: &str) -> Vec<String> {
        self.as_path().names(folder)
    }

    fn read(&self, path: &str) -> Option<String> {
        Metadata::read(self.as_path(), path)
    }
}

/// Runs the checks on `replica`, whose metadata folder (`.prism-sync`) the
/// server shows as `metadata` (a `Path` where it is on this machine's
/// disk).
pub fn check_records_round_trip(replica: &dyn Replica, metadata: &(impl Metadata + ?Sized)) {
    let name = "journals/0123456789abcdef0123456789abcdef";
    assert_eq!(replica.read_record(name).unwrap(), None);
    for content in ["7 laptop\n", "1234567 a-longer-device-name\n", "9\n"] {
        replica.write_record(name, content).unwrap();
        assert_eq!(replica.read_record(name).unwrap().as_deref(), Some(content));
    }
    assert_eq!(
        metadata.names("journals"),
        ["0123456789abcdef0123456789abcdef"],
        "nothing staged left"
    );
    assert_eq!(
        metadata
            .read("journals/0123456789abcdef0123456789abcdef")
            .unwrap(),
        "9\n"
    );

    let lineage = "fedcba9876543210fedcba9876543210";
    assert_eq!(journal_record::read(replica, lineage).unwrap(), None);
    journal_record::write(replica, lineage, 42, "my laptop").unwrap();
    assert_eq!(journal_record::read(replica, lineage).unwrap(), Some(42));
    assert_eq!(
        metadata.read(&format!("journals/{lineage}")).unwrap(),
        "42 my_laptop\n"
    );
}

/// The change logs (`remote::change_log`) on `replica`: written by one
/// device, read incrementally by another, rotated into segments, pruned
/// after the retention, and continued after the writer restarts or lost
/// its head. `metadata` as for [`check_records_round_trip`].
pub fn check_change_log_round_trip(replica: &dyn Replica, metadata: &(impl Metadata + ?Sized)) {
    use std::time::{Duration, SystemTime};

    use prism_sync::model::{ContentHash, RelPath};
    use prism_sync::remote::change_log::{self, Cursor, LogEntry, LogWriter, SEGMENT_ENTRIES};

    assert_eq!(
        replica.list_records("changes").unwrap(),
        Vec::<String>::new()
    );
    replica.remove_record("changes/nothing-here").unwrap();

    let month = Duration::from_secs(30 * 24 * 3600);
    let recent = prism_sync::timefmt::now_rfc3339();
    let entry = |id: u64, at: &str| LogEntry {
        id,
        at: at.to_owned(),
        device: "devA".to_owned(),
        change_type: if id.is_multiple_of(2) {
            "modified"
        } else {
            "deleted"
        }
        .to_owned(),
        path: RelPath::new(&format!("folder/file {id}.txt")).unwrap(),
        from_path: None,
        is_dir: false,
        hash: Some(ContentHash::of_bytes(&id.to_le_bytes())),
        size: Some(id),
        trashed: None,
    };
    let log = "00112233445566778899aabbccddeeff";
    let mut writer = LogWriter::open(replica, log, "devA", 0).unwrap();
    assert_eq!(change_log::logs(replica).unwrap(), [log]);
    let head = change_log::read_head(replica, log).unwrap().unwrap();
    assert_eq!((head.first, head.last, head.last_id), (0, 0, 0));

    let first: Vec<LogEntry> = (1..=3).map(|id| entry(id, &recent)).collect();
    writer
        .append(replica, &first, month, SystemTime::now())
        .unwrap();
    let head = change_log::read_head(replica, log).unwrap().unwrap();
    let (read, cursor) = change_log::read_new(replica, log, &head, Cursor::default()).unwrap();
    assert_eq!(read, first, "a reader gets what was written");
    assert_eq!(cursor.last_id, 3);
    let (again, same) = change_log::read_new(replica, log, &head, cursor).unwrap();
    assert!(again.is_empty(), "nothing twice");
    assert_eq!(same, cursor);

    // Enough to fill two segments, the first of them old: it is pruned.
    let old = "2020-01-01T00:00:00.000Z";
    let many: Vec<LogEntry> = (4..=(2 * SEGMENT_ENTRIES as u64 + 40))
        .map(|id| {
            entry(
                id,
                if id <= SEGMENT_ENTRIES as u64 {
                    old
                } else {
                    &recent
                },
            )
        })
        .collect();
    writer
        .append(replica, &many, month, SystemTime::now())
        .unwrap();
    let head = change_log::read_head(replica, log).unwrap().unwrap();
    assert_eq!(
        (head.first, head.last),
        (1, 2),
        "rotated, the old segment pruned"
    );
    assert_eq!(head.last_id, 2 * SEGMENT_ENTRIES as u64 + 40);
    let (read, cursor) = change_log::read_new(replica, log, &head, cursor).unwrap();
    assert_eq!(
        read.first().map(|e| e.id),
        Some(SEGMENT_ENTRIES as u64 + 1),
        "what was pruned is gone; the rest is read in order"
    );
    assert_eq!(read.last().map(|e| e.id), Some(head.last_id));
    assert!(read.windows(2).all(|w| w[0].id + 1 == w[1].id));

    // A writer that starts again continues the log.
    let next = head.last_id + 1;
    let mut restarted = LogWriter::open(replica, log, "devA", 0).unwrap();
    assert_eq!(restarted.last_id(), head.last_id);
    restarted
        .append(replica, &[entry(next, &recent)], month, SystemTime::now())
        .unwrap();
    let head = change_log::read_head(replica, log).unwrap().unwrap();
    let (read, cursor) = change_log::read_new(replica, log, &head, cursor).unwrap();
    assert_eq!(read, [entry(next, &recent)]);

    // One that lost its head rebuilds it from the segments.
    replica
        .remove_record(&format!("changes/{log}.head"))
        .unwrap();
    assert_eq!(change_log::logs(replica).unwrap(), Vec::<String>::new());
    let mut rebuilt = LogWriter::open(replica, log, "devA", 0).unwrap();
    assert_eq!(rebuilt.last_id(), next);
    rebuilt
        .append(
            replica,
            &[entry(next + 1, &recent)],
            month,
            SystemTime::now(),
        )
        .unwrap();
    let head = change_log::read_head(replica, log).unwrap().unwrap();
    let (read, _) = change_log::read_new(replica, log, &head, cursor).unwrap();
    assert_eq!(read, [entry(next + 1, &recent)]);

    let left = metadata.names("changes");
    assert_eq!(
        left,
        [
            format!("{log}.1"),
            format!("{log}.2"),
            format!("{log}.head")
        ],
        "the segments kept and the head, nothing staged"
    );
    let mut listed = replica.list_records("changes").unwrap();
    listed.sort();
    assert_eq!(listed, left);
}
