//! Reads that continue a broken transfer: `open_version_at` gives the rest
//! of the listed version from an offset (past the first 64 KiB too, where
//! layers that read in chunks start at another chunk), and refuses to
//! continue with the bytes of another version.

use std::io::Read;

use crate::{Case, create, list, rel};

conformance!(a_read_continues_at_an_offset_of_the_listed_version_only);

fn a_read_continues_at_an_offset_of_the_listed_version_only(case: &Case) {
    let replica = case.marked();
    // About 200 KiB: three chunks of 64 KiB and part of a fourth.
    let content: String = (0..20_000).map(|i| format!("line {i:04}\n")).collect();
    assert!(content.len() > 3 * 65_536);
    create(&*replica, "f.txt", &content);
    let listing = list(&*replica);
    let listed = &listing.tree[&rel("f.txt")];
    let meta = *listed.entry.file().unwrap();
    let version = listed.version_text();
    let version = version.as_deref();
    let len = content.len() as u64;

    for offset in [0, 1, 1500, 65_535, 65_536, 70_000, 150_001, len - 1] {
        let (mut reader, start) = replica
            .open_version_at(&rel("f.txt"), offset, &meta, version)
            .unwrap();
        // From the offset, or (a server that could not answer the range)
        // from the start.
        assert!(start == offset || start == 0, "{start} for {offset}");
        let mut rest = String::new();
        reader.read_to_string(&mut rest).unwrap();
        assert!(rest == content[start as usize..], "from {offset}");
    }

    // Another version of the same size, written by someone else.
    let other = content.replace("line", "LINE");
    assert_eq!(other.len(), content.len());
    case.outside().put("f.txt", &other);
    for offset in [1500, 70_000] {
        let refused = replica.open_version_at(&rel("f.txt"), offset, &meta, version);
        match refused {
            Err(e) => assert!(e.is_change(), "{e}"),
            Ok((mut reader, start)) => {
                let mut rest = String::new();
                reader.read_to_string(&mut rest).unwrap();
                panic!("continued another version at {start}: {:?}", &rest[..20]);
            }
        }
    }
    // A file that is gone is not continued either.
    case.outside().remove("f.txt");
    let gone = replica
        .open_version_at(&rel("f.txt"), 70_000, &meta, version)
        .err()
        .unwrap();
    assert!(!gone.is_offline(), "{gone}");
}
