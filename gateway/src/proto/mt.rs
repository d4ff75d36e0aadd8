//! The MT queue of one unit, without I/O: ordered, bounded, stop-and-wait.
//!
//! Commands are sent one at a time in enqueue order; the next is sent only once the unit has
//! answered the current one (an MT reply, MO type 5) or the current one has expired. That keeps
//! payment commands in order on the unit even across retries, at the cost of one round trip per
//! command, which is cheap next to how rarely a unit gets commands.
//!
//! Retries: the head is (re)tried at `ack_timeout · 2^(n-1)` intervals, capped at `backoff_max`.
//! An attempt while the unit is connected writes the command again (same correlation id: the
//! unit drops duplicates); an attempt while it is offline only counts. After `max_attempts`
//! without a reply the unit is reported [`MtEvent::Unreachable`] once (the driver calls the
//! fallback: a WAKEUP SMS), and the command then waits, untried, until it expires
//! ([`MtEvent::Expired`]) or the unit connects, which always triggers an immediate send.
//!
//! The queue is a cache of the database's record of what the unit must still get: when a unit
//! connects the record's commands are merged in ([`UnitMt::merge_pending`]), in the record's
//! order, without duplicating what is already held (by correlation id).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codec::CorrelationId;

/// Retry and queue settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MtPolicy {
    /// Wait for the reply to the first attempt; later waits double.
    pub ack_timeout: Duration,
    /// Upper bound of the wait between attempts.
    pub backoff_max: Duration,
    /// Attempts before the unit is reported unreachable.
    pub max_attempts: u32,
    /// Commands queued per unit (the head included); more are refused.
    pub queue_capacity: usize,
}

impl Default for MtPolicy {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            max_attempts: 5,
            queue_capacity: 64,
        }
    }
}

impl MtPolicy {
    /// Wait after attempt `n` (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.ack_timeout
            .checked_mul(factor)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }
}

/// One MT command as the gateway holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtCommand {
    /// The message's id; the unit echoes it.
    pub correlation_id: CorrelationId,
    /// The CBOR MT message.
    pub message: Bytes,
    /// When the API created it (unix ms), carried on when forwarded.
    pub created_at_ms: i64,
    /// After this the command is dropped as expired.
    pub expires_at: Instant,
}

/// Something the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MtEvent {
    /// The command was written to the unit (attempt `attempt`).
    Sent {
        /// Which command.
        correlation_id: CorrelationId,
        /// 1-based; a send triggered by a reconnect after the attempts ran out counts on.
        attempt: u32,
    },
    /// The unit answered: the command is settled and the next one goes.
    Settled {
        /// Which command.
        correlation_id: CorrelationId,
    },
    /// `max_attempts` passed without a reply: call the fallback (once per command).
    Unreachable {
        /// Which command.
        correlation_id: CorrelationId,
        /// Attempts made.
        attempts: u32,
    },
    /// The command's time ran out without a reply.
    Expired {
        /// The command, for the outcome record.
        command: MtCommand,
        /// Times it was written to the unit.
        sends: u32,
    },
}

/// Correlation ids the unit answered lately, remembered so that a copy arriving a moment later
/// (from the record, read before the answer was applied) is not sent again.
const SETTLED_REMEMBERED: usize = 8;

/// Why [`UnitMt::enqueue`] refused a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueError {
    /// The unit's queue is full.
    Full(MtCommand),
}

#[derive(Debug)]
struct Head {
    command: MtCommand,
    attempts: u32,
    sends: u32,
    next_at: Instant,
    fallback_reported: bool,
}

/// The MT state of one unit.
#[derive(Debug)]
pub struct UnitMt {
    policy: MtPolicy,
    head: Option<Head>,
    queue: VecDeque<MtCommand>,
    connected: bool,
    transmits: VecDeque<(CorrelationId, Bytes)>,
    events: VecDeque<MtEvent>,
    /// The last [`SETTLED_REMEMBERED`] commands the unit answered (allocated on the first).
    settled: VecDeque<CorrelationId>,
}

impl UnitMt {
    /// An empty, disconnected unit.
    pub fn new(policy: MtPolicy) -> Self {
        Self {
            policy,
            head: None,
            queue: VecDeque::new(),
            connected: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            settled: VecDeque::new(),
        }
    }

    /// Whether `id` is the head or queued, or was answered lately.
    fn holds(&self, id: CorrelationId) -> bool {
        self.head
            .as_ref()
            .is_some_and(|h| h.command.correlation_id == id)
            || self.queue.iter().any(|c| c.correlation_id == id)
            || self.settled.contains(&id)
    }

