//! The git remote over SSH, through the loopback OpenSSH server of the
//! SFTP tests: one device reaches it through a host alias of its own ssh
//! config (named by `core.sshCommand` in its git config, as a person sets
//! it up), the other through `GIT_SSH_COMMAND` with the test key and
//! known_hosts. Both converge; nothing of Prism Sync knows about keys.

use std::fs;

use crate::agent::{Device, git};
use crate::files::{put, tree};
use crate::sshd::Sshd;

#[test]
fn two_devices_converge_over_ssh_with_their_own_ssh_setups() {
    let server = Sshd::start();
    let bare = server.served().join("notes.git");
    git(
        &server.served(),
        &["init", "--bare", "-q", "-b", "main", "notes.git"],
    );
    let known_hosts = server.scratch("client").join("known_hosts");
    server.write_known_hosts(&known_hosts);
    let key = server.client_key();

    // Alpha: a host alias in an ssh config, which its git config uses.
    let alpha = Device::new("alpha", &format!("git+notes-server:{}", bare.display()), "");
    let ssh_config = alpha.home.path().join("ssh_config");
    fs::write(
        &ssh_config,
        format!(
            "Host notes-server\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  \
             IdentitiesOnly yes\n  UserKnownHostsFile {}\n  BatchMode yes\n",
            server.port(),
            server.user,
            key.display(),
            known_hosts.display()
        ),
    )
    .unwrap();
    fs::write(
        alpha.home.path().join(".gitconfig"),
        format!("[core]\n\tsshCommand = ssh -F {}\n", ssh_config.display()),
    )
    .unwrap();

    // Beta: an ssh:// URL and GIT_SSH_COMMAND.
    let beta = Device::new(
        "beta",
        &format!(
            "git+ssh://{}@127.0.0.1:{}{}",
            server.user,
            server.port(),
            bare.display()
        ),
        "",
    );
    let beta_ssh = format!(
        "ssh -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o BatchMode=yes",
        key.display(),
        known_hosts.display()
    );
    let beta_once = || {
        let out = beta
            .command()
            .env("GIT_SSH_COMMAND", &beta_ssh)
            .output()
            .unwrap();
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "{}",
            crate::files::text(&out)
        );
    };

    put(&alpha.local, "a.md", "alpha\n");
    alpha.once();
    put(&beta.local, "b.md", "beta\n");
    beta_once();
    alpha.once();
    assert_eq!(tree(&alpha.local), tree(&beta.local));
    assert_eq!(
        tree(&alpha.local).keys().collect::<Vec<_>>(),
        ["a.md", "b.md"]
    );
    assert_eq!(git(&bare, &["log", "--format=%an", "main"]), "beta\nalpha");
}
