//! A small pool of connections for the SFTP replica, so that
//! `parallel_transfers` transfers to one server really run at once: libssh2
//! serialises every call on one session, so parallelism needs sessions.
//!
//! It owns only the bookkeeping: how many connections exist, which are idle,
//! and which must not be reused. Connections are made lazily by the caller's
//! `connect` function (so host-key verification and login run for every one
//! of them), at most `size` at once; each is checked out by one caller and
//! comes back when its [`Pooled`] guard is dropped. A connection marked
//! broken is dropped instead of returned, and it also retires every idle
//! one: when the server went away they are all dead, and finding that out
//! one by one could cost a timeout each. It knows nothing of SSH.
//!
//! A new connection is made on a thread of its own while its caller waits
//! for whichever comes first: that connection, or one another caller gives
//! back. A handshake and a login take many round trips and much of the
//! server's CPU (a busy server takes hundreds of milliseconds), while a
//! walk's folder listing takes one round trip: a caller that connected
//! inline held its work (and the end of the whole walk) until its own
//! handshake was done, even when a session came back long before. A
//! connection that arrives after its caller was served waits idle for the
//! next one.

use std::any::Any;
use std::ops::Deref;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, ThreadId};

use crate::locks::{CondvarExt, LockExt};

/// A bounded set of reusable connections of type `T`.
pub struct Pool<T> {
    shared: Arc<Shared<T>>,
}

/// What the pool and its connecting threads share.
struct Shared<T> {
    state: Mutex<State<T>>,
    /// Signalled whenever a connection comes back, arrives, or stops
    /// existing.
    changed: Condvar,
}

struct State<T> {
    idle: Vec<T>,
    /// Connections that exist or are being made: idle, checked out, or on
    /// a connecting thread.
    open: usize,
    /// The configured size.
    size: usize,
    /// The most connections at once for now: `size`, lowered while the
    /// server refuses more (OpenSSH's `MaxStartups`, a per-user limit).
    limit: usize,
    /// Bumped when a connection broke; an older connection is dropped when
    /// it comes back instead of being reused.
    generation: u64,
    /// The threads that checked out the connections now out, one entry
    /// each: a thread asking for a second one while it holds one could
    /// wait for itself forever (certainly with a pool of one).
    holders: Vec<ThreadId>,
    /// A login or host-key refusal that a connecting thread met after its
    /// caller had been served by another connection: the next caller's
    /// error (an `E` of [`Pool::get`]), so that it is heard rather than
    /// met again, unseen, by every later connect.
    unheard: Option<Box<dyn Any + Send>>,
}

/// What a connection knows about its own health.
pub trait Health {
    /// Whether a transport error was seen on it: it must not be reused.
    fn is_broken(&self) -> bool;
}

/// What a failed connect says about the server.
pub trait ConnectFailure {
    /// True when the server may only be refusing more connections for now
    /// (a dropped handshake, a refused socket), so the open ones can carry
    /// the work; false when any new connection would fail the same way (a
    /// login or host-key problem), which the caller must hear about.
    fn may_be_a_session_limit(&self) -> bool;
}

/// How the connect a caller started ended, while it still waits: its
/// failure is that caller's to judge; its connection, when made, simply
/// joins the idle ones (and may be taken by another caller first).
type Outcome<E> = Arc<Mutex<Option<Result<(), E>>>>;

impl<T: Health> Pool<T> {
    /// A pool of at most `size` connections (at least one); none is made yet.
    pub fn new(size: usize) -> Pool<T> {
        let size = size.max(1);
        Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    idle: Vec::new(),
                    open: 0,
                    size,
                    limit: size,
                    generation: 0,
                    holders: Vec::new(),
                    unheard: None,
                }),
                changed: Condvar::new(),
            }),
        }
    }

    /// The configured number of connections.
    pub fn size(&self) -> usize {
        self.lock().size
    }

    /// Drops the idle connections and retires the checked-out ones, so
    /// every later `get` gets a connection made from then on.
    pub fn retire(&self) {
        let mut state = self.lock();
        // A refusal of what was retired (a forgotten login) is not news.
        state.unheard = None;
        Self::retire_all(&mut state);
        drop(state);
        self.shared.changed.notify_all();
    }
}

