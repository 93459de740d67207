//! The seeded, randomized multi-device model of the sync engine.
//!
//! Each case builds up to three devices in a temporary folder, each with
//! its own local folder, journal file, local trash, device name and clock
//! (in half the cases each device's is minutes to hours ahead or behind:
//! conflict-copy names, trash batches, lease expiries and the mtimes of its
//! person's edits follow it), all syncing with one `file://` remote folder
//! through real [`PairEngine`]s, in process. Some cases start with a tree
//! hundreds of levels deep or a folder thousands of entries wide. A seeded
//! generator then interleaves what people do (create, edit, delete, move
//! and `chmod` files and folders on a device, or directly on the remote)
//! with syncs of random devices (full, or scoped to the paths just
//! touched), with injected I/O errors and simulated crashes on either
//! replica of the syncing device (its local folder and the remote, behind
//! one switch: a crash on one side ends every call on both), with edits
//! racing a sync just before one of its calls on either side, and with
//! restarts (the engine dropped and rebuilt from the same journal file and
//! folders), some of which back the journal up or put an older backup back
//! in its place. At the end, faults off, devices sync in
//! rounds until quiet, and the case asserts that every device holds the
//! remote's tree with its modes, that no version was lost (see
//! [`Case::required`]), that each journal's base describes the tree, and
//! that a restarted engine finds nothing to do. Throughout, only a journal
//! that was put back may be found older than the remote.
//!
//! Faults: a random sync may have one armed on its remote replica and one
//! on its local one, each going off at a random call of its side: an
//! I/O error (a full disk, EIO, EACCES on the local side) instead of the
//! call, or a crash right after it. What a sync does to the local side is
//! drawn from a generator of its own (`Spec::local_rng`). Some cases are
//! systematic: once the case passed, it is replayed once for each replica
//! call (on either side) its busiest undisturbed sync made (of at most 80),
//! crashing right after that call and then going straight to the end
//! (restart, settle, check). Cases with a wide folder are not: each replay would cost
//! as much as many cases.
//!
//! A failing case is shrunk (`engine_model/shrink.rs`: fewer devices, no
//! or smaller deep and wide trees, delta debugging over its steps, each of
//! which draws from a generator of its own) and printed with the line that
//! replays it and its entry for `engine_model/regressions.rs`, whose cases
//! every run checks again.
//!
//! It does not test the agent's scheduling, watchers or API.
//!
//! `PRISM_MODEL_CASES` (default 500) sets the number of cases,
//! `PRISM_MODEL_SEED` the first case's seed (random by default, printed),
//! `PRISM_MODEL_MAX_STEPS` cuts every case after that many steps, and
//! `PRISM_MODEL_LOG` prints the step log of passing cases too;
//! `PRISM_MODEL_DEVICES`, `PRISM_MODEL_STEPS`, `PRISM_MODEL_CRASH`,
//! `PRISM_MODEL_DEEP` and `PRISM_MODEL_WIDE` narrow a single case (see
//! `engine_model/spec.rs`). `PRISM_MODEL_SYSTEMATIC_EVERY`,
//! `PRISM_MODEL_DEEP_EVERY` and `PRISM_MODEL_WIDE_EVERY` set how rare the
//! costly cases are, `PRISM_MODEL_MAX_DEEP` how deep a deep tree may go,
//! `PRISM_MODEL_KEEP_GOING` runs on after a failure and `PRISM_MODEL_TIMES`
//! prints each case's time (`bench/model-nightly.sh` uses them). A case replays exactly from its seed, except that conflict
//! copy and trash names depend on the real clock and, in cases with two
//! parallel transfers, which copy an armed fault hits.

// Tests take locks with `lock().unwrap()`: a lock poisoned in a test is a
// failed test. The agent's own rule (`prism_sync::locks`) does not apply.
#![allow(clippy::disallowed_methods)]

#[path = "engine_model/faults.rs"]
mod faults;
#[path = "engine_model/folders.rs"]
mod folders;
#[path = "engine_model/regressions.rs"]
mod regressions;
#[path = "engine_model/shrink.rs"]
mod shrink;
#[path = "engine_model/spec.rs"]
mod spec;

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prism_sync::engine::{EngineSettings, PairEngine, SyncReport, SyncRequest};
use prism_sync::journal::{ChangeFilter, ConflictFilter, Journal, PairId, SyncCounts, SyncStatus};
use prism_sync::model::{BaseTree, ContentHash, Entry, RelPath, Scope, Side, Strategy};
use prism_sync::remote::LocalFolder;
use prism_sync::tracker::ignore::{IgnoreRules, METADATA_DIR};

use faults::{Fault, Faults, FaultyReplica};
use folders::{Clock, Contents, Edit, Node, Tree};
use spec::{Crash, DEVICE_NAMES, Spec};
const PAIR: &str = "docs";
/// Final rounds (every device syncs once per round) allowed to go quiet.
const FINAL_ROUNDS: usize = 4;

/// One device: its folders and, while it "runs", its engine.
struct Device {
    name: &'static str,
    root: PathBuf,
    trash: PathBuf,
    journal_path: PathBuf,
    strategy: Strategy,
    parallel: usize,
    /// How far this device's clock is ahead (behind, when negative).
    skew_secs: i64,
    faults: Arc<Faults>,
    running: Option<Running>,
    /// Paths edited since this device last synced, for scoped syncs.
    touched: Vec<String>,
    /// Where a copy of the journal is kept while the engine is stopped,
    /// to be put back later as a restored backup would be.
    backup: PathBuf,
    /// The journal was put back from the backup and no sync has got past
    /// comparing it with the remote since: only then may a sync find it
    /// older than the remote.
    may_be_restored: bool,
}

/// A started engine and the journal it shares with the test.
struct Running {
    engine: PairEngine,
    journal: Arc<Mutex<Journal>>,
    pair: PairId,
}

impl Device {
    /// Starts the engine as the agent does after a crash or a restart:
    /// open the journal file, mark the runs the last process left in
    /// progress as interrupted, record the pair, build the engine.
    fn start(&mut self, remote: &Path) {
        let journal = Journal::open(&self.journal_path).expect("open the journal");
        journal
            .mark_interrupted_syncs()
            .expect("mark interrupted syncs");
        let pair = journal
            .upsert_pair(
                PAIR,
                &self.root.display().to_string(),
                &format!("file://{}", remote.display()),
            )
            .expect("record the pair");
        let journal = Arc::new(Mutex::new(journal));
        let settings = EngineSettings {
            pair_name: PAIR.to_owned(),
            ignore_patterns: Vec::new(),
            device: self.name.to_owned(),
            parallel_transfers: self.parallel,
            strategy: self.strategy,
            local_root: self.root.clone(),
            lease_ttl: Duration::from_secs(120),
            trash_retention: Duration::from_secs(30 * 24 * 3600),
            clock: self.clock(),
        };
        // Both sides behind one switch: the device is one process.
        let local = FaultyReplica {
            inner: LocalFolder::local(self.root.clone(), self.trash.clone())
                .with_stale_temp_age(Duration::ZERO)
                .with_clock(self.clock()),
            side: Side::Local,
            faults: self.faults.clone(),
        };
        let remote = FaultyReplica {
            inner: LocalFolder::remote(remote.to_path_buf())
                .with_stale_temp_age(Duration::ZERO)
                .with_clock(self.clock()),
            side: Side::Remote,
            faults: self.faults.clone(),
        };
        let engine = PairEngine::new(
            pair,
            Box::new(local),
            Box::new(remote),
            journal.clone(),
            settings,
            IgnoreRules::load(&self.root, &[]).expect("ignore rules"),
        );
        self.faults.set_cancel(engine.cancel_flag());
        self.running = Some(Running {
            engine,
            journal,
            pair,
        });
    }

