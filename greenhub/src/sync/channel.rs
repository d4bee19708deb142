//! [`Channel`]: a rendezvous between a putter and a getter. A queue of
//! capacity 0 on the engine of `Queue` (see queue.rs): items pass from a
//! blocked putter's entry to the getter, or are handed to a waiting getter.

use std::fmt;
use std::task::Waker;
use std::time::Duration;

use super::queue::{
    Closed, Core, Fifo, GetError, GetTimeoutError, Iter, Mode, PutError, PutTimeoutError,
    TryGetError, TryPutError, Waits,
};
use super::wait_queue::WatchKey;
use crate::hub::Wait;

const CHANNEL: Waits = Waits {
    get: Wait::shared(&"Channel::get"),
    put: Wait::shared(&"Channel::put"),
    join: Wait::shared(&"Channel::join"),
};

/// A rendezvous channel (gevent's `Channel`, Go's unbuffered `chan`): each
/// item passes from a putter to a getter, with no buffer between. A `put`
/// parks until a getter takes its item, a `get` parks until a putter offers
/// one; waiters on both sides are served first come, first served, and
/// `close` works as for [`Queue`](super::Queue).
///
/// "Takes" means *is handed*: a `put` that finds a getter waiting hands it
/// the item and returns at once, before the getter has run. Should that
/// getter be killed (or time out) before it runs, the item passes to the
/// next waiting getter or, if none waits, is kept for the next `get` — the
/// one case where a channel holds an item with no putter waiting. Nothing is
/// lost.
///
/// `Send + Sync` when `T: Send`: green threads of any hub and plain OS
/// threads may share it; blocking calls park a green thread or block a
/// plain OS thread, and honour `kill` and `with_timeout`.
///
/// ```
/// use std::rc::Rc;
/// use greenhub::sync::Channel;
///
/// greenhub::run(|| {
///     let chan = Rc::new(Channel::new());
///     let c = chan.clone();
///     let getter = greenhub::spawn(move || c.get().unwrap());
///     // Nobody waits yet: a try_put fails and hands the item back.
///     assert_eq!(chan.try_put("early").unwrap_err().into_inner(), "early");
///     chan.put("hello").unwrap(); // parks until the getter takes it
///     assert_eq!(getter.join().unwrap(), "hello");
/// })
/// .unwrap();
/// ```
pub struct Channel<T> {
    core: Core<T, Fifo<T>>,
}

impl<T> Channel<T> {
    /// A new, open channel.
    pub fn new() -> Self {
        Channel {
            core: Core::new(0, &CHANNEL),
        }
    }

    /// Offers `item` and parks until a getter takes it (returns at once if a
    /// getter waits). Putters go in the order they came.
    ///
    /// # Errors
    /// [`Closed`] with the item if the channel is closed, or closes while
    /// this waits.
    pub fn put(&self, item: T) -> Result<(), Closed<T>> {
        self.core
            .put(item, Mode::Until(None))
            .map_err(|e| Closed(put_item(e)))
    }

    /// Hands `item` to a getter, if one waits.
    ///
    /// # Errors
    /// [`TryPutError::Full`] if no getter waits, or [`TryPutError::Closed`];
    /// with the item.
    pub fn try_put(&self, item: T) -> Result<(), TryPutError<T>> {
        self.core.put(item, Mode::Try).map_err(|e| match e {
            PutError::Closed(item) => TryPutError::Closed(item),
            e => TryPutError::Full(put_item(e)),
        })
    }

    /// Like [`put`](Self::put), giving up after `timeout`.
    ///
    /// # Errors
    /// [`PutTimeoutError::Timeout`] if no getter took the item in time, or
    /// [`PutTimeoutError::Closed`]; with the item.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutTimeoutError<T>> {
        self.core
            .put(item, Mode::timeout(timeout))
            .map_err(|e| match e {
                PutError::Closed(item) => PutTimeoutError::Closed(item),
                e => PutTimeoutError::Timeout(put_item(e)),
            })
    }

    /// Parks until a putter offers an item, and takes it (at once if a
    /// putter waits).
    ///
    /// # Errors
    /// [`Closed`] once the channel is closed (and any item a departed
    /// getter left behind is taken).
    pub fn get(&self) -> Result<T, Closed> {
        self.core.get(Mode::Until(None)).map_err(|_| Closed(()))
    }

    /// Takes an item from a waiting putter, if there is one.
    ///
    /// # Errors
    /// [`TryGetError::Empty`] if no putter waits, or [`TryGetError::Closed`].
    pub fn try_get(&self) -> Result<T, TryGetError> {
        self.core.get(Mode::Try).map_err(|e| match e {
            GetError::Closed => TryGetError::Closed,
            GetError::Empty | GetError::Timeout => TryGetError::Empty,
        })
    }

    /// Like [`get`](Self::get), giving up after `timeout`.
    ///
    /// # Errors
    /// [`GetTimeoutError::Timeout`] or [`GetTimeoutError::Closed`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        self.core.get(Mode::timeout(timeout)).map_err(|e| match e {
            GetError::Closed => GetTimeoutError::Closed,
            GetError::Empty | GetError::Timeout => GetTimeoutError::Timeout,
        })
    }

    /// Closes the channel: later puts fail, blocked putters get their items
    /// back, blocked and later getters get [`Closed`]. Closing again does
    /// nothing.
    pub fn close(&self) {
        self.core.close()
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// Whether a `get` would return at once: a putter waits, or the channel
    /// is closed.
    pub fn is_readable(&self) -> bool {
        self.core.is_readable()
    }

    /// Takes items with a blocking [`get`](Self::get) until the channel is
    /// closed.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter::new(&self.core)
    }

    /// Tells `waker` about the next change that may make the channel
    /// readable (for `wait_any`).
    pub(crate) fn watch_readable(&self, waker: &Waker) -> WatchKey {
        self.core.watch_readable(waker)
    }

    /// Forgets a watcher registered by `watch_readable`.
    pub(crate) fn unwatch(&self, key: WatchKey) {
        self.core.unwatch(key)
    }
}

fn put_item<T>(e: PutError<T>) -> T {
    match e {
        PutError::Full(item) | PutError::Timeout(item) | PutError::Closed(item) => item,
    }
}

impl<T> Default for Channel<T> {
    fn default() -> Self {
        Channel::new()
    }
}

impl<'a, T> IntoIterator for &'a Channel<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}
