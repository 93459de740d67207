//! The parallel walk of a listing, written once: folders to list and files
//! to hash are jobs on a [`JobQueue`], run by a few workers at once (each
//! on a connection of its own where the store needs one); every worker
//! collects its own [`Listing`] and the parts are merged and sorted at the
//! end, so the result does not depend on which worker ran what, or when.
//!
//! Whether a failure is about one path or the whole store is decided here
//! and nowhere else ([`Found::hold`]): a path that could not be looked at
//! is held (left alone, never read as deleted) with a problem saying why;
//! an error about the store breaks the walk off, and what it saw is never
//! a listing (`remote::interrupted_listing` says what it is instead).

use std::time::Duration;

use super::super::job_queue::{JobQueue, Stop};
use crate::model::{BaseTree, ContentHash, Entry, RelPath};
use crate::remote::layout::is_temp_name;
use crate::remote::{Listing, Problem, ReplicaError, interrupted_listing};

/// What one job (or the look at a scope's paths before the walk) found:
/// entries and notes in `out`, more work in `jobs`.
pub(crate) struct Found<J> {
    pub out: Listing,
    pub jobs: Vec<J>,
    /// An error about the whole store, met on one path: the walk is over
    /// and what it saw is partial.
    pub broken: Option<ReplicaError>,
}

impl<J> Default for Found<J> {
    fn default() -> Self {
        Found {
            out: Listing::default(),
            jobs: Vec::new(),
            broken: None,
        }
    }
}

impl<J> Found<J> {
    pub fn note(&mut self, path: Option<RelPath>, message: String) {
        self.out.problems.push(Problem { path, message });
    }

    /// Leaves `rel` alone this time, saying why; an error about the whole
    /// store (see [`is_about_the_store`]) instead breaks the walk off.
    pub fn hold(&mut self, rel: RelPath, op: &str, error: ReplicaError) {
        if is_about_the_store(&error) {
            self.broken.get_or_insert(error);
            return;
        }
        let message = format!("cannot {op} it: {error}; it is left alone this time");
        self.out.held.push(rel.clone());
        self.note(Some(rel), message);
    }

    /// Takes in what a look inside a folder found, once all of it was
    /// read: a folder that cannot be listed leaves nothing behind that
    /// would read as its content.
    pub fn absorb(&mut self, inside: Found<J>) {
        let Found { out, jobs, broken } = inside;
        append(&mut self.out, out);
        self.jobs.extend(jobs);
        if let Some(error) = broken {
            self.broken.get_or_insert(error);
        }
    }
}

/// Adds `part` to `out` as it is (sorted once, when the parts are merged).
fn append(out: &mut Listing, part: Listing) {
    out.tree.extend(part.tree);
    out.held.extend(part.held);
    out.problems.extend(part.problems);
    out.hashed_files += part.hashed_files;
}

/// Whether `error`, met on one path, is about the whole store rather than
/// that path: the store is unreachable, or it refused in a way that names
/// no path (a login, a certificate, an answer that makes no sense).
pub(crate) fn is_about_the_store(error: &ReplicaError) -> bool {
    error.is_offline() || matches!(error, ReplicaError::Other(_))
}

/// What ends a walk early.
#[derive(Default)]
struct WalkStop {
    /// A job's own failure (the root could not be listed): the listing
    /// fails with it.
    failed: Option<ReplicaError>,
    /// The store became unreachable: what was seen is partial.
    broken: Option<ReplicaError>,
}

impl Stop for WalkStop {
    fn stops(&self) -> bool {
        self.failed.is_some() || self.broken.is_some()
    }
}

/// Runs the jobs `first` found and everything they lead to on `workers`
/// threads, each job by `run_job`; `first.out` holds what was found
/// before (the entries of a path-scoped listing). A job's `Err` fails the
/// listing with it; an error about the store that a job met breaks it off
/// (`remote` names the store in that error).
pub(crate) fn run<J: Send>(
    remote: &str,
    workers: usize,
    first: Found<J>,
    run_job: impl Fn(J, &mut Found<J>) -> Result<(), ReplicaError> + Sync,
) -> Result<Listing, ReplicaError> {
    let Found { out, jobs, broken } = first;
    if let Some(error) = broken {
        return Err(interrupted_listing(remote.to_owned(), error));
    }
    let queue: JobQueue<J, WalkStop> = JobQueue::new();
    queue.add(jobs);
    let work = || {
        let _worker = queue.worker();
        let mut out = Listing::default();
        while let Some(job) = queue.next() {
            let mut found = Found::default();
            let failed = run_job(job, &mut found).err();
            let Found {
                out: listing,
                jobs,
                broken,
            } = found;
            append(&mut out, listing);
            queue.finish(jobs, |stop| {
                if let Some(error) = failed {
                    stop.failed.get_or_insert(error);
                }
                if let Some(error) = broken {
                    stop.broken.get_or_insert(error);
                }
            });
        }
        out
    };
    let parts: Vec<Listing> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.max(1)).map(|_| scope.spawn(work)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a listing worker panicked"))
            .collect()
    });
    let stop = queue.into_stop();
    if let Some(error) = stop.failed {
        return Err(error);
    }
    if let Some(error) = stop.broken {
        return Err(interrupted_listing(remote.to_owned(), error));
    }
    Ok(out.merge(parts))
}

