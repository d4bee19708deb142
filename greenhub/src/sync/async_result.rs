//! [`AsyncResult`]: a value that will be there later.

use std::fmt;
use std::time::Duration;

use super::wait_queue::WaitQueue;
use crate::hub::Wait;

/// A slot for a value that one party sets and any number of others wait for
/// (gevent's `AsyncResult`, a one-shot future). `Send + Sync` when `T: Send`:
/// it may be set from another hub or a plain OS thread.
///
/// Setting again replaces the value and wakes the waiters again.
pub struct AsyncResult<T> {
    slot: WaitQueue<Option<T>>,
}

const WAIT: Wait = Wait::shared(&"AsyncResult::get");

impl<T> AsyncResult<T> {
    /// An empty result.
    pub const fn new() -> AsyncResult<T> {
        AsyncResult {
            slot: WaitQueue::new(None),
        }
    }

    /// Stores the value and wakes every waiter.
    pub fn set(&self, value: T) {
        let mut locked = self.slot.lock();
        locked.state = Some(value);
        locked.notify_all();
    }

    /// Whether a value is there.
    pub fn ready(&self) -> bool {
        self.slot.lock().state.is_some()
    }

    /// Takes the value out, leaving the result empty.
    pub fn take(&self) -> Option<T> {
        self.slot.lock().state.take()
    }

    /// Wakes `waker` at the next `set` (for `wait_any`).
    pub(crate) fn watch(&self, waker: &std::task::Waker) -> super::wait_queue::WatchKey {
        self.slot.lock().watch(waker)
    }

    /// Forgets a watcher (a no-op if it was woken already).
    pub(crate) fn unwatch(&self, key: super::wait_queue::WatchKey) {
        self.slot.lock().unwatch(key);
    }
}

impl<T: Clone> AsyncResult<T> {
    /// The value, if it is there.
    pub fn try_get(&self) -> Option<T> {
        self.slot.lock().state.clone()
    }

    /// Parks until the value is there; returns a clone of it.
    pub fn get(&self) -> T {
        self.get_deadline(None)
            .expect("a wait without deadline ends with the value")
    }

    /// Like [`get`](AsyncResult::get), giving up after `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Option<T> {
        self.get_deadline(crate::hub::deadline_after(timeout))
    }

    fn get_deadline(&self, deadline: Option<std::time::Instant>) -> Option<T> {
        self.slot
            .wait(WAIT, deadline, |value, _| value.clone(), |_, ()| {})
    }
}

impl<T> Default for AsyncResult<T> {
    fn default() -> AsyncResult<T> {
        AsyncResult::new()
    }
}

impl<T> fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}