    fn clock(&self) -> prism_sync::clock::Clock {
        prism_sync::clock::Clock::skewed(self.skew_secs)
    }

    /// Drops the engine and its journal connection, then starts afresh.
    fn restart(&mut self, remote: &Path) {
        self.running = None;
        self.start(remote);
    }

    fn engine(&self) -> &PairEngine {
        &self.running.as_ref().expect("a started engine").engine
    }

    /// The journal's files: the database and what SQLite keeps beside it.
    fn journal_files(dir: &Path, name: &str) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(name))
            .map(|e| e.path())
            .collect()
    }

    /// Copies the stopped engine's journal aside (a backup).
    fn back_up_journal(&mut self) {
        assert!(self.running.is_none(), "backed up while the engine runs");
        let _ = std::fs::remove_dir_all(&self.backup);
        std::fs::create_dir_all(&self.backup).expect("create the backup folder");
        let state = self.journal_path.parent().expect("a state dir");
        let name = self.journal_path.file_name().expect("a file name");
        for file in Device::journal_files(state, &name.to_string_lossy()) {
            let to = self.backup.join(file.file_name().expect("a file name"));
            std::fs::copy(&file, to).expect("back up the journal");
        }
    }

    /// Puts the backup in place of the stopped engine's journal: every
    /// step recorded since is gone from it, not from the folders.
    fn restore_journal(&mut self) {
        assert!(self.running.is_none(), "restored while the engine runs");
        let state = self.journal_path.parent().expect("a state dir");
        let name = self.journal_path.file_name().expect("a file name");
        for file in Device::journal_files(state, &name.to_string_lossy()) {
            std::fs::remove_file(file).expect("remove the journal");
        }
        for file in Device::journal_files(&self.backup, &name.to_string_lossy()) {
            let to = state.join(file.file_name().expect("a file name"));
            std::fs::copy(&file, to).expect("restore the journal");
        }
        self.may_be_restored = true;
    }

    /// Checks that a sync took the journal for a restored one only after
    /// it was put back, and notes when a sync compared it with the remote.
    fn note_restored(&mut self, report: &SyncReport) {
        assert!(
            !report.journal_restored || self.may_be_restored,
            "{}: a journal that was never put back was taken for a restored one",
            self.name
        );
        if report.journal_restored
            || matches!(
                report.status,
                SyncStatus::Completed | SyncStatus::CompletedWithConflicts
            )
        {
            self.may_be_restored = false;
        }
    }
}

/// Which replica an edit or an observation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Replica {
    Device(usize),
    Remote,
}

impl Replica {
    fn index(self) -> usize {
        match self {
            Replica::Device(i) => i,
            Replica::Remote => DEVICE_NAMES.len(),
        }
    }
}

/// What an edit racing a sync did, handed back to the case.
struct Raced {
    edit: Option<Edit>,
    before: Contents,
    after: Contents,
    clock: Clock,
}

type RaceSlot = Arc<Mutex<Option<Raced>>>;

/// The random shape of one case, drawn first from its seed.
struct Shape {
    steps: usize,
    /// Chance that a sync runs with an armed fault.
    fault_rate: f32,
    /// Chance that a step is an edit made directly on the remote.
    remote_edit_rate: f32,
    /// The depth of the deep tree the case starts with (0: none).
    deep: usize,
    /// The width of the wide folder the case starts with (0: none).
    wide: usize,
    /// Where the deep and wide trees are made.
    trees_on: Replica,
}

impl Shape {
    /// Draws the shape; the spec overrides the tree sizes and bounds the
    /// replica they are made on by its devices.
    fn draw(rng: &mut fastrand::Rng, spec: &Spec) -> Shape {
        let steps = rng.usize(15..=35);
        let fault_rate = if rng.usize(..10) < 3 { 0.0 } else { 0.5 };
        let remote_edit_rate = rng.f32() * 0.25;
        let trees_on = if rng.bool() {
            Replica::Remote
        } else {
            Replica::Device(rng.usize(..spec.device_count()))
        };
        // Whether the case has a deep or a wide tree is drawn apart from
        // the rest, so that the rates (higher in the nightly run) change
        // no case but which ones have them.
        let mut trees = fastrand::Rng::with_seed(spec.seed ^ 0x7EE5_0000_D33B_0000);
        let every = |name: &str, default: u64| env_u64(name).unwrap_or(default).max(1);
        // Hundreds of levels deep: walks, paths and trashing a deep folder.
        let deep_every = every("PRISM_MODEL_DEEP_EVERY", DEEP_EVERY);
        let deep = if trees.u64(..deep_every) == 0 {
            let max = env_u64("PRISM_MODEL_MAX_DEEP").map_or(MAX_DEEP, |m| m as usize);
            trees.usize(50..=max.max(50))
        } else {
            0
        };
        // Thousands of entries in one folder: listings, plans, batches.
        let wide_every = every("PRISM_MODEL_WIDE_EVERY", WIDE_EVERY);
        let wide = if trees.u64(..wide_every) == 0 {
            trees.usize(1000..=3000)
        } else {
            0
        };
        Shape {
            steps,
            fault_rate,
            remote_edit_rate,
            deep: spec.deep.unwrap_or(deep),
            wide: spec.wide.unwrap_or(wide),
            trees_on,
        }
    }
}

/// One case in this many starts with a deep tree, by default; one in
/// `WIDE_EVERY` with a wide folder. Both cost many times a plain case,
/// so the default (CI) run has a few; the nightly run raises the rates.
const DEEP_EVERY: u64 = 100;
const WIDE_EVERY: u64 = 500;
/// How deep a deep tree goes at most, by default: the cost of a case
/// grows with the square of its depth (every path is resolved level by
/// level). `PRISM_MODEL_MAX_DEEP` raises it (the nightly run: 300; up to
/// about 1,000 stays within what this test's own recursive walk and full
/// paths handle).
const MAX_DEEP: usize = 200;

/// What disturbed the syncs of this process, over every case run (crash
/// replays and shrinking included), for the run's summary: by side, local
/// then remote.
struct Disturbed {
    io_errors: [AtomicU64; 2],
    crashes: [AtomicU64; 2],
    /// Edits that raced a sync, by the side of the call that timed them.
    races: [AtomicU64; 2],
}

static DISTURBED: Disturbed = Disturbed {
    io_errors: [AtomicU64::new(0), AtomicU64::new(0)],
    crashes: [AtomicU64::new(0), AtomicU64::new(0)],
    races: [AtomicU64::new(0), AtomicU64::new(0)],
};

fn side_index(side: Side) -> usize {
    match side {
        Side::Local => 0,
        Side::Remote => 1,
    }
}

