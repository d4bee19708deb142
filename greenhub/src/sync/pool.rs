//! [`Pool`]: a [`Group`] that runs at most `size` members at a time
//! (gevent's `Pool`). The docs are on [`Pool`].

use std::fmt;
use std::ops::Deref;
use std::time::{Duration, Instant};

use super::group::{Group, Slot, Slots};
use crate::hub::{self, Wait};
use crate::JoinHandle;

/// A [`Group`] that runs at most `size` members at a time (gevent's `Pool`).
///
/// ```
/// use std::{cell::Cell, rc::Rc, time::Duration};
/// use greenhub::sync::Pool;
///
/// greenhub::run(|| {
///     let pool = Pool::new(2);
///     let (running, most) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
///     for _ in 0..6 {
///         let (running, most) = (running.clone(), most.clone());
///         // Parks while two members run.
///         pool.spawn(move || {
///             running.set(running.get() + 1);
///             most.set(most.get().max(running.get()));
///             greenhub::sleep(Duration::from_millis(5));
///             running.set(running.get() - 1);
///         });
///     }
///     pool.join();
///     assert_eq!(most.get(), 2);
///
///     // At most two items in flight; results in item order.
///     let lengths: Vec<usize> = pool.imap(["a", "bb", "ccc"], |s| s.len()).collect();
///     assert_eq!(lengths, [1, 2, 3]);
/// })
/// .unwrap();
/// ```
///
/// A pool is a group: it dereferences to [`Group`], whose methods all
/// respect the bound — [`spawn`](Group::spawn) and [`add`](Group::add) park
/// while the pool is full, and are served first come, first served (a slot
/// freed by a finishing member goes straight to the longest waiter, so a
/// stream of newcomers cannot starve it); [`map`](Group::map),
/// [`imap`](Group::imap), [`imap_unordered`](Group::imap_unordered) run at
/// most `size` items at a time. A member's slot is free again as soon as it
/// finishes (or is [discarded](Group::discard)).
pub struct Pool {
    group: Group,
}

const AVAILABLE: Wait = Wait::local(&"Pool::wait_available");

impl Pool {
    /// A pool that runs at most `size` members at a time.
    ///
    /// # Panics
    /// If `size` is 0 (nothing could ever run).
    pub fn new(size: usize) -> Pool {
        assert!(size > 0, "greenhub: a Pool needs a size of at least 1");
        Pool {
            group: Group::with_slots(Some(Slots::new(size))),
        }
    }

    fn slots(&self) -> &Slots {
        self.group
            .inner
            .slots
            .as_ref()
            .expect("a pool's group has slots")
    }

    /// The most members that run at a time.
    pub fn size(&self) -> usize {
        self.slots().size
    }

    /// How many more members could be spawned now without parking.
    pub fn free_count(&self) -> usize {
        self.slots().free.lock().state
    }

    /// Whether a [`spawn`](Group::spawn) would park now.
    pub fn is_full(&self) -> bool {
        self.free_count() == 0
    }

    /// Spawns `f` as a member if a slot is free now; hands `f` back if the
    /// pool is full.
    ///
    /// # Panics
    /// As [`crate::spawn`].
    #[track_caller]
    pub fn try_spawn<F, T>(&self, f: F) -> Result<JoinHandle<T>, F>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        if !self.slots().try_take() {
            return Err(f);
        }
        Ok(self.group.spawn_in(Slot(Some(self.slots())), f))
    }

    /// Parks until a spawn would not park (gevent's `wait_available`):
    /// returns at once if the pool has a free slot.
    ///
    /// # Panics
    /// Outside a green thread. Unwinds if the caller is killed meanwhile.
    #[track_caller]
    pub fn wait_available(&self) {
        self.wait_available_until(None);
    }

    /// Like [`wait_available`](Pool::wait_available), giving up after
    /// `timeout`; returns whether a slot was free in time.
    #[track_caller]
    pub fn wait_available_timeout(&self, timeout: Duration) -> bool {
        self.wait_available_until(hub::deadline_after(timeout))
    }

    #[track_caller]
    fn wait_available_until(&self, deadline: Option<Instant>) -> bool {
        if !self.is_full() {
            return true;
        }
        let waker = hub::current_waker().unwrap_or_else(|| {
            panic!("greenhub: Pool::wait_available called outside a green thread")
        });
        let free = &self.slots().free;
        loop {
            let key = {
                let mut locked = free.lock();
                if locked.state > 0 {
                    return true;
                }
                locked.watch(&waker)
            };
            // Unwatch however the park ends (a kill unwinds out of it).
            struct Unwatch<'a>(&'a Slots, super::wait_queue::WatchKey);
            impl Drop for Unwatch<'_> {
                fn drop(&mut self) {
                    self.0.free.lock().unwatch(self.1);
                }
            }
            let _unwatch = Unwatch(self.slots(), key);
            match deadline {
                Some(d) if Instant::now() >= d => return false,
                Some(d) => hub::park_until(AVAILABLE, d),
                None => hub::park(AVAILABLE),
            }
        }
    }
}

/// A pool is a [`Group`] whose methods respect its bound.
impl Deref for Pool {
    type Target = Group;

    fn deref(&self) -> &Group {
        &self.group
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.size())
            .field("len", &self.len())
            .field("free", &self.free_count())
            .finish()
    }
}
