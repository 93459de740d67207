//! Where an S3 key pair comes from, the way the AWS tools find it.
//!
//! Order, first hit wins (the AWS CLI's order, where an explicit
//! `--profile` beats the environment's keys):
//!
//! 1. a key pair handed in explicitly ([`CredentialSource::explicit`]; the
//!    secret store will feed this);
//! 2. a profile named in the pair's settings, read from the shared
//!    credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
//!    `~/.aws/credentials`, `[NAME]`), then from the config file
//!    (`AWS_CONFIG_FILE`, else `~/.aws/config`, `[profile NAME]`);
//! 3. `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (with
//!    `AWS_SESSION_TOKEN` when set);
//! 4. the profile `AWS_PROFILE` names, else `default`, from the same files
//!    (missing files are fine here: there may be no credentials at all).
//!
//! The secret key and the session token are [`Secret`]s, so they print as
//! `<redacted>`. No error here quotes a line of a credentials file: a line
//! that cannot be read is named by its number only, since it may hold a
//! secret.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::secrets::Secret;

/// One key pair (and session token) to sign requests with.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// For temporary credentials: sent as `x-amz-security-token`.
    pub session_token: Option<Secret>,
    /// Where they were found, for messages: "the environment", "profile
    /// `work` in ~/.aws/credentials", "the secret store".
    pub origin: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .field("origin", &self.origin)
            .finish()
    }
}

/// What a pair says about its credentials.
#[derive(Clone, Debug, Default)]
pub struct CredentialSource {
    /// A key pair handed in by the caller (the secret store).
    pub explicit: Option<Credentials>,
    /// The pair's `profile` setting.
    pub profile: Option<String>,
}

impl CredentialSource {
    pub fn explicit(credentials: Credentials) -> CredentialSource {
        CredentialSource {
            explicit: Some(credentials),
            profile: None,
        }
    }

    pub fn profile(name: &str) -> CredentialSource {
        CredentialSource {
            explicit: None,
            profile: Some(name.to_owned()),
        }
    }
}

/// Why no usable key pair was found. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
         or put a [{profile}] section with aws_access_key_id and aws_secret_access_key \
         in {file}, or name another profile with the pair's `profile` setting"
    )]
    NotFound { profile: String, file: String },
    #[error(
        "the profile `{profile}` is not in {files}: add a [{profile}] section with \
         aws_access_key_id and aws_secret_access_key, or fix the pair's `profile` setting"
    )]
    NoSuchProfile { profile: String, files: String },
    #[error("the profile `{profile}` in {file} has no {missing}")]
    Incomplete {
        profile: String,
        file: String,
        missing: &'static str,
    },
    #[error("{var} is set but {missing} is not: set both, or neither")]
    HalfEnvironment {
        var: &'static str,
        missing: &'static str,
    },
    #[error("cannot read the AWS credentials file {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("line {line} of {file} is neither a [section], a `name = value` setting nor a comment")]
    Syntax { file: String, line: usize },
}

/// Where the environment and home folder are read from (tests pass their
/// own).
pub struct Environment<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    pub home: Option<PathBuf>,
}

impl Environment<'_> {
    /// The process's environment and home folder.
    pub fn process() -> Environment<'static> {
        Environment {
            var: &|name| std::env::var(name).ok().filter(|v| !v.is_empty()),
            home: directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf()),
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        (self.var)(name).filter(|v| !v.is_empty())
    }

    fn file(&self, var: &str, below_home: &str) -> Option<PathBuf> {
        self.get(var)
            .map(PathBuf::from)
            .or_else(|| self.home.as_ref().map(|h| h.join(below_home)))
    }
}

