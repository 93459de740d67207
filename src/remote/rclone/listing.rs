//! The listing of an rclone remote: `operations/list` (recursive, with
//! the provider's hash where it has a cheap one) turned into a side tree.
//!
//! The engine compares BLAKE3 hashes, which no provider keeps. A file
//! whose version token ([`token`]: the provider's hash, else ID,
//! modification time and size) is the base's `remote_version` keeps the
//! base's hash; any other file is read through the rcd and hashed (several
//! at once), and held when the bytes read are not the size listed (it is
//! being written).
//!
//! Every listed path goes through [`RelPath::new`]; one that cannot is a
//! problem of its own and the rest stands. Two entries of one name (Google
//! Drive allows that) are held with a problem saying how to resolve them:
//! never one of them silently dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use crate::model::{BaseTree, ContentHash, Entry, FileMeta, RelPath, Scope, SideEntry};
use crate::remote::{Listing, Problem, ReplicaError};
use crate::tracker::ignore::{IgnoreRules, METADATA_DIR};

/// One file or folder as rclone lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub path: String,
    pub is_dir: bool,
    pub size: u64,
    pub mtime_ns: i64,
    /// Whether `mtime_ns` is the file's: a listing of a backend where a
    /// file's modification time costs a request of its own (S3 keeps it in
    /// the object's metadata: a HEAD per object) is taken without them.
    pub timed: bool,
    /// The version token (see [`token`]).
    pub token: String,
}

/// The version token of a listed or stat'ed `item`: the provider's hash of
/// type `hash` where it gave one (so a touched but unchanged file is
/// unchanged, and coarse or missing modification times do not matter),
/// else its ID (where the provider has IDs), modification time and size.
pub fn token(item: &Value, hash: Option<&str>) -> String {
    if let Some(hash) = hash
        && let Some(value) = item["Hashes"][hash].as_str()
        && !value.is_empty()
    {
        return format!("{hash}:{value}");
    }
    format!(
        "{}|{}|{}",
        item["ID"].as_str().unwrap_or_default(),
        item["ModTime"].as_str().unwrap_or_default(),
        item["Size"].as_i64().unwrap_or(-1)
    )
}

/// Reads one item of rclone's JSON listing.
pub fn item(value: &Value, hash: Option<&str>) -> Option<Item> {
    let path = value["Path"].as_str()?.to_owned();
    let mtime = value["ModTime"].as_str().and_then(|t| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    });
    Some(Item {
        is_dir: value["IsDir"].as_bool().unwrap_or(false),
        size: value["Size"].as_i64().unwrap_or(0).max(0) as u64,
        mtime_ns: mtime.map_or(0, |t| t.unix_timestamp_nanos() as i64),
        timed: mtime.is_some(),
        token: token(value, hash),
        path,
    })
}

