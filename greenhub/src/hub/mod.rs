//! The hub: one per OS thread, the scheduler of its green threads.
//!
//! It owns the run queue, the timers, the event loop (`mio::Poll`), the stack
//! pool and the slab of green threads. It runs on the OS thread's own stack;
//! green threads run on theirs and switch back to it whenever they park. Every
//! switch goes green thread → hub → green thread, so the hub sees each park.
//!
//! # Parking and waking
//!
//! One primitive serves everything: [`park`] suspends the current green thread
//! until its `Waker` fires (see `waker.rs` for the state machine). A wake from
//! this hub's own OS thread pushes onto the local run queue; a wake from any
//! other thread pushes onto the remote inbox and, if the hub sleeps in
//! `epoll_wait`, pokes it through a `mio::Waker`.
//!
//! # Cancellation
//!
//! `kill` and `with_timeout` mark the green thread and wake it; when its park
//! returns, it unwinds with a private payload ([`Killed`] or [`TimedOut`]).
//! A kill is sticky: every later park unwinds again, so a green thread that
//! catches the unwind still ends. Nothing is delivered while the green thread
//! is already unwinding (a destructor may park; unwinding from it would abort).
//!
//! # Deadlock
//!
//! When the main green thread has not finished and nothing is runnable, no
//! timer is pending and no I/O source is registered, only another OS thread
//! could still wake anything. If every parked green thread waits on something
//! only this hub can wake (a join of a local green thread), or no other OS
//! thread exists, `run` returns [`Error::Deadlock`] naming who waits on what.

mod ahead;
mod ending;
pub(crate) mod reactor;
mod table;
pub(crate) mod timer;
mod waker;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use std::{fmt, io};

use ahead::AheadVec;
use table::Table;

use crate::coroutine::{Coroutine, Suspender};
use crate::stack::{ExecStack, Image, ImageArena, StackPool};
use crate::Error;
use timer::{TimerKey, TimerWheel};
pub(crate) use waker::DONE;
pub(crate) use waker::{Header, Name};
use waker::{KILLED, PARKED, QUEUED, RUNNING, TIMED_OUT};

/// How many green threads run between two looks at timers and the inbox.
const EVENT_INTERVAL: u32 = 61;
/// While only other OS threads could wake us, how often to recheck that they exist.
const REMOTE_RECHECK: Duration = Duration::from_millis(250);
const WAKER_TOKEN: mio::Token = mio::Token(usize::MAX);
/// Headers kept for reuse (80 bytes each with their packet, as allocated).
const MAX_SPARE_HEADERS: usize = 65_536;

/// The next block of green thread ids to hand out (`Hub::next_id`).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Ids a hub takes from `NEXT_ID` at a time: one atomic step per this many
/// spawns, not one per spawn.
const ID_BLOCK: u64 = 1024;

/// The unwind payload of a killed green thread.
pub(crate) struct Killed;
/// The unwind payload of an expired `with_timeout`; the number says which one.
pub(crate) struct TimedOut(pub(crate) u64);

/// Settings of one hub.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) stack_size: usize,
    pub(crate) main_stack_size: usize,
    pub(crate) max_warm_stacks: usize,
    /// Compact mode: how many shared execution stacks, of what usable size.
    pub(crate) compact: Option<(usize, usize)>,
}

/// The part of a hub that other threads may touch.
pub(crate) struct Shared {
    inbox: Mutex<Vec<u32>>,
    /// Set when the inbox may be non-empty.
    pending: AtomicBool,
    /// Set while the hub blocks in `poll`: only then is the mio waker written.
    sleeping: AtomicBool,
    waker: mio::Waker,
    /// The hub's event loop registry (thread-safe: any thread may deregister).
    registry: mio::Registry,
    /// Reactor slots of sources dropped on other threads, to free.
    released: Mutex<Vec<usize>>,
}

impl Shared {
    /// A source registered with this hub was dropped on another thread.
    fn release_later(&self, token: usize) {
        self.released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(token);
    }

    fn push_remote(&self, key: u32) {
        self.inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key);
        self.pending.store(true, Ordering::SeqCst);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            // A failed write means the eventfd is already readable: the hub
            // will wake either way.
            let _ = self.waker.wake();
        }
    }
}

/// What a parked green thread waits on, for the deadlock report. Two words
/// (every green thread's slab entry has one).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wait {
    /// What it waits in ("TcpStream::read"); a thin pointer, so that a
    /// parked green thread's record stays two words.
    pub(crate) what: &'static &'static str,
    /// The id of the green thread waited for, or 0 (ids start at 1); the
    /// top bit (`SHARED`) says whether another OS thread could end the wait.
    bits: u64,
}

/// `Wait::bits`: another OS thread could end the wait.
const SHARED: u64 = 1 << 63;

impl Wait {
    /// A wait that only this hub's green threads can end.
    pub(crate) const fn local(what: &'static &'static str) -> Wait {
        Wait { what, bits: 0 }
    }

    /// A wait that another OS thread could end.
    pub(crate) const fn shared(what: &'static &'static str) -> Wait {
        Wait { what, bits: SHARED }
    }

    /// Waiting for the green thread `id` to finish.
    pub(crate) const fn join(id: u64) -> Wait {
        Wait {
            what: &"JoinHandle::join",
            bits: id & !SHARED,
        }
    }

    /// Whether another OS thread could end the wait.
    pub(crate) fn is_shared(&self) -> bool {
        self.bits & SHARED != 0
    }