    /// Adds a command at the back. A correlation id already held, or answered lately, is
    /// ignored (the bus delivers at least once).
    pub fn enqueue(&mut self, command: MtCommand, now: Instant) -> Result<(), EnqueueError> {
        if self.holds(command.correlation_id) {
            return Ok(());
        }
        if self.len() >= self.policy.queue_capacity {
            return Err(EnqueueError::Full(command));
        }
        self.queue.push_back(command);
        self.advance(now);
        Ok(())
    }

    /// Merges the record's list of what the unit must still get (oldest first) into the queue:
    /// the queue becomes the record's commands in the record's order, then the commands held
    /// here that the record does not list (newer ones, or types the record does not keep), in
    /// their order. A command held already keeps its place in that order and the later of the
    /// two expiries; the head in flight stays in flight; a command answered lately is not
    /// queued again. Returns the commands that did not fit (`queue_capacity`), for a
    /// queue-full outcome.
    pub fn merge_pending(&mut self, pending: Vec<MtCommand>, now: Instant) -> Vec<MtCommand> {
        let mut held: Vec<Option<MtCommand>> = self.queue.drain(..).map(Some).collect();
        let head_id = self.head.as_ref().map(|h| h.command.correlation_id);
        let mut merged: Vec<MtCommand> = Vec::with_capacity(pending.len() + held.len());
        for c in pending {
            let id = c.correlation_id;
            if Some(id) == head_id
                || self.settled.contains(&id)
                || merged.iter().any(|m| m.correlation_id == id)
            {
                continue;
            }
            let old = held
                .iter_mut()
                .find(|h| h.as_ref().is_some_and(|h| h.correlation_id == id))
                .and_then(Option::take);
            merged.push(match old {
                Some(old) if old.expires_at > c.expires_at => old,
                _ => c,
            });
        }
        merged.extend(held.into_iter().flatten());
        let room = self
            .policy
            .queue_capacity
            .saturating_sub(usize::from(self.head.is_some()));
        let refused = if merged.len() > room {
            merged.split_off(room)
        } else {
            Vec::new()
        };
        self.queue = merged.into();
        self.advance(now);
        refused
    }

    /// The unit has a live session now: the head goes out at once.
    pub fn handle_connected(&mut self, now: Instant) {
        self.connected = true;
        if let Some(head) = &mut self.head {
            head.sends += 1;
            head.next_at = now + self.policy.backoff(head.attempts.max(1));
            self.transmits
                .push_back((head.command.correlation_id, head.command.message.clone()));
            self.events.push_back(MtEvent::Sent {
                correlation_id: head.command.correlation_id,
                attempt: head.attempts.max(1),
            });
        }
        self.advance(now);
    }

    /// The unit's session ended.
    pub fn handle_disconnected(&mut self) {
        self.connected = false;
        self.transmits.clear();
    }

    /// The unit answered `id`. Returns whether it settled the command in flight.
    pub fn handle_reply(&mut self, id: CorrelationId, now: Instant) -> bool {
        if self
            .head
            .as_ref()
            .is_some_and(|h| h.command.correlation_id == id)
        {
            self.head = None;
            if self.settled.len() >= SETTLED_REMEMBERED {
                self.settled.pop_front();
            }
            self.settled.push_back(id);
            self.events
                .push_back(MtEvent::Settled { correlation_id: id });
            self.advance(now);
            true
        } else {
            false
        }
    }

    /// Time passed: retries, fallback and expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// The next command write for the session.
    pub fn poll_transmit(&mut self) -> Option<(CorrelationId, Bytes)> {
        self.transmits.pop_front()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<MtEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.head
            .as_ref()
            .map(|h| h.next_at.min(h.command.expires_at))
    }

