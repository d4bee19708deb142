//! [`Condvar`]: wait for a condition on data behind a greenhub [`Mutex`].
//!
//! # No lost wake-up
//!
//! `wait` must release the mutex and start waiting as one step: a
//! `notify_one` sent by whoever takes the mutex next must reach this waiter.
//! So each waiter first joins the condvar's FIFO list of waiters, with a
//! *slot* of its own (a one-waiter wait queue on the heap), and only then
//! unlocks the mutex and parks on its slot. A notify takes the first slot off
//! the list and marks it: a waiter notified before it even parked finds its
//! slot marked and does not park. Every notify therefore reaches exactly one
//! waiter that was waiting when it was sent (the one that came first); a
//! notify with nobody waiting is lost, as with any condition variable.
//!
//! A waiter that leaves without its wake-up (killed, or a `with_timeout`
//! around it expired) takes its slot off the list; if a notify took it off
//! first, the waiter passes that wake-up on to the next one. There are no
//! spurious wake-ups, though a woken waiter may find the condition false
//! again (another green thread may have run first), so wait in a loop or use
//! [`Condvar::wait_while`].
//!
//! (The slot costs an allocation per wait. The condvar's own wait queue
//! could serve instead if a waiter could unlock the mutex under the queue's
//! lock right after it is queued, which `WaitQueue::wait` does not offer.)

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard as StdMutexGuard};
use std::time::{Duration, Instant};

use super::mutex::{Mutex, MutexGuard};
use super::wait_queue::WaitQueue;
use crate::hub::{self, Wait};

const WAIT: Wait = Wait::shared(&"Condvar::wait");

/// One waiter's place: marked (under the list's lock) by the notify that
/// takes it off the list; its waiter parks on it until then.
type Slot = Arc<WaitQueue<bool>>;

/// A condition variable for green threads (and OS threads), used with
/// greenhub's [`Mutex`] (not std's): [`wait`](Condvar::wait) unlocks the
/// mutex and parks until [`notify_one`](Condvar::notify_one) or
/// [`notify_all`](Condvar::notify_all), then locks it again.
///
/// Like the other primitives it works between green threads of one hub, of
/// several hubs, and plain OS threads. Use one condvar with one mutex at a
/// time.
///
/// # Semantics
///
/// - **No lost wake-up.** A waiter is on the condvar's list before it
///   unlocks the mutex, so a notify sent by whoever locks the mutex next
///   reaches it, even if it has not parked yet.
/// - **Exact and fair.** `notify_one` wakes exactly one of the waiters that
///   were waiting when it was called, the one that came first; a notify with
///   nobody waiting is lost. There are no spurious wake-ups, but a woken
///   waiter may find the condition false again (another green thread may
///   have run first): wait in a loop, or use
///   [`wait_while`](Condvar::wait_while).
/// - **Cancellation.** `wait` honours `kill` and `with_timeout`: the caller
///   unwinds out of it *without* the mutex (the guard was given up and is
///   not returned, so the mutex stays unlocked, as with std's `Condvar`),
///   and a wake-up meant for it goes to the next waiter instead.
///
/// ```
/// use std::rc::Rc;
/// use greenhub::sync::{Condvar, Mutex};
///
/// greenhub::run(|| {
///     let pair = Rc::new((Mutex::new(false), Condvar::new()));
///     let p = pair.clone();
///     let waiter = greenhub::spawn(move || {
///         let (ready, cv) = &*p;
///         let guard = cv.wait_while(ready.lock(), |ready| !*ready);
///         assert!(*guard);
///     });
///     greenhub::yield_now();
///     let (ready, cv) = &*pair;
///     *ready.lock() = true;
///     cv.notify_one();
///     waiter.join().unwrap();
/// })
/// .unwrap();
/// ```
pub struct Condvar {
    /// The waiters' slots, first come first.
    waiters: StdMutex<VecDeque<Slot>>,
}

impl Condvar {
    /// A condition variable with nobody waiting.
    pub const fn new() -> Condvar {
        Condvar {
            waiters: StdMutex::new(VecDeque::new()),
        }
    }

