//! [`Group`]: a set of green threads to wait for, kill, and map work over
//! (gevent's `Group`), and its `imap` iterators. The docs are on [`Group`].

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::panic::resume_unwind;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use slab::Slab;

use super::wait_queue::{Locked, WaitQueue};
use crate::hub::{self, Wait};
use crate::task::{self, GreenThread};
use crate::{GreenId, JoinError, JoinHandle};

/// A set of green threads to wait for, kill, and map work over (gevent's
/// `Group`); a [`Pool`](super::Pool) is a group with a bound.
///
/// ```
/// use std::time::Duration;
/// use greenhub::sync::Group;
///
/// greenhub::run(|| {
///     let group = Group::new();
///     for i in 0..3u64 {
///         group.spawn(move || greenhub::sleep(Duration::from_millis(10 * i)));
///     }
///     assert_eq!(group.len(), 3);
///     group.join(); // all three have finished
///     assert!(group.is_empty());
///
///     // Results in input order, whatever order the work finishes in.
///     let squares = group.map(1..=4u64, |n| {
///         greenhub::sleep(Duration::from_millis(40 - 10 * n));
///         n * n
///     });
///     assert_eq!(squares, [1, 4, 9, 16]);
/// })
/// .unwrap();
/// ```
///
/// # Membership
///
/// A group tracks its members by id; the [`JoinHandle`] of each stays with
/// whoever spawned it (so members may return different types, and `join`
/// keeps its single owner). A member leaves the group by itself when it
/// finishes — returns, panics or is killed — through a link
/// ([`JoinHandle::link`]) that runs at its end. A group is a handle on its
/// own hub's green threads: it is neither `Send` nor `Clone` (share it with
/// `Rc<Group>` to spawn into it from its members). Dropping it does nothing
/// to the members: they run on.
///
/// # Waiting on the group from a member
///
/// [`join`](Group::join) and [`kill`](Group::kill) called by a member wait for
/// (and kill) the *other* members only: a green thread cannot wait for its
/// own end.
///
/// # Mapping
///
/// [`map`](Group::map), [`imap`](Group::imap),
/// [`imap_unordered`](Group::imap_unordered) and [`apply`](Group::apply) run
/// each call of `f` in a new member. A panic in `f` resumes in the caller (the
/// remaining work is killed); work that was killed by someone else (say
/// [`Group::kill`]) makes the caller panic, since its value is lost. If the
/// caller unwinds (it is killed, or its `with_timeout` expires), or drops an
/// `imap` iterator early, the work still in flight is killed. In a plain
/// group everything runs at once; a [`Pool`](super::Pool) bounds how much
/// runs at a time.
pub struct Group {
    pub(super) inner: Rc<Inner>,
}

pub(super) struct Inner {
    members: WaitQueue<Members>,
    /// A pool's free slots; `None` for a plain group.
    pub(super) slots: Option<Slots>,
}

#[derive(Default)]
struct Members {
    /// By green thread id: iteration (kill) goes in spawn order.
    map: BTreeMap<u64, Member>,
    /// Tells a member's entry from a later one of the same green thread
    /// (after `discard` and `add`): only the current entry's link removes it.
    next_token: u64,
    /// How many `kill`s are under way: a member added meanwhile is killed too.
    killing: usize,
}

struct Member {
    token: u64,
    thread: GreenThread,
    /// Whether it holds one of a pool's slots (given back when it leaves).
    holds_slot: bool,
}

impl Members {
    /// Whether no member is left but (possibly) `me`.
    fn only(&self, me: Option<u64>) -> bool {
        match self.map.len() {
            0 => true,
            1 => me.is_some_and(|me| self.map.contains_key(&me)),
            _ => false,
        }
    }
}

const JOIN: Wait = Wait::local(&"Group::join");
const KILL: Wait = Wait::local(&"Group::kill");

impl Group {
    /// An empty group.
    pub fn new() -> Group {
        Group::with_slots(None)
    }

    pub(super) fn with_slots(slots: Option<Slots>) -> Group {
        Group {
            inner: Rc::new(Inner {
                members: WaitQueue::new(Members::default()),
                slots,
            }),
        }
    }

