//! [`Queue`], [`LifoQueue`] and [`PriorityQueue`] (gevent's `queue` module),
//! and the engine that `Channel` (channel.rs) shares with them. What users
//! need to know is on [`Queue`]; this is how it works.
//!
//! # Design
//!
//! Everything of one queue sits behind one lock: the `WaitQueue` of its
//! getters, whose state holds the buffer, the blocked putters and the close
//! flag. One lock means every step (hand an item over, free a slot and move
//! a putter's item in, close) is atomic, and the uncontended path costs one
//! lock and unlock.
//!
//! Getters wait in the `WaitQueue`, which hands them items (payload `T`);
//! one whose wait ends without taking its item (kill, `with_timeout`) gives
//! it back in `abandon` to the next getter, or to the front of the buffer.
//!
//! Blocked putters cannot wait there: a getter must *take* an item from the
//! first putter, the opposite direction of the `WaitQueue`'s hand-off, and a
//! putter that leaves (time out, kill) must take its item back in the same
//! locked step that removes it from the line, which the `WaitQueue` only
//! offers to a waiter that was handed something. So blocked putters live in
//! the state itself, as `(ticket, item, waker)` in a FIFO: a getter pops the
//! first, takes its item and wakes it; a putter that leaves removes its own
//! entry under the lock. The alternatives were weighed and dropped:
//! - one `WaitQueue` for both sides, payload an enum: a woken putter would
//!   have to hand its item on to a getter from inside `poll`, which cannot
//!   notify, and the two kinds of waiter would mix in one FIFO;
//! - two `WaitQueue`s (a semaphore of free slots for putters, items for
//!   getters): correct for bounded queues, at two locks per operation, but
//!   not for a rendezvous channel, where the getter needs the putter's item.
//!
//! The buffer discipline (FIFO, LIFO, heap) is the private `Buffer` trait;
//! [`Queue`], [`LifoQueue`], [`PriorityQueue`] and `Channel` (capacity 0)
//! are thin wrappers around one generic `Core`.

use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use super::wait_queue::{Locked, WaitQueue, WatchKey};

mod errors;
use crate::hub::{self, Wait};
pub use errors::*;

// ---------------------------------------------------------------------------
// Buffers

/// How a queue orders the items it holds.
pub(crate) trait Buffer<T>: Default {
    fn push(&mut self, item: T);
    fn pop(&mut self) -> Option<T>;
    /// Puts back an item that a departed getter was handed: it becomes the
    /// next one out (FIFO: the front; LIFO: the top; heap: by its order).
    fn unget(&mut self, item: T);
    fn peek(&self) -> Option<&T>;
    fn len(&self) -> usize;
}

/// First in, first out.
pub(crate) struct Fifo<T>(VecDeque<T>);

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Fifo(VecDeque::new())
    }
}

