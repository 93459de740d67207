//! WebDAV tests: the WebDAV remote against a real Apache httpd with mod_dav
//! started on loopback for each test (see `apache`), passwords in a real
//! Secret Service (see `secret_service`), and the end-to-end
//! tests also against `rclone serve webdav` (see `rclone`), a server that
//! ignores conditional headers. A missing apache2 or rclone fails the tests
//! with a message saying what to install.

// Tests take locks with `lock().unwrap()`: a lock poisoned in a test is a
// failed test. The agent's own rule (`prism_sync::locks`) does not apply.
#![allow(clippy::disallowed_methods)]

#[path = "../support/crypt_names.rs"]
mod crypt_names;
#[path = "../support/files.rs"]
mod files;
#[path = "../support/ports.rs"]
mod ports;
#[path = "../support/processes.rs"]
mod processes;
#[path = "../support/secret_service.rs"]
mod secret_service;

mod agent;
#[path = "../support/apache.rs"]
mod apache;
mod hostile;
mod keyring;
#[path = "../support/rclone.rs"]
mod rclone;
mod replica;
#[path = "../support/server.rs"]
mod server;

use std::time::Duration;

use apache::{Apache, Share};
use reqwest::blocking::Client;
use reqwest::{Method, StatusCode};

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[test]
fn the_harness_serves_webdav_with_and_without_auth_and_over_https() {
    let mut server = Apache::start();
    let http = client();
    let open = format!("http://127.0.0.1:{}/open/hello.txt", server.port());
    let put = http.put(&open).body("hi").send().unwrap();
    assert_eq!(put.status(), StatusCode::CREATED, "{}", server.log());
    assert_eq!(
        std::fs::read_to_string(server.served(Share::Open).join("hello.txt")).unwrap(),
        "hi"
    );
    let propfind = Method::from_bytes(b"PROPFIND").unwrap();
    let listing = http
        .request(
            propfind.clone(),
            format!("http://127.0.0.1:{}/open/", server.port()),
        )
        .header("Depth", "1")
        .send()
        .unwrap();
    assert_eq!(listing.status().as_u16(), 207);
    assert!(listing.text().unwrap().contains("/open/hello.txt"));

    let auth = format!("http://127.0.0.1:{}/auth/", server.port());
    let refused = http.request(propfind.clone(), &auth).send().unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let allowed = http
        .request(propfind.clone(), &auth)
        .basic_auth(Apache::USER, Some(Apache::PASSWORD))
        .header("Depth", "0")
        .send()
        .unwrap();
    assert_eq!(allowed.status().as_u16(), 207);

    let ca = reqwest::Certificate::from_pem(&std::fs::read(server.ca_file()).unwrap()).unwrap();
    let https = Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let tls = https
        .get(format!(
            "https://127.0.0.1:{}/open/hello.txt",
            server.tls_port()
        ))
        .send()
        .unwrap();
    assert_eq!(tls.text().unwrap(), "hi");
    assert!(
        client()
            .get(format!(
                "https://127.0.0.1:{}/open/hello.txt",
                server.tls_port()
            ))
            .send()
            .is_err(),
        "a certificate from an unknown CA is refused"
    );

    server.stop();
    assert!(http.get(&open).send().is_err(), "a stopped server refuses");
    server.restart();
    assert_eq!(client().get(&open).send().unwrap().text().unwrap(), "hi");
}
