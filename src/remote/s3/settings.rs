//! What an `s3://BUCKET/PREFIX` pair says in the config: the URL, parsed
//! with the `url` crate, and the pair keys `endpoint`, `region` and
//! `profile`, checked with the messages the config's other keys give
//! (the key, then the problem). Credentials never come from the config:
//! they come from the AWS environment variables or a profile in
//! `~/.aws/credentials` (see [`super::credentials`]).

use reqwest::Url;

use std::fmt;

use super::S3Replica;
use super::client::{DEFAULT_REGION, S3Settings};
use super::credentials::CredentialSource;
use crate::config::PairConfig;
use crate::percent::{self, Plus};
use crate::remote::backend::{
    Backend, KeyError, Location, PairKeys, PathText, Reach, Registration, RemoteUrl, UrlForm,
};
use crate::remote::{RemoteHost, Replica, ReplicaError};
use crate::secrets::{Account, Kind};

/// The secret access key of a pair's `access_key_id`, kept by Prism Sync:
/// `s3://ACCESS_KEY_ID@host:port` in the secret store (the endpoint's host
/// and port), the variable `PRISM_SYNC_S3_SECRET_ACCESS_KEY`, the file
/// `s3-secrets`. (The AWS variables and profiles work without one.)
pub const SECRET_ACCESS_KEY: Kind =
    Kind::login("s3", "PRISM_SYNC_S3_SECRET_ACCESS_KEY", "s3-secrets").set_by_pair_name();

/// What to do instead of naming an S3 account by URL.
pub const ACCOUNT_BY_PAIR: &str = "an s3:// account is its pair's `access_key_id` at its \
     endpoint: name the pair (`prism-syncctl password set PAIR`), or log in without a stored \
     secret through AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a `profile`";

/// The pair keys of an S3 remote, as validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3PairSettings {
    /// Another S3 service (`http://127.0.0.1:8333`): path-style requests
    /// there. `None`: AWS.
    pub endpoint: Option<String>,
    /// `None`: [`DEFAULT_REGION`].
    pub region: Option<String>,
    /// A profile of `~/.aws/credentials` (or `~/.aws/config`).
    pub profile: Option<String>,
    /// An access key id whose secret is kept by Prism Sync (`password
    /// set`: the secret store, else the credentials file).
    pub access_key_id: Option<String>,
}

impl S3PairSettings {
    /// The secret-store account of the pair's `access_key_id`, at the
    /// endpoint's host and port (AWS: `s3.amazonaws.com:443`).
    pub fn account(&self) -> Option<Account> {
        let id = self.access_key_id.as_ref()?;
        let (host, port) = self
            .endpoint
            .as_deref()
            .and_then(|e| Url::parse(e).ok())
            .and_then(|url| {
                let host = url.host_str()?.to_owned();
                Some((host, url.port_or_known_default()?))
            })
            .unwrap_or_else(|| ("s3.amazonaws.com".to_owned(), 443));
        Some(Account::new(SECRET_ACCESS_KEY, id, &host, port))
    }

    /// The client settings for `bucket` and `prefix`.
    pub fn client_settings(&self, bucket: &str, prefix: &str) -> S3Settings {
        let mut settings = S3Settings::new(bucket, prefix);
        settings.endpoint = self.endpoint.clone();
        settings.region = self
            .region
            .clone()
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        settings.credentials = match &self.profile {
            Some(profile) => CredentialSource::profile(profile),
            None => CredentialSource::default(),
        };
        settings
    }
}