    fn target(&self) -> u64 {
        self.bits & !SHARED
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)?;
        if self.target() != 0 {
            write!(f, " (green thread {})", self.target())?;
        }
        Ok(())
    }
}

#[derive(Debug)]
enum TimerAction {
    Wake(u32),
    Timeout { task: u32, id: u64 },
}

/// A green thread as its hub sees it.
struct Task {
    /// Taken out while the green thread runs (the slab may grow meanwhile).
    /// None also for a compact green thread that has not started: its
    /// coroutine is made once its execution stack is free (making it writes
    /// the first frame onto that stack); its image holds the entry till then.
    co: Option<Coroutine>,
    header: Arc<Header>,
    suspender: Option<Suspender>,
    wait: Wait,
    /// The timer of the park it is in, if it has one: here rather than in
    /// the parked frame, whose bytes a compact stack keeps (and would then
    /// differ from every other green thread's of its kind).
    timer: Option<TimerKey>,
}

/// The shared execution stacks of a hub in compact mode.
struct Compact {
    /// One cell for all three: a switch borrows it once.
    state: RefCell<CompactState>,
    /// Bytes below a recorded stack pointer that a suspended coroutine uses.
    depth: usize,
    /// Bytes of the latest image evicted (at most `MAX_ROOM`): a new green
    /// thread's entry block gets this much room, so that it can become the
    /// image without a second allocation (green threads spawned together
    /// tend to park alike).
    room: Cell<u32>,
}

/// The largest room an entry block is given in advance.
const MAX_ROOM: usize = 2048;

/// Where a green thread about to run is (see `make_resident`).
#[derive(Clone, Copy)]
struct Resident {
    /// Its execution stack (`Image::DEDICATED`: a dedicated stack).
    exec: u16,
    /// Whether it starts there (a compact green thread's first run).
    starting: bool,
}

impl Resident {
    const DEDICATED: Resident = Resident {
        exec: Image::DEDICATED,
        starting: false,
    };
}

/// What a compact hub's switches work on.
struct CompactState {
    execs: Vec<ExecStack>,
    /// Per slab key: where a compact green thread runs and its saved bytes.
    /// Beside the slab rather than in it, so that a dedicated green thread's
    /// entry stays small.
    images: AheadVec<Image>,
    /// Where evicted images keep their bytes.
    arena: ImageArena,
}

/// A hub. Lives in a `Box` for the duration of [`run`], reachable through the
/// `HUB` thread-local of its OS thread.
pub(crate) struct Hub {
    shared: Arc<Shared>,
    config: Config,
    tasks: RefCell<Table<Task>>,
    run_queue: RefCell<VecDeque<u32>>,
    timers: RefCell<TimerWheel<TimerAction>>,
    stacks: RefCell<StackPool>,
    poll: RefCell<mio::Poll>,
    events: RefCell<mio::Events>,
    /// The green thread running now (None while the hub itself runs).
    current: Cell<Option<u32>>,
    /// Its header and suspender, cached for the park path. The header pointer
    /// is valid while `current` is Some: the task's slab entry owns an Arc of
    /// it until the green thread finishes, and it cannot finish while running.
    current_header: Cell<*const Header>,
    current_suspender: Cell<Option<Suspender>>,
    next_timeout: Cell<u64>,
    /// Per slab key, the outermost expired `with_timeout` not yet delivered
    /// (its header's `TIMED_OUT` says there is one): rare, so not a field of
    /// every header.
    expired: RefCell<HashMap<u32, u64>>,
    /// Registered I/O sources: while any exists, waiting is not a deadlock.
    reactor: reactor::Reactor,
    /// Headers of finished green threads that nothing refers to any more.
    spare_headers: RefCell<Vec<Arc<Header>>>,
    /// The ids this hub has taken and not handed out yet: `next..end`.
    ids: Cell<(u64, u64)>,
    compact: Option<Compact>,
}

thread_local! {
    static HUB: Cell<*const Hub> = const { Cell::new(ptr::null()) };
}

/// Runs `f` with this OS thread's hub, if it has one.
#[inline]
pub(crate) fn with_hub<R>(f: impl FnOnce(&Hub) -> R) -> Option<R> {
    let hub = HUB.with(|h| h.get());
    if hub.is_null() {
        None
    } else {
        // SAFETY: HUB is set by `run` to a boxed Hub that outlives the setting
        // and is reset (by a guard, even on panic) before the Hub is dropped.
        Some(f(unsafe { &*hub }))
    }
}

/// Like [`with_hub`], for calls that make no sense outside a hub.
#[inline]
#[track_caller]
pub(crate) fn expect_hub<R>(what: &str, f: impl FnOnce(&Hub) -> R) -> R {
    match with_hub(f) {
        Some(r) => r,
        None => no_hub(what),
    }
}

/// Out of line, so that the frames of callers on the park path stay small
/// (a compact stack saves every byte of them while parked).
#[cold]
#[inline(never)]
#[track_caller]
fn no_hub(what: &str) -> ! {
    panic!(
        "greenhub: `{what}` called outside a green thread: there is no hub on \
         this OS thread; call it from inside `greenhub::run`"
    )
}

/// The first thing a green thread does: tell its hub how to suspend it.
/// Out of line: its frame is gone before the body runs.
#[inline(never)]
fn enter(suspender: Suspender) {
    with_hub(|hub| {
        let key = hub.current.get().expect("a green thread runs");
        hub.tasks.borrow_mut()[key as usize].suspender = Some(suspender);
        hub.current_suspender.set(Some(suspender));
    });
}

