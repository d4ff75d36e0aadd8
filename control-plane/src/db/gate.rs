//! [`Gate`]: one holder at a time, with interactive work served before background work.
//!
//! The SQLite writer admits one transaction at a time. Under an MO burst, ingest keeps dozens
//! of transactions waiting for it; in a plain FIFO queue an operator's payment command waits
//! behind all of them (a mean 1.9 s in issue 21's measured burst). The gate keeps two FIFO
//! queues and hands the turn to the interactive one first, but never more than
//! [`INTERACTIVE_STREAK`] times in a row while background work waits, so a flood of API
//! writes slows ingest down without stopping it.
//!
//! Order is only changed between transactions that were waiting at the same time, which are
//! concurrent: any order of them is one a client could have seen anyway.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Which queue a holder waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Someone is waiting for the answer: API requests (an operator's payment command, an
    /// enable), and the work that completes one.
    Interactive,
    /// Bulk work whose latency nobody watches: MO ingest, presence, pruning, webhook
    /// bookkeeping, alert analysis.
    Background,
}

/// How many interactive holders may go in a row while background work waits.
const INTERACTIVE_STREAK: u32 = 8;

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Gate {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    held: bool,
    interactive: VecDeque<oneshot::Sender<()>>,
    background: VecDeque<oneshot::Sender<()>>,
    /// Interactive turns given in a row since the last background turn.
    streak: u32,
}

/// The turn at the gate; dropping it hands the turn on.
#[derive(Debug)]
pub(super) struct Turn {
    gate: Arc<Gate>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.gate.pass_on();
    }
}

/// A place at the gate, taken at once (without waiting) by [`Gate::ticket`]: the turn
/// itself, or a place in a queue. Dropped unused, it gives up its place, and a turn it was
/// given but never used (a cancelled request) is handed on, so a cancellation never wedges
/// the gate.
pub(super) struct Ticket {
    gate: Arc<Gate>,
    place: Place,
}

enum Place {
    /// The gate was free: the turn is this ticket's.
    Granted,
    /// Waiting in a queue; the turn arrives on the channel.
    Queued(oneshot::Receiver<()>),
    /// Turned into a [`Turn`] (or given up).
    Used,
}

impl Ticket {
    /// Waits for this ticket's turn.
    pub(super) async fn wait(mut self) -> Turn {
        if let Place::Queued(turn) = &mut self.place {
            let given = turn.await;
            // A sender is only dropped unsent by `pass_on` when its receiver is gone, which
            // is not the case while this future runs.
            debug_assert!(given.is_ok());
        }
        self.place = Place::Used;
        Turn {
            gate: self.gate.clone(),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.place, Place::Used) {
            Place::Used => {}
            Place::Granted => self.gate.pass_on(),
            Place::Queued(mut turn) => {
                // After `close`, no turn can be sent to this ticket any more; one sent
                // before is still there to take.
                turn.close();
                if turn.try_recv().is_ok() {
                    self.gate.pass_on();
                }
            }
        }
    }
}

impl Gate {
    /// Takes a place in `priority`'s queue now (or the turn, when the gate is free); the
    /// caller waits for it with [`Ticket::wait`], possibly elsewhere.
    pub(super) fn ticket(self: &Arc<Self>, priority: Priority) -> Ticket {
        let mut state = self.state.lock().expect("gate state");
        let place = if state.held {
            let (give, turn) = oneshot::channel();
            match priority {
                Priority::Interactive => state.interactive.push_back(give),
                Priority::Background => state.background.push_back(give),
            }
            Place::Queued(turn)
        } else {
            state.held = true;
            Place::Granted
        };
        Ticket {
            gate: self.clone(),
            place,
        }
    }

    /// Waits for the turn in `priority`'s queue.
    pub(super) async fn enter(self: &Arc<Self>, priority: Priority) -> Turn {
        self.ticket(priority).wait().await
    }

    /// How many wait for a turn (cancelled waiters not yet skipped included).
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        let state = self.state.lock().expect("gate state");
        state.interactive.len() + state.background.len()
    }

    /// Gives the turn to the next waiter, or frees the gate.
    fn pass_on(&self) {
        let mut state = self.state.lock().expect("gate state");
        loop {
            let interactive_next = !state.interactive.is_empty()
                && (state.background.is_empty() || state.streak < INTERACTIVE_STREAK);
            let next = if interactive_next {
                state.streak += 1;
                state.interactive.pop_front()
            } else {
                state.streak = 0;
                state.background.pop_front()
            };
            match next {
                None => {
                    state.held = false;
                    return;
                }
                // A waiter that gave up (its receiver dropped) is skipped.
                Some(give) => {
                    if give.send(()).is_ok() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Queues `n` waiters of `priority`, each recording its tag when its turn comes, and
    /// waits until all of them are queued.
    async fn queue(
        gate: &Arc<Gate>,
        order: &Arc<Mutex<Vec<String>>>,
        priority: Priority,
        tags: impl IntoIterator<Item = String>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for tag in tags {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = gate.enter(priority).await;
                order.lock().unwrap().push(tag);
            }));
            // Each in its queue before the next: the queues are FIFO.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tasks
    }

    #[tokio::test]
    async fn interactive_waiters_go_first_but_background_is_not_starved() {
        let gate = Arc::new(Gate::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let holder = gate.enter(Priority::Background).await;
        let mut tasks = queue(
            &gate,
            &order,
            Priority::Background,
            (0..3).map(|i| format!("b{i}")),
        )
        .await;
        tasks.extend(
            queue(
                &gate,
                &order,
                Priority::Interactive,
                (0..10).map(|i| format!("i{i}")),
            )
            .await,
        );
        drop(holder);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        // Eight interactive turns, then the background turn that waited longest, then the
        // rest of the interactive ones, then the rest of the background, each queue in order.
        let expected: Vec<String> = (0..8)
            .map(|i| format!("i{i}"))
            .chain(["b0".to_owned()])
            .chain((8..10).map(|i| format!("i{i}")))
            .chain(["b1".to_owned(), "b2".to_owned()])
            .collect();
        assert_eq!(order, expected);
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_a_free_gate_is_entered_at_once() {
        let gate = Arc::new(Gate::default());
        let first = gate.enter(Priority::Background).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), gate.enter(Priority::Interactive))
                .await
                .is_err(),
            "a second holder got in beside the first"
        );
        drop(first);
        let _second =
            tokio::time::timeout(Duration::from_secs(5), gate.enter(Priority::Interactive))
                .await
                .expect("the gate is free again");
    }

    #[tokio::test]
    async fn a_waiter_cancelled_before_or_after_its_turn_came_does_not_wedge_the_gate() {
        let gate = Arc::new(Gate::default());
        let holder = gate.enter(Priority::Interactive).await;
        // Cancelled while waiting: skipped.
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move {
                let _turn = gate.enter(Priority::Interactive).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        waiting.abort();
        let _ = waiting.await;
        drop(holder);
        let holder = tokio::time::timeout(Duration::from_secs(5), gate.enter(Priority::Background))
            .await
            .expect("a cancelled waiter was skipped");

        // Given the turn, then dropped before it was polled again: the turn is handed on.
        let mut given = Box::pin(gate.enter(Priority::Interactive));
        assert!(futures_util::poll!(given.as_mut()).is_pending());
        drop(holder); // sends the turn to `given`
        drop(given); // which never looks at it
        tokio::time::timeout(Duration::from_secs(5), gate.enter(Priority::Background))
            .await
            .expect("a turn given to a cancelled waiter was handed on");
    }
}