/// Finds the key pair `source` and `env` give (see the module docs).
pub fn resolve(
    source: &CredentialSource,
    env: &Environment<'_>,
) -> Result<Credentials, CredentialsError> {
    if let Some(explicit) = &source.explicit {
        return Ok(explicit.clone());
    }
    let credentials_file = env.file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    let config_file = env.file("AWS_CONFIG_FILE", ".aws/config");
    if let Some(profile) = &source.profile {
        return from_profile(profile, credentials_file.as_deref(), config_file.as_deref())?
            .ok_or_else(|| CredentialsError::NoSuchProfile {
                profile: profile.clone(),
                files: [credentials_file, config_file]
                    .iter()
                    .flatten()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            });
    }
    match (
        env.get("AWS_ACCESS_KEY_ID"),
        env.get("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => {
            return Ok(Credentials {
                access_key_id: id,
                secret_access_key: Secret::new(secret),
                session_token: env.get("AWS_SESSION_TOKEN").map(Secret::new),
                origin: "the environment (AWS_ACCESS_KEY_ID)".into(),
            });
        }
        (Some(_), None) => {
            return Err(CredentialsError::HalfEnvironment {
                var: "AWS_ACCESS_KEY_ID",
                missing: "AWS_SECRET_ACCESS_KEY",
            });
        }
        (None, Some(_)) => {
            return Err(CredentialsError::HalfEnvironment {
                var: "AWS_SECRET_ACCESS_KEY",
                missing: "AWS_ACCESS_KEY_ID",
            });
        }
        (None, None) => {}
    }
    let profile = env
        .get("AWS_PROFILE")
        .unwrap_or_else(|| "default".to_owned());
    from_profile(
        &profile,
        credentials_file.as_deref(),
        config_file.as_deref(),
    )?
    .ok_or_else(|| CredentialsError::NotFound {
        profile,
        file: credentials_file
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "~/.aws/credentials".into()),
    })
}

/// The profile `name` from the credentials file, else from the config
/// file; `None` when neither has it (or neither exists).
fn from_profile(
    name: &str,
    credentials_file: Option<&Path>,
    config_file: Option<&Path>,
) -> Result<Option<Credentials>, CredentialsError> {
    let sources = [
        (credentials_file, name.to_owned()),
        (
            config_file,
            if name == "default" {
                name.to_owned()
            } else {
                format!("profile {name}")
            },
        ),
    ];
    for (file, section) in sources {
        let Some(file) = file else { continue };
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(CredentialsError::Read {
                    file: file.display().to_string(),
                    source,
                });
            }
        };
        let shown = file.display().to_string();
        let sections = parse_ini(&text, &shown)?;
        let Some(values) = sections.get(&section) else {
            continue;
        };
        let get = |key: &'static str| values.get(key).filter(|v| !v.is_empty()).cloned();
        let incomplete = |missing| CredentialsError::Incomplete {
            profile: name.to_owned(),
            file: shown.clone(),
            missing,
        };
        let id = get("aws_access_key_id").ok_or_else(|| incomplete("aws_access_key_id"))?;
        let secret =
            get("aws_secret_access_key").ok_or_else(|| incomplete("aws_secret_access_key"))?;
        return Ok(Some(Credentials {
            access_key_id: id,
            secret_access_key: Secret::new(secret),
            session_token: get("aws_session_token").map(Secret::new),
            origin: format!("profile `{name}` in {shown}"),
        }));
    }
    Ok(None)
}

