//! What another writer does between two requests of one step, on servers
//! that honour some conditional requests and not others. A small
//! in-memory S3 (on the hostile server thread) honours `If-None-Match`
//! and `If-Match` on PUT and the copy source's condition, and is told
//! whether it honours `If-Match` on DELETE and `If-None-Match` on copies.
//! A hook changes an object just after a given request, as another
//! writer would in that moment: a step that relied on an ignored
//! condition would then remove or overwrite a version nobody saw, and a
//! listing would take what it missed for a deletion.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prism_sync::fsops::Expect;
use prism_sync::model::RelPath;
use prism_sync::remote::s3::S3Replica;
use prism_sync::remote::{Replica, ReplicaError};

use crate::hostile::{Hostile, Reply, Seen, error_reply};

#[derive(Clone)]
struct Object {
    body: Vec<u8>,
    etag: String,
}

type Store = BTreeMap<String, Object>;
type Hook = Box<dyn Fn(&Seen, &mut Store) + Send + Sync>;

/// What the in-memory server honours.
#[derive(Clone, Copy)]
struct Honours {
    delete: bool,
    copy_create: bool,
}

struct Fake {
    server: Hostile,
    store: Arc<Mutex<Store>>,
}

impl Fake {
    /// Starts the server; `hook` runs after each request is answered
    /// (before the answer is sent).
    fn start(honours: Honours, hook: impl Fn(&Seen, &mut Store) + Send + Sync + 'static) -> Fake {
        let store: Arc<Mutex<Store>> = Arc::default();
        let hook: Hook = Box::new(hook);
        let next_etag = Mutex::new(0u64);
        let shared = store.clone();
        let server = Hostile::start(move |_, seen| {
            let mut store = shared.lock().unwrap();
            let mut new_etag = || {
                let mut n = next_etag.lock().unwrap();
                *n += 1;
                format!("\"etag-{n}\"")
            };
            let reply = answer(honours, seen, &mut store, &mut new_etag);
            hook(seen, &mut store);
            reply
        });
        Fake { server, store }
    }

    fn replica(&self) -> S3Replica {
        S3Replica::new(self.server.settings("p"), 2)
    }

    fn put(&self, key: &str, body: &[u8], etag: &str) {
        self.store.lock().unwrap().insert(
            format!("p/{key}"),
            Object {
                body: body.to_vec(),
                etag: etag.into(),
            },
        );
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let store = self.store.lock().unwrap();
        store.get(&format!("p/{key}")).map(|o| o.body.clone())
    }
}

/// The key a request names (`/bucket/KEY?query`).
fn key_of(target: &str) -> String {
    let path = target.split('?').next().unwrap_or_default();
    path.strip_prefix("/bucket/").unwrap_or(path).to_owned()
}

fn same(a: &str, b: &str) -> bool {
    a.trim_matches('"') == b.trim_matches('"')
}

