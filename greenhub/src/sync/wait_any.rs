//! Waiting for the first of several things: [`wait_any`], [`iwait`],
//! [`wait_all`] (gevent's `wait` and `iwait`) and the [`select!`](crate::select)
//! macro (the receiving half of Go's `select`). The docs are on [`Waitable`].

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use super::wait_queue::WatchKey;
use super::{AsyncResult, Channel, Event, LifoQueue, PriorityQueue, Queue, TryGetError};
use crate::hub::{self, Wait};
use crate::JoinHandle;

const WAIT: Wait = Wait::shared(&"wait_any");

mod sealed {
    /// How a wait registers interest; implemented inside greenhub only.
    pub trait Sealed {
        /// Asks for `waker` to be woken at the next change that may make the
        /// item ready (spurious wakes are allowed). A change before the call
        /// may go unreported: callers check readiness after watching.
        fn watch(&self, waker: &std::task::Waker) -> WatchToken;
        /// Forgets a watcher; a no-op if it was woken already.
        fn unwatch(&self, token: WatchToken);
    }

    /// A registered watcher.
    #[derive(Debug)]
    pub struct WatchToken(pub(crate) super::Token);
}

use sealed::{Sealed, WatchToken};

/// What a watcher is, for its `unwatch`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Token {
    /// On a primitive built on a `WaitQueue`.
    Queue(WatchKey),
    /// On a `JoinHandle`'s packet.
    Handle(u64),
}

/// Something a green thread can wait for among others, with [`wait_any`],
/// [`iwait`], [`wait_all`] or [`select!`](crate::select). Implemented by
/// greenhub's types only (the trait is sealed).
///
/// Any of these can be mixed in one wait: [`JoinHandle`]s (ready when finished),
/// [`Event`]s (when set), [`AsyncResult`]s (when they hold a value),
/// [`Queue`]s, [`LifoQueue`]s, [`PriorityQueue`]s and [`Channel`]s (when a
/// `get` would not park: an item is there, or the queue is closed), and
/// references, `Rc`s, `Arc`s and `Box`es of those.
///
/// ```
/// use std::time::Duration;
/// use greenhub::sync::{wait_any, Event, Waitable};
///
/// greenhub::run(|| {
///     let quit = Event::new();
///     let slow = greenhub::spawn(|| greenhub::sleep(Duration::from_secs(10)));
///     let fast = greenhub::spawn(|| 42);
///     // The first of the three to be ready: `fast`.
///     assert_eq!(wait_any(&[&quit, &slow, &fast]), 2);
///     assert!(fast.is_ready());
///     assert_eq!(fast.join().unwrap(), 42);
///     slow.kill();
/// })
/// .unwrap();
/// ```
///
/// # How a wait works
///
/// Readiness is checked first; only if nothing is ready does the caller
/// register a watcher on every item (no item is consumed or changed: a
/// watcher only looks), park, and check again once woken. Watchers are
/// removed however the wait ends, a kill or a timeout included. An item may
/// stop being ready again before the caller looks (an [`Event`] cleared, a
/// value taken by another party): [`wait_any`] then simply waits on.
///
/// From a plain OS thread (no hub), these functions block the OS thread; an
/// item set by another OS thread wakes the waiter in either case.
///
/// # Which ready item wins
///
/// [`wait_any`] returns the *lowest* index among the items ready when it
/// looks: a deterministic priority order, as gevent's `wait`. [`iwait`]
/// yields items in the order they became ready (items already ready when it
/// starts come first, in index order). [`select!`](crate::select) instead
/// picks uniformly at random among its ready arms, as Go does, so that no
/// always-ready source can starve another.
pub trait Waitable: Sealed {
    /// Whether the item is ready now (a [`JoinHandle`] has finished, an
    /// [`Event`] is set, an [`AsyncResult`] holds a value).
    fn is_ready(&self) -> bool;
}

/// A [`Waitable`] that [`select!`](crate::select) can take from: trying it
/// yields what the arm binds.
pub trait Selectable: Waitable {
    /// What the arm's pattern binds.
    type Output;

    /// Takes the item's output if it is ready (without waiting).
    fn try_select(&self) -> Option<Self::Output>;
}

