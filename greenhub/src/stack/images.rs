//! A per-hub arena for compact stack images: the saved bytes of suspended
//! green threads (typically 200 B – 4 KiB, a few up to 256 KiB), a million of
//! them in a big hub. No header per block, size classes with intrusive free
//! lists, blocks carved from big mappings.
//!
//! # Picture
//!
//! Blocks are bump-allocated from *chunks* (anonymous `mmap`s) and recycled
//! through one LIFO free list per size class. A free block stores the next
//! free block of its class in its first 8 bytes; a block in use carries
//! nothing but its bytes (its size travels in the [`Block`] handle):
//!
//! ```text
//!  chunk (64 KiB, doubling up to 2 MiB)
//!  | 656 | 48 |   2560   | 656 | 656 | 48 |  untouched ...                 |
//!   ^ in use   ^ free                          ^ bump                      ^ end
//!
//!  free lists, one per class (16, 32, ..., 4096, 5120, 6144, ..., 65536):
//!    free[5120 B] ──▶ [next|...] ──▶ null
//!    free[  48 B] ──▶ [next|..] ──▶ [next|..] ──▶ null
//!
//!  larger than 64 KiB: std::alloc (16-byte aligned), straight back on free
//! ```
//!
//! Size classes: 16-byte steps up to 4 KiB (a 656-byte image takes 656
//! bytes; a green thread with a 1 KiB buffer on its stack keeps 2 KiB and
//! some, not 2.5), then 4 classes per power of two up to 64 KiB (at most 25%
//! slack).
//! `alloc` pops the class's free list, else bumps in the newest chunk. When a
//! chunk's tail is too short for a request, the tail is cut into blocks of
//! the largest classes that fit and pushed on their free lists, so nothing is
//! abandoned.
//!
//! Chunks start small (64 KiB) so that a hub with a hundred green threads
//! pays a few pages, and double up to 2 MiB. Transparent huge pages were
//! tried (2 MiB-aligned chunks advised `MADV_HUGEPAGE`): a cold million
//! images took 1,700 page faults instead of ~100,000, but no less time on the
//! test VM, and single huge-page faults stalled the hub for up to 9 ms.
//!
//! # Trade-off
//!
//! Memory is reused only through the free lists of its class, and chunks are
//! unmapped only when the arena is dropped: after a burst of a million parked
//! green threads, the arena keeps its high-water mark (and its touched pages
//! stay resident) until the hub ends. Blocks larger than 64 KiB are the
//! exception: they go back to the global allocator at once.
//!
//! # Invariants
//!
//! - A [`Block`] is a unique handle (neither `Clone` nor `Copy`): it is handed
//!   out once and comes back once, through [`ImageArena::free`] of the arena
//!   that made it (checked with the arena's id, so a stray block panics
//!   instead of corrupting a free list).
//! - A block's memory stays valid while the block is out and its arena lives.
//!   Blocks still out when the arena is dropped are lost: small ones are
//!   unmapped with their chunk, large ones leak in the global allocator.
//! - The arena holds raw pointers, so it is neither `Send` nor `Sync`: it
//!   lives in its hub, on one OS thread.

use super::sys;
use std::alloc::Layout;
use std::io;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

/// Alignment of every block, and the step of the fine classes.
const ALIGN: usize = 16;
/// The fine classes: 16, 32, ..., FINE_MAX bytes.
const FINE_MAX: usize = 4096;
const FINE_CLASSES: usize = FINE_MAX / ALIGN;
/// log2(FINE_MAX): the coarse classes start above it.
const FINE_SHIFT: u32 = 12;
/// The coarse classes: 4 per power of two, up to MAX_SMALL bytes.
const MAX_SMALL: usize = 64 * 1024;
const COARSE_CLASSES: usize = 4 * (MAX_SMALL.trailing_zeros() - FINE_SHIFT) as usize;
const CLASSES: usize = FINE_CLASSES + COARSE_CLASSES;

/// The first chunk; later ones double up to MAX_CHUNK.
const FIRST_CHUNK: usize = 64 * 1024;
const MAX_CHUNK: usize = 2 << 20;