impl<T> Buffer<T> for Fifo<T> {
    #[inline]
    fn push(&mut self, item: T) {
        self.0.push_back(item);
    }
    #[inline]
    fn pop(&mut self) -> Option<T> {
        self.0.pop_front()
    }
    fn unget(&mut self, item: T) {
        self.0.push_front(item);
    }
    fn peek(&self) -> Option<&T> {
        self.0.front()
    }
    #[inline]
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Last in, first out.
pub(crate) struct Lifo<T>(Vec<T>);

impl<T> Default for Lifo<T> {
    fn default() -> Self {
        Lifo(Vec::new())
    }
}

impl<T> Buffer<T> for Lifo<T> {
    fn push(&mut self, item: T) {
        self.0.push(item);
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop()
    }
    fn unget(&mut self, item: T) {
        self.0.push(item);
    }
    fn peek(&self) -> Option<&T> {
        self.0.last()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Greatest first.
pub(crate) struct Heap<T>(BinaryHeap<T>);

impl<T: Ord> Default for Heap<T> {
    fn default() -> Self {
        Heap(BinaryHeap::new())
    }
}

impl<T: Ord> Buffer<T> for Heap<T> {
    fn push(&mut self, item: T) {
        self.0.push(item);
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop()
    }
    fn unget(&mut self, item: T) {
        self.0.push(item);
    }
    fn peek(&self) -> Option<&T> {
        self.0.peek()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

// ---------------------------------------------------------------------------
// The engine

/// What each blocking call of one queue type is called in deadlock reports.
pub(crate) struct Waits {
    pub(crate) get: Wait,
    pub(crate) put: Wait,
    pub(crate) join: Wait,
}

/// A putter blocked on a full queue (or, for a channel, on no getter). It
/// owns its item until a getter takes it; it leaves the line only under the
/// lock, by a getter (which takes the item and wakes it) or by itself (which
/// takes the item back).
struct Putter<T> {
    ticket: u64,
    item: T,
    waker: Waker,
}

/// A queue's state, behind the lock of its getters' [`WaitQueue`].
///
/// Invariants (at every unlock):
/// - getters wait only while nothing can be taken: the buffer is empty and
///   (for a channel) no putter waits;
/// - putters wait only while the buffer is at capacity (or closed-off), and
///   in ticket order, so their line can be searched by ticket;
/// - `unfinished` counts items accepted (handed to a getter or into the
///   buffer) and not yet `task_done`.
pub(crate) struct State<T, B> {
    buffer: B,
    /// `usize::MAX` when unbounded; 0 for a channel.
    cap: usize,
    closed: bool,
    putters: VecDeque<Putter<T>>,
    next_ticket: u64,
    unfinished: usize,
}

impl<T, B: Buffer<T>> State<T, B> {
    /// The next item for a getter, if one can be had without waiting.
    #[inline]
    fn take(&mut self) -> Option<T> {
        if let Some(item) = self.buffer.pop() {
            if !self.putters.is_empty() {
                self.admit_putter();
            }
            return Some(item);
        }
        if self.closed {
            return None;
        }
        // A channel: straight from the first blocked putter.
        let putter = self.putters.pop_front()?;
        self.unfinished += 1;
        putter.waker.wake();
        Some(putter.item)
    }

    /// A slot is free: the first blocked putter's item moves in.
    fn admit_putter(&mut self) {
        if self.closed || self.buffer.len() >= self.cap {
            return;
        }
        if let Some(putter) = self.putters.pop_front() {
            self.buffer.push(putter.item);
            self.unfinished += 1;
            putter.waker.wake();
        }
    }

    /// Removes the blocked putter `ticket`, giving back its item; None if a
    /// getter has taken it already.
    fn withdraw(&mut self, ticket: u64) -> Option<T> {
        let i = self
            .putters
            .binary_search_by_key(&ticket, |p| p.ticket)
            .ok()?;
        self.putters.remove(i).map(|p| p.item)
    }
}

/// Returns an item that a departed getter had been handed: to the next
/// getter, or to the front of the buffer.
fn return_item<T, B: Buffer<T>>(locked: &mut Locked<State<T, B>, T>, item: T) {
    if let Err(item) = locked.notify_one(item) {
        locked.state.buffer.unget(item);
        locked.wake_watchers();
    }
}

/// How long a call may wait.
#[derive(Clone, Copy)]
pub(crate) enum Mode {
    /// Not at all.
    Try,
    /// Until the instant (None: for ever).
    Until(Option<Instant>),
}

impl Mode {
    pub(crate) fn timeout(d: Duration) -> Mode {
        Mode::Until(hub::deadline_after(d))
    }
}

/// What went wrong in [`Core::put`]; the item comes back.
pub(crate) enum PutError<T> {
    Full(T),
    Timeout(T),
    Closed(T),
}

/// What went wrong in [`Core::get`].
pub(crate) enum GetError {
    Empty,
    Timeout,
    Closed,
}

fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// The engine of every queue type and of `Channel`: see the module docs.
pub(crate) struct Core<T, B> {
    items: WaitQueue<State<T, B>, T>,
    /// Waiters in `join`. Lock order: `joiners` before `items` (a joiner
    /// reads `unfinished` under both); never the other way round.
    joiners: WaitQueue<()>,
    waits: &'static Waits,
}

impl<T, B: Buffer<T>> Core<T, B> {
    /// A queue holding up to `cap` items (`usize::MAX`: no limit; 0: a
    /// rendezvous channel).
    pub(crate) fn new(cap: usize, waits: &'static Waits) -> Self {
        Core {
            items: WaitQueue::new(State {
                buffer: B::default(),
                cap,
                closed: false,
                putters: VecDeque::new(),
                next_ticket: 0,
                unfinished: 0,
            }),
            joiners: WaitQueue::new(()),
            waits,
        }
    }

    pub(crate) fn put(&self, item: T, mode: Mode) -> Result<(), PutError<T>> {
        let mut locked = self.items.lock();
        if locked.state.closed {
            return Err(PutError::Closed(item));
        }
        let mut item = item;
        if locked.has_waiters() {
            match locked.notify_one(item) {
                Ok(()) => {
                    locked.state.unfinished += 1;
                    return Ok(());
                }
                Err(back) => item = back,
            }
        }
        let state = &mut locked.state;
        if state.putters.is_empty() && state.buffer.len() < state.cap {
            state.buffer.push(item);
            state.unfinished += 1;
            locked.wake_watchers();
            return Ok(());
        }
        match mode {
            Mode::Try => Err(PutError::Full(item)),
            Mode::Until(deadline) if expired(deadline) => Err(PutError::Timeout(item)),
            Mode::Until(deadline) => self.put_blocked(locked, item, deadline),
        }
    }

    /// Joins the line of blocked putters and parks until a getter takes the
    /// item, the queue closes, or `deadline` passes.
    #[cold]
    fn put_blocked(
        &self,
        mut locked: std::sync::MutexGuard<'_, Locked<State<T, B>, T>>,
        item: T,
        deadline: Option<Instant>,
    ) -> Result<(), PutError<T>> {
        let green = hub::current_waker();
        let on_green = green.is_some();
        let waker = green.unwrap_or_else(thread_waker);
        let state = &mut locked.state;
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.putters.push_back(Putter {
            ticket,
            item,
            waker,
        });
        if state.cap == 0 {
            // A channel with a putter waiting is readable.
            locked.wake_watchers();
        }
        drop(locked);

        /// Withdraws the putter however the wait is left (a kill or a
        /// `with_timeout` unwinds out of the park): its item is dropped
        /// with it, never left for a getter to find.
        struct Withdraw<'a, T, B: Buffer<T>> {
            core: &'a Core<T, B>,
            ticket: Option<u64>,
        }
        impl<T, B: Buffer<T>> Drop for Withdraw<'_, T, B> {
            fn drop(&mut self) {
                if let Some(ticket) = self.ticket {
                    let item = self.core.items.lock().state.withdraw(ticket);
                    drop(item); // outside the lock: T's destructor may do anything
                }
            }
        }
        let mut guard = Withdraw {
            core: self,
            ticket: Some(ticket),
        };

        loop {
            match (on_green, deadline) {
                (true, Some(d)) => hub::park_until(self.waits.put, d),
                (true, None) => hub::park(self.waits.put),
                (false, Some(d)) => {
                    std::thread::park_timeout(d.saturating_duration_since(Instant::now()))
                }
                (false, None) => std::thread::park(),
            }
            let mut locked = self.items.lock();
            let state = &mut locked.state;
            let taken = state
                .putters
                .binary_search_by_key(&ticket, |p| p.ticket)
                .is_err();
            if taken {
                guard.ticket = None;
                return Ok(());
            }
            if state.closed || expired(deadline) {
                guard.ticket = None;
                let item = state.withdraw(ticket).expect("still in line");
                return Err(if state.closed {
                    PutError::Closed(item)
                } else {
                    PutError::Timeout(item)
                });
            }
            // Woken for nothing: park again, keeping the place in line.
        }
    }

    pub(crate) fn get(&self, mode: Mode) -> Result<T, GetError> {
        let deadline = match mode {
            Mode::Until(deadline) => deadline,
            Mode::Try => {
                let mut locked = self.items.lock();
                return match locked.state.take() {
                    Some(item) => Ok(item),
                    None if locked.state.closed => Err(GetError::Closed),
                    None => Err(GetError::Empty),
                };
            }
        };
        self.items
            .wait(
                self.waits.get,
                deadline,
                |state, handed| {
                    if let Some(item) = handed {
                        return Some(Ok(item));
                    }
                    match state.take() {
                        Some(item) => Some(Ok(item)),
                        None if state.closed => Some(Err(GetError::Closed)),
                        None => None,
                    }
                },
                return_item,
            )
            .unwrap_or(Err(GetError::Timeout))
    }

    pub(crate) fn peek(&self) -> Option<T>
    where
        T: Clone,
    {
        self.items.lock().state.buffer.peek().cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.items.lock().state.buffer.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        let locked = self.items.lock();
        locked.state.buffer.len() >= locked.state.cap
    }

    pub(crate) fn close(&self) {
        let mut locked = self.items.lock();
        if locked.state.closed {
            return;
        }
        locked.state.closed = true;
        for putter in &locked.state.putters {
            putter.waker.wake_by_ref();
        }
        // Getters re-check: they drain what is left, then see the close.
        locked.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.items.lock().state.closed
    }

    pub(crate) fn is_readable(&self) -> bool {
        let locked = self.items.lock();
        let state = &locked.state;
        state.closed || state.buffer.len() > 0 || (state.cap == 0 && !state.putters.is_empty())
    }

    pub(crate) fn watch_readable(&self, waker: &Waker) -> WatchKey {
        self.items.lock().watch(waker)
    }

    pub(crate) fn unwatch(&self, key: WatchKey) {
        self.items.lock().unwatch(key)
    }

    pub(crate) fn task_done(&self) -> Result<(), TaskDoneError> {
        let idle = {
            let mut locked = self.items.lock();
            let state = &mut locked.state;
            if state.unfinished == 0 {
                return Err(TaskDoneError(()));
            }
            state.unfinished -= 1;
            state.unfinished == 0
        };
        if idle {
            self.joiners.lock().notify_all();
        }
        Ok(())
    }

    pub(crate) fn unfinished(&self) -> usize {
        self.items.lock().state.unfinished
    }

    /// Parks until `unfinished` is 0; false if `deadline` passed first.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> bool {
        self.joiners
            .wait(
                self.waits.join,
                deadline,
                |_, _| (self.items.lock().state.unfinished == 0).then_some(()),
                |_, ()| {},
            )
            .is_some()
    }
}

impl<T, B: Buffer<T>> Core<T, B> {
    /// `Debug` for the public types: `name { len, capacity, closed, .. }`.
    pub(crate) fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let locked = self.items.lock();
        let state = &locked.state;
        let mut d = f.debug_struct(name);
        d.field("len", &state.buffer.len());
        if state.cap != usize::MAX {
            d.field("capacity", &state.cap);
        }
        d.field("closed", &state.closed).finish_non_exhaustive()
    }
}

/// Wakes a plain OS thread blocked in `put`.
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

// ---------------------------------------------------------------------------
// Iteration

/// Where an [`Iter`] gets its items: any of the queue types.
trait Source<T> {
    fn next_item(&self) -> Option<T>;
}

impl<T, B: Buffer<T>> Source<T> for Core<T, B> {
    fn next_item(&self) -> Option<T> {
        self.get(Mode::Until(None)).ok()
    }
}

/// An iterator that takes items with a blocking `get` until the queue is
/// closed and drained (gevent's `for item in queue`). Made by `iter()` or by
/// `for item in &queue`.
pub struct Iter<'a, T> {
    source: &'a dyn Source<T>,
}

