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
//! A parked occupant's image is compared with them, and the longest common
//! suffix (whole 16-byte steps) stays out of its block: it records which top
//! and how much, and `restore` copies those bytes back from the top.
//!
//! ```text
//!  image  [ own bytes ........ | same as top 2's last 128 B ]
//!  block  [ own bytes ........ ]     + shared = (top 2, 128 B)
//! ```
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
    /// Tops of this stack seen at evictions, shared by the images that end
    /// with the same bytes (see `Top`).
    tops: Vec<Top>,
    /// What the last eviction shared (`Image::shared`): those top bytes are
    /// still on the stack, and a restore that shares them need not copy
    /// them. 0 once anything else may have written the stack.
    on_top: u8,
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
            tops: Vec::new(),
            on_top: 0,
            last_shared: 0,
        }
    }

    /// A green thread starts on the stack: its top bytes are new.
    pub(crate) fn starting(&mut self) {
        self.on_top = 0;
    }
}

/// The top bytes of an execution stack as one eviction found them: `bytes()`
/// were `[base - len, base)`. Green threads of one kind start alike
/// (corosensei's first frames, the spawn's entry), so an image whose last
/// bytes equal a `Top`'s (compared exactly) leaves them out, and `restore`
/// copies them back from here. A `Top` is never changed while an evicted
/// image uses it (`users`), so what is restored is exactly what was evicted.
struct Top {
    /// The last `len` bytes of `bytes` are the top's.
    bytes: Box<[u8; TOP_MAX]>,
    len: usize,
    /// Evicted images that left out some of these bytes.
    users: u32,
}

/// The most `Top`s an execution stack keeps.
const TOPS: usize = 8;
/// The most top bytes compared and shared (a multiple of 16).
const TOP_MAX: usize = 256;
/// The largest block a resident green thread keeps for its next eviction:
/// 4,368 bytes of frames (a 4 KiB buffer and the switch) need not be
/// allocated and freed at every switch.
const KEEP_MAX: usize = 16 * 1024;
/// A match shorter than this is not worth a `Top` (a multiple of 16).
const TOP_MIN: usize = 48;

/// A green thread's place in compact mode: which execution stack it is
/// bound to, its entry until it first runs, and its saved stack bytes while
/// evicted. The hub keeps one per slab key; a dedicated green thread's says
/// so (`exec` is `DEDICATED`). 24 bytes.
pub(crate) struct Image {
    /// Live bytes at its last suspension: `[base - live, base)` of its
    /// execution stack. `UNSTARTED` or `UNSTARTED_INLINE` while it holds its
    /// entry.
    live: u32,
    /// Index of its execution stack, or `DEDICATED`.
    pub(crate) exec: u16,
    /// Depth of `greenhub::stack::pinned` scopes: evicting is forbidden.
    pub(crate) pinned: u8,
    /// While evicted: 0, or which `Top` of its execution stack holds its
    /// last bytes and how many (`shared_code`); the block holds the rest.
    /// While resident: what it shared at its last eviction.
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

    /// Records where the green thread suspended: `sp` as recorded by
    /// `Suspender::suspend_recording_sp`, `depth` the bytes the switch uses
    /// below it.
    pub(crate) fn suspended(&mut self, stack: &GreenStack, sp: usize, depth: usize) {
        let from = sp.saturating_sub(depth).max(stack.lowest_usable());
        debug_assert!(sp != 0 && from < stack.base());
        let live = stack.base() - from;
        self.live = u32::try_from(live)
            .ok()
            .filter(|&live| live < UNSTARTED_INLINE)
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

    /// Copies the suspended green thread's live bytes off its execution
    /// stack `exec` into a block of `arena` (the one it has, if it fits: big
    /// enough, and not much bigger), but for the top bytes that one of the
    /// stack's `Top`s holds already, if it is to `share`. Returns how many
    /// bytes it saved.
    pub(crate) fn evict(
        &mut self,
        exec: &mut ExecStack,
        arena: &mut ImageArena,
        share: bool,
    ) -> usize {
        debug_assert!(!self.unstarted());
        let stack = &exec.stack;
        let live = self.live as usize;
        let base = stack.base();
        debug_assert!(live > 0 && base - live >= stack.lowest_usable());
        // What it shared last time is the first guess (a green thread
        // evicted again and again shares the same bytes).
        let shared = if share {
            exec.share_top(live, shared_decode(self.shared))
        } else {
            None
        };
        let len = live - shared.map_or(0, |(_, n)| n);
        // All of it shared (a sleeper of a common kind): no block at all.
        let block = match self.take_block() {
            Some(block) if len > 0 && fits(block.capacity(), len) => Some(block),
            other => {
                if let Some(other) = other {
                    arena.free(other);
                }
                (len > 0).then(|| alloc(arena, len))
            }
        };
        if let Some(block) = &block {
            // SAFETY: [base - live, base - live + len) lies inside the
            // execution stack (`suspended` clamped it above the guard page),
            // which is mapped and which nothing else uses while its occupant
            // is suspended and the hub runs; the block has room for len
            // bytes and is ours.
            unsafe {
                std::ptr::copy_nonoverlapping((base - live) as *const u8, block.as_ptr(), len)
            };
        }
        self.store = Store::block(block);
        self.shared = shared.map_or(0, |(index, n)| shared_code(index, n));
        exec.on_top = self.shared;
        len
    }

    /// Copies the saved bytes back to the same addresses.
    pub(crate) fn restore(&mut self, exec: &mut ExecStack, arena: &mut ImageArena) {
        debug_assert!(!self.unstarted());
        let live = self.live as usize;
        let base = exec.stack.base();
        let (index, shared) = shared_decode(self.shared);
        let len = live - shared;
        if len > 0 {
            let block = self
                .block()
                .expect("an evicted green thread has its unshared bytes in a block");
            debug_assert!(len <= block.capacity() && base - live >= exec.stack.lowest_usable());
            // SAFETY: [base - live, base) lies inside the execution stack,
            // the region this image was evicted from; no green thread runs
            // on the stack now (the previous occupant was evicted first); the
            // block holds the first len bytes saved then.
            unsafe { std::ptr::copy_nonoverlapping(block.as_ptr(), (base - live) as *mut u8, len) };
        }
        let (on_index, on_top) = shared_decode(std::mem::take(&mut exec.on_top));
        if shared > 0 {
            let top = &mut exec.tops[index];
            // The occupant just evicted left the same top bytes, or more of
            // them, on the stack: they are in place already.
            if on_index != index || on_top < shared {
                let bytes = &top.bytes()[top.len - shared..];
                // SAFETY: as above, for [base - shared, base), the last bytes
                // at eviction, which equalled these (unchanged since: the
                // top has a user, this image, until now).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        (base - shared) as *mut u8,
                        shared,
                    )
                };
            }
            top.users -= 1;
            // `shared` stays, as the guess for the next eviction (`saved`
            // does not count it while resident).
        }
        // Keep the block for the next eviction (a resident green thread holds
        // one: one per execution stack at most), unless it is one of the
        // arena's largest (a deep call chain once is no reason to hold it).
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
        let live = self.live as usize;
        (!self.unstarted() && live > 0).then(|| (live - shared_decode(self.shared).1, live))
    }
}

