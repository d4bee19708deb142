//! The waiting room every primitive in `sync` is built on.
//!
//! A [`WaitQueue<S, P>`] is a lock around a primitive's state `S` and a FIFO
//! list of waiters. A waiter parks in [`WaitQueue::wait`] until its `poll`
//! closure, run under the lock, says it is done. Whoever changes the state
//! wakes waiters under the same lock, either all of them
//! ([`Locked::notify_all`]) or the first one, *handing it* a payload `P`
//! ([`Locked::notify_one`]): a permit, an item, a free slot. Hand-off is what
//! makes the primitives fair (a newcomer cannot barge past a woken waiter)
//! and lossless: a waiter that was handed something and then leaves — killed,
//! timed out — gives it back through its `abandon` closure, under the lock, so
//! the primitive passes it on.
//!
//! It works from green threads (which park on their hub) and from plain OS
//! threads (which block in `std::thread::park`), so a primitive can be shared
//! between both. A waiter's entry leaves the list however the waiter leaves
//! `wait`, unwinding from a kill or a timeout included.
//!
//! The lock orders everything: a waiter registers under it and then parks; a
//! notifier takes it to wake. Either the notifier sees the entry, or the
//! waiter's `poll` (under the lock) sees the new state. Wakers of green
//! threads only push onto a run queue and never call back into a WaitQueue,
//! so waking under the lock is safe.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Wake, Waker};
use std::time::Instant;

use slab::Slab;

use crate::hub::{self, Header, Wait};

const NIL: usize = usize::MAX;

/// A primitive's state and the waiters on it, behind one lock.
pub(crate) struct WaitQueue<S, P = ()> {
    inner: Mutex<Locked<S, P>>,
}

/// What the lock guards: the state, and the list of waiters.
pub(crate) struct Locked<S, P = ()> {
    pub(crate) state: S,
    nodes: Slab<Node<P>>,
    /// The FIFO of waiters still waiting (notified ones are unlinked).
    head: usize,
    tail: usize,
    waiting: usize,
    next_gen: u64,
    /// Watchers (`wait_any` and friends): woken by every notification, handed
    /// nothing, removed when woken. Few at a time, so a Vec.
    watchers: Vec<(u64, Waker)>,
}

/// A registered watcher, for [`Locked::unwatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WatchKey(u64);

struct Node<P> {
    gen: u64,
    waiter: Waiter,
    prev: usize,
    next: usize,
    status: Status<P>,
}

enum Status<P> {
    Waiting,
    /// Woken; the payload, if any, is the waiter's until it takes it.
    Notified(Option<P>),
}

/// Who waits. A green thread is named by its header without a reference
/// count: its node is removed (under the lock) before `wait` returns or
/// unwinds, and a green thread cannot finish while inside `wait`, so the
/// header outlives the node. (A green thread leaked at shutdown keeps its
/// header alive for ever.)
enum Waiter {
    Green(*const Header),
    Thread(Waker),
}

// SAFETY: the Green pointer is only dereferenced to call `wake_ref`, which is
// thread-safe (Header is Sync), while the header is alive (see `Waiter`).
unsafe impl Send for Waiter {}

impl Waiter {
    fn wake(&self) {
        match self {
            // SAFETY: the header is alive while its node exists (see `Waiter`),
            // and nodes are only woken under the lock, while they exist.
            Waiter::Green(header) => unsafe { (**header).wake_ref() },
            Waiter::Thread(waker) => waker.wake_by_ref(),
        }
    }
}

/// A registered waiter's node: slab key and generation (keys are reused).
#[derive(Clone, Copy)]
struct Ticket {
    key: usize,
    gen: u64,
}

/// Wakes a plain OS thread blocked in `wait`.
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