impl<'a, T> Iter<'a, T> {
    pub(crate) fn new<B: Buffer<T>>(core: &'a Core<T, B>) -> Self {
        Iter { source: core }
    }
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.source.next_item()
    }
}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Iter { .. }")
    }
}

// ---------------------------------------------------------------------------
// The public queue types

const QUEUE: Waits = Waits {
    get: Wait::shared(&"Queue::get"),
    put: Wait::shared(&"Queue::put"),
    join: Wait::shared(&"Queue::join"),
};
const LIFO: Waits = Waits {
    get: Wait::shared(&"LifoQueue::get"),
    put: Wait::shared(&"LifoQueue::put"),
    join: Wait::shared(&"LifoQueue::join"),
};
const PRIORITY: Waits = Waits {
    get: Wait::shared(&"PriorityQueue::get"),
    put: Wait::shared(&"PriorityQueue::put"),
    join: Wait::shared(&"PriorityQueue::join"),
};

/// A first-in, first-out queue, unbounded or bounded (gevent's `Queue` and
/// `JoinableQueue`).
///
/// `Send + Sync` when `T: Send`: green threads of any hub and plain OS threads
/// may share it (through an `Arc`, or an `Rc` within one hub). Blocking calls
/// park the calling green thread (its hub runs others meanwhile), or block a
/// plain OS thread; they honour `kill` and `with_timeout`, and name
/// themselves (`Queue::get`, `Queue::put`, `Queue::join`) in the deadlock
/// report.
///
/// # First come, first served
///
/// Blocked getters are served in the order they blocked, and so are blocked
/// putters. A `put` that finds a getter waiting *hands* the item straight to
/// the first one; a `get` that frees a slot of a full bounded queue moves the
/// first blocked putter's item in. A newcomer never barges past someone
/// already waiting.
///
/// # Nothing is lost to cancellation
///
/// A getter that was handed an item and is killed (or whose `with_timeout`
/// expires) before it runs passes the item on: to the next waiting getter,
/// or back to the front of the queue, so the order is kept. In that one case
/// a bounded queue may briefly hold one item more than its capacity. A
/// putter killed while blocked takes its item with it (it is dropped as the
/// green thread unwinds); one whose `put_timeout` runs out gets it back in
/// the error.
///
/// # Closing
///
/// After [`close`](Queue::close), puts fail with the item given back,
/// blocked putters wake and get their items back, and getters drain what is
/// left, then get [`Closed`] (so `for item in &queue` ends).
///
/// # Joining
///
/// Every queue counts the items put and not yet marked with
/// [`task_done`](Queue::task_done); [`join`](Queue::join) parks until that
/// count is 0 (gevent's `JoinableQueue`).
///
/// ```
/// use std::rc::Rc;
/// use greenhub::sync::Queue;
///
/// greenhub::run(|| {
///     let queue = Rc::new(Queue::bounded(2));
///     let q = queue.clone();
///     let consumer = greenhub::spawn(move || q.iter().sum::<u32>());
///     for i in 1..=10 {
///         queue.put(i).unwrap(); // parks while two items wait
///     }
///     queue.close();
///     assert_eq!(consumer.join().unwrap(), 55);
/// })
/// .unwrap();
/// ```
pub struct Queue<T> {
    core: Core<T, Fifo<T>>,
}

