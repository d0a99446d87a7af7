//! A bound on the connections a gRPC server holds open at once: each costs a file descriptor
//! and buffers, and nothing else stops a client from opening them without end.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

/// An accepted connection holding one of the server's slots until it is dropped.
pub struct Counted<IO> {
    io: IO,
    _slot: OwnedSemaphorePermit,
}

/// `incoming` with at most `max` connections open at once: a connection accepted beyond that
/// is closed at once (the client sees its connection reset and retries elsewhere or later).
pub fn limit_connections<S, IO>(
    incoming: S,
    max: usize,
) -> impl Stream<Item = Result<Counted<IO>, io::Error>>
where
    S: Stream<Item = Result<IO, io::Error>>,
{
    let slots = Arc::new(Semaphore::new(max));
    incoming.filter_map(move |accepted| {
        let admitted = accepted.map(|io| match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => Some(Counted { io, _slot: slot }),
            Err(_) => None,
        });
        std::future::ready(match admitted {
            Ok(Some(counted)) => Some(Ok(counted)),
            Ok(None) => {
                refused(max);
                None
            }
            Err(error) => Some(Err(error)),
        })
    })
}

fn refused(max: usize) {
    tracing::debug!(
        max,
        "gRPC connection refused: the server holds its maximum already"
    );
}

impl<IO: Connected> Connected for Counted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
