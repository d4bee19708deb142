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
//! Green threads of one kind (one spawn's closure) start with the same
//! frames, so their images end with the same bytes. Each execution stack
//! keeps a few *tops*: the last bytes of an image as an eviction found them.
//! A parked occupant's image is compared with them, 16 bytes at a time, and
//! its last bytes that a top holds stay out of its block: it records which
//! top and how many bytes, and keeps only the 16-byte *holes* where it
//! differs (the few words that are its own: a pointer to its wait node, a
//! counter) behind a mask. `restore` copies the top's bytes back, then the
//! holes.
//!
//! ```text
//!  image  [ own bytes ... | top 2's last 464 B, but for 3 holes: x  x     x ]
//!  block  [ own bytes ... | mask | x | x | x ]    + shared = (top 2, 464 B)
//! ```
//!
//! Below the shared bytes, a parked image's all-zero 16-byte steps (a read
//! buffer that took a short message is mostly zeros) are left out too, a
//! bit each, and `restore` writes them back as zeros.
//!
//! The comparison is exact, and a top is overwritten only when no evicted
//! image uses it, so a restore writes back exactly the bytes evicted. A
//! runnable occupant (it yielded, or was woken) is back soon: it keeps its
//! whole image, without the compare and the second copy.
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

use std::cell::Cell;
use std::mem::{ManuallyDrop, MaybeUninit};

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
    /// The lowest address the occupant uses, as of its last suspension
    /// (see `suspended`); 0 while it has not suspended since it came on.
    from: usize,
    /// Tops of this stack seen at evictions, shared by the images that end
    /// with the same bytes (see `Top`).
    tops: Vec<Top>,
    /// What the last eviction shared (`Image::shared`): those top bytes are
    /// still on the stack, but for the holes in `on_top_holes` (its own
    /// bytes), and a restore that shares them need not copy the rest. 0 once
    /// anything else may have written the stack.
    on_top: u8,
    on_top_holes: u32,
    /// What the last eviction that shared anything shared: the first guess
    /// for an image that has not shared before (green threads of one kind
    /// come in runs).
    last_shared: u8,
}

impl ExecStack {
    /// An execution stack with nobody on it yet.
    pub(crate) fn new(stack: GreenStack) -> ExecStack {
        ExecStack {
            stack,
            occupant: None,
            bound: 0,
            blocked: Vec::new(),
            from: 0,
            tops: Vec::new(),
            on_top: 0,
            on_top_holes: 0,
            last_shared: 0,
        }
    }

    /// A green thread starts on the stack: its top bytes are new.
    pub(crate) fn starting(&mut self) {
        self.on_top = 0;
    }

    /// Records where the occupant suspended: `sp` as recorded by
    /// `Suspender::suspend_recording_sp`, `depth` the bytes the switch uses
    /// below it. At every suspension: its image learns how many bytes it
    /// uses only if it is evicted.
    #[inline]
    pub(crate) fn suspended(&mut self, sp: usize, depth: usize) {
        let from = sp.saturating_sub(depth).max(self.stack.lowest_usable());
        debug_assert!(sp != 0 && from < self.stack.base());
        self.from = from;
        // Debug builds poison what lies below the saved range: were the
        // measured depth ever too small, the green thread would resume on
        // garbage and crash in the tests, rather than run on with bytes that
        // another green thread happened to leave there.
        #[cfg(debug_assertions)]
        {
            let low = from.saturating_sub(1024).max(self.stack.lowest_usable());
            // SAFETY: [low, from) is usable memory of the execution stack
            // below the suspended occupant's live bytes: nothing uses it
            // until a green thread runs on this stack again.
            unsafe { std::ptr::write_bytes(low as *mut u8, 0xCC, from - low) };
        }
    }

    /// A green thread comes on the stack (restored, or starting).
    pub(crate) fn occupied_by(&mut self, key: u32) {
        self.occupant = Some(key);
        self.from = 0;
    }
}

/// The top bytes of an execution stack as one eviction found them: `bytes()`
/// were `[base - len, base)`. Green threads of one kind start alike
/// (corosensei's first frames, the spawn's entry), so an image whose last
/// bytes equal a `Top`'s (compared exactly, but for its holes) leaves them
/// out, and `restore` copies them back from here. A `Top` is never changed
/// while an evicted image uses it (`users`), so what is restored is exactly
/// what was evicted.
struct Top {
    /// The last `len` bytes of `bytes` are the top's.
    bytes: Box<[u8; TOP_MAX]>,
    len: usize,
    /// Evicted images that left out some of these bytes.
    users: u32,
}