    /// Spawns `f` in a new green thread that is a member until it finishes;
    /// returns its handle. In a [`Pool`](super::Pool), first parks while the
    /// pool is full (waiters are served first come, first served).
    ///
    /// # Panics
    /// As [`crate::spawn`].
    #[track_caller]
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let slot = self.inner.take_slot();
        self.spawn_in(slot, f)
    }

    /// Spawns a member that holds `slot` (given back if the spawn panics).
    #[track_caller]
    pub(super) fn spawn_in<F, T>(&self, slot: Slot<'_>, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let handle = crate::spawn(f);
        self.inner.track(&handle, slot.keep());
        handle
    }

    /// Makes a green thread spawned elsewhere (say with
    /// [`Builder`](crate::Builder)) a member until it finishes. Does nothing
    /// if it has finished or is a member already. In a pool, parks while the
    /// pool is full (the green thread may start meanwhile).
    pub fn add<T: 'static>(&self, handle: &JoinHandle<T>) {
        if handle.is_finished() || self.contains(handle.id()) {
            return;
        }
        let slot = self.inner.take_slot();
        if handle.is_finished() || self.contains(handle.id()) {
            return; // `slot` goes back
        }
        self.inner.track(handle, slot.keep());
    }

    /// Removes a member (it runs on, outside the group); in a pool, its slot
    /// is free at once. Returns whether it was a member.
    pub fn discard(&self, id: GreenId) -> bool {
        let member = self.inner.members.lock().state.map.remove(&id.as_u64());
        match member {
            Some(member) => {
                self.inner.left(member);
                true
            }
            None => false,
        }
    }

    /// Whether the green thread `id` is a member.
    pub fn contains(&self, id: GreenId) -> bool {
        self.inner
            .members
            .lock()
            .state
            .map
            .contains_key(&id.as_u64())
    }

    /// How many members there are (green threads spawned or added that have
    /// not finished).
    pub fn len(&self) -> usize {
        self.inner.members.lock().state.map.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parks until every member has finished (from a member: every other
    /// member). Members added meanwhile are waited for too.
    ///
    /// # Panics
    /// Outside a green thread. Unwinds if the caller is killed meanwhile.
    #[track_caller]
    pub fn join(&self) {
        self.inner.wait_only_me(JOIN, None);
    }

    /// Like [`join`](Group::join), giving up after `timeout`; returns whether
    /// the group emptied in time.
    #[track_caller]
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.inner.wait_only_me(JOIN, hub::deadline_after(timeout))
    }

    /// Kills every member (from a member: every other member) and parks until
    /// they have finished; their destructors run and their `join` returns
    /// [`JoinError::Killed`]. A green thread added while the kill is under
    /// way is killed too.
    ///
    /// # Panics
    /// Outside a green thread.
    #[track_caller]
    pub fn kill(&self) {
        self.kill_until(None);
    }

    /// Like [`kill`](Group::kill), giving up the wait after `timeout` (the
    /// members stay marked as killed); returns whether all finished in time.
    #[track_caller]
    pub fn kill_timeout(&self, timeout: Duration) -> bool {
        self.kill_until(hub::deadline_after(timeout))
    }

    fn kill_until(&self, deadline: Option<Instant>) -> bool {
        let me = task::current_id();
        let targets: Vec<GreenThread> = {
            let mut locked = self.inner.members.lock();
            locked.state.killing += 1;
            locked
                .state
                .map
                .iter()
                .filter(|(id, _)| Some(**id) != me)
                .map(|(_, member)| member.thread.clone())
                .collect()
        };
        struct Killing<'a>(&'a Inner);
        impl Drop for Killing<'_> {
            fn drop(&mut self) {
                self.0.members.lock().state.killing -= 1;
            }
        }
        let _killing = Killing(&self.inner);
        for target in targets {
            target.kill();
        }
        self.inner.wait_only_me(KILL, deadline)
    }

    /// Runs `f` in a new member and parks until it returns; returns its value
    /// (gevent's `apply`). Called by a member of this group, runs `f` right
    /// away in the caller instead (in a full pool, waiting for a slot held by
    /// the caller itself would never end).
    ///
    /// # Panics
    /// Resumes `f`'s panic; panics if the member is killed by someone else.
    #[track_caller]
    pub fn apply<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + 'static,
        R: 'static,
    {
        if task::current_id()
            .is_some_and(|me| self.inner.members.lock().state.map.contains_key(&me))
        {
            return f();
        }
        let mut batch = Batch(VecDeque::from([self.spawn(f)]));
        batch.join_front().expect("one member")
    }

    /// Runs `f` on every item, each in a new member, and returns the results
    /// in the order of the items, whatever order they finish in. A group runs
    /// them all at once; a pool at most its size at a time.
    ///
    /// # Panics
    /// Resumes the first panic of `f` (in item order), after killing the rest.
    #[track_caller]
    pub fn map<I, F, R>(&self, items: I, f: F) -> Vec<R>
    where
        I: IntoIterator,
        I::Item: 'static,
        F: Fn(I::Item) -> R + 'static,
        R: 'static,
    {
        self.imap_with(items, f, usize::MAX).collect()
    }

    /// Like [`map`](Group::map), but yields the results as an iterator, in
    /// item order, as soon as each is available in turn.
    ///
    /// The iterator takes items lazily: on each `next`, it tops up the work in
    /// flight (items taken but not yet yielded) to a bound and waits for the
    /// oldest. The bound is the pool's size for a [`Pool`](super::Pool), which
    /// also bounds memory: a slow item holds back the start of later ones
    /// beyond the bound. For a plain group there is no bound: the first
    /// `next` spawns every item, so the items must be finite (use a pool for
    /// an endless stream). Dropping the iterator kills the work in flight.
    pub fn imap<'a, I, F, R>(&'a self, items: I, f: F) -> Imap<'a, R>
    where
        I: IntoIterator,
        I::IntoIter: 'a,
        I::Item: 'static,
        F: Fn(I::Item) -> R + 'static,
        R: 'static,
    {
        let bound = self.inner.slots.as_ref().map_or(usize::MAX, |s| s.size);
        self.imap_with(items, f, bound)
    }

    fn imap_with<'a, I, F, R>(&'a self, items: I, f: F, bound: usize) -> Imap<'a, R>
    where
        I: IntoIterator,
        I::IntoIter: 'a,
        I::Item: 'static,
        F: Fn(I::Item) -> R + 'static,
        R: 'static,
    {
        Imap {
            next_member: self.spawner(items, f),
            batch: Batch(VecDeque::new()),
            bound: bound.max(1),
            exhausted: false,
        }
    }

    /// Like [`imap`](Group::imap), but yields each result as soon as its work
    /// finishes, in finishing order. At most the pool's size are in flight
    /// for a [`Pool`](super::Pool); every item at once for a plain group (so
    /// the items must be finite). Dropping the iterator kills the work in
    /// flight.
    pub fn imap_unordered<'a, I, F, R>(&'a self, items: I, f: F) -> ImapUnordered<'a, R>
    where
        I: IntoIterator,
        I::IntoIter: 'a,
        I::Item: 'static,
        F: Fn(I::Item) -> R + 'static,
        R: 'static,
    {
        let bound = self.inner.slots.as_ref().map_or(usize::MAX, |s| s.size);
        ImapUnordered {
            next_member: self.spawner(items, f),
            in_flight: Slab::new(),
            finished: Rc::new(WaitQueue::new(VecDeque::new())),
            bound: bound.max(1),
            exhausted: false,
        }
    }

    /// A closure that spawns `f` on the next item as a member.
    fn spawner<'a, I, F, R>(&'a self, items: I, f: F) -> NextMember<'a, R>
    where
        I: IntoIterator,
        I::IntoIter: 'a,
        I::Item: 'static,
        F: Fn(I::Item) -> R + 'static,
        R: 'static,
    {
        let f = Rc::new(f);
        let mut items = items.into_iter();
        Box::new(move || {
            let item = items.next()?;
            let f = f.clone();
            Some(self.spawn(move || f(item)))
        })
    }
}