/// Parses `s3://BUCKET[/PREFIX]` into the bucket and the prefix (decoded,
/// without slashes at either end).
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    // The URL parser folds `.` and `..` segments away; a prefix written
    // with them is refused instead of silently meaning another one.
    let written_path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or("", |(_, path)| path);
    let written_path = written_path.split(['?', '#']).next().unwrap_or_default();
    for segment in written_path.split('/') {
        let decoded = percent::decode(segment, Plus::Literal).unwrap_or_default();
        if decoded == b"." || decoded == b".." {
            return Err(format!(
                "the prefix of {url:?} has a `.` or `..` segment; write the prefix as it is"
            ));
        }
    }
    let parsed = Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if parsed.scheme() != "s3" {
        return Err(format!("{url:?} is not an s3:// URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "the s3 URL contains credentials; keep them out of the config (use the AWS \
             environment variables or a profile)"
                .into(),
        );
    }
    if parsed.port().is_some() {
        return Err(format!(
            "{url:?} has a port; an s3:// URL names a bucket, and another server goes in the \
             pair's `endpoint` key"
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "{url:?} has a query or fragment; write s3://BUCKET/PREFIX"
        ));
    }
    let bucket = parsed.host_str().unwrap_or_default().to_owned();
    if bucket.is_empty()
        || bucket.len() > 255
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(format!(
            "{url:?} names no usable bucket; write s3://BUCKET/PREFIX (bucket names hold \
             letters, digits, `-`, `.` and `_`)"
        ));
    }
    let bytes = percent::decode(parsed.path(), Plus::Literal)
        .ok_or_else(|| format!("{url:?} has a malformed %-escape"))?;
    let prefix = String::from_utf8(bytes)
        .map_err(|_| format!("{url:?} does not decode to UTF-8"))?
        .trim_matches('/')
        .to_owned();
    if !prefix.is_empty() {
        super::keys::check_relative(&prefix, "")
            .map_err(|reason| format!("the prefix of {url:?} cannot be used: {reason}"))?;
    }
    Ok((bucket, prefix))
}

/// Checks the S3 pair keys; errors are (key, problem).
pub fn validate(
    endpoint: Option<String>,
    region: Option<String>,
    profile: Option<String>,
    access_key_id: Option<String>,
) -> Result<S3PairSettings, (String, String)> {
    if let Some(id) = &access_key_id {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err((
                "access_key_id".into(),
                "is not an access key id (letters and digits, like AKIAIOSFODNN7EXAMPLE)".into(),
            ));
        }
        if profile.is_some() {
            return Err((
                "access_key_id".into(),
                "and `profile` both name a key pair; keep one".into(),
            ));
        }
    }
    if let Some(endpoint) = &endpoint {
        let bad = || {
            (
                "endpoint".to_owned(),
                format!(
                    "{endpoint:?} is not an S3 endpoint; write http:// or https:// with a host \
                     and port only, like http://127.0.0.1:8333"
                ),
            )
        };
        let url = Url::parse(endpoint).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || !url.username().is_empty()
            || url.password().is_some()
            || !url.path().trim_end_matches('/').is_empty()
            || url.query().is_some()
        {
            return Err(bad());
        }
    }
    if let Some(region) = &region
        && (region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err((
            "region".into(),
            format!("{region:?} is not a region; write one like us-east-1"),
        ));
    }
    if let Some(profile) = &profile
        && (profile.trim().is_empty()
            || profile.contains(['[', ']'])
            || profile.contains(char::is_control))
    {
        return Err((
            "profile".into(),
            format!("{profile:?} is not a profile name of ~/.aws/credentials"),
        ));
    }
    Ok(S3PairSettings {
        endpoint,
        region,
        profile,
        access_key_id,
    })
}

/// The pair keys that only S3 remotes take, for the message when another
/// remote sets one.
pub const KEYS: [&str; 4] = ["endpoint", "region", "profile", "access_key_id"];

pub const REGISTRATION: Registration = Registration {
    forms: &[UrlForm::Host("s3")],
    keys: &KEYS,
    remotes: "s3://",
    example: "s3://bucket/prefix",
    parse: parse_remote_url,
};

/// `s3://BUCKET/PREFIX`: the prefix decoded, without slashes at its ends
/// (empty for the whole bucket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub prefix: String,
}

fn parse_remote_url(url: &str) -> Result<RemoteUrl, String> {
    let (bucket, prefix) = parse_url(url)?;
    Ok(RemoteUrl::new(S3Url { bucket, prefix }))
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = super::sign::encode_path(&self.prefix);
        write!(f, "s3://{}/{prefix}", self.bucket)
    }
}

impl Backend for S3Url {
    type Settings = S3PairSettings;

