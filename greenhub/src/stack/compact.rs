//! Compact stacks: green threads take turns on a few shared execution stacks,
//! and the part of the stack a suspended one used lives on the heap
//! (greenlet's technique).
//!
//! ```text
//!  one execution stack (a slot from the pool: guard page, usable, header)
//!  | guard |            free                |###### in use ######| header |
//!                                           ^ sp - depth         ^ base
//!
//!  evict (the occupant is suspended; another green thread must run here):
//!      copy [sp - depth, base) ──▶ occupant's image (a heap buffer)
//!  restore (before the green thread runs again, at the same address):
//!      copy image ──▶ [base - len, base)
//! ```
//!
//! `sp` is the stack pointer recorded by `Suspender::suspend` and `depth` the
//! bytes the switch itself uses below it (measured once per process, see
//! `coroutine::suspend_depth`). A green thread is bound to one execution stack
//! for its whole life; with no more green threads than execution stacks,
//! nothing is ever copied.
//!
//! # The contract (why turning this on is `unsafe`)
//!
//! While a green thread is evicted, the addresses of its stack hold another
//! green thread's data. Anything that points into a suspended green thread's
//! stack from outside it — another OS thread borrowing it (`std::thread::scope`
//! whose body parks), the kernel writing into it (completion-based I/O into a
//! stack buffer), a future pinned on it and woken from elsewhere — would read
//! or write the wrong data. greenhub itself keeps no such pointer (DESIGN.md
//! §3's rule); `greenhub::stack::pinned` keeps a green thread resident where a
//! user must lend its stack out.

use super::{Block, GreenStack, ImageArena};
use crate::coroutine::Suspender;

/// One shared execution stack and who is on it.
pub(crate) struct ExecStack {
    pub(crate) stack: GreenStack,
    /// The green thread whose bytes are on the stack now.
    pub(crate) occupant: Option<u32>,
    /// Green threads bound to this stack, alive.
    pub(crate) bound: usize,
    /// Green threads waiting for a pinned occupant to let go.
    pub(crate) blocked: Vec<u32>,
}

/// A green thread's place in compact mode: which execution stack it is
/// bound to, and its saved stack bytes while evicted. The hub keeps one per
/// slab key; a dedicated green thread's says so (`exec` is `DEDICATED`).
pub(crate) struct Image {
    /// Live bytes at its last suspension: `[base - live, base)` of its
    /// execution stack. 0 before it first ran.
    live: u32,
    /// Depth of `greenhub::stack::pinned` scopes: evicting is forbidden.
    pub(crate) pinned: u16,
    /// Index of its execution stack, or `DEDICATED`.
    pub(crate) exec: u16,
    store: Store,
}

/// What an image holds.
enum Store {
    /// Nothing (a resident green thread that never was evicted).
    Empty,
    /// A block of the hub's image arena: the saved bytes while evicted, the
    /// first `live` of it; kept while resident, for the next eviction.
    Block(Block),
    /// The green thread's entry, until its first run makes its coroutine.
    Start(Entry),
}

/// A green thread's entry: what its coroutine runs.
pub(crate) type Entry = Box<dyn FnOnce(Suspender)>;

impl Image {
    /// Not a compact green thread (or no green thread at all).
    pub(crate) const DEDICATED: u16 = u16::MAX;
    /// The most execution stacks a hub may have.
    pub(crate) const MAX_EXECS: usize = u16::MAX as usize;

    /// The place of a green thread bound to execution stack `exec`
    /// (`exec < MAX_EXECS`), which will run `start`.
    pub(crate) fn bound_to(exec: usize, start: Entry) -> Image {
        debug_assert!(exec < Image::MAX_EXECS);
        Image {
            live: 0,
            pinned: 0,
            exec: exec as u16,
            store: Store::Start(start),
        }
    }

    /// The entry of a dedicated green thread (or a vacant slab key).
    pub(crate) const fn dedicated() -> Image {
        Image {
            live: 0,
            pinned: 0,
            exec: Image::DEDICATED,
            store: Store::Empty,
        }
    }

