//! What is written after `rclone:`, parsed the way rclone parses it (its
//! `fs/fspath`): `NAME:PATH` names a remote of the user's rclone config; a
//! connection string gives a backend and its options in place,
//! `:BACKEND,KEY=VALUE,…:PATH`, or overrides options of a named remote,
//! `NAME,KEY=VALUE:PATH`. A value that holds a `,` or a `:` (a URL) is
//! quoted with `'` or `"`; inside, a doubled quote stands for one. A key
//! without a value means `true`.
//!
//! **Why the rcd never sees a connection string in a call.** Reads go
//! through the rcd's `--rc-serve`, as the HTTP path `/[REMOTE:PATH]/FILE`,
//! and rclone cleans that path: the `//` of a URL among the options becomes
//! `/`, and the read fails. So a connection string is handed to the rcd
//! once, in its environment, as a remote of its own ([`Definition`]): an
//! `alias` remote (rclone's `RCLONE_CONFIG_<NAME>_TYPE` and `_REMOTE`
//! variables) whose target is the string itself, which rclone parses as it
//! always does. Every call (listing, reads, writes, the lease, the trash)
//! then names `NAME:PATH`. Nothing is written to any config file, and the
//! definition prints without its target.

use std::fmt;

use sha2::{Digest, Sha256};

/// A remote after `rclone:`, as rclone reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct RcloneRemote {
    /// The remote's name as written: `gdrive`, or `:webdav` for a
    /// backend given in place.
    name: String,
    /// The options of a connection string, in order.
    options: Vec<(String, String)>,
    /// Everything before the `:` that ends the options (or the name).
    config_string: String,
    /// Everything after it.
    path: String,
}

/// A remote the rcd knows from its environment only: the stand-in for a
/// connection string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Definition {
    /// A remote name of ours (`prism_sync_` and a hash of the string).
    name: String,
    /// The connection string without its path, ending in `:`.
    target: String,
}

impl Definition {
    /// The remote's name, to write `NAME:PATH` with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The variables that define it for rclone (as `rclone config` would
    /// write `[NAME] type = alias, remote = TARGET`).
    pub fn environment(&self) -> [(String, String); 2] {
        let prefix = format!("RCLONE_CONFIG_{}", self.name.to_ascii_uppercase());
        [
            (format!("{prefix}_TYPE"), "alias".to_owned()),
            (format!("{prefix}_REMOTE"), self.target.clone()),
        ]
    }
}

/// Without its target: a connection string's options may hold what the
/// user would rather not see in a log.
impl fmt::Debug for Definition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Definition({} = <connection string>)", self.name)
    }
}

impl fmt::Debug for RcloneRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.options.iter().map(|(key, _)| key.as_str()).collect();
        f.debug_struct("RcloneRemote")
            .field("name", &self.name)
            .field("option_keys", &keys)
            .field("path", &self.path)
            .finish()
    }
}

impl RcloneRemote {
    /// The remote's name as written (`gdrive`, `:webdav`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path after the name and the options.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The options of a connection string, in order; a key without a value
    /// has `true`.
    pub fn options(&self) -> &[(String, String)] {
        &self.options
    }

    /// A backend given in place, or options given for a named remote.
    pub fn is_connection_string(&self) -> bool {
        self.name.starts_with(':') || !self.options.is_empty()
    }

