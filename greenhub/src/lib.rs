//! Green threads for Rust: gevent's model — stackful coroutines scheduled
//! cooperatively by a per-OS-thread *hub* — with plain synchronous code.
//!
//! ```
//! use std::time::Duration;
//!
//! let total = greenhub::run(|| {
//!     // Ten thousand green threads, each sleeping 10 ms: done in ~10 ms.
//!     let handles: Vec<_> = (0..10_000u64)
//!         .map(|i| greenhub::spawn(move || {
//!             greenhub::sleep(Duration::from_millis(10));
//!             i
//!         }))
//!         .collect();
//!     handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
//! })
//! .unwrap();
//! assert_eq!(total, 10_000 * 9_999 / 2);
//! ```
//!
//! # The model
//!
//! [`run`] makes a hub on the calling OS thread and runs its closure as the
//! *main* green thread. A green thread runs until it blocks (sleep, join, an
//! [`sync::Event`], …) or yields; the hub then runs the next ready one, or
//! waits for timers and I/O. Green threads never move between OS threads, so
//! they may share `Rc` and `RefCell` data, and `spawn` takes closures that
//! need not be `Send`.
//!
//! - [`JoinHandle::kill`] and [`with_timeout`] cancel by unwinding the target
//!   from the call it is blocked in: destructors run, `join` reports
//!   [`JoinError::Killed`]. This needs `panic = "unwind"` (the default).
//! - A panic in a green thread is caught and handed to `join`; the hub and the
//!   other green threads go on.
//! - When the main green thread waits on something nothing can ever set,
//!   `run` returns [`Error::Deadlock`] naming every parked green thread,
//!   instead of hanging.
//! - Each green thread has its own stack (32 KiB usable by default, see
//!   [`HubBuilder::stack_size`]) with a guard page; an overflow is reported
//!   with the green thread's id and name before the process aborts. With
//!   [`HubBuilder::compact_stacks`] (`unsafe`: read its contract) green
//!   threads share a few stacks and a parked one keeps only the bytes it used.
//! - [`sync`] has what programs are built from — events, queues, channels,
//!   semaphores, locks, groups, pools, waiting on many things — all FIFO-fair,
//!   all usable between green threads, hubs and plain OS threads.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod blocking;
mod coroutine;
pub mod fs;
mod hub;
pub mod local;
pub mod net;
mod packet;
pub mod server;
pub mod stack;
pub mod sync;
mod task;
mod time;

use std::fmt;

pub use task::{
    current, join_all, kill_all, spawn, Builder, GreenId, GreenThread, JoinError, JoinHandle,
};
pub use time::{sleep, sleep_until, spawn_later, with_timeout, yield_now, Elapsed};

/// Why [`run`] returned no value.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The main green thread waited on something that nothing can ever wake.
    Deadlock(Vec<ParkedThread>),
    /// The main green thread was killed.
    MainKilled,
    /// `run` was called from inside a hub (hubs do not nest).
    NestedRun,
    /// The hub could not be set up (event loop or the main green thread's stack).
    Io(std::io::Error),
}

/// A green thread found parked when a deadlock was detected.
#[derive(Debug, Clone)]
pub struct ParkedThread {
    /// Its id.
    pub id: GreenId,
    /// Its name, if any.
    pub name: Option<String>,
    /// What it was waiting on.
    pub waiting_on: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Deadlock(parked) => {
                write!(
                    f,
                    "deadlock: the main green thread waits, and nothing can ever wake \
                     any of the {} parked green thread(s):",
                    parked.len()
                )?;
                for p in parked {
                    write!(f, "\n  green thread {}", p.id)?;
                    if let Some(name) = &p.name {
                        write!(f, " '{name}'")?;
                    }
                    write!(f, " waits on {}", p.waiting_on)?;
                }
                Ok(())
            }
            Error::MainKilled => f.write_str("the main green thread was killed"),
            Error::NestedRun => f.write_str(
                "greenhub::run called from inside a green thread: hubs do not nest; \
                 spawn a green thread instead",
            ),
            Error::Io(e) => write!(f, "cannot start the hub: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Runs `main` as the main green thread of a new hub on this OS thread and
/// returns its value once it returns. Green threads still alive then are
/// killed (unwound) before `run` returns.
///
/// If `main` panics, `run` resumes that panic after the hub has shut down (as
/// `std::thread::scope` does).
pub fn run<T: 'static>(main: impl FnOnce() -> T + 'static) -> Result<T, Error> {
    HubBuilder::new().run(main)
}

/// Settings for a hub, then [`HubBuilder::run`].
#[derive(Debug, Clone)]
pub struct HubBuilder {
    config: hub::Config,
}

impl Default for HubBuilder {
    fn default() -> Self {
        HubBuilder::new()
    }
}

impl HubBuilder {
    /// The defaults: 32 KiB stacks for spawned green threads, 1 MiB for the
    /// main one, 65,536 free stacks per size kept resident for reuse.
    ///
    /// Why 32 KiB: a parked green thread costs the pages it touched (one, for
    /// most) plus 1/512 of its reservation in page tables, so small is cheap;
    /// but Rust's default panic hook with `RUST_BACKTRACE=1` needs about
    /// 20 KiB to print a backtrace, and 16 KiB overflows there.
    pub fn new() -> HubBuilder {
        HubBuilder {
            config: hub::Config {
                stack_size: 32 * 1024,
                main_stack_size: 1024 * 1024,
                max_warm_stacks: 65_536,
                // Built with `--cfg greenhub_compact` (the test matrix), every
                // hub is compact unless told otherwise.
                compact: cfg!(greenhub_compact).then_some((8, 256 * 1024)),
            },
        }
    }

