//! Claims: how agents take turns at the lease record on a store that
//! cannot create a file only if it is absent, or whose conditional create
//! checks and writes in two steps (rclone has none; Apache's mod_dav
//! checks `If-None-Match: *` and then writes, so agents creating the
//! record at once can all be told yes).
//!
//! Each agent that finds the lease free puts a claim of its own in
//! `.prism-sync/lease-claims/` (a fresh name, so no claim replaces
//! another) and then lists the folder. An agent that finds no live claim
//! but its own is alone: it reads the lease again, writes its record if the
//! lease is still free, and withdraws its claim. One that finds a claim
//! smaller than its own (claims are ordered by their lease ids) withdraws;
//! one that finds only larger ones lists again until they are withdrawn,
//! and gives up at once if the lease turns out held.
//!
//! Two agents are never alone at once: each lists after its claim is
//! there, so of two that overlap, the later lister finds the earlier
//! one's claim. Among agents that claim at once the smallest waits out
//! the rest and goes on. This needs only that a listing shows every file
//! whose write ended before it began, which the stores Prism Sync reaches
//! give (a file system, SFTP, WebDAV, S3 since 2020, the cloud drives'
//! APIs). The holder renews and releases the lease under a claim too
//! (waiting for every other claim to go: takers that find the lease held
//! withdraw), since some stores replace a file in two steps (rclone's move
//! on SFTP: remove, then rename) and a taker must never read the record in
//! between.
//!
//! A claim left by an agent that died while holding it (or whose removal
//! was lost) is stale once this agent has seen it for longer than
//! [`STALE_AFTER`], twice [`CLAIM_SPAN`], on its own monotonic clock: each
//! replica keeps when it first saw each claim ([`Sightings`]). An agent
//! that took longer than [`CLAIM_SPAN`] from putting its claim to its
//! write (by the same clock, which counts time the machine was suspended)
//! gives up (the lease is busy) rather than write ([`Claim::check_in_time`],
//! asked right before every write that counts: each create and remove of a
//! takeover, the move that puts a staged record in place, a release's
//! delete; a release that cannot be made in time leaves the record to
//! expire), so a live claim
//! is never older than [`CLAIM_SPAN`] when its last write starts and that
//! write has another [`CLAIM_SPAN`] to land before anyone takes the claim
//! for stale. A claim is seen only once it is there, so the time it was
//! seen for is never more than its age: this rule needs no clocks to
//! agree, and a claim whose process is known to be gone (on this host) is
//! stale at once. An agent that restarts has seen nothing yet: it would
//! wait up to [`STALE_AFTER`] for a claim that was already stale, and a
//! process that runs once (`--once` from cron) would never see a dead
//! claim turn stale. So the expiry written into a claim's name (below)
//! counts too, on the reader's wall clock: it asks no more of the clocks
//! than the lease record's own expiry does, and a live claim is withdrawn
//! long before it (a claimant gives up after [`CLAIM_SPAN`]).
//!
//! Whoever finds a stale claim removes it, so that the others need not
//! wait for it too. A taker that meets one gives up (the lease is busy)
//! and tries again later, its replica still aging the claim; a holder
//! renewing or releasing waits it out, putting a fresh claim of its own
//! every [`CLAIM_WAIT`] so that its own is young enough when it writes.
//!
//! A claim's name carries that expiry ([`name_record`]: the lease's
//! time, at least [`MIN_CLAIM_TTL`], after its writer's clock); agents
//! of earlier versions judge claims by it alone and by the rule that a
//! claimant gives up after half that time. A claimant of this version
//! gives up sooner ([`CLAIM_SPAN`] is half of [`MIN_CLAIM_TTL`]), so those
//! agents judge its claims as they judged their own (their clocks must
//! agree within the lease's time). Their claimants may take up to half the
//! lease's time, where this version's readers allow [`STALE_AFTER`]: with
//! agents of both versions on one remote, one of theirs that stalls for
//! longer than that between its claim and its record can meet another's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::ReplicaError;
use super::lease::{Owner, check_stale, lost_race, name_record, record_of_name};
use crate::locks::LockExt;

/// Where the claims are, below `.prism-sync/`.
pub const CLAIMS_DIR: &str = "lease-claims";