    /// Commands held (the head included).
    pub fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.queue.len()
    }

    /// Nothing queued and nothing left to report.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.events.is_empty()
    }

    /// Whether a session is attached.
    pub const fn is_connected(&self) -> bool {
        self.connected
    }

    /// Takes every command out, in order (to hand them to another gateway).
    pub fn drain(&mut self) -> Vec<MtCommand> {
        self.transmits.clear();
        let mut out = Vec::with_capacity(self.len());
        out.extend(self.head.take().map(|h| h.command));
        out.extend(self.queue.drain(..));
        out
    }

    fn advance(&mut self, now: Instant) {
        loop {
            if self.head.is_none() {
                let Some(command) = self.queue.pop_front() else {
                    return;
                };
                self.head = Some(Head {
                    command,
                    attempts: 0,
                    sends: 0,
                    next_at: now,
                    fallback_reported: false,
                });
            }
            let Some(head) = &mut self.head else { return };
            if now >= head.command.expires_at {
                let sends = head.sends;
                if let Some(h) = self.head.take() {
                    self.events.push_back(MtEvent::Expired {
                        command: h.command,
                        sends,
                    });
                }
                continue;
            }
            if now < head.next_at {
                return;
            }
            if head.attempts >= self.policy.max_attempts {
                if !head.fallback_reported {
                    head.fallback_reported = true;
                    self.events.push_back(MtEvent::Unreachable {
                        correlation_id: head.command.correlation_id,
                        attempts: head.attempts,
                    });
                }
                // Nothing more to try on a timer: wait for a reconnect or the expiry.
                head.next_at = head.command.expires_at;
                return;
            }
            head.attempts += 1;
            head.next_at = now + self.policy.backoff(head.attempts);
            if self.connected {
                head.sends += 1;
                self.transmits
                    .push_back((head.command.correlation_id, head.command.message.clone()));
                self.events.push_back(MtEvent::Sent {
                    correlation_id: head.command.correlation_id,
                    attempt: head.attempts,
                });
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn policy() -> MtPolicy {
        MtPolicy {
            ack_timeout: S,
            backoff_max: 4 * S,
            max_attempts: 3,
            queue_capacity: 3,
        }
    }

    fn cmd(n: u8, expires_at: Instant) -> MtCommand {
        MtCommand {
            correlation_id: CorrelationId([n; 16]),
            message: Bytes::from(vec![n]),
            created_at_ms: 0,
            expires_at,
        }
    }

    fn sent(u: &mut UnitMt) -> Vec<u8> {
        std::iter::from_fn(|| u.poll_transmit())
            .map(|(_, m)| m[0])
            .collect()
    }

    fn events(u: &mut UnitMt) -> Vec<MtEvent> {
        std::iter::from_fn(|| u.poll_event()).collect()
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = policy();
        assert_eq!(
            (1..=5).map(|n| p.backoff(n)).collect::<Vec<_>>(),
            [S, 2 * S, 4 * S, 4 * S, 4 * S]
        );
        assert_eq!(p.backoff(99), 4 * S);
    }

    #[test]
    fn in_order_one_at_a_time() {
        let t0 = Instant::now();
        let far = t0 + 3600 * S;
        let mut u = UnitMt::new(policy());
        u.handle_connected(t0);
        for n in 1..=3 {
            u.enqueue(cmd(n, far), t0).unwrap();
        }
        assert_eq!(sent(&mut u), [1], "only the head goes out");
        assert!(!u.handle_reply(CorrelationId([2; 16]), t0), "not in flight");
        assert!(u.handle_reply(CorrelationId([1; 16]), t0));
        assert_eq!(sent(&mut u), [2]);
        assert!(u.handle_reply(CorrelationId([2; 16]), t0));
        assert!(u.handle_reply(CorrelationId([3; 16]), t0));
        assert_eq!(sent(&mut u), [3]);
        assert!(u.is_connected());
        let ev = events(&mut u);
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, MtEvent::Settled { .. }))
                .count(),
            3
        );
        assert!(u.is_empty());
    }

    #[test]
    fn full_queue_refuses_and_duplicates_are_ignored() {
        let t0 = Instant::now();
        let far = t0 + 3600 * S;
        let mut u = UnitMt::new(policy());
        for n in 1..=3 {
            u.enqueue(cmd(n, far), t0).unwrap();
        }
        u.enqueue(cmd(2, far), t0).unwrap();
        assert_eq!(u.len(), 3);
        assert!(
            matches!(u.enqueue(cmd(4, far), t0), Err(EnqueueError::Full(c)) if c.message[..] == [4])
        );
    }

    #[test]
    fn retries_with_backoff_while_connected_then_unreachable_then_expired() {
        let t0 = Instant::now();
        let mut u = UnitMt::new(policy());
        u.handle_connected(t0);
        u.enqueue(cmd(1, t0 + 60 * S), t0).unwrap();
        assert_eq!(sent(&mut u), [1]);
        assert_eq!(u.poll_timeout(), Some(t0 + S));
        u.handle_timeout(t0 + S);
        assert_eq!(sent(&mut u), [1], "retry 2");
        assert_eq!(u.poll_timeout(), Some(t0 + 3 * S));
        u.handle_timeout(t0 + 3 * S);
        assert_eq!(sent(&mut u), [1], "retry 3");
        assert_eq!(u.poll_timeout(), Some(t0 + 7 * S));
        u.handle_timeout(t0 + 7 * S);
        assert!(sent(&mut u).is_empty(), "attempts exhausted");
        let ev = events(&mut u);
        assert_eq!(
            ev.last(),
            Some(&MtEvent::Unreachable {
                correlation_id: CorrelationId([1; 16]),
                attempts: 3
            })
        );
        assert_eq!(u.poll_timeout(), Some(t0 + 60 * S));
        u.handle_timeout(t0 + 60 * S);
        let ev = events(&mut u);
        assert!(matches!(&ev[..], [MtEvent::Expired { sends: 3, .. }]));
        assert!(u.is_empty());
    }

    #[test]
    fn offline_unit_counts_attempts_then_reconnect_sends_at_once() {
        let t0 = Instant::now();
        let mut u = UnitMt::new(policy());
        u.enqueue(cmd(1, t0 + 60 * S), t0).unwrap();
        u.enqueue(cmd(2, t0 + 60 * S), t0).unwrap();
        for t in [1, 3, 7] {
            u.handle_timeout(t0 + t * S);
        }
        assert!(sent(&mut u).is_empty(), "nothing written while offline");
        assert!(matches!(
            events(&mut u)[..],
            [MtEvent::Unreachable { attempts: 3, .. }]
        ));
        // The wakeup SMS works: the unit connects and gets the head at once.
        u.handle_connected(t0 + 10 * S);
        assert_eq!(sent(&mut u), [1]);
        u.handle_disconnected();
        assert!(u.handle_reply(CorrelationId([1; 16]), t0 + 11 * S));
        assert!(sent(&mut u).is_empty(), "disconnected again: 2 waits");
        u.handle_connected(t0 + 12 * S);
        assert_eq!(sent(&mut u), [2]);
    }

    #[test]
    fn expiry_skips_to_the_next_command_and_drain_keeps_order() {
        let t0 = Instant::now();
        let mut u = UnitMt::new(policy());
        u.enqueue(cmd(1, t0 + 2 * S), t0).unwrap();
        u.enqueue(cmd(2, t0 + 60 * S), t0).unwrap();
        u.enqueue(cmd(3, t0 + 60 * S), t0).unwrap();
        u.handle_timeout(t0 + 2 * S);
        assert!(matches!(events(&mut u)[..], [MtEvent::Expired { .. }]));
        let rest: Vec<u8> = u.drain().iter().map(|c| c.message[0]).collect();
        assert_eq!(rest, [2, 3]);
        assert!(u.is_empty());
    }

    #[test]
    fn the_record_merges_in_its_order_without_duplicates() {
        let t0 = Instant::now();
        let far = t0 + 3600 * S;
        let mut u = UnitMt::new(MtPolicy {
            queue_capacity: 5,
            ..policy()
        });
        u.handle_connected(t0);
        // The bus delivered 1 (in flight), then 9 (not in the record) and 3.
        for n in [1, 9, 3] {
            u.enqueue(cmd(n, far), t0).unwrap();
        }
        assert_eq!(sent(&mut u), [1]);
        // The record says 1, 2, 3, 4: 1 stays in flight, 2 goes before 3, 9 after the record.
        let refused = u.merge_pending((1..=4).map(|n| cmd(n, far)).collect(), t0);
        assert!(refused.is_empty());
        assert_eq!(u.len(), 5);
        assert!(sent(&mut u).is_empty(), "the head is still in flight");
        let mut order = Vec::new();
        for n in [1, 2, 3, 4, 9] {
            assert!(u.handle_reply(CorrelationId([n; 16]), t0), "{n} in order");
            order.extend(sent(&mut u));
        }
        assert_eq!(order, [2, 3, 4, 9]);
        // An answered command read from the record a moment later is not sent again, and
        // neither is a bus copy of it.
        assert!(u.merge_pending(vec![cmd(4, far)], t0).is_empty());
        u.enqueue(cmd(4, far), t0).unwrap();
        assert_eq!(u.len(), 0);
        assert!(sent(&mut u).is_empty());
    }

    #[test]
    fn merging_beyond_the_capacity_refuses_the_tail() {
        let t0 = Instant::now();
        let far = t0 + 3600 * S;
        let mut u = UnitMt::new(policy()); // capacity 3
        u.enqueue(cmd(7, far), t0).unwrap(); // the head
        let refused = u.merge_pending((1..=3).map(|n| cmd(n, far)).collect(), t0);
        assert_eq!(
            refused.iter().map(|c| c.message[0]).collect::<Vec<_>>(),
            [3]
        );
        let all: Vec<u8> = u.drain().iter().map(|c| c.message[0]).collect();
        assert_eq!(all, [7, 1, 2]);
        assert_eq!(u.poll_timeout(), None);
    }
}
