//! Object operations against both real servers, one shared body each.

use std::io::{Cursor, Read};

use prism_sync::remote::ReplicaError;
use prism_sync::remote::s3::{
    Condition, META_BLAKE3, META_MODE, Metadata, Once, S3Client, S3Error, Seekable,
};

use crate::{Server, both};

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn put_bytes(
    client: &S3Client,
    key: &str,
    data: &[u8],
    condition: &Condition,
    meta: &Metadata,
) -> Result<String, S3Error> {
    let mut source = Seekable::new(Cursor::new(data.to_vec())).unwrap();
    client.put(key, &mut source, data.len() as u64, condition, meta)
}

fn read_all(client: &S3Client, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    client
        .get(key, 0, None)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn metadata(hash: &str) -> Metadata {
    let mut meta = Metadata::new();
    meta.insert(META_BLAKE3.into(), hash.into());
    meta.insert(META_MODE.into(), "644".into());
    meta
}

both!(
    put_head_and_ranged_get_keep_metadata_and_check_the_version,
    put_head_get
);
fn put_head_get(server: Server) {
    let client = server.client("put-head-get");
    let data = bytes(300_000, 7);
    let hash = blake3::hash(&data).to_hex().to_string();
    let mut source = Once(&data[..]);
    let etag = client
        .put(
            "dir/a file+plus.bin",
            &mut source,
            data.len() as u64,
            &Condition::Absent,
            &metadata(&hash),
        )
        .unwrap();
    assert!(!etag.is_empty());

    let head = client
        .head("dir/a file+plus.bin")
        .unwrap()
        .expect("it exists");
    assert_eq!(head.size, data.len() as u64);
    assert_eq!(head.etag, etag);
    assert_eq!(head.metadata.get(META_BLAKE3), Some(&hash));
    assert_eq!(
        head.metadata.get(META_MODE).map(String::as_str),
        Some("644")
    );
    assert!(head.last_modified.is_some());
    assert_eq!(client.head("dir/none").unwrap(), None);

    assert_eq!(read_all(&client, "dir/a file+plus.bin"), data);
    let mut ranged = client
        .get("dir/a file+plus.bin", 1000, Some(&etag))
        .unwrap();
    assert_eq!(ranged.start, 1000);
    let mut rest = Vec::new();
    ranged.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, &data[1000..]);

    let stale = client.get(
        "dir/a file+plus.bin",
        0,
        Some("\"0123456789abcdef0123456789abcdef\""),
    );
    assert!(
        matches!(stale, Err(S3Error::PreconditionFailed { .. })),
        "{:?}",
        stale.err()
    );
    assert!(matches!(
        client.get("dir/none", 0, None),
        Err(S3Error::NoSuchKey { .. })
    ));
}

both!(
    conditional_puts_refuse_with_412_and_never_overwrite,
    conditional_puts
);
fn conditional_puts(server: Server) {
    let client = server.client("conditional");
    let first = put_bytes(&client, "k", b"one", &Condition::Absent, &Metadata::new()).unwrap();
    let again = put_bytes(&client, "k", b"two", &Condition::Absent, &Metadata::new()).unwrap_err();
    assert!(again.is_precondition_failed(), "{again}");
    assert!(
        again.to_string().contains("someone else changed"),
        "{again}"
    );
    let replica: ReplicaError = again.into();
    assert!(replica.is_change(), "it is re-planned: {replica}");
    assert_eq!(read_all(&client, "k"), b"one");

    let second = put_bytes(
        &client,
        "k",
        b"three",
        &Condition::Matches(first.clone()),
        &Metadata::new(),
    )
    .unwrap();
    assert_ne!(first, second);
    let stale = put_bytes(
        &client,
        "k",
        b"four",
        &Condition::Matches(first),
        &Metadata::new(),
    )
    .unwrap_err();
    assert!(stale.is_precondition_failed(), "{stale}");
    assert_eq!(read_all(&client, "k"), b"three");

    let support = client.probe_conditions(".prism-sync/").unwrap();
    assert!(
        support.create && support.replace,
        "both servers honour PUT's conditions: {support:?}"
    );
    let left = client.list("", None).unwrap();
    let keys: Vec<_> = left.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["k"], "the probe cleans up after itself");
}

