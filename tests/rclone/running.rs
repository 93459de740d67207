//! A running agent (not `--once`) with rclone pairs: it syncs, and it
//! shows the weaker guarantee of an rclone remote where a person looks
//! (`prism-syncctl status` and `pair list`, in words and in JSON).

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::agent::Disk;
use crate::files::{put, text};

/// A running `prism-syncd` (not `--once`), stopped when dropped; the
/// rcd it may have started ends with it (its parent-death signal).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `prism-syncd` on `config` with its state and socket in `home`,
/// its log (at debug level) in `home/agent.log`, and waits until it
/// answers.
fn start(home: &Path, config: &Path) -> Running {
    let socket = home.join("s.sock");
    // The rcd's socket folder goes here: an agent killed outright (as
    // these are when dropped) leaves it behind.
    let runtime = home.join("run");
    fs::create_dir_all(&runtime).unwrap();
    let agent = Running(
        Command::new(env!("CARGO_BIN_EXE_prism-syncd"))
            .arg("--config")
            .arg(config)
            .arg("--state-dir")
            .arg(home.join("state"))
            .arg("--socket")
            .arg(&socket)
            .env("HOME", home)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("RUST_LOG", "debug")
            .env_remove("RCLONE_CONFIG")
            .env_remove("PRISM_SYNC_CONFIG")
            .env_remove("PRISM_SYNC_STATE_DIR")
            .env_remove("PRISM_SYNC_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(home.join("agent.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ctl(&socket, &["status"]).status.success() {
        assert!(Instant::now() < deadline, "the agent never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    agent
}

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prism-syncctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("PRISM_SYNC_SOCKET")
        .output()
        .unwrap()
}

fn ctl_text(socket: &Path, args: &[&str]) -> String {
    let out = ctl(socket, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_running_agent_syncs_through_an_rclone_remote_both_ways() {
    let disk = Disk::new();
    let home = tempfile::tempdir().unwrap();
    let local = home.path().join("local");
    put(&local, "a.md", "from the start\n");
    let config = home.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[agent]\ndevice = \"alpha\"\nremote_poll_secs = 1\n\
             [[pair]]\nname = \"drive\"\nlocal = \"{}\"\nremote = \"{}\"\nrclone_config = \"{}\"\n",
            local.display(),
            disk.remote(),
            disk.config().display(),
        ),
    )
    .unwrap();
    let _agent = start(home.path(), &config);
    let arrives = |dir: &Path, name: &str, content: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while fs::read_to_string(dir.join(name)).ok().as_deref() != Some(content) {
            assert!(
                Instant::now() < deadline,
                "{name} never reached {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    arrives(&disk.served(), "a.md", "from the start\n");
    put(&local, "b.md", "watched\n");
    arrives(&disk.served(), "b.md", "watched\n");
    put(&disk.served(), "c.md", "from elsewhere\n");
    arrives(&local, "c.md", "from elsewhere\n");
}

#[test]
fn a_connection_strings_secret_reaches_neither_config_nor_log_nor_status() {
    let disk = Disk::new();
    let home = tempfile::tempdir().unwrap();
    let local = home.path().join("local");
    put(&local, "a.md", "through a connection string\n");
    // Options and a quoted value with a ',' in it, of rclone's local
    // backend (`nounc` only matters on Windows).
    let remote = format!(
        "rclone::local,nounc=true,description='notes, local':{}",
        disk.served().display()
    );
    let config = home.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[agent]\ndevice = \"alpha\"\n\
             [[pair]]\nname = \"cs\"\nlocal = \"{}\"\nremote = \"{remote}\"\nrclone_config = \"{}\"\n",
            local.display(),
            disk.config().display(),
        ),
    )
    .unwrap();
    let _agent = start(home.path(), &config);
    let socket = home.path().join("s.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs::read_to_string(disk.served().join("a.md")).is_err() {
        assert!(Instant::now() < deadline, "a.md never reached the remote");
        std::thread::sleep(Duration::from_millis(100));
    }

    let secret = "hunter2-in-plain";
    for leaking in [
        format!("rclone::webdav,url='http://127.0.0.1:9/dav',pass={secret}:notes"),
        format!("rclone::webdav,url='http://me:{secret}@127.0.0.1:9/dav':notes"),
        format!("rclone:dav,bearer_token='{secret}':notes"),
    ] {
        let other = home.path().join("other");
        let args = [
            "pair",
            "add",
            "leak",
            "--local",
            other.to_str().unwrap(),
            "--remote",
            &leaking,
        ];
        let out = ctl(&socket, &args);
        assert!(!out.status.success(), "{leaking} was added");
        let said = text(&out);
        assert!(
            said.contains("plain text") && !said.contains(secret),
            "{said}"
        );
    }
    for command in ["status", "pair list"] {
        for json in [false, true] {
            let mut args = if json { vec!["--json"] } else { vec![] };
            args.extend(command.split(' '));
            let shown = ctl_text(&socket, &args);
            assert!(!shown.contains(secret), "{command}: {shown}");
            assert!(!shown.contains("leak"), "{command}: {shown}");
            // The pair's own string shows as the user wrote it.
            assert!(
                command == "status" || shown.contains("description='notes, local'"),
                "{command}: {shown}"
            );
        }
    }
    let written = fs::read_to_string(&config).unwrap();
    assert!(!written.contains(secret) && !written.contains("leak"));
    let log = fs::read_to_string(home.path().join("agent.log")).unwrap();
    assert!(log.contains("rclone rcd is listening"), "{log}");
    assert!(!log.contains(secret), "{log}");
}

#[test]
fn status_and_pair_list_say_which_pairs_only_recheck_their_writes() {
    let disk = Disk::new();
    let home = tempfile::tempdir().unwrap();
    let (drive, plain, plain_remote) = (
        home.path().join("drive"),
        home.path().join("plain"),
        home.path().join("plain-remote"),
    );
    for dir in [&drive, &plain, &plain_remote] {
        fs::create_dir_all(dir).unwrap();
    }
    let config = home.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[agent]\ndevice = \"alpha\"\n\
             [[pair]]\nname = \"drive\"\nlocal = \"{}\"\nremote = \"{}\"\nrclone_config = \"{}\"\n\
             [[pair]]\nname = \"plain\"\nlocal = \"{}\"\nremote = \"file://{}\"\n",
            drive.display(),
            disk.remote(),
            disk.config().display(),
            plain.display(),
            plain_remote.display(),
        ),
    )
    .unwrap();
    let _agent = start(home.path(), &config);
    let socket = home.path().join("s.sock");

    let guarantees = |json: &serde_json::Value| -> Vec<(String, String)> {
        json["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["write_guarantee"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let expected = [
        ("drive".to_owned(), "rechecked".to_owned()),
        ("plain".to_owned(), "conditional".to_owned()),
    ];
    for command in ["status", "pair list"] {
        let mut args = vec!["--json"];
        args.extend(command.split(' '));
        let json: serde_json::Value = serde_json::from_str(&ctl_text(&socket, &args)).unwrap();
        assert_eq!(guarantees(&json), expected, "{command}: {json}");

        let words = ctl_text(&socket, &command.split(' ').collect::<Vec<_>>());
        assert!(
            words.contains("\ndrive:\n  writes: re-checked, not conditional (rclone)"),
            "{command}:\n{words}"
        );
        assert_eq!(
            words.matches("re-checked").count(),
            1,
            "{command}:\n{words}"
        );
    }
}

#[test]
fn status_says_which_rclone_runs_and_where_its_rcd_listens() {
    let (old, new) = (Disk::new(), Disk::new());
    let home = tempfile::tempdir().unwrap();
    let current = crate::rclone_current::current_rclone();
    let config = home.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[agent]\ndevice = \"alpha\"\n\
             [[pair]]\nname = \"old\"\nlocal = \"{}\"\nremote = \"{}\"\nrclone_config = \"{}\"\n\
             [[pair]]\nname = \"new\"\nlocal = \"{}\"\nremote = \"{}\"\nrclone_config = \"{}\"\n\
             rclone_binary = \"{}\"\n",
            home.path().join("old").display(),
            old.remote(),
            old.config().display(),
            home.path().join("new").display(),
            new.remote(),
            new.config().display(),
            current.display(),
        ),
    )
    .unwrap();
    for dir in ["old", "new"] {
        put(&home.path().join(dir), "a.md", "a\n");
    }
    let _agent = start(home.path(), &config);
    let socket = home.path().join("s.sock");

    // The rcds start with the pairs' first syncs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let transports = loop {
        let json: serde_json::Value =
            serde_json::from_str(&ctl_text(&socket, &["--json", "status"])).unwrap();
        let transports: Vec<(String, String)> = json["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| {
                Some((
                    p["name"].as_str()?.to_owned(),
                    p["remote_transport"].as_str()?.to_owned(),
                ))
            })
            .collect();
        if transports.len() == 2 {
            break transports;
        }
        assert!(Instant::now() < deadline, "no rcd runs: {json}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let of = |name: &str| &transports.iter().find(|(n, _)| n == name).unwrap().1;
    assert!(
        of("old").starts_with("rclone v1.60.") && of("old").contains(", rcd on tcp 127.0.0.1:"),
        "{transports:?}"
    );
    let on_socket = format!(
        "rclone v{}, rcd on unix socket ",
        crate::rclone_current::VERSION
    );
    assert!(
        of("new").starts_with(&on_socket) && of("new").ends_with("/rc.sock"),
        "{transports:?}"
    );
    let words = ctl_text(&socket, &["status"]);
    assert!(
        words.contains(&format!("  transport: {on_socket}")),
        "{words}"
    );
}
