//! Execution stacks for green threads: allocation in chunks, guard pages, a
//! per-hub pool, and the stack-overflow report. This is the unsafe core of
//! greenhub together with `coroutine.rs`; everything about stack memory lives
//! here so that compact (copying) stacks can replace part of it.
//!
//! # Picture
//!
//! Stacks are carved out of *chunks*: one `mmap(MAP_NORESERVE)` holds many
//! equal *slots*, so a million stacks cost a thousand mappings, not a million.
//! One slot, addresses growing to the right:
//!
//! ```text
//!  slot start                                                      slot end
//!  | guard page | usable stack             <- grows down  sp | header |
//!  ^ limit()                                                 ^ base()
//!    PROT_NONE    untouched pages cost nothing; the pages      64 B: id, name,
//!    or MADV_     a green thread touched stay resident while    size, for the
//!    GUARD_       the stack sits in the pool (that is what     overflow report
//!    INSTALL      makes a warm spawn cost nanoseconds)
//! ```
//!
//! The guard page is made inaccessible with `MADV_GUARD_INSTALL` (Linux 6.13+:
//! no extra mapping, installed for a whole chunk with `process_madvise`), else
//! with `mprotect` (one extra mapping per stack; the kernel allows 65,530 by
//! default, hence a clear error that names `vm.max_map_count`). A stack
//! overflow touches the guard page; the handler in `overflow.rs` finds the slot
//! from the fault address and prints the header of the green thread.
//!
//! # Invariants
//!
//! - A `GreenStack` is owned by at most one coroutine at a time; the pool
//!   hands it out once and gets it back only from a finished coroutine.
//! - A chunk is unmapped only when its pool is dropped, which the hub does
//!   after every green thread has finished (or been leaked on purpose).
//! - Nothing in greenhub keeps a pointer into a parked green thread's stack.

mod compact;
mod images;
mod overflow;
mod sys;

/// Runs `f` with the current green thread kept on its execution stack: in
/// compact mode (see [`HubBuilder::compact_stacks`](crate::HubBuilder::compact_stacks)),
/// its stack bytes are not moved while `f` runs, even if it parks, so memory
/// on its stack may be lent to other threads or to the kernel for the
/// duration. Other green threads bound to the same execution stack wait until
/// `f` returns. With dedicated stacks (the default), it just runs `f`.
pub fn pinned<R>(f: impl FnOnce() -> R) -> R {
    struct Unpin;
    impl Drop for Unpin {
        fn drop(&mut self) {
            crate::hub::with_hub(|hub| hub.pin(-1));
        }
    }
    crate::hub::with_hub(|hub| hub.pin(1));
    let _unpin = Unpin;
    f()
}

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) use compact::{ExecStack, Image};
pub(crate) use images::{Block, ImageArena};
pub(crate) use overflow::{ensure_alt_stack, install_overflow_handler};
pub(crate) use sys::{force_mprotect_guards, populate};

/// Bytes at the top of each slot that describe its green thread.
const HEADER_SIZE: usize = 64;
/// Longest name kept in the header (for the overflow report).
const NAME_MAX: usize = HEADER_SIZE - 16;

/// Stacks in the first chunk of a size; later chunks double up to the max,
/// and no chunk reserves more than CHUNK_BYTES (unless one stack does).
const FIRST_CHUNK: usize = 64;
const MAX_CHUNK: usize = 1024;
const CHUNK_BYTES: usize = 256 << 20;
/// The largest stack a green thread may ask for.
const MAX_STACK: usize = 1 << 40;
/// Mappings left to the rest of the process when guards cost mappings.
const MAP_HEADROOM: u64 = 4096;

/// What the overflow handler reads about the green thread on a stack.
#[repr(C)]
struct Header {
    id: u64,
    size_kib: u32,
    name_len: u32,
    name: [u8; NAME_MAX],
}

/// One execution stack: a slot of a chunk. Implements corosensei's `Stack`.
#[derive(Debug)]
pub(crate) struct GreenStack {
    /// Lowest address of the slot: the start of the guard page.
    start: usize,
    /// Highest usable address (16-byte aligned); the header lies above it.
    base: usize,
}

impl GreenStack {
    /// The highest address a coroutine on this stack may use (exclusive).
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// The lowest usable address (just above the guard page).
    pub(crate) fn lowest_usable(&self) -> usize {
        self.start + sys::page_size()
    }

    /// Another view of the same stack, for the green threads that take turns
    /// on a compact execution stack. Only the resident one may run on it.
    pub(crate) fn share(&self) -> GreenStack {
        GreenStack {
            start: self.start,
            base: self.base,
        }
    }