impl<T: Health + Send + 'static> Pool<T> {
    /// An idle connection, or else the first one to come back or be made:
    /// while fewer than the limit exist, a new one from `connect` is made
    /// on a thread of its own meanwhile. A failed `connect` is the
    /// caller's error when no other connection exists; when others do,
    /// the server is taken to refuse more for now, the limit drops to what
    /// exists, and the caller waits for one of those. A login or host-key
    /// refusal met after its caller was served by another connection is
    /// the error of the next call.
    ///
    /// A thread must not ask while it holds one: that is a bug, and a
    /// panic names it instead of a silent wait for itself.
    pub fn get<E>(
        &self,
        connect: impl Fn() -> Result<T, E> + Send + Sync + 'static,
    ) -> Result<Pooled<'_, T>, E>
    where
        E: ConnectFailure + Send + 'static,
    {
        let me = thread::current().id();
        let mut state = self.lock();
        if state.holders.contains(&me) {
            // Unlocked first, so the pool is not poisoned for others.
            drop(state);
            panic!("a thread asked for a second pooled connection while holding one");
        }
        if let Some(unheard) = state.unheard.take() {
            match unheard.downcast::<E>() {
                Ok(failed) => return Err(*failed),
                Err(other) => state.unheard = Some(other),
            }
        }
        let connect = Arc::new(connect);
        // The connect this caller started and is still waiting for.
        let mut pending: Option<Outcome<E>> = None;
        loop {
            if let Some(item) = state.idle.pop() {
                // Under the lock: a connect that fails from now on finds
                // no one waiting for it (see `spawn_connect`).
                drop(pending.take());
                state.holders.push(me);
                let generation = state.generation;
                return Ok(self.guard(item, generation, me));
            }
            // Its own connect ended: made (and taken by another caller
            // first, or dropped after a retire), or failed.
            if let Some(ended) = pending.as_ref().and_then(|o| o.locked().take()) {
                pending = None;
                // After a refusal while others are open, the connecting
                // thread lowered the limit already: wait for those.
                if let Err(failed) = ended
                    && (state.open == 0 || !failed.may_be_a_session_limit())
                {
                    return Err(failed);
                }
                continue;
            }
            if pending.is_none() && state.open < state.limit {
                state.open += 1;
                let outcome: Outcome<E> = Arc::default();
                pending = Some(Arc::clone(&outcome));
                let generation = state.generation;
                // Connecting takes a handshake and a login: never under the
                // lock, and not on this thread, which takes the first
                // connection to be free, made or given back.
                drop(state);
                let connect = Arc::clone(&connect);
                self.spawn_connect(move || connect(), generation, outcome);
                state = self.lock();
                continue;
            }
            state = self.shared.changed.wait_locked(state);
        }
    }

    /// Runs `connect` on a thread of its own; what it makes joins the idle
    /// connections, and a failure goes to `outcome`.
    fn spawn_connect<E>(
        &self,
        connect: impl FnOnce() -> Result<T, E> + Send + 'static,
        generation: u64,
        outcome: Outcome<E>,
    ) where
        E: ConnectFailure + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let run = move || {
            let made = connect();
            let mut state = shared.state.locked();
            let ended = match made {
                // Made before a retire: it may carry what was retired (a
                // forgotten login), so it is not used.
                Ok(_) if generation != state.generation => {
                    state.open -= 1;
                    Ok(())
                }
                Ok(item) => {
                    state.idle.push(item);
                    Ok(())
                }
                Err(e) => {
                    state.open -= 1;
                    if state.open > 0 && e.may_be_a_session_limit() {
                        tracing::debug!(
                            sessions = state.open,
                            "the server refused another session; using the open ones"
                        );
                        state.limit = state.limit.min(state.open);
                    }
                    // Nothing is open and this one failed too: the server
                    // is not there or refuses everyone, so what the
                    // refusals before it lowered was no session limit.
                    if state.open == 0 {
                        state.limit = state.size;
                    }
                    // Its caller took another connection and went on: a
                    // refusal no other session would escape is the next
                    // caller's to hear.
                    if Arc::strong_count(&outcome) == 1 && !e.may_be_a_session_limit() {
                        state.unheard = Some(Box::new(e));
                        Ok(())
                    } else {
                        Err(e)
                    }
                }
            };
            *outcome.locked() = Some(ended);
            drop(state);
            shared.changed.notify_all();
        };
        // Should no thread be had, the caller connects itself instead.
        let job = Arc::new(Mutex::new(Some(run)));
        let theirs = Arc::clone(&job);
        let spawned = thread::Builder::new()
            .name("sftp-connect".into())
            .spawn(move || {
                let run = theirs.locked().take();
                if let Some(run) = run {
                    run();
                }
            });
        if spawned.is_err() {
            let run = job.locked().take();
            if let Some(run) = run {
                run();
            }
        }
    }
}

