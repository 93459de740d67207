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

pub const KEPT: &[Kept] = &[];
