//! [`Mutex<T>`]: mutual exclusion that parks the green thread, never its OS
//! thread.
//!
//! # Fairness: hand-off
//!
//! Unlocking with somebody waiting does not unlock: ownership passes
//! directly to the first waiter in the queue, which holds the mutex from that
//! moment, even before it runs. So the mutex is taken in the order of
//! arrival, and a green thread that unlocks and locks again at once queues
//! behind the waiters instead of barging past them. A waiter that is handed
//! the mutex and leaves before it runs (killed, or a `with_timeout` around it
//! expired) passes it on to the next waiter, or unlocks it.
//!
//! The price of hand-off is the one every fair lock pays: under contention,
//! each hand-off waits for the next owner to be scheduled.
//!
//! # The uncontended path
//!
//! The state is one atomic byte: `LOCKED`, and `QUEUED` when waiters may be
//! queued. Locking a free mutex and unlocking one nobody waits for are one
//! compare-and-swap each; only when `QUEUED` is set does `unlock` take the
//! wait queue's lock to hand the mutex over.
//!
//! # No poisoning
//!
//! `std::sync::Mutex` marks itself poisoned when a guard is dropped during a
//! panic. greenhub's does not (nor does gevent's lock): a green thread
//! unwinds through its guards every time it is killed or a `with_timeout`
//! expires, which is routine cancellation, not a sign of broken data, and
//! poisoning would make every such mutex unusable. Code that may be
//! interrupted half-way through an update must keep the data consistent at
//! each blocking point, as it must anyway for a kill.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use super::wait_queue::{Locked, WaitQueue};
use crate::hub::{self, Wait};

/// In `Mutex::state`: somebody holds the mutex.
const LOCKED: u8 = 1;
/// In `Mutex::state`: waiters may be queued. Only ever set with `LOCKED`.
const QUEUED: u8 = 2;

const LOCK_WAIT: Wait = Wait::shared(&"Mutex::lock");

/// A value that one green thread (or OS thread) at a time may access:
/// [`lock`](Mutex::lock) parks the calling green thread until the mutex is
/// free, and the returned guard unlocks it when dropped.
///
/// `lock` honours `kill` and `with_timeout`. The mutex works across green
/// threads of one hub, of several hubs, and plain OS threads (which block
/// their OS thread while waiting): `Mutex<T>` is `Send + Sync` when `T` is
/// `Send`, as `std::sync::Mutex` is. Locking a mutex the caller already
/// holds parks for ever; if nothing else could wake anything, `run` reports
/// it as a deadlock on `Mutex::lock`.
///
/// # Fairness
///
/// Waiters get the mutex first come, first served, by *hand-off*: unlocking
/// with somebody waiting passes ownership straight to the first waiter
/// (which holds the mutex from then on, even before it runs) instead of
/// unlocking. A green thread that unlocks and locks again at once therefore
/// queues behind the waiters instead of barging past them, and
/// [`try_lock`](Mutex::try_lock) fails while anyone waits. A waiter handed
/// the mutex that leaves before it runs (killed, timed out) passes it on.
/// The price is the one every fair lock pays: under contention each
/// hand-off waits for the next owner to be scheduled. Uncontended, `lock`
/// and `unlock` are one compare-and-swap each.
///
/// # No poisoning
///
/// `std::sync::Mutex` marks itself poisoned when a guard is dropped during a
/// panic; this one does not (nor does gevent's lock). A green thread unwinds
/// through its guards every time it is killed or a `with_timeout` around it
/// expires: that is routine cancellation, not a sign of broken data, and
/// poisoning would make every such mutex unusable. A guard dropped by a
/// panic, a kill or a timeout simply unlocks; code that may be interrupted
/// half-way through an update must keep the data consistent at each
/// blocking point, as it must anyway for a kill.
///
/// ```
/// use std::rc::Rc;
/// use greenhub::sync::Mutex;
///
/// greenhub::run(|| {
///     let list = Rc::new(Mutex::new(Vec::new()));
///     let handles: Vec<_> = (0..3)
///         .map(|i| {
///             let list = list.clone();
///             greenhub::spawn(move || {
///                 let mut guard = list.lock();
///                 guard.push(i);
///                 greenhub::yield_now(); // others park on the lock meanwhile
///                 guard.push(i);
///             })
///         })
///         .collect();
///     for h in handles {
///         h.join().unwrap();
///     }
///     assert_eq!(*list.lock(), [0, 0, 1, 1, 2, 2]);
/// })
/// .unwrap();
/// ```
pub struct Mutex<T: ?Sized> {
    /// `LOCKED` and `QUEUED` bits.
    ///
    /// Invariants: `QUEUED` is set only under `queue`'s lock, by a waiter
    /// that found the mutex locked, and cleared only under that lock, by the
    /// owner handing over or unlocking, when no waiter is left. While it is
    /// clear no waiter is queued (it may be set with none: a waiter timed
    /// out). The owner's unlock is a plain compare-and-swap only while it is
    /// clear; otherwise the owner passes the mutex on under the lock.
    state: AtomicU8,
    queue: WaitQueue<()>,
    value: UnsafeCell<T>,
}