/// The most `Top`s an execution stack keeps.
const TOPS: usize = 8;
/// The most top bytes compared and shared (a multiple of 16, at most 31 16-byte
/// steps: `shared_code` keeps it in 5 bits, and a hole mask in a `u32`).
const TOP_MAX: usize = 496;
/// The largest block a resident green thread keeps for its next eviction:
/// 4,368 bytes of frames (a 4 KiB buffer and the switch) need not be
/// allocated and freed at every switch.
const KEEP_MAX: usize = 16 * 1024;
/// Sharing that leaves out fewer bytes than this is not worth a `Top` (a
/// multiple of 16).
const TOP_MIN: usize = 48;
/// `Image::live`'s top bit while evicted: its block holds holes (see
/// `Image::evict`). Free, since execution stacks are at most
/// `Image::MAX_EXEC_SIZE` (512 MiB).
const HOLES: u32 = 1 << 31;
/// `Image::live`'s next bit while evicted: its block holds the bytes below
/// the shared ones without their all-zero 16-byte steps (see `elide_zeros`).
const ZEROS: u32 = 1 << 30;
/// The fewest bytes below the shared ones worth looking through for zeros,
/// and the fewest bytes that leaving them out must save.
const ZEROS_MIN: usize = 256;
const ZEROS_GAIN: usize = 64;

/// A green thread's place in compact mode: which execution stack it is
/// bound to, its entry until it first runs, and its saved stack bytes while
/// evicted. The hub keeps one per slab key; a dedicated green thread's says
/// so (`exec` is `DEDICATED`). 24 bytes.
pub(crate) struct Image {
    /// Live bytes at its last eviction: `[base - live, base)` of its
    /// execution stack (a resident one's are known from `ExecStack::from`),
    /// with `HOLES` and `ZEROS` while evicted with holes or without its
    /// zeros. `UNSTARTED` or `UNSTARTED_INLINE` while it holds its entry.
    live: u32,
    /// Index of its execution stack, or `DEDICATED`.
    pub(crate) exec: u16,
    /// Depth of `greenhub::stack::pinned` scopes: evicting is forbidden.
    pub(crate) pinned: u8,
    /// While evicted: 0, or which `Top` of its execution stack holds its
    /// last bytes and how many (`shared_code`), but for its holes; the block
    /// holds the rest. While resident: what it shared at its last eviction.
    shared: u8,
    /// Which field is in use, `live` says: `entry` while it is
    /// `UNSTARTED_INLINE`, else `block`.
    store: Store,
}

/// An image's memory: a block of the hub's image arena (the entry until the
/// first run, see `EntryHead`; then the saved stack while evicted, kept while
/// resident for the next eviction), or a small entry held inline.
union Store {
    block: ManuallyDrop<Option<Block>>,
    entry: InlineEntry,
}

/// An entry of at most a word, in the image itself: no block at all (most
/// entries: the closure of a spawn that captures a pointer or nothing).
#[derive(Clone, Copy)]
struct InlineEntry {
    make: Make,
    closure: MaybeUninit<usize>,
}

/// Makes a green thread's coroutine from its closure at the address given
/// (an entry block, or an inline entry's word), handing the closure to the
/// first run through `STARTING`.
type Make = unsafe fn(*mut u8, GreenStack) -> Coroutine;

/// The start of a block that holds a green thread's entry: the function that
/// makes its coroutine from the closure stored after it (`entry_offset`).
struct EntryHead {
    make: Make,
}

/// `live` of an image whose entry is in its block.
const UNSTARTED: u32 = u32::MAX;
/// `live` of an image whose entry is inline.
const UNSTARTED_INLINE: u32 = u32::MAX - 1;

/// Where in an entry block the closure lies: after the head, aligned.
const fn entry_offset<S>() -> usize {
    std::mem::size_of::<EntryHead>().next_multiple_of(std::mem::align_of::<S>())
}

/// Whether a closure `S` is kept inline (`InlineEntry`).
const fn fits_inline<S>() -> bool {
    std::mem::size_of::<S>() <= std::mem::size_of::<usize>()
        && std::mem::align_of::<S>() <= std::mem::align_of::<usize>()
}

thread_local! {
    /// The closure of the green thread starting now, for its first run to
    /// move out (`call`). Handed over here rather than captured by the
    /// coroutine, so that the first frames of all green threads of one kind
    /// hold the same bytes (they share them, see `Top`).
    static STARTING: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
    /// Where an inline entry's closure waits for that first run.
    static INLINE: Cell<MaybeUninit<usize>> = const { Cell::new(MaybeUninit::uninit()) };
}

/// Makes the coroutine of the closure in the entry block at `block`.
///
/// # Safety
/// The block holds a valid `S` at `entry_offset::<S>()`, written by
/// `Image::bound_to` and not read since, and stays allocated and unwritten
/// until the coroutine has first run, which is the next coroutine to run on
/// this thread (`Image::start`'s caller resumes it at once; a block is
/// reused only when its image is evicted).
unsafe fn make<S: FnOnce(Suspender) + 'static>(block: *mut u8, stack: GreenStack) -> Coroutine {
    STARTING.set(block.wrapping_add(entry_offset::<S>()));
    // SAFETY: STARTING points to the valid S (by the caller).
    unsafe { starting::<S>(stack) }
}

/// Makes the coroutine of a closure of at most a word from an inline entry.
///
/// # Safety
/// `at` holds a valid `S` (`fits_inline::<S>()`), written by
/// `Image::bound_to` and not read since; the caller forgets it after this,
/// and the coroutine is the next one to run on this thread.
unsafe fn make_inline<S: FnOnce(Suspender) + 'static>(at: *mut u8, stack: GreenStack) -> Coroutine {
    // SAFETY: by the caller, a word holding an S.
    INLINE.set(unsafe { at.cast::<MaybeUninit<usize>>().read() });
    STARTING.set(INLINE.with(|inline| inline.as_ptr().cast()));
    // SAFETY: INLINE holds the S (by the caller), and STARTING points there.
    unsafe { starting::<S>(stack) }
}