    /// Whether it is a compact green thread's.
    pub(crate) fn is_compact(&self) -> bool {
        self.exec != Image::DEDICATED
    }

    /// The entry of a green thread that has not run yet.
    pub(crate) fn take_start(&mut self) -> Option<Entry> {
        match std::mem::replace(&mut self.store, Store::Empty) {
            Store::Start(start) => Some(start),
            other => {
                self.store = other;
                None
            }
        }
    }

    /// Records where the green thread suspended: `sp` as recorded by
    /// `Suspender::suspend_recording_sp`, `depth` the bytes the switch uses
    /// below it.
    pub(crate) fn suspended(&mut self, stack: &GreenStack, sp: usize, depth: usize) {
        let from = sp.saturating_sub(depth).max(stack.lowest_usable());
        debug_assert!(sp != 0 && from < stack.base());
        self.live = u32::try_from(stack.base() - from).expect("an execution stack under 4 GiB");
    }

    /// Copies the suspended green thread's live bytes off `stack` into a
    /// block of `arena` (the one it has, if big enough).
    pub(crate) fn evict(&mut self, stack: &GreenStack, arena: &mut ImageArena) {
        let len = self.live as usize;
        let from = stack.base() - len;
        debug_assert!(len > 0 && from >= stack.lowest_usable());
        let block = match std::mem::replace(&mut self.store, Store::Empty) {
            Store::Block(block) if block.capacity() >= len => block,
            Store::Block(small) => {
                arena.free(small);
                alloc(arena, len)
            }
            Store::Empty => alloc(arena, len),
            Store::Start(_) => unreachable!("a green thread that never ran is never evicted"),
        };
        // SAFETY: [from, from + len) lies inside the execution stack
        // (`suspended` clamped it above the guard page), which is mapped and
        // which nothing else uses while its occupant is suspended and the hub
        // runs; the block has room for len bytes and is ours alone.
        unsafe { std::ptr::copy_nonoverlapping(from as *const u8, block.as_ptr(), len) };
        self.store = Store::Block(block);
    }

    /// Copies the saved bytes back to the same addresses.
    pub(crate) fn restore(&mut self, stack: &GreenStack, arena: &mut ImageArena) {
        let Store::Block(block) = &self.store else {
            unreachable!("an evicted green thread has its bytes in a block")
        };
        let len = self.live as usize;
        let base = stack.base();
        debug_assert!(len <= block.capacity() && base - len >= stack.lowest_usable());
        // SAFETY: [base - len, base) lies inside the execution stack, the
        // region this image was evicted from; no green thread runs on the
        // stack now (the previous occupant was evicted first); the block
        // holds the len bytes saved then.
        unsafe { std::ptr::copy_nonoverlapping(block.as_ptr(), (base - len) as *mut u8, len) };
        // Keep a small block for the next eviction; give back a big one (a
        // deep call chain once is no reason to hold it).
        if block.capacity() > 4096 {
            self.release(arena);
        }
    }

    /// Gives its block back (it has finished, or is resident with a big one).
    pub(crate) fn release(&mut self, arena: &mut ImageArena) {
        if let Store::Block(block) = std::mem::replace(&mut self.store, Store::Empty) {
            arena.free(block);
        }
    }

    /// Bytes held while evicted (0 while resident: a kept block is spare).
    pub(crate) fn saved(&self, resident: bool) -> usize {
        match &self.store {
            Store::Block(_) if !resident => self.live as usize,
            _ => 0,
        }
    }
}

/// A block for `len` bytes, or the process ends the way a failed `Vec`
/// allocation ends it.
fn alloc(arena: &mut ImageArena, len: usize) -> Block {
    arena.alloc(len).unwrap_or_else(|_| {
        std::alloc::handle_alloc_error(
            std::alloc::Layout::from_size_align(len, 16).expect("a valid layout"),
        )
    })
}
