//! The wall clock the engine and the file replicas read for what they
//! stamp: conflict-copy names, trash batches, lease expiries, the mtime of
//! a merged file.
//!
//! [`Clock::system`] is the machine's clock, which every agent uses.
//! [`Clock::skewed`] reads it off by a fixed amount, as a device whose
//! clock is ahead or behind would: the engine model gives each simulated
//! device its own, to check that nothing depends on devices agreeing on
//! the time. It deliberately does not cover what is compared with times
//! the machine's clock made: a file's ctime (the temporary-file sweep),
//! the journal's timestamps, which SQLite takes (the guard's deletion
//! window, the change logs' retention); nor monotonic time (`Instant`:
//! back-off and timers).

use std::time::{Duration, SystemTime};

/// A wall clock: the system's, possibly read off by a fixed skew.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    /// Seconds added to the system time; negative when behind.
    skew_secs: i64,
}

impl Clock {
    /// The machine's clock.
    pub const fn system() -> Clock {
        Clock { skew_secs: 0 }
    }

    /// The machine's clock read `skew_secs` seconds ahead (or behind,
    /// when negative).
    pub const fn skewed(skew_secs: i64) -> Clock {
        Clock { skew_secs }
    }

    pub fn skew_secs(&self) -> i64 {
        self.skew_secs
    }

    /// The time now, by this clock.
    pub fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        let by = Duration::from_secs(self.skew_secs.unsigned_abs());
        if self.skew_secs >= 0 {
            now + by
        } else {
            now.checked_sub(by).unwrap_or(SystemTime::UNIX_EPOCH)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skewed_clock_reads_ahead_or_behind_the_system_clock() {
        let hour = Duration::from_secs(3600);
        let before = SystemTime::now();
        let ahead = Clock::skewed(3600).now();
        let behind = Clock::skewed(-3600).now();
        let after = SystemTime::now();
        assert!(ahead >= before + hour && ahead <= after + hour);
        assert!(behind >= before - hour && behind <= after - hour);
        let system = Clock::system().now();
        assert!(system >= before && system <= SystemTime::now());
    }
}