/// The coroutine whose first run moves the closure at STARTING out.
///
/// # Safety
/// STARTING points to a valid `S`, unread, and the coroutine is the next
/// one to run on this thread.
unsafe fn starting<S: FnOnce(Suspender) + 'static>(stack: GreenStack) -> Coroutine {
    Coroutine::new(stack, |suspender| {
        // SAFETY: by the caller, STARTING still points to that S.
        unsafe { call::<S>(suspender) }
    })
}

/// Moves the starting green thread's closure out (see `STARTING`) and runs
/// it.
///
/// # Safety
/// STARTING points to a valid `S`, unread, set by `make` or `make_inline`
/// for this coroutine.
#[inline(never)]
unsafe fn call<S: FnOnce(Suspender)>(suspender: Suspender) {
    let at = STARTING.replace(std::ptr::null_mut());
    assert!(!at.is_null(), "a green thread starts with its closure");
    // SAFETY: by the caller (`make`'s block keeps S at an offset aligned
    // for it; INLINE is word-aligned, enough for an inline S).
    let start = unsafe { at.cast::<S>().read() };
    start(suspender)
}

impl Image {
    /// Not a compact green thread (or no green thread at all).
    pub(crate) const DEDICATED: u16 = u16::MAX;
    /// The most execution stacks a hub may have.
    pub(crate) const MAX_EXECS: usize = u16::MAX as usize;
    /// The largest execution stack (usable bytes): what a green thread uses
    /// on it fits `live` beside its flags.
    pub(crate) const MAX_EXEC_SIZE: usize = 512 << 20;

