//! The bytes an S3 remote may hold in memory for staged writes.
//!
//! A file smaller than one part is staged in memory and sent by its
//! commit's PUT (see [`super::staging`]), and the engine stages the next
//! files while earlier ones wait for their batch to be committed: without
//! a bound, a run of many medium-sized files would hold most of them in
//! memory at once. A staged body takes a [`Reservation`] of its size
//! before it is kept, and gives it back when it is committed or discarded
//! (when the reservation drops); staging waits meanwhile.
//!
//! It cannot deadlock the engine's pipeline: a staged write reaches its
//! commit without waiting for any other staging (the flusher hands on a
//! batch after a short window), so the bytes held are always given back.
//! A body larger than the whole budget reserves the whole budget: it waits
//! until nothing else is held, then goes through alone. Reservations are
//! served in the order they were asked for, so a large body is not passed
//! over forever by small ones.

use std::sync::{Arc, Condvar, Mutex};

use crate::locks::{CondvarExt, LockExt};

/// The bytes staged in memory one S3 remote holds at most by default: 16
/// files of a full part (8 MiB), far more of smaller ones.
pub const DEFAULT_MEMORY_BUDGET: u64 = 128 * 1024 * 1024;

/// A bound on the bytes held, shared by the staged writes of one replica.
pub struct MemoryBudget {
    limit: u64,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// Bytes reserved and not yet given back.
    held: u64,
    /// The ticket the next reservation is handed out with.
    next_ticket: u64,
    /// The ticket whose turn it is.
    serving: u64,
}

/// Bytes held until dropped.
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes (at least one).
    pub fn new(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit: limit.max(1),
            state: Mutex::new(State {
                held: 0,
                next_ticket: 0,
                serving: 0,
            }),
            changed: Condvar::new(),
        })
    }

    /// Reserves `bytes` (at most the whole budget), waiting until they
    /// fit and every earlier reservation was served.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Reservation {
        let bytes = bytes.min(self.limit);
        let mut state = self.state.locked();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        while state.serving != ticket || state.held + bytes > self.limit {
            state = self.changed.wait_locked(state);
        }
        state.serving += 1;
        state.held += bytes;
        drop(state);
        // The next in line may fit as well.
        self.changed.notify_all();
        Reservation {
            budget: self.clone(),
            bytes,
        }
    }

    /// The bytes reserved now.
    pub fn held(&self) -> u64 {
        self.state.locked().held
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.state.locked().held -= self.bytes;
        self.budget.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_reservation_waits_until_earlier_ones_are_given_back() {
        let budget = MemoryBudget::new(100);
        let first = budget.reserve(60);
        let (done, reserved) = mpsc::channel();
        let waiting = {
            let budget = budget.clone();
            std::thread::spawn(move || {
                let second = budget.reserve(60);
                done.send(()).unwrap();
                drop(second);
            })
        };
        assert!(
            reserved.recv_timeout(Duration::from_millis(200)).is_err(),
            "60 more bytes do not fit beside 60 of 100"
        );
        drop(first);
        reserved.recv_timeout(Duration::from_secs(5)).unwrap();
        waiting.join().unwrap();
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_body_larger_than_the_budget_goes_through_alone() {
        let budget = MemoryBudget::new(100);
        let large = budget.reserve(1_000);
        assert_eq!(budget.held(), 100);
        drop(large);
        let small = budget.reserve(10);
        assert_eq!(budget.held(), 10);
        drop(small);
    }

    #[test]
    fn reservations_are_served_in_order() {
        let budget = MemoryBudget::new(100);
        let held = budget.reserve(50);
        let (order, served) = mpsc::channel();
        let large = {
            let (budget, order) = (budget.clone(), order.clone());
            std::thread::spawn(move || {
                let r = budget.reserve(100);
                order.send("large").unwrap();
                drop(r);
            })
        };
        // The large one asks first and waits for the 50 held.
        while budget.state.locked().next_ticket < 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let small = {
            let budget = budget.clone();
            std::thread::spawn(move || {
                let r = budget.reserve(10);
                order.send("small").unwrap();
                drop(r);
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
        large.join().unwrap();
        small.join().unwrap();
        let order: Vec<&str> = served.try_iter().collect();
        assert_eq!(order, ["large", "small"], "the small one did not pass it");
    }
}
