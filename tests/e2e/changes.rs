//! `prism-syncctl changes`: the change log in the specification's 6.2
//! format, newest first, with its `--pair`, `--since` and `--path`
//! filters.

use std::thread::sleep;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::harness::*;

/// `(type, path)` of each change, in the order given.
fn entries(log: &Value) -> Vec<(String, String)> {
    log["changes"]
        .as_array()
        .expect("a changes array")
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_owned(),
                c["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect()
}

#[test]
fn changes_are_listed_in_the_spec_format_with_filters() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    write(&device.local, "docs/page.md", "v1\n");
    write(&device.local, "old_docs/obsolete.md", "old\n");
    device.once_expecting(0);
    // Change-log times have millisecond resolution: keep the two runs
    // apart so `--since` can split them.
    sleep(Duration::from_millis(20));
    let between = prism_sync::timefmt::rfc3339(SystemTime::now());
    sleep(Duration::from_millis(20));
    write(&device.local, "docs/page.md", "v2, longer\n");
    std::fs::remove_file(device.local.join("old_docs/obsolete.md")).unwrap();
    device.once_expecting(0);
    let _agent = device.start();

    let all = device.ctl_json(&["changes"]);
    for change in all["changes"].as_array().unwrap() {
        assert!(
            ["created", "modified", "deleted", "moved"].contains(&change["type"].as_str().unwrap()),
            "{change:#}"
        );
        let at = change["timestamp"].as_str().unwrap();
        assert!(prism_sync::timefmt::parse(at).is_some(), "{at} is RFC 3339");
    }
    let files: Vec<_> = entries(&all)
        .into_iter()
        .filter(|(_, p)| p.ends_with(".md"))
        .collect();
    assert_eq!(
        files,
        pairs(&[
            ("deleted", "old_docs/obsolete.md"),
            ("modified", "docs/page.md"),
            ("created", "old_docs/obsolete.md"),
            ("created", "docs/page.md"),
        ]),
        "newest first: {all:#}"
    );
    let stamps: Vec<&str> = all["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["timestamp"].as_str().unwrap())
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {stamps:?}"
    );

    assert_eq!(device.ctl_json(&["changes", "--pair", PAIR]), all);
    let unknown = device.ctl(&["--json", "changes", "--pair", "nope"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
    assert_eq!(json(&unknown)["error"]["code"], "404");

    let recent = device.ctl_json(&["changes", "--since", &between]);
    assert_eq!(
        entries(&recent),
        pairs(&[
            ("deleted", "old_docs/obsolete.md"),
            ("modified", "docs/page.md"),
        ]),
        "{recent:#}"
    );
    let docs = device.ctl_json(&["changes", "--path", "docs"]);
    assert_eq!(
        entries(&docs),
        pairs(&[
            ("modified", "docs/page.md"),
            ("created", "docs/page.md"),
            ("created", "docs"),
        ]),
        "{docs:#}"
    );
    let both = device.ctl_json(&[
        "changes", "--path", "docs", "--since", &between, "--pair", PAIR,
    ]);
    assert_eq!(entries(&both), pairs(&[("modified", "docs/page.md")]));
    let bad = device.ctl(&["--json", "changes", "--since", "last tuesday"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert_eq!(json(&bad)["error"]["code"], "400");
}