impl Disturbed {
    fn fired(&self, fired: &faults::Fired) {
        let counter = match fired.fault {
            Fault::Io(_) => &self.io_errors,
            Fault::Crash => &self.crashes,
        };
        counter[side_index(fired.side)].fetch_add(1, Ordering::Relaxed);
    }

    fn summary(&self) -> String {
        let n = |counter: &[AtomicU64; 2], side: Side| {
            counter[side_index(side)].load(Ordering::Relaxed)
        };
        let side = |side: Side| {
            format!(
                "{} I/O errors, {} crashes, {} racing edits",
                n(&self.io_errors, side),
                n(&self.crashes, side),
                n(&self.races, side)
            )
        };
        format!(
            "went off at local calls: {}; at remote calls: {}",
            side(Side::Local),
            side(Side::Remote)
        )
    }
}

/// The share of a faulty case's fault rate with which a sync also gets a
/// fault on its local side (drawn apart from the remote's).
const LOCAL_FAULT_SHARE: f32 = 1.0;
/// One sync in this many (that no remote-timed edit races already) is
/// raced by an edit timed by a call on its local side.
const LOCAL_RACE_EVERY: usize = 6;

/// How many replica calls one sync made, and whether it ran undisturbed
/// (no fault armed, no racing edit): such a sync's calls are its plan's
/// every operation, each a place for a crash.
#[derive(Clone, Copy, Debug)]
struct SyncCalls {
    step: usize,
    calls: u32,
    undisturbed: bool,
}

struct Case {
    spec: Spec,
    shape: Shape,
    /// The generator of the case's shape, then of each step in turn.
    rng: fastrand::Rng,
    _dir: tempfile::TempDir,
    remote: PathBuf,
    devices: Vec<Device>,
    clock: Clock,
    /// Per replica (devices, then the remote): every content its tree held
    /// at some observation point (after each edit made on it, after each
    /// sync touching it), minus those whose last copy in that tree the test
    /// itself destroyed by an edit.
    ///
    /// The rule this enforces: content leaves a replica's tree only into
    /// that replica's trash, or by the hand of its user. So at the end each
    /// of these contents must be in that replica's tree or trash. This is
    /// stricter than "every version some sync observed survives
    /// somewhere": it is checked per replica, and a version a sync has
    /// copied is required on both sides. It excuses only what the test
    /// destroyed itself while it was the replica's last copy: a version
    /// that never reached another replica (no sync copied it, or a fault
    /// stopped the copy) and was then overwritten or deleted by its user is
    /// legitimately gone, while the moment a sync copies it elsewhere it
    /// becomes required there.
    required: Vec<BTreeSet<Vec<u8>>>,
    /// Replicas (by index) where a crashed or raced sync may have left
    /// staged temporary files; cleared by the next full listing of the
    /// replica, which sweeps them.
    may_hold_temps: BTreeSet<usize>,
    /// Replicas that ever held such leftovers: a folder deleted later goes
    /// to the trash with whatever is inside it, leftovers included.
    ever_held_temps: BTreeSet<usize>,
    /// Every sync's call count, for placing crashes after each call.
    sync_calls: Vec<SyncCalls>,
    log: Vec<String>,
}

impl Case {
    fn new(spec: &Spec) -> Case {
        let seed = spec.seed;
        let mut rng = fastrand::Rng::with_seed(seed);
        let dir = temp_dir();
        let remote = dir.path().join("remote");
        std::fs::create_dir(&remote).expect("create the remote folder");
        let same_strategy = rng.bool();
        let shared = random_strategy(&mut rng);
        let parallel = if rng.usize(..4) == 0 { 2 } else { 1 };
        // Half the cases give each device a clock minutes to hours ahead
        // or behind.
        let skewed = rng.bool();
        let shape = Shape::draw(&mut rng, spec);
        let mut log = vec![
            format!("{}", spec.replay_env()),
            format!(
                "seed {seed}, parallel transfers {parallel}, deep {}, wide {} on {:?}",
                shape.deep, shape.wide, shape.trees_on
            ),
        ];
        let devices: Vec<Device> = DEVICE_NAMES[..spec.device_count()]
            .iter()
            .map(|&name| {
                let home = dir.path().join(name);
                let root = home.join("folder");
                std::fs::create_dir_all(&root).expect("create a device folder");
                let strategy = if same_strategy {
                    shared
                } else {
                    random_strategy(&mut rng)
                };
                let skew_secs = if skewed {
                    let secs = rng.i64(60..=6 * 3600);
                    if rng.bool() { secs } else { -secs }
                } else {
                    0
                };
                log.push(format!(
                    "{name}: strategy {}, clock {skew_secs:+} s",
                    strategy.as_str()
                ));
                let mut device = Device {
                    name,
                    root,
                    trash: home.join("state").join("trash").join(PAIR),
                    journal_path: home.join("state").join("journal.sqlite"),
                    strategy,
                    parallel,
                    skew_secs,
                    faults: Arc::new(Faults::default()),
                    running: None,
                    touched: Vec::new(),
                    backup: home.join("journal-backup"),
                    may_be_restored: false,
                };
                std::fs::create_dir_all(home.join("state")).expect("create a state dir");
                device.start(&remote);
                device
            })
            .collect();
        Case {
            spec: spec.clone(),
            shape,
            rng,
            _dir: dir,
            remote,
            devices,
            clock: Clock::default(),
            required: vec![BTreeSet::new(); DEVICE_NAMES.len() + 1],
            may_hold_temps: BTreeSet::new(),
            ever_held_temps: BTreeSet::new(),
            sync_calls: Vec::new(),
            log,
        }
    }

    fn root(&self, replica: Replica) -> &Path {
        match replica {
            Replica::Device(i) => &self.devices[i].root,
            Replica::Remote => &self.remote,
        }
    }

    fn trash(&self, replica: Replica) -> PathBuf {
        match replica {
            Replica::Device(i) => self.devices[i].trash.clone(),
            Replica::Remote => self.remote.join(METADATA_DIR).join("trash"),
        }
    }

    fn replicas(&self) -> impl Iterator<Item = Replica> + use<> {
        (0..self.devices.len())
            .map(Replica::Device)
            .chain([Replica::Remote])
    }

    /// How far the clock of whoever edits `replica` is off: a device's
    /// own skew; a person on the remote's machine, none.
    fn skew_of(&self, replica: Replica) -> i64 {
        match replica {
            Replica::Device(i) => self.devices[i].skew_secs,
            Replica::Remote => 0,
        }
    }

    /// The spec with what the seed drew filled in, for shrinking.
    fn resolved_spec(&self) -> Spec {
        Spec {
            deep: Some(self.shape.deep),
            wide: Some(self.shape.wide),
            ..self.spec.clone()
        }
    }

    /// The indices of the steps this case runs.
    fn step_list(&self) -> Vec<usize> {
        let mut steps = match &self.spec.steps {
            Some(steps) => steps.clone(),
            None => (0..self.shape.steps).collect(),
        };
        if let Some(max) = env_u64("PRISM_MODEL_MAX_STEPS") {
            steps.retain(|&s| (s as u64) < max);
        }
        steps
    }