impl ExecStack {
    /// For an eviction of `live` bytes of the suspended occupant: the `Top`
    /// whose bytes its last ones equal, and how many of them (a multiple of
    /// 16, at most `live`), now used by the image; or a new `Top` made of
    /// its last bytes, if there is room; or None.
    ///
    /// `guess`: a `Top` and length to try first (`(_, 0)`: none).
    fn share_top(&mut self, live: usize, guess: (usize, usize)) -> Option<(usize, usize)> {
        let most = live.min(TOP_MAX) & !15;
        if most < TOP_MIN {
            return None;
        }
        let base = self.stack.base();
        // SAFETY: [base - most, base) lies inside the occupant's live bytes
        // (most <= live), mapped and not written while it is suspended.
        let last = unsafe { std::slice::from_raw_parts((base - most) as *const u8, most) };
        let (index, n) = match guess {
            (_, 0) => shared_decode(self.last_shared),
            guess => guess,
        };
        if let Some(top) = self.tops.get_mut(index) {
            if n > 0 && n <= most.min(top.len) && top.bytes()[top.len - n..] == last[most - n..] {
                top.users += 1;
                return Some((index, n));
            }
        }
        let mut best: Option<(usize, usize)> = None;
        for (index, top) in self.tops.iter().enumerate() {
            let n = common_suffix(top.bytes(), last);
            if n >= TOP_MIN && best.is_none_or(|(_, m)| n > m) {
                best = Some((index, n));
                if n == top.len.min(most) {
                    break; // all it could share
                }
            }
        }
        if best.is_none() {
            // Remember these bytes, over a `Top` that no evicted image uses
            // or in a new one.
            let index = match self.tops.iter().position(|top| top.users == 0) {
                Some(index) => index,
                None if self.tops.len() < TOPS => {
                    self.tops.push(Top {
                        bytes: Box::new([0; TOP_MAX]),
                        len: 0,
                        users: 0,
                    });
                    self.tops.len() - 1
                }
                None => return None,
            };
            let top = &mut self.tops[index];
            top.bytes[TOP_MAX - most..].copy_from_slice(last);
            top.len = most;
            best = Some((index, most));
        }
        let (index, n) = best?;
        self.tops[index].users += 1;
        self.last_shared = shared_code(index, n);
        Some((index, n))
    }
}

impl Top {
    fn bytes(&self) -> &[u8] {
        &self.bytes[TOP_MAX - self.len..]
    }
}

/// How many bytes `a` and `b` end with in common, in whole 16-byte steps.
/// (On the eviction path: no bounds checks, one 16-byte compare a step.)
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let steps = a.len().min(b.len()) / 16;
    // Most often all of it (one kind of green thread): one memcmp.
    if a[a.len() - steps * 16..] == b[b.len() - steps * 16..] {
        return steps * 16;
    }
    let (a_end, b_end) = (a.as_ptr_range().end, b.as_ptr_range().end);
    let mut n = 0;
    while n < steps {
        let back = 16 * (n + 1);
        // SAFETY: back <= 16 * steps <= the length of both slices, so both
        // reads lie inside them (unaligned reads of plain bytes).
        let (x, y) = unsafe {
            (
                a_end.sub(back).cast::<u128>().read_unaligned(),
                b_end.sub(back).cast::<u128>().read_unaligned(),
            )
        };
        if x != y {
            break;
        }
        n += 1;
    }
    n * 16
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
    fn common_suffixes_in_16_byte_steps() {
        let a: Vec<u8> = (0..=255).collect();
        let mut b = a.clone();
        assert_eq!(common_suffix(&a, &b), 256);
        assert_eq!(
            common_suffix(&a[100..], &b),
            144,
            "the shorter one bounds it"
        );
        b[255 - 20] ^= 1;
        assert_eq!(common_suffix(&a, &b), 16, "a change 21 bytes from the end");
        b[255] ^= 1;
        assert_eq!(common_suffix(&a, &b), 0);
        assert_eq!(common_suffix(&a[..15], &b[..15]), 0, "less than a step");
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
