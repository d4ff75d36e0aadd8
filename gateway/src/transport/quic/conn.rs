//! One QUIC connection as its session task sees it: the `quinn-proto` state behind a mutex
//! shared with the endpoint driver, and the unit's one bidirectional stream as
//! `AsyncRead`/`AsyncWrite`.
//!
//! The session task reads and writes the stream in place; whenever that leaves something to
//! send (stream data, flow-control credit, a FIN, a close) it marks the connection dirty and
//! the driver turns it into datagrams. The driver, in turn, wakes the task when an incoming
//! packet made the stream readable or writable, opened it, or lost the connection. Both sides
//! only touch the state under its mutex, so a wakeup cannot fall between a check and a
//! waker registration.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{
    ConnectionError, ConnectionHandle, Dir, ReadError, StreamId, VarInt, WriteError,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// What the driver and all session tasks share: the connections that have something new to
/// send, and the driver's doorbell.
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    queue: Mutex<Vec<ConnectionHandle>>,
    pub(crate) doorbell: Notify,
}

impl Dirty {
    /// Takes every queued handle (the driver, once per turn).
    pub(crate) fn take(&self, into: &mut Vec<ConnectionHandle>) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        into.append(&mut q);
    }
}

/// The connection, shared by the driver (which owns its place in the endpoint) and the
/// session task.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) handle: ConnectionHandle,
    state: Mutex<State>,
    /// Already in the dirty queue: each connection is queued at most once per driver turn.
    queued: AtomicBool,
    dirty: Arc<Dirty>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) proto: quinn_proto::Connection,
    /// The unit's stream, once it opened one.
    stream: Option<StreamId>,
    /// Why the connection ended, once it did.
    lost: Option<ConnectionError>,
    /// The send side was fully acknowledged (or stopped by the unit).
    finished: bool,
    /// The task waiting to read, or for the stream to open.
    reader: Option<Waker>,
    /// The task waiting to write, or for the send side to finish.
    writer: Option<Waker>,
}