impl<T> Sealed for JoinHandle<T> {
    fn watch(&self, waker: &Waker) -> WatchToken {
        WatchToken(Token::Handle(JoinHandle::watch(self, waker)))
    }

    fn unwatch(&self, token: WatchToken) {
        if let Token::Handle(key) = token.0 {
            JoinHandle::unwatch(self, key);
        }
    }
}

/// Ready when the green thread has finished.
impl<T> Waitable for JoinHandle<T> {
    fn is_ready(&self) -> bool {
        self.is_finished()
    }
}

/// Binds `()` once the green thread has finished (then `join` it).
impl<T> Selectable for JoinHandle<T> {
    type Output = ();

    fn try_select(&self) -> Option<()> {
        self.is_finished().then_some(())
    }
}

impl Sealed for Event {
    fn watch(&self, waker: &Waker) -> WatchToken {
        WatchToken(Token::Queue(Event::watch(self, waker)))
    }

    fn unwatch(&self, token: WatchToken) {
        if let Token::Queue(key) = token.0 {
            Event::unwatch(self, key);
        }
    }
}

/// Ready while set.
impl Waitable for Event {
    fn is_ready(&self) -> bool {
        self.is_set()
    }
}

/// Binds `()` while the event is set (it stays set).
impl Selectable for Event {
    type Output = ();

    fn try_select(&self) -> Option<()> {
        self.is_set().then_some(())
    }
}

impl<T> Sealed for AsyncResult<T> {
    fn watch(&self, waker: &Waker) -> WatchToken {
        WatchToken(Token::Queue(AsyncResult::watch(self, waker)))
    }

    fn unwatch(&self, token: WatchToken) {
        if let Token::Queue(key) = token.0 {
            AsyncResult::unwatch(self, key);
        }
    }
}

/// Ready while it holds a value.
impl<T> Waitable for AsyncResult<T> {
    fn is_ready(&self) -> bool {
        self.ready()
    }
}

/// Binds a clone of the value (which stays in place).
impl<T: Clone> Selectable for AsyncResult<T> {
    type Output = T;

    fn try_select(&self) -> Option<T> {
        self.try_get()
    }
}

/// [`Waitable`] and [`Selectable`] for the queue types: ready when a `get`
/// would not park.
macro_rules! readable {
    ($($Q:ident $(: $bound:path)?),*) => {$(
        impl<T $(: $bound)?> Sealed for $Q<T> {
            fn watch(&self, waker: &Waker) -> WatchToken {
                WatchToken(Token::Queue(self.watch_readable(waker)))
            }

            fn unwatch(&self, token: WatchToken) {
                if let Token::Queue(key) = token.0 {
                    $Q::unwatch(self, key);
                }
            }
        }

        /// Ready while a `get` would return at once: an item is there (for a
        /// [`Channel`]: a putter waits), or it is closed.
        impl<T $(: $bound)?> Waitable for $Q<T> {
            fn is_ready(&self) -> bool {
                self.is_readable()
            }
        }

        /// Takes an item with `try_get`: binds `Some(item)`, or `None` once
        /// it is closed and drained (Go's `v, ok := <-ch`).
        impl<T $(: $bound)?> Selectable for $Q<T> {
            type Output = Option<T>;

            fn try_select(&self) -> Option<Option<T>> {
                match self.try_get() {
                    Ok(item) => Some(Some(item)),
                    Err(TryGetError::Closed) => Some(None),
                    Err(TryGetError::Empty) => None,
                }
            }
        }
    )*};
}

readable!(Queue, LifoQueue, PriorityQueue: Ord, Channel);

/// Forwards [`Waitable`] and [`Selectable`] through a pointer type.
macro_rules! forward {
    ($($ptr:ty),*) => {$(
        impl<W: Waitable + ?Sized> Sealed for $ptr {
            fn watch(&self, waker: &Waker) -> WatchToken {
                (**self).watch(waker)
            }

            fn unwatch(&self, token: WatchToken) {
                (**self).unwatch(token)
            }
        }

        impl<W: Waitable + ?Sized> Waitable for $ptr {
            fn is_ready(&self) -> bool {
                (**self).is_ready()
            }
        }

        impl<W: Selectable + ?Sized> Selectable for $ptr {
            type Output = W::Output;

            fn try_select(&self) -> Option<W::Output> {
                (**self).try_select()
            }
        }
    )*};
}

