//! The waiting room every primitive in `sync` is built on: a list of wakers
//! and a loop that parks until a condition holds.
//!
//! It works from green threads (which park on their hub) and from plain OS
//! threads (which block in `std::thread::park`), so a primitive can be shared
//! between both. Waiters leave the list however they leave `wait_until`,
//! unwinding from a kill or a timeout included.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use slab::Slab;
use std::task::{Wake, Waker};
use std::time::Instant;

use crate::hub::{self, Header, Wait};

/// The green threads and OS threads waiting on one primitive.
///
/// Entries carry a generation so that a waiter can remove exactly its own
/// entry (slab keys are reused). `notify_all` drains every entry and records
/// the generation it drained up to, so a woken waiter knows without the lock
/// that its entry is gone.
///
/// The lock orders everything: a waiter registers under it and then checks
/// its condition; a notifier makes the condition true, then takes the lock to
/// wake. Either the notifier sees the entry, or the waiter sees the condition.
pub(crate) struct WaitQueue {
    inner: Mutex<Waiters>,
    /// Every generation below this has been drained by `notify_all`.
    drained_below: AtomicU64,
}

struct Waiters {
    entries: Slab<(u64, Waiter)>,
    next_gen: u64,
}

/// Who waits. A green thread is named by its header without a reference
/// count: its entry is removed (under the lock) before `wait_until` returns or
/// unwinds, and a green thread cannot finish while inside `wait_until`, so the
/// header outlives the entry. (A green thread leaked at shutdown keeps its
/// header alive forever.)
enum Waiter {
    Green(*const Header),
    Thread(Waker),
}

// SAFETY: the Green pointer is only dereferenced to call `wake_ref`, which is
// thread-safe (Header is Sync), while the header is alive (see `Waiter`).
unsafe impl Send for Waiter {}

impl Waiter {
    fn wake(self) {
        match self {
            // SAFETY: the header is alive while its entry exists (see `Waiter`),
            // and we are called with the entry just taken under the lock.
            Waiter::Green(header) => unsafe { (*header).wake_ref() },
            Waiter::Thread(waker) => waker.wake(),
        }
    }
}

impl Default for WaitQueue {
    fn default() -> Self {
        WaitQueue::new()
    }
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
            inner: Mutex::new(Waiters {
                entries: Slab::new(),
                next_gen: 0,
            }),
            drained_below: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, who: impl FnOnce() -> Waiter) -> (usize, u64) {
        let mut waiters = self.lock();
        let gen = waiters.next_gen;
        waiters.next_gen += 1;
        let key = waiters.entries.insert((gen, who()));
        (key, gen)
    }

    fn unregister(&self, (key, gen): (usize, u64)) {
        if gen < self.drained_below.load(Ordering::Acquire) {
            return; // notify_all took it already
        }
        let mut waiters = self.lock();
        if waiters.entries.get(key).is_some_and(|e| e.0 == gen) {
            waiters.entries.remove(key);
        }
    }

    /// Parks the caller until `ready()` holds or `deadline` passes; returns
    /// the last value of `ready()`. `ready` is evaluated after the caller's
    /// waker is registered, so a notification between the check and the park
    /// is never lost (`notify_all` callers make `ready` true first).
    pub(crate) fn wait_until(
        &self,
        wait: Wait,
        deadline: Option<Instant>,
        mut ready: impl FnMut() -> bool,
    ) -> bool {
        if ready() {
            return true;
        }
        let header = hub::current_header_ptr();
        let green = header.is_some();
        let thread = if green { None } else { Some(thread_waker()) };
        let who = || match (header, &thread) {
            (Some(header), _) => Waiter::Green(header),
            (None, Some(waker)) => Waiter::Thread(waker.clone()),
            (None, None) => unreachable!("a thread waiter has a waker"),
        };
        struct Leave<'a>(&'a WaitQueue, &'a Cell<Option<(usize, u64)>>);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                if let Some(entry) = self.1.get() {
                    self.0.unregister(entry);
                }
            }
        }
        let entry = Cell::new(None);
        let _leave = Leave(self, &entry);
        loop {
            let registered = entry
                .get()
                .is_some_and(|(_, gen)| gen >= self.drained_below.load(Ordering::Acquire));
            if !registered {
                entry.set(Some(self.register(who)));
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

    /// Wakes every waiter. Waking never calls back into a WaitQueue, so it
    /// is done under the lock (which also keeps the green headers alive).
    pub(crate) fn notify_all(&self) {
        let mut waiters = self.lock();
        if waiters.entries.is_empty() {
            return;
        }
        self.drained_below
            .store(waiters.next_gen, Ordering::Release);
        for (_, waiter) in waiters.entries.drain() {
            waiter.wake();
        }
    }
}