impl Conn {
    pub(crate) fn new(
        handle: ConnectionHandle,
        proto: quinn_proto::Connection,
        dirty: Arc<Dirty>,
    ) -> Self {
        Self {
            handle,
            state: Mutex::new(State {
                proto,
                stream: None,
                lost: None,
                finished: false,
                reader: None,
                writer: None,
            }),
            queued: AtomicBool::new(false),
            dirty,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves quinn-proto's state as it was between two
        // calls, which is still consistent; keep serving the other side.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the driver to look at this connection (something may be ready to send).
    pub(crate) fn mark_dirty(&self) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.dirty
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.handle);
            self.dirty.doorbell.notify_one();
        }
    }

    /// The driver took this connection off the dirty queue.
    pub(crate) fn unqueue(&self) {
        self.queued.store(false, Ordering::Release);
    }

    /// Resolves once the unit opened its stream (`Ok`), or the connection ended first.
    pub(crate) async fn stream_opened(&self) -> Result<(), ConnectionError> {
        std::future::poll_fn(|cx| {
            let mut s = self.lock();
            if s.stream.is_some() {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &s.lost {
                return Poll::Ready(Err(e.clone()));
            }
            s.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Resolves once everything written was acknowledged, the unit stopped the stream, or the
    /// connection ended.
    pub(crate) async fn send_finished(&self) {
        std::future::poll_fn(|cx| {
            let mut s = self.lock();
            if s.finished || s.lost.is_some() || s.stream.is_none() {
                return Poll::Ready(());
            }
            s.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    /// Finishes the send side (FIN after what is queued).
    pub(crate) fn finish(&self) {
        let mut s = self.lock();
        if let Some(id) = s.stream {
            let _ = s.proto.send_stream(id).finish();
        }
        drop(s);
        self.mark_dirty();
    }

    /// Closes the connection with `code` (the driver sends the close and forgets it once
    /// drained).
    pub(crate) fn close(&self, code: u32, reason: &'static [u8]) {
        let mut s = self.lock();
        if !s.proto.is_closed() {
            s.proto.close(
                Instant::now(),
                VarInt::from_u32(code),
                Bytes::from_static(reason),
            );
        }
        drop(s);
        self.mark_dirty();
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.lock().proto.is_handshaking()
    }
}

impl State {
    /// What the driver saw in an application event; wakes whoever waits for it.
    pub(crate) fn on_event(&mut self, event: quinn_proto::Event) {
        use quinn_proto::{Event, StreamEvent};
        match event {
            // One stream per unit (the transport allows no more): take the first.
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) if self.stream.is_none() => {
                self.stream = self.proto.streams().accept(Dir::Bi);
                wake(&mut self.reader);
                wake(&mut self.writer);
            }
            Event::Stream(StreamEvent::Readable { .. }) => wake(&mut self.reader),
            Event::Stream(StreamEvent::Writable { .. }) => wake(&mut self.writer),
            Event::Stream(StreamEvent::Finished { .. } | StreamEvent::Stopped { .. }) => {
                self.finished = true;
                wake(&mut self.writer);
            }
            Event::ConnectionLost { reason } => {
                self.lost = Some(reason);
                wake(&mut self.reader);
                wake(&mut self.writer);
            }
            _ => {}
        }
    }

    /// The connection is gone for good (drained, or the gateway is stopping).
    pub(crate) fn on_drained(&mut self) {
        if self.lost.is_none() {
            self.lost = Some(ConnectionError::LocallyClosed);
        }
        wake(&mut self.reader);
        wake(&mut self.writer);
    }
}

fn wake(slot: &mut Option<Waker>) {
    if let Some(w) = slot.take() {
        w.wake();
    }
}

/// A unit closing its connection is the end of its stream, like a TCP FIN; anything else is
/// an I/O error for the session.
fn lost_to_read(e: &ConnectionError) -> io::Result<()> {
    match e {
        ConnectionError::ApplicationClosed(_) | ConnectionError::ConnectionClosed(_) => Ok(()),
        ConnectionError::TimedOut => Err(io::Error::new(io::ErrorKind::TimedOut, "QUIC idle")),
        e => Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            e.to_string(),
        )),
    }
}

/// The unit's stream: read half.
#[derive(Debug)]
pub(crate) struct RecvHalf(pub(crate) Arc<Conn>);

/// The unit's stream: write half.
#[derive(Debug)]
pub(crate) struct SendHalf(pub(crate) Arc<Conn>);

impl AsyncRead for RecvHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let conn = &self.0;
        let mut s = conn.lock();
        let Some(id) = s.stream else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "no QUIC stream",
            )));
        };
        let mut stream = s.proto.recv_stream(id);
        let mut chunks = match stream.read(true) {
            Ok(c) => c,
            // Stopped or finished and fully read.
            Err(_) => return Poll::Ready(Ok(())),
        };
        let got = chunks.next(buf.remaining());
        let should_transmit = chunks.finalize().should_transmit();
        let result = match got {
            Ok(Some(chunk)) => {
                buf.put_slice(&chunk.bytes);
                Poll::Ready(Ok(()))
            }
            Ok(None) => Poll::Ready(Ok(())), // FIN: end of stream
            Err(ReadError::Blocked) => match &s.lost {
                Some(e) => Poll::Ready(lost_to_read(e)),
                None => {
                    s.reader = Some(cx.waker().clone());
                    Poll::Pending
                }
            },
            Err(ReadError::Reset(code)) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("unit reset its stream ({code})"),
            ))),
        };
        drop(s);
        if should_transmit {
            conn.mark_dirty();
        }
        result
    }
}

impl AsyncWrite for SendHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let conn = &self.0;
        let mut s = conn.lock();
        if let Some(e) = &s.lost {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                e.to_string(),
            )));
        }
        let Some(id) = s.stream else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "no QUIC stream",
            )));
        };
        match s.proto.send_stream(id).write(data) {
            Ok(n) => {
                drop(s);
                conn.mark_dirty();
                Poll::Ready(Ok(n))
            }
            Err(WriteError::Blocked) => {
                s.writer = Some(cx.waker().clone());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                e.to_string(),
            ))),
        }
    }

    /// Written data is already with quinn-proto, and the driver sends it.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.finish();
        Poll::Ready(Ok(()))
    }
}