    /// Records who runs on this stack, for the overflow report.
    pub(crate) fn set_owner(&mut self, id: u64, name: Option<&str>) {
        let size_kib = ((self.base + HEADER_SIZE - self.start - sys::page_size()) / 1024) as u32;
        let header = self.base as *mut Header;
        // SAFETY: [base, base + HEADER_SIZE) lies inside this slot, above the
        // part a coroutine may use, and this GreenStack owns the slot; the
        // address is 16-byte aligned, enough for Header.
        unsafe { (&raw mut (*header).size_kib).write(size_kib) };
        self.set_occupant(id, name);
    }

    /// [`set_owner`](GreenStack::set_owner) but for the size, which stays:
    /// at every switch between compact green threads, so it writes only
    /// the id and the name, whose bytes are only copied if it has one.
    #[inline]
    pub(crate) fn set_occupant(&mut self, id: u64, name: Option<&str>) {
        let name = name.map_or(&[][..], str::as_bytes);
        let len = name.len().min(NAME_MAX);
        let header = self.base as *mut Header;
        // SAFETY: as in `set_owner`; the name's first `len` bytes fit its
        // NAME_MAX (the reader reads only those).
        unsafe {
            (&raw mut (*header).id).write(id);
            (&raw mut (*header).name_len).write(len as u32);
            if len > 0 {
                std::ptr::copy_nonoverlapping(
                    name.as_ptr(),
                    (&raw mut (*header).name).cast::<u8>(),
                    len,
                );
            }
        }
    }
}

// SAFETY: `base` and `limit` bound one slot of a chunk, with a guard page at
// its bottom (which `limit` includes) and at least MIN_STACK_SIZE usable bytes
// (`slot_size_for` enforces 8 KiB). Only one coroutine runs on the slot at a
// time: the pool hands a dedicated stack out once, and a compact execution
// stack's views (`share`) are used only by its resident green thread. The
// chunk outlives every coroutine on it: the hub drops its tasks before its
// pool (field order), and leaks the whole hub (`mem::forget`) when a green
// thread could not be unwound.
unsafe impl corosensei::stack::Stack for GreenStack {
    fn base(&self) -> corosensei::stack::StackPointer {
        corosensei::stack::StackPointer::new(self.base).expect("stack base is not null")
    }

    fn limit(&self) -> corosensei::stack::StackPointer {
        corosensei::stack::StackPointer::new(self.start).expect("stack limit is not null")
    }
}

/// One mapping holding `slots` stacks of `slot_size` bytes.
struct Chunk {
    start: usize,
    len: usize,
    registry_index: Option<usize>,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(i) = self.registry_index {
            overflow::unregister_chunk(i);
        }
        sys::release(self.start, self.len);
    }
}

/// Stacks of one size.
struct SizeClass {
    slot_size: usize,
    /// Returned stacks whose touched pages are still resident (used first).
    warm: Vec<GreenStack>,
    /// Returned stacks trimmed with MADV_DONTNEED (beyond the warm cap).
    cold: Vec<GreenStack>,
    /// Never-used slots of the newest chunk: `[next, end)` slot starts.
    fresh_next: usize,
    fresh_end: usize,
    chunks: Vec<Chunk>,
    next_chunk_slots: usize,
}

/// A hub's stacks, recycled. Not thread-safe: each hub owns one.
pub(crate) struct StackPool {
    classes: Vec<SizeClass>,
    /// How many free stacks per size keep their pages resident.
    max_warm: usize,
    /// Stacks handed out and not yet returned, for error messages.
    in_use: usize,
}

impl StackPool {
    pub(crate) fn new(max_warm: usize) -> StackPool {
        StackPool {
            classes: Vec::new(),
            max_warm,
            in_use: 0,
        }
    }

