//! The records agents keep on a remote (`Replica::read_record` and
//! `write_record`), checked the same way on every backend: absent until
//! written, replaced whole by a longer or a shorter content, nothing staged
//! left beside them, and the journal record's format on top.

use std::fs;
use std::path::Path;

use prism_sync::remote::{Replica, journal_record};

/// Runs the checks on `replica`, whose metadata folder (`.prism-sync`) is
/// at `metadata` on this machine's disk.
pub fn check_records_round_trip(replica: &dyn Replica, metadata: &Path) {
    let name = "journals/0123456789abcdef0123456789abcdef";
    assert_eq!(replica.read_record(name).unwrap(), None);
    for content in ["7 laptop\n", "1234567 a-longer-device-name\n", "9\n"] {
        replica.write_record(name, content).unwrap();
        assert_eq!(replica.read_record(name).unwrap().as_deref(), Some(content));
    }
    let folder = metadata.join("journals");
    let mut left: Vec<String> = fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["0123456789abcdef0123456789abcdef"],
        "nothing staged left"
    );
    assert_eq!(
        fs::read_to_string(folder.join("0123456789abcdef0123456789abcdef")).unwrap(),
        "9\n"
    );

    let lineage = "fedcba9876543210fedcba9876543210";
    assert_eq!(journal_record::read(replica, lineage).unwrap(), None);
    journal_record::write(replica, lineage, 42, "my laptop").unwrap();
    assert_eq!(journal_record::read(replica, lineage).unwrap(), Some(42));
    assert_eq!(
        fs::read_to_string(folder.join(lineage)).unwrap(),
        "42 my_laptop\n"
    );
}