fn answer(
    honours: Honours,
    seen: &Seen,
    store: &mut Store,
    new_etag: &mut dyn FnMut() -> String,
) -> Reply {
    let key = key_of(&seen.target);
    let failed = || error_reply(412, "PreconditionFailed", Vec::new());
    let missing = || error_reply(404, "NoSuchKey", Vec::new());
    let current = store.get(&key).cloned();
    match seen.method.as_str() {
        "GET" if seen.query("list-type").is_some() => {
            let prefix = seen.query("prefix").unwrap_or_default().replace("%2F", "/");
            let mut xml = String::from("<ListBucketResult><EncodingType>url</EncodingType>");
            for (key, object) in store.iter().filter(|(k, _)| k.starts_with(&prefix)) {
                xml.push_str(&format!(
                    "<Contents><Key>{key}</Key><ETag>{}</ETag><Size>{}</Size></Contents>",
                    object.etag.replace('"', "&quot;"),
                    object.body.len()
                ));
            }
            xml.push_str("<IsTruncated>false</IsTruncated></ListBucketResult>");
            Reply::Answer(200, Vec::new(), xml.into_bytes())
        }
        "HEAD" | "GET" => match current {
            Some(object) => Reply::Answer(200, vec![("etag", object.etag)], object.body),
            None => missing(),
        },
        "DELETE" => {
            if honours.delete
                && let Some(etag) = seen.header("if-match")
                && current.as_ref().is_some_and(|o| !same(&o.etag, etag))
            {
                return failed();
            }
            store.remove(&key);
            Reply::Answer(204, Vec::new(), Vec::new())
        }
        "PUT" => {
            let copy_create = honours.copy_create || seen.header("x-amz-copy-source").is_none();
            if seen.header("if-none-match") == Some("*") && current.is_some() && copy_create {
                return failed();
            }
            if let Some(etag) = seen.header("if-match")
                && !current.as_ref().is_some_and(|o| same(&o.etag, etag))
            {
                return failed();
            }
            let body = match seen.header("x-amz-copy-source") {
                None => seen.body.clone(),
                Some(source) => {
                    let Some(from) = store.get(&key_of(source)).cloned() else {
                        return missing();
                    };
                    if let Some(etag) = seen.header("x-amz-copy-source-if-match")
                        && !same(&from.etag, etag)
                    {
                        return failed();
                    }
                    from.body
                }
            };
            let etag = new_etag();
            store.insert(
                key,
                Object {
                    body,
                    etag: etag.clone(),
                },
            );
            if seen.header("x-amz-copy-source").is_some() {
                let xml = format!("<CopyObjectResult><ETag>{etag}</ETag></CopyObjectResult>");
                return Reply::Answer(200, Vec::new(), xml.into_bytes());
            }
            Reply::Answer(200, vec![("etag", etag)], Vec::new())
        }
        _ => error_reply(501, "NotImplemented", Vec::new()),
    }
}