    /// Usable stack bytes of each spawned green thread (rounded up to whole
    /// pages, at least 8 KiB). Memory is reserved, not committed: a green
    /// thread costs the pages it touches, plus 1/512 of this in page tables.
    pub fn stack_size(mut self, bytes: usize) -> HubBuilder {
        self.config.stack_size = bytes;
        self
    }

    /// Usable stack bytes of the main green thread.
    pub fn main_stack_size(mut self, bytes: usize) -> HubBuilder {
        self.config.main_stack_size = bytes;
        self
    }

    /// How many free stacks (per size) keep their touched pages resident for
    /// the next spawn; beyond that, freed stacks are given back to the kernel.
    pub fn max_warm_stacks(mut self, stacks: usize) -> HubBuilder {
        self.config.max_warm_stacks = stacks;
        self
    }

    /// Compact stacks (greenlet's technique): green threads of the default
    /// size take turns on `stacks` shared execution stacks of `stack_size`
    /// usable bytes each, and a suspended one keeps only the bytes it really
    /// used, copied to the heap — a few hundred bytes for a parked green
    /// thread instead of a 4 KiB page, fewer where green threads of one kind
    /// share the top bytes of their stacks. A green thread is bound to one
    /// execution stack for life; a switch to it copies when another green
    /// thread's bytes occupy that stack (a round trip between two green
    /// threads on one stack: about 135 ns, plus 45 ns per KiB in use). Green
    /// threads spawned with an explicit [`Builder::stack_size`], and the main
    /// green thread, keep dedicated stacks. See the [`stack`] module for the
    /// picture. Execution stacks hold at most 512 MiB each: a bigger
    /// `stack_size` makes `run` fail with an error.
    ///
    /// # Safety
    ///
    /// While a green thread is parked, its stack's addresses may hold another
    /// green thread's bytes. So while a green thread is parked, **nothing
    /// outside it may read or write its stack**:
    /// - no `std::thread::scope` (or rayon/crossbeam scope) whose body parks
    ///   cooperatively while other threads borrow the green thread's locals;
    /// - no completion-based I/O (io_uring, AIO) into buffers on the stack;
    /// - no future pinned on the stack whose waker is written from another
    ///   thread, and no pointer into the stack handed to another OS thread.
    ///
    /// Wrap such code in [`stack::pinned`], which keeps the green thread on
    /// its execution stack (the others bound to it wait). greenhub itself
    /// keeps no pointer into a parked green thread's stack.
    pub unsafe fn compact_stacks(mut self, stacks: usize, stack_size: usize) -> HubBuilder {
        self.config.compact = Some((stacks.max(1), stack_size));
        self
    }

    /// Dedicated stacks for every green thread (the default, unless the crate
    /// was built with `--cfg greenhub_compact`).
    pub fn dedicated_stacks(mut self) -> HubBuilder {
        self.config.compact = None;
        self
    }

    /// Runs `main` on a new hub on this OS thread (see [`run`]).
    pub fn run<T: 'static>(self, main: impl FnOnce() -> T + 'static) -> Result<T, Error> {
        hub::run(self.config, main)
    }
}

/// The README's example is compiled and run as a doctest, so the first thing
/// a newcomer copies always works.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// Test and diagnostic switches. Not part of the stable API.
#[doc(hidden)]
pub mod testing {
    /// Installs guard pages with `mprotect` (one mapping each) even where the
    /// kernel offers `MADV_GUARD_INSTALL`, to exercise the mapping limit.
    pub fn force_mprotect_guards() {
        crate::stack::force_mprotect_guards();
    }

    /// Compact mode: (green threads evicted, stack bytes they keep on the
    /// heap) on this OS thread's hub; (0, 0) outside a hub. Top bytes they
    /// share with others of their kind are not counted (see
    /// [`evicted_stack_images`]).
    pub fn evicted_stack_bytes() -> (usize, usize) {
        let (n, kept, _) = evicted_stacks();
        (n, kept)
    }

    /// Compact mode: (green threads evicted, stack bytes they used: their
    /// images, the bytes they keep and the top bytes they share).
    pub fn evicted_stack_images() -> (usize, usize) {
        let (n, _, used) = evicted_stacks();
        (n, used)
    }

    fn evicted_stacks() -> (usize, usize, usize) {
        crate::hub::with_hub(|hub| hub.evicted_bytes()).unwrap_or((0, 0, 0))
    }
}
