//! [`Event`]: a flag that green threads (and OS threads) wait for.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    waiters: WaitQueue,
}

const WAIT: Wait = Wait::shared("Event::wait");

impl Event {
    /// An unset event.
    pub const fn new() -> Event {
        Event {
            flag: AtomicBool::new(false),
            waiters: WaitQueue::new(),
        }
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        self.flag.store(true, Ordering::Release);
        self.waiters.notify_all();
    }

    /// Unsets the flag; later waiters park until the next `set`.
    pub fn clear(&self) {
        self.flag.store(false, Ordering::Release);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Parks until the flag is set (returns at once if it is).
    pub fn wait(&self) {
        self.waiters.wait_until(WAIT, None, || self.is_set());
    }

    /// Parks until the flag is set or `timeout` passes; returns whether it is set.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.waiters
            .wait_until(WAIT, Some(deadline), || self.is_set())
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