    /// The remote for the rcd's calls (`NAME:PATH`, with the path as
    /// written) and, for a connection string, the definition the rcd needs
    /// in its environment to know that `NAME`.
    pub fn for_rcd(&self) -> (String, Option<Definition>) {
        if !self.is_connection_string() {
            return (format!("{}:{}", self.config_string, self.path), None);
        }
        let digest = Sha256::digest(self.config_string.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let definition = Definition {
            name: format!("prism_sync_{hex}"),
            target: format!("{}:", self.config_string),
        };
        (
            format!("{}:{}", definition.name, self.path),
            Some(definition),
        )
    }
}

/// What a remote is written like, for error messages.
const EXAMPLE: &str = "write rclone:NAME:PATH (NAME a remote of your rclone config, as in \
                       rclone:gdrive:Notes) or a connection string, as in \
                       rclone::webdav,url='https://dav.example.org/':Notes";

/// Parses `remote` as rclone does, refusing what rclone would not take as
/// a remote (a local path, a bad name, a broken option) and options that
/// are login secrets. Messages never repeat an option's value: it may be a
/// password.
pub fn parse(remote: &str) -> Result<RcloneRemote, String> {
    if remote.is_empty() {
        return Err(format!("the rclone remote names nothing; {EXAMPLE}"));
    }
    if remote.starts_with('-') {
        return Err("an rclone remote must not start with '-'".into());
    }
    let at = |i: usize| format!("at character {} of the rclone remote", i + 1);

    enum State {
        Name,
        Key,
        Value,
        Quoted(char),
        AfterQuote(char),
    }
    let mut state = State::Name;
    let mut name = None;
    let mut options = Vec::new();
    let mut key = String::new();
    // Where the part being read (name, key or value) starts.
    let mut start = 0;
    let mut doubled = false;
    let mut end = None;
    for (i, c) in remote.char_indices() {
        match state {
            State::Name => match c {
                ':' if i == 0 => {}
                // rclone takes a '/' before the name's end for a local path.
                '/' | '\\' => {
                    return Err(format!(
                        "the rclone remote has no ':' after its name; {EXAMPLE}"
                    ));
                }
                ':' | ',' => {
                    name = Some(check_name(&remote[..i])?);
                    start = i + 1;
                    if c == ':' {
                        end = Some(i);
                        break;
                    }
                    state = State::Key;
                }
                _ => {}
            },
            State::Key => match c {
                ':' | ',' | '=' => {
                    key = remote[start..i].to_owned();
                    if key.is_empty() {
                        return Err(format!("an option has no name ({})", at(i)));
                    }
                    start = i + 1;
                    match c {
                        '=' => state = State::Value,
                        _ => {
                            options.push((std::mem::take(&mut key), "true".to_owned()));
                            if c == ':' {
                                end = Some(i);
                                break;
                            }
                        }
                    }
                }
                c if c.is_ascii_alphanumeric() || matches!(c, '_' | '.') => {}
                _ => {
                    return Err(format!(
                        "an option name may hold only letters, digits, '_' and '.' ({}); {EXAMPLE}",
                        at(i)
                    ));
                }
            },
            State::Value => match c {
                '\'' | '"' if i == start => {
                    state = State::Quoted(c);
                    start = i + 1;
                    doubled = false;
                }
                ':' | ',' => {
                    options.push((std::mem::take(&mut key), remote[start..i].to_owned()));
                    start = i + 1;
                    if c == ':' {
                        end = Some(i);
                        break;
                    }
                    state = State::Key;
                }
                _ => {}
            },
            State::Quoted(quote) => {
                if c == quote {
                    state = State::AfterQuote(quote);
                }
            }
            State::AfterQuote(quote) => match c {
                ':' | ',' => {
                    let mut value = remote[start..i - 1].to_owned();
                    if doubled {
                        value = value.replace(&format!("{quote}{quote}"), &quote.to_string());
                    }
                    options.push((std::mem::take(&mut key), value));
                    start = i + 1;
                    if c == ':' {
                        end = Some(i);
                        break;
                    }
                    state = State::Key;
                }
                c if c == quote => {
                    state = State::Quoted(quote);
                    doubled = true;
                }
                _ => {
                    return Err(format!(
                        "a quoted option value must end with its quote followed by ',' or ':' \
                         (write a quote inside it twice) ({})",
                        at(i)
                    ));
                }
            },
        }
    }
    let Some(end) = end else {
        return Err(match state {
            State::Name => format!("the rclone remote has no ':' after its name; {EXAMPLE}"),
            State::Key | State::Value => format!(
                "the rclone remote's options must end with ':' (a value that holds ',' or ':' \
                 is quoted: url='https://…'); {EXAMPLE}"
            ),
            State::Quoted(_) | State::AfterQuote(_) => format!(
                "a quoted option value of the rclone remote has no closing quote, or no ':' \
                 after it; {EXAMPLE}"
            ),
        });
    };
    let name = name.expect("a name ends before the options");
    let path = remote[end + 1..].to_owned();
    if !options.is_empty() && path.starts_with("//") {
        return Err(format!(
            "the rclone remote's path starts with '//': an option value that holds ':' (a URL) \
             must be quoted, as in url='https://…'; {EXAMPLE}"
        ));
    }
    let in_place = name.starts_with(':') || !options.is_empty();
    if in_place && !is_plain_path(&path) {
        return Err(format!(
            "the path after the rclone remote's options must not hold a '..' or '.' part or \
             an empty one ('a//b'): the remote rclone is given for the connection string \
             would take it differently from rclone itself ('..' would stay below the \
             start); write the folder plainly, as in :local:/srv/notes; {EXAMPLE}"
        ));
    }
    if let Some((key, _)) = options.iter().find(|(key, _)| is_secret_option(key)) {
        return Err(format!(
            "the rclone remote carries the option {key:?}, a login secret, which would stay \
             in the config in plain text; define the remote with `rclone config` and write \
             rclone:NAME:PATH"
        ));
    }
    if let Some((key, _)) = options
        .iter()
        .find(|(key, value)| sends_login_header(key, value))
    {
        return Err(format!(
            "the rclone remote's option {key:?} sends a header that logs in (a token, a \
             cookie, an API key), which would stay in the config in plain text; define the \
             remote with `rclone config` and write rclone:NAME:PATH"
        ));
    }
    if let Some((key, _)) = options.iter().find(|(_, value)| holds_url_password(value)) {
        return Err(format!(
            "the rclone remote's option {key:?} holds a URL with a password in it, which would \
             stay in the config in plain text; define the remote with `rclone config` and write \
             rclone:NAME:PATH"
        ));
    }
    Ok(RcloneRemote {
        name,
        options,
        config_string: remote[..end].to_owned(),
        path,
    })
}

/// Whether `path` means the same to rclone written after a connection
/// string and after the `alias` remote that stands in for it
/// ([`RcloneRemote::for_rcd`]): the alias joins it to its target as a
/// clean path from the root (Go's `path.Join("/", …)`), which drops `.`
/// and empty parts and stops `..` at the start, where the backend itself
/// would go above it (`:local:../x` is the folder `x` beside the working
/// folder; through the alias, the folder `x` inside it).
fn is_plain_path(path: &str) -> bool {
    let inner = path.strip_prefix('/').unwrap_or(path);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    inner.is_empty()
        || inner
            .split('/')
            .all(|part| !matches!(part, "" | "." | ".."))
}

/// `name` if rclone takes it as a remote name (or, after a leading ':', a
/// backend's): letters, digits, `_`, `-`, `.`, `+`, `@` and spaces, not
/// starting with `-` or a space, not ending with a space.
fn check_name(name: &str) -> Result<String, String> {
    let bare = name.strip_prefix(':').unwrap_or(name);
    let valid = !bare.is_empty()
        && bare
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '+' | '@' | ' '))
        && !bare.starts_with([' ', '-'])
        && !bare.ends_with(' ');
    if valid {
        Ok(name.to_owned())
    } else if bare.is_empty() {
        Err(format!(
            "the rclone remote names no backend after its leading ':'; {EXAMPLE}"
        ))
    } else {
        // Not echoed: what was meant as a name may hold a password.
        Err(format!(
            "the rclone remote's name is not one rclone takes (letters, digits, '_', '-', '.', \
             '+', '@' and spaces); {EXAMPLE}"
        ))
    }
}