/// W: the longest an agent may take from putting its claim to starting
/// its last write under it ([`Claim::check_in_time`]). The steps between
/// are a listing or a few (a taker waits up to [`CLAIM_WAIT`] for larger
/// claims to go), a read of the lease and the write: well under a second
/// on a fast store, seconds behind a cloud drive's rate limiting. Half of
/// [`MIN_CLAIM_TTL`], so that earlier versions judge our claims as their
/// own (see the module's notes).
pub(crate) const CLAIM_SPAN: Duration = Duration::from_secs(30);

/// How long this agent must have seen a claim before it takes it for stale
/// (2W): a claimant's last write starts within [`CLAIM_SPAN`] of its claim
/// and has as long again to land. Also the longest a claim left by a dead
/// agent keeps the others waiting.
pub(crate) const STALE_AFTER: Duration = CLAIM_SPAN.saturating_mul(2);

/// The shortest time a claim's name says it counts (as long as its lease),
/// read only by agents of earlier versions: twice [`CLAIM_SPAN`], since
/// their claimants gave up after half of it.
const MIN_CLAIM_TTL: Duration = Duration::from_secs(60);

/// How long an agent taking the lease waits for other claims to be
/// withdrawn before it says the lease is busy: their agents withdraw as
/// soon as they list the folder and find a smaller claim or read a live
/// lease (one or two of their calls). Also how long a holder keeps one
/// claim while it waits (well within [`CLAIM_SPAN`]).
const CLAIM_WAIT: Duration = Duration::from_secs(10);

/// How long a holder waits for other claims to go before its renewal gives
/// up: long enough for a claim it first sees as it starts to turn stale.
const HOLDER_WAIT: Duration = STALE_AFTER.saturating_add(CLAIM_WAIT);

/// The pause between two listings of the claims while waiting.
const CLAIM_POLL: Duration = Duration::from_millis(40);

/// The claims folder as a store keeps it. Names are bare file names in
/// [`CLAIMS_DIR`].
pub(crate) trait ClaimFolder {
    /// Creates the file `name`, empty (its name is all it says), making the
    /// folder where it is missing.
    fn put(&self, name: &str) -> Result<(), ReplicaError>;

    /// The names of the files in the folder; none when it is not there.
    fn names(&self) -> Result<Vec<String>, ReplicaError>;

    /// Removes the file `name`; a failure leaves it to turn stale.
    fn remove(&self, name: &str);
}

/// The monotonic clock that claims are timed by (tests drive their own).
pub(crate) trait Clock: Send + Sync {
    /// The time on this clock, from an origin of its own.
    fn now(&self) -> Duration;
    fn sleep(&self, pause: Duration);
}

/// The machine's monotonic clock, counting the time it was suspended
/// (Linux's `CLOCK_BOOTTIME`; [`std::time::Instant`] stops meanwhile): an
/// agent that slept between its claim and its write must know it did.
struct Monotonic;

impl Clock for Monotonic {
    #[cfg(target_os = "linux")]
    fn now(&self) -> Duration {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid timespec for the call to fill.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
        assert_eq!(rc, 0, "CLOCK_BOOTTIME is there since Linux 2.6.39");
        let secs = u64::try_from(now.tv_sec).unwrap_or(0);
        let nanos = u32::try_from(now.tv_nsec).unwrap_or(0);
        Duration::new(secs, nanos)
    }

    #[cfg(not(target_os = "linux"))]
    fn now(&self) -> Duration {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(std::time::Instant::now).elapsed()
    }

    fn sleep(&self, pause: Duration) {
        std::thread::sleep(pause);
    }
}

/// When this agent first saw each claim in one replica's claims folder,
/// by its monotonic clock: how it tells a stale claim (see the module's
/// notes). One per replica, kept as long as the replica is, so that every
/// attempt at the lease goes on aging the claims the earlier ones saw.
pub(crate) struct Sightings {
    clock: Box<dyn Clock>,
    first_seen: Mutex<BTreeMap<String, Duration>>,
}

impl Default for Sightings {
    fn default() -> Sightings {
        Sightings::with_clock(Box::new(Monotonic))
    }
}

