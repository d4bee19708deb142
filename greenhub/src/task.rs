//! Green threads: spawn, [`Builder`], [`JoinHandle`], kill, links, and the
//! current green thread.
//!
//! A green thread is spawned → ready → running ⇄ parked → finished (returned,
//! panicked or killed). Its hub owns it while it lives (hub/mod.rs, with the
//! state machine in hub/waker.rs); the [`JoinHandle`] shares its *header*,
//! whose packet (packet.rs) is where the body leaves its result for `join`:
//! one allocation per green thread, which the hub reuses for a later spawn
//! once the green thread has finished and its handle is gone.
//!
//! # The end of a green thread
//!
//! When its closure returns or unwinds, the body (still on the green thread's
//! stack, in this order): marks the packet done; runs the links
//! ([`JoinHandle::link`]) with a reference to the result; drops its
//! green-thread-local values (`local.rs`); leaves the result for `join` (or
//! drops it if the handle is gone); wakes whoever waits in `join` or watches
//! the handle (`wait_any`).

use std::any::Any;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::Waker;

use crate::hub::{self, Header, Hub, Killed, Name, TimedOut, Wait};
use crate::packet::{Inner, Link};

/// A green thread's unique identifier (unique in the process, never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GreenId(pub(crate) u64);

impl GreenId {
    /// The number behind the id.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for GreenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why [`JoinHandle::join`] has no value.
pub enum JoinError {
    /// The green thread panicked; the payload is kept for [`JoinError::into_panic`].
    Panicked(Box<dyn Any + Send + 'static>),
    /// The green thread was killed (with [`JoinHandle::kill`], or at shutdown).
    Killed,
}

impl JoinError {
    /// Whether the green thread panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinError::Panicked(_))
    }

    /// Whether the green thread was killed.
    pub fn is_killed(&self) -> bool {
        matches!(self, JoinError::Killed)
    }

    /// The panic message, if the green thread panicked with a string.
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            JoinError::Panicked(payload) => panic_message(payload.as_ref()),
            JoinError::Killed => None,
        }
    }

    /// The panic payload, to resume the panic with `std::panic::resume_unwind`.
    ///
    /// # Panics
    /// If the green thread was killed rather than panicked.
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        match self {
            JoinError::Panicked(payload) => payload,
            JoinError::Killed => panic!("JoinError::into_panic on a killed green thread"),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(_) => f
                .debug_tuple("Panicked")
                .field(&self.panic_message().unwrap_or("<non-string payload>"))
                .finish(),
            JoinError::Killed => f.write_str("Killed"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(_) => write!(
                f,
                "green thread panicked: {}",
                self.panic_message().unwrap_or("<non-string payload>")
            ),
            JoinError::Killed => f.write_str("green thread was killed"),
        }
    }
}

impl std::error::Error for JoinError {}

/// Owned permission to join a green thread (and to kill it).
///
/// Dropping the handle detaches the green thread: it runs on, and if it
/// panics, the panic is reported on stderr with its id and name.
pub struct JoinHandle<T> {
    /// The green thread's header, with its packet (see packet.rs).
    header: Arc<Header>,
    /// The result's type; `!Send`: the packet is used on its hub's thread only.
    _result: PhantomData<*const T>,
}