// SAFETY: the mutex hands `&mut T` to one owner at a time, on whatever thread
// it runs, so `T` must be `Send`; it never hands out `&T` to two threads at
// once without exclusion, so `T` need not be `Sync` (as `std::sync::Mutex`).
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
// SAFETY: as above; sharing the mutex only shares exclusive access to `T`.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

impl<T> Mutex<T> {
    /// An unlocked mutex holding `value`.
    pub const fn new(value: T) -> Mutex<T> {
        Mutex {
            state: AtomicU8::new(0),
            queue: WaitQueue::new(()),
            value: UnsafeCell::new(value),
        }
    }

    /// Consumes the mutex, returning the value.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks the mutex, parking the green thread (or blocking the plain OS
    /// thread) until it is free. Honours `kill` and `with_timeout`: the
    /// caller then unwinds without the lock.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        if !self.try_lock_fast() {
            self.lock_slow(None);
        }
        MutexGuard::new(self)
    }

    /// Locks the mutex if it is free and nobody waits for it; never parks.
    #[inline]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.try_lock_fast().then(|| MutexGuard::new(self))
    }

    /// Locks the mutex, parking at most `timeout`; `None` if it was not free
    /// by then. It never gives up before `timeout` has passed.
    pub fn lock_timeout(&self, timeout: Duration) -> Option<MutexGuard<'_, T>> {
        (self.try_lock_fast() || self.lock_slow(hub::deadline_after(timeout)))
            .then(|| MutexGuard::new(self))
    }

    /// Whether somebody holds the mutex now.
    pub fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & LOCKED != 0
    }

    /// The value, through `&mut self`: no locking needed.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    #[inline]
    fn try_lock_fast(&self) -> bool {
        self.state
            .compare_exchange(0, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Queues for the mutex; returns whether it got it before `deadline`.
    #[cold]
    fn lock_slow(&self, deadline: Option<Instant>) -> bool {
        self.queue
            .wait(
                LOCK_WAIT,
                deadline,
                |_, handed| handed.or_else(|| self.take_or_queue()),
                |locked, ()| self.pass_on(locked),
            )
            .is_some()
    }

    /// Under the lock: takes the mutex if it is free, or else sets `QUEUED`
    /// (the caller is about to queue).
    fn take_or_queue(&self) -> Option<()> {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let next = if s & LOCKED == 0 {
                s | LOCKED
            } else if s & QUEUED == 0 {
                s | QUEUED
            } else {
                return None;
            };
            match self
                .state
                .compare_exchange_weak(s, next, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return (s & LOCKED == 0).then_some(()),
                Err(actual) => s = actual,
            }
        }
    }

    /// Unlocks (the caller holds the mutex): hands it to the first waiter,
    /// if any.
    #[inline]
    pub(super) fn unlock(&self) {
        if self
            .state
            .compare_exchange(LOCKED, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            self.unlock_slow();
        }
    }

    #[cold]
    fn unlock_slow(&self) {
        let mut locked = self.queue.lock();
        self.pass_on(&mut locked);
    }

    /// Under the lock, by the owner: hands the mutex to the first waiter, or
    /// unlocks it if nobody waits. The owner's state word is stable here:
    /// newcomers fail their compare-and-swap on `LOCKED` and queue under the
    /// lock we hold.
    fn pass_on(&self, locked: &mut Locked<()>) {
        if locked.notify_one(()).is_ok() {
            // The waiter owns it now (its wake-up takes the lock we hold, so
            // our writes to the value happen before its reads).
            if !locked.has_waiters() {
                self.state.fetch_and(!QUEUED, Ordering::Relaxed);
            }
        } else {
            self.state.store(0, Ordering::Release);
        }
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Mutex<T> {
        Mutex::new(T::default())
    }
}

impl<T> From<T> for Mutex<T> {
    fn from(value: T) -> Mutex<T> {
        Mutex::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        match self.try_lock() {
            Some(guard) => d.field("data", &&*guard),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish_non_exhaustive()
    }
}

/// Exclusive access to a [`Mutex`]'s value; unlocks when dropped (also while
/// unwinding from a panic, a kill or a timeout).
///
/// Like `std::sync::MutexGuard` it is not `Send`: it is meant to be dropped
/// on the OS thread that locked. (Unlocking elsewhere would in fact be sound
/// here, since unlocking only hands over or clears a bit; staying `!Send`
/// matches std and leaves room to record the owner later.)
#[must_use = "the mutex unlocks as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized> {
    pub(super) mutex: &'a Mutex<T>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing the guard only shares `&T`, which is fine when `T: Sync`.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    fn new(mutex: &'a Mutex<T>) -> MutexGuard<'a, T> {
        MutexGuard {
            mutex,
            _not_send: PhantomData,
        }
    }

    /// Gives up the guard without unlocking (for `Condvar`, which unlocks
    /// the mutex itself); returns the mutex.
    pub(super) fn into_mutex(self) -> &'a Mutex<T> {
        let mutex = self.mutex;
        std::mem::forget(self);
        mutex
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while its owner holds the mutex, so
        // no other reference to the value is live.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this borrow unique.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.mutex.unlock();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}
