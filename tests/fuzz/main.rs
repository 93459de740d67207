//! Fuzz tests of the parsers that read what other programs send or people
//! write: the socket protocol, PROPFIND answers, config files, remote URLs
//! and relative paths.
//!
//! Each target starts from real inputs (`tests/fuzz/seeds/NAME/`) and
//! mutates them; every case must finish without a panic and within a
//! memory budget linear in its input (the binary's allocator counts). A
//! plain `cargo test` runs a few thousand cases per target with a fixed
//! seed; `tests/fuzz/run.sh` runs millions. docs/fuzzing.md says how to
//! replay a failure and how to add a target: a file in `targets/` with a
//! `target()` that returns an [`engine::Target`], a seed folder, and a
//! `#[test]` below.

// Tests take locks with `lock().unwrap()`: a lock poisoned in a test is a
// failed test. The agent's own rule (`prism_sync::locks`) does not apply.
#![allow(clippy::disallowed_methods)]

mod alloc;
#[path = "../api_support/mod.rs"]
mod api_support;
mod engine;
mod mutate;
mod regressions;
mod targets {
    pub mod config;
    pub mod framing;
    pub mod propfind;
    pub mod rel_path;
    pub mod remote_url;
}

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

#[test]
fn fuzz_socket_framing_and_requests() {
    engine::fuzz(targets::framing::target());
}

#[test]
fn fuzz_propfind_answers() {
    engine::fuzz(targets::propfind::target());
}

#[test]
fn fuzz_config_files() {
    engine::fuzz(targets::config::target());
}

#[test]
fn fuzz_remote_urls() {
    engine::fuzz(targets::remote_url::target());
}

#[test]
fn fuzz_rel_paths() {
    engine::fuzz(targets::rel_path::target());
}