impl<T> JoinHandle<T> {
    /// The packet, where the body leaves the result.
    fn packet(&self) -> Inner<'_> {
        // SAFETY: a JoinHandle is made on its hub's thread (in `spawn_on`)
        // and is `!Send`, so it is used there only.
        unsafe { self.header.packet() }
    }

    /// Waits for the green thread to finish; returns its value, or why there is none.
    ///
    /// # Panics
    /// If called outside a green thread of the same hub.
    #[track_caller]
    pub fn join(self) -> Result<T, JoinError> {
        self.wait();
        self.take_result()
            .expect("a finished green thread left a result")
    }

    /// Parks until the green thread has finished, without taking its result
    /// (so that `with_timeout(d, || handle.wait())` keeps the handle).
    ///
    /// # Panics
    /// If called outside a green thread of the same hub.
    #[track_caller]
    pub fn wait(&self) {
        // Not `is_finished`: that is true from the start of the green
        // thread's end, which may park (in a link, or a green-local value's
        // destructor) before the result is there.
        if self.packet().ready.get() {
            return;
        }
        let waker = hub::current_waker().unwrap_or_else(|| {
            panic!("greenhub: JoinHandle::join called outside a green thread of its hub")
        });
        let wait = Wait::join(self.header.id);
        // Remove our waker however we leave (a kill unwinds out of park).
        // It holds the handle, a word of the parked frame, not the packet's
        // fields.
        struct Unregister<'a, T>(&'a JoinHandle<T>, u64);
        impl<T> Drop for Unregister<'_, T> {
            fn drop(&mut self) {
                remove_waiter(&self.0.packet(), self.1);
            }
        }
        let _unregister = Unregister(self, add_waiter(&self.packet(), &waker));
        while !self.packet().ready.get() {
            hub::park(wait);
        }
    }

    /// Takes the result if the green thread has finished.
    pub(crate) fn take_result(&self) -> Option<Result<T, JoinError>> {
        // SAFETY: the body of this spawn left a Kept<T> (the
        // handle's T: `spawn_on` made both).
        unsafe { self.packet().take_result::<Kept<T>>() }.map(unkeep)
    }

    /// Registers `f` to run when the green thread finishes, with its result
    /// (gevent's `link`). Links run in the order they were added.
    ///
    /// # Where and when a link runs
    ///
    /// On the finishing green thread itself, at the very end: after its
    /// closure has returned or unwound (its destructors have run), before its
    /// green-thread-local values are dropped and before `join` can take the
    /// result. [`is_finished`](JoinHandle::is_finished) is already true.
    /// If the green thread has already finished, `f` runs at once, in the
    /// caller.
    ///
    /// A link should be short and **must not block**: the green thread is
    /// finishing (if it was killed, any blocking call unwinds at once). To do
    /// blocking work on an outcome, [`spawn`] a green thread from the link.
    /// A link that panics is reported on stderr; the other links still run.
    /// A link must not join the green thread it is linked to.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    ///
    /// greenhub::run(|| {
    ///     let seen = Rc::new(Cell::new(0));
    ///     let h = greenhub::spawn(|| 7);
    ///     let s = seen.clone();
    ///     h.link(move |result| s.set(*result.as_ref().unwrap()));
    ///     h.join().unwrap();
    ///     assert_eq!(seen.get(), 7);
    /// })
    /// .unwrap();
    /// ```
    pub fn link(&self, f: impl FnOnce(&Result<T, JoinError>) + 'static)
    where
        T: 'static,
    {
        let packet = self.packet();
        if !packet.links_ran.get() {
            let link = move |result: &dyn Any| {
                f(result
                    .downcast_ref::<Result<T, JoinError>>()
                    .expect("a link gets its green thread's result"))
            };
            packet.with_extra(|extra| extra.links.push(Box::new(link)));
            return;
        }
        // Finished and the links have run: the result is in the packet
        // (only `join`, which consumes the handle, takes it). Out while `f`
        // runs, and put back however `f` ends (a panic included): nothing
        // else takes or sets it meanwhile (the green thread has finished,
        // and `f` cannot reach this handle's `join`).
        struct PutBack<'a, T>(Inner<'a>, Option<Result<T, JoinError>>);
        impl<T> Drop for PutBack<'_, T> {
            fn drop(&mut self) {
                if let Some(result) = self.1.take() {
                    // SAFETY: the type the body of this spawn put (see
                    // `take_result`).
                    unsafe { self.0.put_result::<Kept<T>>(keep(result)) };
                }
            }
        }
        let result = PutBack(packet, self.take_result());
        if let Some(result) = &result.1 {
            f(result);
        }
    }

    /// Like [`link`](JoinHandle::link), but runs `f` only if the green thread
    /// returned a value (gevent's `link_value`).
    pub fn link_value(&self, f: impl FnOnce(&T) + 'static)
    where
        T: 'static,
    {
        self.link(move |result| {
            if let Ok(value) = result {
                f(value)
            }
        });
    }

    /// Like [`link`](JoinHandle::link), but runs `f` only if the green thread
    /// panicked or was killed (gevent's `link_exception`).
    pub fn link_error(&self, f: impl FnOnce(&JoinError) + 'static)
    where
        T: 'static,
    {
        self.link(move |result| {
            if let Err(err) = result {
                f(err)
            }
        });
    }

    /// Asks for `waker` to be woken when the green thread finishes; returns
    /// the key for [`unwatch`](JoinHandle::unwatch). Registers nothing if it
    /// has finished: watchers check readiness after watching.
    pub(crate) fn watch(&self, waker: &Waker) -> u64 {
        if self.is_finished() {
            return u64::MAX;
        }
        add_waiter(&self.packet(), waker)
    }

    /// Forgets a watcher (a no-op if it was woken already).
    pub(crate) fn unwatch(&self, key: u64) {
        remove_waiter(&self.packet(), key);
    }

    /// Asks the green thread to unwind at its current (or next) blocking
    /// point; its destructors run and `join` returns [`JoinError::Killed`]. A
    /// green thread killed before it started never runs its body. Returns at
    /// once; `join` waits for the end. Does nothing if it has finished.
    pub fn kill(&self) {
        if !self.is_finished() {
            hub::with_hub(|hub| hub.kill(&self.header));
        }
    }

    /// Whether the green thread has finished (returned, panicked or was killed).
    pub fn is_finished(&self) -> bool {
        self.packet().done.get()
    }

    /// The green thread's id.
    pub fn id(&self) -> GreenId {
        GreenId(self.header.id)
    }

    /// The green thread's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.header.name.as_deref()
    }

    /// A handle to the green thread, as [`current`] would return inside it.
    pub fn thread(&self) -> GreenThread {
        GreenThread {
            key: self.header.key,
            id: self.header.id,
            name: self.header.name.clone(),
            _not_send: PhantomData,
        }
    }

    /// The green thread's header.
    pub(crate) fn header(&self) -> &Arc<Header> {
        &self.header
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        self.packet().handle_alive.set(false);
        // Nobody can take the result any more.
        if let Some(Err(err @ JoinError::Panicked(_))) = self.take_result() {
            report_panic(self.header.id, self.header.name.as_deref(), &err);
        }
        // The last reference to a finished green thread's header: the hub
        // reuses it for a spawn.
        hub::with_hub(|hub| hub.recycle(&self.header));
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.header.id)
            .field("name", &self.header.name)
            .field("finished", &self.is_finished())
            .finish()
    }
}