impl Sightings {
    pub fn with_clock(clock: Box<dyn Clock>) -> Sightings {
        Sightings {
            clock,
            first_seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// How long each of `names`, just listed, has been seen; forgets the
    /// names no longer listed (every claim has a name of its own, so one
    /// listed again later is not the claim seen before).
    fn ages(&self, names: &[String]) -> Vec<Duration> {
        let now = self.clock.now();
        let listed: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let mut first_seen = self.first_seen.locked();
        first_seen.retain(|name, _| listed.contains(name.as_str()));
        names
            .iter()
            .map(|name| {
                let seen = *first_seen.entry(name.clone()).or_insert(now);
                now.saturating_sub(seen)
            })
            .collect()
    }

    /// Makes every claim seen so far look seen `earlier` before it was: a
    /// test's stand-in for waiting that long.
    #[cfg(test)]
    pub fn pretend_seen_earlier(&self, earlier: Duration) {
        for seen in self.first_seen.locked().values_mut() {
            *seen = seen.checked_sub(earlier).expect("the clock reaches back");
        }
    }
}

/// How an agent with a claim treats the claims of others.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Wait {
    /// Taking the lease: a smaller claim, or the lease held by another
    /// agent, is [`lost_race`]; larger claims are waited out.
    AsTaker,
    /// Renewing it: every other claim is waited out (their agents find
    /// the lease held and withdraw; a claim of an agent that died turns
    /// stale meanwhile).
    AsHolder,
    /// Releasing it: as a holder, but for [`CLAIM_WAIT`] at most. A release
    /// that gives up leaves the record to expire, which costs nothing; a
    /// sync or a shutdown waiting a minute for a dead agent's claim to
    /// turn stale would.
    Releasing,
}

/// An agent's claim while it takes, renews or releases the lease;
/// withdrawn when dropped.
///
/// A claim's name says whose it is ([`name_record`]): its content is never
/// read, since a read of a file its agent is removing at that moment can
/// break off midway.
pub(crate) struct Claim<'a> {
    folder: &'a dyn ClaimFolder,
    seen: &'a Sightings,
    name: String,
    /// The lease id in its name (claims are ordered by it).
    id: Option<u64>,
    /// When its write was sent, by `seen`'s clock: it may have landed
    /// at any time since.
    put_at: Duration,
}

