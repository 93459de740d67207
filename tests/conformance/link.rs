//! A loopback TCP forwarder between a replica and its server, which a test
//! can break at a chosen moment: the network dropping under a replica
//! while the server itself (shared by every test) keeps running.
//!
//! [`Link::cut_after`] lets `n` more bytes through from the server, then
//! shuts every connection down and stops listening, so the replica's
//! reconnects are refused as well: the server is gone as far as the
//! replica can tell.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Link {
    port: u16,
    shared: Arc<Shared>,
}

struct Shared {
    /// Bytes the server may still send; negative: unlimited.
    budget: AtomicI64,
    /// Bytes the server sent so far.
    sent: AtomicI64,
    down: AtomicBool,
    /// Both ends of every connection, to shut down at the cut.
    streams: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for stream in self.streams.lock().unwrap().iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Link {
    /// Forwards a free loopback port to `target_port` on loopback.
    pub fn to(target_port: u16) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            budget: AtomicI64::new(-1),
            sent: AtomicI64::new(0),
            down: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            // Polled, so that the listener closes (and refuses) at the cut.
            while !accepting.down.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => forward(client, target_port, &accepting),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => break,
                }
            }
        });
        Link { port, shared }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Lets `bytes` more bytes through from the server, then cuts.
    pub fn cut_after(&self, bytes: i64) {
        self.shared.budget.store(bytes, Ordering::SeqCst);
    }

    /// How many bytes the server sent through the link so far.
    pub fn bytes_from_server(&self) -> i64 {
        self.shared.sent.load(Ordering::SeqCst)
    }

    /// Whether the cut happened.
    pub fn is_cut(&self) -> bool {
        self.shared.down.load(Ordering::SeqCst)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.cut();
    }
}

fn forward(client: TcpStream, target_port: u16, shared: &Arc<Shared>) {
    client.set_nonblocking(false).unwrap();
    let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
        return;
    };
    {
        let mut streams = shared.streams.lock().unwrap();
        streams.push(client.try_clone().unwrap());
        streams.push(server.try_clone().unwrap());
    }
    if shared.down.load(Ordering::SeqCst) {
        shared.cut();
        return;
    }
    let (client_in, server_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || pump(client_in, server_out, None));
    let shared = Arc::clone(shared);
    std::thread::spawn(move || pump(server, client, Some(&shared)));
}

/// Copies `from` to `to` until either ends; with `shared`, counts the
/// bytes against its budget and cuts everything when it runs out.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: Option<&Shared>) {
    let mut buf = [0u8; 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut allowed = n;
        if let Some(shared) = shared {
            let budget = shared.budget.load(Ordering::SeqCst);
            if budget >= 0 {
                allowed = n.min(budget as usize);
                shared.budget.fetch_sub(allowed as i64, Ordering::SeqCst);
            }
            if shared.down.load(Ordering::SeqCst) {
                allowed = 0;
            }
            shared.sent.fetch_add(allowed as i64, Ordering::SeqCst);
        }
        if to.write_all(&buf[..allowed]).is_err() {
            break;
        }
        if allowed < n {
            if let Some(shared) = shared {
                shared.cut();
            }
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
