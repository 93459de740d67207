//! What a `git+URL` pair says in the config: the URL after the `git+`
//! prefix (anything `git clone` takes: `ssh://`, `https://`, `file://`,
//! or the scp-like `user@host:path`), and the pair keys `branch`,
//! `author_name`, `author_email` and `path`. Passwords and tokens never
//! go in the URL: git's own credential helpers and the user's ssh keys
//! log in.

use std::fmt;
use std::path::PathBuf;

use super::GitReplica;
use crate::config::PairConfig;
use crate::model::RelPath;
use crate::remote::backend::{
    Backend, KeyError, Location, PairKeys, PathText, Reach, Registration, RemoteUrl, UrlForm,
    split_authority, split_host_port,
};
use crate::remote::{RemoteHost, Replica, ReplicaError};
use crate::secrets::Account;

/// The pair keys that only a git remote takes.
pub const KEYS: [&str; 4] = ["branch", "author_name", "author_email", "path"];

pub const REGISTRATION: Registration = Registration {
    forms: &[UrlForm::Prefix {
        prefix: "git+",
        rest: "URL",
    }],
    keys: &KEYS,
    remotes: "git+",
    example: "git+ssh://host/repo.git",
    parse: parse_remote_url,
};

/// `git+URL`: the URL after the prefix, as `git clone` takes it
/// (`ssh://…`, `https://…`, `file:///…`, or `user@host:path`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitUrl {
    pub url: String,
}

fn parse_remote_url(url: &str) -> Result<RemoteUrl, String> {
    let url = parse_url(url.strip_prefix("git+").unwrap_or(url))?;
    Ok(RemoteUrl::new(GitUrl { url }))
}

impl fmt::Display for GitUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "git+{}", self.url)
    }
}

impl Backend for GitUrl {
    type Settings = GitPairSettings;

    fn scheme(&self) -> &'static str {
        "git"
    }

    fn settings(&self, keys: &mut PairKeys) -> Result<GitPairSettings, KeyError> {
        let [branch, author_name, author_email, path] = KEYS;
        validate(
            keys.string(branch)?,
            keys.string(author_name)?,
            keys.string(author_email)?,
            keys.string(path)?,
        )
    }

    fn open(
        &self,
        settings: &GitPairSettings,
        pair: &PairConfig,
        host: RemoteHost<'_>,
    ) -> Result<Box<dyn Replica>, ReplicaError> {
        Ok(Box::new(GitReplica::for_pair(
            &pair.name,
            &self.url,
            settings,
            host.state_dir,
            host.device,
        )))
    }

    fn password_account(&self, _user: Option<String>) -> Result<Account, String> {
        Err(
            "a git remote logs in through git itself (an ssh key or agent, or a git \
             credential helper); Prism Sync keeps no password for it"
                .to_owned(),
        )
    }

    /// Over `ssh`, `https`, `http` and `git` (and the scp-like
    /// `user@host:path`, which is SSH) a server; `file://` a folder;
    /// other transports are local paths or remote helpers (programs).
    fn reach(&self) -> Reach {
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return scp_like_reach(&self.url);
        };
        let server = |scheme: &'static str, port: u16| {
            let (authority, path) = split_authority(rest);
            let (user, host_port) = match authority.rsplit_once('@') {
                Some((user, host)) => (Some(user), host),
                None => (None, authority),
            };
            server_reach(scheme, user, host_port, port, path)
        };
        match scheme.to_ascii_lowercase().as_str() {
            "ssh" | "git+ssh" | "ssh+git" => server("git+ssh", 22),
            "https" => server("git+https", 443),
            "http" => server("git+http", 80),
            "git" => server("git+git", 9418),
            // git reads the path as written; a %-escape would make the
            // folder checked differ from the folder git opens.
            "file" if rest.contains('%') => Reach::Anything(
                "a git+file:// remote added over HTTP must name its folder without %-escapes, \
                 so the folder checked is the folder git opens"
                    .to_owned(),
            ),
            "file" => Reach::Folder(PathBuf::from(rest)),
            _ => Reach::Anything(format!(
                "the git transport {scheme:?} may not be added over HTTP: git hands it to a \
                 program or a local path; use git+ssh://, git+https:// or git+file://"
            )),
        }
    }
}

