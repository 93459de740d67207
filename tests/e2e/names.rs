//! Names a user (or anyone who can write into a synced folder) chooses to
//! attack whoever reads the output: escape sequences that clear the screen
//! or set the window title, and bidirectional overrides that reorder what
//! is shown. `prism-syncctl` prints them escaped; `--json` stays exact.

use std::fs;

use crate::harness::*;

/// Sets the window title, rings the bell and clears the screen.
const ESCAPES: &str = "evil\x1b]0;PWNED\x07\x1b[2Jname.txt";
/// Reads as `report-exe.txt` where the override is honoured.
const BIDI: &str = "report-\u{202e}txt.exe";

fn raw_terminal_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c))
        .collect()
}

#[test]
fn status_and_changes_escape_hostile_names_and_json_keeps_them_exact() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    write(&device.local, BIDI, "synced\n");
    fs::write(device.local.join(ESCAPES), "never synced\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", device.local.join("outlink")).unwrap();
    let _agent = device.start();
    wait_for_content(&remote.join(BIDI), "synced\n");
    wait_until(PATIENCE, "status shows the unsyncable name", || {
        let status = device.pair_status();
        let messages = status["problems"].to_string();
        if messages.contains("evil") && messages.contains("outlink") {
            Ok(())
        } else {
            Err(format!("{status:#}"))
        }
    });

    let status = device.ctl(&["status"]);
    let human = text(&status);
    assert!(status.status.success(), "{human}");
    assert!(raw_terminal_controls(&human).is_empty(), "{human:?}");
    assert!(
        human.contains("evil\\x1b]0;PWNED\\x07\\x1b[2Jname.txt is not synced"),
        "{human}"
    );
    assert!(
        human.contains("  problem: outlink: a symbolic link: links are not synced"),
        "a problem names its path once:\n{human}"
    );
    let json = device.ctl_json(&["status"]);
    let exact = json["pairs"][0]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["message"].as_str().unwrap().contains(ESCAPES));
    assert!(exact, "{json:#}");

    let changes = device.ctl(&["changes"]);
    let human = text(&changes);
    assert!(changes.status.success(), "{human}");
    assert!(raw_terminal_controls(&human).is_empty(), "{human:?}");
    assert!(human.contains("report-\\u{202e}txt.exe"), "{human}");
    let json = device.ctl_json(&["changes"]);
    assert_eq!(json["changes"][0]["path"], BIDI, "{json:#}");
}

#[test]
fn error_sentences_escape_the_names_they_quote() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    let _agent = device.start();
    let inside = device.local.join("sub\x1b[2J");
    let output = device.ctl(&[
        "pair",
        "add",
        "other",
        "--local",
        inside.to_str().unwrap(),
        "--remote",
        &format!("file://{}", sandbox.remote("elsewhere").display()),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let said = stderr(&output);
    assert!(raw_terminal_controls(&said).is_empty(), "{said:?}");
    assert!(said.contains("sub\\x1b[2J overlaps"), "{said}");
}
