//! The WebDAV replica against a hostile server: a tiny HTTP server thread
//! in the test answers PROPFIND with crafted multistatus documents (hrefs
//! with `..`, on other hosts, outside the share; malformed XML; a body
//! larger than the listing cap; 503 and 507 to uploads). The replica must
//! refuse them without following any of them or running out of memory, and
//! a failed upload must say what went wrong, remove its staged temporary
//! and never touch the real name.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prism_sync::fsops::Expect;
use prism_sync::model::{BaseTree, ContentHash, MAX_DEPTH, Scope};
use prism_sync::remote::{Replica, WebdavReplica};

use crate::replica::{no_rules, rel, target};

/// What the server answers to one request.
enum Reply {
    Bytes(u16, Vec<u8>),
    /// A 207 whose body is `prefix` then `filler` bytes, streamed without
    /// a Content-Length.
    Stream(&'static str, u64),
    /// A 207 that announces a huge Content-Length.
    Declared(u64),
    /// `Bytes`, sent after a pause, so requests that overlap can be seen.
    Slow(u16, Vec<u8>),
}

/// How long a [`Reply::Slow`] waits before it answers.
const SLOW: Duration = Duration::from_millis(150);

/// An answer to a request: the server's port, the method, the path and the
/// `Depth` header (empty when there is none).
type Answer = fn(port: u16, method: &str, path: &str, depth: &str) -> Reply;

/// A one-request-per-connection HTTP server on loopback; records every
/// request line it sees.
struct Hostile {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    load: Arc<Load>,
}

/// Requests being answered now, and the most there were at once.
#[derive(Default)]
struct Load {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Hostile {
    fn start(answer: Answer) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let load = Arc::new(Load::default());
        let (log, busy) = (seen.clone(), load.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, busy) = (log.clone(), busy.clone());
                std::thread::spawn(move || serve(stream, port, answer, &log, &busy));
            }
        });
        Hostile { port, seen, load }
    }

    /// The most requests that were being answered at one time.
    fn most_at_once(&self) -> usize {
        self.load.most.load(Ordering::SeqCst)
    }

    fn replica(&self, path: &str) -> WebdavReplica {
        WebdavReplica::new(target(self.port, path)).unwrap()
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, port: u16, answer: Answer, log: &Mutex<Vec<String>>, load: &Load) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut length = 0usize;
    let mut chunked = false;
    let mut depth = String::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.trim().eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("depth") {
                depth = value.trim().to_owned();
            }
        }
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    // Uploads are streamed in chunks: read them all before answering, so
    // the client is not reset while it still sends.
    if chunked {
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).unwrap_or(0) == 0 {
                break;
            }
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0u8; size + 2];
            if reader.read_exact(&mut chunk).is_err() || size == 0 {
                break;
            }
        }
    }
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    log.lock().unwrap().push(match depth.as_str() {
        "" => format!("{method} {path}"),
        depth => format!("{method} {path} {depth}"),
    });
    let now = load.now.fetch_add(1, Ordering::SeqCst) + 1;
    load.most.fetch_max(now, Ordering::SeqCst);
    let mut out = stream;
    let reply = answer(port, method, path, &depth);
    if matches!(reply, Reply::Slow(..)) {
        std::thread::sleep(SLOW);
    }
    // Counted as done before the answer goes out: the client can send its
    // next request only after this one's answer, so a client that waits
    // for each answer is never seen with two at once.
    load.now.fetch_sub(1, Ordering::SeqCst);
    // Write errors are expected: the client hangs up on what it refuses.
    let _ = match reply {
        Reply::Bytes(status, body) | Reply::Slow(status, body) => out
            .write_all(
                format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: text/xml\r\nETag: \"e1\"\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .and_then(|()| out.write_all(&body)),
        Reply::Stream(prefix, filler) => (|| {
            out.write_all(
                b"HTTP/1.1 207 Multi-Status\r\nContent-Type: text/xml\r\nConnection: close\r\n\r\n",
            )?;
            out.write_all(prefix.as_bytes())?;
            let chunk = vec![b'x'; 1 << 20];
            let mut left = filler;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                out.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            Ok(())
        })(),
        Reply::Declared(length) => out.write_all(
            format!(
                "HTTP/1.1 207 Multi-Status\r\nContent-Length: {length}\r\nContent-Type: text/xml\r\nConnection: close\r\n\r\n<D:multistatus"
            )
            .as_bytes(),
        ),
    };
}

