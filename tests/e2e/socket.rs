//! Malformed input on the control socket of a real agent: each gets the
//! specification's error object where an answer is possible, and the
//! agent keeps serving. Also what `prism-syncctl` says when no agent runs.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

/// Reads one response frame and returns the envelope.
fn read_response(stream: &mut UnixStream) -> Value {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("a response frame");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).expect("the whole response");
    serde_json::from_slice(&body).expect("a JSON response")
}

fn connect(device: &Device) -> UnixStream {
    let stream = UnixStream::connect(&device.socket).expect("connect to the agent");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
}

/// Sends `bytes` (closing our side when `close` says so) and returns the
/// agent's answer.
fn exchange(device: &Device, bytes: &[u8], close: bool) -> Value {
    let mut stream = connect(device);
    stream.write_all(bytes).unwrap();
    if close {
        stream.shutdown(Shutdown::Write).unwrap();
    }
    read_response(&mut stream)
}

/// Checks the envelope carries the spec's section 9 error object with
/// `status` as its code, and returns the error.
fn error_of(envelope: &Value, status: u16) -> Value {
    assert_eq!(envelope["status"], status, "{envelope:#}");
    assert_eq!(envelope["protocol"], "1.0", "{envelope:#}");
    let error = &envelope["body"]["error"];
    assert_eq!(error["code"], status.to_string(), "{envelope:#}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{envelope:#}"
    );
    assert!(
        error.as_object().unwrap().contains_key("details"),
        "{envelope:#}"
    );
    error.clone()
}

#[test]
fn malformed_requests_get_error_objects_and_the_agent_keeps_working() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    let _agent = device.start();

    // Text where a length prefix belongs: "GET " reads as about 1.2 GB.
    let answer = exchange(&device, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n", false);
    error_of(&answer, 413);
    // Random bytes inside a well-formed frame.
    let answer = exchange(
        &device,
        &frame(&[0xff, 0xfe, 0x00, 0x13, 0x37, 0x80]),
        false,
    );
    error_of(&answer, 400);
    // A frame announcing 100 bytes, of which 10 arrive before the client
    // closes its side.
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(b"{\"protocol");
    let error = error_of(&exchange(&device, &truncated, true), 400);
    assert!(
        error["message"].as_str().unwrap().contains("Truncated"),
        "{error:#}"
    );
    // A 2 GiB length prefix is refused before anything is read.
    let error = error_of(
        &exchange(&device, &0x8000_0000u32.to_be_bytes(), false),
        413,
    );
    assert!(
        error["details"].as_str().unwrap().contains("2147483648"),
        "{error:#}"
    );
    // Another major protocol version.
    let future = json!({"protocol": "2.0", "method": "GET", "path": "/status", "body": null});
    let error = error_of(
        &exchange(&device, &frame(future.to_string().as_bytes()), false),
        400,
    );
    assert!(
        error["details"].as_str().unwrap().contains("1."),
        "{error:#}"
    );

    // Invalid JSON leaves the connection usable for the next request.
    let mut stream = connect(&device);
    stream
        .write_all(&frame(b"{\"protocol\": \"1.0\", \"method\": "))
        .unwrap();
    error_of(&read_response(&mut stream), 400);
    let status = json!({"protocol": "1.0", "method": "GET", "path": "/status", "body": null});
    stream
        .write_all(&frame(status.to_string().as_bytes()))
        .unwrap();
    let answer = read_response(&mut stream);
    assert_eq!(answer["status"], 200, "{answer:#}");
    assert_eq!(answer["body"]["agent"]["device"], "laptop");
    drop(stream);

    // The agent still answers and still syncs.
    assert_eq!(device.pair_status()["name"], PAIR);
    write(&device.local, "after.txt", "still syncing\n");
    wait_for_content(&remote.join("after.txt"), "still syncing\n");
}

#[test]
fn prism_syncctl_says_when_the_agent_is_not_running() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    let output = device.ctl(&["status"]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    let message = stderr(&output);
    assert!(
        message.contains("not running") && message.contains(&*device.socket.to_string_lossy()),
        "{message}"
    );
    let output = device.ctl(&["--json", "sync", "start"]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    assert_eq!(json(&output)["error"]["code"], "503");
}
