//! The backends, one line each, and the rules every remote URL and every
//! pair's remote keys follow whatever the backend: control characters and
//! passwords in URLs are refused, and a key is taken by the pair's own
//! backend or refused with the remotes it applies to.

use super::backend::{KeyError, PairKeys, PairRemote, Registration, RemoteUrl, UrlForm};
use super::{git, local, rclone, s3, sftp, webdav};

/// Every backend. A URL goes to the first whose form it has.
pub const BACKENDS: &[Registration] = &[
    local::url::REGISTRATION,
    sftp::url::REGISTRATION,
    webdav::url::REGISTRATION,
    s3::settings::REGISTRATION,
    git::settings::REGISTRATION,
    rclone::settings::REGISTRATION,
];

/// Parses a remote URL with its backend. No message repeats what may be
/// the URL's password, whichever rule or backend refuses it (see
/// [`without_password`]).
pub fn parse(url: &str) -> Result<RemoteUrl, String> {
    parse_with_backend(url).map_err(|message| without_password(url, message))
}

/// `message`, about `url`, with what may be a password in `url` replaced
/// by `***`. People write a password as `user:password@` even where no
/// password rule runs: a URL without a scheme (`me:pw@nas/backup`), a
/// `file://` one (`file://me:pw@nas/x`), a form a backend reads itself.
/// So whatever lies between a `:` and the last `@` after the scheme counts
/// as one. Quotes of the whole URL show it redacted; a part quoted alone
/// (a path, a host) has the secret cut out where it appears.
fn without_password(url: &str, message: String) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let Some(at) = rest.rfind('@') else {
        return message;
    };
    let Some(colon) = rest[..at].find(':') else {
        return message;
    };
    let secret = &rest[colon + 1..at];
    if secret.is_empty() || !message.contains(secret) {
        return message;
    }
    let redacted = format!("{}***{}", &url[..start + colon + 1], &rest[at..]);
    let message = message
        .replace(&format!("{url:?}"), &format!("{redacted:?}"))
        .replace(url, &redacted);
    message.replace(secret, "***")
}

fn parse_with_backend(url: &str) -> Result<RemoteUrl, String> {
    // URL parsers drop tabs and line breaks silently (the WHATWG rules),
    // so the URL used would differ from the one written: a character
    // that belongs in a path is written as a %-escape.
    if url.chars().any(char::is_control) {
        return Err(
            "the remote URL holds a control character (a line break, a tab, …); \
                    write one that belongs in a path as a %-escape, as in %0A"
                .to_owned(),
        );
    }
    for backend in BACKENDS {
        for form in backend.forms {
            if let UrlForm::Prefix { prefix, .. } = form
                && url.starts_with(prefix)
            {
                return (backend.parse)(url);
            }
        }
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        let examples: Vec<&str> = BACKENDS.iter().map(|b| b.example).collect();
        return Err(format!("{url:?} is not a URL; write {}", list(&examples)));
    };
    let found = BACKENDS.iter().find_map(|backend| {
        backend.forms.iter().find_map(|form| match form {
            UrlForm::Host(name) | UrlForm::Path(name) if *name == scheme => Some((backend, form)),
            _ => None,
        })
    });
    // A password in the URL is refused before anything else looks at
    // it, and no message echoes such a URL. Userinfo cannot hold '/'
    // unencoded, but people write it anyway: any ':' before the last
    // '@' counts.
    if !matches!(found, Some((_, UrlForm::Path(_))))
        && let Some(at) = rest.rfind('@')
        && rest[..at].contains(':')
    {
        return Err(format!(
            "the {scheme} URL has a ':' before its '@', which would be a password; keep \
             passwords out of the config (see the README for where passwords go). If the '@' \
             belongs to the path, write it as %40"
        ));
    }
    match found {
        Some((backend, _)) => (backend.parse)(url),
        None => {
            let forms: Vec<String> = BACKENDS
                .iter()
                .flat_map(|b| b.forms)
                .map(|form| match form {
                    UrlForm::Host(name) | UrlForm::Path(name) => format!("{name}://"),
                    UrlForm::Prefix { prefix, rest } => format!("{prefix}{rest}"),
                })
                .collect();
            let forms: Vec<&str> = forms.iter().map(String::as_str).collect();
            Err(format!(
                "the remote scheme {scheme:?} is not supported; use {}",
                list(&forms)
            ))
        }
    }
}