/// What the listing needs of the replica: the items below a path, and a
/// file's bytes.
pub trait Source: Sync {
    /// Everything below `path` (`""`: the root), recursively.
    fn items_below(&self, path: &str) -> Result<Vec<Item>, ReplicaError>;
    /// `path` itself; `None` when nothing is there.
    fn item(&self, path: &str) -> Result<Option<Item>, ReplicaError>;
    /// The bytes of the file at `path`.
    fn read(&self, path: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError>;
}

/// Lists `scope`. `empty_folders`: whether the backend keeps a folder
/// with nothing in it (see [`keep_empty_folders`]).
pub fn list(
    source: &dyn Source,
    scope: &Scope,
    cache: &BaseTree,
    ignore: &IgnoreRules,
    parallel: usize,
    empty_folders: bool,
) -> Result<Listing, ReplicaError> {
    let mut items = Vec::new();
    let roots: Option<&[RelPath]> = match scope {
        Scope::Full => {
            items = source.items_below("")?;
            None
        }
        Scope::Paths(paths) => {
            let outermost: Vec<&RelPath> = paths
                .iter()
                .filter(|path| !paths.iter().any(|o| o != *path && path.is_within(o)))
                .collect();
            // A look is a round trip to the rcd and from there to the
            // provider: a change of a hundred files looks at a hundred
            // paths, `parallel` at a time. After a failed look (the rcd
            // gone, a login refused) no more are made: the listing fails
            // with the first failure.
            let failed = AtomicBool::new(false);
            let looks = crate::parallel::map(outermost, parallel, |path| {
                if failed.load(Ordering::Relaxed) {
                    return (path, None);
                }
                let found = source.item(path.as_str());
                failed.fetch_or(found.is_err(), Ordering::Relaxed);
                (path, Some(found))
            });
            if failed.into_inner() {
                let first = looks.into_iter().find_map(|(_, found)| found?.err());
                return Err(first.expect("a look failed"));
            }
            for (path, found) in looks {
                match found.expect("every path was looked at")? {
                    Some(found) if found.is_dir => {
                        items.extend(source.items_below(path.as_str())?);
                        items.push(found);
                    }
                    Some(found) => items.push(found),
                    None => {}
                }
            }
            Some(paths)
        }
    };
    let in_scope = |rel: &RelPath| roots.is_none_or(|roots| roots.iter().any(|r| rel.is_within(r)));

    let mut out = Listing::default();
    let mut dirs: BTreeSet<RelPath> = BTreeSet::new();
    let mut files: BTreeMap<RelPath, Item> = BTreeMap::new();
    let mut seen: BTreeSet<RelPath> = BTreeSet::new();
    let mut duplicates: BTreeSet<RelPath> = BTreeSet::new();
    for item in items {
        let name = item.path.trim_matches('/');
        if name.is_empty() || name == METADATA_DIR || name.starts_with(&format!("{METADATA_DIR}/"))
        {
            continue;
        }
        let rel = match RelPath::new(name) {
            Ok(rel) => rel,
            Err(e) => {
                out.problems.push(Problem {
                    path: None,
                    message: format!("{name:?} on the rclone remote cannot be synced: {e}"),
                });
                continue;
            }
        };
        if ignore.is_ignored(&rel, item.is_dir) || !in_scope(&rel) {
            continue;
        }
        if rel.as_str().contains(char::REPLACEMENT_CHARACTER) {
            if out.held.iter().any(|h| rel.is_within(h)) {
                continue;
            }
            match addresses_exactly(source, &item) {
                Ok(true) => {}
                Ok(false) => {
                    // rclone shows bytes that are not UTF-8 as U+FFFD: a
                    // name it cannot give back exactly, so nothing can
                    // address the file.
                    out.problems.push(Problem {
                        path: None,
                        message: format!(
                            "{name:?} on the rclone remote cannot be synced: its name is not \
                             UTF-8 (rclone shows such bytes as U+FFFD); rename it"
                        ),
                    });
                    continue;
                }
                Err(e) if e.is_offline() => return Err(e),
                // That one name's trouble (a key the login may not read):
                // held, neither synced nor read as absent.
                Err(e) => {
                    out.problems.push(Problem {
                        path: Some(rel.clone()),
                        message: format!("could not be looked at: {e}"),
                    });
                    out.held.push(rel);
                    continue;
                }
            }
        }
        if !seen.insert(rel.clone()) {
            duplicates.insert(rel);
            continue;
        }
        if rel.too_deep() {
            // Held where it first gets too deep, as every backend's
            // listing does: nothing below it reads as absent.
            let first = rel
                .ancestors()
                .chain(std::iter::once(rel.clone()))
                .find(RelPath::too_deep)
                .unwrap_or_else(|| rel.clone());
            if !out.held.contains(&first) {
                out.problems.push(Problem {
                    path: Some(first.clone()),
                    message: first.too_deep_message(),
                });
                out.held.push(first);
            }
            continue;
        }
        if item.is_dir {
            dirs.insert(rel);
        } else {
            files.insert(rel, item);
        }
    }
    for duplicate in duplicates {
        out.problems.push(Problem {
            path: Some(duplicate.clone()),
            message: "is there more than once on the remote (the provider allows two entries \
                      of one name); it is left alone until one is renamed or removed, for \
                      example with `rclone dedupe`"
                .into(),
        });
        files.remove(&duplicate);
        dirs.remove(&duplicate);
        out.held.push(duplicate);
    }
    for dir in dirs {
        if !out.held.iter().any(|h| dir.is_within(h)) {
            out.tree.insert(dir, SideEntry::new(Entry::dir(None)));
        }
    }

    let mut unknown = Vec::new();
    for (rel, item) in files {
        if out.held.iter().any(|h| rel.is_within(h)) {
            continue;
        }
        match known(cache, &rel, &item) {
            Some((item, hash)) => insert(&mut out, rel, &item, hash),
            None => unknown.push((rel, item)),
        }
    }
    let hashed = crate::parallel::map(unknown, parallel, |(rel, item)| {
        let found = look_closer(source, cache, &rel, item);
        (rel, found)
    });
    for (rel, found) in hashed {
        match found {
            Ok(Closer::Known(item, hash)) => insert(&mut out, rel, &item, hash),
            Ok(Closer::Hashed(item, hash)) => {
                out.hashed_files += 1;
                insert(&mut out, rel, &item, hash);
            }
            // Gone since the listing: the next one shows what is there.
            Ok(Closer::Gone) => out.held.push(rel),
            // Another size than listed: still being written.
            Ok(Closer::Resized) => out.held.push(rel),
            Err(e) if e.is_offline() => return Err(e),
            Err(e) => {
                out.problems.push(Problem {
                    path: Some(rel.clone()),
                    message: format!("could not be read: {e}"),
                });
                out.held.push(rel);
            }
        }
    }
    if !empty_folders {
        keep_empty_folders(&mut out, cache, in_scope);
    }
    out.held.sort();
    out.held.dedup();
    Ok(out)
}

/// On a backend without folders of their own (S3: a folder is the common
/// prefix of its files' names) a folder is listed only while a file is
/// below it. A folder the base knows with no file below it is therefore
/// not listed, yet nobody removed it (there is nothing to remove): it is
/// kept as the base has it, where the folder above it is there too, or
/// is outside the scope (a scoped run over the folder itself lists
/// nothing above it).
fn keep_empty_folders(out: &mut Listing, cache: &BaseTree, in_scope: impl Fn(&RelPath) -> bool) {
    let mut with_files: BTreeSet<RelPath> = BTreeSet::new();
    for (path, base) in cache {
        if !base.entry.is_dir() {
            with_files.extend(path.ancestors());
        }
    }
    // Parents come before their children.
    for (path, base) in cache {
        let kept = base.entry.is_dir()
            && !with_files.contains(path)
            && !out.tree.contains_key(path)
            && in_scope(path)
            && !out.held.iter().any(|h| path.is_within(h))
            && path
                .parent()
                .is_none_or(|parent| out.tree.contains_key(&parent) || !in_scope(&parent));
        if kept {
            out.tree
                .insert(path.clone(), SideEntry::new(Entry::dir(None)));
        }
    }
}

/// The base's hash of the listed `item` at `rel`, where its version token
/// is the base's; with the base's modification time where the listing had
/// none.
fn known(cache: &BaseTree, rel: &RelPath, item: &Item) -> Option<(Item, ContentHash)> {
    let base = cache.get(rel)?;
    match &base.entry {
        Entry::File(meta)
            if base
                .remote_version
                .as_ref()
                .is_some_and(|v| *v == *item.token)
                && meta.size == item.size =>
        {
            let mut item = item.clone();
            if !item.timed {
                item.mtime_ns = meta.mtime_ns;
                item.timed = true;
            }
            Some((item, meta.hash))
        }
        _ => None,
    }
}

/// What a listed file the base does not know turned out to be.
enum Closer {
    /// Known after all, from its stat (a listing without modification
    /// times gives no token where the provider's hash is missing, as for
    /// S3's multipart uploads, whose MD5 is in the metadata).
    Known(Item, ContentHash),
    /// Read and hashed: the item as stat'ed (or listed), and its hash.
    Hashed(Item, ContentHash),
    /// Not there any more.
    Gone,
    /// Another size than listed while it was read.
    Resized,
}

/// Looks closer at a listed file the base does not know: a stat first
/// where the listing had no modification time (the file's own is what
/// the other side gets), then its bytes.
fn look_closer(
    source: &dyn Source,
    cache: &BaseTree,
    rel: &RelPath,
    item: Item,
) -> Result<Closer, ReplicaError> {
    let item = if item.timed {
        item
    } else {
        match source.item(rel.as_str())? {
            Some(found) if !found.is_dir => {
                if let Some((item, hash)) = known(cache, rel, &found) {
                    return Ok(Closer::Known(item, hash));
                }
                found
            }
            _ => return Ok(Closer::Gone),
        }
    };
    Ok(match hash_of(source, rel, item.size)? {
        Some(hash) => Closer::Hashed(item, hash),
        None => Closer::Resized,
    })
}

/// Whether a listed name with U+FFFD in it is the item's own: a backend
/// that keeps names as UTF-8 (S3 keys) may hold that character, where
/// rclone shows bytes that are not UTF-8 (a local or SFTP file name) as
/// it, a name that then addresses nothing.
fn addresses_exactly(source: &dyn Source, item: &Item) -> Result<bool, ReplicaError> {
    Ok(source
        .item(item.path.trim_matches('/'))?
        .is_some_and(|found| found.is_dir == item.is_dir))
}

fn insert(out: &mut Listing, rel: RelPath, item: &Item, hash: ContentHash) {
    out.tree.insert(
        rel,
        SideEntry {
            entry: Entry::File(FileMeta {
                hash,
                size: item.size,
                mtime_ns: item.mtime_ns,
                mode: None,
            }),
            id: None,
            version: Some(item.token.as_str().into()),
        },
    );
}

/// The BLAKE3 of the file at `rel`; `None` when it is not `size` bytes.
fn hash_of(
    source: &dyn Source,
    rel: &RelPath,
    size: u64,
) -> Result<Option<ContentHash>, ReplicaError> {
    let mut reader = source.read(rel)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut read = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| ReplicaError::io("read", rel, e))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((read == size).then(|| ContentHash(*hasher.finalize().as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(path: &str) -> RelPath {
        RelPath::new(path).unwrap()
    }

    /// A remote as a list of items: a folderless one lists no folder
    /// with nothing below it. A stat of a name in `refused` fails.
    struct Fake {
        items: Vec<Item>,
        refused: Vec<String>,
    }

    impl Source for Fake {
        fn items_below(&self, path: &str) -> Result<Vec<Item>, ReplicaError> {
            let prefix = format!("{path}/");
            Ok(self
                .items
                .iter()
                .filter(|i| path.is_empty() || i.path.starts_with(&prefix))
                .cloned()
                .collect())
        }

        fn item(&self, path: &str) -> Result<Option<Item>, ReplicaError> {
            if self.refused.iter().any(|r| r == path) {
                return Err(ReplicaError::Other(format!("access denied to {path}")));
            }
            Ok(self.items.iter().find(|i| i.path == path).cloned())
        }

        fn read(&self, path: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
            let item = self.items.iter().find(|i| i.path == path.as_str());
            let size = item.map_or(0, |i| i.size) as usize;
            Ok(Box::new(std::io::Cursor::new(vec![b'x'; size])))
        }
    }

    fn file(path: &str, size: u64) -> Item {
        Item {
            path: path.to_owned(),
            is_dir: false,
            size,
            mtime_ns: 1_000_000_000,
            timed: true,
            token: format!("|t|{size}"),
        }
    }

    fn folder(path: &str) -> Item {
        Item {
            is_dir: true,
            size: 0,
            token: String::new(),
            ..file(path, 0)
        }
    }

    #[test]
    fn a_failed_look_at_a_replacement_character_name_holds_that_name_only() {
        let fake = Fake {
            items: vec![
                file("ok.txt", 3),
                folder("d\u{FFFD}"),
                file("d\u{FFFD}/in.txt", 2),
                file("x\u{FFFD}.txt", 4),
                file("y\u{FFFD}.tmp", 5),
            ],
            // A stat of these fails; the ignored one is not looked at.
            refused: vec![
                "d\u{FFFD}".into(),
                "x\u{FFFD}.txt".into(),
                "y\u{FFFD}.tmp".into(),
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let ignore = IgnoreRules::load(dir.path(), &["*.tmp".to_owned()]).unwrap();
        let listing = list(&fake, &Scope::Full, &BaseTree::new(), &ignore, 1, true).unwrap();
        assert!(listing.tree.contains_key(&rel("ok.txt")), "{listing:?}");
        assert_eq!(listing.tree.len(), 1, "{listing:?}");
        assert_eq!(listing.held, vec![rel("d\u{FFFD}"), rel("x\u{FFFD}.txt")]);
        let troubled: Vec<_> = listing.problems.iter().map(|p| p.path.clone()).collect();
        assert_eq!(
            troubled,
            vec![Some(rel("d\u{FFFD}")), Some(rel("x\u{FFFD}.txt"))],
            "{:?}",
            listing.problems
        );
    }

    #[test]
    fn a_scoped_run_over_an_empty_folder_of_a_folderless_backend_keeps_it() {
        // The base knows `d/`, `d/f.txt` and the empty `d/e/`; a scoped
        // run over `d/e` loads the base within it only.
        let fake = Fake {
            items: vec![folder("d"), file("d/f.txt", 3)],
            refused: vec![],
        };
        let mut within = BaseTree::new();
        within.insert(rel("d/e"), crate::model::BaseEntry::new(Entry::dir(None)));
        let ignore = IgnoreRules::reserved_only();
        let scope = Scope::Paths(vec![rel("d/e")]);
        let listing = list(&fake, &scope, &within, &ignore, 1, false).unwrap();
        assert!(listing.tree.contains_key(&rel("d/e")), "{listing:?}");
        assert!(listing.problems.is_empty(), "{:?}", listing.problems);
        // A full run keeps it too, as before.
        let mut whole = within.clone();
        whole.insert(rel("d"), crate::model::BaseEntry::new(Entry::dir(None)));
        let listing = list(&fake, &Scope::Full, &whole, &ignore, 1, false).unwrap();
        assert!(listing.tree.contains_key(&rel("d/e")), "{listing:?}");
    }

    #[test]
    fn the_paths_of_a_scoped_run_looked_at_together_list_as_one_at_a_time() {
        let mut items = vec![folder("d"), file("d/in.txt", 2), folder("d/sub")];
        items.extend((0..40).map(|i| file(&format!("f{i:02}.txt"), i)));
        let fake = Fake {
            items,
            refused: vec![],
        };
        let ignore = IgnoreRules::reserved_only();
        let mut paths: Vec<RelPath> = (0..50).map(|i| rel(&format!("f{i:02}.txt"))).collect();
        paths.extend([rel("d"), rel("d/in.txt")]);
        let scope = Scope::Paths(paths);
        let alone = list(&fake, &scope, &BaseTree::new(), &ignore, 1, true).unwrap();
        let together = list(&fake, &scope, &BaseTree::new(), &ignore, 4, true).unwrap();
        // The 40 files there, the folder with what is below it; the ten
        // names that are not there are absent.
        assert_eq!(alone.tree.len(), 43, "{alone:?}");
        assert_eq!(alone.tree, together.tree);
        assert_eq!(alone.problems.len(), together.problems.len());

        let refused = Fake {
            refused: vec!["f07.txt".into(), "f31.txt".into()],
            ..fake
        };
        for parallel in [1, 4] {
            let e = list(&refused, &scope, &BaseTree::new(), &ignore, parallel, true).unwrap_err();
            let said = e.to_string();
            assert!(
                said.contains("access denied to f07.txt")
                    || said.contains("access denied to f31.txt"),
                "{said}"
            );
        }
    }

    #[test]
    fn tokens_are_the_providers_hash_else_id_modtime_and_size() {
        let listed = serde_json::json!({
            "Path": "a/f.txt", "Size": 12, "IsDir": false,
            "ModTime": "2026-12-05T12:52:47.700117124Z",
            "Hashes": {"md5": "6f5902ac237024bdd0c176cb93063dc4"}
        });
        assert_eq!(
            token(&listed, Some("md5")),
            "md5:6f5902ac237024bdd0c176cb93063dc4"
        );
        assert_eq!(token(&listed, None), "|2026-12-05T12:52:47.700117124Z|12");
        let with_id = serde_json::json!({
            "Path": "f", "Size": 3, "ID": "1xYz", "ModTime": "2026-01-01T00:00:00Z"
        });
        assert_eq!(token(&with_id, Some("md5")), "1xYz|2026-01-01T00:00:00Z|3");
        let parsed = item(&listed, Some("md5")).unwrap();
        assert_eq!(parsed.size, 12);
        assert_eq!(parsed.mtime_ns % 1_000_000_000, 700_117_124);
        assert!(!parsed.is_dir);
    }
}