/// Ids of arenas, so that `free` can tell a block from another arena.
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// The class of a request of `len` bytes (at most MAX_SMALL); 0 counts as 1.
fn class_of(len: usize) -> usize {
    debug_assert!(len <= MAX_SMALL);
    if len <= FINE_MAX {
        return len.saturating_sub(1) / ALIGN;
    }
    // len is in (2^p, 2^(p+1)], cut in 4 steps of 2^(p-2).
    let p = usize::BITS - 1 - (len - 1).leading_zeros();
    let step_shift = p - 2;
    let k = (len - (1 << p)).div_ceil(1 << step_shift); // 1..=4
    FINE_CLASSES + 4 * (p - FINE_SHIFT) as usize + k - 1
}

/// The block size of a class: a multiple of 16.
fn class_size(class: usize) -> usize {
    if class < FINE_CLASSES {
        return (class + 1) * ALIGN;
    }
    let c = class - FINE_CLASSES;
    let p = FINE_SHIFT as usize + c / 4;
    (1 << p) + (c % 4 + 1) * (1 << (p - 2))
}

/// A block of arena memory: `capacity()` bytes at `as_ptr()`, 16-byte
/// aligned. Plain data with no `Drop`: it must go back with
/// [`ImageArena::free`] of the arena that made it (or is lost when that arena
/// is dropped). 16 bytes; `Option<Block>` too.
#[derive(Debug)]
pub(crate) struct Block {
    ptr: NonNull<u8>,
    cap: u32,
    arena: u32,
}

impl Block {
    /// The first byte. Valid for `capacity()` bytes of reads and writes while
    /// the block is out and its arena lives; contents start unspecified.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Usable bytes: at least what was asked for.
    pub(crate) fn capacity(&self) -> usize {
        self.cap as usize
    }
}

/// A hub's stack images. Not thread-safe (raw pointers make it `!Send`).
pub(crate) struct ImageArena {
    id: u32,
    /// Head of each class's free list (null: empty). Each free block's first
    /// 8 bytes point to the next one.
    free: [*mut u8; CLASSES],
    /// Never-used bytes of the newest chunk: `[bump, end)`.
    bump: usize,
    end: usize,
    /// Every mapping, `(start, len)`, unmapped on drop.
    chunks: Vec<(usize, usize)>,
    /// The size of the next chunk.
    next_chunk: usize,
    /// Sum of the capacities of the blocks out (large ones included).
    in_use: usize,
    /// Sum of the chunks' lengths.
    mapped: usize,
}

impl ImageArena {
    /// An empty arena: maps nothing until the first `alloc`.
    pub(crate) fn new() -> ImageArena {
        ImageArena {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            free: [ptr::null_mut(); CLASSES],
            bump: 0,
            end: 0,
            chunks: Vec::new(),
            next_chunk: FIRST_CHUNK,
            in_use: 0,
            mapped: 0,
        }
    }

    /// A block of at least `len` bytes (0 is taken as 1). Up to 64 KiB from
    /// the arena, larger from the global allocator. Fails (never panics) when
    /// the kernel refuses a new chunk or the global allocator returns null,
    /// with `ErrorKind::OutOfMemory`; beyond 4 GiB with `InvalidInput`.
    pub(crate) fn alloc(&mut self, len: usize) -> io::Result<Block> {
        if len > MAX_SMALL {
            return self.alloc_large(len);
        }
        let class = class_of(len);
        let size = class_size(class);
        let head = self.free[class];
        let addr = if !head.is_null() {
            // SAFETY: `head` is a free block of this class in a chunk that
            // stays mapped while the arena lives; `push` wrote the next
            // pointer into its first 8 bytes, and it is 16-byte aligned.
            self.free[class] = unsafe { head.cast::<*mut u8>().read() };
            head as usize
        } else {
            if self.end - self.bump < size {
                self.new_chunk(size)?;
            }
            let addr = self.bump;
            self.bump += size;
            addr
        };
        self.in_use += size;
        Ok(Block {
            ptr: NonNull::new(addr as *mut u8).expect("arena blocks are not null"),
            cap: size as u32,
            arena: self.id,
        })
    }

