//! [`RwLock<T>`]: many readers or one writer, first come, first served.
//!
//! # Fairness: a turnstile
//!
//! Every reader and writer that cannot get in at once queues in one FIFO
//! wait queue, the *turnstile* (the `GATE`). Whoever holds the gate is next:
//! - a reader handed the gate counts itself in as a reader and passes the
//!   gate straight on to the next in line, so consecutive readers at the
//!   head of the queue all get in, one after the other, without waiting for
//!   each other;
//! - a writer handed the gate keeps it, waits (in a second queue, where it is
//!   alone) until the readers already inside have left, and keeps the gate
//!   for as long as it writes.
//!
//! While a writer holds the gate, readers that arrive queue behind it, so a
//! stream of readers cannot starve a writer; and a writer only waits for the
//! readers that came before it. Hand-off (as in [`Mutex`](super::Mutex))
//! means nobody barges past a queued waiter, and a waiter that is handed the
//! gate and then leaves (killed, timed out) passes it on.
//!
//! # The uncontended path
//!
//! One atomic word holds the reader count, `GATE`, and `QUEUED` (waiters may
//! be queued). A read lock with no writer around, a read unlock, and a write
//! lock or unlock with nobody else around are each one atomic operation.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::wait_queue::{Locked, WaitQueue};
use crate::hub::{self, Wait};

/// In `RwLock::state`: somebody holds the gate (a writer, or a reader
/// passing it on).
const GATE: usize = 1;
/// In `RwLock::state`: waiters may be queued at the gate. Only ever set with
/// `GATE`.
const QUEUED: usize = 2;
/// In `RwLock::state`: one reader inside.
const READER: usize = 4;

const READ_WAIT: Wait = Wait::shared(&"RwLock::read");
const WRITE_WAIT: Wait = Wait::shared(&"RwLock::write");

/// A value that many may read at once, or one may write: [`read`] and
/// [`write`] park the calling green thread (a plain OS thread blocks) until
/// they may go in, and the returned guard lets go when dropped.
///
/// Every wait honours `kill` and `with_timeout`. `RwLock<T>` is
/// `Send + Sync` when `T` is `Send + Sync`, as `std::sync::RwLock` is. There
/// is no poisoning (see [`Mutex`](crate::sync::Mutex#no-poisoning)). A
/// reader that takes a second read lock while a writer is queued parks for
/// ever (the writer waits for it, and it waits behind the writer).
///
/// # Fairness
///
/// Readers and writers are served in the order they came. A writer waits
/// only for the readers already inside when its turn came; readers that
/// arrive while a writer waits queue behind it, so a stream of readers
/// cannot starve a writer. Consecutive readers in the queue get in together
/// (each lets the next one in as it enters), so writers cannot starve
/// readers either. Hand-off (as in [`Mutex`](crate::sync::Mutex)) means
/// nobody barges past a queued waiter, and a waiter that is handed its turn
/// and then leaves (killed, timed out) passes it on. Uncontended, each lock
/// and unlock is one atomic operation.
///
/// [`read`]: RwLock::read
/// [`write`]: RwLock::write
///
/// ```
/// use std::rc::Rc;
/// use greenhub::sync::RwLock;
///
/// greenhub::run(|| {
///     let config = Rc::new(RwLock::new(String::from("v1")));
///     let c = config.clone();
///     let reader = greenhub::spawn(move || {
///         let a = c.read();
///         let b = c.read(); // readers share
///         assert_eq!(*a, *b);
///         a.len()
///     });
///     assert_eq!(reader.join().unwrap(), 2);
///     config.write().push_str("-patched");
///     assert_eq!(*config.read(), "v1-patched");
/// })
/// .unwrap();
/// ```
pub struct RwLock<T: ?Sized> {
    /// `readers * READER`, plus `GATE` and `QUEUED`.
    ///
    /// Invariants: readers get in by compare-and-swap only while neither
    /// `GATE` nor `QUEUED` is set, or under `gate`'s lock when handed the
    /// gate. `GATE` and `QUEUED` change only under `gate`'s lock (except a
    /// writer's uncontended lock and unlock, a compare-and-swap between 0 and
    /// `GATE`). While `QUEUED` is clear no waiter is queued at the gate.
    state: AtomicUsize,
    /// The turnstile: readers and writers queue here in arrival order.
    gate: WaitQueue<()>,
    /// The writer holding the gate waits here for the readers to leave.
    drain: WaitQueue<()>,
    value: UnsafeCell<T>,
}