    /// The place of a green thread bound to execution stack `exec`
    /// (`exec < MAX_EXECS`), which will run `start`. A closure of at most a
    /// word waits inline; a bigger one in a block of `arena` (no allocator
    /// header) of at least `room` bytes: the block stays the image's, and
    /// its first eviction keeps it if it fits (see `evict`), so a block
    /// sized for the image it will hold is allocated once.
    pub(crate) fn bound_to<S: FnOnce(Suspender) + 'static>(
        exec: usize,
        start: S,
        arena: &mut ImageArena,
        room: usize,
    ) -> Image {
        debug_assert!(exec < Image::MAX_EXECS);
        if fits_inline::<S>() {
            let mut entry = InlineEntry {
                make: make_inline::<S>,
                closure: MaybeUninit::uninit(),
            };
            // SAFETY: `closure` has room and alignment for an S (checked by
            // `fits_inline`); it is read back once, by `make_inline`, when
            // the green thread first runs (`start`).
            unsafe { entry.closure.as_mut_ptr().cast::<S>().write(start) };
            return Image {
                live: UNSTARTED_INLINE,
                exec: exec as u16,
                pinned: 0,
                shared: 0,
                store: Store { entry },
            };
        }
        if std::mem::align_of::<S>() > 16 {
            return Image::bound_boxed(exec, Box::new(start), arena, room);
        }
        let len = entry_offset::<S>() + std::mem::size_of::<S>();
        let block = alloc(arena, len.max(room));
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
            exec: exec as u16,
            pinned: 0,
            shared: 0,
            store: Store::block(Some(block)),
        }
    }

    /// `bound_to` for an over-aligned closure: boxed, its box is the entry.
    #[cold]
    fn bound_boxed(
        exec: usize,
        start: Box<dyn FnOnce(Suspender)>,
        arena: &mut ImageArena,
        room: usize,
    ) -> Image {
        Image::bound_to(exec, start, arena, room)
    }

    /// The entry of a dedicated green thread (or a vacant slab key).
    pub(crate) const fn dedicated() -> Image {
        Image {
            live: 0,
            exec: Image::DEDICATED,
            pinned: 0,
            shared: 0,
            store: Store::block(None),
        }
    }

    /// Whether it is a compact green thread's.
    pub(crate) fn is_compact(&self) -> bool {
        self.exec != Image::DEDICATED
    }

    /// Whether the green thread has not run yet (its entry is here).
    pub(crate) fn unstarted(&self) -> bool {
        self.live >= UNSTARTED_INLINE
    }

    /// Its block, if it has one.
    fn block(&self) -> Option<&Block> {
        if self.live == UNSTARTED_INLINE {
            return None;
        }
        // SAFETY: `store` holds a block (or None) unless `live` says the
        // entry is inline.
        unsafe { self.store.block.as_ref() }
    }

    /// Takes its block, if it has one. Not while the entry is inline.
    fn take_block(&mut self) -> Option<Block> {
        debug_assert!(self.live != UNSTARTED_INLINE);
        // SAFETY: as in `block`.
        unsafe { (*self.store.block).take() }
    }

    /// Makes the coroutine of a green thread that has not run yet, on its
    /// execution stack (which must be free: this writes its first frame).
    /// The caller resumes it at once: its first run moves the closure out
    /// (of the block, which stays this image's until then).
    pub(crate) fn start(&mut self, stack: GreenStack) -> Coroutine {
        assert!(self.unstarted(), "a green thread starts once");
        if self.live == UNSTARTED_INLINE {
            // SAFETY: `live` says the entry is inline.
            let mut entry = unsafe { self.store.entry };
            self.live = 0;
            self.store = Store::block(None);
            // SAFETY: `bound_to` wrote an S for this `make` into `closure`,
            // unread until now; the image forgets it (its store is empty).
            return unsafe { (entry.make)(entry.closure.as_mut_ptr().cast(), stack) };
        }
        let block = self.block().expect("an unstarted image holds its entry");
        let at = block.as_ptr();
        self.live = 0;
        // SAFETY: `bound_to` wrote the head and the closure for this `make`,
        // and `live` said UNSTARTED until now, so neither was read; the block
        // stays ours, untouched until the green thread has suspended (only
        // `evict` writes it), so the closure is there when it first runs.
        unsafe {
            let head = at.cast::<EntryHead>().read();
            (head.make)(at, stack)
        }
    }

    /// Copies the suspended green thread's live bytes off its execution
    /// stack `exec` into a block of `arena` (the one it has, if it fits: big
    /// enough, and not much bigger), but for the top bytes that one of the
    /// stack's `Top`s holds already, if it is to `share`. Returns how many
    /// bytes it saved.
    ///
    /// The block: the bytes below the shared ones (as they are, or without
    /// their all-zero 16-byte steps: `elide_zeros`), then, if the image has
    /// holes in the shared ones, a 16-byte head holding the hole mask and the
    /// holes, in mask order (bit `i`: the 16 bytes `16 * i` below the
    /// stack's base).
    pub(crate) fn evict(
        &mut self,
        exec: &mut ExecStack,
        arena: &mut ImageArena,
        share: bool,
    ) -> usize {
        debug_assert!(!self.unstarted() && self.live & (HOLES | ZEROS) == 0);
        let base = exec.stack.base();
        assert!(exec.from != 0, "an evicted green thread has suspended");
        let live = base - exec.from;
        // At most MAX_EXEC_SIZE (the hub checks it): the flags fit.
        self.live = live as u32;
        debug_assert!(self.live < ZEROS);
        // What it shared last time is the first guess (a green thread
        // evicted again and again shares the same bytes).
        let shared = share
            .then(|| exec.share_top(live, shared_decode(self.shared)))
            .flatten();
        let Some((index, n, holes)) = shared else {
            // A runnable occupant, or one with no top to share: all of it
            // (the switch's path: nothing else to do).
            let block = self.block_for(arena, live);
            // SAFETY: [base - live, base) lies inside the execution stack
            // (`suspended` clamped it above the guard page), which is mapped
            // and which nothing else uses while its occupant is suspended and
            // the hub runs; the block is ours and has room for `live` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping((base - live) as *const u8, block.as_ptr(), live)
            };
            self.store = Store::block(Some(block));
            self.shared = 0;
            exec.on_top = 0;
            exec.on_top_holes = 0;
            return live;
        };
        let below = live - n;
        // A deep parked frame (a read buffer, say) is mostly zeros: those
        // 16-byte steps are left out, a bit each says which are kept.
        let nonzero = (below >= ZEROS_MIN && (base - live) % 16 == 0 && below % 16 == 0)
            // SAFETY: [base - live, base - n) lies inside the execution
            // stack, 16-byte aligned, and is not written while its occupant
            // is suspended.
            .then(|| unsafe { count_nonzero(base - live, below) })
            .filter(|&nonzero| elided_len(below, nonzero) + ZEROS_GAIN <= below);
        let first = nonzero.map_or(below, |nonzero| elided_len(below, nonzero));
        let len = kept_len(first, holes);
        // All of it shared (a sleeper of a common kind): no block at all.
        let block = match len {
            0 => {
                self.release(arena);
                None
            }
            len => Some(self.block_for(arena, len)),
        };
        if let Some(block) = &block {
            let to = block.as_ptr();
            // SAFETY: [base - live, base) lies inside the execution stack
            // (`suspended` clamped it above the guard page), which is mapped
            // and which nothing else uses while its occupant is suspended and
            // the hub runs; the block is ours and has room for `len` bytes:
            // the `below` bytes (or the `first` bytes of their elided form),
            // then (with holes) the head and one 16-byte step per hole, each
            // hole inside [base - n, base).
            unsafe {
                match nonzero {
                    Some(_) => elide_zeros(base - live, below, to),
                    None => std::ptr::copy_nonoverlapping((base - live) as *const u8, to, below),
                }
                if holes != 0 {
                    let head = first.next_multiple_of(16);
                    to.add(head).cast::<u32>().write_unaligned(holes);
                    for (j, i) in bits(holes).enumerate() {
                        let from = (base - 16 * (i + 1)) as *const u8;
                        std::ptr::copy_nonoverlapping(from, to.add(head + 16 * (j + 1)), 16);
                    }
                }
            }
        }
        self.store = Store::block(block);
        self.shared = shared_code(index, n);
        if holes != 0 {
            self.live |= HOLES;
        }
        if nonzero.is_some() {
            self.live |= ZEROS;
        }
        exec.on_top = self.shared;
        exec.on_top_holes = holes;
        len
    }

    /// A block for `len` (> 0) bytes: the one it has if it fits (big
    /// enough, and not much bigger), else a new one.
    fn block_for(&mut self, arena: &mut ImageArena, len: usize) -> Block {
        match self.take_block() {
            Some(block) if fits(block.capacity(), len) => block,
            other => {
                if let Some(other) = other {
                    arena.free(other);
                }
                alloc(arena, len)
            }
        }
    }

    /// Copies the saved bytes back to the same addresses.
    pub(crate) fn restore(&mut self, exec: &mut ExecStack, arena: &mut ImageArena) {
        debug_assert!(!self.unstarted());
        let (index, shared) = shared_decode(self.shared);
        let base = exec.stack.base();
        let on_top_code = std::mem::take(&mut exec.on_top);
        if shared == 0 {
            // All of it in the block (the switch's path).
            let live = self.live as usize;
            let from = self
                .block()
                .expect("an evicted green thread has its bytes in a block")
                .as_ptr();
            // SAFETY: [base - live, base) lies inside the execution stack,
            // the region this image was evicted from; no green thread runs
            // on the stack now (the previous occupant was evicted first); the
            // block holds the bytes saved then.
            unsafe { std::ptr::copy_nonoverlapping(from, (base - live) as *mut u8, live) };
            exec.on_top_holes = 0;
            self.keep_block(arena);
            return;
        }
        let holes_kept = self.live & HOLES != 0;
        let zeros = self.live & ZEROS != 0;
        self.live &= !(HOLES | ZEROS);
        let live = self.live as usize;
        let below = live - shared;
        debug_assert!(base - live >= exec.stack.lowest_usable());
        let block = (below > 0 || holes_kept).then(|| {
            self.block()
                .expect("an evicted green thread has its unshared bytes in a block")
                .as_ptr()
        });
        let mut first = below;
        if let Some(from) = block {
            // SAFETY: [base - live, base - shared) lies inside the execution
            // stack, the region this image was evicted from; no green thread
            // runs on the stack now (the previous occupant was evicted
            // first); the block holds those bytes first, elided or not (see
            // `evict`).
            unsafe {
                if zeros {
                    first = restore_zeros(from, base - live, below);
                } else {
                    std::ptr::copy_nonoverlapping(from, (base - live) as *mut u8, below);
                }
            }
        }
        let (on_index, on_top) = shared_decode(on_top_code);
        let on_holes = std::mem::take(&mut exec.on_top_holes);
        let top = &mut exec.tops[index];
        let bytes = &top.bytes()[top.len - shared..];
        // The occupant just evicted left the same top bytes, or more of
        // them, on the stack: in place already, but for its holes.
        if on_index == index && on_top >= shared {
            for i in bits(on_holes).take_while(|&i| 16 * i < shared) {
                let at = shared - 16 * (i + 1);
                // SAFETY: [base - 16 (i + 1), base - 16 i) lies inside
                // [base - shared, base), as above; `at` indexes the same
                // 16 bytes of the top's.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        bytes.as_ptr().add(at),
                        (base - 16 * (i + 1)) as *mut u8,
                        16,
                    )
                };
            }
        } else {
            // SAFETY: as above, for [base - shared, base), the last bytes
            // at eviction, which equalled these but for the holes
            // (unchanged since: the top has a user, this image, until
            // now).
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), (base - shared) as *mut u8, shared)
            };
        }
        top.users -= 1;
        if let (true, Some(from)) = (holes_kept, block) {
            let head = first.next_multiple_of(16);
            // SAFETY: the block holds the head (a hole mask) and the
            // holes after the `first` bytes (see `evict`); each hole
            // lies inside [base - shared, base).
            unsafe {
                let holes = hole_mask(from, first);
                for (j, i) in bits(holes).enumerate() {
                    std::ptr::copy_nonoverlapping(
                        from.add(head + 16 * (j + 1)),
                        (base - 16 * (i + 1)) as *mut u8,
                        16,
                    );
                }
            }
        }
        // `shared` stays, as the guess for the next eviction (`saved`
        // does not count it while resident).
        self.keep_block(arena);
    }

    /// Keeps the block for the next eviction (a resident green thread holds
    /// one: one per execution stack at most), unless it is one of the
    /// arena's largest (a deep call chain once is no reason to hold it).
    fn keep_block(&mut self, arena: &mut ImageArena) {
        if self
            .block()
            .is_some_and(|block| block.capacity() > KEEP_MAX)
        {
            self.release(arena);
        }
    }

    /// Gives its block back (it has finished, or is resident with a big one).
    /// A green thread that never ran must not be released: its entry would
    /// be lost without being dropped.
    pub(crate) fn release(&mut self, arena: &mut ImageArena) {
        debug_assert!(!self.unstarted());
        if let Some(block) = self.take_block() {
            arena.free(block);
        }
    }

    /// An evicted image's bytes: (kept in its block, used on the stack: the
    /// kept ones and the top bytes it shares). None if it has not suspended
    /// yet; the caller knows whether it is resident (then this means
    /// nothing).
    pub(crate) fn saved(&self) -> Option<(usize, usize)> {
        if self.unstarted() || self.live & !(HOLES | ZEROS) == 0 {
            return None;
        }
        let live = (self.live & !(HOLES | ZEROS)) as usize;
        let below = live - shared_decode(self.shared).1;
        let Some(block) = self.block() else {
            return Some((below, live));
        };
        let first = match self.live & ZEROS {
            // SAFETY: the block starts with the elided form of `below` bytes
            // (see `evict`).
            ZEROS => unsafe { elided_len(below, stored_steps(block.as_ptr(), below)) },
            _ => below,
        };
        let holes = match self.live & HOLES {
            // SAFETY: an image evicted with holes keeps their mask in its
            // block, after its `first` bytes (see `evict`).
            HOLES => unsafe { hole_mask(block.as_ptr(), first) },
            _ => 0,
        };
        Some((kept_len(first, holes), live))
    }
}

