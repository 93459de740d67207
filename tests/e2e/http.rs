//! The HTTP API of the real agent: `[api]` in the config, tokens issued and
//! revoked with the real `prism-syncctl`, requests from a real HTTP client
//! over loopback HTTP and over HTTPS with a certificate from a CA the test
//! makes, and the configurations the agent must refuse to start with.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::*;
use crate::ports::free_port;

/// Appends an `[api]` table to the device's config file.
fn enable_api(device: &Device, table: &str) {
    let mut text = fs::read_to_string(&device.config).unwrap();
    text.push_str("\n[api]\n");
    text.push_str(table);
    fs::write(&device.config, text).unwrap();
}

/// `prism-syncctl token issue ARGS…`: the token alone on stdout.
fn issue(device: &Device, args: &[&str]) -> String {
    let mut all = vec!["token", "issue"];
    all.extend_from_slice(args);
    let output = device.ctl(&all);
    assert!(output.status.success(), "{}", text(&output));
    let token = String::from_utf8(output.stdout).unwrap();
    assert_eq!(token.lines().count(), 1, "only the token: {token}");
    token.trim().to_owned()
}

/// Sends a request; returns the status and the JSON body.
fn send(
    client: &reqwest::blocking::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().expect("the agent answers over HTTP");
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

#[test]
fn the_http_api_serves_a_token_and_records_who_started_a_sync() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("a", &remote);
    let port = free_port();
    enable_api(&device, &format!("listen = \"127.0.0.1:{port}\"\n"));
    let _agent = device.start();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();

    let (status, body) = send(&client, "GET", &format!("{base}/status"), None, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "401");

    let token = issue(&device, &["--role", "operator", "--name", "ci"]);
    let viewer = device.ctl_json(&["token", "issue", "--role", "viewer", "--ttl", "1h"]);
    assert_eq!(viewer["role"], "viewer");
    assert_eq!(viewer["pairs"], json!([]));
    for key in ["token", "id", "role", "pairs", "expires_at", "name"] {
        assert!(viewer.get(key).is_some(), "{key} in {viewer}");
    }

    let (status, body) = send(
        &client,
        "GET",
        &format!("{base}/status"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pairs"][0]["name"], PAIR);

    write(&device.local, "a.txt", "over http");
    let (status, started) = send(
        &client,
        "POST",
        &format!("{base}/sync/start"),
        Some(&token),
        Some(json!({"pair": PAIR})),
    );
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["status"], "sync_in_progress");
    let sync_id = started["sync_id"].as_str().unwrap().to_owned();
    let (status, run) = send(
        &client,
        "GET",
        &format!("{base}/sync/status/{sync_id}"),
        viewer["token"].as_str(),
        None,
    );
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["sync_id"], sync_id.as_str());

    // A viewer may not start syncs.
    let (status, body) = send(
        &client,
        "POST",
        &format!("{base}/sync/start"),
        viewer["token"].as_str(),
        None,
    );
    assert_eq!(status, 403, "{body}");

    // The journal says which token started the run; `token list` never
    // shows a token again.
    let list = device.ctl_json(&["token", "list"]);
    let ci = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .unwrap()
        .clone();
    let started_by = device.sql(&format!(
        "SELECT started_by FROM syncs WHERE id = '{sync_id}'"
    ));
    assert_eq!(started_by.trim(), ci["id"].as_str().unwrap());
    let listed = device.ctl(&["token", "list"]);
    assert!(!text(&listed).contains(&token));
    assert!(!list.to_string().contains(&token));
    assert!(!fs::read_to_string(&device.log).unwrap().contains(&token));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = device.state.join("api-token.key");
        let mode = fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the signing key is the owner's only");
    }

    let revoked = device.ctl_json(&["token", "revoke", ci["id"].as_str().unwrap()]);
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let (status, body) = send(
        &client,
        "GET",
        &format!("{base}/status"),
        Some(&token),
        None,
    );
    assert_eq!(status, 401, "a revoked token: {body}");
    assert!(
        body["error"]["details"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with openssl.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is missing: install the openssl package");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=Prism Test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&csr);
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

#[test]
fn the_http_api_speaks_tls_with_the_configured_certificate() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("a", &remote);
    let certs = sandbox.path("certs");
    fs::create_dir_all(&certs).unwrap();
    make_certificates(&certs);
    let port = free_port();
    enable_api(
        &device,
        &format!(
            "listen = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            certs.join("server.crt").display(),
            certs.join("server.key").display()
        ),
    );
    let _agent = device.start();
    let token = issue(&device, &["--role", "viewer"]);

    let ca = reqwest::Certificate::from_pem(&fs::read(certs.join("ca.crt")).unwrap()).unwrap();
    let trusting = reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/status");
    let (status, body) = send(&trusting, "GET", &url, Some(&token), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pairs"][0]["name"], PAIR);
    let (status, body) = send(&trusting, "GET", &url, None, None);
    assert_eq!(status, 401, "{body}");

    // A client that does not trust the test CA, and plain HTTP on the TLS
    // port, get nothing.
    let stranger = reqwest::blocking::Client::new();
    assert!(stranger.get(&url).bearer_auth(&token).send().is_err());
    let plain = stranger
        .get(format!("http://127.0.0.1:{port}/status"))
        .bearer_auth(&token)
        .send();
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "plain HTTP on the TLS port must not be answered"
    );
}

#[test]
fn the_agent_refuses_to_start_an_api_other_machines_reach_without_tls() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    for (name, table, key) in [
        ("open", "listen = \"0.0.0.0:8384\"\n", "api.listen"),
        (
            "nocert",
            "listen = \"127.0.0.1:8384\"\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"\n",
            "api.tls_cert",
        ),
        (
            "relative_root",
            "listen = \"127.0.0.1:8384\"\npair_roots = [\"shared\"]\n",
            "api.pair_roots",
        ),
        (
            "remote_with_password",
            "listen = \"127.0.0.1:8384\"\npair_roots = [\"/srv\"]\npair_remotes = [\"sftp://me:hunter2@nas/x\"]\n",
            "api.pair_remotes[0]",
        ),
    ] {
        let device = sandbox.device(name, &remote);
        enable_api(&device, table);
        let output = device.syncd().output().unwrap();
        assert_eq!(output.status.code(), Some(78), "{name}: {}", text(&output));
        assert!(stderr(&output).contains(key), "{name}: {}", stderr(&output));
        assert!(
            !text(&output).contains("hunter2"),
            "{name}: {}",
            text(&output)
        );
    }
}