// SAFETY: as `std::sync::RwLock`: the value moves between threads with the
// lock (`T: Send`), and readers on several threads share `&T` (`T: Sync`).
unsafe impl<T: ?Sized + Send> Send for RwLock<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}

impl<T> RwLock<T> {
    /// An unlocked `RwLock` holding `value`.
    pub const fn new(value: T) -> RwLock<T> {
        RwLock {
            state: AtomicUsize::new(0),
            gate: WaitQueue::new(()),
            drain: WaitQueue::new(()),
            value: UnsafeCell::new(value),
        }
    }

    /// Consumes the lock, returning the value.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Locks for reading, parking while a writer holds the lock or waits for
    /// it. Honours `kill` and `with_timeout`.
    #[inline]
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        if !self.try_read_fast() {
            self.read_slow(None);
        }
        RwLockReadGuard::new(self)
    }

    /// Locks for reading if that needs no wait (no writer holds the lock or
    /// waits for it); never parks.
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        self.try_read_fast().then(|| RwLockReadGuard::new(self))
    }

    /// Locks for reading, parking at most `timeout`. It never gives up before
    /// `timeout` has passed.
    pub fn read_timeout(&self, timeout: Duration) -> Option<RwLockReadGuard<'_, T>> {
        (self.try_read_fast() || self.read_slow(hub::deadline_after(timeout)))
            .then(|| RwLockReadGuard::new(self))
    }

    /// Locks for writing, parking until the readers and writers that came
    /// first have left. Honours `kill` and `with_timeout`.
    #[inline]
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        if !self.try_write_fast() {
            self.write_slow(None);
        }
        RwLockWriteGuard::new(self)
    }

    /// Locks for writing if nobody holds the lock or waits for it; never
    /// parks.
    pub fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        self.try_write_fast().then(|| RwLockWriteGuard::new(self))
    }

    /// Locks for writing, parking at most `timeout` in all. It never gives up
    /// before `timeout` has passed.
    pub fn write_timeout(&self, timeout: Duration) -> Option<RwLockWriteGuard<'_, T>> {
        (self.try_write_fast() || self.write_slow(hub::deadline_after(timeout)))
            .then(|| RwLockWriteGuard::new(self))
    }

    /// The value, through `&mut self`: no locking needed.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    #[inline]
    fn try_read_fast(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & (GATE | QUEUED) != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                s,
                add_reader(s),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => s = actual,
            }
        }
    }

    #[inline]
    fn try_write_fast(&self) -> bool {
        self.state
            .compare_exchange(0, GATE, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Queues at the gate as a reader; returns whether it got in before
    /// `deadline`.
    #[cold]
    fn read_slow(&self, deadline: Option<Instant>) -> bool {
        let entered = self.gate.wait(
            READ_WAIT,
            deadline,
            |_, handed| match handed {
                Some(()) => {
                    // We hold the gate: count in, then pass the gate on.
                    // (Readers may be leaving meanwhile: read-modify-write.)
                    self.state.fetch_add(READER, Ordering::Acquire);
                    Some(true)
                }
                None => self.enter_or_queue(false).then_some(false),
            },
            |locked, ()| self.pass_gate(locked),
        );
        match entered {
            None => false,
            Some(holds_gate) => {
                if holds_gate {
                    self.pass_gate(&mut self.gate.lock());
                }
                true
            }
        }
    }

    /// Queues at the gate as a writer, then waits for the readers inside;
    /// returns whether it got the lock before `deadline`.
    #[cold]
    fn write_slow(&self, deadline: Option<Instant>) -> bool {
        let got_gate = self.gate.wait(
            WRITE_WAIT,
            deadline,
            |_, handed| handed.or_else(|| self.enter_or_queue(true).then_some(())),
            |locked, ()| self.pass_gate(locked),
        );
        if got_gate.is_none() {
            return false;
        }
        // We hold the gate, so no reader gets in any more. Wait for those
        // inside; pass the gate on if we give up (or unwind).
        struct PassOn<'a, T: ?Sized>(&'a RwLock<T>);
        impl<T: ?Sized> Drop for PassOn<'_, T> {
            fn drop(&mut self) {
                self.0.pass_gate(&mut self.0.gate.lock());
            }
        }
        if self.state.load(Ordering::Acquire) < READER {
            return true;
        }
        let pass_on = PassOn(self);
        let drained = self
            .drain
            .wait(
                WRITE_WAIT,
                deadline,
                |_, _| (self.state.load(Ordering::Acquire) < READER).then_some(()),
                |_, ()| {},
            )
            .is_some();
        if drained {
            std::mem::forget(pass_on);
        }
        drained
    }

    /// Under the gate's lock: goes in (as a reader, or takes the gate as a
    /// writer) if nobody holds the gate, or else sets `QUEUED` (the caller
    /// is about to queue). A writer that takes the gate may still have
    /// readers to wait for.
    fn enter_or_queue(&self, writer: bool) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let next = if s & (GATE | QUEUED) == 0 {
                if writer {
                    s | GATE
                } else {
                    add_reader(s)
                }
            } else if s & QUEUED == 0 {
                s | QUEUED
            } else {
                return false;
            };
            match self
                .state
                .compare_exchange_weak(s, next, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return s & (GATE | QUEUED) == 0,
                Err(actual) => s = actual,
            }
        }
    }

    /// Under the gate's lock, by the gate's holder: hands the gate to the
    /// next in line, or opens it if nobody waits.
    fn pass_gate(&self, locked: &mut Locked<()>) {
        if locked.notify_one(()).is_ok() {
            if !locked.has_waiters() {
                self.state.fetch_and(!QUEUED, Ordering::Relaxed);
            }
        } else {
            // Readers may be leaving concurrently: a read-modify-write.
            self.state.fetch_and(!(GATE | QUEUED), Ordering::Release);
        }
    }

    fn read_unlock(&self) {
        let before = self.state.fetch_sub(READER, Ordering::Release);
        if before & GATE != 0 && before / READER == 1 {
            // The last reader out, and the gate is held: a writer may be
            // waiting for us. (Waking under the drain lock orders this with
            // the writer's check, which runs under the same lock.)
            self.drain.lock().notify_all();
        }
    }

    fn write_unlock(&self) {
        if self
            .state
            .compare_exchange(GATE, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            self.pass_gate(&mut self.gate.lock());
        }
    }
}

