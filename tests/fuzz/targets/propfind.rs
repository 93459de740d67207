//! PROPFIND answers (`remote::webdav::xml`), from real multistatus
//! documents of Apache's mod_dav and `rclone serve webdav`.
//!
//! Properties: no panic; every text field within `MAX_TEXT`; the same
//! answer whether the parser reads the document from one slice or through
//! a small buffer (events split across reads); memory linear in the input.

use std::io::BufReader;

use prism_sync::remote::webdav::xml::{MAX_TEXT, PropResponse, XmlError, parse_multistatus};

use crate::engine::{Target, label, seeds, words};

const DICTIONARY: &[&[u8]] = &[
    b"<D:response>",
    b"</D:response>",
    b"<D:href>",
    b"</D:href>",
    b"<D:propstat>",
    b"</D:propstat>",
    b"<D:prop>",
    b"</D:prop>",
    b"<D:status>HTTP/1.1 200 OK</D:status>",
    b"<D:status>HTTP/1.1 404 Not Found</D:status>",
    b"<D:resourcetype><D:collection/></D:resourcetype>",
    b"<D:getcontentlength>",
    b"</D:getcontentlength>",
    b"<D:getetag>",
    b"<D:getlastmodified>",
    b"xmlns:D=\"DAV:\"",
    b"xmlns=\"DAV:\"",
    b"xmlns:D=\"urn:not-dav\"",
    b"<![CDATA[",
    b"]]>",
    b"<!--",
    b"-->",
    b"<?xml version=\"1.0\"?>",
    b"<!DOCTYPE x [<!ENTITY a \"aaaaaaaa\">]>",
    b"&amp;",
    b"&lt;",
    b"&a;",
    b"&#0;",
    b"&#x10FFFF;",
    b"&#x110000;",
    b"&#xD800;",
    b"&#99999999999;",
    b"<a>",
    b"</a>",
    b"/>",
    b"<",
    b">",
];

pub fn target() -> Target {
    Target {
        name: "propfind",
        seeds: seeds("propfind"),
        dictionary: DICTIONARY,
        max_len: 64 * 1024,
        memory_budget: |len| 16 * len + 256 * 1024,
        run,
    }
}

fn run(input: &[u8]) -> u64 {
    let whole = parse_multistatus(input);
    // Mostly tiny, so events straddle reads; fixed by the input, so a
    // replay repeats it.
    let capacity = [1, 2, 3, 7, 64, 4096][input.len() % 6];
    let streamed = parse_multistatus(BufReader::with_capacity(capacity, input));
    match (&whole, &streamed) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "a small read buffer changed the answer"),
        (Err(a), Err(b)) => assert_eq!(
            variant(a),
            variant(b),
            "a small read buffer changed the error: {a} / {b}"
        ),
        _ => panic!("a small read buffer changed the outcome: {whole:?} / {streamed:?}"),
    }
    match whole {
        Ok(responses) => {
            for response in &responses {
                check(response);
            }
            label((
                "ok",
                responses.len().min(3),
                responses.iter().any(|r| r.collection),
                responses.iter().any(|r| r.length.is_some()),
                responses.iter().any(|r| r.etag.is_some()),
                responses.iter().any(|r| r.last_modified.is_some()),
                responses.iter().any(|r| !r.found),
            ))
        }
        Err(XmlError::Malformed { message, .. }) => label(("malformed", words(&message, input, 6))),
        Err(e) => label(("err", variant(&e))),
    }
}

fn check(response: &PropResponse) {
    assert!(!response.href.is_empty(), "a response without an href");
    for text in [
        Some(&response.href),
        response.etag.as_ref(),
        response.last_modified.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(text.len() <= MAX_TEXT, "a field of {} bytes", text.len());
        assert_eq!(text.trim(), text, "fields are trimmed");
    }
}

fn variant(e: &XmlError) -> &'static str {
    match e {
        XmlError::Malformed { .. } => "Malformed",
        XmlError::NotMultistatus => "NotMultistatus",
        XmlError::TooDeep => "TooDeep",
        XmlError::TextTooLong => "TextTooLong",
    }
}