/// `[user@]host:path`, which git reads as SSH with a path relative to the
/// login's home unless it starts with `/`: placed as `ssh://` would write
/// it (`/~/path`), so both spellings are one place.
fn scp_like_reach(url: &str) -> Reach {
    let Some((login, path)) = url.split_once(':') else {
        return unreadable_server();
    };
    let (user, host) = match login.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, login),
    };
    if host.starts_with('[') {
        return unreadable_server();
    }
    let path = if path.starts_with('/') {
        path.to_owned()
    } else if path.starts_with('~') {
        format!("/{path}")
    } else {
        format!("/~/{path}")
    };
    server_reach("git+ssh", user, host, 22, &path)
}

/// A server git logs in to; `default_port` when `host_port` names none.
/// git hands the URL to ssh or curl, which decode %-escapes differently:
/// a URL with one cannot be placed.
fn server_reach(
    scheme: &'static str,
    user: Option<&str>,
    host_port: &str,
    default_port: u16,
    path: &str,
) -> Reach {
    if [user.unwrap_or_default(), host_port, path]
        .iter()
        .any(|part| part.contains('%'))
    {
        return Reach::Anything(
            "a git remote on a server added over HTTP must be written without %-escapes, so \
             the place checked is the place git reaches"
                .to_owned(),
        );
    }
    let Ok((host, port)) = split_host_port(host_port, "") else {
        return unreadable_server();
    };
    Reach::Server(Location::new(
        scheme,
        user,
        &host,
        Some(port.unwrap_or(default_port)),
        path,
        PathText::Decoded,
    ))
}

fn unreadable_server() -> Reach {
    Reach::Anything(
        "the server of this git remote cannot be read as host and port; add it on the local \
         socket"
            .to_owned(),
    )
}

/// The pair keys of a git remote, as validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GitPairSettings {
    /// `None`: the remote's default branch (`main` in an empty one).
    pub branch: Option<String>,
    /// `None`: the device name.
    pub author_name: Option<String>,
    /// `None`: `DEVICE@prism-sync.invalid`.
    pub author_email: Option<String>,
    /// The subfolder of the repository that is synced; `None`: all of it.
    pub path: Option<RelPath>,
}

/// Checks the URL written after `git+`.
pub fn parse_url(url: &str) -> Result<String, String> {
    if url.is_empty() {
        return Err(
            "the git remote names no repository; write git+ssh://host/repo.git, \
             git+https://host/repo.git, git+file:///srv/repo.git or git+user@host:repo.git"
                .into(),
        );
    }
    // An argument that starts with `-` would read as an option.
    if url.starts_with('-') || url.chars().any(char::is_control) {
        return Err("the git URL must not start with '-' or hold control characters".into());
    }
    // `HELPER::ADDRESS` hands the address to a remote helper (`ext::`
    // runs a command): not a repository URL.
    if let Some((helper, _)) = url.split_once("::")
        && !helper.contains(['/', ':'])
    {
        return Err(format!(
            "the git transport {helper:?} hands the URL to a program; use ssh://, https:// or \
             file://"
        ));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if scheme.starts_with("ext") || scheme == "fd" {
            return Err(format!(
                "the git transport {scheme:?} runs commands; use ssh://, https://, or file://"
            ));
        }
        let authority = rest.split('/').next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            return Err(
                "the git URL holds a password or token (a ':' before its '@'); keep it out of \
                 the config and let a git credential helper or an ssh key log in"
                    .into(),
            );
        }
        // Over HTTP a "user name" is often the token itself
        // (`https://ghp_…@github.com/…`), which would then be shown in
        // status and logs: the credential helper supplies user and token.
        if matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https")
            && authority.contains('@')
        {
            return Err(
                "the git URL names a user before its '@', which over HTTPS is often a token; \
                 write the URL without it and let a git credential helper log in (git config \
                 --global credential.helper store, or your platform's helper)"
                    .into(),
            );
        }
        if scheme == "file" && !rest.starts_with('/') {
            return Err(format!(
                "git+{url} must name an absolute path, as in git+file:///srv/notes.git"
            ));
        }
        return Ok(url.to_owned());
    }
    // The scp-like form: `[user@]host:path`. A ':' before the '@' would
    // be a password.
    if let Some((before, _)) = url.split_once('@')
        && before.contains(':')
    {
        return Err(
            "the git URL holds a password (a ':' before its '@'); keep it out of the config \
             and let an ssh key or a git credential helper log in"
                .into(),
        );
    }
    match url.split_once(':') {
        Some((host, path)) if !host.is_empty() && !path.is_empty() && !host.contains('/') => {
            Ok(url.to_owned())
        }
        _ => Err(format!(
            "git+{url} is not a repository URL; write git+ssh://host/repo.git, \
             git+user@host:repo.git or git+file:///srv/repo.git"
        )),
    }
}