impl<'a> Claim<'a> {
    /// Puts a claim for `owner`'s lease of `lease_ttl` and waits until it
    /// is the only live one (see the module's notes), timing claims by
    /// `seen`, the replica's; [`ReplicaError::Busy`] when it gives up.
    /// `lease_is_free` reads the lease: `Ok` when there is none, a stale one
    /// or our own, else [`ReplicaError::Busy`] naming the holder.
    pub fn enter(
        folder: &'a dyn ClaimFolder,
        seen: &'a Sightings,
        owner: &Owner,
        lease_ttl: Duration,
        wait: Wait,
        lease_is_free: &dyn Fn() -> Result<(), ReplicaError>,
    ) -> Result<Claim<'a>, ReplicaError> {
        let clock = &*seen.clock;
        let started = clock.now();
        let patience = match wait {
            Wait::AsTaker => CLAIM_WAIT,
            Wait::AsHolder => HOLDER_WAIT,
            Wait::Releasing => CLAIM_WAIT,
        };
        let mut claim = Claim::put(folder, seen, owner, lease_ttl)?;
        loop {
            let rivals = claim.live_rivals()?;
            if rivals.is_empty() {
                return Ok(claim);
            }
            let now = clock.now();
            if now.saturating_sub(started) > patience {
                return Err(lost_race());
            }
            match wait {
                Wait::AsTaker => {
                    if rivals.iter().any(|&rival| Some(rival) < claim.id) {
                        return Err(lost_race());
                    }
                    // Larger claims may be the holder's, renewing: it waits
                    // for ours to go.
                    lease_is_free()?;
                }
                Wait::AsHolder if now.saturating_sub(claim.put_at) > CLAIM_WAIT => {
                    // Waiting for a claim to turn stale takes longer than
                    // ours may stay: a fresh one replaces it, put before
                    // the old one goes so that the holder always has one.
                    claim = Claim::put(folder, seen, owner, lease_ttl)?;
                }
                Wait::AsHolder | Wait::Releasing => {}
            }
            clock.sleep(CLAIM_POLL + Duration::from_millis(fastrand::u64(..20)));
        }
    }

    /// Puts a claim of a fresh name.
    fn put(
        folder: &'a dyn ClaimFolder,
        seen: &'a Sightings,
        owner: &Owner,
        lease_ttl: Duration,
    ) -> Result<Claim<'a>, ReplicaError> {
        let name = name_record(owner, lease_ttl.max(MIN_CLAIM_TTL), SystemTime::now());
        // Made before the write: one that landed but whose answer was lost
        // is still withdrawn.
        let claim = Claim {
            folder,
            seen,
            id: record_of_name(&name).map(|(_, id)| id),
            name,
            put_at: seen.clock.now(),
        };
        folder.put(&claim.name)?;
        Ok(claim)
    }

    /// [`lost_race`] when more than [`CLAIM_SPAN`] passed since the claim
    /// was put: another agent may take it for stale before our next write
    /// lands.
    pub fn check_in_time(&self) -> Result<(), ReplicaError> {
        if self.seen.clock.now().saturating_sub(self.put_at) > CLAIM_SPAN {
            return Err(lost_race());
        }
        Ok(())
    }

    /// The lease ids of the other agents' live claims; stale ones are
    /// removed, so that no one else waits for them either.
    fn live_rivals(&self) -> Result<Vec<u64>, ReplicaError> {
        let names = self.folder.names()?;
        let ages = self.seen.ages(&names);
        let mut rivals = Vec::new();
        for (name, age) in names.iter().zip(ages) {
            let Some((record, id)) = record_of_name(name) else {
                // Not a claim (an upload on its way).
                continue;
            };
            if Some(id) == self.id {
                continue;
            }
            // The expiry in its name counts too (it covers the process gone
            // on this host): a process that runs once (`--once`, from
            // cron) never sees a claim for long, and a dead claim smaller
            // than its own would otherwise turn it away at every run. It
            // asks no more of the clocks than the lease record's own
            // expiry does.
            if age > STALE_AFTER || check_stale(&record, SystemTime::now()).is_ok() {
                // Left by an agent that died holding it, or whose removal
                // was lost.
                self.folder.remove(name);
            } else {
                rivals.push(id);
            }
        }
        Ok(rivals)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // A claim whose removal fails (the connection died) is stale once
        // its process is gone or it was seen for long enough.
        self.folder.remove(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::Instant;

    use super::*;
    use crate::remote::lease::owner;

    /// A folder whose listing shows every file whose write has ended.
    #[derive(Default)]
    struct Memory(Mutex<BTreeSet<String>>);

    impl ClaimFolder for Memory {
        fn put(&self, name: &str) -> Result<(), ReplicaError> {
            self.0.locked().insert(name.to_owned());
            Ok(())
        }

        fn names(&self) -> Result<Vec<String>, ReplicaError> {
            Ok(self.0.locked().iter().cloned().collect())
        }

        fn remove(&self, name: &str) {
            self.0.locked().remove(name);
        }
    }

    /// A clock that moves only when told to or slept on.
    struct Manual(Mutex<Duration>);

    impl Manual {
        fn new() -> Arc<Manual> {
            Arc::new(Manual(Mutex::new(Duration::from_secs(1_000))))
        }

        fn advance(&self, by: Duration) {
            *self.0.locked() += by;
        }
    }

    impl Clock for Arc<Manual> {
        fn now(&self) -> Duration {
            *self.0.locked()
        }

        fn sleep(&self, pause: Duration) {
            self.advance(pause);
        }
    }

    fn sightings(clock: &Arc<Manual>) -> Sightings {
        Sightings::with_clock(Box::new(Arc::clone(clock)))
    }

    /// A claim left on another host by an agent that died, with lease id
    /// `id` and `expires` (Unix seconds by its clock) in its name.
    fn left_elsewhere(id: u64, expires: u64) -> String {
        format!("{expires}.{id:016x}.4242.some-other-host")
    }

    const LEASE: Duration = Duration::from_secs(60);

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn of_agents_claiming_at_once_one_is_alone_at_a_time_and_one_goes_on() {
        let folder = Memory::default();
        let seen = Sightings::default();
        let inside = AtomicUsize::new(0);
        for _ in 0..20 {
            let start = Barrier::new(6);
            let entered = AtomicUsize::new(0);
            std::thread::scope(|scope| {
                for _ in 0..6 {
                    scope.spawn(|| {
                        let me = owner("laptop");
                        start.wait();
                        if let Ok(claim) =
                            Claim::enter(&folder, &seen, &me, LEASE, Wait::AsTaker, &|| Ok(()))
                        {
                            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two alone");
                            entered.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(2));
                            inside.fetch_sub(1, Ordering::SeqCst);
                            drop(claim);
                        }
                    });
                }
            });
            assert!(entered.load(Ordering::SeqCst) >= 1, "someone goes on");
            assert!(folder.0.locked().is_empty(), "every claim withdrawn");
        }
    }

    #[test]
    fn a_taker_gives_up_at_once_when_the_lease_is_held_and_a_holder_waits_its_turn() {
        let folder = Memory::default();
        let seen = Sightings::default();
        let (holder, taker) = (owner("holder"), owner("taker"));
        // A taker that finds only a larger claim (maybe the holder's,
        // renewing) reads the lease and, finding it held, withdraws at
        // once rather than wait.
        let claim_of = |who: &Owner| name_record(who, LEASE, SystemTime::now());
        let (h, t) = (claim_of(&holder), claim_of(&taker));
        let id = |name: &str| record_of_name(name).unwrap().1;
        let (larger, smaller) = if id(&h) > id(&t) {
            (&holder, &taker)
        } else {
            (&taker, &holder)
        };
        folder.put(&claim_of(larger)).unwrap();
        let busy = || Err(ReplicaError::Busy("held".into()));
        let started = Instant::now();
        assert!(matches!(
            Claim::enter(&folder, &seen, smaller, LEASE, Wait::AsTaker, &busy),
            Err(ReplicaError::Busy(message)) if message == "held"
        ));
        assert!(started.elapsed() < CLAIM_WAIT / 2);
        // A claim left by an agent that is gone (this process, a lease no
        // longer held) is stale and removed at once.
        let gone = owner("gone");
        let stale = claim_of(&gone);
        drop(gone);
        folder.0.locked().clear();
        folder.put(&stale).unwrap();
        let claim =
            Claim::enter(&folder, &seen, &holder, LEASE, Wait::AsHolder, &|| Ok(())).unwrap();
        assert!(started.elapsed() < CLAIM_WAIT / 2);
        assert_eq!(folder.names().unwrap().len(), 1, "only ours is left");
        drop(claim);
        assert!(folder.names().unwrap().is_empty());
    }

    #[test]
    fn a_rival_claim_is_stale_after_it_was_seen_for_twice_the_span_however_far_ahead_its_name_is() {
        let folder = Memory::default();
        let clock = Manual::new();
        let seen = sightings(&clock);
        // Far ahead of any clock here: its name's expiry never comes.
        let ahead = left_elsewhere(0, 99_999_999_999);
        let behind = left_elsewhere(1, 99_999_999_998);
        folder.put(&ahead).unwrap();
        folder.put(&behind).unwrap();
        let me = owner("laptop");
        let take = || Claim::enter(&folder, &seen, &me, LEASE, Wait::AsTaker, &|| Ok(()));
        // Smaller claims than ours: the taker gives up at once, each time.
        assert!(matches!(take(), Err(ReplicaError::Busy(_))));
        clock.advance(STALE_AFTER - SECOND);
        assert!(matches!(take(), Err(ReplicaError::Busy(_))));
        assert_eq!(folder.names().unwrap(), [behind.as_str(), ahead.as_str()]);
        // An agent that restarts has seen nothing yet: it waits again.
        let restarted = sightings(&clock);
        clock.advance(2 * SECOND);
        let after_restart =
            Claim::enter(&folder, &restarted, &me, LEASE, Wait::AsTaker, &|| Ok(()));
        assert!(matches!(after_restart, Err(ReplicaError::Busy(_))));
        // Seen for longer than twice the span: both are removed (no one
        // else waits for them either) and the lease can be taken.
        let claim = take().unwrap();
        assert_eq!(folder.names().unwrap(), std::slice::from_ref(&claim.name));
        claim.check_in_time().unwrap();
        drop(claim);
        assert!(folder.names().unwrap().is_empty());
    }

    /// A process that runs once has seen no claim for long: a dead one
    /// smaller than its own would turn it away at every run if only the
    /// time seen counted.
    #[test]
    fn a_claim_whose_name_s_expiry_passed_is_stale_for_a_process_that_just_started() {
        let folder = Memory::default();
        let clock = Manual::new();
        let seen = sightings(&clock);
        let expired = left_elsewhere(0, 1);
        folder.put(&expired).unwrap();
        let me = owner("laptop");
        let claim = Claim::enter(&folder, &seen, &me, LEASE, Wait::AsTaker, &|| Ok(())).unwrap();
        assert_eq!(folder.names().unwrap(), std::slice::from_ref(&claim.name));
    }

    #[test]
    fn a_holder_waits_out_a_dead_claim_with_a_fresh_claim_of_its_own() {
        let folder = Memory::default();
        let clock = Manual::new();
        let seen = sightings(&clock);
        let dead = left_elsewhere(0, 99_999_999_999);
        folder.put(&dead).unwrap();
        let me = owner("laptop");
        let started = clock.now();
        let claim = Claim::enter(&folder, &seen, &me, LEASE, Wait::AsHolder, &|| Ok(())).unwrap();
        let waited = clock.now() - started;
        assert!(waited > STALE_AFTER && waited < HOLDER_WAIT, "{waited:?}");
        assert_eq!(folder.names().unwrap(), std::slice::from_ref(&claim.name));
        // Its claim is one put while it waited: the renewal is in time.
        claim.check_in_time().unwrap();
    }

    #[test]
    fn a_release_gives_up_on_a_dead_claim_long_before_it_turns_stale() {
        let folder = Memory::default();
        let clock = Manual::new();
        let seen = sightings(&clock);
        let dead = left_elsewhere(0, 99_999_999_999);
        folder.put(&dead).unwrap();
        let me = owner("laptop");
        let started = clock.now();
        let gave_up = Claim::enter(&folder, &seen, &me, LEASE, Wait::Releasing, &|| Ok(()));
        assert!(matches!(gave_up, Err(ReplicaError::Busy(_))));
        let waited = clock.now() - started;
        assert!(waited > CLAIM_WAIT && waited < STALE_AFTER, "{waited:?}");
        // Its own claim is withdrawn; the dead one stays to turn stale.
        assert_eq!(folder.names().unwrap(), [dead]);
    }

    #[test]
    fn the_machines_clock_moves_on_with_the_time() {
        let (clock, started) = (Monotonic, Instant::now());
        let before = clock.now();
        clock.sleep(Duration::from_millis(20));
        let after = clock.now();
        assert!(after - before >= Duration::from_millis(20));
        assert!(after - before <= started.elapsed() + Duration::from_millis(1));
    }

    #[test]
    fn a_claimant_slower_than_the_span_gives_up_before_it_writes() {
        let folder = Memory::default();
        let clock = Manual::new();
        let seen = sightings(&clock);
        let me = owner("laptop");
        let claim = Claim::enter(&folder, &seen, &me, LEASE, Wait::AsTaker, &|| Ok(())).unwrap();
        clock.advance(CLAIM_SPAN);
        claim.check_in_time().unwrap();
        clock.advance(Duration::from_millis(1));
        assert!(matches!(claim.check_in_time(), Err(ReplicaError::Busy(_))));
        drop(claim);
        // A listing slow enough (a store that rate-limits) leaves the
        // claimant alone but too late to write.
        let slow = SlowListing {
            folder: Memory::default(),
            clock: Arc::clone(&clock),
        };
        let claim = Claim::enter(&slow, &seen, &me, LEASE, Wait::AsTaker, &|| Ok(())).unwrap();
        assert!(matches!(claim.check_in_time(), Err(ReplicaError::Busy(_))));
    }

    /// A folder whose every listing takes longer than a claimant may.
    struct SlowListing {
        folder: Memory,
        clock: Arc<Manual>,
    }

    impl ClaimFolder for SlowListing {
        fn put(&self, name: &str) -> Result<(), ReplicaError> {
            self.folder.put(name)
        }

        fn names(&self) -> Result<Vec<String>, ReplicaError> {
            self.clock.advance(CLAIM_SPAN + SECOND);
            self.folder.names()
        }

        fn remove(&self, name: &str) {
            self.folder.remove(name);
        }
    }
}
