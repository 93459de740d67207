//! What can go wrong talking to S3, sorted by what the caller does next:
//! re-plan ([`S3Error::PreconditionFailed`]), wait for the remote as a
//! whole ([`S3Error::Offline`], [`S3Error::Unavailable`]), fix the
//! credentials or settings, or give up on one key.
//!
//! No message holds a secret: credential errors name where the key pair
//! came from and its access key id (not secret), never the secret key or
//! the session token, and a server's own error message is cut short.

use std::io;

use super::credentials::CredentialsError;
use crate::remote::ReplicaError;

/// How much of a server's error message is kept.
const SHOWN_MESSAGE_CHARS: usize = 300;

/// Why an S3 request failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// A conditional write or read found another version (HTTP 412): the
    /// key was changed by someone else. Never retried as an overwrite.
    #[error("precondition failed: someone else changed {key} on {endpoint}")]
    PreconditionFailed { endpoint: String, key: String },
    #[error("{key} does not exist on {endpoint}")]
    NoSuchKey { endpoint: String, key: String },
    #[error(
        "the bucket {bucket} does not exist on {endpoint}: check the bucket in the remote URL, \
         the endpoint and the region"
    )]
    NoSuchBucket { endpoint: String, bucket: String },
    #[error("the multipart upload of {key} no longer exists on {endpoint}")]
    NoSuchUpload { endpoint: String, key: String },
    /// The server refused the key pair itself: one clear error, not
    /// retried.
    #[error(
        "{endpoint} refused the S3 credentials (access key id {access_key_id}, from {origin}): \
         {code}: {hint}"
    )]
    Credentials {
        endpoint: String,
        access_key_id: String,
        origin: String,
        code: String,
        hint: &'static str,
    },
    /// The key pair is valid but may not do this.
    #[error(
        "{endpoint} denied {op} {key} ({code}): the credentials lack the permission, or a bucket \
         policy forbids it"
    )]
    AccessDenied {
        endpoint: String,
        op: &'static str,
        key: String,
        code: String,
    },
    /// The server cannot be reached (refused, timed out, the connection
    /// broke and could not be retried).
    #[error("{endpoint} cannot be reached: {reason}")]
    Offline { endpoint: String, reason: String },
    /// The server kept answering "slow down" or failing internally after
    /// every retry.
    #[error(
        "{endpoint} is overloaded or failing: {op} {key} got HTTP {status} {code} {attempts} times"
    )]
    Unavailable {
        endpoint: String,
        op: &'static str,
        key: String,
        status: u16,
        code: String,
        attempts: u32,
    },
    #[error("{op} {key} on {endpoint} failed: HTTP {status} {code}: {message}")]
    Status {
        endpoint: String,
        op: &'static str,
        key: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The answer could not be understood (malformed or truncated XML, a
    /// listing that loops, a missing header).
    #[error("{op} on {endpoint}: the answer is unusable: {reason}")]
    BadAnswer {
        endpoint: String,
        op: &'static str,
        reason: String,
    },
    /// Reading the bytes to upload failed; nothing was written under the
    /// key.
    #[error("cannot read what is to be uploaded to {key}: {source}")]
    Source { key: String, source: io::Error },
    #[error("the key {key} cannot be used: {reason}")]
    BadKey { key: String, reason: String },
    #[error("bad S3 settings: {0}")]
    Settings(String),
    #[error(transparent)]
    NoCredentials(#[from] CredentialsError),
}

impl S3Error {
    /// The key an error is about, where it is about one.
    fn key(&self) -> Option<&str> {
        match self {
            S3Error::PreconditionFailed { key, .. }
            | S3Error::NoSuchKey { key, .. }
            | S3Error::NoSuchUpload { key, .. }
            | S3Error::AccessDenied { key, .. }
            | S3Error::Status { key, .. }
            | S3Error::Source { key, .. }
            | S3Error::BadKey { key, .. } => Some(key),
            _ => None,
        }
    }

    /// True for "someone else changed it".
    pub fn is_precondition_failed(&self) -> bool {
        matches!(self, S3Error::PreconditionFailed { .. })
    }
}

impl From<S3Error> for ReplicaError {
    /// A changed key is re-planned; an unreachable or overloaded server
    /// stops the run (the pair retries as a whole); a missing key or a
    /// refusal is a per-path I/O error; credentials and settings are
    /// errors of the whole remote.
    fn from(e: S3Error) -> ReplicaError {
        let path = e.key().unwrap_or_default().to_owned();
        match e {
            S3Error::PreconditionFailed { key, .. } => ReplicaError::Changed { path: key },
            S3Error::Offline { endpoint, reason } => ReplicaError::Offline {
                remote: endpoint,
                reason,
            },
            S3Error::Unavailable { ref endpoint, .. } => ReplicaError::Offline {
                remote: endpoint.clone(),
                reason: e.to_string(),
            },
            S3Error::NoSuchKey { .. } | S3Error::NoSuchUpload { .. } => ReplicaError::io(
                "read",
                path,
                io::Error::new(io::ErrorKind::NotFound, e.to_string()),
            ),
            S3Error::AccessDenied { op, .. } => ReplicaError::io(
                op,
                path,
                io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()),
            ),
            S3Error::Source { source, .. } => ReplicaError::io("read", path, source),
            S3Error::Status { op, .. } => {
                ReplicaError::io(op, path, io::Error::other(e.to_string()))
            }
            other => ReplicaError::Other(other.to_string()),
        }
    }
}

/// What to tell a person about a refused key pair, by S3's error code;
/// `None` when the code is not about credentials.
pub fn credential_hint(code: &str) -> Option<&'static str> {
    Some(match code {
        "SignatureDoesNotMatch" => {
            "the secret access key does not match the access key id; check the secret \
             (AWS_SECRET_ACCESS_KEY, the profile's aws_secret_access_key or the stored one)"
        }
        "InvalidAccessKeyId" => {
            "the server does not know this access key id; check the key id and that the \
             endpoint is the server it belongs to"
        }
        "ExpiredToken" | "TokenRefreshRequired" => {
            "the session token has expired; get fresh temporary credentials \
             (AWS_SESSION_TOKEN or the profile's aws_session_token)"
        }
        "InvalidToken" => {
            "the session token is not valid; check AWS_SESSION_TOKEN or the profile's \
             aws_session_token, or remove it for long-term keys"
        }
        "RequestTimeTooSkewed" => {
            "this machine's clock differs from the server's by more than 15 minutes; \
             set the clock right"
        }
        _ => return None,
    })
}

/// A server's message, cut short.
pub fn shown_message(message: &str) -> String {
    let cut: String = message.chars().take(SHOWN_MESSAGE_CHARS).collect();
    if cut.len() < message.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_key_is_re_planned_and_an_unreachable_server_is_offline() {
        let changed: ReplicaError = S3Error::PreconditionFailed {
            endpoint: "http://127.0.0.1:1".into(),
            key: "a/b".into(),
        }
        .into();
        assert!(changed.is_change(), "{changed}");
        let offline: ReplicaError = S3Error::Offline {
            endpoint: "http://127.0.0.1:1".into(),
            reason: "connection refused".into(),
        }
        .into();
        assert!(offline.is_offline());
        let busy: ReplicaError = S3Error::Unavailable {
            endpoint: "e".into(),
            op: "PUT",
            key: "k".into(),
            status: 503,
            code: "SlowDown".into(),
            attempts: 5,
        }
        .into();
        assert!(busy.is_offline());
        let missing: ReplicaError = S3Error::NoSuchKey {
            endpoint: "e".into(),
            key: "k".into(),
        }
        .into();
        assert!(
            matches!(missing, ReplicaError::Io { ref source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
    }
}
