//! The `git+URL` remote end to end: real `prism-syncd --once` agents (one
//! per device, each with a home and state dir of its own) syncing through
//! bare repositories the tests make, with plain `git` as a person using
//! the same repository.

// Tests take locks with `lock().unwrap()`: a lock poisoned in a test is a
// failed test. The agent's own rule (`prism_sync::locks`) does not apply.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
#[path = "../support/files.rs"]
mod files;
#[path = "../support/ports.rs"]
mod ports;
#[path = "../support/processes.rs"]
mod processes;
// The SFTP tests' OpenSSH server: it runs commands too, git's among them.
#[allow(dead_code)]
#[path = "../support/sshd.rs"]
mod sshd;

mod agent;
mod encrypted;
mod ssh;
