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
use crate::coroutine::{Coroutine, Suspender};

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
/// bound to, its entry until it first runs, and its saved stack bytes while
/// evicted. The hub keeps one per slab key; a dedicated green thread's says
/// so (`exec` is `DEDICATED`).
pub(crate) struct Image {
    /// Live bytes at its last suspension: `[base - live, base)` of its
    /// execution stack. `UNSTARTED` while `block` holds its entry.
    live: u32,
    /// Depth of `greenhub::stack::pinned` scopes: evicting is forbidden.
    pub(crate) pinned: u16,
    /// Index of its execution stack, or `DEDICATED`.
    pub(crate) exec: u16,
    /// A block of the hub's image arena: the entry until the first run (see
    /// `EntryHead`), then the first `live` bytes are the saved stack while
    /// evicted; kept while resident, for the next eviction.
    block: Option<Block>,
}

/// The start of a block that holds a green thread's entry: the function that
/// makes its coroutine from the closure stored after it (`entry_offset`).
struct EntryHead {
    make: unsafe fn(*mut u8, GreenStack) -> Coroutine,
}

const UNSTARTED: u32 = u32::MAX;

/// Where in an entry block the closure lies: after the head, aligned.
const fn entry_offset<S>() -> usize {
    std::mem::size_of::<EntryHead>().next_multiple_of(std::mem::align_of::<S>())
}

/// Moves the closure out of the entry block at `block` and makes the
/// coroutine that runs it.
///
/// # Safety
/// The block holds a valid `S` at `entry_offset::<S>()`, written by
/// `Image::bound_to` and not read since, and stays allocated and unwritten
/// until the coroutine has first run (`Image::start`'s caller resumes it
/// at once, and a block is reused only when its image is evicted).
unsafe fn make<S: FnOnce(Suspender) + 'static>(block: *mut u8, stack: GreenStack) -> Coroutine {
    let at = block as usize + entry_offset::<S>();
    // Only the address goes onto the new stack: the closure is moved once,
    // into the frame of `call`, not through every frame of the entry.
    Coroutine::new(stack, move |suspender| {
        // SAFETY: by the caller: a valid S, read once (the image forgets
        // it); the block stays allocated until the green thread has
        // suspended (it becomes its first image).
        unsafe { call::<S>(at as *mut S, suspender) }
    })
}

/// Runs the entry closure at `at`.
///
/// # Safety
/// As for `make`.
#[inline(never)]
unsafe fn call<S: FnOnce(Suspender)>(at: *mut S, suspender: Suspender) {
    // SAFETY: by the caller.
    let start = unsafe { at.read() };
    start(suspender)
}

impl Image {
    /// Not a compact green thread (or no green thread at all).
    pub(crate) const DEDICATED: u16 = u16::MAX;
    /// The most execution stacks a hub may have.
    pub(crate) const MAX_EXECS: usize = u16::MAX as usize;