/// After a wake of a sleeping green thread: parks it again while its timer
/// is pending (the wake came before the deadline; a sleep without one has
/// none) and there is no kill or timeout to deliver. Out of line: most
/// sleepers are woken by their timer, and their parked frame need not hold
/// what this loop needs.
#[inline(never)]
fn sleep_on<const COMPACT: bool>() {
    let asleep = |hub: &Hub| {
        let (Some(header), Some(suspender)) = (hub.running(), hub.current_suspender.get()) else {
            return false;
        };
        let timer = hub.tasks.borrow()[header.key as usize].timer;
        let passed = timer.is_some_and(|timer| !hub.timers.borrow().is_pending(timer));
        if header.cancel_pending() || passed {
            return false;
        }
        Hub::park_switch::<COMPACT>(header, suspender);
        true
    };
    while with_hub(asleep) == Some(true) {}
}

/// The end of a park: cancels its timer (if it was `timed`), delivers a
/// kill or timeout.
#[inline(never)]
fn park_end(timed: bool) {
    with_hub(|hub| {
        if let Some(header) = hub.running() {
            if timed {
                let timer = hub.tasks.borrow_mut()[header.key as usize].timer.take();
                if let Some(timer) = timer {
                    hub.timers.borrow_mut().cancel(timer);
                }
            }
            Hub::deliver_cancel(header);
        }
    });
}

#[cold]
#[inline(never)]
#[track_caller]
fn not_in_green_thread(what: &str) -> ! {
    panic!("greenhub: `{what}` called on the hub itself, outside any green thread")
}

/// Puts a woken green thread on its hub's run queue (waker.rs calls this after
/// moving it from PARKED to QUEUED).
pub(crate) fn schedule(header: &Header) {
    let local = with_hub(|hub| {
        if ptr::eq(Arc::as_ptr(&hub.shared), Arc::as_ptr(&header.hub)) {
            hub.run_queue.borrow_mut().push_back(header.key);
            true
        } else {
            false
        }
    });
    if local != Some(true) {
        header.hub.push_remote(header.key);
    }
}

/// Parks the current green thread until its waker fires. May return
/// spuriously: callers re-check their condition. Unwinds if the green thread
/// was killed or its `with_timeout` expired.
#[track_caller]
pub(crate) fn park(wait: Wait) {
    expect_hub(wait.what, |hub| hub.park_current(&wait, None));
}

/// Like [`park`], but also returns once `deadline` has passed.
#[track_caller]
pub(crate) fn park_until(wait: Wait, deadline: Instant) {
    expect_hub(wait.what, |hub| hub.park_current(&wait, Some(deadline)));
}

/// The instant `duration` from now, or None if that is beyond what `Instant`
/// can hold (a wait that long is a wait for ever).
pub(crate) fn deadline_after(duration: Duration) -> Option<Instant> {
    Instant::now().checked_add(duration)
}

/// The waker of the current green thread, if the caller is one.
pub(crate) fn current_waker() -> Option<std::task::Waker> {
    with_hub(|hub| {
        let key = hub.current.get()?;
        Some(std::task::Waker::from(
            hub.tasks.borrow()[key as usize].header.clone(),
        ))
    })
    .flatten()
}

/// The header of the current green thread, if the caller is one, without a
/// reference count: valid while that green thread has not finished.
#[inline]
pub(crate) fn current_header_ptr() -> Option<*const Header> {
    with_hub(|hub| hub.running().map(|h| h as *const Header)).flatten()
}

/// Marks the current green thread as unwinding (from the panic hook).
pub(crate) fn mark_unwinding() {
    with_hub(|hub| {
        if let Some(header) = hub.running() {
            header.unwinding.store(true, Ordering::Relaxed);
        }
    });
}

/// The current green thread caught its unwind (greenhub's own catch points).
pub(crate) fn clear_unwinding() {
    with_hub(|hub| {
        if let Some(header) = hub.running() {
            header.unwinding.store(false, Ordering::Relaxed);
        }
    });
}

/// Makes the panic hook tell the hub which green thread starts unwinding
/// (chained before whatever hook was installed). Once per process.
fn install_panic_marker() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            mark_unwinding();
            previous(info);
        }));
    });
}

/// The id of the running green thread, if any.
pub(crate) fn current_id() -> Option<u64> {
    with_hub(|hub| hub.running().map(|h| h.id)).flatten()
}

/// Whether the current green thread has been killed.
pub(crate) fn current_killed() -> bool {
    with_hub(|hub| hub.running().is_some_and(|h| h.killed())).unwrap_or(false)
}

/// Id, slab key and name of the current green thread, if the caller is one.
pub(crate) fn current_identity() -> Option<(u32, u64, Option<Name>)> {
    with_hub(|hub| hub.running().map(|h| (h.key, h.id, h.name.clone()))).flatten()
}

