//! SFTP tests: the SFTP remote against a real OpenSSH server started on
//! loopback for each test (see `sshd`). A missing sshd fails the tests with
//! a message saying what to install.

// Tests take locks with `lock().unwrap()`: a lock poisoned in a test is a
// failed test. The agent's own rule (`prism_sync::locks`) does not apply.
#![allow(clippy::disallowed_methods)]

#[path = "../support/crypt_names.rs"]
mod crypt_names;
#[path = "../support/files.rs"]
mod files;
#[path = "../support/ports.rs"]
mod ports;
#[path = "../support/processes.rs"]
mod processes;

mod agent;
mod daemon;
mod replica;
#[path = "../support/sshd.rs"]
mod sshd;

use std::process::Command;

use sshd::Sshd;

#[test]
fn the_harness_serves_ssh_to_its_own_key_and_stops_on_drop() {
    let mut server = Sshd::start();
    let known_hosts = server.scratch("client").join("known_hosts");
    server.write_known_hosts(&known_hosts);
    let ssh = |server: &Sshd| {
        Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .arg("-i")
            .arg(server.client_key())
            .args(["-p", &server.port().to_string()])
            .arg(format!("{}@127.0.0.1", server.user))
            .arg("echo ok")
            .output()
            .unwrap()
    };
    let out = ssh(&server);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    server.stop();
    assert!(!ssh(&server).status.success(), "a stopped server refuses");
    server.restart();
    assert!(
        ssh(&server).status.success(),
        "a restarted server serves again"
    );
}
