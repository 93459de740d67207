//! The S3 client against a hostile server: a small HTTP server thread in
//! the test answers with crafted listing pages (keys with `..`, absolute,
//! outside the prefix, NUL, invalid UTF-8, 1,000 levels deep; malformed,
//! truncated, endless and oversized pages), throttling, credential
//! refusals and broken connections. The client must refuse bad keys one
//! by one, fail on a bad page without panicking or running out of memory,
//! retry only what is safe to retry, and never put a secret in an error.

use std::io::{BufRead, BufReader, Cursor, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prism_sync::remote::ReplicaError;
use prism_sync::remote::s3::{
    Condition, CredentialSource, Credentials, Metadata, Once, RetryPolicy, S3Client, S3Error,
    S3Settings, Seekable,
};
use prism_sync::secrets::Secret;

pub(crate) const SECRET: &str = "hostile-test-secret-never-shown";
const TOKEN: &str = "hostile-test-session-token-never-shown";

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Seen {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn query(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| v.to_owned())
        })
    }
}

/// What the server does with one request.
pub(crate) enum Reply {
    Answer(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// Closes the connection with a TCP reset instead of answering.
    Reset,
    /// Says the body is `claimed` bytes long, sends `body` (fewer) and
    /// closes the connection.
    Cut(u16, Vec<(&'static str, String)>, Vec<u8>, usize),
}

fn ok_xml(body: impl Into<String>) -> Reply {
    Reply::Answer(
        200,
        vec![("content-type", "application/xml".into())],
        body.into().into_bytes(),
    )
}

pub(crate) fn error_reply(status: u16, code: &str, extra: Vec<(&'static str, String)>) -> Reply {
    Reply::Answer(
        status,
        extra,
        format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>no</Message></Error>")
            .into_bytes(),
    )
}

type Handler = Box<dyn Fn(usize, &Seen) -> Reply + Send + Sync>;

/// A one-request-per-connection HTTP server on loopback that records every
/// request.
pub(crate) struct Hostile {
    pub(crate) port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Hostile {
    pub(crate) fn start(
        handler: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static,
    ) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(Box::new(handler));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (record, handler) = (record.clone(), handler.clone());
                std::thread::spawn(move || serve(stream, &record, &handler));
            }
        });
        Hostile { port, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn client(&self, prefix: &str) -> S3Client {
        self.client_with(prefix, |_| {})
    }

    fn client_with(&self, prefix: &str, change: impl FnOnce(&mut S3Settings)) -> S3Client {
        let mut settings = self.settings(prefix);
        change(&mut settings);
        S3Client::new(settings).unwrap()
    }

    /// The settings of a client of `prefix` in the bucket `bucket`.
    pub(crate) fn settings(&self, prefix: &str) -> S3Settings {
        let mut settings = S3Settings::new("bucket", prefix);
        settings.endpoint = Some(format!("http://127.0.0.1:{}", self.port));
        settings.credentials = CredentialSource::explicit(Credentials {
            access_key_id: "HOSTILEKEY".into(),
            secret_access_key: Secret::new(SECRET.into()),
            session_token: Some(Secret::new(TOKEN.into())),
            origin: "the test".into(),
        });
        settings.timeout = Duration::from_secs(5);
        settings.retry = RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(2),
        };
        settings
    }
}

fn serve(stream: TcpStream, record: &Mutex<Vec<Seen>>, handler: &Handler) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.trim_end().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let mut seen = Seen {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    let len: u64 = seen
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let _ = (&mut reader).take(len).read_to_end(&mut seen.body);
    let index = {
        let mut list = record.lock().unwrap();
        list.push(seen.clone());
        list.len() - 1
    };
    let mut stream = stream;
    match handler(index, &seen) {
        Reply::Reset => {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: sets an option on a socket this thread owns.
            unsafe {
                libc::setsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
        }
        Reply::Cut(status, headers, body, claimed) => {
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {claimed}\r\nConnection: close\r\n"
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
        Reply::Answer(status, headers, body) => {
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            if seen.method != "HEAD" {
                let _ = stream.write_all(&body);
            }
        }
    }
}

/// A listing page holding `keys` (already URL-encoded).
fn page(keys: &[&str], next: Option<&str>) -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Name>bucket</Name><EncodingType>url</EncodingType>",
    );
    for key in keys {
        xml.push_str(&format!(
            "<Contents><Key>{key}</Key><LastModified>2026-01-02T03:04:05.000Z</LastModified>\
             <ETag>&quot;abc&quot;</ETag><Size>3</Size></Contents>"
        ));
    }
    match next {
        Some(token) => xml.push_str(&format!(
            "<IsTruncated>true</IsTruncated><NextContinuationToken>{token}</NextContinuationToken>"
        )),
        None => xml.push_str("<IsTruncated>false</IsTruncated>"),
    }
    xml.push_str("</ListBucketResult>");
    xml
}

#[test]
fn hostile_keys_are_refused_one_by_one_and_the_rest_is_listed() {
    let deep = format!("p/{}x", "a/".repeat(1000));
    let deep: &'static str = Box::leak(deep.into_boxed_str());
    let server = Hostile::start(move |_, seen| {
        assert_eq!(seen.query("prefix").as_deref(), Some("p%2F"));
        assert_eq!(seen.query("encoding-type").as_deref(), Some("url"));
        ok_xml(page(
            &[
                "p/ok.txt",
                "p/a/../../etc/passwd",
                "/etc/passwd",
                "p//etc/passwd",
                "other/x",
                "p/nul%00byte",
                "p/bad%FFutf8",
                deep,
                "p/dup",
                "p/dup",
                "p/.",
                "p/back%5C..%5Cslash",
                "p/broken%4",
                "p/",
                "p/sub/",
            ],
            None,
        ))
    });
    let list = server.client("p").list("", None).unwrap();
    let keys: Vec<_> = list.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["dup", "ok.txt", "sub/"]);
    let reasons: Vec<_> = list.problems.iter().map(|p| p.reason.as_str()).collect();
    let expect = [
        "`..`",
        "not under the prefix",
        "absolute",
        "not under the prefix",
        "control character",
        "not valid UTF-8",
        "longer than",
        "listed twice",
        "`.`",
        "control character",
        "URL encoding",
    ];
    assert_eq!(reasons.len(), expect.len(), "{reasons:#?}");
    for (reason, expected) in reasons.iter().zip(expect) {
        assert!(
            reason.contains(expected),
            "{reason:?} should say {expected:?}"
        );
    }
    assert!(
        list.problems.iter().all(|p| p.reason.len() < 400),
        "reasons are cut short"
    );
    let nul = &list.problems[4];
    assert!(
        nul.key.contains("\\0"),
        "the NUL is shown escaped: {}",
        nul.key
    );
}

#[test]
fn malformed_truncated_endless_and_oversized_pages_are_errors() {
    type Answer = Box<dyn Fn(usize) -> Reply + Send + Sync>;
    let cases: Vec<(&str, Answer)> = vec![
        (
            "truncated",
            Box::new(|_| ok_xml("<ListBucketResult><Contents><Key>p/a</Key>")),
        ),
        ("not XML", Box::new(|_| ok_xml("this is not xml <<<"))),
        ("wrong root", Box::new(|_| ok_xml("<Other/>"))),
        ("empty", Box::new(|_| ok_xml(""))),
        (
            "no token",
            Box::new(|_| {
                ok_xml(
                    page(&["p/a"], Some(""))
                        .replace("<NextContinuationToken></NextContinuationToken>", ""),
                )
            }),
        ),
        (
            "same token",
            Box::new(|_| ok_xml(page(&["p/a"], Some("again")))),
        ),
        (
            "empty pages forever",
            Box::new(|i| ok_xml(page(&[], Some(&format!("t{i}"))))),
        ),
        (
            "too deep",
            Box::new(|_| ok_xml(format!("<ListBucketResult>{}", "<a>".repeat(10_000)))),
        ),
        (
            "entity",
            Box::new(|_| {
                ok_xml(
                    "<!DOCTYPE x [<!ENTITY a \"aaaa\">]><ListBucketResult>&a;</ListBucketResult>",
                )
            }),
        ),
        (
            "no key",
            Box::new(|_| {
                ok_xml("<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>")
            }),
        ),
        (
            "oversized",
            Box::new(|_| {
                let filler = "<Contents><Key>p/a</Key><Size>1</Size></Contents>".repeat(400_000);
                ok_xml(format!("<ListBucketResult>{filler}</ListBucketResult>"))
            }),
        ),
    ];
    for (name, answer) in cases {
        let server = Hostile::start(move |i, _| answer(i));
        let started = Instant::now();
        let error = server.client("p").list("", None).unwrap_err();
        assert!(
            matches!(error, S3Error::BadAnswer { .. }),
            "{name}: {error}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{name}");
        let requests = server.seen().len();
        assert!(requests <= 101, "{name}: {requests} requests");
    }
}

#[test]
fn a_ten_thousand_object_prefix_is_listed_in_ten_pages() {
    let server = Hostile::start(|_, seen| {
        let start: usize = seen
            .query("continuation-token")
            .map(|t| t.trim_start_matches("from").parse().unwrap())
            .unwrap_or(0);
        let keys: Vec<String> = (start..start + 1000)
            .map(|i| format!("p/d{}/f{i:05}", i % 10))
            .collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let next = (start + 1000 < 10_000).then(|| format!("from{}", start + 1000));
        ok_xml(page(&keys, next.as_deref()))
    });
    let started = Instant::now();
    let list = server.client("p").list("", None).unwrap();
    eprintln!(
        "10,000 keys in {} pages listed in {:?}",
        list.pages,
        started.elapsed()
    );
    assert_eq!(list.pages, 10);
    assert_eq!(list.objects.len(), 10_000);
    assert!(list.problems.is_empty());
    assert!(
        list.objects.windows(2).all(|w| w[0].key < w[1].key),
        "sorted"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn throttling_is_retried_with_back_off_and_honours_retry_after() {
    let server = Hostile::start(|i, _| match i {
        0 => error_reply(503, "SlowDown", vec![("retry-after", "1".into())]),
        1 => error_reply(500, "InternalError", vec![]),
        2 => Reply::Reset,
        _ => ok_xml(page(&["p/a"], None)),
    });
    let started = Instant::now();
    let list = server.client("p").list("", None).unwrap();
    assert_eq!(list.objects.len(), 1);
    assert_eq!(server.seen().len(), 4);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );

    let endless = Hostile::start(|_, _| error_reply(503, "SlowDown", vec![]));
    let error = endless.client("p").list("", None).unwrap_err();
    assert!(
        matches!(error, S3Error::Unavailable { attempts: 4, .. }),
        "{error}"
    );
    assert_eq!(endless.seen().len(), 4, "bounded");
    let replica: ReplicaError = error.into();
    assert!(replica.is_offline(), "the pair waits as a whole: {replica}");
}

#[test]
fn refused_credentials_are_one_request_with_a_clear_error_and_no_secret() {
    for (status, code, says) in [
        (403, "SignatureDoesNotMatch", "secret access key"),
        (403, "InvalidAccessKeyId", "access key id"),
        (400, "ExpiredToken", "expired"),
        (403, "RequestTimeTooSkewed", "clock"),
    ] {
        let server = Hostile::start(move |_, _| error_reply(status, code, vec![]));
        let error = server.client("p").list("", None).unwrap_err();
        assert!(
            matches!(error, S3Error::Credentials { .. }),
            "{code}: {error}"
        );
        assert_eq!(server.seen().len(), 1, "{code}: never retried");
        let message = error.to_string();
        assert!(
            message.contains(code) && message.contains(says),
            "{message}"
        );
        assert!(
            message.contains("HOSTILEKEY"),
            "names the key id: {message}"
        );
        for shown in [
            message,
            format!("{error:?}"),
            ReplicaError::from(error).to_string(),
        ] {
            assert!(!shown.contains(SECRET) && !shown.contains(TOKEN), "{shown}");
        }
    }
}

#[test]
fn requests_are_signed_with_the_session_token_and_uploads_stream_unsigned() {
    let server =
        Hostile::start(|_, _| Reply::Answer(200, vec![("etag", "\"e\"".into())], Vec::new()));
    let client = server.client("p");
    let data = vec![7u8; 300_000];
    let etag = client
        .put(
            "a b/c",
            &mut Once(&data[..]),
            data.len() as u64,
            &Condition::Absent,
            &Metadata::new(),
        )
        .unwrap();
    assert_eq!(etag, "\"e\"");
    let seen = &server.seen()[0];
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.target, "/bucket/p/a%20b/c");
    assert_eq!(seen.body, data);
    assert_eq!(
        seen.header("x-amz-content-sha256"),
        Some("UNSIGNED-PAYLOAD")
    );
    assert_eq!(seen.header("if-none-match"), Some("*"));
    assert_eq!(seen.header("x-amz-security-token"), Some(TOKEN));
    let authorization = seen.header("authorization").unwrap();
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=HOSTILEKEY/"),
        "{authorization}"
    );
    assert!(
        authorization.contains("if-none-match") && authorization.contains("x-amz-security-token")
    );
    assert!(!authorization.contains(SECRET));
}