    /// The slot size for a requested usable size: whole pages, at least
    /// 8 KiB, the header taken from the top of it, plus the guard page.
    fn slot_size_for(usable: usize) -> io::Result<usize> {
        let page = sys::page_size();
        if usable > MAX_STACK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "greenhub: a green thread stack of {usable} bytes was asked for; \
                     the largest is {} GiB",
                    MAX_STACK >> 30
                ),
            ));
        }
        let usable = usable.max(8 * 1024).div_ceil(page) * page;
        Ok(usable + page)
    }

    /// A stack with at least `usable` bytes, from the pool or a new chunk.
    pub(crate) fn get(&mut self, usable: usize) -> io::Result<GreenStack> {
        let slot_size = Self::slot_size_for(usable)?;
        let class = match self.classes.iter().position(|c| c.slot_size == slot_size) {
            Some(i) => &mut self.classes[i],
            None => {
                self.classes.push(SizeClass {
                    slot_size,
                    warm: Vec::new(),
                    cold: Vec::new(),
                    fresh_next: 0,
                    fresh_end: 0,
                    chunks: Vec::new(),
                    next_chunk_slots: FIRST_CHUNK,
                });
                self.classes.last_mut().expect("just pushed")
            }
        };
        let stack = match class.warm.pop().or_else(|| class.cold.pop()) {
            Some(stack) => stack,
            None => {
                if class.fresh_next == class.fresh_end {
                    class.new_chunk(self.in_use)?;
                }
                let start = class.fresh_next;
                class.fresh_next += slot_size;
                GreenStack {
                    start,
                    base: start + slot_size - HEADER_SIZE,
                }
            }
        };
        self.in_use += 1;
        Ok(stack)
    }

    /// Takes back a stack whose coroutine has finished.
    pub(crate) fn put(&mut self, stack: GreenStack) {
        self.in_use -= 1;
        let slot_size = stack.base + HEADER_SIZE - stack.start;
        let Some(class) = self.classes.iter_mut().find(|c| c.slot_size == slot_size) else {
            return; // not ours: cannot happen, and leaking is the safe answer
        };
        if class.warm.len() < self.max_warm {
            class.warm.push(stack);
        } else {
            let page = sys::page_size();
            sys::trim(stack.start + page, slot_size - page);
            class.cold.push(stack);
        }
    }
}

/// Mappings made by mprotect'ed guard pages in this process (two per stack).
static GUARD_MAPPINGS: AtomicUsize = AtomicUsize::new(0);

fn map_limit_error(in_use: usize, limit: u64, err: Option<io::Error>) -> io::Error {
    let cause = err.map(|e| format!(": {e}")).unwrap_or_default();
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        format!(
            "greenhub: no more green thread stacks ({in_use} in use){cause}. Without \
             MADV_GUARD_INSTALL (Linux 6.13+), each stack's guard page splits its \
             mapping in two, and the kernel allows vm.max_map_count = {limit} \
             mappings per process ({MAP_HEADROOM} are left for the rest of the \
             process). Raise the limit (`sysctl -w vm.max_map_count=2097152`) or \
             run fewer green threads at once"
        ),
    )
}

impl SizeClass {
    fn new_chunk(&mut self, in_use: usize) -> io::Result<()> {
        let mut slots = self
            .next_chunk_slots
            .min(CHUNK_BYTES / self.slot_size)
            .max(1);
        if sys::guards_cost_mappings() {
            // Each mprotect'ed guard page splits its mapping in two. Stop
            // short of the kernel's limit so that the rest of the process
            // (thread stacks, malloc arenas, files) can still map memory.
            let limit = sys::max_map_count().unwrap_or(65_530);
            let used = sys::mapping_count()
                .unwrap_or_else(|| GUARD_MAPPINGS.load(Ordering::Relaxed) as u64);
            let room = limit.saturating_sub(used + 1 + MAP_HEADROOM) / 2;
            if room == 0 {
                return Err(map_limit_error(in_use, limit, None));
            }
            slots = slots.min(room as usize);
        }
        let mut len = slots * self.slot_size;
        let reserved = sys::reserve(len).or_else(|e| {
            if slots == 1 {
                return Err(e);
            }
            // Perhaps one stack still fits where a whole chunk does not.
            slots = 1;
            len = self.slot_size;
            sys::reserve(len)
        });
        let start = reserved.map_err(|e| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "greenhub: cannot reserve memory for green thread stacks \
                     ({slots} stacks of {} KiB, {in_use} in use): {e}; the process \
                     is out of address space or memory (see `ulimit -v`); use \
                     smaller stacks (Builder::stack_size) or fewer green threads",
                    self.slot_size / 1024
                ),
            )
        })?;
        let page = sys::page_size();
        let guards: Vec<(usize, usize)> = (0..slots)
            .map(|i| (start + i * self.slot_size, page))
            .collect();
        let (guarded, err) = sys::install_guards(&guards);
        if sys::guards_cost_mappings() {
            GUARD_MAPPINGS.fetch_add(2 * guarded + 1, Ordering::Relaxed);
        }
        if guarded == 0 {
            sys::release(start, len);
            let limit = sys::max_map_count().unwrap_or(65_530);
            return Err(map_limit_error(in_use, limit, err));
        }
        // Only the guarded prefix is usable; the rest of the mapping stays
        // reserved (and unused) until the chunk is released.
        let end = start + guarded * self.slot_size;
        let registry_index = overflow::register_chunk(start, end, self.slot_size);
        self.chunks.push(Chunk {
            start,
            len,
            registry_index,
        });
        self.fresh_next = start;
        self.fresh_end = end;
        self.next_chunk_slots = (slots * 2).min(MAX_CHUNK);
        Ok(())
    }
}
