//! S3 client tests: the blocking S3 client against two real servers
//! started on loopback and shared by the tests of this binary — moto
//! (`moto_server`, which does not check signatures) and SeaweedFS (`weed
//! mini`, which does) — and against a hostile server thread that answers
//! with crafted pages, errors and broken connections (see `hostile`).
//! Tests that apply to both servers run one shared body on each, every
//! test under a prefix of its own. A missing server fails the tests with
//! a message saying what to install.

// Tests take locks with `lock().unwrap()`: a lock poisoned in a test is a
// failed test. The agent's own rule (`prism_sync::locks`) does not apply.
#![allow(clippy::disallowed_methods)]

// Shared with the SFTP and WebDAV tests; these use part of it.
#[path = "../support/crypt_names.rs"]
mod crypt_names;
#[allow(dead_code)]
#[path = "../support/files.rs"]
mod files;
// Shared with the conformance suite, which reaches the servers by port.
#[allow(dead_code)]
#[path = "../support/moto.rs"]
mod moto;
#[path = "../support/ports.rs"]
mod ports;
#[allow(dead_code)]
#[path = "../support/seaweedfs.rs"]
mod seaweedfs;
#[path = "../support/shared_server.rs"]
mod shared_server;

mod agent;
mod hostile;
mod meanwhile;
mod memory;
mod objects;
mod replica;

use std::sync::atomic::{AtomicU32, Ordering};

use moto::Moto;
use prism_sync::remote::s3::{CredentialSource, Credentials, S3Client, S3Settings};
use prism_sync::secrets::Secret;
use seaweedfs::Seaweed;

/// The two real servers.
#[derive(Clone, Copy, Debug)]
pub enum Server {
    Moto,
    Seaweed,
}

impl Server {
    /// A client of this server under a prefix no other test uses.
    pub fn client(self, test: &str) -> S3Client {
        self.client_with(test, |_| {})
    }

    /// [`Server::client`] with settings changed by `change`.
    pub fn client_with(self, test: &str, change: impl FnOnce(&mut S3Settings)) -> S3Client {
        let settings = self.settings(test, change);
        S3Client::new(settings).expect("a client")
    }

    pub fn settings(self, test: &str, change: impl FnOnce(&mut S3Settings)) -> S3Settings {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let prefix = format!("{test}-{}/", COUNTER.fetch_add(1, Ordering::Relaxed));
        let (bucket, endpoint, credentials) = match self {
            Server::Moto => {
                let moto = Moto::shared();
                static BUCKET: std::sync::Once = std::sync::Once::new();
                BUCKET.call_once(|| moto.make_bucket(MOTO_BUCKET));
                (
                    MOTO_BUCKET,
                    moto.endpoint(),
                    Credentials {
                        access_key_id: "MOTOKEY".into(),
                        secret_access_key: Secret::new("moto-secret".into()),
                        session_token: None,
                        origin: "the test".into(),
                    },
                )
            }
            Server::Seaweed => {
                let weed = Seaweed::shared();
                (Seaweed::BUCKET, weed.endpoint(), weed.credentials())
            }
        };
        let mut settings = S3Settings::new(bucket, &prefix);
        settings.endpoint = Some(endpoint);
        settings.credentials = CredentialSource::explicit(credentials);
        change(&mut settings);
        settings
    }
}

const MOTO_BUCKET: &str = "prism-moto";

/// One test body run against both servers: `both!(name, body)` makes
/// `name_on_moto` and `name_on_seaweedfs`, each calling `body(Server)`.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[test]
            fn on_moto() {
                super::$body($crate::Server::Moto);
            }
            #[test]
            fn on_seaweedfs() {
                super::$body($crate::Server::Seaweed);
            }
        }
    };
}

#[test]
fn seaweedfs_listens_on_loopback_only_and_refuses_a_wrong_secret_at_once() {
    let weed = Seaweed::shared();
    let listening = weed.listening();
    assert!(
        listening.len() >= 8,
        "weed listens on its ports: {listening:?}"
    );
    for addr in &listening {
        assert!(
            addr.ip().is_loopback(),
            "weed listens on {addr}: {listening:?}"
        );
    }

    let wrong = "a-wrong-secret-that-must-never-be-shown";
    let client = Server::Seaweed.client_with("wrong-secret", |s| {
        s.credentials = CredentialSource::explicit(Credentials {
            access_key_id: Seaweed::ACCESS_KEY.into(),
            secret_access_key: Secret::new(wrong.into()),
            session_token: None,
            origin: "the test's explicit pair".into(),
        });
    });
    let started = std::time::Instant::now();
    let error = client.list("", None).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, prism_sync::remote::s3::S3Error::Credentials { .. }),
        "{message}"
    );
    assert!(message.contains("SignatureDoesNotMatch"), "{message}");
    assert!(
        message.contains("secret"),
        "it says what to check: {message}"
    );
    assert!(!message.contains(wrong), "{message}");
    assert!(!format!("{error:?}").contains(wrong));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "no retries: {:?}",
        started.elapsed()
    );
    let replica: prism_sync::remote::ReplicaError = error.into();
    assert!(!replica.to_string().contains(wrong));

    let unknown = Server::Seaweed.client_with("unknown-key", |s| {
        s.credentials = CredentialSource::explicit(Credentials {
            access_key_id: "NOSUCHKEY".into(),
            secret_access_key: Secret::new(wrong.into()),
            session_token: None,
            origin: "the test's explicit pair".into(),
        });
    });
    let error = unknown.head("x").unwrap_err();
    assert!(
        matches!(error, prism_sync::remote::s3::S3Error::Credentials { .. })
            || matches!(error, prism_sync::remote::s3::S3Error::AccessDenied { .. }),
        "{error}"
    );
    assert!(!error.to_string().contains(wrong));
}

#[test]
fn moto_listens_on_loopback_only() {
    let moto = Moto::shared();
    let listening = shared_server::listening(moto.pid());
    assert!(!listening.is_empty());
    for addr in &listening {
        assert!(addr.ip().is_loopback(), "moto listens on {addr}");
    }
}