/// Validates the backend keys of a pair whose remote is `url`: its
/// backend takes its own; a key left is another backend's (refused with
/// the remotes it applies to) or no pair key at all.
pub fn configure(url: &RemoteUrl, mut keys: PairKeys) -> Result<PairRemote, KeyError> {
    // A backend's keys may also sit in a table of their own, named after
    // the backend (`[pair.sftp]`, `[pair.s3]`): both forms work.
    let shown = url.to_string();
    if let Some(backend) = BACKENDS
        .iter()
        .find(|b| b.forms.iter().any(|f| names(f, &shown)))
    {
        keys.merge_table(table_name(backend))?;
    }
    let remote = url.configure(&mut keys)?;
    if let Some(key) = keys.remaining().next() {
        return Err((key.to_owned(), not_taken(key)));
    }
    Ok(remote)
}

/// Whether `url` (as shown) has the URL form `form`.
fn names(form: &UrlForm, url: &str) -> bool {
    match form {
        UrlForm::Host(name) | UrlForm::Path(name) => url
            .split_once("://")
            .is_some_and(|(scheme, _)| scheme == *name),
        UrlForm::Prefix { prefix, .. } => url.starts_with(prefix),
    }
}

/// The name of the table a backend's keys may sit in: its first URL
/// form's scheme or prefix, without punctuation (`sftp`, `webdav`, `s3`,
/// `git`, `rclone`).
fn table_name(backend: &Registration) -> &'static str {
    match backend.forms.first() {
        Some(UrlForm::Host(name) | UrlForm::Path(name)) => name,
        Some(UrlForm::Prefix { prefix, .. }) => prefix.trim_end_matches(['+', ':']),
        None => "",
    }
}

/// Why a pair's `key` was left by its backend: it is another backend's
/// (or another backend's table), or no backend's.
fn not_taken(key: &str) -> String {
    let owners: Vec<&str> = BACKENDS
        .iter()
        .filter(|b| b.keys.contains(&key) || table_name(b) == key)
        .map(|b| b.remotes)
        .collect();
    if owners.is_empty() {
        let known: Vec<&str> = BACKENDS.iter().flat_map(|b| b.keys).copied().collect();
        format!(
            "unknown key `{key}`; besides name, local, remote, conflict, ignore and the \
             encryption keys, a pair takes its remote's own keys: {}",
            known.join(", ")
        )
    } else {
        format!("only applies to {} remotes; remove it", owners.join(" or "))
    }
}