forward!(&W, &mut W, Rc<W>, Arc<W>, Box<W>);

/// Parks until one of `items` is ready; returns its index (the lowest, if
/// several are). Returns at once if one is ready already.
///
/// # Panics
/// If `items` is empty (nothing could ever end the wait). Unwinds if the
/// green thread is killed or its `with_timeout` expires meanwhile.
#[track_caller]
pub fn wait_any(items: &[&dyn Waitable]) -> usize {
    assert!(
        !items.is_empty(),
        "greenhub: wait_any on no items would wait for ever"
    );
    wait_any_until(items, None).expect("a wait without deadline ends with an item")
}

/// Like [`wait_any`], giving up after `timeout` (then `None`). With no items,
/// it sleeps for `timeout`.
pub fn wait_any_timeout(items: &[&dyn Waitable], timeout: Duration) -> Option<usize> {
    wait_any_until(items, hub::deadline_after(timeout))
}

/// The first ready item's index, in the order given.
fn first_ready(items: &[&dyn Waitable]) -> Option<usize> {
    items.iter().position(|item| item.is_ready())
}

/// Parks until an item is ready or `deadline` passes.
fn wait_any_until(items: &[&dyn Waitable], deadline: Option<Instant>) -> Option<usize> {
    if let Some(i) = first_ready(items) {
        return Some(i);
    }
    let parker = Parker::current();
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let watches = Watches::new(items, &parker.waker);
        // A change after the watchers were in place wakes us: look again
        // before parking, or a readiness reached meanwhile would be missed.
        if let Some(i) = first_ready(items) {
            return Some(i);
        }
        parker.park(deadline);
        drop(watches);
        if let Some(i) = first_ready(items) {
            return Some(i);
        }
    }
}

/// One watcher per item, removed on drop (also when a kill unwinds).
struct Watches<'a> {
    items: &'a [&'a dyn Waitable],
    tokens: Vec<WatchToken>,
}

impl<'a> Watches<'a> {
    fn new(items: &'a [&'a dyn Waitable], waker: &Waker) -> Watches<'a> {
        let mut watches = Watches {
            items,
            tokens: Vec::with_capacity(items.len()),
        };
        for item in items {
            // Pushed one by one: if a watch panics, the drop removes the rest.
            watches.tokens.push(item.watch(waker));
        }
        watches
    }
}

impl Drop for Watches<'_> {
    fn drop(&mut self) {
        for (item, token) in self.items.iter().zip(self.tokens.drain(..)) {
            item.unwatch(token);
        }
    }
}

/// How the caller parks: as a green thread on its hub, or as a plain OS thread.
struct Parker {
    waker: Waker,
    green: bool,
}

impl Parker {
    fn current() -> Parker {
        match hub::current_waker() {
            Some(waker) => Parker { waker, green: true },
            None => Parker {
                waker: thread_waker(),
                green: false,
            },
        }
    }

    /// Parks once (may return spuriously).
    fn park(&self, deadline: Option<Instant>) {
        match (self.green, deadline) {
            (true, Some(d)) => hub::park_until(WAIT, d),
            (true, None) => hub::park(WAIT),
            (false, Some(d)) => {
                std::thread::park_timeout(d.saturating_duration_since(Instant::now()))
            }
            (false, None) => std::thread::park(),
        }
    }
}

/// Unparks a plain OS thread.
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

/// Yields the index of each item as it becomes ready, each once, in the order
/// they became ready (gevent's `iwait`); see [`Iwait`].
///
/// ```
/// use std::time::Duration;
/// use greenhub::sync::iwait;
///
/// greenhub::run(|| {
///     let ms = Duration::from_millis;
///     let a = greenhub::spawn(move || greenhub::sleep(ms(30)));
///     let b = greenhub::spawn(move || greenhub::sleep(ms(10)));
///     let c = greenhub::spawn(move || greenhub::sleep(ms(20)));
///     let order: Vec<usize> = iwait(&[&a, &b, &c]).collect();
///     assert_eq!(order, [1, 2, 0]);
/// })
/// .unwrap();
/// ```
///
/// The iterator keeps its own copy of the list, so it may outlive the slice
/// (`let mut ready = iwait(&[&a, &b]);` works), not the items.
pub fn iwait<'a>(items: &[&'a dyn Waitable]) -> Iwait<'a> {
    Iwait {
        items: items.to_vec(),
        states: (0..items.len()).map(|_| ItemState::Idle).collect(),
        wakers: vec![None; items.len()],
        fired: Arc::new(Fired::default()),
        found: VecDeque::new(),
        remaining: items.len(),
        started: false,
    }
}