#[test]
fn an_upload_is_retried_only_when_its_source_can_go_back() {
    let flaky = || {
        Hostile::start(|i, _| match i {
            0 => error_reply(503, "SlowDown", vec![]),
            _ => Reply::Answer(200, vec![("etag", "\"e\"".into())], Vec::new()),
        })
    };
    let data = vec![3u8; 100_000];

    let server = flaky();
    let error = server
        .client("p")
        .put(
            "k",
            &mut Once(&data[..]),
            data.len() as u64,
            &Condition::None,
            &Metadata::new(),
        )
        .unwrap_err();
    assert!(
        matches!(error, S3Error::Unavailable { attempts: 1, .. }),
        "{error}"
    );
    assert_eq!(server.seen().len(), 1);

    let server = flaky();
    let mut source = Seekable::new(Cursor::new(data.clone())).unwrap();
    server
        .client("p")
        .put(
            "k",
            &mut source,
            data.len() as u64,
            &Condition::None,
            &Metadata::new(),
        )
        .unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter().all(|s| s.body == data),
        "each attempt sends the whole body"
    );

    let refused = Hostile::start(|_, _| error_reply(412, "PreconditionFailed", vec![]));
    let mut source = Seekable::new(Cursor::new(data.clone())).unwrap();
    let error = refused
        .client("p")
        .put(
            "k",
            &mut source,
            data.len() as u64,
            &Condition::Absent,
            &Metadata::new(),
        )
        .unwrap_err();
    assert!(error.is_precondition_failed(), "{error}");
    assert_eq!(refused.seen().len(), 1, "a 412 is never retried");
}

