//! [`Semaphore`] and [`BoundedSemaphore`]: a count of permits, handed out
//! first come, first served.
//!
//! # Fairness: hand-off, not wake-and-retry
//!
//! A release with somebody waiting does not put the permit back in the
//! count: it hands it to the first waiter in the wait queue, which owns it
//! from that moment, even before it runs. A green thread that releases and
//! re-acquires in a loop therefore queues behind the waiter it just served
//! instead of taking the permit back (the starvation of gevent issue #1487),
//! and newcomers never take a permit while anyone waits. A waiter that is
//! handed a permit and then leaves without using it (killed, or a
//! `with_timeout` around it expired) passes it on to the next waiter, or back
//! to the count: no permit is ever lost.
//!
//! # The uncontended path
//!
//! The count lives in one atomic word together with a `QUEUED` bit. While
//! the bit is clear nobody waits, and `acquire`/`release` are a single
//! compare-and-swap. The bit is set (under the wait queue's lock) by a
//! waiter about to queue, and then every `acquire` and `release` goes
//! through the wait queue's lock until the queue is empty again.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::wait_queue::{Locked, WaitQueue};
use crate::hub::{self, Wait};

/// In `Permits::state`: waiters may be queued. Only ever set while the
/// count is zero.
const QUEUED: usize = 1;
/// In `Permits::state`: one permit.
const ONE: usize = 2;
/// The most permits a semaphore can count.
const MAX_PERMITS: usize = usize::MAX / ONE;

/// The machinery shared by both semaphores.
struct Permits {
    /// `count * ONE`, plus `QUEUED` when waiters may be queued.
    ///
    /// Invariants: `QUEUED` is set only under `queue`'s lock, by a waiter
    /// that found the count at zero (so `QUEUED` implies a zero count), and
    /// cleared only under that lock when no waiter is left. While it is set,
    /// the word changes only under the lock. While it is clear, no waiter is
    /// queued (it may be set with nobody queued: a waiter that timed out).
    state: AtomicUsize,
    /// The count `release` may not exceed.
    max: usize,
    queue: WaitQueue<()>,
    wait: Wait,
}

impl Permits {
    const fn new(permits: usize, max: usize, wait: Wait) -> Permits {
        assert!(
            permits <= MAX_PERMITS,
            "greenhub: too many permits for a semaphore"
        );
        Permits {
            state: AtomicUsize::new(permits * ONE),
            max,
            queue: WaitQueue::new(()),
            wait,
        }
    }

    fn available(&self) -> usize {
        self.state.load(Ordering::Relaxed) / ONE
    }

    fn try_acquire(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & QUEUED != 0 || s < ONE {
                return false;
            }
            match self
                .state
                .compare_exchange_weak(s, s - ONE, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => s = actual,
            }
        }
    }

    #[inline]
    fn acquire(&self, deadline: Option<Instant>) -> bool {
        self.try_acquire() || self.acquire_slow(deadline)
    }

    #[cold]
    fn acquire_slow(&self, deadline: Option<Instant>) -> bool {
        self.queue
            .wait(
                self.wait,
                deadline,
                |_, handed| handed.or_else(|| self.take_or_queue()),
                |locked, ()| self.pass_on(locked),
            )
            .is_some()
    }

    /// Under the lock: takes a permit if nobody is queued, or else sets
    /// `QUEUED` (the caller is about to queue).
    fn take_or_queue(&self) -> Option<()> {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & QUEUED != 0 {
                return None; // others are ahead (and the count is zero)
            }
            let next = if s >= ONE { s - ONE } else { s | QUEUED };
            match self
                .state
                .compare_exchange_weak(s, next, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return (s >= ONE).then_some(()),
                Err(actual) => s = actual,
            }
        }
    }

    /// Gives back one permit; fails if the count is already at `max`.
    fn release(&self) -> Result<(), ReleaseError> {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & QUEUED == 0 {
                if s / ONE >= self.max {
                    return Err(ReleaseError(()));
                }
                match self.state.compare_exchange_weak(
                    s,
                    s + ONE,
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Ok(()),
                    Err(actual) => s = actual,
                }
                continue;
            }
            let mut locked = self.queue.lock();
            s = self.state.load(Ordering::Relaxed);
            if s & QUEUED == 0 {
                continue; // the queue emptied meanwhile: the fast path again
            }
            // QUEUED: the count is zero and the word is ours while locked.
            if self.max == 0 {
                return Err(ReleaseError(()));
            }
            self.pass_on(&mut locked);
            return Ok(());
        }
    }

    /// Under the lock: hands a permit to the first waiter, or puts it back in
    /// the count if nobody waits.
    fn pass_on(&self, locked: &mut Locked<()>) {
        if locked.notify_one(()).is_ok() {
            if !locked.has_waiters() {
                self.state.fetch_and(!QUEUED, Ordering::Relaxed);
            }
            return;
        }
        // Nobody queued: QUEUED (if set) is stale. Without QUEUED the fast
        // paths may race with us, hence the loop. The `min` only matters for
        // a bounded semaphore released too often while this permit was in
        // flight; that release already got its error.
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let next = (s / ONE + 1).min(self.max) * ONE;
            match self
                .state
                .compare_exchange_weak(s, next, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => s = actual,
            }
        }
    }
}