impl ExecStack {
    /// For an eviction of `live` bytes of the suspended occupant: the `Top`
    /// that holds most of its last bytes, how many of them the image shares
    /// (a multiple of 16, at most `live`), and its holes there (bit `i`: the
    /// 16 bytes `16 * i` below the base differ); the top is now used by the
    /// image. Or a new `Top` made of its last bytes, if none saves enough and
    /// there is room; or None.
    ///
    /// `guess`: a `Top` to try first (`(_, 0)`: none).
    fn share_top(&mut self, live: usize, guess: (usize, usize)) -> Option<(usize, usize, u32)> {
        let most = live.min(TOP_MAX) & !15;
        if most < TOP_MIN {
            return None;
        }
        let base = self.stack.base();
        // SAFETY: [base - most, base) lies inside the occupant's live bytes
        // (most <= live), mapped and not written while it is suspended.
        let last = unsafe { std::slice::from_raw_parts((base - most) as *const u8, most) };
        let (guess, _) = match guess {
            (_, 0) => shared_decode(self.last_shared),
            guess => guess,
        };
        // The guess first: most often it holds all of it (one memcmp), or
        // all but a few holes.
        if let Some(top) = self.tops.get_mut(guess) {
            let n = top.len.min(most);
            if n > 0 && top.bytes()[top.len - n..] == last[most - n..] {
                top.users += 1;
                return Some((guess, n, 0));
            }
        }
        let mut best = self
            .tops
            .get(guess)
            .map(|top| (guess, top.share(live, last)))
            .filter(|&(_, (n, holes))| n > 0 && holes.count_ones() <= 4);
        if best.is_none() {
            best = (0..self.tops.len())
                .map(|index| (index, self.tops[index].share(live, last)))
                .filter(|&(_, (n, _))| n > 0)
                .min_by_key(|&(_, (n, holes))| kept_len(live - n, holes));
        }
        let saves = |(_, (n, holes)): (usize, (usize, u32))| live - kept_len(live - n, holes);
        // A top it would share only with holes (an old one of its kind whose
        // words differ, or another kind's), or not enough of: these bytes
        // make a better one, if there is room (its kind's next images match
        // it exactly).
        if best.is_none_or(|best| best.1 .1 != 0 || saves(best) < TOP_MIN) {
            // Remember these bytes, over a `Top` that no evicted image uses
            // or in a new one.
            let free = match self.tops.iter().position(|top| top.users == 0) {
                Some(index) => Some(index),
                None if self.tops.len() < TOPS => {
                    self.tops.push(Top {
                        bytes: Box::new([0; TOP_MAX]),
                        len: 0,
                        users: 0,
                    });
                    Some(self.tops.len() - 1)
                }
                None => None,
            };
            if let Some(index) = free {
                let top = &mut self.tops[index];
                top.bytes[TOP_MAX - most..].copy_from_slice(last);
                top.len = most;
                best = Some((index, (most, 0)));
            }
        }
        let (index, (n, holes)) = best.filter(|&best| saves(best) > 0)?;
        self.tops[index].users += 1;
        self.last_shared = shared_code(index, n);
        Some((index, n, holes))
    }
}