/// `a, b, c or d`.
fn list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_backends_claim_one_url_form() {
        let mut seen = std::collections::BTreeSet::new();
        for form in BACKENDS.iter().flat_map(|b| b.forms) {
            let name = match form {
                UrlForm::Host(name) | UrlForm::Path(name) => format!("{name}://"),
                UrlForm::Prefix { prefix, .. } => (*prefix).to_owned(),
            };
            assert!(seen.insert(name.clone()), "{name} is claimed twice");
        }
        // A prefix that another form starts with would take its URLs.
        for form in BACKENDS.iter().flat_map(|b| b.forms) {
            if let UrlForm::Prefix { prefix, .. } = form {
                for other in &seen {
                    assert!(
                        other == prefix || !other.starts_with(prefix),
                        "{prefix} takes {other}"
                    );
                }
            }
        }
    }

    #[test]
    fn each_backend_parses_its_example() {
        for backend in BACKENDS {
            let url = RemoteUrl::parse(backend.example).unwrap();
            assert_eq!(RemoteUrl::parse(&url.to_string()).unwrap(), url, "{url}");
        }
    }

    #[test]
    fn each_backend_takes_every_key_it_registers() {
        let values = [
            toml::Value::from("/x"),
            toml::Value::from(true),
            toml::Value::from(1),
        ];
        for backend in BACKENDS {
            let url = RemoteUrl::parse(backend.example).unwrap();
            for key in backend.keys {
                for value in &values {
                    let keys = PairKeys::new([((*key).to_owned(), value.clone())].into());
                    if let Err((named, message)) = configure(&url, keys) {
                        assert_eq!(named, *key, "{message}");
                        assert_ne!(message, not_taken(key), "{url} leaves {key}");
                    }
                }
            }
        }
    }

    /// Every URL form, and none, with a password written in the ways
    /// people write one and then something else wrong: whichever rule
    /// refuses it, the message does not repeat the password.
    #[test]
    fn no_parse_error_repeats_a_password() {
        let mut prefixes = vec![String::new(), "nonsense://".to_owned()];
        for form in BACKENDS.iter().flat_map(|b| b.forms) {
            match form {
                UrlForm::Host(name) | UrlForm::Path(name) => prefixes.push(format!("{name}://")),
                UrlForm::Prefix { prefix, .. } => {
                    prefixes.push((*prefix).to_owned());
                    for inner in ["ssh://", "https://", "file://", "ftp://", ":"] {
                        prefixes.push(format!("{prefix}{inner}"));
                    }
                }
            }
        }
        let logins = ["me:hunter2@", ":hunter2@", "me:hunter2@x@", "me:hunt/er2@"];
        let rests = [
            "nas/backup",
            "nas",
            "nas:notaport/x",
            "/x",
            "nas/%zz",
            "nas/%FF",
            "nas/a/../b",
            "[::1/x",
            "nas/x?q#f",
        ];
        let mut refused = 0;
        for prefix in &prefixes {
            for login in logins {
                for rest in rests {
                    let url = format!("{prefix}{login}{rest}");
                    if let Err(message) = parse(&url) {
                        refused += 1;
                        let secret = login.split(['@', ':']).nth(1).unwrap();
                        assert!(!message.contains(secret), "{url}: {message}");
                        assert!(!message.contains("hunter2"), "{url}: {message}");
                    }
                }
            }
        }
        assert!(refused > prefixes.len() * logins.len(), "{refused}");
        // A quote of the whole URL keeps its shape.
        let message = parse("me:hunter2@nas/backup").unwrap_err();
        assert!(message.contains("\"me:***@nas/backup\""), "{message}");
    }

    #[test]
    fn a_key_no_backend_takes_is_refused_by_name() {
        let url = RemoteUrl::parse("file:///srv/x").unwrap();
        let keys = [("passwrd".to_owned(), toml::Value::from("x"))];
        let (key, message) = configure(&url, PairKeys::new(keys.into())).unwrap_err();
        assert_eq!(key, "passwrd");
        assert!(message.contains("unknown key"), "{message}");
        assert!(message.contains("known_hosts, "), "{message}");
    }

    #[test]
    fn a_backends_keys_may_sit_in_a_table_of_its_own() {
        let keys = |pairs: &[(&str, toml::Value)]| {
            PairKeys::new(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
            )
        };
        let table = |pairs: &[(&str, &str)]| {
            toml::Value::Table(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), toml::Value::from(*v)))
                    .collect(),
            )
        };
        for (url, table_name, key, value) in [
            (
                "sftp://me@nas/notes",
                "sftp",
                "known_hosts",
                "/etc/ssh/known",
            ),
            ("webdavs://dav.example/notes", "webdav", "username", "me"),
            ("s3://bucket/notes", "s3", "region", "eu-west-1"),
            ("git+ssh://host/notes.git", "git", "branch", "notes"),
            (
                "rclone:drive:Notes",
                "rclone",
                "rclone_binary",
                "/usr/bin/rclone",
            ),
        ] {
            let url = RemoteUrl::parse(url).unwrap();
            let flat = configure(&url, keys(&[(key, toml::Value::from(value))])).unwrap();
            let tabled = configure(&url, keys(&[(table_name, table(&[(key, value)]))])).unwrap();
            assert!(
                flat == tabled,
                "{url}: [pair.{table_name}] {key} = {value:?}"
            );

            let both = keys(&[
                (key, toml::Value::from(value)),
                (table_name, table(&[(key, value)])),
            ]);
            let (named, message) = configure(&url, both).unwrap_err();
            assert_eq!(named, format!("{table_name}.{key}"));
            assert!(message.contains("set twice"), "{message}");
        }
        // Another backend's table is refused like its keys.
        let url = RemoteUrl::parse("file:///srv/x").unwrap();
        let (key, message) =
            configure(&url, keys(&[("sftp", table(&[("known_hosts", "/k")]))])).unwrap_err();
        assert_eq!(key, "sftp");
        assert!(message.contains("only applies to sftp://"), "{message}");
        // A table name that is no table.
        let url = RemoteUrl::parse("sftp://nas/notes").unwrap();
        let (key, message) = configure(&url, keys(&[("sftp", toml::Value::from(1))])).unwrap_err();
        assert_eq!(key, "sftp");
        assert!(message.contains("must be a table"), "{message}");
    }
}