impl Hub {
    fn new(config: Config) -> io::Result<Hub> {
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER_TOKEN)?;
        let mut stacks = StackPool::new(config.max_warm_stacks);
        let compact = match config.compact {
            None => None,
            Some((count, size)) if count > Image::MAX_EXECS || size > Image::MAX_EXEC_SIZE => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "greenhub: compact_stacks({count}, {size}): at most {} execution \
                         stacks of at most {} bytes",
                        Image::MAX_EXECS,
                        Image::MAX_EXEC_SIZE
                    ),
                ));
            }
            Some((count, size)) => {
                let mut execs = Vec::with_capacity(count.max(1));
                for _ in 0..count.max(1) {
                    let mut stack = stacks.get(size)?;
                    // Its size, for the overflow report; each green thread
                    // that runs on it writes its id and name.
                    stack.set_owner(0, None);
                    execs.push(ExecStack::new(stack));
                }
                let probe = stacks.get(size)?;
                let (depth, probe) = crate::coroutine::suspend_depth(probe);
                stacks.put(probe);
                Some(Compact {
                    state: RefCell::new(CompactState {
                        execs,
                        images: AheadVec::new(),
                        arena: ImageArena::new(),
                    }),
                    depth,
                    room: Cell::new(0),
                })
            }
        };
        Ok(Hub {
            shared: Arc::new(Shared {
                inbox: Mutex::new(Vec::new()),
                pending: AtomicBool::new(false),
                sleeping: AtomicBool::new(false),
                waker,
                registry: poll.registry().try_clone()?,
                released: Mutex::new(Vec::new()),
            }),
            stacks: RefCell::new(stacks),
            config,
            tasks: RefCell::new(Table::new()),
            run_queue: RefCell::new(VecDeque::new()),
            timers: RefCell::new(TimerWheel::new(Instant::now())),
            poll: RefCell::new(poll),
            events: RefCell::new(mio::Events::with_capacity(1024)),
            current: Cell::new(None),
            current_header: Cell::new(ptr::null()),
            current_suspender: Cell::new(None),
            next_timeout: Cell::new(1),
            expired: RefCell::new(HashMap::new()),
            reactor: reactor::Reactor::default(),
            spare_headers: RefCell::new(Vec::new()),
            ids: Cell::new((0, 0)),
            compact,
        })
    }

    /// Creates a green thread that will run `body`; it starts on a later turn
    /// of the hub. `body` must catch its own panics (task.rs does). Returns
    /// its header.
    pub(crate) fn spawn_raw<B: FnOnce() + 'static>(
        &self,
        stack_size: Option<usize>,
        name: Option<Name>,
        body: B,
    ) -> io::Result<Arc<Header>> {
        // Compact mode serves green threads of the default size; an explicit
        // size (the main green thread's too) gets a dedicated stack.
        let compact = self.compact.as_ref().filter(|_| stack_size.is_none());
        let stack = match compact {
            Some(_) => None,
            None => {
                let size = stack_size.unwrap_or(self.config.stack_size);
                Some(self.stacks.borrow_mut().get(size)?)
            }
        };
        let id = self.next_id();
        let mut tasks = self.tasks.borrow_mut();
        let key = tasks.vacant_key() as u32;
        let header = match self.spare_headers.borrow_mut().pop() {
            Some(mut header) => {
                // A spare has no other reference (see `recycle`): reset it.
                let fresh = Arc::get_mut(&mut header).expect("spare headers are unshared");
                *fresh = Header::new(key, id, name, self.shared.clone());
                header
            }
            None => Arc::new(Header::new(key, id, name, self.shared.clone())),
        };
        let theirs = header.clone();
        let start = move |suspender| {
            enter(suspender);
            body();
        };
        let mut image = Image::dedicated();
        let co = match stack {
            Some(mut stack) => {
                stack.set_owner(id, header.name.as_deref());
                Some(Coroutine::new(stack, start))
            }
            None => {
                let compact = compact.expect("no stack means compact mode");
                let state = &mut *compact.state.borrow_mut();
                let (exec, least) = state
                    .execs
                    .iter_mut()
                    .enumerate()
                    .min_by_key(|(_, e)| e.bound)
                    .expect("compact mode has execution stacks");
                least.bound += 1;
                let room = compact.room.get() as usize;
                image = Image::bound_to(exec, start, &mut state.arena, room);
                None
            }
        };
        if let Some(compact) = &self.compact {
            let images = &mut compact.state.borrow_mut().images;
            images.grow_to(key as usize + 1, Image::dedicated);
            images[key as usize] = image;
        }
        tasks.insert(Task {
            co,
            header: theirs,
            suspender: None,
            wait: Wait::local(&"start"),
            timer: None,
        });
        drop(tasks);
        self.run_queue.borrow_mut().push_back(key);
        Ok(header)
    }

    /// A new green thread id: unique in the process, increasing in a hub.
    fn next_id(&self) -> u64 {
        let (mut next, mut end) = self.ids.get();
        if next == end {
            next = NEXT_ID.fetch_add(ID_BLOCK, Ordering::Relaxed);
            end = next + ID_BLOCK;
        }
        self.ids.set((next + 1, end));
        next
    }

    /// Keeps the header of a finished green thread for the next spawn, if
    /// nothing else refers to it (its JoinHandle is going, or gone).
    pub(crate) fn recycle(&self, header: &Arc<Header>) {
        if Arc::strong_count(header) == 1
            && header.state.load(Ordering::Relaxed) == DONE
            && ptr::eq(Arc::as_ptr(&self.shared), Arc::as_ptr(&header.hub))
        {
            let mut spare = self.spare_headers.borrow_mut();
            if spare.len() < MAX_SPARE_HEADERS {
                spare.push(header.clone());
            }
        }
    }

    /// Compact mode: puts green thread `key`'s stack bytes on its execution
    /// stack, evicting the occupant. None if the occupant is pinned: then
    /// `key` waits on the execution stack's blocked list.
    fn make_resident(&self, compact: &Compact, key: u32) -> Option<Resident> {
        let state = &mut *compact.state.borrow_mut();
        let CompactState {
            execs,
            images,
            arena,
        } = state;
        let image = &images[key as usize];
        if !image.is_compact() {
            return Some(Resident::DEDICATED);
        }
        let at = image.exec;
        let exec = &mut execs[at as usize];
        let mut tasks = self.tasks.borrow_mut();
        match exec.occupant {
            Some(occupant) if occupant == key => {
                return Some(Resident {
                    exec: at,
                    starting: false,
                })
            }
            Some(occupant) => {
                let image = &mut images[occupant as usize];
                if image.pinned > 0 {
                    exec.blocked.push(key);
                    return None;
                }
                // A parked occupant shares its stack top with its kind; a
                // runnable one (it yielded, or was woken) is back soon, and
                // its top is not worth comparing and copying twice.
                let parked = tasks[occupant as usize]
                    .header
                    .state
                    .load(Ordering::Relaxed)
                    == PARKED;
                let saved = image.evict(exec, arena, parked);
                compact.room.set(saved.min(MAX_ROOM) as u32);
            }
            None => {}
        }
        let task = &mut tasks[key as usize];
        let image = &mut images[key as usize];
        let starting = image.unstarted();
        if starting {
            // First run: making the coroutine writes its first frame.
            exec.starting();
            task.co = Some(image.start(exec.stack.share()));
        } else {
            image.restore(exec, arena);
        }
        exec.occupied_by(key);
        exec.stack
            .set_occupant(task.header.id, task.header.name.as_deref());
        Some(Resident { exec: at, starting })
    }

    /// Compact mode: how many green threads are evicted, the stack bytes
    /// they keep on the heap, and the stack bytes they used (their images:
    /// what they keep and the top bytes they share).
    pub(crate) fn evicted_bytes(&self) -> (usize, usize, usize) {
        let Some(compact) = &self.compact else {
            return (0, 0, 0);
        };
        let state = compact.state.borrow();
        let (images, execs) = (&state.images, &state.execs);
        let resident = |key: usize| {
            let image = &images[key];
            execs[image.exec as usize].occupant == Some(key as u32)
        };
        (0..images.len())
            .filter(|&key| images[key].is_compact() && !resident(key))
            .filter_map(|key| images[key].saved())
            .fold((0, 0, 0), |(n, kept, used), (k, u)| {
                (n + 1, kept + k, used + u)
            })
    }

    /// Keeps the current green thread on its execution stack (compact mode)
    /// until the matching `unpin`.
    pub(crate) fn pin(&self, delta: i8) {
        let Some(compact) = &self.compact else {
            return;
        };
        let Some(key) = self.current.get() else {
            return;
        };
        let state = &mut *compact.state.borrow_mut();
        let image = &mut state.images[key as usize];
        if !image.is_compact() {
            return;
        }
        image.pinned = image
            .pinned
            .checked_add_signed(delta)
            .expect("greenhub::stack::pinned nested more than 255 deep");
        if image.pinned == 0 {
            let exec = image.exec as usize;
            let blocked = std::mem::take(&mut state.execs[exec].blocked);
            self.run_queue.borrow_mut().extend(blocked);
        }
    }

    /// Asks the green thread `(key, id)` to unwind at its blocking point (see
    /// [`Hub::kill`]); does nothing if it has finished.
    pub(crate) fn kill_key(&self, key: u32, id: u64) {
        let header = match self.tasks.borrow().get(key as usize) {
            Some(task) if task.header.id == id => task.header.clone(),
            _ => return,
        };
        self.kill(&header);
    }

    /// Asks the green thread behind `header` to unwind at its blocking point.
    /// Does nothing if it has finished or belongs to another hub.
    pub(crate) fn kill(&self, header: &Arc<Header>) {
        if header.state.load(Ordering::Acquire) == DONE
            || !ptr::eq(Arc::as_ptr(&self.shared), Arc::as_ptr(&header.hub))
        {
            return;
        }
        match self.tasks.borrow().get(header.key as usize) {
            Some(task) if Arc::ptr_eq(&task.header, header) => {
                header.cancel.fetch_or(KILLED, Ordering::Relaxed);
            }
            _ => return,
        }
        header.wake_ref();
    }

    /// Registers a `with_timeout` deadline for the current green thread.
    pub(crate) fn add_timeout(&self, deadline: Instant) -> (u64, TimerKey) {
        let key = self.current.get().expect("with_timeout in a green thread");
        let id = self.next_timeout.get();
        self.next_timeout.set(id + 1);
        let timer = self
            .timers
            .borrow_mut()
            .insert(deadline, TimerAction::Timeout { task: key, id });
        (id, timer)
    }

    /// Ends a `with_timeout` scope: its timer and any undelivered expiry.
    pub(crate) fn remove_timeout(&self, id: u64, timer: TimerKey) {
        self.timers.borrow_mut().cancel(timer);
        if let Some(header) = self.running() {
            if header.cancel.load(Ordering::Relaxed) & TIMED_OUT != 0 {
                let mut expired = self.expired.borrow_mut();
                if expired
                    .get(&header.key)
                    .is_some_and(|&pending| pending >= id)
                {
                    expired.remove(&header.key);
                    header.cancel.fetch_and(!TIMED_OUT, Ordering::Relaxed);
                }
            }
        }
    }

    /// The header of the running green thread.
    #[inline]
    fn running(&self) -> Option<&Header> {
        let header = self.current_header.get();
        // SAFETY: see `current_header`: non-null only while its green thread
        // runs, which keeps the header alive.
        (!header.is_null()).then(|| unsafe { &*header })
    }

    /// The running green thread's header and suspender (park path).
    #[inline]
    #[track_caller]
    fn running_parts(&self, what: &str) -> (&Header, Suspender) {
        match (self.running(), self.current_suspender.get()) {
            (Some(header), Some(suspender)) => (header, suspender),
            _ => not_in_green_thread(what),
        }
    }

    // The park paths below come in two instantiations, by stack mode
    // (`COMPACT`): dedicated stacks switch with the switch inlined (the
    // fastest path), compact stacks through the never-inlined
    // `suspend_recording_sp` (see there why). Kept apart, a compact park
    // path holds no inline switch, whose clobbers would make it save every
    // callee-saved register: bytes a compact stack keeps for every parked
    // green thread.

    /// Puts the running green thread at the back of the run queue and switches.
    #[inline]
    pub(crate) fn yield_current(&self) {
        if self.compact.is_some() {
            self.yield_in::<true>()
        } else {
            self.yield_in::<false>()
        }
    }

    #[inline(never)]
    fn yield_in<const COMPACT: bool>(&self) {
        let (header, suspender) = self.running_parts("yield_now");
        Self::deliver_cancel(header);
        // RUNNING or NOTIFIED: either way it runs again after this turn.
        header.state.store(QUEUED, Ordering::Release);
        self.run_queue.borrow_mut().push_back(header.key);
        Self::switch_out::<COMPACT>(suspender);
        Self::deliver_cancel(header);
    }

    /// Parks the running green thread until it is woken (or `deadline`).
    #[track_caller]
    #[inline]
    fn park_current(&self, wait: &Wait, deadline: Option<Instant>) {
        if self.compact.is_some() {
            self.park_in::<true, false>(wait, deadline)
        } else {
            self.park_in::<false, false>(wait, deadline)
        }
    }

    /// `park_current` for `sleep`: parks until `deadline` has passed (for
    /// ever if None), whatever wakes it before, or unwinds at a kill or a
    /// timeout. `sleep` hands over with a tail call, so a sleeping green
    /// thread keeps one frame of greenhub's (`park_in`) besides the switch.
    #[track_caller]
    #[inline]
    pub(crate) fn sleep_current(&self, deadline: Option<Instant>) {
        const SLEEP: Wait = Wait::local(&"sleep");
        if self.compact.is_some() {
            self.park_in::<true, true>(&SLEEP, deadline)
        } else {
            self.park_in::<false, true>(&SLEEP, deadline)
        }
    }

    /// `park_current` in one stack mode (`COMPACT`), and with `SLEEP` until
    /// the deadline has passed.
    ///
    /// Its frame stays on the green thread's stack while it is parked, and
    /// a compact stack saves all of it: the bookkeeping is done in helpers
    /// that have returned by the time it switches, the timer key waits in
    /// the task, and what follows the switch finds the hub again through its
    /// thread-local, so nothing of its own lives here across the switch
    /// (and parked green threads of one kind have the same frame here). One
    /// instantiation per mode and kind.
    #[track_caller]
    #[inline(never)]
    fn park_in<const COMPACT: bool, const SLEEP: bool>(
        &self,
        wait: &Wait,
        deadline: Option<Instant>,
    ) {
        // A sleep is (almost always) timed: nothing to keep for it across
        // the switch, where a compact stack would save it.
        let timed = SLEEP || deadline.is_some();
        if let Some(suspender) = self.park_begin(wait, deadline) {
            Self::switch_out::<COMPACT>(suspender);
        }
        if SLEEP {
            sleep_on::<COMPACT>();
        }
        park_end(timed);
    }

    /// The start of a park: delivers a pending kill or timeout, arms the
    /// timer, records what the green thread waits for (and its timer) and
    /// moves it from RUNNING to PARKED. Returns the suspender to switch out
    /// with (None if a wake came in while it ran: see `park_switch`).
    #[track_caller]
    #[inline(never)]
    fn park_begin(&self, wait: &Wait, deadline: Option<Instant>) -> Option<Suspender> {
        let (header, suspender) = self.running_parts(wait.what);
        Self::deliver_cancel(header);
        let timer = deadline.map(|deadline| {
            self.timers
                .borrow_mut()
                .insert(deadline, TimerAction::Wake(header.key))
        });
        let mut tasks = self.tasks.borrow_mut();
        let task = &mut tasks[header.key as usize];
        task.wait = *wait;
        task.timer = timer;
        drop(tasks);
        Self::to_parked(header).then_some(suspender)
    }

    /// Moves the running green thread from RUNNING to PARKED and switches
    /// out, unless a wake came in while it ran.
    #[inline(always)]
    fn park_switch<const COMPACT: bool>(header: &Header, suspender: Suspender) {
        if Self::to_parked(header) {
            Self::switch_out::<COMPACT>(suspender);
        }
    }

    /// Moves the running green thread from RUNNING to PARKED: true if it is
    /// to switch out, false if a wake came in while it ran.
    #[inline(always)]
    fn to_parked(header: &Header) -> bool {
        let parked = header
            .state
            .compare_exchange(RUNNING, PARKED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !parked {
            // NOTIFIED: a wake came in while we ran; consume it. A swap, not a
            // store: it reads the waker's write, so what the waker published
            // before waking is visible to us (see waker.rs).
            header.state.swap(RUNNING, Ordering::AcqRel);
        }
        parked
    }

    /// Suspends the running green thread back to the hub loop. In compact
    /// mode the stack pointer is recorded for a later eviction.
    #[inline(always)]
    fn switch_out<const COMPACT: bool>(suspender: Suspender) {
        if COMPACT {
            // SAFETY: called only from the park and yield paths, which run
            // on the current green thread, whose suspender this is.
            unsafe { suspender.suspend_recording_sp() }
        } else {
            // SAFETY: as above.
            unsafe { suspender.suspend() }
        }
    }

    /// Unwinds the current green thread if it was killed or timed out.
    #[inline]
    fn deliver_cancel(header: &Header) {
        if header.cancel_pending() {
            Self::deliver_cancel_slow(header);
        }
    }

    #[cold]
    fn deliver_cancel_slow(header: &Header) {
        // Never start an unwind inside an unwind (a destructor that parks):
        // that would abort. `thread::panicking()` cannot tell, since it
        // counts for the whole OS thread, all its green threads together; the
        // header's own flag is set when this green thread starts unwinding
        // (here, or by the panic hook) and cleared where greenhub catches.
        if header.unwinding.load(Ordering::Relaxed) {
            if std::thread::panicking() {
                return;
            }
            // Nobody on this OS thread unwinds any more: a user catch_unwind
            // ended ours.
            header.unwinding.store(false, Ordering::Relaxed);
        }
        header.unwinding.store(true, Ordering::Relaxed);
        if header.killed() {
            std::panic::resume_unwind(Box::new(Killed));
        }
        header.cancel.fetch_and(!TIMED_OUT, Ordering::Relaxed);
        let id = with_hub(|hub| hub.expired.borrow_mut().remove(&header.key)).flatten();
        std::panic::resume_unwind(Box::new(TimedOut(id.unwrap_or(0))));
    }

    /// Runs one green thread until it parks, yields or finishes.
    ///
    /// Inlined into the hub's loop: the frame that resumes a green thread
    /// is the loop's own, so no return crosses the switch on the hub's side
    /// (each such return would mispredict, the CPU's return predictions
    /// being the green thread's). What does not run at every switch is out
    /// of line.
    #[inline(always)]
    fn resume(&self, key: u32) {
        let resident = match &self.compact {
            None => Resident::DEDICATED,
            Some(compact) => match self.make_resident(compact, key) {
                Some(resident) => resident,
                None => return, // waits for a pinned occupant (see `pin`)
            },
        };
        let mut co = {
            let mut tasks = self.tasks.borrow_mut();
            let task = &mut tasks[key as usize];
            // A swap (see waker.rs): synchronises with the wake that queued it.
            task.header.state.swap(RUNNING, Ordering::AcqRel);
            self.current_header.set(Arc::as_ptr(&task.header));
            self.current_suspender.set(task.suspender);
            task.co
                .take()
                .expect("a queued green thread has its coroutine")
        };
        self.current.set(Some(key));
        let finished = if resident.starting {
            co.start()
        } else {
            co.resume()
        };
        self.current.set(None);
        self.current_header.set(ptr::null());
        self.current_suspender.set(None);
        if finished {
            self.finished(key, co);
        } else {
            if resident.exec != Image::DEDICATED {
                self.suspended(resident.exec);
            }
            self.tasks.borrow_mut()[key as usize].co = Some(co);
        }
    }

    /// After `resume`: the green thread under `key` has returned.
    #[inline(never)]
    fn finished(&self, key: u32, co: Coroutine) {
        let task = self.tasks.borrow_mut().remove(key as usize);
        task.header.state.store(DONE, Ordering::Release);
        if task.header.cancel.load(Ordering::Relaxed) & TIMED_OUT != 0 {
            self.expired.borrow_mut().remove(&key);
        }
        // A compact green thread leaves its place on an execution stack
        // (whose stack is not given back); a dedicated one its stack.
        let compact = self.compact.as_ref().is_some_and(|compact| {
            let state = &mut *compact.state.borrow_mut();
            let image = &mut state.images[key as usize];
            if !image.is_compact() {
                return false;
            }
            let mut image = std::mem::replace(image, Image::dedicated());
            image.release(&mut state.arena);
            let exec = &mut state.execs[image.exec as usize];
            exec.occupant = None;
            exec.bound -= 1;
            true
        });
        if !compact {
            self.stacks.borrow_mut().put(co.into_stack());
        }
        // No waker and no JoinHandle holds the header: keep it for the
        // next spawn (else the JoinHandle does, when it goes).
        self.recycle(&task.header);
    }

    /// After `resume`, compact mode: the occupant of execution stack `exec`
    /// has suspended.
    #[inline(never)]
    fn suspended(&self, exec: u16) {
        if let Some(compact) = &self.compact {
            let sp = crate::coroutine::last_suspend_sp();
            compact.state.borrow_mut().execs[exec as usize].suspended(sp, compact.depth);
        }
    }

    /// Moves remotely woken green threads onto the run queue.
    fn drain_inbox(&self) {
        if !self.shared.pending.load(Ordering::Acquire) {
            return;
        }
        self.shared.pending.store(false, Ordering::SeqCst);
        let woken =
            std::mem::take(&mut *self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner()));
        self.run_queue.borrow_mut().extend(woken);
    }

    fn expire_timers(&self, now: Instant) {
        let mut timers = self.timers.borrow_mut();
        if timers.is_empty() {
            return;
        }
        let tasks = self.tasks.borrow();
        let mut expired = self.expired.borrow_mut();
        timers.expire(now, |action| match action {
            TimerAction::Wake(key) => {
                if let Some(task) = tasks.get(key as usize) {
                    task.header.wake_ref();
                }
            }
            TimerAction::Timeout { task: key, id } => {
                if let Some(task) = tasks.get(key as usize) {
                    // The outermost expired scope is the one to unwind to.
                    let pending = expired.entry(key).or_insert(id);
                    *pending = id.min(*pending);
                    task.header.cancel.fetch_or(TIMED_OUT, Ordering::Relaxed);
                    task.header.wake_ref();
                }
            }
        });
    }

    /// Waits for I/O, a remote wake or `timeout` (None: forever).
    fn poll(&self, timeout: Option<Duration>) {
        let blocking = timeout != Some(Duration::ZERO);
        if blocking {
            self.shared.sleeping.store(true, Ordering::SeqCst);
            if self.shared.pending.load(Ordering::SeqCst) {
                self.shared.sleeping.store(false, Ordering::SeqCst);
                return;
            }
        }
        let mut events = self.events.borrow_mut();
        // EINTR and friends: the loop simply comes round again.
        let _ = self.poll.borrow_mut().poll(&mut events, timeout);
        if blocking {
            self.shared.sleeping.store(false, Ordering::SeqCst);
        }
        for event in events.iter() {
            if event.token() != WAKER_TOKEN {
                self.reactor.dispatch(event);
            }
        }
        drop(events);
        let released = std::mem::take(
            &mut *self
                .shared
                .released
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for token in released {
            self.release_io(token);
        }
    }

    /// Frees the reactor slot of a deregistered source.
    pub(crate) fn release_io(&self, token: usize) {
        self.reactor.release(token);
    }

    /// The running green thread's key, if a green thread runs.
    pub(crate) fn current_key(&self) -> Option<u32> {
        self.current.get()
    }

    /// Runs green threads until `main` finishes, or reports a deadlock.
    fn run_until(&self, main: &Header) -> Result<(), Error> {
        loop {
            let mut budget = EVENT_INTERVAL;
            while budget > 0 {
                let next = self.run_queue.borrow_mut().pop_front();
                let Some(key) = next else { break };
                self.resume(key);
                // Once main returns, nothing else may run on: shutdown kills
                // the rest before they take another step.
                if main.state.load(Ordering::Acquire) == DONE {
                    return Ok(());
                }
                budget -= 1;
            }
            self.drain_inbox();
            let now = Instant::now();
            self.expire_timers(now);
            if !self.run_queue.borrow().is_empty() {
                if self.reactor.len() > 0 {
                    self.poll(Some(Duration::ZERO));
                }
                continue;
            }
            let next_timer = self.timers.borrow().next_deadline();
            let timeout = match next_timer {
                Some(deadline) => Some(deadline.saturating_duration_since(now)),
                None if self.reactor.len() > 0 => None,
                None => {
                    if let Some(parked) = self.deadlock_report() {
                        return Err(Error::Deadlock(parked));
                    }
                    Some(REMOTE_RECHECK)
                }
            };
            self.poll(timeout);
        }
    }
}