    /// Makes the deep and wide trees the case starts with.
    fn build_trees(&mut self) {
        let Shape {
            deep,
            wide,
            trees_on,
            ..
        } = self.shape;
        if deep == 0 && wide == 0 {
            return;
        }
        let root = self.root(trees_on).to_path_buf();
        self.clock.skew(self.skew_of(trees_on));
        let mut touched = Vec::new();
        if deep > 0 {
            touched.extend(folders::build_deep(&root, deep, &mut self.clock));
        }
        if wide > 0 {
            touched.extend(folders::build_wide(&root, wide, &mut self.clock));
        }
        self.log.push(format!(
            "-- {trees_on:?}: a tree {deep} deep, a folder {wide} wide"
        ));
        self.observe(trees_on);
        if let Replica::Device(i) = trees_on {
            self.devices[i].touched.extend(touched);
        }
    }

    /// Adds everything `replica`'s tree holds now to what must survive.
    fn observe(&mut self, replica: Replica) {
        let held = folders::contents(&folders::tree(self.root(replica)));
        self.required[replica.index()].extend(held.into_keys());
    }

    fn run(&mut self) {
        self.build_trees();
        let (fault_rate, remote_edit_rate) = (self.shape.fault_rate, self.shape.remote_edit_rate);
        let devices = self.devices.len();
        for step in self.step_list() {
            self.rng = self.spec.step_rng(step);
            let roll = self.rng.f32();
            if roll < remote_edit_rate {
                self.edit(step, Replica::Remote);
            } else if roll < 0.55 {
                let device = self.rng.usize(..devices);
                self.edit(step, Replica::Device(device));
            } else if roll < 0.93 {
                let device = self.rng.usize(..devices);
                self.random_sync(step, device, fault_rate);
            } else {
                // A restart; sometimes the journal is backed up while the
                // engine is stopped, or put back from that backup.
                let device = self.rng.usize(..devices);
                let d = &mut self.devices[device];
                d.running = None;
                let what = match self.rng.usize(..3) {
                    0 => {
                        d.back_up_journal();
                        "restart, the journal backed up"
                    }
                    1 if d.backup.is_dir() => {
                        d.restore_journal();
                        "restart, the journal restored from the backup"
                    }
                    _ => "restart",
                };
                self.log.push(format!("#{step} {}: {what}", d.name));
                d.start(&self.remote);
            }
            if self.spec.crash.is_some_and(|c| c.step == step) {
                // The crash placed at this step ends the case: does the
                // restart recover from it?
                break;
            }
        }
        self.settle();
        self.check_final();
    }

    /// One random edit on `replica`, and what it did to what must survive.
    fn edit(&mut self, step: usize, replica: Replica) {
        let root = self.root(replica).to_path_buf();
        let tree = folders::tree(&root);
        let before = folders::contents(&tree);
        self.clock.skew(self.skew_of(replica));
        let edit = folders::random_edit(&mut self.rng, &root, &tree, &mut self.clock);
        let after = folders::contents(&folders::tree(&root));
        self.account(&format!("#{step}"), replica, edit, before, after);
    }

    /// Logs an edit made on `replica` and updates what must survive: the
    /// contents whose last copy in its tree the edit destroyed are excused,
    /// everything the tree holds now is required.
    fn account(
        &mut self,
        label: &str,
        replica: Replica,
        edit: Option<Edit>,
        before: Contents,
        after: Contents,
    ) {
        let who = match replica {
            Replica::Device(i) => self.devices[i].name,
            Replica::Remote => "remote",
        };
        let Some(edit) = edit else {
            self.log
                .push(format!("{label} {who}: (no applicable edit)"));
            return;
        };
        self.log
            .push(format!("{label} {who}: {}", edit.description));
        let required = &mut self.required[replica.index()];
        for gone in before.keys().filter(|c| !after.contains_key(*c)) {
            required.remove(gone);
        }
        required.extend(after.into_keys());
        if let Replica::Device(i) = replica {
            self.devices[i].touched.extend(edit.touched);
        }
    }

    /// A sync of `device`, sometimes scoped to what it just touched,
    /// sometimes with a fault armed on its remote replica, on its local
    /// one, or on both, sometimes raced by an edit on the device or the
    /// remote while it runs (timed by a call on either side).
    fn random_sync(&mut self, step: usize, device: usize, fault_rate: f32) {
        // What this sync does to the local side is drawn apart from the
        // rest, so that every other draw of the step stays as it was.
        let mut local = self.spec.local_rng(step);
        let touched = std::mem::take(&mut self.devices[device].touched);
        let scope = if !touched.is_empty() && self.rng.usize(..4) == 0 {
            let paths: Vec<RelPath> = touched
                .iter()
                .map(|p| RelPath::new(p).expect("a valid path"))
                .collect();
            Scope::Paths(paths)
        } else {
            Scope::Full
        };
        let mut fault = (self.rng.f32() < fault_rate).then(|| {
            // Most often early in the run (listing, records), else
            // anywhere in its plan.
            let calls = if self.rng.bool() {
                self.rng.u32(..6)
            } else {
                self.rng.u32(..40)
            };
            let fault = match self.rng.usize(..4) {
                0 => Fault::Io(libc::ENOSPC),
                1 => Fault::Io(libc::EIO),
                _ => Fault::Crash,
            };
            (calls, fault)
        });
        // A local call failing (the disk full, an I/O error, a folder
        // made read-only), or the agent dying right after one: a failed
        // write, rename or trash move, a download renamed in but not
        // recorded, a flush before recording that fails.
        let local_fault = (local.f32() < fault_rate * LOCAL_FAULT_SHARE).then(|| {
            // A sync makes fewer local calls than remote ones (no
            // records, no lease).
            let calls = if local.bool() {
                local.u32(..6)
            } else {
                local.u32(..24)
            };
            let fault = match local.usize(..5) {
                0 => Fault::Io(libc::ENOSPC),
                1 => Fault::Io(libc::EIO),
                2 => Fault::Io(libc::EACCES),
                _ => Fault::Crash,
            };
            (calls, fault)
        });
        // The crash placed here counts the calls on both sides.
        let forced = self.spec.crash.filter(|c| c.step == step);
        let mut fault_on = Some(Side::Remote);
        if let Some(Crash { calls, .. }) = forced {
            fault = Some((calls, Fault::Crash));
            fault_on = None;
        }
        let name = self.devices[device].name;
        let mut line = format!("#{step} {name}: sync {}", scope_text(&scope));
        if forced.is_some() {
            line.push_str(" [the crash placed here]");
        }
        if let Some((calls, fault)) = fault {
            match fault_on {
                Some(_) => line.push_str(&format!(" [fault {fault:?} at remote call {calls}]")),
                None => line.push_str(&format!(" [fault {fault:?} at call {calls}]")),
            }
            self.devices[device].faults.arm(calls, fault_on, fault);
        }
        if let Some((calls, fault)) = local_fault {
            line.push_str(&format!(" [fault {fault:?} at local call {calls}]"));
            self.devices[device]
                .faults
                .arm(calls, Some(Side::Local), fault);
        }
        let race = self.arm_race(device, &mut line, &mut local);
        let d = &self.devices[device];
        let held_before = d.engine().failing_paths();
        let report = d.engine().sync(&request(scope.clone()));
        let (fired, calls) = d.faults.disarm();
        self.sync_calls.push(SyncCalls {
            step,
            calls,
            undisturbed: fault.is_none() && local_fault.is_none() && race.is_none(),
        });
        self.devices[device].note_restored(&report);
        line.push_str(&format!(" -> {}", report_text(&report)));
        for fired in &fired {
            line.push_str(&format!(
                "; fired {:?} on {:?} {}",
                fired.fault, fired.side, fired.op
            ));
        }
        self.log.push(line);
        for fired in &fired {
            DISTURBED.fired(fired);
        }
        let raced = match race.and_then(|(on, replica, slot)| {
            let raced = slot.lock().expect("race").take();
            raced.map(|r| (on, replica, r))
        }) {
            Some((on, replica, raced)) => {
                DISTURBED.races[side_index(on)].fetch_add(1, Ordering::Relaxed);
                self.clock.catch_up(&raced.clock);
                self.account(
                    "   raced by",
                    replica,
                    raced.edit,
                    raced.before,
                    raced.after,
                );
                true
            }
            None => false,
        };
        let crashed = fired.iter().any(|f| f.fault == Fault::Crash);
        // A person moving a folder while a file is staged in it carries the
        // staged file along; like a crash's, it is swept by a later listing.
        // Any fault may also have stopped the listing that would sweep.
        self.after_sync(device, &scope, crashed || raced || !fired.is_empty());
        if crashed {
            self.log.push(format!("   {name}: restart after the crash"));
            self.devices[device].restart(&self.remote);
        } else if fired.is_empty()
            && !raced
            && held_before.is_empty()
            && scope == Scope::Full
            && matches!(
                report.status,
                SyncStatus::Completed | SyncStatus::CompletedWithConflicts
            )
        {
            // Nothing else ran during this sync, so a full sync that
            // completed without faults and without paths held back by
            // earlier failures has made the device equal to the remote.
            let local = folders::tree(&self.devices[device].root);
            let remote = folders::tree(&self.remote);
            assert_trees_equal(&local, &remote, name, "a completed full sync");
        }
    }

