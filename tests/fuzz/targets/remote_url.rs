//! Remote URLs (`RemoteUrl::parse`), from the forms the README documents.
//!
//! Properties: no panic; a URL with a password (a ':' before the last '@')
//! is refused without echoing it; a parsed URL has a host, and a WebDAV URL
//! shows as text that parses back to the same thing.

use prism_sync::config::{RemoteUrl, is_loopback_host};
use prism_sync::remote::git::settings::GitUrl;
use prism_sync::remote::local::url::FileUrl;
use prism_sync::remote::rclone::settings::RcloneUrl;
use prism_sync::remote::s3::settings::S3Url;
use prism_sync::remote::sftp::url::SftpUrl;
use prism_sync::remote::webdav::url::WebdavUrl;

use crate::engine::{Target, label, seeds, words};

const DICTIONARY: &[&[u8]] = &[
    b"file://",
    b"sftp://",
    b"webdav://",
    b"webdavs://",
    b"s3://",
    b"://",
    b"@",
    b":",
    b"me@",
    b"me:secret@",
    b"git+",
    b"::",
    b"[::1]",
    b"[::1]:8080",
    b"[",
    b"]",
    b":22",
    b":0",
    b":65536",
    b":-1",
    b"localhost",
    b"127.0.0.1",
    b"/~/",
    b"?",
    b"#",
];

pub fn target() -> Target {
    Target {
        name: "remote_url",
        seeds: seeds("remote_url"),
        dictionary: DICTIONARY,
        max_len: 4 * 1024,
        // Messages quote the URL with `{:?}`, which spells a control
        // character in up to ten bytes.
        memory_budget: |len| 64 * len + 64 * 1024,
        run,
    }
}

fn run(input: &[u8]) -> u64 {
    let url = String::from_utf8_lossy(input);
    match RemoteUrl::parse(&url) {
        Ok(remote) => {
            let shown = remote.to_string();
            let parses_back = || {
                assert_eq!(
                    RemoteUrl::parse(&shown).as_ref(),
                    Ok(&remote),
                    "{shown:?} does not parse back"
                )
            };
            if let Some(file) = remote.get::<FileUrl>() {
                assert!(file.folder.is_absolute(), "{:?}", file.folder);
            } else if let Some(sftp) = remote.get::<SftpUrl>() {
                assert!(!sftp.host.is_empty());
                is_loopback_host(&sftp.host);
            } else if let Some(webdav) = remote.get::<WebdavUrl>() {
                assert!(!webdav.host.is_empty());
                is_loopback_host(&webdav.host);
                parses_back();
            } else if let Some(s3) = remote.get::<S3Url>() {
                assert!(!s3.bucket.is_empty());
                parses_back();
            } else if let Some(rclone) = remote.get::<RcloneUrl>() {
                // It goes to rclone as a remote: never an option.
                let name = &rclone.remote;
                assert!(!name.is_empty() && !name.starts_with('-'), "{name:?}");
                parses_back();
            } else if let Some(git) = remote.get::<GitUrl>() {
                // It becomes an argument of git: never an option.
                let url = &git.url;
                assert!(!url.is_empty() && !url.starts_with('-'), "{url:?}");
                parses_back();
            }
            for decoded in decoded_parts(&url) {
                escapes_are_well_formed(decoded);
            }
            label(("ok", remote.scheme(), shape_of(&remote)))
        }
        Err(message) => {
            if let Some(secret) = password(&url) {
                assert!(
                    !message.contains(secret),
                    "{message:?} echoes the password {secret:?}"
                );
            }
            label(("err", words(&message, input, 6)))
        }
    }
}

/// The parts of an accepted URL that the parser percent-decodes: a file
/// URL's path, an SFTP URL's user and path, an S3 URL's prefix. (Hosts
/// and WebDAV paths are kept as written.)
fn decoded_parts(url: &str) -> Vec<&str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    match scheme {
        "file" => vec![rest],
        "s3" => vec![rest.split_at(rest.find('/').unwrap_or(rest.len())).1],
        "sftp" => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let user = authority.rsplit_once('@').map_or("", |(user, _)| user);
            vec![user, path]
        }
        _ => Vec::new(),
    }
}

/// Every `%` of a decoded part starts a two-hex-digit escape.
pub fn escapes_are_well_formed(text: &str) {
    for (i, _) in text.match_indices('%') {
        let hex = text.as_bytes().get(i + 1..i + 3);
        assert!(
            hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)),
            "{text:?} was accepted with a malformed escape at byte {i}"
        );
    }
}

/// The userinfo of a URL that has a password, as the parser defines one
/// (a ':' before the last '@'), when at least four bytes long so that a
/// chance match with the message's own words is unlikely.
fn password(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let userinfo = &rest[..rest.rfind('@')?];
    (scheme != "file"
        && userinfo.contains(':')
        && userinfo.len() >= 4
        && !scheme.contains(userinfo))
    .then_some(userinfo)
}

fn shape_of(remote: &RemoteUrl) -> (bool, bool) {
    if let Some(sftp) = remote.get::<SftpUrl>() {
        (sftp.user.is_some(), sftp.port == 22)
    } else if let Some(webdav) = remote.get::<WebdavUrl>() {
        (false, webdav.port.is_some())
    } else if let Some(s3) = remote.get::<S3Url>() {
        (false, s3.prefix.is_empty())
    } else if let Some(git) = remote.get::<GitUrl>() {
        (git.url.contains("://"), git.url.contains('@'))
    } else if let Some(rclone) = remote.get::<RcloneUrl>() {
        (rclone.remote.starts_with(':'), rclone.remote.contains(','))
    } else {
        (false, false)
    }
}
