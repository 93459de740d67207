//! Who is asking, and what they may do: the bearer tokens of the HTTP
//! API (JWTs signed with HS256 by a key in the state dir), their
//! verification, and the [`Caller`] the handlers authorize against.
//!
//! Verification pins the algorithm (HS256 only: `none` and every other
//! algorithm are refused before any key is used, so there is no algorithm
//! confusion), requires and checks `exp`, `nbf`, `iss`, `aud` and `sub`
//! with no leeway (the agent signs and checks with the same clock), and
//! then asks the journal whether the token is still on record and not
//! revoked; what a token grants is read from that record, not only from
//! its claims. Every failure is the same 401 to the client, whose
//! `details` say what to do, never which check a forgery failed.
//!
//! The owner of the local socket is [`Caller::Owner`] and may do anything:
//! the socket is owner-only, and that is what lets `token issue` mint
//! tokens.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::wire::{self, Role};

/// The `iss` of every token this agent issues.
pub const ISSUER: &str = "prism-syncd";
/// The `aud` of every token: the HTTP API.
pub const AUDIENCE: &str = "prism-sync-api";
/// How long a token lives when `token issue` names no `--ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest `--ttl`: a year. A token that never expires is a password
/// nobody remembers to change.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// The name of the signing key in the state dir.
pub const KEY_FILE: &str = "api-token.key";
const KEY_BYTES: usize = 32;

/// Who sent a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The owner of the local socket: every permission.
    Owner,
    /// An HTTP client with a verified, unrevoked token.
    Token(Grant),
}

/// What a verified token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The token's id (`sub`), recorded with what it does.
    pub id: String,
    pub role: Role,
    /// The pairs it may see; empty means every pair.
    pub pairs: Vec<String>,
}

impl Caller {
    /// Whether the caller may see and act on `pair`.
    pub fn sees_pair(&self, pair: &str) -> bool {
        match self {
            Caller::Owner => true,
            Caller::Token(grant) => grant.pairs.is_empty() || grant.pairs.iter().any(|p| p == pair),
        }
    }

    /// The pairs the caller is limited to; `None` for every pair.
    pub fn pair_limit(&self) -> Option<&[String]> {
        match self {
            Caller::Token(grant) if !grant.pairs.is_empty() => Some(&grant.pairs),
            _ => None,
        }
    }

    /// The token id to record with what the caller does; `None` for the
    /// socket's owner.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Caller::Owner => None,
            Caller::Token(grant) => Some(&grant.id),
        }
    }
}

/// The claims of a token. `role` and `pairs` repeat the journal's record so
/// a client can read what its token grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    jti: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    role: Role,
    #[serde(default)]
    pairs: Vec<String>,
}

/// The agent's signing key. Its `Debug` output hides the key.
pub struct TokenKeys {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(<redacted>)")
    }
}

/// The signing key could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the API token key {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the API token key {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the API token key {} is not a key this agent made ({len} bytes, not {KEY_BYTES}); move \
         it aside and restart (every token issued so far then stops working)",
        path.display()
    )]
    Damaged { path: PathBuf, len: usize },
    #[error(
        "the API token key {} can be read by other users (mode {mode:o}); whoever read it can \
         forge tokens. Delete it and restart: a new key is made and every token issued so far \
         stops working",
        path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
}

impl TokenKeys {
    /// A key from raw bytes (tests, and [`TokenKeys::load_or_create`]).
    pub fn from_secret(secret: &[u8]) -> TokenKeys {
        TokenKeys {
            secret: secret.to_vec(),
        }
    }

    /// Reads the key in `state_dir`, or makes one (32 random bytes, mode
    /// 0600, written under a temporary name and renamed into place, so a
    /// crash never leaves half a key).
    pub fn load_or_create(state_dir: &Path) -> Result<TokenKeys, KeyError> {
        let path = state_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(secret) => {
                check_private(&path)?;
                if secret.len() != KEY_BYTES {
                    return Err(KeyError::Damaged {
                        len: secret.len(),
                        path,
                    });
                }
                Ok(TokenKeys { secret })
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let secret =
                    create_key(&path).map_err(|source| KeyError::Create { path, source })?;
                Ok(TokenKeys { secret })
            }
            Err(source) => Err(KeyError::Read { path, source }),
        }
    }

    /// Signs a token for `grant`, valid from now until `expires`.
    pub fn sign(&self, grant: &Grant, now: SystemTime, expires: SystemTime) -> String {
        let claims = Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: grant.id.clone(),
            jti: grant.id.clone(),
            iat: unix_secs(now),
            nbf: unix_secs(now),
            exp: unix_secs(expires),
            role: grant.role,
            pairs: grant.pairs.clone(),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.secret),
        )
        .expect("HS256 signing of plain claims cannot fail")
    }

    /// Checks a token's signature and claims and returns its claims. Whether
    /// it is revoked, and what it grants, is for the caller to look up
    /// ([`authenticate`]).
    fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&self.secret), &validation)
            .map(|data| data.claims)
            .map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                let why = match err.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet",
                    _ => "the token is not one this agent issued, or it was altered",
                };
                unauthorized(why)
            })
    }
}

/// Turns an `Authorization` header into a [`Grant`]: the bearer token must
/// verify ([`TokenKeys`]) and `lookup` (the journal) must know it,
/// unrevoked, with the role and pairs its claims say.
pub fn authenticate(
    keys: &TokenKeys,
    authorization: Option<&str>,
    lookup: impl FnOnce(&str) -> Result<Option<wire::TokenInfo>, ApiError>,
) -> Result<Grant, ApiError> {
    let Some(header) = authorization else {
        return Err(unauthorized("the request carries no token"));
    };
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("the Authorization header is not `Bearer TOKEN`"))?;
    let claims = keys.verify(token)?;
    let record = lookup(&claims.sub)?
        .ok_or_else(|| unauthorized("the token is not one this agent issued, or it was altered"))?;
    if record.revoked_at.is_some() {
        return Err(unauthorized("the token was revoked"));
    }
    if record.role != claims.role || record.pairs != claims.pairs || claims.jti != claims.sub {
        return Err(unauthorized(
            "the token is not one this agent issued, or it was altered",
        ));
    }
    Ok(Grant {
        id: record.id,
        role: record.role,
        pairs: record.pairs,
    })
}