impl fmt::Debug for Permits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("available_permits", &self.available())
            .finish()
    }
}

/// A count of permits: [`acquire`](Semaphore::acquire) takes one, parking
/// while there is none; [`release`](Semaphore::release) gives one back.
///
/// A plain OS thread may use it too (it blocks its OS thread), and so may
/// green threads of other hubs: it is `Send + Sync`. Every wait honours
/// `kill` and `with_timeout`. `release` may be called by anyone, not only by
/// a holder, and may raise the count beyond the initial one;
/// [`BoundedSemaphore`] refuses that.
///
/// # Fairness
///
/// Waiters are served first come, first served, by *hand-off*: a release
/// with somebody waiting gives the permit straight to the first waiter
/// (which owns it from then on, even before it runs) instead of putting it
/// back in the count. So a green thread that releases and at once acquires
/// again queues behind the waiter it just served, rather than taking the
/// permit back before that waiter can run (the starvation of gevent issue
/// #1487), and a newcomer never takes a permit while anyone waits
/// ([`try_acquire`](Semaphore::try_acquire) fails then). A waiter handed a
/// permit that leaves without it (killed, timed out) passes it on to the
/// next waiter, or back to the count: no permit is ever lost.
///
/// Uncontended, `acquire` and `release` are one compare-and-swap each.
///
/// ```
/// use std::rc::Rc;
/// use std::time::Duration;
/// use greenhub::sync::Semaphore;
///
/// greenhub::run(|| {
///     // At most two green threads inside at once.
///     let sem = Rc::new(Semaphore::new(2));
///     let handles: Vec<_> = (0..6)
///         .map(|_| {
///             let sem = sem.clone();
///             greenhub::spawn(move || {
///                 let _permit = sem.acquire_guard(); // released when dropped
///                 greenhub::sleep(Duration::from_millis(5));
///             })
///         })
///         .collect();
///     for h in handles {
///         h.join().unwrap();
///     }
///     assert_eq!(sem.available_permits(), 2);
/// })
/// .unwrap();
/// ```
pub struct Semaphore {
    permits: Permits,
}

impl Semaphore {
    /// A semaphore with `permits` permits available.
    ///
    /// # Panics
    /// If `permits` exceeds `usize::MAX / 2`.
    pub const fn new(permits: usize) -> Semaphore {
        Semaphore {
            permits: Permits::new(permits, MAX_PERMITS, Wait::shared(&"Semaphore::acquire")),
        }
    }

    /// Takes a permit, parking until one is available. Honours `kill` and
    /// `with_timeout` (the caller unwinds out of it without a permit).
    pub fn acquire(&self) {
        self.permits.acquire(None);
    }

    /// Takes a permit if one is available and nobody waits; never parks.
    pub fn try_acquire(&self) -> bool {
        self.permits.try_acquire()
    }

    /// Takes a permit, parking at most `timeout`; returns whether it got one.
    /// It never gives up before `timeout` has passed.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.permits.acquire(hub::deadline_after(timeout))
    }

    /// [`acquire`](Semaphore::acquire), returning a guard that releases the
    /// permit when dropped (unwinding included).
    pub fn acquire_guard(&self) -> SemaphoreGuard<'_> {
        self.acquire();
        SemaphoreGuard {
            permits: &self.permits,
        }
    }

    /// [`try_acquire`](Semaphore::try_acquire), with a guard.
    pub fn try_acquire_guard(&self) -> Option<SemaphoreGuard<'_>> {
        self.try_acquire().then(|| SemaphoreGuard {
            permits: &self.permits,
        })
    }

    /// [`acquire_timeout`](Semaphore::acquire_timeout), with a guard.
    pub fn acquire_guard_timeout(&self, timeout: Duration) -> Option<SemaphoreGuard<'_>> {
        self.acquire_timeout(timeout).then(|| SemaphoreGuard {
            permits: &self.permits,
        })
    }

    /// Gives a permit back: to the first waiter if anyone waits, else to the
    /// count.
    ///
    /// # Panics
    /// If the count would exceed `usize::MAX / 2`.
    pub fn release(&self) {
        self.permits
            .release()
            .expect("greenhub: too many permits for a semaphore");
    }

    /// How many permits are available now (zero while anyone waits).
    pub fn available_permits(&self) -> usize {
        self.permits.available()
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.permits.fmt(f)
    }
}

