//! The random model: a random base tree, random edits on each side (create,
//! edit, delete, chmod, move and move-with-edit of files and folders, with
//! or without identities, on case-sensitive or case-insensitive sides, on a
//! remote with or without permission bits), then
//! the plan is applied in the simulator and every invariant of
//! `World::check_plan` must hold. A small name space (`a`, `b`, `B`, three
//! levels) and a small pool of versions make collisions, identical edits,
//! ambiguous renames and case clashes common.

use proptest::prelude::*;

use super::sim::{World, file};
use super::{Policy, fold, subtree};
use crate::model::{BaseEntry, BaseTree, Entry, FileId, Mode, RelPath, SideEntry, SideTree};

const NAMES: [&str; 3] = ["a", "b", "B"];

/// Every path of up to three components over [`NAMES`].
fn name_space() -> Vec<RelPath> {
    let mut paths: Vec<RelPath> = NAMES
        .iter()
        .map(|n| RelPath::new(n).expect("a valid name"))
        .collect();
    let mut level = paths.clone();
    for _ in 1..3 {
        level = level
            .iter()
            .flat_map(|p| NAMES.iter().map(|n| p.join(n).expect("a valid name")))
            .collect();
        paths.extend(level.iter().cloned());
    }
    paths
}

/// One user action on one side. Indices pick a path of the name space or
/// an existing entry (modulo their count).
#[derive(Clone, Debug)]
enum Edit {
    Create {
        at: usize,
        version: u8,
    },
    Mkdir {
        at: usize,
    },
    Modify {
        pick: usize,
        version: u8,
    },
    Delete {
        pick: usize,
    },
    Move {
        pick: usize,
        to: usize,
        version: Option<u8>,
    },
    Chmod {
        pick: usize,
        mode: usize,
    },
}

/// The modes entries get: few, so that equal and differing modes are both
/// common, and overlapping, so that "the bits both allow" is often new.
const MODES: [u32; 5] = [0o644, 0o600, 0o755, 0o640, 0o604];

fn mode(index: usize) -> Option<Mode> {
    Some(Mode::from_bits(MODES[index % MODES.len()]))
}

#[derive(Clone, Debug)]
struct Case {
    /// Path index and 0 for a folder, else a file version.
    base: Vec<(usize, u8)>,
    local: Vec<Edit>,
    remote: Vec<Edit>,
    local_ids: bool,
    remote_ids: bool,
    /// The remote holds permission bits (SFTP) or none (WebDAV).
    remote_modes: bool,
    policy: Policy,
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = 0..39usize;
    let version = 0..6u8;
    prop_oneof![
        (at.clone(), version.clone()).prop_map(|(at, version)| Edit::Create { at, version }),
        at.clone().prop_map(|at| Edit::Mkdir { at }),
        (any::<usize>(), version.clone())
            .prop_map(|(pick, version)| Edit::Modify { pick, version }),
        any::<usize>().prop_map(|pick| Edit::Delete { pick }),
        (any::<usize>(), at, proptest::option::of(version))
            .prop_map(|(pick, to, version)| Edit::Move { pick, to, version }),
        (any::<usize>(), any::<usize>()).prop_map(|(pick, mode)| Edit::Chmod { pick, mode }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec((0..39usize, 0..5u8), 0..12),
        proptest::collection::vec(edit(), 0..5),
        proptest::collection::vec(edit(), 0..5),
        any::<(bool, bool, bool, bool, bool)>(),
    )
        .prop_map(
            |(base, local, remote, (local_ids, remote_ids, lci, rci, remote_modes))| Case {
                base,
                local,
                remote,
                local_ids,
                remote_ids,
                remote_modes,
                policy: Policy {
                    local_case_insensitive: lci,
                    remote_case_insensitive: rci,
                    local_modes: true,
                    remote_modes,
                },
            },
        )
}

/// One side's tree under construction, handing out fresh identities.
struct Builder {
    tree: SideTree,
    ids: bool,
    prefix: &'static str,
    next: usize,
    ignores_case: bool,
}

impl Builder {
    fn id(&mut self) -> Option<FileId> {
        self.next += 1;
        self.ids
            .then(|| FileId::new(&format!("{}{}", self.prefix, self.next)))
    }

    /// Whether `path` can be created (with its missing parent folders):
    /// nothing there, no file above it, and on a case-insensitive side no
    /// other name for it or for a missing parent.
    fn can_create(&self, path: &RelPath) -> bool {
        let clashes = |p: &RelPath| {
            self.ignores_case && self.tree.keys().any(|k| k != p && fold(k) == fold(p))
        };
        let parents_ok = path.ancestors().all(|a| match self.tree.get(&a) {
            Some(e) => e.entry.is_dir(),
            None => !clashes(&a),
        });
        parents_ok && !self.tree.contains_key(path) && !clashes(path)
    }

    fn create(&mut self, path: RelPath, entry: Entry, id: Option<FileId>) {
        for ancestor in path.ancestors() {
            if !self.tree.contains_key(&ancestor) {
                let id = self.id();
                self.tree.insert(
                    ancestor,
                    SideEntry {
                        entry: Entry::dir(mode(self.next)),
                        id,
                        version: None,
                    },
                );
            }
        }
        self.tree.insert(
            path,
            SideEntry {
                entry,
                id,
                version: None,
            },
        );
    }