    /// Unlocks the guard's mutex and parks until notified, then locks the
    /// mutex again and returns the guard.
    ///
    /// Honours `kill` and `with_timeout` (the caller unwinds with the mutex
    /// unlocked, whether it was parked here or in re-locking the mutex).
    pub fn wait<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait_deadline(guard, None).0
    }

    /// Like [`wait`](Condvar::wait), giving up after `timeout`; the `bool`
    /// says whether it timed out (it never does before `timeout` has passed).
    /// The mutex is locked again either way.
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, bool) {
        let (guard, notified) = self.wait_deadline(guard, hub::deadline_after(timeout));
        (guard, !notified)
    }

    /// Waits while `condition` holds: checks it (with the mutex locked)
    /// first, and again after every wake-up; returns once it is false.
    pub fn wait_while<'a, T: ?Sized>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> MutexGuard<'a, T> {
        while condition(&mut guard) {
            guard = self.wait(guard);
        }
        guard
    }

    /// [`wait_while`](Condvar::wait_while) for at most `timeout` in all; the
    /// `bool` says whether it timed out with `condition` still true.
    pub fn wait_timeout_while<'a, T: ?Sized>(
        &self,
        mut guard: MutexGuard<'a, T>,
        timeout: Duration,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> (MutexGuard<'a, T>, bool) {
        let deadline = hub::deadline_after(timeout);
        loop {
            if !condition(&mut guard) {
                return (guard, false);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return (guard, true);
            }
            guard = self.wait_deadline(guard, deadline).0;
        }
    }

    /// Wakes one waiter, the one that has waited longest, if any.
    pub fn notify_one(&self) {
        notify_first(&mut self.lock());
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        let mut waiters = self.lock();
        while notify_first(&mut waiters) {}
    }

    /// Never held across a park; a panic while held cannot leave the list
    /// inconsistent, so poisoning is ignored.
    fn lock(&self) -> StdMutexGuard<'_, VecDeque<Slot>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns the guard and whether it was notified (not timed out).
    fn wait_deadline<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, T>, bool) {
        // Join the list first, then unlock: from here on a notify reaches us.
        let slot: Slot = Arc::new(WaitQueue::new(false));
        self.lock().push_back(slot.clone());
        let mut leave = Leave {
            condvar: self,
            slot: &slot,
            armed: true,
        };
        let mutex: &Mutex<T> = guard.into_mutex();
        mutex.unlock();

        let notified = match slot.wait(WAIT, deadline, |marked, _| marked.then_some(()), |_, ()| {})
        {
            Some(()) => {
                leave.armed = false;
                true
            }
            None => leave.timed_out(),
        };

        // Killed or timed out while re-locking: we unwind without the guard,
        // leaving the mutex unlocked (or handed on), as documented.
        (mutex.lock(), notified)
    }
}

/// Takes a waiter's slot off the list however it leaves without its
/// wake-up; passes on a wake-up that raced with the leaving.
struct Leave<'a> {
    condvar: &'a Condvar,
    slot: &'a Slot,
    armed: bool,
}

impl Leave<'_> {
    /// The wait timed out: leaves the list. Returns true if a notify took
    /// the slot first (the waiter keeps that wake-up: it was notified).
    fn timed_out(mut self) -> bool {
        self.armed = false;
        let mut waiters = self.condvar.lock();
        match waiters.iter().position(|s| Arc::ptr_eq(s, self.slot)) {
            Some(at) => {
                waiters.remove(at);
                false
            }
            None => true,
        }
    }
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Unwinding (killed, or an outer timeout).
        let mut waiters = self.condvar.lock();
        match waiters.iter().position(|s| Arc::ptr_eq(s, self.slot)) {
            Some(at) => drop(waiters.remove(at)),
            None => {
                // A notify chose us; we cannot use it: the next waiter can.
                notify_first(&mut waiters);
            }
        }
    }
}

/// Under the list's lock: marks and wakes the first waiter; returns whether
/// there was one.
fn notify_first(waiters: &mut VecDeque<Slot>) -> bool {
    let Some(slot) = waiters.pop_front() else {
        return false;
    };
    let mut locked = slot.lock();
    locked.state = true;
    locked.notify_all();
    true
}

impl Default for Condvar {
    fn default() -> Condvar {
        Condvar::new()
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}
