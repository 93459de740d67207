//! Prism Sync: a per-user agent that keeps local folders in two-way sync
//! with a remote, records every change in a SQLite journal, and answers a
//! control client over a local socket.
//!
//! `ARCHITECTURE.md` at the repository root is the map; each module opens
//! with a paragraph saying what it owns and what it deliberately does not do.

pub mod agent;
pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypt;
pub mod ctl;
pub mod engine;
pub mod faults;
pub mod fsops;
pub mod iobuf;
pub mod journal;
pub mod locks;
pub mod model;
pub mod parallel;
pub mod percent;
pub mod reconcile;
pub mod remote;
pub mod secrets;
pub mod service;
pub mod terminal;
pub mod timefmt;
pub mod tracker;