/// Whether a connection string's option `key` is a login secret (rclone
/// keeps such options obscured in its config, or they are keys and tokens
/// in plain): such a string would keep the secret in our config.
fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    // `key` (B2, Azure Blob), a SAS URL (Azure), service-account JSON
    // (Drive), and secrets whose names say little: an Azure connection
    // string holds the account key, iCloud's cookies and Mega's session ID
    // are a logged-in session, Storj's access grant and Internxt's mnemonic
    // are the keys themselves, SugarSync's authorization is a token.
    let named = [
        "key",
        "account_key",
        "sas_url",
        "service_account_credentials",
        "connection_string",
        "cookies",
        "session_id",
        "access_grant",
        "mnemonic",
        "authorization",
    ];
    let within = [
        "pass",
        "token",
        "secret",
        "key_pem",
        "private_key",
        "api_key",
        "credentials",
    ];
    // A key by any name (Seafile's `library_key`, Mega's `master_key`,
    // S3's `sse_customer_key` and its `_base64` and `_md5` forms), but
    // not a server's public host key.
    let stem = ["_base64", "_md5", "_sha256"]
        .iter()
        .find_map(|suffix| key.strip_suffix(suffix))
        .unwrap_or(&key);
    let stem = stem.strip_suffix('s').unwrap_or(stem);
    let a_key = (stem == "key" || stem.ends_with("_key")) && !stem.ends_with("host_key");
    (named.contains(&key.as_str()) || within.iter().any(|part| key.contains(part)) || a_key)
        && !key.ends_with("_file")
}