fn response(href: &str, collection: bool) -> String {
    let kind = if collection {
        "<D:resourcetype><D:collection/></D:resourcetype>"
    } else {
        "<D:resourcetype/><D:getcontentlength>5</D:getcontentlength>"
    };
    format!(
        "<D:response><D:href>{href}</D:href><D:propstat><D:prop>{kind}\
         <D:getlastmodified>Wed, 25 Nov 2026 10:27:19 GMT</D:getlastmodified>\
         <D:getetag>\"e1\"</D:getetag></D:prop>\
         <D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
    )
}

fn hostile_hrefs(port: u16, method: &str, path: &str, _depth: &str) -> Reply {
    match (method, path) {
        ("PROPFIND", "/share/") => {
            let hrefs = [
                ("/share/".to_owned(), true),
                ("/share/good.txt".to_owned(), false),
                ("/share/../etc/passwd".to_owned(), false),
                ("/share/%2e%2e/%2e%2e/etc/".to_owned(), true),
                ("/share/a%2Fb".to_owned(), false),
                ("http://evil.example/share/stolen.txt".to_owned(), false),
                (format!("https://127.0.0.1:{port}/share/tls.txt"), false),
                ("/elsewhere/".to_owned(), true),
                ("/".to_owned(), true),
                ("/share/sub/deeper.txt".to_owned(), false),
                ("/share/bad%0Aname.txt".to_owned(), false),
            ];
            let body: String = hrefs
                .iter()
                .map(|(href, collection)| response(href, *collection))
                .collect();
            Reply::Bytes(
                207,
                format!(
                    "<?xml version=\"1.0\"?><D:multistatus xmlns:D=\"DAV:\">{body}</D:multistatus>"
                )
                .into_bytes(),
            )
        }
        ("GET", "/share/good.txt") => Reply::Bytes(200, b"good\n".to_vec()),
        _ => Reply::Bytes(404, Vec::new()),
    }
}

#[test]
fn hrefs_outside_the_share_are_refused_and_never_followed() {
    let server = Hostile::start(hostile_hrefs);
    let remote = server.replica("/share/");
    let listing = remote
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap();
    let paths: Vec<&str> = listing.tree.keys().map(|p| p.as_str()).collect();
    assert_eq!(paths, ["good.txt"], "{listing:?}");
    assert_eq!(listing.problems.len(), 9, "{:#?}", listing.problems);
    assert!(
        listing
            .problems
            .iter()
            .any(|p| p.message.contains("outside the share")),
        "{:#?}",
        listing.problems
    );
    assert_eq!(
        server.seen(),
        ["PROPFIND /share/ infinity", "GET /share/good.txt"],
        "nothing the server named was followed"
    );
}

fn broken_answers(_port: u16, method: &str, path: &str, _depth: &str) -> Reply {
    match (method, path) {
        ("PROPFIND", "/malformed/") => Reply::Bytes(
            207,
            b"<D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>/malformed/x</D:multistatus>"
                .to_vec(),
        ),
        ("PROPFIND", "/html/") => Reply::Bytes(207, b"<html><body>hello</body></html>".to_vec()),
        ("PROPFIND", "/huge/") => Reply::Stream(
            "<?xml version=\"1.0\"?><D:multistatus xmlns:D=\"DAV:\"><!-- ",
            70 << 20,
        ),
        ("PROPFIND", "/declared/") => Reply::Declared(1 << 40),
        _ => Reply::Bytes(404, Vec::new()),
    }
}

#[test]
fn malformed_and_oversized_answers_are_errors_naming_the_server() {
    let server = Hostile::start(broken_answers);
    let name = format!("127.0.0.1:{}", server.port);
    for (path, expected) in [
        ("/malformed/", "malformed XML"),
        ("/html/", "not a DAV multistatus"),
        ("/huge/", "larger than 64 MiB"),
        ("/declared/", "larger than 64 MiB"),
    ] {
        let err = server
            .replica(path)
            .list(&Scope::Full, &BaseTree::new(), &no_rules())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&name) && err.contains(expected),
            "{path}: {err}"
        );
    }
}