/// A last-in, first-out queue (gevent's `LifoQueue`): `get` takes the item
/// put most recently. Otherwise as [`Queue`].
///
/// ```
/// use greenhub::sync::LifoQueue;
///
/// let stack = LifoQueue::new();
/// for i in 1..=3 {
///     stack.put(i).unwrap();
/// }
/// assert_eq!(stack.try_get(), Ok(3));
/// assert_eq!(stack.try_get(), Ok(2));
/// ```
pub struct LifoQueue<T> {
    core: Core<T, Lifo<T>>,
}

/// A queue that hands out its *greatest* item first, like
/// [`std::collections::BinaryHeap`]. gevent's (Python's) `PriorityQueue`
/// hands out the smallest first: wrap items in [`std::cmp::Reverse`] for
/// that. Items that compare equal come out in no particular order.
/// Otherwise as [`Queue`].
///
/// ```
/// use std::cmp::Reverse;
/// use greenhub::sync::PriorityQueue;
///
/// let jobs = PriorityQueue::new();
/// jobs.put((1, "low")).unwrap();
/// jobs.put((9, "urgent")).unwrap();
/// assert_eq!(jobs.try_get(), Ok((9, "urgent")));
///
/// let smallest_first = PriorityQueue::new();
/// smallest_first.put(Reverse(5)).unwrap();
/// smallest_first.put(Reverse(2)).unwrap();
/// assert_eq!(smallest_first.try_get(), Ok(Reverse(2)));
/// ```
pub struct PriorityQueue<T> {
    core: Core<T, Heap<T>>,
}