/// A [`Semaphore`] whose count may never exceed the initial one: releasing
/// more permits than were acquired is an error (gevent's `BoundedSemaphore`,
/// which raises `ValueError`), to catch a release too many.
///
/// It is a separate type rather than a flag so that
/// [`release`](BoundedSemaphore::release) can return the error, while
/// [`Semaphore::release`] cannot fail.
///
/// ```
/// use greenhub::sync::BoundedSemaphore;
///
/// greenhub::run(|| {
///     let sem = BoundedSemaphore::new(1);
///     sem.acquire();
///     assert!(sem.release().is_ok());
///     assert!(sem.release().is_err(), "one release too many");
///     assert_eq!(sem.available_permits(), 1);
/// })
/// .unwrap();
/// ```
pub struct BoundedSemaphore {
    permits: Permits,
}

impl BoundedSemaphore {
    /// A semaphore with `permits` permits, which is also the most it may hold.
    ///
    /// # Panics
    /// If `permits` exceeds `usize::MAX / 2`.
    pub const fn new(permits: usize) -> BoundedSemaphore {
        BoundedSemaphore {
            permits: Permits::new(permits, permits, Wait::shared(&"BoundedSemaphore::acquire")),
        }
    }

    /// Takes a permit, parking until one is available (see
    /// [`Semaphore::acquire`]).
    pub fn acquire(&self) {
        self.permits.acquire(None);
    }

    /// Takes a permit if one is available and nobody waits; never parks.
    pub fn try_acquire(&self) -> bool {
        self.permits.try_acquire()
    }

    /// Takes a permit, parking at most `timeout`; returns whether it got one.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.permits.acquire(hub::deadline_after(timeout))
    }

    /// [`acquire`](BoundedSemaphore::acquire), returning a guard that
    /// releases the permit when dropped.
    pub fn acquire_guard(&self) -> SemaphoreGuard<'_> {
        self.acquire();
        SemaphoreGuard {
            permits: &self.permits,
        }
    }

    /// [`try_acquire`](BoundedSemaphore::try_acquire), with a guard.
    pub fn try_acquire_guard(&self) -> Option<SemaphoreGuard<'_>> {
        self.try_acquire().then(|| SemaphoreGuard {
            permits: &self.permits,
        })
    }

    /// [`acquire_timeout`](BoundedSemaphore::acquire_timeout), with a guard.
    pub fn acquire_guard_timeout(&self, timeout: Duration) -> Option<SemaphoreGuard<'_>> {
        self.acquire_timeout(timeout).then(|| SemaphoreGuard {
            permits: &self.permits,
        })
    }

    /// Gives a permit back (to the first waiter if anyone waits), or fails,
    /// changing nothing, if the count is already at its initial value.
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.permits.release()
    }

    /// How many permits are available now (zero while anyone waits).
    pub fn available_permits(&self) -> usize {
        self.permits.available()
    }

    /// The initial count, which the count may never exceed.
    pub fn max_permits(&self) -> usize {
        self.permits.max
    }
}

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedSemaphore")
            .field("available_permits", &self.available_permits())
            .field("max_permits", &self.max_permits())
            .finish()
    }
}

/// A permit of a [`Semaphore`] or [`BoundedSemaphore`], released when
/// dropped (also while unwinding from a panic, a kill or a timeout).
///
/// Unlike a mutex guard it may be sent to another thread: a permit belongs
/// to no one in particular. If a [`BoundedSemaphore`] is already full when the
/// guard drops (someone released a permit too many), the permit is dropped
/// silently.
#[must_use = "the permit is released as soon as the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    permits: &'a Permits,
}

impl SemaphoreGuard<'_> {
    /// Keeps the permit taken: consumes the guard without releasing.
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        let _ = self.permits.release();
    }
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreGuard").finish_non_exhaustive()
    }
}

/// The error of [`BoundedSemaphore::release`]: the semaphore already holds
/// its initial count of permits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleaseError(());

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("semaphore released more times than it was acquired")
    }
}

impl std::error::Error for ReleaseError {}