    /// Gives a block back. Panics if it comes from another arena.
    pub(crate) fn free(&mut self, block: Block) {
        assert_eq!(
            block.arena, self.id,
            "greenhub: an image block was freed to the wrong arena"
        );
        let cap = block.capacity();
        self.in_use -= cap;
        if cap > MAX_SMALL {
            let layout = Layout::from_size_align(cap, ALIGN).expect("alloc_large made it");
            // SAFETY: blocks above MAX_SMALL come from `alloc_large`, which
            // allocated exactly this layout (cap bytes, 16-aligned); the block
            // is unique (not Clone), so this is its only deallocation.
            unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
            return;
        }
        let class = class_of(cap);
        debug_assert_eq!(class_size(class), cap);
        // SAFETY: the block came from this arena (checked above) with exactly
        // its class's size, its chunk is mapped, and it is out no more.
        unsafe { self.push(class, block.as_ptr()) };
    }

    /// Bytes handed out now (sum of capacities, large blocks included) and
    /// bytes mapped in chunks (large blocks excluded).
    #[cfg(test)]
    pub(crate) fn stats(&self) -> (usize, usize) {
        (self.in_use, self.mapped)
    }

    /// Puts `block` on the free list of `class`.
    ///
    /// # Safety
    ///
    /// `block` is 16-byte aligned, `class_size(class)` bytes long, inside a
    /// chunk of this arena, and neither out nor on a free list.
    unsafe fn push(&mut self, class: usize, block: *mut u8) {
        // SAFETY: by the caller, the block is ours, aligned and at least 16
        // bytes long: room for the next pointer.
        unsafe { block.cast::<*mut u8>().write(self.free[class]) };
        self.free[class] = block;
    }

    fn alloc_large(&mut self, len: usize) -> io::Result<Block> {
        let cap = len
            .checked_next_multiple_of(ALIGN)
            .filter(|&cap| cap <= u32::MAX as usize)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("greenhub: a stack image of {len} bytes is too large (max 4 GiB)"),
                )
            })?;
        let layout = Layout::from_size_align(cap, ALIGN).map_err(io::Error::other)?;
        // SAFETY: the layout's size is non-zero (cap > MAX_SMALL).
        let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) }).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("greenhub: out of memory for a stack image of {cap} bytes"),
            )
        })?;
        self.in_use += cap;
        Ok(Block {
            ptr,
            cap: cap as u32,
            arena: self.id,
        })
    }

    /// Maps a new chunk with room for at least `need` bytes (at most
    /// MAX_SMALL) and bump-allocates from it from now on.
    fn new_chunk(&mut self, need: usize) -> io::Result<()> {
        let page = sys::page_size();
        let need = need.div_ceil(page) * page;
        let len = self.next_chunk.max(need);
        let mapped = sys::reserve(len).map(|start| (start, len));
        // Perhaps the bare minimum still fits where a whole chunk does not.
        let (start, len) = mapped
            .or_else(|_| sys::reserve(need).map(|start| (start, need)))
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!(
                        "greenhub: cannot map memory for compact stack images \
                         ({} KiB mapped, {} KiB in use): {e}",
                        self.mapped >> 10,
                        self.in_use >> 10
                    ),
                )
            })?;
        self.stash_tail();
        self.chunks.push((start, len));
        self.mapped += len;
        self.bump = start;
        self.end = start + len;
        self.next_chunk = (self.next_chunk * 2).min(MAX_CHUNK);
        Ok(())
    }

    /// Cuts what is left of the newest chunk into free blocks of the largest
    /// classes that fit.
    fn stash_tail(&mut self) {
        while self.end - self.bump >= ALIGN {
            let tail = self.end - self.bump;
            debug_assert!(tail < MAX_SMALL && tail % ALIGN == 0);
            let mut class = class_of(tail);
            if class_size(class) > tail {
                class -= 1;
            }
            let block = self.bump as *mut u8;
            self.bump += class_size(class);
            // SAFETY: [block, block + class_size) lies in the newest chunk's
            // never-used part (bump..end), which every class size keeps
            // 16-byte aligned from the page-aligned chunk start.
            unsafe { self.push(class, block) };
        }
    }
}