#[test]
fn a_refused_connection_is_offline_at_once() {
    let port = crate::ports::free_port();
    let mut settings = S3Settings::new("bucket", "p");
    settings.endpoint = Some(format!("http://127.0.0.1:{port}"));
    settings.credentials = CredentialSource::explicit(Credentials {
        access_key_id: "K".into(),
        secret_access_key: Secret::new(SECRET.into()),
        session_token: None,
        origin: "the test".into(),
    });
    let client = S3Client::new(settings).unwrap();
    let started = Instant::now();
    let error = client.head("x").unwrap_err();
    assert!(matches!(error, S3Error::Offline { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(1), "not retried");
    assert!(!error.to_string().contains(SECRET));
    assert!(ReplicaError::from(error).is_offline());
}

#[test]
fn a_copy_answered_with_an_error_inside_a_200_is_retried() {
    let server = Hostile::start(|i, _| match i {
        0 => ok_xml("<Error><Code>InternalError</Code><Message>later</Message></Error>"),
        _ => ok_xml("<CopyObjectResult><ETag>&quot;new&quot;</ETag></CopyObjectResult>"),
    });
    let etag = server
        .client("p")
        .copy("a", "b", Some("\"old\""), None)
        .unwrap();
    assert_eq!(etag, "\"new\"");
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("x-amz-copy-source"), Some("/bucket/p/a"));
    assert_eq!(
        seen[0].header("x-amz-copy-source-if-match"),
        Some("\"old\"")
    );
}

#[test]
fn a_range_the_server_ignores_starts_the_read_at_zero() {
    let server = Hostile::start(|_, _| {
        Reply::Answer(200, vec![("etag", "\"v\"".into())], b"whole".to_vec())
    });
    let mut reader = server.client("p").get("k", 3, Some("\"v\"")).unwrap();
    assert_eq!(reader.start, 0);
    let mut out = String::new();
    reader.read_to_string(&mut out).unwrap();
    assert_eq!(out, "whole");
    assert_eq!(server.seen()[0].header("range"), Some("bytes=3-"));

    let other =
        Hostile::start(|_, _| Reply::Answer(200, vec![("etag", "\"w\"".into())], b"x".to_vec()));
    let error = other.client("p").get("k", 0, Some("\"v\"")).err().unwrap();
    assert!(
        error.is_precondition_failed(),
        "an ignored If-Match is caught: {error}"
    );
}

#[test]
fn a_server_that_stops_answering_is_offline_after_the_timeout_without_retries() {
    let server = Hostile::start(|_, _| {
        std::thread::sleep(Duration::from_secs(3));
        ok_xml(page(&[], None))
    });
    let client = server.client_with("p", |s| s.timeout = Duration::from_millis(300));
    let started = Instant::now();
    let error = client.list("", None).unwrap_err();
    assert!(matches!(error, S3Error::Offline { .. }), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.seen().len(), 1, "a timeout is not retried");
}

#[test]
fn the_replica_turns_hostile_keys_into_problems_and_never_lists_outside_its_root() {
    use prism_sync::model::{BaseTree, ContentHash, RelPath, Scope};
    use prism_sync::remote::Replica;
    use prism_sync::remote::s3::S3Replica;

    let deep = format!("p/{}x", "a/".repeat(1000));
    let deep: &'static str = Box::leak(deep.into_boxed_str());
    let hash = ContentHash::of_bytes(b"abc").to_hex();
    let server = Hostile::start(move |_, seen| {
        if seen.method == "GET" && seen.query("list-type").is_some() {
            return ok_xml(page(
                &[
                    "p/ok.txt",
                    "p/a/../../etc/passwd",
                    "/etc/passwd",
                    "other/x",
                    "p/..",
                    deep,
                    "p/sub/",
                    "p/.prism-sync/lease",
                ],
                None,
            ));
        }
        if seen.method == "HEAD" && seen.target.starts_with("/bucket/p/ok.txt") {
            return Reply::Answer(
                200,
                vec![
                    ("etag", "\"abc\"".into()),
                    ("x-amz-meta-prism-blake3", hash.clone()),
                ],
                b"abc".to_vec(),
            );
        }
        error_reply(501, "NotImplemented", Vec::new())
    });
    let settings = {
        let mut settings = S3Settings::new("bucket", "p");
        settings.endpoint = Some(format!("http://127.0.0.1:{}", server.port));
        settings.credentials = CredentialSource::explicit(Credentials {
            access_key_id: "HOSTILEKEY".into(),
            secret_access_key: Secret::new(SECRET.into()),
            session_token: None,
            origin: "the test".into(),
        });
        settings
    };
    let replica = S3Replica::new(settings, 4);
    let listing = replica
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap();
    let paths: Vec<&str> = listing.tree.keys().map(RelPath::as_str).collect();
    assert_eq!(paths, ["ok.txt", "sub"]);
    assert_eq!(
        listing.tree[&RelPath::new("ok.txt").unwrap()]
            .entry
            .file()
            .unwrap()
            .hash,
        ContentHash::of_bytes(b"abc")
    );
    assert_eq!(listing.hashed_files, 0);
    let refused: Vec<&str> = listing
        .problems
        .iter()
        .filter(|p| p.message.starts_with("an object is not synced"))
        .map(|p| p.message.as_str())
        .collect();
    assert_eq!(refused.len(), 5, "{:#?}", listing.problems);
    assert!(listing.held.is_empty());
}

/// Ignore rules with no patterns (read from an empty folder).
fn no_rules() -> prism_sync::tracker::ignore::IgnoreRules {
    let dir = tempfile::tempdir().unwrap();
    prism_sync::tracker::ignore::IgnoreRules::load(dir.path(), &[]).unwrap()
}

#[test]
fn a_download_cut_off_midway_is_continued_with_a_range_for_the_same_version() {
    use prism_sync::model::{ContentHash, FileMeta, RelPath};
    use prism_sync::remote::Source;
    use prism_sync::remote::s3::S3Replica;

    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let hash = ContentHash::of_bytes(&content);
    let served = content.clone();
    let hex = hash.to_hex();
    let server = Hostile::start(move |_, seen| {
        let etag = ("etag", "\"v1\"".to_owned());
        match (seen.method.as_str(), seen.header("range")) {
            ("GET", None) => Reply::Cut(200, vec![etag], served[..30_000].to_vec(), served.len()),
            ("HEAD", _) => Reply::Answer(
                200,
                vec![etag, ("x-amz-meta-prism-blake3", hex.clone())],
                served.clone(),
            ),
            ("GET", Some("bytes=30000-")) if seen.header("if-match") == Some("\"v1\"") => {
                Reply::Answer(
                    206,
                    vec![
                        etag,
                        (
                            "content-range",
                            format!("bytes 30000-99999/{}", served.len()),
                        ),
                    ],
                    served[30_000..].to_vec(),
                )
            }
            _ => error_reply(501, "NotImplemented", Vec::new()),
        }
    });
    let mut settings = S3Settings::new("bucket", "p");
    settings.endpoint = Some(format!("http://127.0.0.1:{}", server.port));
    settings.credentials = CredentialSource::explicit(Credentials {
        access_key_id: "HOSTILEKEY".into(),
        secret_access_key: Secret::new(SECRET.into()),
        session_token: None,
        origin: "the test".into(),
    });
    let replica = S3Replica::new(settings, 1);
    let path = RelPath::new("f.bin").unwrap();
    let meta = FileMeta {
        hash,
        size: content.len() as u64,
        mtime_ns: 0,
        mode: None,
    };
    let progress = |_| {};
    let pauses = [Duration::from_millis(1)];
    let source = Source::new(&replica, &path, meta, &progress).with_reconnect_pauses(&pauses);
    let (mut reader, start) = source.reader(0).unwrap();
    assert_eq!(start, 0);
    let mut got = Vec::new();
    reader.read_to_end(&mut got).unwrap();
    assert!(got == content, "the whole file, from two answers");
    assert_eq!(source.fetched(), content.len() as u64, "nothing read twice");
}