/// Writes a line on stderr from inside the runtime. Unlike `eprintln!`, a
/// failed write (a closed pipe) is ignored instead of panicking: a report
/// must never take the hub down.
pub(crate) fn warn(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut line = args.to_string();
    line.push('\n');
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// "green thread 7 'name'".
pub(crate) fn describe(id: u64, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("green thread {id} '{name}'"),
        None => format!("green thread {id}"),
    }
}

/// Creates a hub on this OS thread, runs `main` as its main green thread until
/// it returns, then unwinds every green thread left.
pub(crate) fn run<T: 'static>(
    config: Config,
    main: impl FnOnce() -> T + 'static,
) -> Result<T, Error> {
    if with_hub(|_| ()).is_some() {
        return Err(Error::NestedRun);
    }
    crate::stack::install_overflow_handler();
    crate::stack::ensure_alt_stack();
    install_panic_marker();
    let hub = Box::new(Hub::new(config).map_err(Error::Io)?);
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            HUB.with(|h| h.set(ptr::null()));
        }
    }
    HUB.with(|h| h.set(&*hub as *const Hub));
    let reset = Reset;
    let main_size = hub.config.main_stack_size;
    let handle = crate::task::spawn_on(
        &hub,
        Some(main_size),
        Some(Name::from("main".to_string())),
        main,
    )
    .map_err(Error::Io)?;
    let main_header = handle.header().clone();
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let outcome = hub.run_until(&main_header);
        (outcome, hub.shutdown())
    }));
    let (outcome, clean) = match ran {
        Ok(done) => done,
        Err(payload) => {
            // A panic escaped into the hub itself (a bug, or user code run
            // outside every green thread's catch). Dropping the hub would
            // drop suspended coroutines, forcing unwinds through user frames
            // with no hub: leak it instead, and pass the panic on.
            drop(reset);
            std::mem::forget(hub);
            std::panic::resume_unwind(payload);
        }
    };
    if !clean {
        hub.leak_remaining();
    }
    drop(reset);
    if clean {
        drop(hub);
    } else {
        // Leaked green threads still own their stacks: keep the memory mapped.
        std::mem::forget(hub);
    }
    outcome?;
    match handle.take_result() {
        Some(Ok(value)) => Ok(value),
        Some(Err(err)) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        _ => Err(Error::MainKilled),
    }
}

/// Whether any OS thread other than the caller exists in this process.
fn other_threads_exist() -> bool {
    #[cfg(target_os = "linux")]
    {
        // Field 20 of /proc/self/stat, counted after the ')' that ends field 2.
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                if let Some(n) = rest.split_whitespace().nth(17) {
                    if let Ok(n) = n.parse::<u64>() {
                        // Idle blocking-pool threads run nothing and can wake
                        // nobody. (A pool thread wakes its caller, setting the
                        // inbox's `pending`, before it counts itself idle, and
                        // deadlock_report re-reads `pending` after this.)
                        return n.saturating_sub(crate::blocking::idle_threads() as u64) > 1;
                    }
                }
            }
        }
    }
    true
}
