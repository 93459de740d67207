//! A real moto S3 server (`moto_server` from the PyPI package
//! `moto[server]`) on a free loopback port, shared by the tests of one
//! binary (see `shared_server`). moto keeps everything in memory and does
//! not check signatures; it does honour conditional requests (not the
//! copy's `x-amz-copy-source-if-match`). Use the version `.ci/run` pins:
//! moto 5.2.1 answers a multipart completion with the wrong XML root. A
//! missing moto_server fails the test with a message saying what to
//! install.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::shared_server::spawn_for_the_whole_run;

/// The running moto server.
pub struct Moto {
    port: u16,
    pid: u32,
}

impl Moto {
    /// The shared server, started on first use.
    pub fn shared() -> &'static Moto {
        static SERVER: OnceLock<Moto> = OnceLock::new();
        SERVER.get_or_init(Moto::start)
    }

    fn start() -> Moto {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("prism-moto-")
            .tempdir()
            .expect("a temp dir for moto")
            .keep();
        let log = dir.join("moto.log");
        let mut command = Command::new("moto_server");
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = spawn_for_the_whole_run(command, Some(dir)).unwrap_or_else(|e| {
            panic!(
                "cannot start moto_server ({e}): install it with \
                 `pip install 'moto[server]'` (in a venv whose bin is on PATH) to run the S3 tests"
            )
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.exited() {
                panic!(
                    "moto_server exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not start listening in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto {
            port,
            pid: child.pid,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Creates a bucket (moto takes an unsigned request).
    pub fn make_bucket(&self, name: &str) {
        let response = reqwest::blocking::Client::new()
            .put(format!("{}/{name}", self.endpoint()))
            .send()
            .expect("moto answers");
        assert!(
            response.status().is_success(),
            "moto refused to create {name}: {}",
            response.status()
        );
    }
}