/// Validates the git pair keys, each error naming its key.
pub fn validate(
    branch: Option<String>,
    author_name: Option<String>,
    author_email: Option<String>,
    path: Option<String>,
) -> Result<GitPairSettings, (String, String)> {
    if let Some(branch) = &branch
        && !is_branch_name(branch)
    {
        return Err((
            "branch".into(),
            format!("{branch:?} is not a branch name git accepts"),
        ));
    }
    for (key, value) in [
        ("author_name", &author_name),
        ("author_email", &author_email),
    ] {
        if let Some(value) = value
            && (value.trim().is_empty() || value.contains(['<', '>', '\n', '\0']))
        {
            return Err((
                key.into(),
                "must not be empty or hold '<', '>' or a line break".into(),
            ));
        }
    }
    let path = match path.as_deref().map(|p| p.trim_matches('/')) {
        None | Some("") => None,
        Some(p) => Some(RelPath::new(p).map_err(|e| {
            (
                "path".to_owned(),
                format!("{p:?} is not a folder inside the repository: {e}"),
            )
        })?),
    };
    Ok(GitPairSettings {
        branch,
        author_name,
        author_email,
        path,
    })
}

/// The rules of `git check-ref-format --branch`, for the names people
/// write.
fn is_branch_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && name != "@"
        && !name
            .chars()
            .any(|c| c.is_control() || " ~^:?*[\\".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_git_clone_takes_pass_and_passwords_or_options_do_not() {
        for url in [
            "ssh://git@host/me/notes.git",
            "https://github.com/me/notes.git",
            "file:///srv/notes.git",
            "git@host:me/notes.git",
            "host:notes",
        ] {
            assert_eq!(parse_url(url).unwrap(), url);
        }
        let message = parse_url("https://me:ghp_secret@github.com/x.git").unwrap_err();
        assert!(message.contains("password"), "{message}");
        assert!(!message.contains("ghp_secret"), "{message}");
        assert!(parse_url("--upload-pack=touch /tmp/x").is_err());
        assert!(parse_url("ext::sh -c touch% /tmp/x").is_err());
        assert!(parse_url("file://relative").is_err());
        for token_as_user in [
            "https://ghp_secret@github.com/x.git",
            "HTTP://glpat-secret@gitlab.example/x.git",
        ] {
            let message = parse_url(token_as_user).unwrap_err();
            assert!(message.contains("credential helper"), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
        let message = parse_url("me:hunter2@host:notes.git").unwrap_err();
        assert!(message.contains("password") && !message.contains("hunter2"));
        assert!(parse_url("notes").is_err());
        assert!(parse_url("").is_err());
    }

    #[test]
    fn keys_are_checked_one_by_one() {
        let ok = validate(
            Some("notes/main".into()),
            Some("Ada".into()),
            Some("ada@example.org".into()),
            Some("/journal/".into()),
        )
        .unwrap();
        assert_eq!(ok.path.unwrap().as_str(), "journal");
        let (key, _) = validate(Some("bad name".into()), None, None, None).unwrap_err();
        assert_eq!(key, "branch");
        let (key, _) = validate(None, None, Some("a<b".into()), None).unwrap_err();
        assert_eq!(key, "author_email");
        let (key, _) = validate(None, None, None, Some("../up".into())).unwrap_err();
        assert_eq!(key, "path");
        assert_eq!(
            validate(None, None, None, Some("/".into())).unwrap().path,
            None
        );
    }
}
