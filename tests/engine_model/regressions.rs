//! Cases of the engine model that once failed, shrunk, and kept so that
//! every test run checks them again. A failing random case prints its
//! entry ("keep in tests/engine_model/regressions.rs: ..."); add it here
//! with a line on what it found and what fixed it.

use super::spec::{Crash, Spec};

/// A kept case, as the shrinker printed it.
pub struct Kept {
    pub seed: u64,
    pub devices: Option<usize>,
    pub steps: Option<&'static [usize]>,
    /// A crash after `.1` replica calls of the sync at step `.0`.
    pub crash: Option<(usize, u32)>,
    pub deep: Option<usize>,
    pub wide: Option<usize>,
    /// What it found.
    pub why: &'static str,
}

impl Kept {
    pub fn spec(&self) -> Spec {
        Spec {
            seed: self.seed,
            devices: self.devices,
            steps: self.steps.map(<[usize]>::to_vec),
            crash: self.crash.map(|(step, calls)| Crash { step, calls }),
            deep: self.deep,
            wide: self.wide,
        }
    }
}

pub const KEPT: &[Kept] = &[
    // Shrunk from a run against an engine broken on purpose (a local file
    // a download replaced was deleted instead of trashed), to check that
    // the shrinker's cases catch lost versions: a person on the remote
    // moves a file over `d1/notes` while devB syncs, and the download
    // replacing devB's `d1/notes` must put devB's version in its trash.
    Kept {
        seed: 3001,
        devices: None,
        steps: Some(&[1, 5, 7, 9, 12, 13]),
        crash: None,
        deep: Some(0),
        wide: Some(0),
        why: "a download over a file a racing remote move replaced keeps the old version",
    },
];
