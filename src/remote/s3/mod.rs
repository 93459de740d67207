//! The `s3://BUCKET/PREFIX` remote: a blocking S3 protocol client, and
//! the [`S3Replica`] over it ([`replica`]: how files, folders, the trash
//! and the lease map onto objects).
//!
//! It owns the requests and their meaning: SigV4 signing ([`sign`]),
//! credentials found the way the AWS tools find them ([`credentials`]),
//! listings with pagination and per-key refusals ([`client`], [`keys`],
//! [`xml`]), HEAD with user metadata, ranged and version-checked GET,
//! conditional PUT, server-side copy, delete, folder markers, multipart
//! uploads ([`multipart`]) and a probe of whether the server honours
//! conditional writes. It does not know files, hashes, trash or leases:
//! the adapter does.
//!
//! **Why these crates.** The client runs on the `reqwest` blocking client
//! (rustls) the WebDAV remote already uses, and signs with `hmac` and
//! `sha2` (already in the build, for the secret store's encryption): SigV4
//! is a page of arithmetic, checked here against the examples AWS
//! publishes and, in the tests, against SeaweedFS, which verifies every
//! signature. `aws-sigv4` was the alternative: its current release needs a
//! newer Rust than this crate's minimum and brings the smithy runtime
//! crates with it. `object_store` cannot make a multipart upload's
//! completion conditional, and `aws-sdk-s3` brings a second, async HTTP
//! stack.
//!
//! **Streaming.** Uploads are signed with `UNSIGNED-PAYLOAD`, so a PUT or
//! a part starts while its source is still being read and no file is held
//! in memory ([`body`]); the content is checked end to end by the
//! caller's BLAKE3, kept in the object's `x-amz-meta-prism-blake3`.
//! Small bodies (a multipart completion) are signed with their hash.
//!
//! **Retries.** See [`retry`]: throttling and server failures (503
//! `SlowDown`, 500 `InternalError`) and broken connections are retried
//! with exponential back-off and full jitter, honouring `Retry-After`,
//! a bounded number of times; an upload is retried only when its source
//! can go back (a file, a part of one). A refused connection or a timeout
//! is [`S3Error::Offline`] at once (the pair backs off as a whole), and a
//! refused key pair is one [`S3Error::Credentials`] that says what to
//! check, never a retry.
//!
//! **Conditions.** A write of a new key carries `If-None-Match: *`, a
//! replacement `If-Match: ETAG` (a multipart upload's completion carries
//! the same), a copy `x-amz-copy-source-if-match` (and `If-None-Match: *`
//! where its destination must be free), a removal and a ranged read
//! `If-Match`. A 412 is [`S3Error::PreconditionFailed`] ("someone else
//! changed it"), which becomes [`super::ReplicaError::Changed`]: the path
//! is re-planned, never overwritten. Some servers ignore these headers
//! (`rclone serve s3`; moto ignores the copy's); [`S3Client::probe_conditions`]
//! tells which, and the adapter then re-checks before those writes instead.
//!
//! **Hostile answers.** Listed keys are untrusted: each one that is not
//! UTF-8, not under the prefix, absolute, longer than S3's limit, or not
//! a valid relative path (`..`, NUL, …) is returned as a [`KeyProblem`]
//! with its reason, and the rest of the listing stands. XML is parsed
//! with size, depth and element caps; a malformed or truncated page is an
//! error, as is a listing that repeats its continuation token.
//!
//! **Secrets.** The secret key and session token are
//! [`crate::secrets::Secret`]s; no error message or log line holds them.

mod body;
pub mod budget;
pub mod client;
pub mod credentials;
pub mod error;
pub mod keys;
mod large_copy;
mod lease;
mod listing;
pub mod multipart;
pub mod replica;
pub mod retry;
pub mod settings;
pub mod sign;
mod staging;
pub mod xml;

pub use body::{Once, Seekable, UploadSource};
pub use budget::DEFAULT_MEMORY_BUDGET;
pub use client::{
    Condition, ConditionSupport, DEFAULT_REGION, KeyProblem, META_BLAKE3, META_MODE, Metadata,
    ObjectHead, ObjectInfo, ObjectList, ObjectReader, PendingUpload, S3Client, S3Settings, Version,
};
pub use credentials::{CredentialSource, Credentials, CredentialsError, Environment};
pub use error::S3Error;
pub use large_copy::MAX_SINGLE_COPY;
pub use multipart::{CompletedPart, MULTIPART_THRESHOLD, part_size};
pub use replica::{META_MTIME, S3Replica};
pub use retry::RetryPolicy;
pub use settings::S3PairSettings;