/// Reads server-sent events from `reader` until one of type `until`;
/// returns each event's `(id, type, data)`.
fn read_events(reader: &mut impl std::io::BufRead, until: &str) -> Vec<(u64, String, Value)> {
    let mut events = Vec::new();
    let (mut id, mut kind) = (0, String::new());
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("the stream stays open");
        assert!(n > 0, "the stream ended; events so far: {events:?}");
        let line = line.trim_end();
        if let Some(value) = line.strip_prefix("id:") {
            id = value.trim().parse().unwrap();
        } else if let Some(value) = line.strip_prefix("event:") {
            kind = value.trim().to_owned();
        } else if let Some(value) = line.strip_prefix("data:") {
            let data: Value = serde_json::from_str(value.trim()).unwrap();
            events.push((id, kind.clone(), data));
            if kind == until {
                return events;
            }
        }
    }
}

#[test]
fn the_event_stream_shows_a_sync_over_http_and_resumes_after_the_last_id() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("a", &remote);
    let port = free_port();
    enable_api(&device, &format!("listen = \"127.0.0.1:{port}\"\n"));
    let _agent = device.start();
    let token = issue(&device, &["--role", "viewer"]);
    let client = reqwest::blocking::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/events");
    let response = client.get(&url).bearer_auth(&token).send().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut stream = std::io::BufReader::new(response);
    // Let the agent take its first look before anything changes.
    std::thread::sleep(std::time::Duration::from_millis(600));
    write(&device.local, "a.txt", "seen by the stream");
    let started = device.ctl_json(&["sync", "start", PAIR]);
    let sync_id = started["sync_id"].as_str().unwrap();

    let events = read_events(&mut stream, "sync_finished");
    let finished = events.last().unwrap();
    assert_eq!(finished.2["type"], "sync_finished", "{events:?}");
    assert_eq!(finished.2["pair"], PAIR);
    let ids: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids count up by one: {ids:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.1 == "sync_finished" && e.2["data"]["sync_id"].is_string()),
        "{events:?}"
    );
    // The watcher may have synced the file before the requested run did,
    // and two runs may finish between two looks: the run is one of them.
    assert!(
        finished.2["data"]["counts"]["uploaded"].is_u64(),
        "{events:?}"
    );
    assert!(
        finished.2["data"]["sync_id"] == sync_id || events.iter().any(|e| e.1 == "sync_started"),
        "{events:?}"
    );

    // A client that reconnects with the first id it saw gets the rest.
    let resumed = client
        .get(&url)
        .bearer_auth(&token)
        .header("Last-Event-ID", ids[0].to_string())
        .send()
        .unwrap();
    let again = read_events(&mut std::io::BufReader::new(resumed), "sync_finished");
    assert_eq!(again.first().unwrap().0, ids[0] + 1, "{again:?}");

    // Without a token there is no stream.
    let refused = client.get(&url).send().unwrap();
    assert_eq!(refused.status().as_u16(), 401);
}