impl<S, P> Locked<S, P> {
    /// Whether anyone waits (not counting woken waiters yet to run).
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiting > 0
    }

    /// Wakes the first waiter, handing it `payload`; gives the payload back
    /// if nobody waits.
    pub(crate) fn notify_one(&mut self, payload: P) -> Result<(), P> {
        self.wake_watchers();
        let key = self.head;
        if key == NIL {
            return Err(payload);
        }
        self.unlink(key);
        let node = &mut self.nodes[key];
        node.status = Status::Notified(Some(payload));
        node.waiter.wake();
        Ok(())
    }

    /// Wakes every waiter, handing none of them anything.
    pub(crate) fn notify_all(&mut self) {
        self.wake_watchers();
        while self.head != NIL {
            let key = self.head;
            self.unlink(key);
            let node = &mut self.nodes[key];
            node.status = Status::Notified(None);
            node.waiter.wake();
        }
    }

    /// Tells `waker` about the next change of state (any `notify_*`, or
    /// [`Locked::wake_watchers`]): for waits on several primitives at once,
    /// which take nothing and only look.
    pub(crate) fn watch(&mut self, waker: &Waker) -> WatchKey {
        let key = self.next_gen;
        self.next_gen += 1;
        self.watchers.push((key, waker.clone()));
        WatchKey(key)
    }

    /// Stops watching (a no-op if the watcher was already woken).
    pub(crate) fn unwatch(&mut self, key: WatchKey) {
        self.watchers.retain(|(k, _)| *k != key.0);
    }

    /// Wakes the watchers: for state changes that wake no waiter (a value
    /// becoming available to whoever comes, a queue closing).
    pub(crate) fn wake_watchers(&mut self) {
        if self.watchers.is_empty() {
            return;
        }
        for (_, waker) in self.watchers.drain(..) {
            waker.wake();
        }
    }

    /// Out of line (as `leave`): their temporaries would otherwise widen
    /// the frame of every parked waiter, which a compact stack saves.
    #[inline(never)]
    fn register(&mut self, waiter: Waiter) -> Ticket {
        let gen = self.next_gen;
        self.next_gen += 1;
        let key = self.nodes.insert(Node {
            gen,
            waiter,
            prev: self.tail,
            next: NIL,
            status: Status::Waiting,
        });
        match self.tail {
            NIL => self.head = key,
            tail => self.nodes[tail].next = key,
        }
        self.tail = key;
        self.waiting += 1;
        Ticket { key, gen }
    }

    /// Takes a waiting node out of the FIFO (it stays in the slab).
    fn unlink(&mut self, key: usize) {
        let (prev, next) = (self.nodes[key].prev, self.nodes[key].next);
        match prev {
            NIL => self.head = next,
            prev => self.nodes[prev].next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => self.nodes[next].prev = prev,
        }
        self.waiting -= 1;
    }

    /// Removes the ticket's node; returns what it was handed, if anything.
    /// (Only the waiter removes its node, so the ticket is always valid.)
    #[inline(never)]
    fn leave(&mut self, ticket: Ticket) -> Option<P> {
        let node = self.nodes.get(ticket.key).filter(|n| n.gen == ticket.gen)?;
        if matches!(node.status, Status::Waiting) {
            self.unlink(ticket.key);
        }
        match self.nodes.remove(ticket.key).status {
            Status::Waiting => None,
            Status::Notified(payload) => payload,
        }
    }

    /// Whether the ticket's node has been woken.
    fn notified(&self, ticket: Ticket) -> bool {
        self.nodes
            .get(ticket.key)
            .is_some_and(|n| n.gen == ticket.gen && matches!(n.status, Status::Notified(_)))
    }
}

impl<S, P> WaitQueue<S, P> {
    pub(crate) const fn new(state: S) -> WaitQueue<S, P> {
        WaitQueue {
            inner: Mutex::new(Locked {
                state,
                nodes: Slab::new(),
                head: NIL,
                tail: NIL,
                waiting: 0,
                next_gen: 0,
                watchers: Vec::new(),
            }),
        }
    }

