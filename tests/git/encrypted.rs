//! The encrypting layer over a git remote: the versions the repository
//! keeps come back decrypted. (Here, not beside the layer's unit tests:
//! the git processes it starts would inherit, between their fork and
//! exec, the locked partial downloads those tests continue.)

use std::io::Read;

use prism_sync::config::CryptSettings;
use prism_sync::crypt::{Keys, NameCipher, NameMode};
use prism_sync::fsops::Expect;
use prism_sync::model::{BaseTree, ContentHash, Entry, RelPath, Scope, SideEntry};
use prism_sync::remote::Replica;
use prism_sync::remote::crypt::CryptReplica;
use prism_sync::remote::git::{GitPairSettings, GitReplica};
use prism_sync::secrets::Secret;
use prism_sync::tracker::ignore::IgnoreRules;

fn rel(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn write(replica: &dyn Replica, path: &str, bytes: &[u8], expect: &Expect) -> SideEntry {
    replica
        .write(
            &rel(path),
            &mut &bytes[..],
            &ContentHash::of_bytes(bytes),
            1_700_000_000_000_000_000,
            None,
            expect,
        )
        .unwrap()
}

#[test]
fn kept_versions_of_an_encrypted_git_remote_come_back_decrypted_with_their_plain_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = crate::agent::Repo::new();
    let bare = repo.bare();
    let git = GitReplica::new(
        &format!("file://{}", bare.display()),
        dir.path().join("state/mirror.git"),
        GitPairSettings::default(),
        "alpha",
    );
    let remote = CryptReplica::with_password(
        Box::new(git),
        CryptSettings {
            filename_encryption: NameMode::Standard,
            directory_name_encryption: true,
        },
        Secret::new("secret".into()),
        None,
    );
    remote.mark_root().unwrap();
    let list = || {
        remote
            .list(
                &Scope::Full,
                &BaseTree::new(),
                &IgnoreRules::reserved_only(),
            )
            .unwrap()
    };
    list();
    let first = b"the first version\n".to_vec();
    // Past one chunk, so the kept version is read chunk by chunk.
    let second: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let written = write(&remote, "notes/a.md", &first, &Expect::Absent);
    remote.flush().unwrap();
    write(
        &remote,
        "notes/a.md",
        &second,
        &Expect::of_version(Some(&written.entry), written.version_text().as_deref()),
    );
    remote.flush().unwrap();

    let kept = remote.kept_versions(&rel("notes/a.md"), 10).unwrap();
    let summary: Vec<(u64, ContentHash)> = kept.iter().map(|k| (k.size, k.hash)).collect();
    assert_eq!(
        summary,
        [
            (second.len() as u64, ContentHash::of_bytes(&second)),
            (first.len() as u64, ContentHash::of_bytes(&first)),
        ]
    );
    for (version, bytes) in kept.iter().zip([&second, &first]) {
        let mut read = Vec::new();
        remote
            .open_kept(&rel("notes/a.md"), &version.version)
            .unwrap()
            .read_to_end(&mut read)
            .unwrap();
        assert!(&read == bytes, "{}", version.version);
    }
    // A path the remote keeps nothing of, and a version it does not keep,
    // told of by the plain name.
    assert!(
        remote
            .kept_versions(&rel("other.md"), 10)
            .unwrap()
            .is_empty()
    );
    let error = remote
        .open_kept(&rel("notes/a.md"), &"0".repeat(40))
        .err()
        .unwrap();
    let encrypted = NameCipher::new(&Keys::derive("secret", None), NameMode::Standard, true)
        .encrypt_file("notes/a.md")
        .unwrap();
    let encrypted_name = encrypted.rsplit('/').next().unwrap();
    assert!(!error.to_string().contains(encrypted_name), "{error}");
    // The current version is the newest kept one.
    let listing = list();
    assert!(matches!(listing.tree[&rel("notes/a.md")].entry,
        Entry::File(m) if m.hash == kept[0].hash && m.size == kept[0].size));
}

/// End to end: `history` lists the versions an encrypted git remote's
/// commits keep, and `restore` brings one back decrypted (checked against
/// the plaintext's hash the layer found).
#[test]
fn history_and_restore_read_an_encrypted_git_remotes_commits() {
    use std::os::unix::fs::PermissionsExt;

    use crate::agent::{Device, Repo, git};
    use crate::files::{put, tree};

    let repo = Repo::new();
    let alpha = Device::new("alpha", &repo.remote(), "encryption = \"crypt\"\n");
    // The password in the credentials file beside the config.
    let passwords = alpha.home.path().join("crypt-passwords");
    std::fs::write(&passwords, "p a git crypt password\n").unwrap();
    std::fs::set_permissions(&passwords, std::fs::Permissions::from_mode(0o600)).unwrap();
    put(&alpha.local, "a.md", "first\n");
    alpha.once();
    put(&alpha.local, "a.md", "second, longer\n");
    alpha.once();
    let bare = repo.bare();
    let files = git(&bare, &["ls-tree", "-r", "--name-only", "main"]);
    assert!(
        !files.contains("a.md"),
        "a plain name in the repository: {files}"
    );

    let _agent = alpha.start();
    let file = alpha.local.join("a.md");
    let history = alpha.ctl_json(&["history", file.to_str().unwrap()]);
    let kept: Vec<(String, u64)> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["where"] == "remote_history")
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_owned(),
                v["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kept.iter().map(|(_, size)| *size).collect::<Vec<_>>(),
        [15, 6],
        "each commit's version with its plain size: {history}"
    );
    let restored = alpha.ctl_json(&["restore", file.to_str().unwrap(), "--version", &kept[1].0]);
    assert_eq!(restored["status"], "restored", "{restored}");
    assert_eq!(tree(&alpha.local)["a.md"], "first\n");
}

/// The change marker an idle poll compares goes through the encrypting
/// layer: it is the one of the listing while the repository stays, and
/// another writer's commit (or record) moves it.
#[test]
fn an_encrypted_git_remotes_change_marker_is_the_listed_one_until_another_writer_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = crate::agent::Repo::new();
    let bare = repo.bare();
    let device = |name: &str| {
        let git = GitReplica::new(
            &format!("file://{}", bare.display()),
            dir.path().join(format!("{name}/mirror.git")),
            GitPairSettings::default(),
            name,
        );
        CryptReplica::with_password(
            Box::new(git),
            CryptSettings {
                filename_encryption: NameMode::Standard,
                directory_name_encryption: true,
            },
            Secret::new("secret".into()),
            None,
        )
    };
    let list = |remote: &CryptReplica| {
        remote
            .list(
                &Scope::Full,
                &BaseTree::new(),
                &IgnoreRules::reserved_only(),
            )
            .unwrap()
    };
    let (alpha, beta) = (device("alpha"), device("beta"));
    alpha.mark_root().unwrap();
    list(&alpha);
    write(&alpha, "a.md", b"a\n", &Expect::Absent);
    alpha.flush().unwrap();

    // As a sync looks: the root, then the listing.
    beta.root_state().unwrap();
    list(&beta);
    let listed = beta.listed_marker();
    assert!(listed.is_some());
    assert_eq!(beta.change_marker().unwrap(), listed);

    write(&alpha, "b.md", b"b\n", &Expect::Absent);
    alpha.flush().unwrap();
    assert_ne!(beta.change_marker().unwrap(), listed);
    beta.root_state().unwrap();
    list(&beta);
    assert_eq!(beta.change_marker().unwrap(), beta.listed_marker());
}
