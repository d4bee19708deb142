//! [`AsyncResult`]: a value that will be there later.

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::wait_queue::WaitQueue;
use crate::hub::Wait;

/// A slot for a value that one party sets and any number of others wait for
/// (gevent's `AsyncResult`, a one-shot future). `Send + Sync` when `T: Send`:
/// it may be set from another hub or a plain OS thread.
///
/// Setting again replaces the value and wakes the waiters again.
pub struct AsyncResult<T> {
    value: Mutex<Option<T>>,
    waiters: WaitQueue,
}

const WAIT: Wait = Wait::shared("AsyncResult::get");

impl<T> AsyncResult<T> {
    /// An empty result.
    pub const fn new() -> AsyncResult<T> {
        AsyncResult {
            value: Mutex::new(None),
            waiters: WaitQueue::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<T>> {
        self.value.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores the value and wakes every waiter.
    pub fn set(&self, value: T) {
        *self.lock() = Some(value);
        self.waiters.notify_all();
    }

    /// Whether a value is there.
    pub fn ready(&self) -> bool {
        self.lock().is_some()
    }

    /// Takes the value out, leaving the result empty.
    pub fn take(&self) -> Option<T> {
        self.lock().take()
    }
}

impl<T: Clone> AsyncResult<T> {
    /// The value, if it is there.
    pub fn try_get(&self) -> Option<T> {
        self.lock().clone()
    }

    /// Parks until the value is there; returns a clone of it.
    pub fn get(&self) -> T {
        let mut out = None;
        self.waiters.wait_until(WAIT, None, || {
            out = self.try_get();
            out.is_some()
        });
        out.expect("wait_until returned true")
    }

    /// Like [`get`](AsyncResult::get), giving up after `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Option<T> {
        let deadline = crate::hub::deadline_after(timeout);
        let mut out = None;
        self.waiters.wait_until(WAIT, deadline, || {
            out = self.try_get();
            out.is_some()
        });
        out
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