impl Top {
    fn bytes(&self) -> &[u8] {
        &self.bytes[TOP_MAX - self.len..]
    }

    /// How an image of `live` bytes ending with `last` would share this top:
    /// the bytes shared and the holes among them, whichever keeps less: all
    /// of the top it overlaps, with holes, or their common suffix, without.
    fn share(&self, live: usize, last: &[u8]) -> (usize, u32) {
        let overlap = self.len.min(last.len());
        let ours = &self.bytes()[self.len - overlap..];
        let holes = holes(ours, &last[last.len() - overlap..]);
        if holes == 0 {
            return (overlap, 0);
        }
        let suffix = 16 * holes.trailing_zeros() as usize;
        if kept_len(live - suffix, 0) <= kept_len(live - overlap, holes) {
            (suffix, 0)
        } else {
            (overlap, holes)
        }
    }
}

/// The 16-byte steps in which two equally long runs of whole steps differ:
/// bit `i` for the step `16 * i` from their ends.
fn holes(a: &[u8], b: &[u8]) -> u32 {
    debug_assert!(a.len() == b.len() && a.len() % 16 == 0 && a.len() / 16 <= 32);
    // Most often none (one kind of green thread): one memcmp.
    if a == b {
        return 0;
    }
    a.rchunks_exact(16)
        .zip(b.rchunks_exact(16))
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .fold(0, |mask, (i, _)| mask | 1 << i)
}