/// A slot of a pool taken by the holder (or none, in a plain group), given
/// back on drop unless kept.
pub(super) struct Slot<'a>(pub(super) Option<&'a Slots>);

impl Slot<'_> {
    /// Keeps the slot (for a member); returns whether there was one.
    fn keep(mut self) -> bool {
        self.0.take().is_some()
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(slots) = self.0 {
            slots.give_back();
        }
    }
}

impl Inner {
    /// A pool's slot (parking while none is free), or none for a group.
    fn take_slot(&self) -> Slot<'_> {
        match &self.slots {
            Some(slots) => {
                slots.take(None);
                Slot(Some(slots))
            }
            None => Slot(None),
        }
    }

    /// Records a member and links its leaving.
    fn track<T: 'static>(self: &Rc<Self>, handle: &JoinHandle<T>, holds_slot: bool) {
        let id = handle.id().as_u64();
        let (token, kill) = {
            let mut locked = self.members.lock();
            let members = &mut locked.state;
            let token = members.next_token;
            members.next_token += 1;
            let member = Member {
                token,
                thread: handle.thread(),
                holds_slot,
            };
            // Callers checked that it is not a member yet.
            members.map.insert(id, member);
            (token, members.killing > 0)
        };
        let inner: Weak<Inner> = Rc::downgrade(self);
        handle.link(move |_| {
            if let Some(inner) = inner.upgrade() {
                inner.leave(id, token);
            }
        });
        if kill {
            handle.kill();
        }
    }

    /// A member's link: removes its entry if it is still the current one.
    fn leave(&self, id: u64, token: u64) {
        let member = {
            let mut locked = self.members.lock();
            match locked.state.map.get(&id) {
                Some(member) if member.token == token => locked.state.map.remove(&id),
                _ => None,
            }
        };
        if let Some(member) = member {
            self.left(member);
        }
    }

    /// After a member's entry was removed: gives back its slot, wakes those
    /// who wait for the group to empty.
    fn left(&self, member: Member) {
        if member.holds_slot {
            if let Some(slots) = &self.slots {
                slots.give_back();
            }
        }
        let mut locked = self.members.lock();
        // Waiters wait for "empty but for me": at most one member left.
        if locked.state.map.len() <= 1 {
            locked.notify_all();
        }
    }

    /// Parks until no member is left but the caller; false on timeout.
    fn wait_only_me(&self, wait: Wait, deadline: Option<Instant>) -> bool {
        let me = task::current_id();
        self.members
            .wait(
                wait,
                deadline,
                |members, _| members.only(me).then_some(()),
                |_, ()| {},
            )
            .is_some()
    }
}