    /// Sometimes arranges for a person to edit the device's folder or the
    /// remote while the sync runs, just before one of its calls: a call on
    /// the remote (drawn from the step's generator), or else, drawn from
    /// `local`, a call on the local side, mostly with the edit there: a
    /// file changed under the engine between its listing and its reads,
    /// writes and renames of it. Only with one transfer at a time: then
    /// the edit happens between two replica calls, never in the middle of
    /// a parallel copy, and the case stays reproducible from its seed.
    fn arm_race(
        &mut self,
        device: usize,
        line: &mut String,
        local: &mut fastrand::Rng,
    ) -> Option<(Side, Replica, RaceSlot)> {
        if self.devices[device].parallel != 1 {
            return None;
        }
        let (on, replica, calls, seed) = if self.rng.usize(..5) == 0 {
            let replica = if self.rng.bool() {
                Replica::Device(device)
            } else {
                Replica::Remote
            };
            let calls = self.rng.u32(..6);
            (Side::Remote, replica, calls, self.rng.u64(..))
        } else if local.usize(..LOCAL_RACE_EVERY) == 0 {
            let replica = if local.usize(..4) == 0 {
                Replica::Remote
            } else {
                Replica::Device(device)
            };
            (Side::Local, replica, local.u32(..12), local.u64(..))
        } else {
            return None;
        };
        let root = self.root(replica).to_path_buf();
        let mut clock = self.clock.clone();
        clock.skew(self.skew_of(replica));
        let slot: RaceSlot = Arc::new(Mutex::new(None));
        let out = slot.clone();
        line.push_str(&format!(
            " [raced by an edit on {replica:?} at {on:?} call {calls}]"
        ));
        self.devices[device].faults.interfere(
            calls,
            on,
            Box::new(move || {
                let mut rng = fastrand::Rng::with_seed(seed);
                let tree = folders::tree(&root);
                let before = folders::contents(&tree);
                let edit = folders::random_edit(&mut rng, &root, &tree, &mut clock);
                let after = folders::contents(&folders::tree(&root));
                *out.lock().expect("race") = Some(Raced {
                    edit,
                    before,
                    after,
                    clock,
                });
            }),
        );
        Some((on, replica, slot))
    }

    /// A sync without faults, logged and observed like every other.
    fn sync(&mut self, label: &str, device: usize, scope: Scope) -> SyncReport {
        let report = self.devices[device].engine().sync(&request(scope));
        self.devices[device].note_restored(&report);
        self.log.push(format!(
            "{label} {}: {}",
            self.devices[device].name,
            report_text(&report)
        ));
        self.after_sync(device, &Scope::Full, false);
        report
    }

    /// What every sync leaves behind: no temporary files, and the trees it
    /// touched observed. A sync that crashed or was raced (a person moved
    /// the folder a file was staged in) may leave staged files under hidden
    /// `.prism-tmp-*` names, never a real one, as a real crash does. The
    /// next full listing of that folder sweeps them (the engines here treat
    /// every temporary file as stale, since no two syncs run at once); a
    /// partial one does not look there. The final check finds none.
    fn after_sync(&mut self, device: usize, scope: &Scope, interrupted: bool) {
        for replica in [Replica::Device(device), Replica::Remote] {
            if interrupted {
                self.may_hold_temps.insert(replica.index());
                self.ever_held_temps.insert(replica.index());
            } else if *scope == Scope::Full {
                self.may_hold_temps.remove(&replica.index());
            }
            let leftovers = folders::temp_files(self.root(replica));
            assert!(
                self.may_hold_temps.contains(&replica.index()) || leftovers.is_empty(),
                "temporary files left behind: {leftovers:?}"
            );
            self.observe(replica);
        }
        let trash_temps = folders::temp_files(&self.devices[device].trash);
        assert!(
            self.ever_held_temps
                .contains(&Replica::Device(device).index())
                || trash_temps.is_empty(),
            "temporary files in the trash: {trash_temps:?}"
        );
    }

    /// Faults off, every device restarted (their back-off of injected
    /// failures is in memory and would hold paths for seconds), then rounds
    /// of full syncs on every device until one round changes nothing.
    fn settle(&mut self) {
        self.log
            .push("-- settle: faults off, every device restarts".into());
        for device in &mut self.devices {
            device.faults.disarm();
            device.restart(&self.remote);
        }
        for round in 0..FINAL_ROUNDS {
            let mut quiet = true;
            for device in 0..self.devices.len() {
                let before = self.activity(device);
                let report = self.sync(&format!("   round {round}"), device, Scope::Full);
                quiet &= self.activity(device) == before;
                assert_ne!(
                    report.status,
                    SyncStatus::Failed,
                    "a sync failed without faults: {:?}",
                    report.error
                );
                quiet &= report.counts == SyncCounts::default();
            }
            if quiet {
                return;
            }
        }
        panic!("the devices did not go quiet after {FINAL_ROUNDS} rounds of syncs");
    }

