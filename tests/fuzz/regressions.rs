//! Regression tests for what the fuzz targets found, where the finding is
//! about memory and so needs this binary's counting allocator. (Findings
//! about behaviour have their test beside the code they fixed.) The inputs
//! are also in the targets' seed folders, so every fuzz run replays them.

use std::time::Duration;

use prism_sync::api::framing::{self, FrameError, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};

use crate::alloc;

/// A length prefix at the limit with nothing after it once made the agent
/// reserve 1 MiB and the client 64 MiB before a byte of the payload came.
#[test]
fn a_length_prefix_alone_does_not_reserve_the_announced_length() {
    let header = (MAX_RESPONSE_BYTES as u32 - 1).to_be_bytes();
    let baseline = alloc::start();
    let read = framing::read_frame_blocking(&mut &header[..], MAX_RESPONSE_BYTES);
    assert!(
        matches!(read, Err(FrameError::Truncated { .. })),
        "{read:?}"
    );
    let peak = alloc::peak_since(baseline);
    assert!(peak <= 128 * 1024, "the client reserved {peak} bytes");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let header = (MAX_REQUEST_BYTES as u32).to_be_bytes();
    let baseline = alloc::start();
    let read = runtime.block_on(framing::read_frame(
        &mut &header[..],
        MAX_REQUEST_BYTES,
        Duration::from_secs(5),
        Duration::from_secs(5),
    ));
    assert!(
        matches!(read, Err(FrameError::Truncated { .. })),
        "{read:?}"
    );
    let peak = alloc::peak_since(baseline);
    assert!(peak <= 128 * 1024, "the agent reserved {peak} bytes");
}
