//! Relative paths (`RelPath`), the one gate untrusted names from a remote
//! listing pass through.
//!
//! An input is a path, then optionally a NUL and a second name (used as
//! the name to join, the device of a conflict copy, the target of a
//! rebase). Raw bytes go through `RelPath::from_fs`, so invalid UTF-8 is
//! tried too.
//!
//! Properties: no panic; an accepted path has no empty, `.` or `..`
//! component, no control character or backslash, is not absolute, and
//! stays below the root on disk; everything derived from it (parent,
//! ancestors, file name, join, conflict copy, rebase) is itself a valid
//! path; `join` and `from_name` accept exactly what `new` accepts.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use prism_sync::model::{PathError, RelPath};

use crate::engine::{Target, label, seeds};

const DICTIONARY: &[&[u8]] = &[
    b"/",
    b".",
    b"..",
    b"./",
    b"../",
    b"/..",
    b"\\",
    b"\x00",
    b"\n",
    b"\x7f",
    b"\xc2\x85",
    b"~",
    b"a",
    b".hidden",
    b"name.tar.gz",
    b"\xe2\x80\xae",
];

pub fn target() -> Target {
    Target {
        name: "rel_path",
        seeds: seeds("rel_path"),
        dictionary: DICTIONARY,
        max_len: 8 * 1024,
        memory_budget: |len| 32 * len + 64 * 1024,
        run,
    }
}

fn run(input: &[u8]) -> u64 {
    let (path, second) = match input.iter().position(|&b| b == 0) {
        Some(nul) => (&input[..nul], &input[nul + 1..]),
        None => (input, &b""[..]),
    };
    let second = String::from_utf8_lossy(second);
    let from_fs = RelPath::from_fs(Path::new(OsStr::from_bytes(path)));
    match std::str::from_utf8(path) {
        Ok(text) => assert_eq!(RelPath::new(text), from_fs, "from_fs and new disagree"),
        Err(_) => assert!(matches!(from_fs, Err(PathError::NotUtf8(_)))),
    }
    let outcome = match from_fs {
        Ok(path) => {
            check(&path, &second);
            ("ok", path.depth().min(3))
        }
        Err(PathError::Empty) => ("empty", 0),
        Err(PathError::Absolute(_)) => ("absolute", 0),
        Err(PathError::BadComponent(_)) => ("component", 0),
        Err(PathError::ControlCharacter(_)) => ("control", 0),
        Err(PathError::NotUtf8(_)) => ("utf8", 0),
    };
    let name = RelPath::from_name(&second);
    label((outcome, name.is_ok()))
}

/// Checks `path` and everything derived from it.
fn check(path: &RelPath, second: &str) {
    valid(path);
    let root = Path::new("/srv/root");
    let on_disk = path.to_fs(root);
    // Counted, not collected: a list of components would cost this check
    // more memory than the code under test.
    let mut below = 0;
    for component in on_disk
        .strip_prefix(root)
        .expect("to_fs stays below the root")
        .components()
    {
        assert!(matches!(component, Component::Normal(_)), "{on_disk:?}");
        below += 1;
    }
    assert_eq!(below, path.depth(), "{on_disk:?}");

    let name = path.file_name();
    assert_eq!(
        RelPath::from_name(name).as_ref().map(RelPath::as_str),
        Ok(name)
    );
    match path.parent() {
        Some(parent) => {
            valid(&parent);
            assert_eq!(parent.depth() + 1, path.depth());
            assert!(path.is_within(&parent));
        }
        None => assert_eq!(path.depth(), 1),
    }
    // Ancestors are O(depth²) bytes; a few hundred levels are plenty.
    for ancestor in path.ancestors().take(256) {
        valid(&ancestor);
        assert!(path.is_within(&ancestor) && ancestor != *path);
    }

    let joined = path.join(second);
    let spelled = RelPath::new(&format!("{path}/{second}"));
    assert_eq!(
        joined.is_ok(),
        spelled.is_ok() && !second.contains('/'),
        "join({second:?}) and new disagree"
    );
    if let Ok(joined) = joined {
        assert_eq!(Ok(joined.clone()), spelled);
        assert_eq!(joined.parent().as_ref(), Some(path));
        assert!(joined.is_within(path) && !path.is_within(&joined));
    }
    assert_eq!(
        RelPath::from_name(second).is_ok(),
        RelPath::new(second).is_ok() && !second.contains('/')
    );

    let copy = path.conflict_copy("20250209-120000", second, 2);
    valid(&copy);
    assert!(copy.file_name().len() <= prism_sync::model::MAX_NAME_BYTES);
    assert_ne!(&copy, path);
    assert_eq!(copy.parent(), path.parent());

    if let Ok(to) = RelPath::new(second) {
        let moved = path.rebase(path, &to).expect("a path is within itself");
        assert_eq!(moved, to);
        if let Some(parent) = path.parent() {
            let moved = path.rebase(&parent, &to).expect("within its parent");
            valid(&moved);
            assert!(moved.is_within(&to));
        }
    }
}

/// `path` passes `RelPath::new` unchanged and keeps its promises.
fn valid(path: &RelPath) {
    let text = path.as_str();
    assert_eq!(
        RelPath::new(text).as_ref(),
        Ok(path),
        "{text:?} is not valid"
    );
    assert!(!text.starts_with('/'));
    for component in text.split('/') {
        assert!(!matches!(component, "" | "." | ".."), "{text:?}");
        assert!(
            !component.chars().any(|c| c.is_control() || c == '\\'),
            "{text:?}"
        );
    }
}
