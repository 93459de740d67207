//! The rclone backend against the real `rclone` binary (on `PATH`).

use std::time::{Duration, Instant};

use super::daemon::{Rcd, RcdSpec};
use super::rc::RcClient;

/// An rclone that reads no user config.
fn spec(dir: &std::path::Path) -> RcdSpec {
    let config = dir.join("rclone.conf");
    std::fs::write(&config, "").unwrap();
    RcdSpec {
        binary: "rclone".into(),
        config: Some(config),
    }
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid as libc::pid_t, 0) == 0 };
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_rcd_starts_lazily_answers_is_restarted_when_killed_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let rcd = std::sync::Arc::new(Rcd::new(spec(dir.path())));
    assert_eq!(rcd.pid(), None, "nothing runs before the first call");
    let client = RcClient::new(rcd.clone()).unwrap();
    let version = client.version().unwrap();
    assert!(
        version.major >= 1 && version.text.starts_with('v'),
        "{version:?}"
    );
    let first = rcd.pid().expect("the first call started it");
    assert!(alive(first));

    // Killed behind our back: the next call starts another one.
    // SAFETY: the process this test's rcd started.
    unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) };
    wait_until("the killed rcd is gone", || rcd.pid() != Some(first));
    let answer = client
        .call("rc/noop", &serde_json::json!({"echo": "again"}))
        .unwrap();
    assert_eq!(answer["echo"], "again");
    let second = rcd.pid().expect("restarted");
    assert_ne!(first, second);

    // Another login is refused: the rcd's password is its own.
    let endpoint = rcd.endpoint().unwrap();
    let refused = reqwest::blocking::Client::new()
        .post(format!("{}rc/noop", endpoint.url))
        .basic_auth(&endpoint.user, Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    // And it is not on the command line, which every user can read.
    let cmdline = std::fs::read(format!("/proc/{second}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(endpoint.pass.expose()),
        "the password is on rclone's command line"
    );

    rcd.stop();
    assert_eq!(rcd.pid(), None);
    wait_until("the stopped rcd is gone", || !alive(second));
    drop(client);
    drop(rcd);
}

#[test]
fn a_missing_binary_says_how_to_install_rclone() {
    let rcd = std::sync::Arc::new(Rcd::new(RcdSpec {
        binary: "/nonexistent/rclone".into(),
        config: None,
    }));
    let client = RcClient::new(rcd).unwrap();
    let message = client.version().unwrap_err().to_string();
    assert!(message.contains("install"), "{message}");
}

#[test]
fn replicas_of_one_rclone_share_its_process() {
    let dir = tempfile::tempdir().unwrap();
    let a = Rcd::shared(spec(dir.path()));
    let b = Rcd::shared(spec(dir.path()));
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    let other = tempfile::tempdir().unwrap();
    assert!(!std::sync::Arc::ptr_eq(
        &a,
        &Rcd::shared(spec(other.path()))
    ));
}