/// The methods every queue type has; `$order` says which item `get` takes.
macro_rules! queue_api {
    ($Q:ident, $waits:ident, $order:literal $(, $bound:path)?) => {
        impl<T $(: $bound)?> $Q<T> {
            /// An unbounded queue: `put` never blocks.
            pub fn new() -> Self {
                $Q { core: Core::new(usize::MAX, &$waits) }
            }

            /// A queue that holds at most `capacity` items: `put` parks while
            /// it is full.
            ///
            /// # Panics
            /// If `capacity` is 0. gevent's `Queue(0)` is a rendezvous: use
            /// [`Channel`](super::Channel) for that.
            pub fn bounded(capacity: usize) -> Self {
                assert!(
                    capacity > 0,
                    concat!(
                        stringify!($Q),
                        "::bounded(0): a queue of capacity 0 is a rendezvous; use Channel"
                    )
                );
                $Q { core: Core::new(capacity, &$waits) }
            }

            /// Puts `item`, parking while the queue is full. A waiting getter
            /// is handed the item directly; blocked putters go in turn.
            ///
            /// # Errors
            /// [`Closed`] with the item if the queue is closed, or closes
            /// while this waits.
            pub fn put(&self, item: T) -> Result<(), Closed<T>> {
                match self.core.put(item, Mode::Until(None)) {
                    Ok(()) => Ok(()),
                    Err(PutError::Closed(item) | PutError::Full(item) | PutError::Timeout(item)) => {
                        Err(Closed(item))
                    }
                }
            }

            /// Puts `item` if that needs no wait.
            ///
            /// # Errors
            /// [`TryPutError::Full`] or [`TryPutError::Closed`], with the item.
            pub fn try_put(&self, item: T) -> Result<(), TryPutError<T>> {
                match self.core.put(item, Mode::Try) {
                    Ok(()) => Ok(()),
                    Err(PutError::Closed(item)) => Err(TryPutError::Closed(item)),
                    Err(PutError::Full(item) | PutError::Timeout(item)) => {
                        Err(TryPutError::Full(item))
                    }
                }
            }

            /// Like [`put`](Self::put), giving up after `timeout`.
            ///
            /// # Errors
            /// [`PutTimeoutError::Timeout`] or [`PutTimeoutError::Closed`],
            /// with the item.
            pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutTimeoutError<T>> {
                match self.core.put(item, Mode::timeout(timeout)) {
                    Ok(()) => Ok(()),
                    Err(PutError::Closed(item)) => Err(PutTimeoutError::Closed(item)),
                    Err(PutError::Full(item) | PutError::Timeout(item)) => {
                        Err(PutTimeoutError::Timeout(item))
                    }
                }
            }

            #[doc = concat!("Takes the ", $order, ", parking while the queue is empty.")]
            ///
            /// # Errors
            /// [`Closed`] once the queue is closed and drained.
            pub fn get(&self) -> Result<T, Closed> {
                self.core.get(Mode::Until(None)).map_err(|_| Closed(()))
            }

            #[doc = concat!("Takes the ", $order, " if there is one.")]
            ///
            /// # Errors
            /// [`TryGetError::Empty`], or [`TryGetError::Closed`] once the
            /// queue is closed and drained.
            pub fn try_get(&self) -> Result<T, TryGetError> {
                self.core.get(Mode::Try).map_err(|e| match e {
                    GetError::Closed => TryGetError::Closed,
                    GetError::Empty | GetError::Timeout => TryGetError::Empty,
                })
            }

            /// Like [`get`](Self::get), giving up after `timeout`.
            ///
            /// # Errors
            /// [`GetTimeoutError::Timeout`], or [`GetTimeoutError::Closed`]
            /// once the queue is closed and drained.
            pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
                self.core.get(Mode::timeout(timeout)).map_err(|e| match e {
                    GetError::Closed => GetTimeoutError::Closed,
                    GetError::Empty | GetError::Timeout => GetTimeoutError::Timeout,
                })
            }

            #[doc = concat!("A clone of the ", $order, ", left in the queue.")]
            pub fn peek(&self) -> Option<T>
            where
                T: Clone,
            {
                self.core.peek()
            }

            /// How many items the queue holds (not counting blocked putters').
            pub fn len(&self) -> usize {
                self.core.len()
            }

            /// Whether the queue holds no item.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// Whether a `put` would have to wait (never, if unbounded).
            pub fn is_full(&self) -> bool {
                self.core.is_full()
            }

            /// The bound given to [`bounded`](Self::bounded); None if unbounded.
            pub fn capacity(&self) -> Option<usize> {
                let cap = self.core.items.lock().state.cap;
                (cap != usize::MAX).then_some(cap)
            }

            /// Closes the queue: later puts fail, blocked putters get their
            /// items back, getters drain what is left and then get
            /// [`Closed`]. Closing again does nothing.
            pub fn close(&self) {
                self.core.close()
            }

            /// Whether [`close`](Self::close) was called.
            pub fn is_closed(&self) -> bool {
                self.core.is_closed()
            }

            /// Whether a `get` would return at once: an item is there, or
            /// the queue is closed.
            pub fn is_readable(&self) -> bool {
                self.core.is_readable()
            }

            /// Marks one item taken with `get` as processed (gevent's
            /// `JoinableQueue.task_done`); see [`join`](Self::join).
            ///
            /// # Errors
            /// [`TaskDoneError`] if every item put has been marked already.
            pub fn task_done(&self) -> Result<(), TaskDoneError> {
                self.core.task_done()
            }

            /// How many items were put and not yet marked with
            /// [`task_done`](Self::task_done).
            pub fn unfinished_tasks(&self) -> usize {
                self.core.unfinished()
            }

            /// Parks until every item put has been marked with
            /// [`task_done`](Self::task_done). Items count from the moment
            /// they enter the queue (a blocked putter's item, once a slot
            /// frees).
            pub fn join(&self) {
                self.core.join(None);
            }

            /// Like [`join`](Self::join), giving up after `timeout`; returns
            /// whether every item was marked done.
            pub fn join_timeout(&self, timeout: Duration) -> bool {
                self.core.join(hub::deadline_after(timeout))
            }

            /// Takes items with a blocking [`get`](Self::get) until the queue
            /// is closed and drained.
            pub fn iter(&self) -> Iter<'_, T> {
                Iter::new(&self.core)
            }

            /// Tells `waker` about the next change that may make the queue
            /// readable (for `wait_any`).
            pub(crate) fn watch_readable(&self, waker: &Waker) -> WatchKey {
                self.core.watch_readable(waker)
            }

            /// Forgets a watcher registered by `watch_readable`.
            pub(crate) fn unwatch(&self, key: WatchKey) {
                self.core.unwatch(key)
            }
        }

        impl<T $(: $bound)?> Default for $Q<T> {
            fn default() -> Self {
                $Q::new()
            }
        }

        impl<'a, T $(: $bound)?> IntoIterator for &'a $Q<T> {
            type Item = T;
            type IntoIter = Iter<'a, T>;

            fn into_iter(self) -> Iter<'a, T> {
                self.iter()
            }
        }

        impl<T $(: $bound)?> fmt::Debug for $Q<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.core.debug(stringify!($Q), f)
            }
        }
    };
}

queue_api!(Queue, QUEUE, "oldest item");
queue_api!(LifoQueue, LIFO, "newest item");
queue_api!(PriorityQueue, PRIORITY, "greatest item", Ord);
