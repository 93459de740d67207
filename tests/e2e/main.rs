//! End-to-end tests: the real `prism-syncd` and `prism-syncctl` binaries on
//! temporary folders, driven as a user would drive them, with `file://`
//! remotes. Each test has its own sandbox (folders, state dirs, sockets),
//! so they run in parallel.

// Tests take locks with `lock().unwrap()`: a lock poisoned in a test is a
// failed test. The agent's own rule (`prism_sync::locks`) does not apply.
#![allow(clippy::disallowed_methods)]

mod changes;
mod conflicts;
mod crash;
#[path = "../support/crypt_names.rs"]
mod crypt_names;
mod crypt_oracle;
mod devices;
mod encrypted;
mod guard;
mod harness;
mod history;
mod http;
mod idle;
mod lifecycle;
mod links_and_depth;
mod names;
mod origins;
mod permissions;
#[path = "../support/ports.rs"]
mod ports;
mod propagation;
#[path = "../support/records.rs"]
mod records;
mod restore;
mod socket;
#[path = "../support/unwatchable.rs"]
mod unwatchable;