fn rel(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn file_expect(size: u64, etag: &str) -> Expect {
    Expect::File {
        size,
        mtime_ns: 0,
        mode: None,
        version: Some(etag.into()),
    }
}

#[test]
fn the_probe_tells_a_conditional_delete_and_copy_apart_from_conditional_puts() {
    for (delete, copy_create) in [(false, false), (true, true), (false, true)] {
        let fake = Fake::start(
            Honours {
                delete,
                copy_create,
            },
            |_, _| {},
        );
        let client = prism_sync::remote::s3::S3Client::new(fake.server.settings("p")).unwrap();
        let support = client.probe_conditions(".prism-sync/").unwrap();
        assert!(support.create && support.replace && support.copy);
        assert_eq!((support.delete, support.copy_create), (delete, copy_create));
        assert!(
            fake.store.lock().unwrap().is_empty(),
            "the probe leaves nothing"
        );
    }
}

#[test]
fn a_removal_on_a_server_ignoring_if_match_on_delete_keeps_a_version_written_meanwhile() {
    // Another writer replaces a.txt just after its version went to the
    // trash, before the DELETE that was meant for that version.
    let fake = Fake::start(
        Honours {
            delete: false,
            copy_create: true,
        },
        |seen, store| {
            if seen.header("x-amz-copy-source") == Some("/bucket/p/a.txt") {
                store.insert(
                    "p/a.txt".into(),
                    Object {
                        body: b"theirs".to_vec(),
                        etag: "\"theirs\"".into(),
                    },
                );
            }
        },
    );
    fake.put("a.txt", b"mine", "\"mine\"");
    let remote = fake.replica();
    let refused = remote.remove(&rel("a.txt"), &file_expect(4, "\"mine\""));
    assert!(
        matches!(refused, Err(ReplicaError::Changed { .. })),
        "{refused:?}"
    );
    assert_eq!(fake.get("a.txt").as_deref(), Some(&b"theirs"[..]));
}

#[test]
fn a_lease_renewed_while_it_is_taken_over_is_not_removed() {
    // A stale lease, renewed by its holder just after this agent read it:
    // the takeover must not delete the renewed one.
    let stale = "1000 laptop 4242 elsewhere\n";
    let renewed = "9999999999 laptop 4242 elsewhere\n";
    let renewed_once = Mutex::new(false);
    let fake = Fake::start(
        Honours {
            delete: false,
            copy_create: true,
        },
        move |seen, store| {
            let mut done = renewed_once.lock().unwrap();
            if seen.method == "GET"
                && seen.target.starts_with("/bucket/p/.prism-sync/lease")
                && !*done
            {
                *done = true;
                store.insert(
                    "p/.prism-sync/lease".into(),
                    Object {
                        body: renewed.as_bytes().to_vec(),
                        etag: "\"renewed\"".into(),
                    },
                );
            }
        },
    );
    fake.put(".prism-sync/lease", stale.as_bytes(), "\"stale\"");
    let remote = fake.replica();
    let taken = remote.lease("desktop", Duration::from_secs(60));
    assert!(
        matches!(taken, Err(ReplicaError::Busy(_))),
        "{:?}",
        taken.err()
    );
    assert_eq!(
        fake.get(".prism-sync/lease").as_deref(),
        Some(renewed.as_bytes())
    );
}

#[test]
fn a_move_onto_a_name_taken_meanwhile_does_not_replace_it() {
    // Someone creates b.txt after the move checked it was free.
    let fake = Fake::start(
        Honours {
            delete: true,
            copy_create: true,
        },
        |seen, store| {
            if seen.method == "HEAD" && seen.target.starts_with("/bucket/p/b.txt") {
                store.insert(
                    "p/b.txt".into(),
                    Object {
                        body: b"theirs".to_vec(),
                        etag: "\"theirs\"".into(),
                    },
                );
            }
        },
    );
    fake.put("a.txt", b"mine", "\"mine\"");
    let remote = fake.replica();
    let refused = remote.rename(&rel("a.txt"), &rel("b.txt"), &file_expect(4, "\"mine\""));
    assert!(
        matches!(refused, Err(ReplicaError::Changed { .. })),
        "{refused:?}"
    );
    assert_eq!(fake.get("b.txt").as_deref(), Some(&b"theirs"[..]));
    assert_eq!(fake.get("a.txt").as_deref(), Some(&b"mine"[..]));
}

#[test]
fn an_object_gone_between_the_listing_and_its_head_is_held_not_taken_for_deleted() {
    use prism_sync::model::{BaseTree, Scope};
    let fake = Fake::start(
        Honours {
            delete: true,
            copy_create: true,
        },
        |seen, store| {
            // The listing of the whole prefix, not of a folder below it.
            let whole = seen
                .query("prefix")
                .is_some_and(|p| p == "p%2F" || p == "p/");
            if seen.query("list-type").is_some() && whole {
                store.remove("p/a.txt");
            }
        },
    );
    fake.put("a.txt", b"a", "\"a\"");
    fake.put("b.txt", b"b", "\"b\"");
    let rules = {
        let dir = tempfile::tempdir().unwrap();
        prism_sync::tracker::ignore::IgnoreRules::load(dir.path(), &[]).unwrap()
    };
    let listing = fake
        .replica()
        .list(&Scope::Full, &BaseTree::new(), &rules)
        .unwrap();
    assert_eq!(listing.held, [rel("a.txt")]);
    assert!(!listing.tree.contains_key(&rel("a.txt")));
    assert!(listing.tree.contains_key(&rel("b.txt")));
}

#[test]
fn a_version_trashed_under_the_same_name_meanwhile_is_not_replaced_in_the_trash() {
    // Another agent trashes its version of a.txt under this minute's name
    // just after this one found the name free.
    let fake = Fake::start(
        Honours {
            delete: true,
            copy_create: true,
        },
        |seen, store| {
            let key = key_of(&seen.target);
            if seen.method == "HEAD"
                && key.starts_with("p/.prism-sync/trash/")
                && key.ends_with("/a.txt")
                && !store.contains_key(&key)
            {
                store.insert(
                    key,
                    Object {
                        body: b"theirs, trashed".to_vec(),
                        etag: "\"theirs\"".into(),
                    },
                );
            }
        },
    );
    fake.put("a.txt", b"mine", "\"mine\"");
    let remote = fake.replica();
    let trashed = remote
        .remove_naming_trash(&rel("a.txt"), &file_expect(4, "\"mine\""))
        .unwrap()
        .expect("a name in the trash");
    let mut kept: Vec<Vec<u8>> = fake
        .store
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("p/.prism-sync/trash/"))
        .map(|(_, o)| o.body.clone())
        .collect();
    kept.sort();
    assert_eq!(kept, [b"mine".to_vec(), b"theirs, trashed".to_vec()]);
    let mut read = Vec::new();
    std::io::Read::read_to_end(&mut remote.open_trashed(&trashed).unwrap(), &mut read).unwrap();
    assert_eq!(read, b"mine");
}