/// A 401 with the spec's error object.
pub fn unauthorized(why: &str) -> ApiError {
    ApiError::new(401, "Unauthorized").with_details(format!(
        "{why}; issue a token with `prism-syncctl token issue --role ROLE` and send it as \
         `Authorization: Bearer TOKEN`"
    ))
}

/// A 403 with the spec's error object.
pub fn forbidden(details: impl Into<String>) -> ApiError {
    ApiError::new(403, "Forbidden").with_details(details)
}

/// A new token id: `tok-` and 16 random hex digits.
pub fn new_token_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).expect("the system's random source is available");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("tok-{hex}")
}

/// The expiry of a token issued `now` with `ttl` (the default when
/// `None`), or a 400 for a TTL out of range.
pub fn expiry(now: SystemTime, ttl_secs: Option<u64>) -> Result<SystemTime, ApiError> {
    let ttl = ttl_secs.map_or(DEFAULT_TTL, Duration::from_secs);
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(ApiError::bad_request(format!(
            "ttl must be from 1 second to {} days",
            MAX_TTL.as_secs() / 86_400
        )));
    }
    Ok(now + ttl)
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn create_key(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut secret = vec![0u8; KEY_BYTES];
    getrandom::getrandom(&mut secret).map_err(std::io::Error::other)?;
    let temporary = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    file.write_all(&secret)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(secret)
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), KeyError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(role: Role, pairs: &[&str]) -> Grant {
        Grant {
            id: "tok-0123456789abcdef".to_owned(),
            role,
            pairs: pairs.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    fn record(grant: &Grant, revoked: bool) -> wire::TokenInfo {
        wire::TokenInfo {
            id: grant.id.clone(),
            name: None,
            role: grant.role,
            pairs: grant.pairs.clone(),
            issued_at: String::new(),
            expires_at: String::new(),
            revoked_at: revoked.then(|| "2025-02-09T16:00:00.000Z".to_owned()),
        }
    }

    fn check(
        keys: &TokenKeys,
        token: &str,
        on_record: Option<wire::TokenInfo>,
    ) -> Result<Grant, ApiError> {
        authenticate(keys, Some(&format!("Bearer {token}")), |_| Ok(on_record))
    }

    #[test]
    fn a_token_verifies_with_its_key_and_record_only() {
        let keys = TokenKeys::from_secret(&[7; 32]);
        let other = TokenKeys::from_secret(&[8; 32]);
        let g = grant(Role::Operator, &["notes"]);
        let now = SystemTime::now();
        let token = keys.sign(&g, now, now + Duration::from_secs(60));
        assert_eq!(check(&keys, &token, Some(record(&g, false))), Ok(g.clone()));
        assert_eq!(
            check(&other, &token, Some(record(&g, false)))
                .unwrap_err()
                .code,
            401
        );
        assert_eq!(
            check(&keys, &token, Some(record(&g, true)))
                .unwrap_err()
                .code,
            401
        );
        assert_eq!(check(&keys, &token, None).unwrap_err().code, 401);
        // A record that grants less than the claims say wins over them.
        let mut narrower = record(&g, false);
        narrower.role = Role::Viewer;
        assert_eq!(check(&keys, &token, Some(narrower)).unwrap_err().code, 401);
    }

    #[test]
    fn expired_and_not_yet_valid_tokens_are_refused() {
        let keys = TokenKeys::from_secret(&[7; 32]);
        let g = grant(Role::Viewer, &[]);
        let hour = Duration::from_secs(3600);
        let past = SystemTime::now() - 2 * hour;
        let expired = keys.sign(&g, past, past + hour);
        let err = check(&keys, &expired, Some(record(&g, false))).unwrap_err();
        assert_eq!(err.code, 401);
        assert!(err.details.unwrap().contains("expired"));
        let future = SystemTime::now() + hour;
        let early = keys.sign(&g, future, future + hour);
        assert_eq!(
            check(&keys, &early, Some(record(&g, false)))
                .unwrap_err()
                .code,
            401
        );
    }

    #[test]
    fn missing_or_malformed_headers_are_401() {
        let keys = TokenKeys::from_secret(&[7; 32]);
        for header in [
            None,
            Some("Basic dXNlcjpwYXNz"),
            Some("Bearer "),
            Some("Bearer x.y.z"),
        ] {
            let err = authenticate(&keys, header, |_| Ok(None)).unwrap_err();
            assert_eq!(err.code, 401, "{header:?}");
        }
    }

    #[test]
    fn the_key_file_is_made_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = TokenKeys::load_or_create(dir.path()).unwrap();
        let again = TokenKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(first.secret, again.secret);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join(KEY_FILE);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                TokenKeys::load_or_create(dir.path()),
                Err(KeyError::Exposed { .. })
            ));
        }
    }

    #[test]
    fn ttl_is_bounded() {
        let now = SystemTime::now();
        assert_eq!(expiry(now, None).unwrap(), now + DEFAULT_TTL);
        assert_eq!(expiry(now, Some(0)).unwrap_err().code, 400);
        assert_eq!(
            expiry(now, Some(MAX_TTL.as_secs() + 1)).unwrap_err().code,
            400
        );
    }
}