fn report_panic(id: u64, name: Option<&str>, err: &JoinError) {
    crate::hub::warn(format_args!(
        "greenhub: {} panicked and was never joined: {}",
        hub::describe(id, name),
        err.panic_message().unwrap_or("<non-string payload>")
    ));
}

/// A green thread, as [`current`] or [`JoinHandle::thread`] return it. Not
/// `Send`: it belongs to its hub's OS thread.
#[derive(Clone)]
pub struct GreenThread {
    key: u32,
    id: u64,
    name: Option<Name>,
    _not_send: PhantomData<*const ()>,
}

impl GreenThread {
    /// The green thread's id.
    pub fn id(&self) -> GreenId {
        GreenId(self.id)
    }

    /// The green thread's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Kills the green thread (see [`JoinHandle::kill`]). Killing the current
    /// green thread takes effect at its next blocking call.
    pub fn kill(&self) {
        hub::with_hub(|hub| hub.kill_key(self.key, self.id));
    }
}

impl fmt::Debug for GreenThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GreenThread")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

/// The green thread that calls it.
///
/// # Panics
/// Outside a green thread.
#[track_caller]
pub fn current() -> GreenThread {
    match hub::current_identity() {
        Some((key, id, name)) => GreenThread {
            key,
            id,
            name,
            _not_send: PhantomData,
        },
        None => panic!("greenhub: `current` called outside a green thread"),
    }
}

/// The id of the running green thread, if the caller is one (cheaper than
/// [`current`]: no name is cloned).
pub(crate) fn current_id() -> Option<u64> {
    hub::current_id()
}