/// The bytes an evicted image keeps in its block: `below` the shared ones,
/// and with `holes`, a 16-byte head (the mask) and the holes.
fn kept_len(below: usize, holes: u32) -> usize {
    match holes {
        0 => below,
        holes => below.next_multiple_of(16) + 16 * (1 + holes.count_ones() as usize),
    }
}

/// How many 16-byte steps of `[at, at + len)` are not all zero.
///
/// # Safety
/// The range is readable, 16-byte aligned, and `len` a multiple of 16.
unsafe fn count_nonzero(at: usize, len: usize) -> usize {
    debug_assert!(at % 16 == 0 && len % 16 == 0);
    (0..len / 16)
        // SAFETY: each step lies inside the range (by the caller), aligned.
        .filter(|&i| unsafe { ((at + 16 * i) as *const u128).read() } != 0)
        .count()
}

/// The bytes of the elided form of `len` bytes (a multiple of 16) of which
/// `nonzero` 16-byte steps are not all zero: a bit per step, in `u64`s
/// padded to 16 bytes, then those steps.
fn elided_len(len: usize, nonzero: usize) -> usize {
    ((len / 16).div_ceil(64) * 8).next_multiple_of(16) + 16 * nonzero
}

/// Writes the elided form of `[from, from + len)` at `to`.
///
/// # Safety
/// As for `count_nonzero`, for the source; `to` has room for the elided form
/// (`elided_len`), is 16-byte aligned and overlaps nothing of the source.
unsafe fn elide_zeros(from: usize, len: usize, to: *mut u8) {
    let steps = len / 16;
    let words = steps.div_ceil(64);
    let mut stored = to.wrapping_add((words * 8).next_multiple_of(16));
    for word in 0..words {
        let mut bits = 0u64;
        for bit in 0..(steps - 64 * word).min(64) {
            let at = (from + 16 * (64 * word + bit)) as *const u128;
            // SAFETY: a step of the source (by the caller), aligned; `stored`
            // stays inside the room for the steps (at most `nonzero`).
            unsafe {
                let step = at.read();
                if step != 0 {
                    bits |= 1 << bit;
                    stored.cast::<u128>().write_unaligned(step);
                    stored = stored.add(16);
                }
            }
        }
        // SAFETY: word `word` of the mask lies inside `to`'s room.
        unsafe { to.add(8 * word).cast::<u64>().write_unaligned(bits) };
    }
}

/// How many steps the elided form at `from`, of `len` bytes, stores.
///
/// # Safety
/// `from` holds the elided form of `len` bytes (`elide_zeros`).
unsafe fn stored_steps(from: *const u8, len: usize) -> usize {
    (0..(len / 16).div_ceil(64))
        // SAFETY: the mask words lie at its start (by the caller).
        .map(|word| unsafe { from.add(8 * word).cast::<u64>().read_unaligned() }.count_ones())
        .sum::<u32>() as usize
}

/// Writes `[to, to + len)` back from its elided form at `from`: zeros, then
/// the stored steps. Returns the elided form's length.
///
/// # Safety
/// `from` holds the elided form of `len` bytes (`elide_zeros`); the
/// destination is writable, 16-byte aligned, and overlaps nothing of it.
unsafe fn restore_zeros(from: *const u8, to: usize, len: usize) -> usize {
    let steps = len / 16;
    let words = steps.div_ceil(64);
    // SAFETY: the destination is writable (by the caller).
    unsafe { std::ptr::write_bytes(to as *mut u8, 0, len) };
    let mut stored = from.wrapping_add((words * 8).next_multiple_of(16));
    let mut count = 0;
    for word in 0..words {
        // SAFETY: the mask word lies at its start (by the caller).
        let mut bits = unsafe { from.add(8 * word).cast::<u64>().read_unaligned() };
        while bits != 0 {
            let bit = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            // SAFETY: the stored steps follow the mask, one per set bit, and
            // each set bit names a step of the destination.
            unsafe {
                let step = stored.cast::<u128>().read_unaligned();
                ((to + 16 * (64 * word + bit)) as *mut u128).write(step);
                stored = stored.add(16);
            }
            count += 1;
        }
    }
    elided_len(len, count)
}

/// The hole mask of a block whose first part takes `first` bytes: in the
/// head after it (see `Image::evict`).
///
/// # Safety
/// The block holds holes after a first part of `first` bytes.
unsafe fn hole_mask(block: *const u8, first: usize) -> u32 {
    // SAFETY: by the caller, the head lies there.
    unsafe {
        block
            .add(first.next_multiple_of(16))
            .cast::<u32>()
            .read_unaligned()
    }
}