impl<T: Health> Pool<T> {
    /// Drops every idle connection and retires the checked-out ones (they
    /// are dropped when they come back).
    fn retire_all(state: &mut State<T>) {
        state.open -= state.idle.len();
        state.idle.clear();
        state.generation += 1;
        // A server that refused sessions may take them again once it is
        // back: start from the configured size.
        state.limit = state.size;
    }

    fn give_back(&self, item: T, generation: u64, holder: ThreadId) {
        let mut state = self.lock();
        if let Some(i) = state.holders.iter().position(|h| *h == holder) {
            state.holders.swap_remove(i);
        }
        if item.is_broken() {
            state.open -= 1;
            if generation == state.generation {
                Self::retire_all(&mut state);
            }
        } else if generation != state.generation {
            state.open -= 1;
        } else {
            state.idle.push(item);
        }
        drop(state);
        self.shared.changed.notify_all();
    }

    fn guard(&self, item: T, generation: u64, holder: ThreadId) -> Pooled<'_, T> {
        Pooled {
            pool: self,
            item: Some(item),
            generation,
            holder,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.shared.state.locked()
    }

    #[cfg(test)]
    fn limit(&self) -> usize {
        self.lock().limit
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.open, state.idle.len())
    }
}

/// A connection checked out of a [`Pool`]; it goes back (or, when broken,
/// away) when this is dropped.
pub struct Pooled<'a, T: Health> {
    pool: &'a Pool<T>,
    item: Option<T>,
    generation: u64,
    holder: ThreadId,
}

impl<T: Health> Deref for Pooled<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.item
            .as_ref()
            .expect("a pooled connection until dropped")
    }
}