/// A pool's free slots: a FIFO-fair counting semaphore with hand-off (a
/// slot given back goes straight to the first waiter, so no newcomer can
/// take it first; hence `free > 0` only while nobody waits).
pub(super) struct Slots {
    pub(super) size: usize,
    pub(super) free: WaitQueue<usize>,
}

const SPAWN: Wait = Wait::local(&"Pool::spawn");

impl Slots {
    pub(super) fn new(size: usize) -> Slots {
        Slots {
            size,
            free: WaitQueue::new(size),
        }
    }

    /// Takes a slot, parking first come, first served while none is free;
    /// false if `deadline` passed first.
    pub(super) fn take(&self, deadline: Option<Instant>) -> bool {
        self.free
            .wait(
                SPAWN,
                deadline,
                |free, handed| match handed {
                    Some(()) => Some(()),
                    None if *free > 0 => {
                        *free -= 1;
                        Some(())
                    }
                    None => None,
                },
                |locked, ()| Slots::give_back_locked(locked),
            )
            .is_some()
    }

    /// Takes a slot if one is free now.
    pub(super) fn try_take(&self) -> bool {
        let mut locked = self.free.lock();
        if locked.state > 0 {
            locked.state -= 1;
            true
        } else {
            false
        }
    }

    pub(super) fn give_back(&self) {
        Slots::give_back_locked(&mut self.free.lock());
    }

    fn give_back_locked(locked: &mut Locked<usize>) {
        if locked.notify_one(()).is_err() {
            locked.state += 1;
        }
    }
}

impl Default for Group {
    fn default() -> Group {
        Group::new()
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group").field("len", &self.len()).finish()
    }
}

