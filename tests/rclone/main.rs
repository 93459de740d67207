//! The `rclone:NAME:PATH` remote end to end: real `prism-syncd --once`
//! agents (one per device, each with a home and state dir of its own)
//! syncing through rclone remotes defined in an rclone config file the
//! test writes: rclone's `local` backend over a temporary folder, its
//! `crypt` backend over that, its `webdav` backend on the loopback Apache
//! of the WebDAV tests, and its `s3` backend on the loopback moto of the
//! S3 tests (`moto_server` on `PATH`). rclone is
//! the real `rclone` on `PATH` (Debian bookworm's 1.60.1), and for one
//! test the current rclone named in `PRISM_TEST_RCLONE_CURRENT`; a missing
//! one fails the tests with a message saying what to install.

// Tests take locks with `lock().unwrap()`: a lock poisoned in a test is a
// failed test. The agent's own rule (`prism_sync::locks`) does not apply.
#![allow(clippy::disallowed_methods)]

#[allow(dead_code)]
#[path = "../support/apache.rs"]
mod apache;
#[allow(dead_code)]
#[path = "../support/files.rs"]
mod files;
#[allow(dead_code)]
#[path = "../support/moto.rs"]
mod moto;
#[path = "../support/ports.rs"]
mod ports;
#[path = "../support/processes.rs"]
mod processes;
#[path = "../support/rclone_current.rs"]
mod rclone_current;
#[allow(dead_code)]
#[path = "../support/shared_server.rs"]
mod shared_server;

mod agent;
mod running;
mod transfer;
