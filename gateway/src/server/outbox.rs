//! A session's bounded queue of MT frames waiting to be written to the unit.
//!
//! Why not a tokio `mpsc` channel: it allocates a 32-slot block with the channel, ~1 KiB that
//! every idle session would hold although units get a command now and then. This queue holds
//! nothing while empty: its storage is allocated on the first frame and given back when the
//! session has written the last one.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// `capacity` frames are waiting: the unit does not read.
    Full,
    /// The session has ended.
    Closed,
}

#[derive(Debug)]
struct State {
    frames: VecDeque<Bytes>,
    closed: bool,
}

/// One producer side (the unit's shard) and one consumer (the session task).
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    capacity: usize,
    ready: Notify,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                closed: false,
            }),
            capacity: capacity.max(1),
            ready: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // No code path panics while holding the lock; if one did, the queue is still sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame without waiting.
    pub(crate) fn try_push(&self, frame: Bytes) -> Result<(), PushError> {
        {
            let mut s = self.state();
            if s.closed {
                return Err(PushError::Closed);
            }
            if s.frames.len() >= self.capacity {
                return Err(PushError::Full);
            }
            s.frames.push_back(frame);
        }
        // Stores a permit when the session is not waiting, so no wake-up is lost.
        self.ready.notify_one();
        Ok(())
    }

    /// The next frame, if one is queued; the storage goes back when the queue empties.
    pub(crate) fn try_pop(&self) -> Option<Bytes> {
        let mut s = self.state();
        let frame = s.frames.pop_front();
        if s.frames.is_empty() && s.frames.capacity() > 0 {
            s.frames = VecDeque::new();
        }
        frame
    }

    /// Waits for the next frame (single consumer).
    pub(crate) async fn pop(&self) -> Bytes {
        loop {
            if let Some(frame) = self.try_pop() {
                return frame;
            }
            self.ready.notified().await;
        }
    }

    /// The session has ended: later pushes fail with `Closed`; what is queued stays for
    /// `try_pop` (the session's drain).
    pub(crate) fn close(&self) {
        self.state().closed = true;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn frames_come_out_in_order_and_a_full_queue_refuses() {
        let q = Outbox::new(2);
        assert_eq!(q.try_push(Bytes::from_static(b"a")), Ok(()));
        assert_eq!(q.try_push(Bytes::from_static(b"b")), Ok(()));
        assert_eq!(q.try_push(Bytes::from_static(b"c")), Err(PushError::Full));
        assert_eq!(q.try_pop().as_deref(), Some(&b"a"[..]));
        assert_eq!(q.try_push(Bytes::from_static(b"c")), Ok(()));
        assert_eq!(q.try_pop().as_deref(), Some(&b"b"[..]));
        assert_eq!(q.try_pop().as_deref(), Some(&b"c"[..]));
        assert_eq!(q.try_pop(), None);
    }

    #[test]
    fn an_empty_queue_holds_no_storage() {
        let q = Outbox::new(16);
        assert_eq!(q.state().frames.capacity(), 0);
        q.try_push(Bytes::from_static(b"a")).unwrap();
        assert!(q.state().frames.capacity() > 0);
        q.try_pop().unwrap();
        assert_eq!(q.state().frames.capacity(), 0);
    }

    #[test]
    fn a_closed_queue_refuses_but_keeps_what_is_queued_for_the_drain() {
        let q = Outbox::new(4);
        q.try_push(Bytes::from_static(b"a")).unwrap();
        q.close();
        assert_eq!(q.try_push(Bytes::from_static(b"b")), Err(PushError::Closed));
        assert_eq!(q.try_pop().as_deref(), Some(&b"a"[..]));
        assert_eq!(q.try_pop(), None);
    }

    #[tokio::test]
    async fn pop_waits_for_a_later_push_and_loses_no_wake_up() {
        let q = Arc::new(Outbox::new(4));
        let waiter = tokio::spawn({
            let q = Arc::clone(&q);
            async move { (q.pop().await, q.pop().await) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.try_push(Bytes::from_static(b"a")).unwrap();
        q.try_push(Bytes::from_static(b"b")).unwrap();
        let (a, b) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("pop woke up")
            .unwrap();
        assert_eq!((&a[..], &b[..]), (&b"a"[..], &b"b"[..]));
        // A push before anyone waits is not lost either.
        q.try_push(Bytes::from_static(b"c")).unwrap();
        let c = tokio::time::timeout(Duration::from_secs(5), q.pop())
            .await
            .unwrap();
        assert_eq!(&c[..], b"c");
    }
}