both!(
    a_listing_is_paged_and_maps_keys_markers_and_odd_names,
    paged_listing
);
fn paged_listing(server: Server) {
    let client = server.client("paged");
    let mut expected = Vec::new();
    for i in 0..60 {
        let key = format!("d{}/f {i:03}+ü.txt", i % 3);
        put_bytes(
            &client,
            &key,
            key.as_bytes(),
            &Condition::Absent,
            &Metadata::new(),
        )
        .unwrap();
        expected.push(key);
    }
    client.make_folder_marker("empty").unwrap();
    client.make_folder_marker("empty").unwrap();
    expected.push("empty/".into());
    expected.sort();

    let list = client.list("", Some(7)).unwrap();
    assert!(list.pages >= 9, "{} pages", list.pages);
    assert!(list.problems.is_empty(), "{:?}", list.problems);
    let keys: Vec<_> = list.objects.iter().map(|o| o.key.clone()).collect();
    assert_eq!(keys, expected);
    let marker = list.objects.iter().find(|o| o.key == "empty/").unwrap();
    assert!(marker.is_folder_marker());
    assert_eq!(marker.size, 0);
    let file = list
        .objects
        .iter()
        .find(|o| o.key == "d1/f 001+ü.txt")
        .unwrap();
    assert_eq!(file.size, "d1/f 001+ü.txt".len() as u64);
    assert!(file.etag.starts_with('"'), "{}", file.etag);
    assert!(file.last_modified.is_some());

    let below = client.list("d2/", Some(5)).unwrap();
    assert_eq!(below.objects.len(), 20);
    assert!(below.objects.iter().all(|o| o.key.starts_with("d2/")));
    assert!(client.list("nothing/", None).unwrap().objects.is_empty());
}

both!(
    copies_keep_or_replace_metadata_and_check_the_source_version,
    copies
);
fn copies(server: Server) {
    let client = server.client("copy");
    let etag = put_bytes(
        &client,
        "src",
        b"content",
        &Condition::Absent,
        &metadata("aa"),
    )
    .unwrap();
    client.copy("src", "kept", Some(&etag), None).unwrap();
    let kept = client.head("kept").unwrap().unwrap();
    assert_eq!(
        kept.metadata.get(META_BLAKE3).map(String::as_str),
        Some("aa")
    );
    assert_eq!(read_all(&client, "kept"), b"content");

    client
        .copy("src", "replaced", None, Some(&metadata("bb")))
        .unwrap();
    let replaced = client.head("replaced").unwrap().unwrap();
    assert_eq!(
        replaced.metadata.get(META_BLAKE3).map(String::as_str),
        Some("bb")
    );

    // moto ignores x-amz-copy-source-if-match (it knows only the
    // -if-none-match form); the probe says so, and the adapter re-checks.
    let support = client.probe_conditions(".prism-sync/").unwrap();
    match server {
        Server::Moto => assert!(!support.copy, "{support:?}"),
        Server::Seaweed => assert!(support.copy, "{support:?}"),
    }
    put_bytes(
        &client,
        "src",
        b"changed",
        &Condition::Matches(etag.clone()),
        &Metadata::new(),
    )
    .unwrap();
    if support.copy {
        let stale = client.copy("src", "late", Some(&etag), None).unwrap_err();
        assert!(stale.is_precondition_failed(), "{stale}");
        assert!(stale.to_string().contains("src"), "{stale}");
        assert_eq!(client.head("late").unwrap(), None);
    }

    client.delete("kept").unwrap();
    assert_eq!(client.head("kept").unwrap(), None);
    client.delete("kept").unwrap();
}