    fn apply(&mut self, edit: &Edit, paths: &[RelPath]) {
        let existing: Vec<RelPath> = self.tree.keys().cloned().collect();
        match *edit {
            Edit::Create { at, version } => {
                if self.can_create(&paths[at]) {
                    let id = self.id();
                    let entry = file(version).with_mode(mode(usize::from(version)));
                    self.create(paths[at].clone(), entry, id);
                }
            }
            Edit::Mkdir { at } => {
                if self.can_create(&paths[at]) {
                    let id = self.id();
                    self.create(paths[at].clone(), Entry::dir(mode(at)), id);
                }
            }
            Edit::Chmod { pick, mode: index } => {
                if let Some(path) = existing.get(pick % existing.len().max(1))
                    && let Some(entry) = self.tree.get_mut(path)
                {
                    entry.entry = entry.entry.with_mode(mode(index));
                }
            }
            Edit::Modify { pick, version } => {
                let files: Vec<&RelPath> = existing
                    .iter()
                    .filter(|p| !self.tree[*p].entry.is_dir())
                    .collect();
                if let Some(path) = files.get(pick % files.len().max(1))
                    && let Some(entry) = self.tree.get_mut(*path)
                {
                    entry.entry = file(version).with_mode(entry.entry.mode());
                }
            }
            Edit::Delete { pick } => {
                if let Some(root) = existing.get(pick % existing.len().max(1)) {
                    self.tree.retain(|p, _| !p.is_within(root));
                }
            }
            Edit::Move { pick, to, version } => {
                let Some(from) = existing.get(pick % existing.len().max(1)) else {
                    return;
                };
                let to = &paths[to];
                if to.is_within(from) {
                    return;
                }
                let moving: Vec<(RelPath, SideEntry)> = subtree(&self.tree, from)
                    .map(|(p, e)| (p.clone(), e.clone()))
                    .collect();
                self.tree.retain(|p, _| !p.is_within(from));
                if !self.can_create(to) {
                    self.tree.extend(moving);
                    return;
                }
                for (path, mut entry) in moving {
                    if let (Some(version), Entry::File(_)) = (version, entry.entry) {
                        entry.entry = file(version).with_mode(entry.entry.mode());
                    }
                    let new_path = path
                        .rebase(from, to)
                        .expect("moving paths lie below `from`");
                    let id = entry.id.clone();
                    self.create(new_path, entry.entry, id);
                }
            }
        }
    }
}

/// The base and both sides described by `case`.
fn build(case: &Case) -> World {
    let paths = name_space();
    let mut base = Builder {
        tree: SideTree::new(),
        ids: true,
        prefix: "",
        next: 0,
        ignores_case: case.policy.local_case_insensitive || case.policy.remote_case_insensitive,
    };
    for &(at, kind) in &case.base {
        if base.can_create(&paths[at]) {
            let entry = if kind == 0 {
                Entry::dir(mode(at))
            } else {
                file(kind).with_mode(mode(at))
            };
            let id = base.id();
            base.create(paths[at].clone(), entry, id);
        }
    }
    let side = |ids: bool, prefix: &'static str, ignores_case: bool, edits: &[Edit]| {
        let mut builder = Builder {
            tree: base
                .tree
                .iter()
                .map(|(p, e)| {
                    let id =
                        e.id.as_ref()
                            .filter(|_| ids)
                            .map(|id| FileId::new(&format!("{prefix}{id}")));
                    (
                        p.clone(),
                        SideEntry {
                            entry: e.entry,
                            id,
                            version: None,
                        },
                    )
                })
                .collect(),
            ids,
            prefix,
            next: 1000,
            ignores_case,
        };
        for edit in edits {
            builder.apply(edit, &paths);
        }
        builder.tree
    };
    let local = side(
        case.local_ids,
        "L",
        case.policy.local_case_insensitive,
        &case.local,
    );
    let mut remote = side(
        case.remote_ids,
        "R",
        case.policy.remote_case_insensitive,
        &case.remote,
    );
    if !case.remote_modes {
        for entry in remote.values_mut() {
            entry.entry = entry.entry.with_mode(None);
        }
    }
    let base_tree: BaseTree = base
        .tree
        .iter()
        .map(|(p, e)| {
            let id = |ids: bool, prefix: &str| {
                e.id.as_ref()
                    .filter(|_| ids)
                    .map(|id| FileId::new(&format!("{prefix}{id}")))
            };
            let entry = BaseEntry {
                entry: e.entry,
                local_id: id(case.local_ids, "L"),
                remote_id: id(case.remote_ids, "R"),
                remote_version: None,
            };
            (p.clone(), entry)
        })
        .collect();
    World::new(base_tree, local, remote, case.policy)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_edits_on_both_sides_keep_every_invariant(case in case()) {
        let world = build(&case);
        let plan = world.reconcile();
        if let Err(why) = world.check_plan(&plan) {
            return Err(TestCaseError::fail(format!(
                "{why}\nbase {:?}\nlocal {:?}\nremote {:?}\nplan {plan:#?}",
                world.base, world.local, world.remote
            )));
        }
    }
}
