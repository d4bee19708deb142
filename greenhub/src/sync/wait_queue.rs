//! The waiting room every primitive in `sync` is built on: a list of wakers
//! and a loop that parks until a condition holds.
//!
//! It works from green threads (which park on their hub) and from plain OS
//! threads (which block in `std::thread::park`), so a primitive can be shared
//! between both. Waiters leave the list however they leave `wait_until`,
//! unwinding from a kill or a timeout included.

use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::time::Instant;

use crate::hub::{self, Wait};

/// Wakers of the green threads and OS threads waiting on one primitive.
#[derive(Default)]
pub(crate) struct WaitQueue {
    waiters: Mutex<Vec<Waker>>,
}

/// Wakes a plain OS thread blocked in `wait_until`.
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

fn thread_waker() -> Waker {
    thread_local! {
        static WAKER: Waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    }
    WAKER.with(Waker::clone)
}

impl WaitQueue {
    pub(crate) const fn new() -> WaitQueue {
        WaitQueue {
            waiters: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waker>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks the caller until `ready()` holds or `deadline` passes; returns
    /// the last value of `ready()`. `ready` is evaluated after the caller's
    /// waker is registered, so a notification between the check and the park
    /// is never lost.
    pub(crate) fn wait_until(
        &self,
        wait: Wait,
        deadline: Option<Instant>,
        mut ready: impl FnMut() -> bool,
    ) -> bool {
        if ready() {
            return true;
        }
        let green = hub::in_green_thread();
        let waker = if green {
            hub::current_waker().expect("in a green thread")
        } else {
            thread_waker()
        };
        struct Leave<'a>(&'a WaitQueue, &'a Waker);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                let mut waiters = self.0.lock();
                if let Some(i) = waiters.iter().position(|w| w.will_wake(self.1)) {
                    waiters.swap_remove(i);
                }
            }
        }
        let _leave = Leave(self, &waker);
        loop {
            {
                let mut waiters = self.lock();
                if !waiters.iter().any(|w| w.will_wake(&waker)) {
                    waiters.push(waker.clone());
                }
            }
            if ready() {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            match (green, deadline) {
                (true, Some(d)) => hub::park_until(wait, d),
                (true, None) => hub::park(wait),
                (false, Some(d)) => {
                    std::thread::park_timeout(d.saturating_duration_since(Instant::now()))
                }
                (false, None) => std::thread::park(),
            }
            if ready() {
                return true;
            }
        }
    }

    /// Wakes every waiter.
    pub(crate) fn notify_all(&self) {
        let waiters = std::mem::take(&mut *self.lock());
        for waker in waiters {
            waker.wake();
        }
    }
}