both!(
    multipart_uploads_stream_their_parts_and_complete_conditionally,
    multipart
);
fn multipart(server: Server) {
    let client = server.client("multipart");
    const PART: u64 = 5 * 1024 * 1024;
    let data = bytes(2 * PART as usize + 12_345, 3);
    let mut source = Once(&data[..]);
    let etag = client
        .upload_in_parts(
            "big",
            &mut source,
            data.len() as u64,
            PART,
            &Condition::Absent,
            &metadata("cc"),
        )
        .unwrap();
    assert!(!etag.is_empty());
    let head = client.head("big").unwrap().unwrap();
    assert_eq!(head.size, data.len() as u64);
    assert_eq!(
        head.metadata.get(META_BLAKE3).map(String::as_str),
        Some("cc")
    );
    assert_eq!(read_all(&client, "big"), data);

    // The key exists now: a second "new key" upload must not replace it,
    // and must leave no upload behind.
    let other = bytes(PART as usize + 1, 9);
    let mut source = Once(&other[..]);
    let refused = client
        .upload_in_parts(
            "big",
            &mut source,
            other.len() as u64,
            PART,
            &Condition::Absent,
            &Metadata::new(),
        )
        .unwrap_err();
    assert!(refused.is_precondition_failed(), "{refused}");
    assert_eq!(read_all(&client, "big"), data);
    assert!(client.list_uploads("").unwrap().is_empty());

    // A source that fails half-way: the upload is aborted, nothing appears.
    let mut failing = Once(FailAfter {
        left: PART as usize + 10,
    });
    let failed = client
        .upload_in_parts(
            "broken",
            &mut failing,
            3 * PART,
            PART,
            &Condition::Absent,
            &Metadata::new(),
        )
        .unwrap_err();
    assert!(matches!(failed, S3Error::Source { .. }), "{failed}");
    assert_eq!(client.head("broken").unwrap(), None);
    assert!(client.list_uploads("").unwrap().is_empty());
}

/// A reader that fails after some bytes.
struct FailAfter {
    left: usize,
}

impl Read for FailAfter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("the disk went away"));
        }
        let n = buf.len().min(self.left);
        buf[..n].fill(1);
        self.left -= n;
        Ok(n)
    }
}

both!(
    stale_uploads_are_listed_under_a_prefix_and_aborted,
    stale_uploads
);
fn stale_uploads(server: Server) {
    let client = server.client("stale");
    let first = client.create_upload("a/one", &Metadata::new()).unwrap();
    let second = client.create_upload("b/two", &Metadata::new()).unwrap();
    let all = client.list_uploads("").unwrap();
    let mut keys: Vec<_> = all
        .iter()
        .map(|u| (u.key.as_str(), u.upload_id.as_str()))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [("a/one", first.as_str()), ("b/two", second.as_str())]
    );
    let below = client.list_uploads("a/").unwrap();
    assert_eq!(below.len(), 1);
    for upload in all {
        client.abort_upload(&upload.key, &upload.upload_id).unwrap();
    }
    assert!(client.list_uploads("").unwrap().is_empty());
    assert_eq!(client.head("a/one").unwrap(), None);
}

both!(missing_buckets_and_keys_are_told_apart, missing);
fn missing(server: Server) {
    let client = server.client_with("missing", |s| s.bucket = "no-such-bucket-here".into());
    let error = client.list("", None).unwrap_err();
    assert!(matches!(error, S3Error::NoSuchBucket { .. }), "{error}");
    assert!(error.to_string().contains("no-such-bucket-here"), "{error}");
    let client = server.client("missing");
    assert!(matches!(
        client.get("nope", 0, None),
        Err(S3Error::NoSuchKey { .. })
    ));
    assert!(client.list("", None).unwrap().objects.is_empty());
}