    /// Everything a sync of `device` could change: both trees, the base
    /// and the length of the change log. Folder creations are not in a
    /// report's counts, so "the counts are zero" alone does not say that a
    /// sync did nothing.
    fn activity(&self, device: usize) -> (Tree, Tree, BaseTree, usize) {
        let running = self.devices[device].running.as_ref().expect("started");
        let journal = running.journal.lock().expect("journal");
        let base = journal.load_base(running.pair).expect("load the base");
        let filter = ChangeFilter {
            pair: Some(PAIR.to_owned()),
            ..ChangeFilter::default()
        };
        let changes = journal.changes(&filter).expect("read the change log").len();
        (
            folders::tree(&self.devices[device].root),
            folders::tree(&self.remote),
            base,
            changes,
        )
    }

    fn check_final(&mut self) {
        let remote = folders::tree(&self.remote);
        let remote_modes = folders::modes(&self.remote);
        // 1. Every device holds the remote's tree, with its modes.
        for device in &self.devices {
            let local = folders::tree(&device.root);
            assert_trees_equal(&local, &remote, device.name, "the final rounds");
            assert_eq!(
                folders::modes(&device.root),
                remote_modes,
                "after the final rounds, {} has other modes than the remote",
                device.name
            );
        }
        // 2. Nothing that must survive is gone from its replica.
        for replica in self.replicas() {
            let mut kept: BTreeSet<Vec<u8>> = folders::contents(&folders::tree(self.root(replica)))
                .into_keys()
                .collect();
            kept.extend(folders::kept_under(&self.trash(replica)));
            let lost: Vec<String> = self.required[replica.index()]
                .iter()
                .filter(|c| !kept.contains(*c))
                .map(|c| folders::show(c))
                .collect();
            assert!(
                lost.is_empty(),
                "{replica:?} lost versions (in neither its tree nor its trash): {lost:?}"
            );
        }
        // 3. Each journal's base describes the tree, and a restarted
        // engine (the journal reopened) plans nothing.
        for i in 0..self.devices.len() {
            self.devices[i].restart(&self.remote);
            let device = &self.devices[i];
            let running = device.running.as_ref().expect("started");
            let base = running
                .journal
                .lock()
                .expect("journal")
                .load_base(running.pair)
                .expect("load the base");
            let from_base: Tree = base
                .iter()
                .map(|(path, entry)| {
                    let node = match &entry.entry {
                        Entry::Dir(_) => Node::Dir,
                        Entry::File(meta) => Node::File(meta.hash.to_hex().into_bytes()),
                    };
                    (path.as_str().to_owned(), node)
                })
                .collect();
            let hashed: Tree = remote
                .iter()
                .map(|(path, node)| {
                    let node = match node {
                        Node::Dir => Node::Dir,
                        Node::File(bytes) => {
                            Node::File(ContentHash::of_bytes(bytes).to_hex().into_bytes())
                        }
                    };
                    (path.clone(), node)
                })
                .collect();
            assert_trees_equal(&from_base, &hashed, device.name, "its journal's base");
            let base_modes: std::collections::BTreeMap<String, u32> = base
                .iter()
                .map(|(path, entry)| {
                    let mode = entry.entry.mode().map_or(0o7777, |m| m.bits());
                    (path.as_str().to_owned(), mode)
                })
                .collect();
            assert_eq!(
                base_modes, remote_modes,
                "{}: its journal's base has other modes than the remote",
                device.name
            );
            let before = self.activity(i);
            let report = running.engine.sync(&request(Scope::Full));
            assert!(
                !report.journal_restored,
                "{}: restored at the end",
                device.name
            );
            assert!(
                self.activity(i) == before,
                "{}: the sync after a restart changed a tree, the base or the change log",
                device.name
            );
            self.log.push(format!(
                "   final {}: {}",
                device.name,
                report_text(&report)
            ));
            assert_eq!(
                report.counts,
                SyncCounts::default(),
                "{}: the sync after a restart was not a no-op: {}",
                device.name,
                report_text(&report)
            );
        }
    }
}

fn random_strategy(rng: &mut fastrand::Rng) -> Strategy {
    Strategy::ALL[rng.usize(..Strategy::ALL.len())]
}

fn request(scope: Scope) -> SyncRequest {
    SyncRequest {
        scope,
        trigger: "test".into(),
        sync_id: None,
        confirmed: true,
        poll_only: false,
    }
}

/// A case's folders live on tmpfs when there is one: the test is about
/// what happens, not about how long fsync takes.
fn temp_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("prism-model-");
        b
    };
    if shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        folders::cache_reads(true);
        return dir;
    }
    folders::cache_reads(false);
    builder.tempdir().expect("create a temporary folder")
}

fn scope_text(scope: &Scope) -> String {
    match scope {
        Scope::Full => "full".into(),
        Scope::Paths(paths) => {
            let paths: Vec<&str> = paths.iter().map(RelPath::as_str).collect();
            format!("paths {paths:?}")
        }
    }
}

fn report_text(report: &SyncReport) -> String {
    let c = &report.counts;
    let mut text = format!(
        "{} (up {}, down {}, del local {}, del remote {}, moved {}, conflicts {}, errors {})",
        report.status.as_str(),
        c.uploaded,
        c.downloaded,
        c.deleted_local,
        c.deleted_remote,
        c.moved,
        c.conflicts,
        c.errors
    );
    if let Some(error) = &report.error {
        text.push_str(&format!(" error: {error}"));
    }
    if !report.unsettled.is_empty() {
        let paths: Vec<&str> = report.unsettled.iter().map(RelPath::as_str).collect();
        text.push_str(&format!(" unsettled: {paths:?}"));
    }
    if report.journal_restored {
        text.push_str(" (the journal was older than the remote: re-discovered)");
    }
    text
}

fn assert_trees_equal(local: &Tree, remote: &Tree, device: &str, after: &str) {
    if local == remote {
        return;
    }
    let mut diff = Vec::new();
    let paths: BTreeSet<&String> = local.keys().chain(remote.keys()).collect();
    for path in paths {
        let (l, r) = (local.get(path), remote.get(path));
        if l != r {
            diff.push(format!(
                "  {path}: {device} {} / remote {}",
                node_text(l),
                node_text(r)
            ));
        }
    }
    panic!(
        "after {after}, {device} differs from the remote:\n{}",
        diff.join("\n")
    );
}