/// Reads a server-sent event stream until the agent ends it; returns its
/// lines. A stream still open after the client's timeout fails the test.
fn read_to_end(reader: &mut impl std::io::BufRead) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return lines,
            Ok(_) => lines.push(line.trim_end().to_owned()),
            Err(err) => panic!("the stream stayed open ({err}); lines so far: {lines:?}"),
        }
    }
}

#[test]
fn an_event_stream_ends_once_its_token_is_revoked_or_has_expired() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("a", &remote);
    let port = free_port();
    enable_api(&device, &format!("listen = \"127.0.0.1:{port}\"\n"));
    let _agent = device.start();
    let revoked = device.ctl_json(&["token", "issue", "--role", "viewer"]);
    let expiring = issue(&device, &["--role", "viewer", "--ttl", "3s"]);
    let client = reqwest::blocking::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/events");
    let open = |token: &str| {
        let response = client.get(&url).bearer_auth(token).send().unwrap();
        assert_eq!(response.status().as_u16(), 200);
        std::io::BufReader::new(response)
    };
    let mut revoked_stream = open(revoked["token"].as_str().unwrap());
    let mut expiring_stream = open(&expiring);

    device.ctl_json(&["token", "revoke", revoked["id"].as_str().unwrap()]);
    write(&device.local, "a.txt", "not for a revoked token");
    device.ctl_json(&["sync", "start", PAIR]);
    let shown = read_to_end(&mut revoked_stream);
    assert!(
        shown.iter().all(|line| !line.starts_with("data:")),
        "a revoked token's stream shows nothing more: {shown:?}"
    );
    // The other token saw the sync, and its stream ends after its expiry
    // (within a check's interval), as any request of it would be refused.
    read_to_end(&mut expiring_stream);
    let (status, _) = send(
        &client,
        "GET",
        &format!("http://127.0.0.1:{port}/status"),
        Some(&expiring),
        None,
    );
    assert_eq!(status, 401);
}

#[test]
fn prism_syncctl_events_prints_the_stream_over_the_socket() {
    use std::io::BufRead;
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("a", &remote);
    let _agent = device.start();
    let mut follower = Command::new(env!("CARGO_BIN_EXE_prism-syncctl"))
        .arg("--socket")
        .arg(&device.socket)
        .args(["--json", "events"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(600));
    write(&device.local, "b.txt", "seen by prism-syncctl events");
    device.ctl_json(&["sync", "start", PAIR]);
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &Value| e["type"] == "sync_finished") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no sync_finished event; saw {seen:?}"));
        seen.push(serde_json::from_str(&line).unwrap());
    }
    follower.kill().unwrap();
    follower.wait().unwrap();
    assert!(seen.iter().all(|e| e["pair"] == PAIR), "{seen:?}");
}