/// Parks until every item has been ready (each at some moment, not
/// necessarily all at once).
pub fn wait_all(items: &[&dyn Waitable]) {
    iwait(items).for_each(drop);
}

/// Like [`wait_all`], giving up after `timeout`; returns whether every item
/// was ready in time.
pub fn wait_all_timeout(items: &[&dyn Waitable], timeout: Duration) -> bool {
    let deadline = hub::deadline_after(timeout);
    let mut waiting = iwait(items);
    loop {
        match waiting.next_until(deadline) {
            Next::Ready(_) => {}
            Next::Done => return true,
            Next::TimedOut => return false,
        }
    }
}

/// The iterator of [`iwait`].
///
/// While it lives, every item not yet yielded is watched, so the order of
/// readiness is recorded even while the caller does something else between
/// two `next`. An item that was ready but is no longer when its turn comes
/// (an [`Event`] cleared meanwhile) is watched again and yielded when it is
/// ready again. Dropping the iterator removes the watchers. `next` parks
/// (and unwinds if the green thread is killed meanwhile); with
/// [`with_timeout`](crate::with_timeout) or
/// [`next_timeout`](Iwait::next_timeout) it can be bounded.
pub struct Iwait<'a> {
    items: Vec<&'a dyn Waitable>,
    states: Vec<ItemState>,
    /// One waker per item, made on its first watch: it records the item's
    /// index in `fired` and wakes the iterating green thread.
    wakers: Vec<Option<Waker>>,
    fired: Arc<Fired>,
    /// Items found ready while being watched, in index order.
    found: VecDeque<usize>,
    remaining: usize,
    started: bool,
}

enum ItemState {
    Idle,
    Watching(WatchToken),
    Yielded,
}

/// The indices whose watcher fired, in firing order, and whom to wake.
#[derive(Default)]
struct Fired {
    inner: Mutex<FiredInner>,
}

#[derive(Default)]
struct FiredInner {
    indices: VecDeque<usize>,
    parent: Option<Waker>,
}

impl Fired {
    fn lock(&self) -> std::sync::MutexGuard<'_, FiredInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The waker of one item of an [`Iwait`].
struct ItemWaker {
    index: usize,
    fired: Arc<Fired>,
}

impl Wake for ItemWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let parent = {
            let mut fired = self.fired.lock();
            fired.indices.push_back(self.index);
            fired.parent.clone()
        };
        if let Some(parent) = parent {
            parent.wake();
        }
    }
}

enum Next {
    Ready(usize),
    Done,
    TimedOut,
}

impl Iwait<'_> {
    /// How many items have not been yielded yet.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Like `next`, giving up after `timeout`: `None` if the time ran out or
    /// every item has been yielded (tell them apart with
    /// [`remaining`](Iwait::remaining)).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<usize> {
        match self.next_until(hub::deadline_after(timeout)) {
            Next::Ready(i) => Some(i),
            Next::Done | Next::TimedOut => None,
        }
    }

    /// Watches item `i`; queues it in `found` if it is ready already.
    fn arm(&mut self, i: usize) {
        if let ItemState::Watching(token) = std::mem::replace(&mut self.states[i], ItemState::Idle)
        {
            self.items[i].unwatch(token);
        }
        let fired = &self.fired;
        let waker = self.wakers[i].get_or_insert_with(|| {
            Waker::from(Arc::new(ItemWaker {
                index: i,
                fired: fired.clone(),
            }))
        });
        let token = self.items[i].watch(waker);
        self.states[i] = ItemState::Watching(token);
        if self.items[i].is_ready() {
            self.found.push_back(i);
        }
    }

    /// The next item to look at: found by arming first, then fired.
    fn candidate(&mut self) -> Option<usize> {
        self.found
            .pop_front()
            .or_else(|| self.fired.lock().indices.pop_front())
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Next {
        if self.remaining == 0 {
            return Next::Done;
        }
        if !self.started {
            self.started = true;
            for i in 0..self.items.len() {
                self.arm(i);
            }
        }
        let mut parker: Option<Parker> = None;
        loop {
            while let Some(i) = self.candidate() {
                if matches!(self.states[i], ItemState::Yielded) {
                    continue; // found and fired both: yielded once already
                }
                if self.items[i].is_ready() {
                    if let ItemState::Watching(token) =
                        std::mem::replace(&mut self.states[i], ItemState::Yielded)
                    {
                        self.items[i].unwatch(token);
                    }
                    self.remaining -= 1;
                    return Next::Ready(i);
                }
                // Woken, but not ready (any more): watch it again.
                self.arm(i);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Next::TimedOut;
            }
            let parker = parker.get_or_insert_with(Parker::current);
            {
                let mut fired = self.fired.lock();
                fired.parent = Some(parker.waker.clone());
                if !fired.indices.is_empty() {
                    continue;
                }
            }
            parker.park(deadline);
        }
    }
}

