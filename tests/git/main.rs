//! The `git+URL` remote end to end: real `prism-syncd --once` agents (one
//! per device, each with a home and state dir of its own) syncing through
//! bare repositories the tests make, with plain `git` as a person using
//! the same repository.

#[allow(dead_code)]
#[path = "../support/files.rs"]
mod files;

mod agent;
