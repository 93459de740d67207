//! Faults that tests inject into the real binaries. Each is switched on by
//! an environment variable that is a test hook and nothing else: it is
//! named `PRISM_SYNC_TEST_*`, it is read once, and without it the code
//! below does nothing.
//!
//! - `PRISM_SYNC_TEST_PANIC_RECORDING=PATH`: the first time the process
//!   records a change of `PATH` (relative to a pair's root) in the journal,
//!   it panics inside the journal's transaction, while the journal lock is
//!   held. The end-to-end tests use it to show that such a crash fails
//!   that one sync and nothing else (see `crate::locks`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::model::RelPath;

/// The environment variable of the recording fault.
pub const PANIC_RECORDING: &str = "PRISM_SYNC_TEST_PANIC_RECORDING";

/// Panics if the recording fault is armed for `path` and has not fired.
pub fn recording(path: &RelPath) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    static FIRED: AtomicBool = AtomicBool::new(false);
    let armed = ARMED.get_or_init(|| std::env::var(PANIC_RECORDING).ok());
    if armed.as_deref() == Some(path.as_str()) && !FIRED.swap(true, Ordering::Relaxed) {
        panic!("{PANIC_RECORDING}: injected panic while recording {path}");
    }
}
