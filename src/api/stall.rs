//! A connection whose writes fail once they stop making progress.
//!
//! hyper times out a request's headers, but not a response: a client that
//! sends requests and never reads the answers leaves hyper waiting on a
//! full socket buffer for ever, holding one of the listener's few
//! connection slots. [`StallGuard`] wraps the TCP stream (under TLS, so the
//! handshake's and the records' writes count too) and fails a write, flush
//! or shutdown that has been pending for [`StallGuard::new`]'s limit with
//! no byte accepted in between; hyper then drops the connection and its
//! slot. Reads pass through untouched: waiting for a request is hyper's
//! header timeout's business.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A stream whose writes time out after `limit` without progress.
pub struct StallGuard<S> {
    inner: S,
    limit: Duration,
    /// Armed at the first write that could not proceed; cleared by any
    /// write that did.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> StallGuard<S> {
    pub fn new(inner: S, limit: Duration) -> StallGuard<S> {
        StallGuard {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Passes a write-side result on, timing how long it stays pending.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_the_limit_and_one_read_slowly_does_not() {
        let limit = Duration::from_millis(400);
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut guarded = StallGuard::new(ours, limit);
        // Read slowly but steadily: every write makes progress in time,
        // though the whole takes longer than the limit.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut total = 0;
            while total < 8192 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                total += theirs.read(&mut buf).await.unwrap();
            }
            theirs
        });
        let started = tokio::time::Instant::now();
        guarded.write_all(&[7u8; 8192]).await.unwrap();
        let theirs = reader.await.unwrap();
        assert!(started.elapsed() > limit);
        // Now nobody reads: the buffer fills and the write fails.
        let started = tokio::time::Instant::now();
        let err = guarded.write_all(&[7u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= limit, "{:?}", started.elapsed());
        drop(theirs);
    }
}
