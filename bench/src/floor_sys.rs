//! The page-fault floor of Prog 1: the time to first-touch one 4 KiB page in
//! each of N fresh 36 KiB stack slots: what N new dedicated stacks cost the
//! kernel at the least.
//!
//! A green thread of greenhub that parks has touched one page of its own
//! stack (the top one, where its header and first frames are). In a fresh
//! process every such page is new: each first touch is a minor page fault, in
//! which the kernel takes a page, zeroes it and maps it (and, every 2 MiB of
//! address space, a page-table page). On a virtual machine a fault costs
//! several µs, so at N = 1M Prog 1's cold round is bound by them. This
//! measures that cost on its own, in the same run, so greenhub's cold round
//! can be shown as a ratio to it: no runtime that gives each of N tasks a
//! dedicated stack of fresh memory can do better.
//!
//! How: memory laid out as greenhub's default slots are (32 KiB usable + a
//! 4 KiB guard page = 36 KiB per stack), allocated as zeroed `Vec<u8>`s of
//! [`BLOCK`] stacks each (36 MiB: far above malloc's mmap threshold, so each
//! comes from calloc as a fresh anonymous mapping whose untouched pages cost
//! nothing; one 36 GiB allocation could be refused by the kernel's overcommit
//! heuristic). Then one byte is written near the top of each stack, where a
//! green thread's header and first frame go. Only the writing is timed (not
//! the allocation, nor the freeing), to the µs, and the minor page faults during
//! it are reported: about N, one per stack, if each touch cost exactly one
//! fault.
//!
//! It needs no `unsafe` and no `libc`. It assumes that the kernel does not
//! back this heap memory with transparent huge pages (THP `madvise` or
//! `never`, as is usual); with THP `always` each touch could fault a 2 MiB
//! page, and the minor fault count, far below N, would show it.
//!
//! It runs, like every measurement, in a fresh child process (`__child prog1
//! floor N`), whenever greenhub's Prog 1 is run; its record has the system
//! name `floor` and the phase `cold`.

use std::hint::black_box;
use std::time::Instant;

use crate::proc;
use crate::report::{self, emit_ok};

/// Usable bytes of greenhub's default stack (`Builder`'s 32 KiB).
pub const STACK_USABLE: usize = 32 * 1024;
/// The guard page at the bottom of each of greenhub's stack slots.
pub const GUARD: usize = 4 * 1024;
/// The stride of greenhub's default slots: one stack and its guard page.
pub const SLOT: usize = STACK_USABLE + GUARD;
/// Where in its slot each stack is touched: just under the top, as a green
/// thread's 64-byte header is.
pub const TOUCH_OFFSET: usize = SLOT - 64;
/// Stacks per allocation (36 MiB).
pub const BLOCK: usize = 1024;

// Checked when compiled: 36 KiB slots in 36 MiB blocks, and the touched byte
// lies in the slot's top page, above its guard.
const _: () = assert!(SLOT == 36_864 && BLOCK * SLOT == 36 << 20);
const _: () = assert!(TOUCH_OFFSET >= SLOT - 4096 && TOUCH_OFFSET >= GUARD);

/// Prog 1's floor: allocate `n` slots, then time the first touch of one page
/// in each.
pub fn prog1(n: usize) {
    // Every block has BLOCK slots, even the last, so that every allocation
    // is as large (and so surely a fresh mapping); slots past n are never
    // touched and cost nothing.
    let blocks_needed = n.div_ceil(BLOCK);
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(blocks_needed);
    for _ in 0..blocks_needed {
        blocks.push(vec![0u8; BLOCK * SLOT]);
    }

    let f0 = proc::minor_faults().unwrap_or(0);
    let start = Instant::now();
    let mut left = n;
    for block in &mut blocks {
        let here = left.min(BLOCK);
        for i in 0..here {
            // The first access to the page is this write (a read first
            // would map the shared zero page and fault again on the write).
            *black_box(&mut block[i * SLOT + TOUCH_OFFSET]) = 1;
        }
        left -= here;
    }
    // The writes are observed: none of them may be left out.
    black_box(&blocks);
    let wall = start.elapsed();
    let faults = proc::minor_faults().unwrap_or(0).saturating_sub(f0);

    emit_ok(Some("cold"), &report::floor_metrics(wall, faults));
    drop(blocks);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touching_faults_about_once_per_slot() {
        // Small enough for a test, large enough that faults show.
        let n = 2 * BLOCK;
        let mut blocks: Vec<Vec<u8>> = (0..2).map(|_| vec![0u8; BLOCK * SLOT]).collect();
        let f0 = proc::minor_faults().unwrap();
        for block in &mut blocks {
            for i in 0..BLOCK {
                *black_box(&mut block[i * SLOT + TOUCH_OFFSET]) = 1;
            }
        }
        black_box(&blocks);
        let faults = proc::minor_faults().unwrap() - f0;
        let touched: usize = blocks
            .iter()
            .map(|b| b.iter().filter(|&&x| x == 1).count())
            .sum();
        assert_eq!(touched, n);
        // At least one fault per slot (other threads of the test process
        // may add some); with huge pages there would be far fewer.
        assert!(
            faults as usize >= n * 9 / 10,
            "{faults} faults for {n} slots"
        );
    }
}
