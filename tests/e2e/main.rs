//! End-to-end tests: the real `prism-syncd` and `prism-syncctl` binaries on
//! temporary folders, driven as a user would drive them, with `file://`
//! remotes. Each test has its own sandbox (folders, state dirs, sockets),
//! so they run in parallel.

mod changes;
mod conflicts;
mod crash;
mod devices;
mod guard;
mod harness;
mod lifecycle;
mod origins;
mod propagation;
#[path = "../support/records.rs"]
mod records;
mod restore;
mod socket;
