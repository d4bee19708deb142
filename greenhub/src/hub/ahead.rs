//! Tables that grow to millions of entries (a hub's green threads, their
//! images, their timers) take a page fault for every 4 KiB of new entries,
//! ~1.6 µs each on a virtual machine. An [`AheadVec`] makes the pages just
//! past its length resident a window at a time, with one call
//! ([`populate`]) that costs ~1.2 µs a page: a quarter less.
//!
//! ```text
//!  allocation |   entries (len)   | populated ahead |    rest of capacity   |
//!             ^ ptr               ^ len             ^ requested             ^ capacity
//!                                  <--- window ---->
//! ```
//!
//! When the entries come within half a window of what was populated, the
//! next window is: a sixteenth of the bytes in use, 64 KiB to 1 MiB, so a
//! table holds at most that much more than it uses (a hub of a million
//! green threads, ~3 bytes each in all). Tables under 1 MiB (ten thousand
//! green threads) are left to fault as usual.
//!
//! Populating from a helper OS thread, while the hub fills the pages before
//! the window, was measured too: no faster on the 2-core test VM (the two
//! threads' faults contend in the kernel), so there is no helper.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::stack::populate;

/// Smallest window.
const MIN_WINDOW: usize = 64 * 1024;
/// Largest window.
const MAX_WINDOW: usize = 1 << 20;
/// Smallest table (its allocation) that populates ahead.
const MIN_TABLE: usize = 1 << 20;
const PAGE: usize = 4096;

/// Set once populating failed (an old kernel, another system): no table
/// tries again.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// A `Vec` that populates its next pages ahead of its pushes. It derefs to a
/// slice; it grows only through its own methods.
pub(crate) struct AheadVec<T> {
    items: Vec<T>,
    /// Bytes from the allocation's start populated (or touched) so far.
    populated: usize,
    /// The length past which a push has work to do (grow, or populate).
    watch: usize,
}

impl<T> AheadVec<T> {
    pub(crate) fn new() -> AheadVec<T> {
        AheadVec {
            items: Vec::new(),
            populated: 0,
            watch: 0,
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, item: T) {
        if self.items.len() >= self.watch {
            self.make_room(1);
        }
        self.items.push(item);
    }

    /// Grows to `len` entries made by `f` (never shrinks).
    #[inline]
    pub(crate) fn grow_to(&mut self, len: usize, f: impl FnMut() -> T) {
        if len > self.items.len() {
            if len > self.watch {
                self.make_room(len - self.items.len());
            }
            self.items.resize_with(len, f);
        }
    }

    /// Empties it, handing the entries over.
    pub(crate) fn take(&mut self) -> Vec<T> {
        self.populated = 0;
        self.watch = 0;
        std::mem::take(&mut self.items)
    }

    /// Makes room for `more` entries, and populates the next window when
    /// the entries near the end of the populated ones; sets `watch`.
    #[cold]
    fn make_room(&mut self, more: usize) {
        self.populate_ahead(more);
        let size = std::mem::size_of::<T>().max(1);
        let end = self.items.capacity() * size;
        self.watch = self.items.capacity();
        if end >= MIN_TABLE && self.populated < end && !UNSUPPORTED.load(Ordering::Relaxed) {
            // `populate_ahead`'s test, for the length reached meanwhile (its
            // window grows with the length: at worst a few calls too early).
            let window = (self.items.len() * size / 16).clamp(MIN_WINDOW, MAX_WINDOW);
            let soon = self.populated.saturating_sub(window / 2) / size;
            self.watch = self.watch.min(soon.max(self.items.len()));
        }
    }

    fn populate_ahead(&mut self, more: usize) {
        let size = std::mem::size_of::<T>();
        if self.items.capacity() - self.items.len() < more {
            let len = self.items.len();
            self.items.reserve(more.max(len));
            // What a reallocation copied is resident; what lies past it in
            // the new allocation is not.
            self.populated = len * size;
        }
        let used = (self.items.len() + more) * size;
        let end = self.items.capacity() * size;
        if end < MIN_TABLE || self.populated >= end || UNSUPPORTED.load(Ordering::Relaxed) {
            return;
        }
        let window = (used / 16).clamp(MIN_WINDOW, MAX_WINDOW);
        if used + window / 2 < self.populated {
            return;
        }
        // Whole pages only: the partial ones at the edges fault as usual.
        let base = self.items.as_ptr() as usize;
        let start = self.populated.max(used);
        let stop = end.min(start + window);
        let (from, to) = (
            (base + start).next_multiple_of(PAGE),
            (base + stop) & !(PAGE - 1),
        );
        self.populated = if stop == end {
            end
        } else {
            to.max(base + start) - base
        };
        if to > from && !populate(from, to - from) {
            UNSUPPORTED.store(true, Ordering::Relaxed);
        }
    }
}

impl<T> Deref for AheadVec<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<T> DerefMut for AheadVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_was_pushed_across_growth() {
        let mut v = AheadVec::new();
        for i in 0..300_000u64 {
            v.push(i);
        }
        assert_eq!(v.len(), 300_000);
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
        v.grow_to(300_010, || 7);
        assert_eq!(v[300_009], 7);
        v.grow_to(5, || 9);
        assert_eq!(v.len(), 300_010);
        let all = v.take();
        assert_eq!(all.len(), 300_010);
        assert!(v.is_empty());
    }

    #[test]
    fn populates_inside_the_allocation_and_ahead_of_the_entries() {
        let mut v: AheadVec<[u8; 80]> = AheadVec::new();
        for i in 0..100_000 {
            v.push([1; 80]);
            let end = v.items.capacity() * 80;
            assert!(v.populated <= end, "{} > {end}", v.populated);
            if end >= MIN_TABLE && !UNSUPPORTED.load(Ordering::Relaxed) {
                assert!(v.populated >= (i + 1) * 80, "entry {i} is past the window");
            }
        }
        assert!(v.iter().all(|e| e.iter().all(|&b| b == 1)));
    }
}