#[test]
fn the_token_that_restores_a_version_is_recorded_with_it() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("a", &remote);
    write(&device.local, "notes.txt", "first\n");
    device.once_expecting(0);
    // The remote's edit replaces the local file: "first" goes to the trash.
    write(&remote, "notes.txt", "second\n");
    device.once_expecting(0);
    let port = free_port();
    enable_api(&device, &format!("listen = \"127.0.0.1:{port}\"\n"));
    let _agent = device.start();
    let operator = device.ctl_json(&["token", "issue", "--role", "operator"]);
    let client = reqwest::blocking::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let history = |token: &str| {
        let (status, history) = send(
            &client,
            "GET",
            &format!("{base}/history?pair={PAIR}&path=notes.txt"),
            Some(token),
            None,
        );
        assert_eq!(status, 200, "{history}");
        history
    };
    let token = operator["token"].as_str().unwrap();
    let first = history(token)["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["where"] == "local_trash")
        .expect("the first version in the local trash")["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, restored) = send(
        &client,
        "POST",
        &format!("{base}/restore"),
        Some(token),
        Some(json!({"pair": PAIR, "path": "notes.txt", "version": first})),
    );
    assert_eq!(status, 200, "{restored}");
    assert_eq!(read(&device.local, "notes.txt"), "first\n");
    let recorded = device.sql(&format!(
        "SELECT restored_by, restored_at IS NOT NULL FROM trashed_versions WHERE id = {first}"
    ));
    assert_eq!(
        recorded.trim(),
        format!("{}|1", operator["id"].as_str().unwrap())
    );

    // Restored over the socket, the owner is recorded as no token.
    let second = history(token)["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["where"] == "local_trash" && v["version"] != first.as_str())
        .expect("the second version in the local trash")["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = device.ctl_json(&["restore", "notes.txt", "--pair", PAIR, "--version", &second]);
    assert_eq!(answer["status"], "restored", "{answer}");
    let recorded = device.sql(&format!(
        "SELECT coalesce(restored_by, 'none'), restored_at IS NOT NULL \
         FROM trashed_versions WHERE id = {second}"
    ));
    assert_eq!(recorded.trim(), "none|1");
}

#[test]
fn a_token_limited_to_a_pair_cannot_tell_from_history_what_other_pairs_there_are() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("a", &remote);
    write(&device.local, "notes.txt", "mine\n");
    device.once_expecting(0);
    let port = free_port();
    enable_api(&device, &format!("listen = \"127.0.0.1:{port}\"\n"));
    let _agent = device.start();
    let token = issue(&device, &["--role", "viewer", "--pair", PAIR]);
    let client = reqwest::blocking::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let other_folder = sandbox.path("other");
    fs::create_dir_all(&other_folder).unwrap();
    write(&other_folder, "theirs.txt", "hidden\n");
    let hidden_file = other_folder.join("theirs.txt");
    let outside = sandbox.path("nowhere/file.txt");
    let ask = |path: &str| {
        send(
            &client,
            "GET",
            &format!("{base}/history?path={path}"),
            Some(&token),
            None,
        )
    };
    // The same questions before and after another pair is added.
    let answers = || {
        [
            "notes.txt",
            hidden_file.to_str().unwrap(),
            outside.to_str().unwrap(),
        ]
        .map(|path| {
            let (status, body) = ask(path);
            let said = if status == 200 {
                body["pair"].to_string()
            } else {
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .replace(path, "PATH")
            };
            (status, said)
        })
    };
    let alone = answers();
    assert_eq!(alone[0].0, 200, "a relative path is in the token's pair");
    assert_eq!(alone[1], alone[2], "a folder of no pair");
    let added = device.ctl(&[
        "pair",
        "add",
        "other",
        "--local",
        other_folder.to_str().unwrap(),
        "--remote",
        &format!("file://{}", sandbox.remote("elsewhere").display()),
    ]);
    assert!(added.status.success(), "{}", text(&added));
    assert_eq!(answers(), alone, "the other pair shows in no answer");
}

#[test]
fn an_admin_token_adds_a_pair_inside_the_pair_roots_and_it_syncs() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("a", &remote);
    let shared = sandbox.remote("shared");
    let outside = sandbox.remote("outside");
    std::os::unix::fs::symlink(&outside, shared.join("escape")).unwrap();
    // The device's own folder (config, state dir, socket) is a root too:
    // the agent's files stay off limits inside it.
    let port = free_port();
    enable_api(
        &device,
        &format!(
            "listen = \"127.0.0.1:{port}\"\npair_roots = [{:?}, {:?}]\n",
            shared.display().to_string(),
            device.local.parent().unwrap().display().to_string()
        ),
    );
    let _agent = device.start();
    let url = format!("http://127.0.0.1:{port}/pairs");
    let client = reqwest::blocking::Client::new();
    let admin = issue(&device, &["--role", "admin"]);
    let operator = issue(&device, &["--role", "operator"]);
    let limited_admin = issue(&device, &["--role", "admin", "--pair", PAIR]);
    let config_before = fs::read_to_string(&device.config).unwrap();
    let pair = |local: &Path, remote: &str| json!({"name": "music", "local": local.display().to_string(), "remote": remote});
    let file_remote = format!("file://{}", shared.join("music-remote").display());

    for (context, token, body, says) in [
        (
            "an operator",
            &operator,
            pair(&shared.join("music"), &file_remote),
            "admin token valid for every pair",
        ),
        (
            "an admin of one pair",
            &limited_admin,
            pair(&shared.join("music"), &file_remote),
            "admin token valid for every pair",
        ),
        (
            "a folder outside the roots",
            &admin,
            pair(&outside.join("music"), &file_remote),
            "not inside any folder of api.pair_roots",
        ),
        (
            "a symbolic link out of the roots",
            &admin,
            pair(&shared.join("escape/music"), &file_remote),
            "symbolic link",
        ),
        (
            "the agent's state dir",
            &admin,
            pair(&device.state.join("music"), &file_remote),
            "the agent's own files",
        ),
        (
            "a file remote outside the roots",
            &admin,
            pair(
                &shared.join("music"),
                &format!("file://{}", outside.join("m").display()),
            ),
            "the remote's folder",
        ),
        (
            "an rclone remote",
            &admin,
            pair(&shared.join("music"), "rclone::local:/tmp"),
            "local socket",
        ),
        (
            "a network remote, with no api.pair_remotes",
            &admin,
            pair(&shared.join("music"), "sftp://localhost/home/me/.ssh"),
            "api.pair_remotes",
        ),
    ] {
        let (status, body) = send(&client, "POST", &url, Some(token), Some(body));
        assert_eq!(status, 403, "{context}: {body}");
        let details = body["error"]["details"].as_str().unwrap();
        assert!(details.contains(says), "{context}: {details}");
    }
    // Refused requests changed nothing.
    assert_eq!(fs::read_to_string(&device.config).unwrap(), config_before);
    let (_, listed) = send(&client, "GET", &url, Some(&admin), None);
    assert_eq!(listed["pairs"].as_array().unwrap().len(), 1, "{listed}");
    assert!(!shared.join("music").exists() && !outside.join("music").exists());

    fs::create_dir_all(shared.join("music")).unwrap();
    fs::create_dir_all(shared.join("music-remote")).unwrap();
    write(&shared.join("music"), "song.txt", "la la la");
    let (status, added) = send(
        &client,
        "POST",
        &url,
        Some(&admin),
        Some(pair(&shared.join("music"), &file_remote)),
    );
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["name"], "music");
    let (_, listed) = send(&client, "GET", &url, Some(&admin), None);
    let mut names: Vec<&str> = listed["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["music", PAIR]);
    let config = fs::read_to_string(&device.config).unwrap();
    assert!(config.contains("name = \"music\""), "{config}");
    wait_for_content(&shared.join("music-remote/song.txt"), "la la la");
}