fn node_text(node: Option<&Node>) -> String {
    match node {
        None => "absent".into(),
        Some(Node::Dir) => "folder".into(),
        Some(Node::File(bytes)) => folders::show(bytes),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

impl Case {
    /// Gives every device `strategy` (and restarts them), for the fixed
    /// scenarios below.
    fn with_strategy(seed: u64, strategy: Strategy) -> Case {
        let mut case = Case::new(&Spec::random(seed));
        for device in &mut case.devices {
            device.strategy = strategy;
            device.skew_secs = 0;
            device.restart(&case.remote);
        }
        case
    }

    fn write(&mut self, replica: Replica, path: &str, content: &str) {
        let root = self.root(replica).to_path_buf();
        folders::write_file(&root, path, content.as_bytes(), &mut self.clock, false);
        self.observe(replica);
    }
}

/// A case that passed: how many replica calls each of its syncs made.
struct Passed {
    sync_calls: Vec<SyncCalls>,
    /// It had a wide folder: a replay costs many plain cases.
    wide: bool,
}

/// A case that failed: why, its step log, and what to shrink.
struct Failed {
    /// The case with the tree sizes its seed drew.
    spec: Spec,
    /// Every step it ran.
    steps: Vec<usize>,
    message: String,
    log: Vec<String>,
}

/// Runs one case, catching its failure.
fn run_case(spec: &Spec) -> Result<Passed, Box<Failed>> {
    let mut case = Case::new(spec);
    let outcome = catch_unwind(AssertUnwindSafe(|| case.run()));
    let Err(panic) = outcome else {
        if std::env::var_os("PRISM_MODEL_LOG").is_some() {
            println!("{}\n", case.log.join("\n"));
        }
        return Ok(Passed {
            sync_calls: case.sync_calls,
            wide: case.shape.wide > 0,
        });
    };
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".into());
    Err(Box::new(Failed {
        spec: case.resolved_spec(),
        steps: case.step_list(),
        message,
        log: case.log,
    }))
}

/// Runs `spec`; if it fails, shrinks it to a smaller case that still
/// fails and returns the whole report: the failure, the replay lines of
/// both cases, the entry to keep in `regressions.rs`, and the step log of
/// the shrunk case.
fn check(spec: &Spec) -> Result<Passed, String> {
    let failed = match run_case(spec) {
        Ok(passed) => return Ok(passed),
        Err(failed) => failed,
    };
    let mut report = format!(
        "case failed: {}\nreplay: {}\nsteps:\n{}\n",
        failed.message,
        failed.spec.replay_line(),
        failed.log.join("\n")
    );
    // The candidates' panics are expected; their messages would bury the
    // report.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut tries = 0;
    let small = shrink::shrink(&failed.spec, failed.steps, &mut |candidate| {
        tries += 1;
        run_case(candidate).is_err()
    });
    let rerun = run_case(&small);
    std::panic::set_hook(hook);
    match rerun {
        Err(again) => report.push_str(&format!(
            "\nshrunk in {tries} tries to a case that fails with: {}\n\
             replay: {}\nkeep in tests/engine_model/regressions.rs: {}\nsteps:\n{}",
            again.message,
            small.replay_line(),
            small.as_kept(),
            again.log.join("\n")
        )),
        Ok(_) => report.push_str(&format!(
            "\nshrinking found no smaller case that fails every time ({tries} tries)"
        )),
    }
    Err(report)
}

/// How many crashes a systematic case places at most: one after each
/// replica call of its busiest sync, up to this many.
const MAX_CRASH_PLACES: u32 = 80;

/// Replays the case once for each replica call of its busiest undisturbed
/// sync (of at most [`MAX_CRASH_PLACES`] calls, if it has one), crashing
/// right after that call, and checks that the restart recovers. Returns
/// how many replays ran, and the reports of those that failed. A case
/// with a wide folder is not replayed: its replays cost many cases each.
fn crash_at_every_call(spec: &Spec, passed: &Passed) -> (u32, Vec<String>) {
    let undisturbed = || passed.sync_calls.iter().filter(|s| s.undisturbed);
    let busiest = undisturbed()
        .filter(|s| s.calls <= MAX_CRASH_PLACES)
        .max_by_key(|s| s.calls)
        .or_else(|| undisturbed().min_by_key(|s| s.calls));
    let Some(busiest) = busiest.filter(|_| !passed.wide) else {
        return (0, Vec::new());
    };
    let places = busiest.calls.min(MAX_CRASH_PLACES);
    let mut failures = Vec::new();
    for calls in 0..places {
        let fork = Spec {
            crash: Some(Crash {
                step: busiest.step,
                calls,
            }),
            ..spec.clone()
        };
        if let Err(report) = check(&fork) {
            failures.push(report);
            break;
        }
    }
    (places, failures)
}

/// One case in this many is systematic, by default (CI); the nightly run
/// raises the rate.
const SYSTEMATIC_EVERY: u64 = 500;

/// Whether the case of `seed` is one of the systematic ones (a crash after
/// every call of a plan), about one in `every`. Drawn apart from the case,
/// so that changing `every` changes no case.
fn is_systematic(seed: u64, every: u64) -> bool {
    every > 0 && fastrand::Rng::with_seed(seed ^ 0x5157_E4A7_1C00_0000).u64(..every) == 0
}

#[test]
fn random_multi_device_cases_converge_without_losing_versions() {
    let first = env_u64("PRISM_MODEL_SEED").unwrap_or_else(|| fastrand::u64(..));
    if let Some(spec) = Spec::from_env(first) {
        println!("engine model: the one case {}", spec.replay_env());
        if let Err(report) = check(&spec) {
            panic!("{report}");
        }
        return;
    }
    let cases = env_u64("PRISM_MODEL_CASES").unwrap_or(500);
    let every = env_u64("PRISM_MODEL_SYSTEMATIC_EVERY").unwrap_or(SYSTEMATIC_EVERY);
    // The nightly run goes on after a failure and reports them all.
    let keep_going = std::env::var_os("PRISM_MODEL_KEEP_GOING").is_some();
    println!(
        "engine model: {cases} cases from seed {first} \
         (replay with PRISM_MODEL_SEED={first} PRISM_MODEL_CASES={cases})"
    );
    let started = Instant::now();
    let (mut replays, mut failures) = (0u64, Vec::new());
    for i in 0..cases {
        let spec = Spec::random(first.wrapping_add(i));
        let case_started = Instant::now();
        let mut found = match check(&spec) {
            Ok(passed) if is_systematic(spec.seed, every) => {
                let (places, found) = crash_at_every_call(&spec, &passed);
                replays += u64::from(places);
                found
            }
            Ok(_) => Vec::new(),
            Err(report) => vec![report],
        };
        if std::env::var_os("PRISM_MODEL_TIMES").is_some() {
            println!(
                "engine model: seed {} took {:.1?}",
                spec.seed,
                case_started.elapsed()
            );
        }
        if !found.is_empty() && !keep_going {
            panic!("{}", found.remove(0));
        }
        failures.append(&mut found);
    }
    let elapsed = started.elapsed();
    println!(
        "engine model: {cases} cases and {replays} crash replays in {elapsed:.1?} \
         ({:.1} cases/s), {} failed",
        cases as f64 / elapsed.as_secs_f64(),
        failures.len()
    );
    println!("engine model: {}", DISTURBED.summary());
    for report in &failures {
        println!("engine model: FAILED {report}\n");
    }
    assert!(failures.is_empty(), "{} cases failed", failures.len());
}

/// The kept regressions: shrunk failing cases, each run on every test run.
#[test]
fn kept_regression_cases_pass() {
    for kept in regressions::KEPT {
        if let Err(report) = check(&kept.spec()) {
            panic!("the kept case for \"{}\" fails again:\n{report}", kept.why);
        }
    }
}

/// Regression: a conflict copy name is the path, the second and the
/// version's origin, so a second conflict on the same path within one second (here:
/// names already taken on the remote, as a crash right after a rename
/// aside leaves them) collided with the earlier copy. The rename aside
/// failed, the sync failed and backed the path off. Found by the random
/// cases (a crash after the rename aside, then the same conflict again).
#[test]
fn a_taken_conflict_copy_name_is_skipped() {
    let mut case = Case::with_strategy(1, Strategy::Manual);
    case.write(Replica::Device(0), "a.txt", "alpha\n");
    case.sync("", 0, Scope::Full);
    case.sync("", 1, Scope::Full);
    let now = std::time::SystemTime::now();
    for second in 0..3 {
        let stamp = prism_sync::timefmt::conflict_stamp(now + Duration::from_secs(second));
        let origin = prism_sync::engine::REMOTE_ORIGIN;
        let taken = format!("a.conflict-{stamp}-{origin}.txt");
        case.write(Replica::Remote, &taken, &format!("earlier copy {second}\n"));
    }
    case.write(Replica::Device(0), "a.txt", "beta\n");
    case.sync("", 0, Scope::Full);
    case.write(Replica::Device(1), "a.txt", "gamma\n");
    // Scoped to the conflicting file, the taken names are not in the
    // snapshot: the remote refuses them and the next name is tried.
    let report = case.sync("", 1, Scope::Paths(vec![RelPath::new("a.txt").unwrap()]));
    assert_eq!(
        report.status,
        SyncStatus::CompletedWithConflicts,
        "{}",
        report_text(&report)
    );
    let report = case.sync("", 1, Scope::Full);
    assert_eq!(report.status, SyncStatus::CompletedWithConflicts);
    let local = folders::tree(&case.devices[1].root);
    let remote = folders::tree(&case.remote);
    assert_trees_equal(&local, &remote, "devB", "the conflict");
    assert_eq!(remote.get("a.txt"), Some(&Node::File(b"gamma\n".to_vec())));
    let copies = remote
        .iter()
        .filter(|(p, n)| p.starts_with("a.conflict-") && **n == Node::File(b"beta\n".to_vec()))
        .count();
    assert_eq!(copies, 1, "{remote:?}");
    assert_eq!(folders::contents(&remote).len(), 5, "{remote:?}");
}

/// Regression: reconcile orders a deletion that makes room for a folder
/// at the same path before the folder's creation, but the executor ran
/// every deletion after the copies. A file replaced by a folder on the
/// remote then failed to sync: the folder could not be made over the old
/// file, and the copy into it failed ("Not a directory"). Found by the
/// random cases.
#[test]
fn a_file_replaced_by_a_folder_syncs() {
    let mut case = Case::with_strategy(2, Strategy::Manual);
    case.write(Replica::Device(0), "e", "a file\n");
    case.sync("", 0, Scope::Full);
    std::fs::remove_file(case.remote.join("e")).unwrap();
    case.write(Replica::Remote, "e/e", "a file in a folder\n");
    let report = case.sync("", 0, Scope::Full);
    assert_eq!(
        report.status,
        SyncStatus::Completed,
        "{}",
        report_text(&report)
    );
    let local = folders::tree(&case.devices[0].root);
    assert_trees_equal(&local, &folders::tree(&case.remote), "devA", "the sync");
    let trashed = folders::kept_under(&case.devices[0].trash);
    assert!(trashed.contains(b"a file\n".as_slice()), "{trashed:?}");
}

/// The engine lists both sides at once, yet a case replays from its seed:
/// the model takes the two listings in turn, so an edit placed before the
/// remote's listing, or a crash counted on either side, lands at the same
/// point on every replay. Here the edit looks for a stale staged file that
/// the local listing sweeps: it must already be gone.
#[test]
fn the_local_listing_is_over_before_the_remote_is_listed() {
    let mut case = Case::with_strategy(4, Strategy::Manual);
    for i in 0..300 {
        case.write(Replica::Device(0), &format!("d{}/f{i}.txt", i % 10), "x\n");
    }
    case.sync("", 0, Scope::Full);
    // Which remote call the listing is (records are read before it).
    let faults = case.devices[0].faults.clone();
    let remote_list = (0..16)
        .find(|&calls| {
            faults.arm(calls, Some(Side::Remote), Fault::Io(libc::EIO));
            case.devices[0].engine().sync(&request(Scope::Full));
            let (fired, _) = faults.disarm();
            fired.first().is_some_and(|f| f.op == "list /")
        })
        .expect("the remote is listed");

    let stale = case.devices[0].root.join(".prism-tmp-left-by-a-crash");
    std::fs::write(&stale, "staged\n").unwrap();
    let seen: Arc<Mutex<Option<bool>>> = Arc::default();
    let (probe, at) = (Arc::clone(&seen), stale.clone());
    faults.interfere(
        remote_list,
        Side::Remote,
        Box::new(move || *probe.lock().unwrap() = Some(at.exists())),
    );
    case.sync("", 0, Scope::Full);
    faults.disarm();
    assert_eq!(
        *seen.lock().unwrap(),
        Some(false),
        "the edit before the remote's listing came after the local listing"
    );
}

/// A user's resolution of a conflict reaches the local folder only through
/// the engine's local replica: a fault there stops it before anything
/// changes, and once the fault is gone it applies (the copy's version put
/// in place, the local one in the local trash) and propagates.
#[test]
fn a_resolution_reaches_the_local_folder_only_through_its_replica() {
    let mut case = Case::with_strategy(3, Strategy::Manual);
    case.write(Replica::Device(0), "a.txt", "alpha\n");
    case.sync("", 0, Scope::Full);
    case.sync("", 1, Scope::Full);
    case.write(Replica::Device(0), "a.txt", "beta\n");
    case.sync("", 0, Scope::Full);
    case.write(Replica::Device(1), "a.txt", "gamma\n");
    let report = case.sync("", 1, Scope::Full);
    assert_eq!(
        report.status,
        SyncStatus::CompletedWithConflicts,
        "{}",
        report_text(&report)
    );
    let device = &case.devices[1];
    let rows = {
        let journal = device.running.as_ref().unwrap().journal.lock().unwrap();
        journal
            .conflicts(&ConflictFilter {
                pair: Some(PAIR.to_owned()),
                include_resolved: false,
            })
            .unwrap()
    };
    let [row] = rows.as_slice() else {
        panic!("one conflict: {rows:?}")
    };
    let copy = row.copy_path.clone().expect("a conflict copy");
    let before = folders::tree(&device.root);
    assert_eq!(
        before.get(copy.as_str()),
        Some(&Node::File(b"beta\n".to_vec()))
    );

    device
        .faults
        .arm(0, Some(Side::Local), Fault::Io(libc::EIO));
    let refused = device
        .engine()
        .resolve(row, Strategy::KeepRemote, None)
        .expect_err("the local replica failed");
    let (fired, _) = device.faults.disarm();
    assert!(
        refused.to_string().contains("Input/output error"),
        "{refused}"
    );
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].side, Side::Local);
    assert_eq!(folders::tree(&device.root), before, "nothing changed");

    let resolved = device
        .engine()
        .resolve(row, Strategy::KeepRemote, None)
        .unwrap();
    let local = folders::tree(&device.root);
    assert_eq!(local.get("a.txt"), Some(&Node::File(b"beta\n".to_vec())));
    assert_eq!(local.get(copy.as_str()), None);
    assert!(folders::kept_under(&device.trash).contains(b"gamma\n".as_slice()));
    let report = case.sync("", 1, Scope::Paths(resolved.paths));
    assert_eq!(
        report.status,
        SyncStatus::Completed,
        "{}",
        report_text(&report)
    );
    assert_trees_equal(
        &folders::tree(&case.devices[1].root),
        &folders::tree(&case.remote),
        "devB",
        "the resolution",
    );
}
