//! [`Event`]: a flag that green threads (and OS threads) wait for.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::wait_queue::WaitQueue;
use crate::hub::Wait;

/// A flag that starts unset; [`wait`](Event::wait) parks until it is set.
///
/// Setting wakes every waiter; the flag stays set until [`clear`](Event::clear)
/// (gevent's `Event`, Python's `threading.Event`). It is `Send + Sync`: green
/// threads of any hub and plain OS threads may set it and wait on it (a plain
/// thread blocks its OS thread).
pub struct Event {
    flag: AtomicBool,
    /// How many times the event was set: a waiter that saw it change is
    /// released even if the flag was cleared again before it ran.
    sets: AtomicU64,
    waiters: WaitQueue<()>,
}

const WAIT: Wait = Wait::shared(&"Event::wait");

impl Event {
    /// An unset event.
    pub const fn new() -> Event {
        Event {
            flag: AtomicBool::new(false),
            sets: AtomicU64::new(0),
            waiters: WaitQueue::new(()),
        }
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        self.flag.store(true, Ordering::Release);
        self.sets.fetch_add(1, Ordering::Release);
        self.waiters.lock().notify_all();
    }

    /// Unsets the flag; later waiters park until the next `set`.
    pub fn clear(&self) {
        self.flag.store(false, Ordering::Release);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Parks until the flag is set (returns at once if it is). A waiter
    /// parked when `set` is called is released even if `clear` follows
    /// before it runs.
    pub fn wait(&self) {
        let seen = self.sets.load(Ordering::Acquire);
        self.wait_deadline(seen, None);
    }

    /// Parks until the flag is set or `timeout` passes; returns whether it was
    /// set (as for [`wait`](Event::wait), a set followed by a clear counts).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let seen = self.sets.load(Ordering::Acquire);
        self.wait_deadline(seen, crate::hub::deadline_after(timeout))
    }

    fn wait_deadline(&self, seen: u64, deadline: Option<std::time::Instant>) -> bool {
        if self.released(seen) {
            return true;
        }
        self.waiters
            .wait(
                WAIT,
                deadline,
                |_, _| self.released(seen).then_some(()),
                |_, ()| {},
            )
            .is_some()
    }

    fn released(&self, seen: u64) -> bool {
        self.is_set() || self.sets.load(Ordering::Acquire) != seen
    }

    /// Wakes `waker` at the next `set` (for `wait_any`).
    pub(crate) fn watch(&self, waker: &std::task::Waker) -> super::wait_queue::WatchKey {
        self.waiters.lock().watch(waker)
    }

    /// Forgets a watcher (a no-op if it was woken already).
    pub(crate) fn unwatch(&self, key: super::wait_queue::WatchKey) {
        self.waiters.lock().unwatch(key);
    }
}

impl Default for Event {
    fn default() -> Event {
        Event::new()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}
