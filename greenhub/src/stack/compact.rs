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

use super::GreenStack;

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

/// A compact green thread's saved stack bytes.
#[derive(Default)]
pub(crate) struct Image {
    pub(crate) exec: usize,
    /// Recorded stack pointer at its last suspension; 0 before it first ran.
    pub(crate) sp: usize,
    /// The bytes `[base - bytes.len(), base)` while evicted.
    pub(crate) bytes: Vec<u8>,
    /// Depth of `greenhub::stack::pinned` scopes: evicting is forbidden.
    pub(crate) pinned: u32,
}

impl Image {
    /// Copies the suspended green thread's live bytes off `stack`.
    pub(crate) fn evict(&mut self, stack: &GreenStack, depth: usize) {
        let base = stack.base();
        let from = self.sp.saturating_sub(depth).max(stack.lowest_usable());
        debug_assert!(self.sp != 0 && from < base);
        self.bytes.clear();
        // SAFETY: [from, base) lies inside the execution stack (clamped above
        // its guard page), which is mapped and which nothing else uses while
        // its occupant is suspended and the hub runs.
        let live = unsafe { std::slice::from_raw_parts(from as *const u8, base - from) };
        self.bytes.extend_from_slice(live);
    }

    /// Copies the saved bytes back to the same addresses.
    pub(crate) fn restore(&mut self, stack: &GreenStack) {
        let base = stack.base();
        let len = self.bytes.len();
        debug_assert!(base - len >= stack.lowest_usable());
        // SAFETY: [base - len, base) lies inside the execution stack, the
        // region this image was evicted from; no green thread runs on the
        // stack now (the previous occupant was evicted first).
        unsafe { std::ptr::copy_nonoverlapping(self.bytes.as_ptr(), (base - len) as *mut u8, len) };
        self.bytes.clear();
        // Keep a small buffer's capacity for the next eviction; give back
        // a big one (a deep call chain once is no reason to hold it).
        if self.bytes.capacity() > 16 * 1024 {
            self.bytes.shrink_to(1024);
        }
    }

    /// Bytes held while evicted.
    pub(crate) fn saved(&self) -> usize {
        self.bytes.len()
    }
}