/// The set bits of `mask`, lowest first.
fn bits(mut mask: u32) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let i = mask.trailing_zeros();
        mask &= mask.wrapping_sub(1);
        (i < 32).then_some(i as usize)
    })
}

/// `Image::shared` of `n` bytes (16 ≤ n ≤ TOP_MAX, a multiple of 16) in
/// `Top` number `index` (< TOPS).
fn shared_code(index: usize, n: usize) -> u8 {
    debug_assert!(index < TOPS && n % 16 == 0 && (16..=TOP_MAX).contains(&n));
    ((index << 5) | (n >> 4)) as u8
}

/// `(index, bytes)` of an `Image::shared`; bytes is 0 if it shares none.
fn shared_decode(code: u8) -> (usize, usize) {
    ((code >> 5) as usize, ((code & 31) as usize) << 4)
}

impl Store {
    const fn block(block: Option<Block>) -> Store {
        Store {
            block: ManuallyDrop::new(block),
        }
    }
}

/// Whether a block of `capacity` bytes is the one to keep `len` bytes in: it
/// has room, and wastes at most a quarter (plus a class step) of it. A block
/// that is much too big (an entry sized for a bigger image, a deep call chain
/// once) is swapped for one that fits.
fn fits(capacity: usize, len: usize) -> bool {
    capacity >= len && capacity - len <= len / 4 + 16
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_the_differing_16_byte_steps_from_the_end() {
        let a: Vec<u8> = (0..=255).collect();
        let mut b = a.clone();
        assert_eq!(holes(&a, &b), 0);
        b[255 - 20] ^= 1;
        assert_eq!(holes(&a, &b), 0b10, "a change 21 bytes from the end");
        b[0] ^= 1;
        assert_eq!(holes(&a, &b), 0b10 | 1 << 15);
        assert_eq!(holes(&a[..16], &b[..16]), 1);
    }

    #[test]
    fn zeros_are_left_out_and_put_back() {
        #[repr(align(16))]
        struct Bytes([u8; 2064]);
        let mut image = Bytes([0; 2064]);
        for at in [0, 17, 500, 1024, 2063] {
            image.0[at] = at as u8 | 1;
        }
        let (from, len) = (image.0.as_ptr() as usize, image.0.len());
        // SAFETY: a readable, aligned buffer of whole 16-byte steps.
        let nonzero = unsafe { count_nonzero(from, len) };
        assert_eq!(nonzero, 5, "the steps of 0, 17, 500, 1024 and 2063");
        // 129 steps: three mask words (24 bytes, padded to 32), five steps.
        assert_eq!(elided_len(len, nonzero), 32 + 5 * 16);
        let mut elided = Bytes([0xAA; 2064]);
        // SAFETY: room for the elided form, aligned, apart from the source.
        unsafe { elide_zeros(from, len, elided.0.as_mut_ptr()) };
        // SAFETY: it holds the elided form just written.
        assert_eq!(unsafe { stored_steps(elided.0.as_ptr(), len) }, 5);
        let mut back = Bytes([0xFF; 2064]);
        // SAFETY: as above, into a writable, aligned buffer.
        let used = unsafe { restore_zeros(elided.0.as_ptr(), back.0.as_mut_ptr() as usize, len) };
        assert_eq!(used, elided_len(len, nonzero));
        assert!(back.0 == image.0, "the bytes come back, zeros and all");
    }

    #[test]
    fn kept_lengths_and_bits() {
        assert_eq!(kept_len(100, 0), 100);
        assert_eq!(kept_len(0, 0b101), 48, "a head and two holes");
        assert_eq!(kept_len(100, 1), 112 + 32);
        assert_eq!(bits(0).count(), 0);
        assert_eq!(bits(0b1010_0001).collect::<Vec<_>>(), [0, 5, 7]);
        assert_eq!(bits(1 << 31).collect::<Vec<_>>(), [31]);
    }

    #[test]
    fn a_top_is_shared_with_holes_or_up_to_the_first_difference() {
        let mut top = Top {
            bytes: Box::new([7; TOP_MAX]),
            len: 160,
            users: 0,
        };
        let mut last = vec![7u8; 160];
        assert_eq!(top.share(400, &last), (160, 0), "all of it");
        last[160 - 40] = 1; // in the third step from the end
        assert_eq!(top.share(400, &last), (160, 0b100), "one hole");
        last[5] = 1; // and in the tenth, the last one
        assert_eq!(top.share(400, &last), (160, 0b10_0000_0100));
        // Holes cost their bytes and a head: when they cost more than the
        // bytes they let it share, the common suffix alone is shared.
        let mut last = vec![7u8; 160];
        for step in 1..10 {
            last[160 - 16 * step - 1] = 1;
        }
        assert_eq!(top.share(400, &last), (16, 0));
        top.len = 48;
        assert_eq!(top.share(48, &last[112..]), (16, 0), "the top bounds it");
    }

    #[test]
    fn shared_codes_round_trip() {
        assert_eq!(shared_decode(0), (0, 0));
        for index in 0..TOPS {
            for n in (16..=TOP_MAX).step_by(16) {
                assert_eq!(shared_decode(shared_code(index, n)), (index, n));
                assert_ne!(shared_code(index, n), 0);
            }
        }
    }
}