/// Folders exist; nothing else does; uploads fail with 507 below `/full/`
/// and with 503 below `/busy/`.
fn failing_uploads(_port: u16, method: &str, path: &str, _depth: &str) -> Reply {
    match method {
        "PROPFIND" if path.ends_with('/') => Reply::Bytes(
            207,
            format!(
                "<D:multistatus xmlns:D=\"DAV:\">{}</D:multistatus>",
                response(path, true)
            )
            .into_bytes(),
        ),
        "PUT" if path.starts_with("/full/") => Reply::Bytes(507, Vec::new()),
        "PUT" => Reply::Bytes(503, Vec::new()),
        "MKCOL" => Reply::Bytes(201, Vec::new()),
        "DELETE" => Reply::Bytes(204, Vec::new()),
        _ => Reply::Bytes(404, Vec::new()),
    }
}

#[test]
fn uploads_refused_with_507_or_503_say_why_and_leave_no_temporary() {
    let server = Hostile::start(failing_uploads);
    let name = format!("127.0.0.1:{}", server.port);
    for (share, expected) in [
        ("/full/", ["out of space", "507 Insufficient Storage"]),
        ("/busy/", ["503 Service Unavailable", "docs/a.txt"]),
    ] {
        let text = b"precious\n";
        let err = server
            .replica(share)
            .write(
                &rel("docs/a.txt"),
                &mut &text[..],
                &ContentHash::of_bytes(text),
                1_600_000_000_000_000_000,
                None,
                &Expect::Absent,
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains(&name), "{share}: {err}");
        for part in expected {
            assert!(err.contains(part), "{share}: {err}");
        }
    }
    // Each refused upload went to a temporary name, which was deleted; the
    // real name was never written or moved onto.
    let seen = server.seen();
    let puts: Vec<&String> = seen.iter().filter(|s| s.starts_with("PUT ")).collect();
    assert_eq!(puts.len(), 2, "{seen:?}");
    for put in puts {
        let temp = put.trim_start_matches("PUT ");
        assert!(temp.contains("/docs/.prism-tmp-"), "{seen:?}");
        assert!(seen.contains(&format!("DELETE {temp}")), "{seen:?}");
    }
    assert!(!seen.iter().any(|s| s.starts_with("MOVE ")), "{seen:?}");
}

/// A server that accepts connections and reads requests but never answers:
/// every request must give up after the pair's `timeout_secs`, as an
/// offline error naming the server, so the pair backs off and retries as a
/// whole instead of hanging.
#[test]
fn a_server_that_never_answers_times_out_as_offline() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            // Keep the connection open, say nothing.
            held.push(stream);
        }
    });
    let replica = WebdavReplica::new(prism_sync::remote::WebdavTarget {
        timeout: std::time::Duration::from_secs(2),
        ..crate::replica::target(port, "/silent/")
    })
    .unwrap();
    let started = std::time::Instant::now();
    let err = replica
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(20),
        "gave up after {took:?}"
    );
    assert!(err.is_offline(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{port}")) && text.contains("timed out"),
        "{text}"
    );
}

/// A share of eight folders of one file each, every answer slow: a listing
/// that sends one request at a time takes 17 pauses, one that overlaps them
/// is seen doing so. Depth infinity is refused as Apache does by default.
fn wide_and_slow(_port: u16, method: &str, path: &str, depth: &str) -> Reply {
    let multistatus = |body: String| {
        format!("<?xml version=\"1.0\"?><D:multistatus xmlns:D=\"DAV:\">{body}</D:multistatus>")
            .into_bytes()
    };
    match (method, path.strip_prefix("/wide/")) {
        ("PROPFIND", _) if depth == "infinity" => Reply::Bytes(403, Vec::new()),
        ("PROPFIND", Some("")) => Reply::Slow(
            207,
            multistatus(
                std::iter::once(response("/wide/", true))
                    .chain((0..8).map(|i| response(&format!("/wide/d{i}/"), true)))
                    .collect(),
            ),
        ),
        ("PROPFIND", Some(dir)) if dir.ends_with('/') => Reply::Slow(
            207,
            multistatus(format!(
                "{}{}",
                response(&format!("/wide/{dir}"), true),
                response(&format!("/wide/{dir}f.txt"), false)
            )),
        ),
        ("GET", Some(file)) if file.ends_with("/f.txt") => Reply::Slow(200, b"good\n".to_vec()),
        _ => Reply::Bytes(404, Vec::new()),
    }
}