/// Spawns a green thread on this OS thread's hub; it starts on a later turn of
/// the hub (the caller keeps running until it blocks or yields).
///
/// # Panics
/// Outside a hub, or when no stack can be had (the message names the limit
/// and the remedy); use [`Builder::spawn`] to get that as an error instead.
#[track_caller]
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    match hub::expect_hub("spawn", |hub| spawn_on(hub, None, None, f)) {
        Ok(handle) => handle,
        Err(e) => panic!("greenhub: failed to spawn a green thread: {e}"),
    }
}

/// Sets a green thread's name and stack size before spawning it, like
/// `std::thread::Builder`.
#[derive(Debug, Default, Clone)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl Builder {
    /// A builder with the hub's defaults.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the green thread (shown in panic, deadlock and overflow reports).
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Usable stack bytes (rounded up to whole pages, at least 8 KiB).
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// Spawns the green thread. Fails, never panics, when there is no hub on
    /// this OS thread or no stack can be had.
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let name = self.name.map(Name::from);
        hub::with_hub(|hub| spawn_on(hub, self.stack_size, name, f)).unwrap_or_else(|| {
            Err(io::Error::other(
                "greenhub: Builder::spawn called outside greenhub::run (no hub on this OS thread)",
            ))
        })
    }
}

/// Spawns `f` on `hub`.
pub(crate) fn spawn_on<F, T>(
    hub: &Hub,
    stack_size: Option<usize>,
    name: Option<Name>,
    f: F,
) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let header = hub.spawn_raw(stack_size, name, move || body::<F, T>(f))?;
    Ok(JoinHandle {
        header,
        _result: PhantomData,
    })
}

/// What a green thread runs: `f`, with its outcome left in the packet.
///
/// This frame stays on the green thread's stack while `f` runs (and parks),
/// so everything but the call of `f` is out of line: a compact stack saves
/// this frame with every parked green thread.
#[inline(always)]
fn body<F, T>(f: F)
where
    F: FnOnce() -> T,
    T: 'static,
{
    let result = if hub::current_killed() {
        killed_before_start(f)
    } else {
        catch_unwind(AssertUnwindSafe(f)).map_err(join_error)
    };
    finish(result);
}

/// Killed before it started: the body does not run, its captures are
/// dropped (here, on the green thread).
#[cold]
#[inline(never)]
fn killed_before_start<F, T>(f: F) -> Result<T, JoinError> {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(f)));
    Err(JoinError::Killed)
}

/// What an unwind out of a green thread's closure means for `join`.
#[inline(never)]
fn join_error(payload: Box<dyn Any + Send>) -> JoinError {
    if payload.is::<Killed>() {
        JoinError::Killed
    } else if payload.is::<TimedOut>() {
        // Only if user code caught a timeout's unwind and let it escape its
        // `with_timeout` (it never escapes by itself).
        JoinError::Panicked(Box::new("a with_timeout unwind escaped its scope"))
    } else {
        JoinError::Panicked(payload)
    }
}

/// The end of a green thread (see the module docs), once its closure has
/// returned or unwound.
#[inline(never)]
fn finish<T: 'static>(result: Result<T, JoinError>) {
    // Its header is the task's (the closure does not carry one: a compact
    // green thread's entry stays small).
    let header = hub::current_header_ptr().expect("a green thread finishes on its hub");
    // SAFETY: the task's slab entry holds an Arc of its header until the hub
    // removes the entry, after this coroutine has returned.
    let header = unsafe { &*header };
    // SAFETY: the body runs on its hub's thread.
    let packet = &unsafe { header.packet() };
    // The unwind, if any, was caught: later parks (in links, in destructors
    // of green-local values) may deliver a kill again.
    hub::clear_unwinding();
    packet.done.set(true);
    run_links(header, packet, &result);
    crate::local::finish(header.id);
    // Links added while a green-local value's destructor parked.
    run_links(header, packet, &result);
    if packet.handle_alive.get() {
        // SAFETY: the JoinHandle of this spawn takes a Kept<T>
        // (`spawn_on` made both with the same T).
        unsafe { packet.put_result::<Kept<T>>(keep(result)) };
        packet.ready.set(true);
    } else {
        if let Err(err @ JoinError::Panicked(_)) = &result {
            report_panic(header.id, header.name.as_deref(), err);
        }
        // Nobody will take the result: drop it now, on the green thread. Its
        // destructor (the value's, or a panic payload's) is user code: a
        // panic there must not escape into the hub.
        if catch_unwind(AssertUnwindSafe(move || drop(result))).is_err() {
            hub::clear_unwinding();
            crate::hub::warn(format_args!(
                "greenhub: dropping the unjoined result of {} panicked",
                hub::describe(header.id, header.name.as_deref())
            ));
        }
    }
    // From here on a link runs at once, with the result in the packet.
    packet.links_ran.set(true);
    if let Some(extra) = packet.take_extra() {
        for (_, waker) in extra.waiters {
            waker.wake();
        }
    }
}