    fn scheme(&self) -> &'static str {
        "s3"
    }

    fn settings(&self, keys: &mut PairKeys) -> Result<S3PairSettings, KeyError> {
        let [endpoint, region, profile, access_key_id] = KEYS;
        validate(
            keys.string(endpoint)?,
            keys.string(region)?,
            keys.string(profile)?,
            keys.string(access_key_id)?,
        )
    }

    fn open(
        &self,
        settings: &S3PairSettings,
        _pair: &PairConfig,
        host: RemoteHost<'_>,
    ) -> Result<Box<dyn Replica>, ReplicaError> {
        Ok(Box::new(S3Replica::for_pair(
            settings,
            &self.bucket,
            &self.prefix,
            host.config_dir,
            host.parallel_transfers,
        )))
    }

    fn account(&self, settings: &S3PairSettings) -> Option<Account> {
        settings.account()
    }

    fn password_account(&self, _user: Option<String>) -> Result<Account, String> {
        Err(ACCOUNT_BY_PAIR.to_owned())
    }

    /// The bucket and prefix at AWS with the default credentials: a pair
    /// added without keys (as over HTTP) has no `endpoint` or `profile`.
    fn reach(&self) -> Reach {
        Reach::Server(Location::new(
            "s3",
            None,
            &self.bucket,
            None,
            &self.prefix,
            PathText::Decoded,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advice_for_a_missing_secret_names_a_command_that_works() {
        let settings = S3PairSettings {
            access_key_id: Some("AKIDEXAMPLE".into()),
            endpoint: Some("http://127.0.0.1:8333".into()),
            ..Default::default()
        };
        let account = settings.account().unwrap();
        let how = crate::secrets::how_to_store(&account, None);
        assert!(
            how.contains("`prism-syncctl password set PAIR`")
                && how.contains("PRISM_SYNC_S3_SECRET_ACCESS_KEY"),
            "{how}"
        );
        // The URL of the account is refused by `password set`, so it is
        // not what the advice says to type.
        assert!(crate::secrets::Account::parse(&account.key()).is_err());
        assert!(!how.contains("password set s3://"), "{how}");
    }

    #[test]
    fn s3_urls_name_a_bucket_and_a_prefix() {
        assert_eq!(
            parse_url("s3://photos/2024/trip").unwrap(),
            ("photos".into(), "2024/trip".into())
        );
        assert_eq!(
            parse_url("s3://photos").unwrap(),
            ("photos".into(), "".into())
        );
        assert_eq!(
            parse_url("s3://photos/").unwrap(),
            ("photos".into(), "".into())
        );
        assert_eq!(
            parse_url("s3://b/with%20space/").unwrap(),
            ("b".into(), "with space".into())
        );
        for bad in [
            "s3://",
            "s3:///prefix",
            "s3://key:secret@b/p",
            "s3://b:9000/p",
            "s3://b/p?x=1",
            "s3://b/a/../../etc",
            "s3://b/%2e%2e/x",
            "s3://b/%zz",
            "s3://b%2Fc/p",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} is refused");
        }
        let secret = parse_url("s3://AKID:hunter2secret@b/p").unwrap_err();
        assert!(!secret.contains("hunter2secret"), "{secret}");
    }

    #[test]
    fn pair_keys_are_checked() {
        assert!(validate(Some("http://127.0.0.1:8333".into()), None, None, None).is_ok());
        assert_eq!(
            validate(Some("ftp://h".into()), None, None, None)
                .unwrap_err()
                .0,
            "endpoint"
        );
        assert_eq!(
            validate(Some("http://h:1/path".into()), None, None, None)
                .unwrap_err()
                .0,
            "endpoint"
        );
        assert_eq!(
            validate(None, Some("us east".into()), None, None)
                .unwrap_err()
                .0,
            "region"
        );
        assert_eq!(
            validate(None, None, Some("".into()), None).unwrap_err().0,
            "profile"
        );
        let settings = validate(None, Some("eu-west-1".into()), Some("work".into()), None)
            .unwrap()
            .client_settings("b", "p");
        assert_eq!(settings.region, "eu-west-1");
        assert_eq!(settings.credentials.profile.as_deref(), Some("work"));
        assert_eq!(
            validate(None, None, Some("work".into()), Some("AKID".into()))
                .unwrap_err()
                .0,
            "access_key_id"
        );
        assert_eq!(
            validate(None, None, None, Some("AK ID".into()))
                .unwrap_err()
                .0,
            "access_key_id"
        );
    }
}