impl Drop for ImageArena {
    /// Unmaps every chunk. Small blocks still out become dangling (nothing
    /// may use them); large ones leak.
    fn drop(&mut self) {
        for &(start, len) in &self.chunks {
            sys::release(start, len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: deterministic sizes without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// The bytes a pattern covers: all of a small block, every 13th of a
    /// bigger one (blocks overlap by 16 bytes or more, if they do; this keeps
    /// the test fast in debug builds), always the last byte.
    fn sample(len: usize) -> impl Iterator<Item = usize> {
        let step = if len <= 256 { 1 } else { 13 };
        (0..len).step_by(step).chain([len - 1])
    }

    fn pattern(seed: usize, i: usize) -> u8 {
        (seed.wrapping_mul(31) ^ i) as u8
    }

    fn fill(block: &Block, len: usize, seed: usize) {
        for i in sample(len) {
            // SAFETY: the block is out and has at least `len` bytes.
            unsafe { block.as_ptr().add(i).write(pattern(seed, i)) };
        }
    }

    fn check(block: &Block, len: usize, seed: usize) {
        for i in sample(len) {
            // SAFETY: the block is out and has at least `len` bytes.
            let b = unsafe { block.as_ptr().add(i).read() };
            assert_eq!(b, pattern(seed, i), "block {seed} byte {i}");
        }
    }

    #[test]
    fn classes_cover_every_size_tightly() {
        assert_eq!(CLASSES, 272);
        assert_eq!(class_size(CLASSES - 1), MAX_SMALL);
        assert_eq!(class_of(0), 0);
        for len in 1..=MAX_SMALL {
            let class = class_of(len);
            let size = class_size(class);
            assert!(size >= len && size % ALIGN == 0, "{len} -> {size}");
            if class > 0 {
                assert!(
                    class_size(class - 1) < len,
                    "{len}: class {class} not the smallest"
                );
            }
            if len <= FINE_MAX {
                assert!(size - len < ALIGN);
            } else {
                assert!(size - len <= len / 4, "{len} -> {size}: too much slack");
            }
        }
        assert_eq!(class_size(class_of(656)), 656);
        assert_eq!(class_size(class_of(2049)), 2064);
        assert_eq!(class_size(class_of(4097)), 5120);
    }

    #[test]
    fn alloc_free_reuse_per_class() {
        let mut arena = ImageArena::new();
        for class in 0..CLASSES {
            let size = class_size(class);
            let a = arena.alloc(size).unwrap();
            assert_eq!(a.capacity(), size);
            let addr = a.as_ptr();
            arena.free(a);
            // The smallest request of the class gets the same block back.
            let smallest = if class == 0 {
                1
            } else {
                class_size(class - 1) + 1
            };
            let b = arena.alloc(smallest).unwrap();
            assert_eq!((b.as_ptr(), b.capacity()), (addr, size));
            arena.free(b);
        }
        assert_eq!(arena.stats().0, 0);
    }

    #[test]
    fn alignment_is_16() {
        let mut arena = ImageArena::new();
        let mut rng = Rng(7);
        let mut blocks = Vec::new();
        for i in 0..2000 {
            let len = if i % 100 == 0 {
                70_000 + rng.below(200_000)
            } else {
                1 + rng.below(3000)
            };
            let block = arena.alloc(len).unwrap();
            assert_eq!(block.as_ptr() as usize % 16, 0);
            assert!(block.capacity() >= len);
            blocks.push(block);
        }
        for block in blocks {
            arena.free(block);
        }
    }

    #[test]
    fn data_survives_churn() {
        let mut arena = ImageArena::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut live: Vec<(Block, usize, usize)> = Vec::new();
        let mut seed = 0;
        let size = |rng: &mut Rng| match rng.below(100) {
            0 => 1 + rng.below(300_000), // large, via the global allocator
            1..=9 => 1 + rng.below(MAX_SMALL),
            _ => 200 + rng.below(1800),
        };
        for round in 0..4 {
            for _ in 0..3000 {
                let len = size(&mut rng);
                let block = arena.alloc(len).unwrap();
                seed += 1;
                fill(&block, len, seed);
                live.push((block, len, seed));
            }
            // Free a random half.
            let mut i = 0;
            while i < live.len() {
                if rng.below(2) == 0 {
                    let (block, len, seed) = live.swap_remove(i);
                    check(&block, len, seed);
                    arena.free(block);
                } else {
                    i += 1;
                }
            }
            let out: usize = live.iter().map(|(b, _, _)| b.capacity()).sum();
            assert_eq!(arena.stats().0, out, "round {round}");
        }
        for (block, len, seed) in live {
            check(&block, len, seed);
            arena.free(block);
        }
        assert_eq!(arena.stats().0, 0);
    }

    #[test]
    fn large_blocks_use_the_global_allocator() {
        let mut arena = ImageArena::new();
        let block = arena.alloc(MAX_SMALL + 1).unwrap();
        assert_eq!(block.capacity(), MAX_SMALL + 16);
        assert_eq!(
            arena.stats(),
            (MAX_SMALL + 16, 0),
            "no chunk for a large block"
        );
        fill(&block, MAX_SMALL + 1, 3);
        check(&block, MAX_SMALL + 1, 3);
        arena.free(block);
        let block = arena.alloc(256 * 1024 + 5).unwrap();
        assert_eq!(block.capacity(), 256 * 1024 + 16);
        arena.free(block);
        assert_eq!(arena.stats(), (0, 0));
    }

    #[test]
    fn stats_and_lazy_mapping() {
        let mut arena = ImageArena::new();
        assert_eq!(arena.stats(), (0, 0));
        let a = arena.alloc(656).unwrap();
        assert_eq!(a.capacity(), 656);
        assert_eq!(arena.stats(), (656, FIRST_CHUNK));
        let b = arena.alloc(100).unwrap();
        assert_eq!(arena.stats(), (656 + 112, FIRST_CHUNK));
        arena.free(a);
        assert_eq!(arena.stats(), (112, FIRST_CHUNK));
        arena.free(b);
        assert_eq!(arena.stats(), (0, FIRST_CHUNK), "chunks stay mapped");
    }

    #[test]
    fn chunk_tails_go_to_free_lists() {
        let mut arena = ImageArena::new();
        let a = arena.alloc(40 * 1024).unwrap();
        let start = a.as_ptr() as usize;
        // No room for a second 40 KiB block: a new chunk, and the first
        // chunk's 24 KiB tail becomes a free 24 KiB block.
        let b = arena.alloc(40 * 1024).unwrap();
        assert_eq!(arena.stats().1, FIRST_CHUNK + 2 * FIRST_CHUNK);
        let c = arena.alloc(24 * 1024).unwrap();
        assert_eq!(c.as_ptr() as usize, start + 40 * 1024);
        for block in [a, b, c] {
            arena.free(block);
        }
    }

    #[test]
    fn chunks_double_up_to_2_mib() {
        let mut arena = ImageArena::new();
        let mut blocks = Vec::new();
        while arena.stats().1 < 8 << 20 {
            blocks.push(arena.alloc(MAX_SMALL).unwrap());
        }
        let sizes: Vec<usize> = arena.chunks.iter().map(|&(_, len)| len).collect();
        assert_eq!(
            &sizes[..7],
            &[
                64 << 10,
                128 << 10,
                256 << 10,
                512 << 10,
                1 << 20,
                2 << 20,
                2 << 20
            ]
        );
        for block in blocks {
            arena.free(block);
        }
    }

    #[test]
    #[should_panic(expected = "wrong arena")]
    fn a_block_from_another_arena_panics() {
        let mut a = ImageArena::new();
        let mut b = ImageArena::new();
        let block = a.alloc(64).unwrap();
        b.free(block);
    }

    #[test]
    fn block_is_small() {
        assert_eq!(std::mem::size_of::<Block>(), 16);
        assert_eq!(std::mem::size_of::<Option<Block>>(), 16);
    }
}