/// Spawns the next item's member; `None` once the items are exhausted.
type NextMember<'a, R> = Box<dyn FnMut() -> Option<JoinHandle<R>> + 'a>;

/// Members whose results are wanted in order; those still running when it is
/// dropped (the caller unwound, or stopped early) are killed.
struct Batch<R>(VecDeque<JoinHandle<R>>);

impl<R> Batch<R> {
    /// Waits for the oldest member and returns its value. The member stays
    /// in the batch while waited for, so that it is killed if the caller
    /// unwinds.
    #[track_caller]
    fn join_front(&mut self) -> Option<R> {
        self.0.front()?.wait();
        let handle = self.0.pop_front()?;
        Some(value_of(handle.join()))
    }
}

impl<R> Drop for Batch<R> {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.kill();
        }
    }
}

/// The value of a member's work, or its panic resumed.
#[track_caller]
fn value_of<R>(result: Result<R, JoinError>) -> R {
    match result {
        Ok(value) => value,
        Err(JoinError::Panicked(payload)) => resume_unwind(payload),
        Err(JoinError::Killed) => {
            panic!("greenhub: a green thread running a mapped item was killed: its value is lost")
        }
    }
}

/// The iterator of [`Group::imap`]: results in item order.
pub struct Imap<'a, R> {
    next_member: NextMember<'a, R>,
    batch: Batch<R>,
    bound: usize,
    exhausted: bool,
}

impl<R> Iterator for Imap<'_, R> {
    type Item = R;

    /// Tops up the work in flight, then parks until the oldest item is done.
    ///
    /// # Panics
    /// Resumes the item's panic (the rest is killed when the iterator drops).
    fn next(&mut self) -> Option<R> {
        while !self.exhausted && self.batch.0.len() < self.bound {
            match (self.next_member)() {
                Some(handle) => self.batch.0.push_back(handle),
                None => self.exhausted = true,
            }
        }
        self.batch.join_front()
    }
}

impl<R> fmt::Debug for Imap<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Imap")
            .field("in_flight", &self.batch.0.len())
            .field("exhausted", &self.exhausted)
            .finish()
    }
}

/// The iterator of [`Group::imap_unordered`]: results in finishing order.
pub struct ImapUnordered<'a, R> {
    next_member: NextMember<'a, R>,
    in_flight: Slab<JoinHandle<R>>,
    /// Keys in `in_flight` of the members that finished, in finishing order
    /// (pushed by each member's link).
    finished: Rc<WaitQueue<VecDeque<usize>>>,
    bound: usize,
    exhausted: bool,
}

const UNORDERED: Wait = Wait::local(&"Group::imap_unordered");

impl<R: 'static> Iterator for ImapUnordered<'_, R> {
    type Item = R;

    /// Tops up the work in flight, then parks until any item is done.
    ///
    /// # Panics
    /// Resumes the item's panic (the rest is killed when the iterator drops).
    fn next(&mut self) -> Option<R> {
        while !self.exhausted && self.in_flight.len() < self.bound {
            match (self.next_member)() {
                Some(handle) => {
                    let key = self.in_flight.vacant_entry().key();
                    let finished = self.finished.clone();
                    handle.link(move |_| {
                        let mut locked = finished.lock();
                        locked.state.push_back(key);
                        locked.notify_all();
                    });
                    self.in_flight.insert(handle);
                }
                None => self.exhausted = true,
            }
        }
        if self.in_flight.is_empty() {
            return None;
        }
        let key = self
            .finished
            .wait(UNORDERED, None, |keys, _| keys.pop_front(), |_, ()| {})
            .expect("a wait without deadline ends with a key");
        Some(value_of(self.in_flight.remove(key).join()))
    }
}

impl<R> Drop for ImapUnordered<'_, R> {
    fn drop(&mut self) {
        for (_, handle) in &self.in_flight {
            handle.kill();
        }
    }
}

impl<R> fmt::Debug for ImapUnordered<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapUnordered")
            .field("in_flight", &self.in_flight.len())
            .field("exhausted", &self.exhausted)
            .finish()
    }
}
