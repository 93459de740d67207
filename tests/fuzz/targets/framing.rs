//! The socket protocol's framing and request handling (`api::framing`,
//! `api::handlers`), from the requests of docs/protocol.md.
//!
//! An input is one byte that says how to frame, then a request payload.
//! The framing byte is read as a digit (`'0'` + n, modulo 10, so seeds and
//! regressions stay readable text): 0 to 3 frame correctly; 4 announces
//! more than follows (a truncated frame); 5 less (the rest reads as a
//! second frame); 6 announces 4 GiB, 7 the limit exactly, 8 one byte over
//! it; 9 sends the payload as the raw stream. Its top bit sends the frame
//! twice. The stream then goes through what the agent does with a
//! connection (read a frame, handle it with an in-memory daemon, answer)
//! and what the client does with an answer.
//!
//! Properties: no panic; a frame over the limit is refused, and no frame
//! costs memory beyond what arrived; every answer is a valid envelope with
//! an HTTP status that frames and reads back unchanged; a request target
//! that parses renders to one that parses to the same thing.

use std::sync::Arc;
use std::time::Duration;

use prism_sync::api::Control;
use prism_sync::api::framing::{
    self, FrameError, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, RequestEnvelope, ResponseEnvelope,
};
use prism_sync::api::handlers;

use crate::api_support::MemControl;
use crate::engine::{Target, label, seeds};
use crate::targets::remote_url::escapes_are_well_formed;

const DICTIONARY: &[&[u8]] = &[
    b"\"protocol\":\"1.0\"",
    b"\"protocol\":\"2.0\"",
    b"\"protocol\":1",
    b"\"method\":\"GET\"",
    b"\"method\":\"POST\"",
    b"\"method\":\"DELETE\"",
    b"\"path\":\"/",
    b"\"body\":null",
    b"\"body\":{}",
    b"\"body\":[]",
    b"\"pair\":\"notes\"",
    b"\"limit\":",
    b"/pairs/",
    b"/sync/status/",
    b"/changes?",
    b"/conflicts?all=true",
    b"&limit=",
    b"&since=",
    b"?path=",
    b"/confirm-deletions",
    b"\\u0000",
    b"\\ud800",
    b"\\\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"true",
    b"1e999",
];

pub fn target() -> Target {
    Target {
        name: "framing",
        seeds: seeds("framing"),
        dictionary: DICTIONARY,
        max_len: 128 * 1024,
        memory_budget: |len| 64 * len + 256 * 1024,
        run,
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
}

fn run(input: &[u8]) -> u64 {
    let Some((&how, payload)) = input.split_first() else {
        return label("empty");
    };
    let stream = frame(how, payload);
    let served = RUNTIME.with(|runtime| runtime.block_on(serve(&stream)));
    let read = read_as_client(&stream);
    label((how.wrapping_sub(b'0') % 10, served, read))
}

/// The bytes on the wire for `payload`, framed as `how` says.
fn frame(how: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let declared = match how.wrapping_sub(b'0') % 10 {
        0..=3 => Some(len),
        4 => Some(len + 1 + len % 7),
        5 => Some(len.saturating_sub(1 + len % 5)),
        6 => Some(u32::MAX),
        7 => Some(MAX_REQUEST_BYTES as u32),
        8 => Some(MAX_REQUEST_BYTES as u32 + 1),
        _ => None,
    };
    let mut one = Vec::new();
    if let Some(declared) = declared {
        one.extend_from_slice(&declared.to_be_bytes());
    }
    one.extend_from_slice(payload);
    if how & 0x80 != 0 { one.repeat(2) } else { one }
}

/// What the agent does with a connection: frames are read and answered
/// until the stream ends or breaks the framing. Returns the statuses
/// answered (at most three) and how the connection ended.
async fn serve(mut stream: &[u8]) -> (Vec<u16>, &'static str) {
    let control: Arc<dyn Control> = Arc::new(MemControl::with_fixture());
    let mut statuses = Vec::new();
    loop {
        let frame = framing::read_frame(
            &mut stream,
            MAX_REQUEST_BYTES,
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .await;
        let payload = match frame {
            Ok(Some(payload)) => payload,
            Ok(None) => return (statuses, "closed"),
            Err(err) => return (statuses, frame_error(&err)),
        };
        assert!(payload.len() <= MAX_REQUEST_BYTES);
        check_target(&payload);
        let response = handlers::handle(&control, &payload).await;
        check_response(&response);
        if statuses.len() < 3 {
            statuses.push(response.status);
        }
    }
}

/// What the client does with an answer: reads frames until the stream
/// ends or breaks, and decodes each as a response envelope.
fn read_as_client(mut stream: &[u8]) -> (usize, &'static str) {
    let mut envelopes = 0;
    loop {
        match framing::read_frame_blocking(&mut stream, MAX_RESPONSE_BYTES) {
            Ok(payload) => {
                assert!(payload.len() <= MAX_RESPONSE_BYTES);
                if serde_json::from_slice::<ResponseEnvelope>(&payload).is_ok() {
                    envelopes += 1;
                }
            }
            Err(err) => return (envelopes.min(3), frame_error(&err)),
        }
    }
}

fn frame_error(err: &FrameError) -> &'static str {
    match err {
        FrameError::TooLarge { .. } => "too large",
        FrameError::Truncated { .. } => "truncated",
        FrameError::Closed => "closed",
        FrameError::TimedOut(_) => panic!("a frame from memory timed out"),
        FrameError::Io(err) => panic!("reading from memory failed: {err}"),
    }
}

/// An answer is an envelope with an HTTP status that frames and reads back
/// unchanged.
fn check_response(response: &ResponseEnvelope) {
    assert!((200..600).contains(&response.status), "{response:?}");
    if response.status != 200 {
        let error = &response.body["error"];
        assert!(
            error["code"].as_str() == Some(response.status.to_string().as_str())
                && error["message"].is_string(),
            "{response:?}"
        );
    }
    let bytes = serde_json::to_vec(response).expect("an answer serializes");
    let frame = framing::encode_frame(&bytes);
    let read = framing::read_frame_blocking(&mut frame.as_slice(), MAX_RESPONSE_BYTES)
        .expect("an answer frame reads back");
    let back: ResponseEnvelope = serde_json::from_slice(&read).expect("an answer decodes");
    assert_eq!(&back, response);
}

/// A target that parses renders to one that parses to the same thing.
fn check_target(payload: &[u8]) {
    let Ok(request) = serde_json::from_slice::<RequestEnvelope>(payload) else {
        return;
    };
    if let Ok(target) = framing::Target::parse(&request.path) {
        escapes_are_well_formed(&request.path);
        let rendered = target.render();
        assert_eq!(
            framing::Target::parse(&rendered).as_ref(),
            Ok(&target),
            "{:?} renders as {rendered:?}",
            request.path
        );
    }
}