impl<T: Health> Drop for Pooled<'_, T> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            // The item is dropped (the connection closed) outside the lock.
            self.pool.give_back(item, self.generation, self.holder);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A stand-in connection: the pool's logic is independent of SSH (the
    /// real sessions are exercised against sshd in tests/sftp).
    struct Item {
        id: usize,
        broken: AtomicBool,
    }

    impl Health for Item {
        fn is_broken(&self) -> bool {
            self.broken.load(Ordering::SeqCst)
        }
    }

    /// Counts the connections made; each connect is a fresh clone of it.
    type Made = Arc<AtomicUsize>;

    fn maker(made: &Made) -> impl Fn() -> Result<Item, String> + Send + Sync + 'static {
        let made = Arc::clone(made);
        move || {
            Ok(Item {
                id: made.fetch_add(1, Ordering::SeqCst),
                broken: AtomicBool::new(false),
            })
        }
    }

    /// Checks one out on a thread of its own, as the replica's callers do
    /// (one thread never holds two), and hands it over.
    fn take<'a>(pool: &'a Pool<Item>, made: &Made) -> Pooled<'a, Item> {
        thread::scope(|scope| {
            scope
                .spawn(|| pool.get(maker(made)).unwrap())
                .join()
                .unwrap()
        })
    }

    #[test]
    fn connections_are_made_lazily_and_reused() {
        let pool = Pool::new(3);
        let made = Made::default();
        assert_eq!(pool.counts(), (0, 0));
        let first = take(&pool, &made);
        assert_eq!(first.id, 0);
        drop(first);
        let again = take(&pool, &made);
        assert_eq!(again.id, 0, "an idle connection is reused");
        let second = take(&pool, &made);
        assert_eq!(second.id, 1, "a busy one is not shared");
        assert_eq!(pool.counts(), (2, 0));
    }

    #[test]
    fn at_most_size_connections_exist_and_a_caller_waits_for_one() {
        let pool = Pool::new(2);
        let made = Made::default();
        let a = take(&pool, &made);
        let b = take(&pool, &made);
        thread::scope(|scope| {
            let waiter = scope.spawn(|| pool.get(maker(&made)).unwrap().id);
            thread::sleep(Duration::from_millis(100));
            assert!(!waiter.is_finished(), "a third caller waits");
            drop(b);
            assert_eq!(waiter.join().unwrap(), 1, "and gets the one given back");
        });
        drop(a);
        assert_eq!(made.load(Ordering::SeqCst), 2);
        assert_eq!(pool.counts(), (2, 2));
    }

    /// A connect that waits until `release` is set, as a handshake with a
    /// busy server does; then it makes a connection like `maker`.
    fn slow_maker(
        made: &Made,
        release: &Arc<AtomicBool>,
    ) -> impl Fn() -> Result<Item, String> + Send + Sync + 'static {
        let (make, release) = (maker(made), Arc::clone(release));
        move || {
            while !release.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(5));
            }
            make()
        }
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        panic!("waited 5 s for {what}");
    }

    #[test]
    fn a_caller_takes_a_connection_given_back_before_its_own_is_made() {
        let pool = Pool::new(2);
        let made = Made::default();
        let release = Arc::new(AtomicBool::new(false));
        let first = take(&pool, &made);
        thread::scope(|scope| {
            let waiter = scope.spawn(|| pool.get(slow_maker(&made, &release)).unwrap().id);
            thread::sleep(Duration::from_millis(100));
            assert!(!waiter.is_finished(), "no connection is free yet");
            drop(first);
            // Its own connect is still under way: it is not waited for.
            assert_eq!(waiter.join().unwrap(), 0, "the one given back");
        });
        assert_eq!(pool.counts(), (2, 1), "the second is still being made");
        release.store(true, Ordering::SeqCst);
        wait_until("the late connection to join the idle ones", || {
            pool.counts() == (2, 2)
        });
        assert_eq!(made.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_connection_made_before_a_retire_is_not_used() {
        let pool = Pool::new(2);
        let made = Made::default();
        let release = Arc::new(AtomicBool::new(false));
        let first = take(&pool, &made);
        thread::scope(|scope| {
            let waiter = scope.spawn(|| pool.get(slow_maker(&made, &release)).unwrap().id);
            thread::sleep(Duration::from_millis(100));
            // A forgotten login: what is being made now may carry the old one.
            pool.retire();
            release.store(true, Ordering::SeqCst);
            assert_eq!(waiter.join().unwrap(), 2, "a connection made afresh");
        });
        drop(first);
        assert_eq!(pool.counts(), (1, 1), "only the fresh one is kept");
    }

    #[test]
    fn after_retire_every_connection_is_a_new_one() {
        let pool = Pool::new(2);
        let made = Made::default();
        let idle = take(&pool, &made);
        let busy = take(&pool, &made);
        drop(idle);
        pool.retire();
        assert_eq!(take(&pool, &made).id, 2, "the idle one went");
        drop(busy);
        let a = take(&pool, &made);
        let b = take(&pool, &made);
        assert!(a.id >= 2 && b.id >= 2, "the busy one was not taken back");
    }

    #[test]
    fn a_broken_connection_is_dropped_and_retires_the_idle_ones() {
        let pool = Pool::new(3);
        let made = Made::default();
        let a = take(&pool, &made);
        let b = take(&pool, &made);
        let c = take(&pool, &made);
        drop(a);
        b.broken.store(true, Ordering::SeqCst);
        drop(b);
        // c was checked out when b broke: it is not reused either.
        drop(c);
        assert_eq!(pool.counts(), (0, 0));
        let fresh = take(&pool, &made);
        assert_eq!(fresh.id, 3, "a new connection is made");
    }

    /// In these tests a connect that fails with "login…" is a login
    /// problem; anything else may be the server's session limit.
    impl ConnectFailure for String {
        fn may_be_a_session_limit(&self) -> bool {
            !self.starts_with("login")
        }
    }

    #[test]
    fn a_login_failure_is_the_callers_error_even_with_sessions_open() {
        let pool = Pool::new(3);
        let made = Made::default();
        let a = take(&pool, &made);
        let failed = pool.get(|| Err::<Item, _>("login refused".to_owned()));
        assert_eq!(failed.err().as_deref(), Some("login refused"));
        // The limit stayed: two more sessions can still be made.
        let b = take(&pool, &made);
        let c = take(&pool, &made);
        assert_eq!((a.id, b.id, c.id), (0, 1, 2));
    }

    /// A caller served by a connection given back before its own connect
    /// ended no longer waits for that connect; a login or host-key
    /// refusal it then meets is the next caller's error, not dropped (a
    /// silent retry on every later `get` would repeat a refused login, or
    /// hide a changed host key, while the open sessions carry on).
    #[test]
    fn a_login_failure_met_after_its_caller_was_served_reaches_the_next_caller() {
        let pool = Pool::new(2);
        let made = Made::default();
        let release = Arc::new(AtomicBool::new(false));
        let first = take(&pool, &made);
        thread::scope(|scope| {
            let released = Arc::clone(&release);
            let waiter = scope.spawn(|| {
                pool.get(move || {
                    while !released.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err::<Item, _>("login refused".to_owned())
                })
                .map(|item| item.id)
            });
            thread::sleep(Duration::from_millis(100));
            drop(first);
            assert_eq!(waiter.join().unwrap(), Ok(0), "the one given back");
        });
        release.store(true, Ordering::SeqCst);
        wait_until("the refused connect to end", || pool.counts() == (1, 1));
        let next = thread::scope(|scope| {
            scope
                .spawn(|| pool.get(maker(&made)).map(|item| item.id))
                .join()
                .unwrap()
        });
        assert_eq!(next.err().as_deref(), Some("login refused"));
        assert_eq!(take(&pool, &made).id, 0, "heard once, then used again");
    }

    /// Connects that all fail while nothing is open say the server is not
    /// there, not that it limits sessions: once the last fails, the limit
    /// is the configured size again. A limit left lowered by the refusals
    /// that came first held the pool to one session until a session broke
    /// (an agent started before its network was up).
    #[test]
    fn connects_that_all_fail_leave_the_limit_as_configured() {
        let pool: Pool<Item> = Pool::new(3);
        let release = Arc::new(AtomicBool::new(false));
        let refused = |release: &Arc<AtomicBool>| {
            let release = Arc::clone(release);
            move || {
                while !release.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(5));
                }
                Err::<Item, _>("unreachable".to_owned())
            }
        };
        thread::scope(|scope| {
            let callers: Vec<_> = (0..3)
                .map(|_| {
                    let connect = refused(&release);
                    let pool = &pool;
                    scope.spawn(move || pool.get(connect).err())
                })
                .collect();
            wait_until("three connects under way", || pool.counts() == (3, 0));
            release.store(true, Ordering::SeqCst);
            for caller in callers {
                assert_eq!(caller.join().unwrap().as_deref(), Some("unreachable"));
            }
        });
        assert_eq!(pool.counts(), (0, 0));
        assert_eq!(pool.limit(), 3);
    }

    #[test]
    fn a_failed_connect_is_the_error_when_nothing_else_is_open() {
        let pool: Pool<Item> = Pool::new(2);
        let failed = pool.get(|| Err::<Item, _>("refused".to_owned()));
        assert_eq!(failed.err().as_deref(), Some("refused"));
        assert_eq!(pool.counts(), (0, 0));
    }

    #[test]
    fn a_server_refusing_more_sessions_lowers_the_limit_instead_of_failing() {
        let pool = Pool::new(3);
        let made = Made::default();
        let a = take(&pool, &made);
        thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                pool.get(|| Err::<Item, _>("too many".to_owned()))
                    .map(|item| item.id)
            });
            thread::sleep(Duration::from_millis(100));
            assert!(!waiter.is_finished(), "it waits for the open one");
            drop(a);
            assert_eq!(waiter.join().unwrap(), Ok(0));
        });
    }

    #[test]
    fn a_thread_asking_for_a_second_connection_is_a_bug_not_a_hang() {
        let pool = Pool::new(1);
        let made = Made::default();
        let held = pool.get(maker(&made)).unwrap();
        let second = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.get(maker(&made)).map(|item| item.id)
        }));
        assert!(second.is_err(), "it would have waited for itself");
        drop(held);
        assert_eq!(pool.get(maker(&made)).unwrap().id, 0);
    }
}