/// Temporary uploads older than this were left by a crash.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Whether the ignored file `rel`, last modified at `mtime_secs`, is a
/// temporary upload a crash left behind (`now`: the listing's time), which
/// a listing removes on its way.
pub(crate) fn is_stale_temp(rel: &RelPath, mtime_secs: i64, now: i64) -> bool {
    is_temp_name(rel.file_name()) && now - mtime_secs > STALE_TEMP.as_secs() as i64
}

/// The base's hash of `rel` where the base knows the listed `version`
/// of it: the file need not be read to be hashed.
pub(crate) fn cached_hash(cache: &BaseTree, rel: &RelPath, version: &str) -> Option<ContentHash> {
    let base = cache.get(rel)?;
    match &base.entry {
        Entry::File(meta) if base.remote_version.as_ref().is_some_and(|v| *v == *version) => {
            Some(meta.hash)
        }
        _ => None,
    }
}

/// The path of `name` in `parent` (or the root), or `None` with a note
/// saying why a name the store gave cannot be synced; a path past
/// `model::MAX_DEPTH` is held (a store that serves ever-deeper folders
/// meets this bound instead of being walked on).
pub(crate) fn child_path<J>(
    parent: Option<&RelPath>,
    name: &str,
    found: &mut Found<J>,
) -> Option<RelPath> {
    let rel = match parent {
        Some(parent) => parent.join(name),
        None => RelPath::from_name(name),
    };
    match rel {
        Ok(rel) if rel.too_deep() => {
            found.out.held.push(rel.clone());
            found.note(Some(rel.clone()), rel.too_deep_message());
            None
        }
        Ok(rel) => Some(rel),
        Err(_) => {
            let shown = match parent {
                Some(parent) => format!("{parent}/{name}"),
                None => name.to_owned(),
            };
            found.note(
                None,
                format!(
                    "{shown:?} on the server is not synced: its name contains a control \
                     character, a slash or a backslash; rename it to sync it"
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(path: &str) -> RelPath {
        RelPath::new(path).unwrap()
    }

    fn offline() -> ReplicaError {
        ReplicaError::io(
            "read",
            "a",
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        )
    }

    #[test]
    fn a_path_error_holds_the_path_and_a_store_error_breaks_the_listing_off() {
        // Jobs: a folder number lists the files below it and one more
        // folder, down to 0.
        let run_job = |job: (u32, Option<fn() -> ReplicaError>), found: &mut Found<_>| {
            let (n, fails) = job;
            let path = rel(&format!("f{n}.txt"));
            match fails {
                Some(error) if n == 1 => found.hold(path, "read", error()),
                _ => {
                    found.out.tree.insert(
                        path,
                        crate::model::SideEntry::new(crate::model::Entry::dir(None)),
                    );
                }
            }
            if n > 0 {
                found.jobs.push((n - 1, fails));
            }
            Ok(())
        };
        let start = |fails| Found {
            jobs: vec![(3, fails)],
            ..Found::default()
        };
        let whole = run("remote", 3, start(None), run_job).unwrap();
        assert_eq!(whole.tree.len(), 4);

        let per_path: fn() -> ReplicaError = || {
            ReplicaError::io(
                "read",
                "f1.txt",
                std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            )
        };
        let held = run("remote", 3, start(Some(per_path)), run_job).unwrap();
        assert_eq!(held.tree.len(), 3);
        assert_eq!(held.held, [rel("f1.txt")]);
        assert!(
            held.problems[0].message.contains("left alone"),
            "{:?}",
            held.problems
        );

        for about_the_store in [offline as fn() -> ReplicaError, || {
            ReplicaError::Other("401".into())
        }] {
            let broken = run("remote", 3, start(Some(about_the_store)), run_job).unwrap_err();
            assert!(
                !matches!(broken, ReplicaError::Io { .. }),
                "never a per-path failure: {broken}"
            );
        }
        let broken = run("remote", 3, start(Some(offline)), run_job).unwrap_err();
        assert!(broken.is_offline(), "{broken}");
    }

    #[test]
    fn a_name_that_is_no_path_is_a_problem_and_a_too_deep_one_is_held() {
        let mut found: Found<()> = Found::default();
        assert_eq!(child_path(None, "ok.txt", &mut found), Some(rel("ok.txt")));
        assert_eq!(child_path(Some(&rel("d")), "a\\b", &mut found), None);
        assert_eq!(found.out.problems.len(), 1);
        let mut deep = rel("d");
        for _ in 1..crate::model::MAX_DEPTH {
            deep = deep.join("d").unwrap();
        }
        assert_eq!(child_path(Some(&deep), "f", &mut found), None);
        assert_eq!(found.out.held.len(), 1);
    }
}