    /// Locks the state (and the waiters, for `notify_*`). Never held across a
    /// park. A panic while locked does not poison it: primitives keep their
    /// state consistent at every step.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Locked<S, P>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks the caller until `poll` returns `Some`, or until `deadline`
    /// passes (then `None`).
    ///
    /// `poll(state, handed)` runs under the lock, first before parking and
    /// again after every wake; `handed` is the payload a notifier handed this
    /// waiter (at most once), which `poll` must consume. A waiter that gets
    /// nothing it can use keeps its place only while it has not been woken;
    /// once woken (`notify_all`, or a spurious wake) it queues again at the
    /// back.
    ///
    /// If the waiter leaves without `poll` having run on a payload it was
    /// handed (it was killed, or `with_timeout` expired around it),
    /// `abandon(locked, payload)` runs under the lock to pass it on.
    pub(crate) fn wait<R>(
        &self,
        wait: Wait,
        deadline: Option<Instant>,
        mut poll: impl FnMut(&mut S, Option<P>) -> Option<R>,
        abandon: impl FnOnce(&mut Locked<S, P>, P),
    ) -> Option<R> {
        let mut first = self.lock();
        if let Some(r) = poll(&mut first.state, None) {
            return Some(r);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let green = hub::current_header_ptr();
        let thread = if green.is_some() {
            None
        } else {
            Some(thread_waker())
        };
        let who = || match (green, &thread) {
            (Some(header), _) => Waiter::Green(header),
            (_, Some(waker)) => Waiter::Thread(waker.clone()),
            (None, None) => unreachable!("a plain thread has a waker"),
        };

        /// Removes the node however `wait` is left; passes on a payload
        /// handed but never polled.
        struct Leave<'a, S, P, A: FnOnce(&mut Locked<S, P>, P)> {
            queue: &'a WaitQueue<S, P>,
            ticket: Option<Ticket>,
            abandon: Option<A>,
        }
        impl<S, P, A: FnOnce(&mut Locked<S, P>, P)> Drop for Leave<'_, S, P, A> {
            fn drop(&mut self) {
                if let Some(ticket) = self.ticket.take() {
                    let mut locked = self.queue.lock();
                    if let Some(payload) = locked.leave(ticket) {
                        if let Some(abandon) = self.abandon.take() {
                            abandon(&mut locked, payload);
                        }
                    }
                }
            }
        }
        let mut leave = Leave {
            queue: self,
            ticket: None,
            abandon: Some(abandon),
        };

        // Registered in the same locked step as the first poll: nothing can
        // slip between them.
        leave.ticket = Some(first.register(who()));
        drop(first);
        loop {
            match (green.is_some(), deadline) {
                (true, Some(d)) => hub::park_until(wait, d),
                (true, None) => hub::park(wait),
                (false, Some(d)) => {
                    std::thread::park_timeout(d.saturating_duration_since(Instant::now()))
                }
                (false, None) => std::thread::park(),
            }
            let mut locked = self.lock();
            let handed = match leave.ticket {
                Some(ticket) if locked.notified(ticket) => {
                    leave.ticket = None;
                    locked.leave(ticket)
                }
                _ => None,
            };
            if let Some(r) = poll(&mut locked.state, handed) {
                if let Some(ticket) = leave.ticket.take() {
                    if let Some(payload) = locked.leave(ticket) {
                        // Handed something after all (cannot happen: we
                        // checked under this lock); pass it on.
                        if let Some(abandon) = leave.abandon.take() {
                            abandon(&mut locked, payload);
                        }
                    }
                }
                return Some(r);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                drop(locked);
                return None; // `leave` removes the node
            }
            if leave.ticket.is_none() {
                leave.ticket = Some(locked.register(who()));
            }
        }
    }
}

impl<S: Default, P> Default for WaitQueue<S, P> {
    fn default() -> Self {
        WaitQueue::new(S::default())
    }
}