#[test]
fn folders_are_listed_and_files_read_several_at_once_into_a_sorted_listing() {
    let server = Hostile::start(wide_and_slow);
    let remote = server.replica("/wide/");
    let listing = remote
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap();
    let paths: Vec<&str> = listing.tree.keys().map(|p| p.as_str()).collect();
    let expected: Vec<String> = (0..8)
        .flat_map(|i| [format!("d{i}"), format!("d{i}/f.txt")])
        .collect();
    assert_eq!(paths, expected, "{listing:?}");
    assert_eq!(listing.hashed_files, 8);
    assert!(
        listing.held.is_empty() && listing.problems.is_empty(),
        "{listing:?}"
    );
    // The replica was opened for 4 requests at once.
    let most = server.most_at_once();
    assert!((2..=4).contains(&most), "{most} requests at once");
}

/// Two shares holding `top.txt` and `sub/deeper.txt`, each answering
/// `Depth: infinity` badly: `/shallow/` as if it were `Depth: 1` (as
/// SabreDAV, and so Nextcloud, does by default), `/huge/` with an answer
/// larger than the cap.
fn infinity_trouble(_port: u16, method: &str, path: &str, depth: &str) -> Reply {
    let Some((share, below)) = ["/shallow/", "/huge/"]
        .into_iter()
        .find_map(|share| Some((share, path.strip_prefix(share)?)))
    else {
        return Reply::Bytes(404, Vec::new());
    };
    let multistatus = |entries: &[(&str, bool)]| {
        let body: String = entries
            .iter()
            .map(|(below, collection)| response(&format!("{share}{below}"), *collection))
            .collect();
        Reply::Bytes(
            207,
            format!(
                "<?xml version=\"1.0\"?><D:multistatus xmlns:D=\"DAV:\">{body}</D:multistatus>"
            )
            .into_bytes(),
        )
    };
    match (method, below, depth) {
        ("PROPFIND", "", "infinity") if share == "/huge/" => Reply::Stream(
            "<?xml version=\"1.0\"?><D:multistatus xmlns:D=\"DAV:\"><!-- ",
            70 << 20,
        ),
        ("PROPFIND", "", "1" | "infinity") => {
            multistatus(&[("", true), ("sub/", true), ("top.txt", false)])
        }
        ("PROPFIND", "sub/", "1") => multistatus(&[("sub/", true), ("sub/deeper.txt", false)]),
        ("GET", "top.txt" | "sub/deeper.txt", _) => Reply::Bytes(200, b"good\n".to_vec()),
        _ => Reply::Bytes(404, Vec::new()),
    }
}

#[test]
fn a_depth_infinity_answer_cut_short_or_too_large_falls_back_to_folder_by_folder_for_good() {
    let server = Hostile::start(infinity_trouble);
    for share in ["/shallow/", "/huge/"] {
        let remote = server.replica(share);
        for round in ["first", "second"] {
            let before = server.seen().len();
            let listing = remote
                .list(&Scope::Full, &BaseTree::new(), &no_rules())
                .unwrap();
            let paths: Vec<&str> = listing.tree.keys().map(|p| p.as_str()).collect();
            assert_eq!(
                paths,
                ["sub", "sub/deeper.txt", "top.txt"],
                "{share} {round}"
            );
            assert!(listing.problems.is_empty(), "{:#?}", listing.problems);
            let mut propfinds: Vec<String> = server.seen()[before..]
                .iter()
                .filter(|r| r.starts_with("PROPFIND"))
                .cloned()
                .collect();
            propfinds.sort();
            let expected: &[&str] = match (share, round) {
                // The shallow answer gave the share's own entries; the
                // folder in it was listed on its own, and was not empty.
                ("/shallow/", "first") => &["{share} infinity", "{share}sub/ 1"],
                ("/huge/", "first") => &["{share} 1", "{share} infinity", "{share}sub/ 1"],
                // Never asked again.
                _ => &["{share} 1", "{share}sub/ 1"],
            };
            let expected: Vec<String> = expected
                .iter()
                .map(|e| format!("PROPFIND {}", e.replace("{share}", share)))
                .collect();
            assert_eq!(propfinds, expected, "{share} {round}");
        }
    }
}

/// How deep [`nested`] nests its folders.
const NESTING: usize = 3000;