/// The sections of an AWS INI file: `[name]` headers, `key = value`
/// lines, `#` and `;` comments. Keys are lower-cased, values trimmed.
fn parse_ini(
    text: &str,
    file: &str,
) -> Result<HashMap<String, HashMap<String, String>>, CredentialsError> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let Some(name) = header.strip_suffix(']') else {
                return Err(CredentialsError::Syntax {
                    file: file.to_owned(),
                    line: number + 1,
                });
            };
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(CredentialsError::Syntax {
                file: file.to_owned(),
                line: number + 1,
            });
        };
        // Settings before any section, and nested settings (indented
        // lines of an `s3 =` block), are not ours: skip them.
        if let Some(section) = &current {
            sections
                .entry(section.clone())
                .or_default()
                .insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn resolve_with(
        source: &CredentialSource,
        vars: &[(&str, &str)],
        home: Option<&Path>,
    ) -> Result<Credentials, CredentialsError> {
        let lookup = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        resolve(
            source,
            &Environment {
                var: &lookup,
                home: home.map(Path::to_path_buf),
            },
        )
    }

    fn home_with(credentials: &str, config: Option<&str>) -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(home.path().join(".aws/credentials"), credentials).unwrap();
        if let Some(config) = config {
            std::fs::write(home.path().join(".aws/config"), config).unwrap();
        }
        home
    }

    #[test]
    fn the_environment_gives_a_key_pair_with_its_session_token() {
        let found = resolve_with(
            &CredentialSource::default(),
            &[
                ("AWS_ACCESS_KEY_ID", "AKID"),
                ("AWS_SECRET_ACCESS_KEY", SECRET),
                ("AWS_SESSION_TOKEN", "token"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(found.access_key_id, "AKID");
        assert_eq!(found.secret_access_key.expose(), SECRET);
        assert_eq!(found.session_token.unwrap().expose(), "token");
    }

    #[test]
    fn a_named_profile_beats_the_environment_and_an_explicit_pair_beats_both() {
        let home = home_with(
            "# comment\n[default]\naws_access_key_id = DEF\naws_secret_access_key = d\n\n\
             [work]\naws_access_key_id=WORK\n aws_secret_access_key = w \naws_session_token = t\n",
            None,
        );
        let vars = [("AWS_ACCESS_KEY_ID", "ENV"), ("AWS_SECRET_ACCESS_KEY", "e")];
        let work =
            resolve_with(&CredentialSource::profile("work"), &vars, Some(home.path())).unwrap();
        assert_eq!(work.access_key_id, "WORK");
        assert_eq!(work.secret_access_key.expose(), "w");
        assert_eq!(work.session_token.unwrap().expose(), "t");
        assert!(work.origin.contains("work"), "{}", work.origin);

        let from_env =
            resolve_with(&CredentialSource::default(), &vars, Some(home.path())).unwrap();
        assert_eq!(from_env.access_key_id, "ENV");

        let default = resolve_with(&CredentialSource::default(), &[], Some(home.path())).unwrap();
        assert_eq!(default.access_key_id, "DEF");

        let named = resolve_with(
            &CredentialSource::default(),
            &[("AWS_PROFILE", "work")],
            Some(home.path()),
        )
        .unwrap();
        assert_eq!(named.access_key_id, "WORK");

        let explicit = CredentialSource::explicit(Credentials {
            access_key_id: "STORE".into(),
            secret_access_key: Secret::new("s".into()),
            session_token: None,
            origin: "the secret store".into(),
        });
        assert_eq!(
            resolve_with(&explicit, &vars, Some(home.path()))
                .unwrap()
                .access_key_id,
            "STORE"
        );
    }

    #[test]
    fn the_shared_credentials_file_variable_and_the_config_file_are_read() {
        let home = tempfile::tempdir().unwrap();
        let other = home.path().join("elsewhere");
        std::fs::write(
            &other,
            "[default]\naws_access_key_id = OTHER\naws_secret_access_key = o\n",
        )
        .unwrap();
        let vars = [("AWS_SHARED_CREDENTIALS_FILE", other.to_str().unwrap())];
        let found = resolve_with(&CredentialSource::default(), &vars, Some(home.path())).unwrap();
        assert_eq!(found.access_key_id, "OTHER");

        let home = home_with(
            "[default]\naws_access_key_id = DEF\naws_secret_access_key = d\n",
            Some(
                "[profile ci]\nregion = eu-west-1\naws_access_key_id = CI\naws_secret_access_key = c\n",
            ),
        );
        let ci = resolve_with(&CredentialSource::profile("ci"), &[], Some(home.path())).unwrap();
        assert_eq!(ci.access_key_id, "CI");
    }

    #[test]
    fn missing_and_broken_credentials_say_what_to_set_without_quoting_a_secret() {
        let none = resolve_with(&CredentialSource::default(), &[], None).unwrap_err();
        assert!(none.to_string().contains("AWS_ACCESS_KEY_ID"), "{none}");

        let half = resolve_with(
            &CredentialSource::default(),
            &[("AWS_SECRET_ACCESS_KEY", SECRET)],
            None,
        )
        .unwrap_err();
        assert!(half.to_string().contains("AWS_ACCESS_KEY_ID"), "{half}");
        assert!(!half.to_string().contains(SECRET));

        let home = home_with(
            &format!("[default]\naws_secret_access_key {SECRET}\n"),
            None,
        );
        let broken =
            resolve_with(&CredentialSource::default(), &[], Some(home.path())).unwrap_err();
        assert!(broken.to_string().contains("line 2"), "{broken}");
        assert!(!broken.to_string().contains(SECRET), "{broken}");

        let home = home_with(
            &format!("[default]\naws_secret_access_key = {SECRET}\n"),
            None,
        );
        let incomplete =
            resolve_with(&CredentialSource::default(), &[], Some(home.path())).unwrap_err();
        assert!(
            incomplete.to_string().contains("aws_access_key_id"),
            "{incomplete}"
        );
        assert!(!incomplete.to_string().contains(SECRET));

        let absent =
            resolve_with(&CredentialSource::profile("nope"), &[], Some(home.path())).unwrap_err();
        assert!(
            matches!(absent, CredentialsError::NoSuchProfile { .. }),
            "{absent}"
        );

        let found = resolve_with(
            &CredentialSource::default(),
            &[
                ("AWS_ACCESS_KEY_ID", "A"),
                ("AWS_SECRET_ACCESS_KEY", SECRET),
            ],
            None,
        )
        .unwrap();
        assert!(!format!("{found:?}").contains(SECRET));
    }
}