/// `s` with one more reader.
#[inline]
fn add_reader(s: usize) -> usize {
    s.checked_add(READER)
        .expect("greenhub: too many readers of an RwLock")
}

impl<T: Default> Default for RwLock<T> {
    fn default() -> RwLock<T> {
        RwLock::new(T::default())
    }
}

impl<T> From<T> for RwLock<T> {
    fn from(value: T) -> RwLock<T> {
        RwLock::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RwLock");
        match self.try_read() {
            Some(guard) => d.field("data", &&*guard),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish_non_exhaustive()
    }
}

/// Shared access to an [`RwLock`]'s value; lets go when dropped. Not `Send`,
/// as std's.
#[must_use = "the read lock is released as soon as the guard is dropped"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing the guard only shares `&T`.
unsafe impl<T: ?Sized + Sync> Sync for RwLockReadGuard<'_, T> {}

impl<'a, T: ?Sized> RwLockReadGuard<'a, T> {
    fn new(lock: &'a RwLock<T>) -> RwLockReadGuard<'a, T> {
        RwLockReadGuard {
            lock,
            _not_send: PhantomData,
        }
    }
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: while a read guard exists the reader count is non-zero, so
        // no writer holds the lock and no `&mut T` is live.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.read_unlock();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// Exclusive access to an [`RwLock`]'s value; lets go when dropped. Not
/// `Send`, as std's.
#[must_use = "the write lock is released as soon as the guard is dropped"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing the guard only shares `&T`.
unsafe impl<T: ?Sized + Sync> Sync for RwLockWriteGuard<'_, T> {}

impl<'a, T: ?Sized> RwLockWriteGuard<'a, T> {
    fn new(lock: &'a RwLock<T>) -> RwLockWriteGuard<'a, T> {
        RwLockWriteGuard {
            lock,
            _not_send: PhantomData,
        }
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: a write guard exists only while its owner holds the gate
        // with no reader inside: no other reference to the value is live.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this borrow unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.write_unlock();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}