/// `/nest/` holds folders nested [`NESTING`] deep (`a/a/…/a/`) with a
/// file at the bottom, all in one `Depth: infinity` answer of about 20 MB,
/// below the cap.
fn nested(_port: u16, method: &str, path: &str, depth: &str) -> Reply {
    let bottom = format!("/nest/{}f.txt", "a/".repeat(NESTING));
    match (method, depth) {
        ("PROPFIND", "infinity") if path == "/nest/" => {
            let mut body = String::from("<?xml version=\"1.0\"?><D:multistatus xmlns:D=\"DAV:\">");
            let mut href = String::from("/nest/");
            body.push_str(&response(&href, true));
            for _ in 0..NESTING {
                href.push_str("a/");
                body.push_str(&response(&href, true));
            }
            body.push_str(&response(&bottom, false));
            body.push_str("</D:multistatus>");
            Reply::Bytes(207, body.into_bytes())
        }
        ("GET", _) if path == bottom => Reply::Bytes(200, b"good\n".to_vec()),
        _ => Reply::Bytes(404, Vec::new()),
    }
}

#[test]
fn a_depth_infinity_answer_nesting_thousands_deep_is_walked_without_recursion() {
    let server = Hostile::start(nested);
    let listing = server
        .replica("/nest/")
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap();
    // Walked down to the deepest level synced; what is below is held,
    // never read, with a problem saying why.
    assert_eq!(listing.tree.len(), MAX_DEPTH);
    let too_deep = rel("a/".repeat(MAX_DEPTH + 1).trim_end_matches('/'));
    assert_eq!(listing.held, std::slice::from_ref(&too_deep));
    assert_eq!(listing.problems.len(), 1, "{:?}", listing.problems);
    assert_eq!(listing.problems[0].path, Some(too_deep));
    assert!(listing.problems[0].message.contains("levels deep"));
    assert_eq!(listing.hashed_files, 0);
    assert_eq!(server.seen(), ["PROPFIND /nest/ infinity"]);
}

/// `/abyss/` serves folders ever deeper, one `Depth: 1` answer at a time:
/// every folder holds a file and another folder, without end (one-letter
/// names: the paths stay within 4,096 bytes down to the depth limit). Depth
/// infinity is refused.
fn ever_deeper(_port: u16, method: &str, path: &str, depth: &str) -> Reply {
    match (method, depth) {
        ("PROPFIND", "infinity") => Reply::Bytes(403, Vec::new()),
        ("PROPFIND", "1") if path.starts_with("/abyss/") && path.ends_with('/') => {
            let body = format!(
                "<?xml version=\"1.0\"?><D:multistatus xmlns:D=\"DAV:\">{}{}{}</D:multistatus>",
                response(path, true),
                response(&format!("{path}f"), false),
                response(&format!("{path}a/"), true)
            );
            Reply::Bytes(207, body.into_bytes())
        }
        ("GET", _) if path.ends_with("/f") => Reply::Bytes(200, b"good\n".to_vec()),
        _ => Reply::Bytes(404, Vec::new()),
    }
}

#[test]
fn a_server_serving_ever_deeper_folders_meets_the_depth_limit_and_a_problem() {
    let server = Hostile::start(ever_deeper);
    let listing = server
        .replica("/abyss/")
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap();
    // Folders down to the limit, and the file beside each of them.
    let files = listing.tree.values().filter(|e| !e.entry.is_dir()).count();
    assert_eq!(
        (listing.tree.len() - files, files),
        (MAX_DEPTH, MAX_DEPTH),
        "held {:?}",
        listing.held.iter().map(|p| p.depth()).collect::<Vec<_>>()
    );
    let too_deep = format!("{}a", "a/".repeat(MAX_DEPTH));
    let deepest_file = format!("{}f", "a/".repeat(MAX_DEPTH));
    let mut held = listing.held.clone();
    held.sort();
    assert_eq!(held, [rel(&too_deep), rel(&deepest_file)]);
    assert!(
        listing
            .problems
            .iter()
            .all(|p| p.message.contains("levels deep")),
        "{:?}",
        listing.problems
    );
    // The share and each folder down to the limit were listed once, and
    // nothing deeper.
    let listed = server
        .seen()
        .iter()
        .filter(|line| line.starts_with("PROPFIND") && line.ends_with(" 1"))
        .count();
    assert_eq!(listed, MAX_DEPTH + 1);
}