/// A green thread's result as its packet keeps it: a failure in one word
/// (a panic's payload boxed once more; None: killed), so that `()` and
/// other results of up to a word fit the packet's two-word slot, rather than
/// a box of their own each (`Result<(), JoinError>` takes three words).
type Kept<T> = Result<T, Option<Box<Box<dyn Any + Send>>>>;

fn keep<T>(result: Result<T, JoinError>) -> Kept<T> {
    result.map_err(|err| match err {
        JoinError::Panicked(payload) => Some(Box::new(payload)),
        JoinError::Killed => None,
    })
}

fn unkeep<T>(kept: Kept<T>) -> Result<T, JoinError> {
    kept.map_err(|err| match err {
        Some(payload) => JoinError::Panicked(*payload),
        None => JoinError::Killed,
    })
}

/// Registers `waker` to be woken when the green thread finishes.
fn add_waiter(packet: &Inner, waker: &Waker) -> u64 {
    packet.with_extra(|extra| {
        let key = extra.next_waiter;
        extra.next_waiter += 1;
        extra.waiters.push((key, waker.clone()));
        key
    })
}

fn remove_waiter(packet: &Inner, key: u64) {
    if let Some(mut extra) = packet.take_extra() {
        extra.waiters.retain(|(k, _)| *k != key);
        packet.put_extra(extra);
    }
}

/// Runs the links of a finishing green thread, in order, each shielded from
/// the others' panics. Links added meanwhile (by a link) run too.
fn run_links<T: 'static>(header: &Header, packet: &Inner, result: &Result<T, JoinError>) {
    loop {
        // Out of the packet while they run: a link may add links or waiters.
        let Some(mut extra) = packet.take_extra() else {
            break; // most green threads: nobody waits or links
        };
        let links = std::mem::take(&mut extra.links);
        packet.put_extra(extra);
        if links.is_empty() {
            break;
        }
        run_links_slow(header, links, result);
    }
}

#[cold]
fn run_links_slow<T: 'static>(header: &Header, links: Vec<Link>, result: &Result<T, JoinError>) {
    // A `Result<T, JoinError>`, which every link downcasts back.
    let result: &dyn Any = result;
    for link in links {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| link(result))) {
            hub::clear_unwinding();
            let why = if payload.is::<Killed>() {
                "it blocked in a killed green thread"
            } else {
                panic_message(payload.as_ref()).unwrap_or("<non-string payload>")
            };
            crate::hub::warn(format_args!(
                "greenhub: a link of {} panicked: {why}",
                hub::describe(header.id, header.name.as_deref())
            ));
        }
    }
}

/// Waits for every green thread; results in the order given.
pub fn join_all<T>(handles: impl IntoIterator<Item = JoinHandle<T>>) -> Vec<Result<T, JoinError>> {
    handles.into_iter().map(JoinHandle::join).collect()
}

/// Kills every green thread and waits until all have finished (gevent's
/// `killall`). Their `join` then returns [`JoinError::Killed`] (or the value,
/// for any that finished first).
pub fn kill_all<'a, T: 'a>(handles: impl IntoIterator<Item = &'a JoinHandle<T>>) {
    let handles: Vec<&JoinHandle<T>> = handles.into_iter().collect();
    for handle in &handles {
        handle.kill();
    }
    for handle in &handles {
        handle.wait();
    }
}
