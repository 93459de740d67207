//! Loopback ports for the servers the test suites start, shared by the
//! SFTP and WebDAV test crates.

use std::net::TcpListener;

/// A loopback port nothing listens on, never the same twice in this test
/// process: two calls in a row (an HTTP and an HTTPS listener, parallel
/// tests) could otherwise get the port the first one just released.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap();
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}
