//! Config files (`Config::parse`), from the README's examples and configs
//! for each kind of remote.
//!
//! Properties: no panic; every error names the file; an accepted config
//! keeps its promises (valid unique names, absolute folders that do not
//! nest, values in their documented ranges); memory linear in the input.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use prism_sync::config::{Config, ConfigError};
use prism_sync::remote::sftp::url::SshSettings;
use prism_sync::remote::webdav::url::WebdavSettings;

use crate::engine::{Target, label, seeds, words};

const FILE: &str = "/etc/prism/config.toml";

const DICTIONARY: &[&[u8]] = &[
    b"[agent]\n",
    b"[[pair]]\n",
    b"[pair]\n",
    b"name = \"n\"\n",
    b"local = \"/a\"\n",
    b"remote = \"file:///b\"\n",
    b"remote = \"sftp://me@nas:22/x\"\n",
    b"remote = \"webdavs://cloud/dav\"\n",
    b"conflict = \"auto_merge\"\n",
    b"ignore = []\n",
    b"device = ",
    b"debounce_ms = ",
    b"remote_poll_secs = ",
    b"parallel_transfers = ",
    b"safety_scan_secs = ",
    b"trash_retention_days = ",
    b"timeout_secs = ",
    b"username = ",
    b"compression = true\n",
    b"allow_insecure_http_auth = true\n",
    b"known_hosts = \"~/.ssh/known_hosts\"\n",
    b"ca_file = \"/ca.pem\"\n",
    b"\"\"\"",
    b"'''",
    b"\\u0000",
    b"\\U0010FFFF",
    b"\\uD800",
    b"\\",
    b"[",
    b"]",
    b"{",
    b"}",
    b"{ a = [",
    b"= ",
    b"\n",
    b"#",
    b"1979-05-27T07:32:00Z",
    b"a.b.c = 1\n",
    b"~/",
    b"../",
];

pub fn target() -> Target {
    Target {
        name: "config",
        seeds: seeds("config"),
        dictionary: DICTIONARY,
        max_len: 64 * 1024,
        // The toml crate keeps a token (and, past an error, a record) for
        // every punctuation byte: measured at up to about 240 bytes per byte,
        // linear but not small (so `Config::load` reads at most 1 MiB).
        memory_budget: |len| 256 * len + 256 * 1024,
        run,
    }
}

fn run(input: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(input);
    match Config::parse(&text, Path::new(FILE)) {
        Ok(config) => {
            check(&config);
            label((
                "ok",
                config.pairs.len().min(3),
                config
                    .pairs
                    .iter()
                    .map(|p| p.remote.scheme())
                    .collect::<BTreeSet<_>>(),
            ))
        }
        Err(err) => {
            let message = err.to_string();
            assert!(
                message.starts_with(FILE),
                "{message:?} does not name the file"
            );
            match err {
                ConfigError::Invalid { key, message, .. } => {
                    let key: String = key.chars().filter(|c| !c.is_ascii_digit()).collect();
                    label(("invalid", key, words(&message, input, 6)))
                }
                ConfigError::Syntax { message, .. } => {
                    // The lines that say what is wrong; the others (indented
                    // or numbered) quote the input.
                    let said: Vec<&str> = message
                        .lines()
                        .filter(|line| !line.starts_with(|c: char| c.is_ascii_digit() || c == ' '))
                        .skip(1)
                        .collect();
                    label(("syntax", words(&said.join(" "), input, 6)))
                }
                other => panic!("parsing text gave {other:?}"),
            }
        }
    }
}

fn check(config: &Config) {
    let agent = &config.agent;
    assert!(!agent.device.trim().is_empty());
    assert!(agent.debounce.as_millis() <= 60_000);
    assert!(!agent.remote_poll.is_zero() && !agent.safety_scan.is_zero());
    assert!((1..=64).contains(&agent.parallel_transfers));
    // What the agent does with its intervals: adds them, jittered by up to
    // 10 %, to the clock.
    for interval in [agent.remote_poll, agent.safety_scan, agent.debounce] {
        assert!(Instant::now().checked_add(interval.mul_f64(1.1)).is_some());
    }
    assert!(agent.trash_retention.as_secs() / (24 * 3600) <= 36_500);
    let mut names = BTreeSet::new();
    for (i, pair) in config.pairs.iter().enumerate() {
        assert!(
            !pair.name.is_empty()
                && pair
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{:?}",
            pair.name
        );
        assert!(names.insert(&pair.name), "two pairs named {:?}", pair.name);
        assert!(pair.local.is_absolute(), "{:?}", pair.local);
        for other in &config.pairs[..i] {
            assert!(
                !pair.local.starts_with(&other.local) && !other.local.starts_with(&pair.local),
                "{:?} and {:?} nest",
                pair.local,
                other.local
            );
        }
        let ssh = pair
            .remote
            .settings::<SshSettings>()
            .cloned()
            .unwrap_or_default();
        let webdav = pair
            .remote
            .settings::<WebdavSettings>()
            .cloned()
            .unwrap_or_default();
        if let Some(timeout) = webdav.timeout {
            assert!((1..=3600).contains(&timeout.as_secs()));
        }
        for path in [&ssh.known_hosts, &ssh.identity_file, &webdav.ca_file]
            .into_iter()
            .flatten()
        {
            assert!(path.is_absolute(), "{path:?}");
        }
    }
}