#[test]
fn pair_adds_at_once_pass_one_by_one_and_every_added_pair_reaches_the_config() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("a", &remote);
    let shared = sandbox.remote("shared");
    let port = free_port();
    enable_api(
        &device,
        &format!(
            "listen = \"127.0.0.1:{port}\"\npair_roots = [{:?}]\n",
            shared.display().to_string()
        ),
    );
    let _agent = device.start();
    let url = format!("http://127.0.0.1:{port}/pairs");
    let admin = issue(&device, &["--role", "admin"]);
    let folder = |rel: String| {
        let path = shared.join(rel);
        fs::create_dir_all(&path).unwrap();
        path.display().to_string()
    };
    // Every request of a round waits for the others, then all are sent.
    let add_at_once = |bodies: Vec<Value>| -> Vec<u16> {
        let barrier = std::sync::Barrier::new(bodies.len());
        std::thread::scope(|scope| {
            let sent: Vec<_> = bodies
                .into_iter()
                .map(|body| {
                    let (barrier, url, admin) = (&barrier, &url, &admin);
                    scope.spawn(move || {
                        let client = reqwest::blocking::Client::new();
                        barrier.wait();
                        send(&client, "POST", url, Some(admin), Some(body))
                    })
                })
                .collect();
            sent.into_iter()
                .map(|handle| {
                    let (status, body) = handle.join().unwrap();
                    assert!(status == 200 || status == 409, "{status}: {body}");
                    status
                })
                .collect()
        })
    };
    let count = |statuses: &[u16], status: u16| statuses.iter().filter(|&&s| s == status).count();

    // Four names, one folder: one pair runs, the others clash with it.
    let statuses = add_at_once(
        (0..4)
            .map(|i| {
                json!({"name": format!("music{i}"), "local": folder("music".into()),
                       "remote": format!("file://{}", folder(format!("music-remote{i}")))})
            })
            .collect(),
    );
    assert_eq!(
        (count(&statuses, 200), count(&statuses, 409)),
        (1, 3),
        "{statuses:?}"
    );
    // One name, four folders: one pair of that name.
    let statuses = add_at_once(
        (0..4)
            .map(|i| {
                json!({"name": "films", "local": folder(format!("films{i}")),
                       "remote": format!("file://{}", folder(format!("films-remote{i}")))})
            })
            .collect(),
    );
    assert_eq!(
        (count(&statuses, 200), count(&statuses, 409)),
        (1, 3),
        "{statuses:?}"
    );
    // Four pairs apart from each other: all run, none lost from the file.
    let statuses = add_at_once(
        (0..4)
            .map(|i| {
                json!({"name": format!("docs{i}"), "local": folder(format!("docs{i}")),
                       "remote": format!("file://{}", folder(format!("docs-remote{i}")))})
            })
            .collect(),
    );
    assert_eq!(count(&statuses, 200), 4, "{statuses:?}");

    let client = reqwest::blocking::Client::new();
    let (_, listed) = send(&client, "GET", &url, Some(&admin), None);
    let pairs = listed["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 1 + 1 + 1 + 4, "{listed}");
    let music: Vec<&Value> = pairs
        .iter()
        .filter(|p| p["name"].as_str().unwrap().starts_with("music"))
        .collect();
    assert_eq!(music.len(), 1, "one pair syncs the music folder: {listed}");
    let config = fs::read_to_string(&device.config).unwrap();
    assert_eq!(config.matches("[[pair]]").count(), pairs.len(), "{config}");
    for pair in pairs {
        let line = format!("name = {}", pair["name"]);
        assert_eq!(config.matches(&line).count(), 1, "{line}: {config}");
        // The running pair of a name is the one the file keeps.
        let local = format!("local = {}", pair["local"]);
        assert!(config.contains(&local), "{local}: {config}");
    }
}