    /// The place of a green thread bound to execution stack `exec`
    /// (`exec < MAX_EXECS`), which will run `start`. The closure waits in a
    /// block of `arena` (no allocator header, and recycled at once by the
    /// next spawn once the green thread has started); the block stays the
    /// image's until its first eviction, which keeps it if it is big enough.
    pub(crate) fn bound_to<S: FnOnce(Suspender) + 'static>(
        exec: usize,
        start: S,
        arena: &mut ImageArena,
    ) -> Image {
        if std::mem::align_of::<S>() > 16 {
            return Image::bound_boxed(exec, Box::new(start), arena);
        }
        debug_assert!(exec < Image::MAX_EXECS);
        let block = alloc(arena, entry_offset::<S>() + std::mem::size_of::<S>());
        let head = EntryHead { make: make::<S> };
        // SAFETY: the block is ours, 16-byte aligned and has room for the
        // head and, `entry_offset` bytes in (a multiple of S's alignment,
        // which is at most 16, checked above), for an S; `start` is moved in
        // and read back once, by `call` when the green thread first runs.
        unsafe {
            block.as_ptr().cast::<EntryHead>().write(head);
            block
                .as_ptr()
                .add(entry_offset::<S>())
                .cast::<S>()
                .write(start);
        }
        Image {
            live: UNSTARTED,
            pinned: 0,
            exec: exec as u16,
            block: Some(block),
        }
    }

    /// `bound_to` for an over-aligned closure: boxed, its box is the entry.
    #[cold]
    fn bound_boxed(
        exec: usize,
        start: Box<dyn FnOnce(Suspender)>,
        arena: &mut ImageArena,
    ) -> Image {
        Image::bound_to(exec, start, arena)
    }

    /// The entry of a dedicated green thread (or a vacant slab key).
    pub(crate) const fn dedicated() -> Image {
        Image {
            live: 0,
            pinned: 0,
            exec: Image::DEDICATED,
            block: None,
        }
    }

    /// Whether it is a compact green thread's.
    pub(crate) fn is_compact(&self) -> bool {
        self.exec != Image::DEDICATED
    }

    /// Whether the green thread has not run yet (its entry is here).
    pub(crate) fn unstarted(&self) -> bool {
        self.live == UNSTARTED
    }

    /// Makes the coroutine of a green thread that has not run yet, on its
    /// execution stack (which must be free: this writes its first frame).
    /// The caller resumes it at once: its first run moves the closure out of
    /// the block, which stays this image's until then.
    pub(crate) fn start(&mut self, stack: GreenStack) -> Coroutine {
        assert!(self.unstarted(), "a green thread starts once");
        let block = self
            .block
            .as_ref()
            .expect("an unstarted image holds its entry");
        self.live = 0;
        // SAFETY: `bound_to` wrote the head and the closure for this `make`,
        // and `live` said UNSTARTED until now, so neither was read; the block
        // stays ours, untouched until the green thread has suspended (only
        // `evict` writes it), so the closure is there when it first runs.
        unsafe {
            let head = block.as_ptr().cast::<EntryHead>().read();
            (head.make)(block.as_ptr(), stack)
        }
    }

    /// Records where the green thread suspended: `sp` as recorded by
    /// `Suspender::suspend_recording_sp`, `depth` the bytes the switch uses
    /// below it.
    pub(crate) fn suspended(&mut self, stack: &GreenStack, sp: usize, depth: usize) {
        let from = sp.saturating_sub(depth).max(stack.lowest_usable());
        debug_assert!(sp != 0 && from < stack.base());
        let live = stack.base() - from;
        self.live = u32::try_from(live)
            .ok()
            .filter(|&live| live != UNSTARTED)
            .expect("an execution stack under 4 GiB");
        // Debug builds poison what lies below the saved range: were the
        // measured depth ever too small, the green thread would resume on
        // garbage and crash in the tests, rather than run on with bytes that
        // another green thread happened to leave there.
        #[cfg(debug_assertions)]
        {
            let low = from.saturating_sub(1024).max(stack.lowest_usable());
            // SAFETY: [low, from) is usable memory of the execution stack
            // below the suspended occupant's live bytes: nothing uses it
            // until a green thread runs on this stack again.
            unsafe { std::ptr::write_bytes(low as *mut u8, 0xCC, from - low) };
        }
    }

    /// Copies the suspended green thread's live bytes off `stack` into a
    /// block of `arena` (the one it has, if big enough).
    pub(crate) fn evict(&mut self, stack: &GreenStack, arena: &mut ImageArena) {
        debug_assert!(!self.unstarted());
        let len = self.live as usize;
        let from = stack.base() - len;
        debug_assert!(len > 0 && from >= stack.lowest_usable());
        let block = match self.block.take() {
            Some(block) if block.capacity() >= len => block,
            Some(small) => {
                arena.free(small);
                alloc(arena, len)
            }
            None => alloc(arena, len),
        };
        // SAFETY: [from, from + len) lies inside the execution stack
        // (`suspended` clamped it above the guard page), which is mapped and
        // which nothing else uses while its occupant is suspended and the hub
        // runs; the block has room for len bytes and is ours alone.
        unsafe { std::ptr::copy_nonoverlapping(from as *const u8, block.as_ptr(), len) };
        self.block = Some(block);
    }

    /// Copies the saved bytes back to the same addresses.
    pub(crate) fn restore(&mut self, stack: &GreenStack, arena: &mut ImageArena) {
        let block = self
            .block
            .as_ref()
            .expect("an evicted green thread has its bytes in a block");
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
    /// A green thread that never ran must not be released: its entry would
    /// be lost without being dropped.
    pub(crate) fn release(&mut self, arena: &mut ImageArena) {
        debug_assert!(!self.unstarted());
        if let Some(block) = self.block.take() {
            arena.free(block);
        }
    }

    /// Bytes held while evicted (0 while resident: a kept block is spare).
    pub(crate) fn saved(&self, resident: bool) -> usize {
        match &self.block {
            Some(_) if !resident && !self.unstarted() => self.live as usize,
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