/// Whether the option `key` is the HTTP headers of every request (WebDAV,
/// HTTP: `headers="Authorization,Bearer …"`) and `value` names one that
/// logs in: a token by another name.
fn sends_login_header(key: &str, value: &str) -> bool {
    let value = value.to_ascii_lowercase();
    key.eq_ignore_ascii_case("headers")
        && [
            "auth", "cookie", "token", "key", "secret", "session", "pass",
        ]
        .iter()
        .any(|word| value.contains(word))
}

/// Whether `value` is a URL with a password in it
/// (`https://user:password@host/`).
fn holds_url_password(value: &str) -> bool {
    let Some((_, rest)) = value.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(key: &str, value: &str) -> (String, String) {
        (key.to_owned(), value.to_owned())
    }

    #[test]
    fn named_remotes_are_taken_as_they_are() {
        let remote = parse("gdrive:Notes/a").unwrap();
        assert_eq!(
            (remote.name(), remote.path(), remote.options()),
            ("gdrive", "Notes/a", &[][..])
        );
        assert!(!remote.is_connection_string());
        assert_eq!(remote.for_rcd(), ("gdrive:Notes/a".to_owned(), None));
        assert_eq!(parse("my remote:/abs").unwrap().path(), "/abs");
        assert_eq!(parse("gdrive:").unwrap().path(), "");
    }

    #[test]
    fn quoted_values_hold_colons_commas_and_doubled_quotes() {
        let remote = parse(":webdav,url='http://127.0.0.1:8080/dav',vendor=other:notes").unwrap();
        assert_eq!(remote.name(), ":webdav");
        assert_eq!(
            remote.options(),
            [
                option("url", "http://127.0.0.1:8080/dav"),
                option("vendor", "other")
            ]
        );
        assert_eq!(remote.path(), "notes");

        let remote = parse(r#":sftp,host="nas,1",user='it''s':a:b"#).unwrap();
        assert_eq!(
            remote.options(),
            [option("host", "nas,1"), option("user", "it's")]
        );
        // The path is everything after the options, ':' and all.
        assert_eq!(remote.path(), "a:b");
        let remote = parse(r#":local,description="say ""hi""",links:/srv"#).unwrap();
        assert_eq!(
            remote.options(),
            [
                option("description", r#"say "hi""#),
                option("links", "true")
            ]
        );
        // A quote inside an unquoted value is a character like any other.
        let remote = parse(":local,description=it's:x").unwrap();
        assert_eq!(remote.options(), [option("description", "it's")]);
        // Options may override those of a named remote.
        let remote = parse("gdrive,shared_with_me:Notes").unwrap();
        assert_eq!(remote.name(), "gdrive");
        assert!(remote.is_connection_string());
    }

    #[test]
    fn a_connection_string_reaches_the_rcd_as_a_remote_of_its_environment() {
        let written = ":webdav,url='http://127.0.0.1:8080/dav':notes/sub";
        let (fs, definition) = parse(written).unwrap().for_rcd();
        let definition = definition.unwrap();
        assert!(definition.name().starts_with("prism_sync_"));
        assert_eq!(fs, format!("{}:notes/sub", definition.name()));
        let upper = definition.name().to_ascii_uppercase();
        assert_eq!(
            definition.environment(),
            [
                (format!("RCLONE_CONFIG_{upper}_TYPE"), "alias".to_owned()),
                (
                    format!("RCLONE_CONFIG_{upper}_REMOTE"),
                    ":webdav,url='http://127.0.0.1:8080/dav':".to_owned()
                ),
            ]
        );
        // One name per string, whatever the path; another string, another.
        let other_path = parse(":webdav,url='http://127.0.0.1:8080/dav':x").unwrap();
        assert_eq!(other_path.for_rcd().1.unwrap(), definition);
        let other = parse(":webdav,url='http://127.0.0.1:9090/dav':notes").unwrap();
        assert_ne!(other.for_rcd().1.unwrap().name(), definition.name());
        // A backend in place without options is defined the same way.
        assert!(parse(":local:/srv").unwrap().for_rcd().1.is_some());
        // Its debug form keeps the target out of logs.
        assert!(!format!("{definition:?}").contains("8080"));
    }

    #[test]
    fn what_rclone_would_not_take_is_refused_with_a_reason() {
        let refused = |remote: &str, says: &str| {
            let message = parse(remote).unwrap_err();
            assert!(message.contains(says), "{remote}: {message}");
        };
        refused("", "names nothing");
        refused("notes", "no ':' after its name");
        refused("/abs/path:x", "no ':' after its name");
        refused("-x:y", "must not start with '-'");
        refused("::notes", "names no backend");
        refused(":,url=x:notes", "names no backend");
        refused("bad!name:x", "not one rclone takes");
        refused(":webdav,=x:notes", "has no name");
        refused(":webdav,u-rl=x:notes", "only letters");
        refused(":webdav,url='http://h/dav'x:notes", "end with its quote");
        refused(":webdav,url='http://h/dav:notes", "no closing quote");
        refused(":webdav,url=x", "must end with ':'");
        refused(":webdav,url=http://h:1/dav:notes", "must be quoted");
        // What the alias standing in for the string would read otherwise.
        refused(":local:../notes", "must not hold a '..'");
        refused(":sftp,host=nas:backup/../other", "must not hold a '..'");
        refused(":s3,provider=Minio:bucket/a//b", "must not hold a '..'");
        refused(":local:./notes", "must not hold a '..'");
        for plain in [
            ":local:/srv/notes/",
            ":local:",
            ":local:/",
            ":local:notes..old/x",
        ] {
            assert!(parse(plain).is_ok(), "{plain}");
        }
        // A remote of the config gets its path as written.
        assert_eq!(parse("nas:../notes").unwrap().path(), "../notes");
    }

    #[test]
    fn secret_options_are_refused_without_repeating_them() {
        for remote in [
            ":sftp,host=nas,pass=hunter2:x",
            ":webdav,url='http://h/',password='hunter2':x",
            ":s3,secret_access_key=hunter2:b",
            ":b2,account=a,key=hunter2:b",
            ":webdav,bearer_token=hunter2:x",
            "gdrive,service_account_credentials='{hunter2}':x",
            ":webdav,url='https://me:hunter2@h/dav':x",
            ":webdav,url='https://h/',headers='Authorization,Bearer hunter2':x",
            r#":http,url='https://h/',headers='""Cookie"",""sid=hunter2""':x"#,
            ":webdav,headers='X-Api-Key,hunter2':x",
        ] {
            let message = parse(remote).unwrap_err();
            assert!(
                (message.contains("login secret")
                    || message.contains("password in it")
                    || message.contains("header that logs in"))
                    && !message.contains("hunter2"),
                "{remote}: {message}"
            );
        }
        assert!(parse(":sftp,key_file=/k:x").is_ok());
        assert!(parse(":webdav,headers='Accept-Language,de':x").is_ok());
        // A secret-looking value under a harmless key is just a value, and
        // a quoted comma does not start an option.
        assert!(parse(":webdav,url='http://h/?a,pass=1':x").is_ok());
        // A user name alone in a URL is no secret.
        assert!(parse(":webdav,url='https://me@h/dav?a=b:c@d':x").is_ok());
    }

    /// Every option a current rclone keeps obscured (`IsPassword`) or
    /// redacts as `Sensitive` is refused, but for those that name an
    /// account, a server or a folder rather than log in to it.
    #[test]
    fn every_option_rclone_treats_as_a_secret_is_refused() {
        let identifying = [
            "access_key_id",
            "account",
            "account_id",
            "api_url",
            "app_id",
            "apple_id",
            "application_credential_id",
            "application_credential_name",
            "base_folder_uuid",
            "client_id",
            "client_uid",
            "cloud_name",
            "compartment",
            "deleted_id",
            "device_id",
            "domain",
            "drive_id",
            "email",
            "host",
            "impersonate",
            "impersonate_admin",
            "msi_client_id",
            "msi_mi_res_id",
            "msi_object_id",
            "namenode",
            "namespace",
            "plex_username",
            "project_number",
            "root_folder_id",
            "root_folder_slug",
            "root_id",
            "service_principal_name",
            "spn",
            "sse_kms_key_id",
            "team_drive",
            "tenant",
            "tenant_domain",
            "tenant_id",
            "url",
            "user",
            "user_id",
            "user_project",
            "username",
            "workspace_id",
        ];
        let out = std::process::Command::new(super::super::tests::current_rclone())
            .args(["config", "providers"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let providers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut secrets = 0;
        for provider in providers.as_array().unwrap() {
            let backend = provider["Name"].as_str().unwrap().replace(' ', "");
            for option in provider["Options"].as_array().unwrap() {
                let key = option["Name"].as_str().unwrap();
                let secret = option["IsPassword"].as_bool().unwrap_or(false)
                    || option["Sensitive"].as_bool().unwrap_or(false);
                if !secret || identifying.contains(&key) {
                    continue;
                }
                secrets += 1;
                let remote = format!(":{backend},{key}=hunter2:x");
                let refused = parse(&remote);
                assert!(
                    refused
                        .as_ref()
                        .is_err_and(|m| m.contains("login secret") && !m.contains("hunter2")),
                    "{remote}: {refused:?}"
                );
            }
        }
        assert!(secrets > 50, "only {secrets} secret options listed");
        // Options that only look like one stay usable.
        for remote in [
            ":sftp,key_use_agent,key_exchange=x:x",
            ":sftp,pubkey_file=/k.pub:x",
            ":sftp,host_key_algorithms=x:x",
            ":s3,sse_customer_key_file=/k,sse_kms_key_id=arn:b",
        ] {
            assert!(parse(remote).is_ok(), "{remote}");
        }
    }

    #[test]
    fn messages_about_names_do_not_repeat_them() {
        let message = parse("hunter2!:x").unwrap_err();
        assert!(!message.contains("hunter2"), "{message}");
    }
}