impl Iterator for Iwait<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self.next_until(None) {
            Next::Ready(i) => Some(i),
            Next::Done => None,
            Next::TimedOut => unreachable!("no deadline"),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl Drop for Iwait<'_> {
    fn drop(&mut self) {
        self.fired.lock().parent = None;
        for (item, state) in self.items.iter().zip(self.states.iter_mut()) {
            if let ItemState::Watching(token) = std::mem::replace(state, ItemState::Idle) {
                item.unwatch(token);
            }
        }
    }
}

impl std::fmt::Debug for Iwait<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iwait")
            .field("items", &self.items.len())
            .field("remaining", &self.remaining)
            .finish()
    }
}

/// Waits for the first ready arm among several [`Selectable`] sources and
/// runs it: the receiving half of Go's `select`.
///
/// ```
/// use std::time::Duration;
/// use greenhub::sync::{AsyncResult, Event};
///
/// greenhub::run(|| {
///     let stop = Event::new();
///     let answer = AsyncResult::new();
///     answer.set(42);
///     let got = greenhub::select! {
///         () = stop => None,
///         n = answer => Some(n),
///         timeout(Duration::from_millis(100)) => None,
///     };
///     assert_eq!(got, Some(42));
/// })
/// .unwrap();
/// ```
///
/// # Syntax
///
/// ```text
/// select! {
///     pattern = source => body,    // one or more
///     timeout(duration) => body,   // optional, last: if nothing is ready in time
///     default => body,             // optional, last: if nothing is ready now
/// }
/// ```
///
/// Each `source` is evaluated once, before waiting, and borrowed; it is any
/// [`Selectable`] (a reference, `Rc`, `Arc` or `Box` of one too). When one
/// or more arms are ready, one of them is picked **uniformly at random**
/// (as in Go: an always-ready source cannot starve the others), its output
/// (see [`Selectable::Output`]: `()` for an [`Event`] or a [`JoinHandle`], a
/// clone of the value for an [`AsyncResult`], `Some(item)` taken from a
/// queue or channel, or `None` once it is closed and drained) is bound to its irrefutable
/// `pattern`, and its `body` runs; the `select!` is an expression whose
/// value is the body's. Bodies run outside any loop of the macro, so
/// `return`, `?`, `break` and `continue` act on the surrounding code.
///
/// If no arm is ready, the caller waits (as [`wait_any`] does) and tries
/// again; a source that another party drained first simply makes it wait
/// on. Without a `timeout` or `default` arm it waits for ever (a kill or an
/// enclosing `with_timeout` still ends the wait by unwinding).
#[macro_export]
macro_rules! select {
    // The last arm: `timeout(d) => body` or `default => body`, or nothing.
    (@parse [$($done:tt)*] ($($n:tt)*) timeout($d:expr) => $b:expr $(,)?) => {
        $crate::select!(@go [$($done)*] (timeout $d) $b)
    };
    (@parse [$($done:tt)*] ($($n:tt)*) default => $b:expr $(,)?) => {
        $crate::select!(@go [$($done)*] (default) $b)
    };
    (@parse [$($done:tt)*] ($($n:tt)*)) => {
        $crate::select!(@go [$($done)*] (forever) {})
    };
    // `pattern = source => body`. Each step names its arm's source and
    // output slot with identifiers of its own expansion, so they stay apart.
    (@parse [$($done:tt)*] ($($n:tt)*) $p:pat = $e:expr => $b:block , $($rest:tt)*) => {
        $crate::select!(@parse [$($done)* {$p, $e, $b, ($($n)*), __source, __slot}]
            ($($n)* + 1) $($rest)*)
    };
    (@parse [$($done:tt)*] ($($n:tt)*) $p:pat = $e:expr => $b:block $($rest:tt)*) => {
        $crate::select!(@parse [$($done)* {$p, $e, $b, ($($n)*), __source, __slot}]
            ($($n)* + 1) $($rest)*)
    };
    (@parse [$($done:tt)*] ($($n:tt)*) $p:pat = $e:expr => $b:expr , $($rest:tt)*) => {
        $crate::select!(@parse [$($done)* {$p, $e, $b, ($($n)*), __source, __slot}]
            ($($n)* + 1) $($rest)*)
    };
    (@parse [$($done:tt)*] ($($n:tt)*) $p:pat = $e:expr => $b:expr) => {
        $crate::select!(@parse [$($done)* {$p, $e, $b, ($($n)*), __source, __slot}]
            ($($n)* + 1))
    };

    (@go [$({$p:tt, $e:tt, $b:tt, $n:tt, $source:ident, $slot:ident})*] ($kind:ident $($d:tt)?) $last:tt) => {{
        $( let $source = &$e; let mut $slot = ::core::option::Option::None; )*
        let __deadline = $crate::select!(@deadline $kind $($d)?);
        let mut __order = [$($n as usize),*];
        let __fell_through: bool = loop {
            $crate::sync::__select_shuffle(&mut __order);
            let mut __won = false;
            for &__arm in &__order {
                $(
                    if !__won && __arm == $n {
                        if let ::core::option::Option::Some(__v) =
                            $crate::sync::Selectable::try_select($source)
                        {
                            $slot = ::core::option::Option::Some(__v);
                            __won = true;
                        }
                    }
                )*
                if __won {
                    break;
                }
            }
            if __won {
                break false;
            }
            if $crate::select!(@is_default $kind) {
                break true;
            }
            if !$crate::sync::__select_wait(&[$($source as &dyn $crate::sync::Waitable),*], __deadline) {
                break true;
            }
        };
        $(
            if let ::core::option::Option::Some(__v) = $slot {
                let $p = __v;
                $b
            } else
        )* {
            let _ = __fell_through;
            $crate::select!(@fallback $kind $last)
        }
    }};

    (@deadline timeout $d:tt) => { $crate::sync::__select_deadline($d) };
    (@deadline $kind:ident) => { ::core::option::Option::None };
    (@is_default default) => { true };
    (@is_default $kind:ident) => { false };
    (@fallback forever $last:tt) => { ::core::unreachable!("select! ended without an arm") };
    (@fallback $kind:ident $last:tt) => { $last };

    // The entry point (last: the internal rules above start with `@`).
    ($($arms:tt)+) => {
        $crate::select!(@parse [] (0) $($arms)+)
    };
}

/// For [`select!`](crate::select): the deadline `timeout` from now.
#[doc(hidden)]
pub fn __select_deadline(timeout: Duration) -> Option<Instant> {
    hub::deadline_after(timeout)
}

/// For [`select!`](crate::select): parks until an item may be ready (true) or
/// the deadline passed (false).
#[doc(hidden)]
#[track_caller]
pub fn __select_wait(items: &[&dyn Waitable], deadline: Option<Instant>) -> bool {
    if items.is_empty() && deadline.is_none() {
        panic!("greenhub: select! with no arms and no timeout would wait for ever");
    }
    wait_any_until(items, deadline).is_some()
}

/// For [`select!`](crate::select): shuffles the arms' order (Fisher–Yates
/// with a per-thread xorshift generator seeded from std's random hasher
/// keys).
#[doc(hidden)]
pub fn __select_shuffle(order: &mut [usize]) {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().build_hasher().finish() | 1);
    }
    if order.len() < 2 {
        return;
    }
    STATE.with(|state| {
        let mut x = state.get();
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let j = ((x >> 32) * (i as u64 + 1)) >> 32;
            order.swap(i, j as usize);
        }
        state.set(x);
    });
}
