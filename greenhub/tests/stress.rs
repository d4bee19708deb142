//! Many green threads at once, and green threads spawning green threads.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenhub::{run, sleep, spawn, with_timeout, Builder, JoinHandle};

/// Tiny deterministic PRNG (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Joins every handle; returns how many green threads woke early.
fn join_sleepers(handles: Vec<JoinHandle<bool>>) -> usize {
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|&on_time| !on_time)
        .count()
}

#[test]
fn a_hundred_thousand_sleepers() {
    const N: usize = 100_000;
    let (joined, early) = run(|| {
        with_timeout(Duration::from_secs(60), || {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            let mut handles = Vec::with_capacity(N);
            let (mut joined, mut early) = (0, 0);
            let mut spawned = 0;
            while spawned < N {
                let d = Duration::from_micros(rng.below(20_001));
                let body = move || {
                    let start = Instant::now();
                    sleep(d);
                    start.elapsed() >= d
                };
                match Builder::new().spawn(body) {
                    Ok(h) => {
                        handles.push(h);
                        spawned += 1;
                    }
                    // Kernels without MADV_GUARD_INSTALL run out of memory
                    // mappings at ~32K stacks: finish a wave, then go on.
                    Err(e) if !handles.is_empty() => {
                        eprintln!("joining a wave of {}: {e}", handles.len());
                        joined += handles.len();
                        early += join_sleepers(std::mem::take(&mut handles));
                    }
                    Err(e) => panic!("cannot spawn a single green thread: {e}"),
                }
            }
            joined += handles.len();
            early += join_sleepers(handles);
            (joined, early)
        })
        .expect("100,000 sleepers of at most 20 ms took over a minute")
    })
    .unwrap();
    assert_eq!(joined, N);
    assert_eq!(early, 0, "sleepers woke early");
}

/// Each node spawns `FAN_OUT` children down to depth 0 and sums what they
/// return plus one for itself: the total counts the nodes.
fn tree(depth: u32) -> u64 {
    const FAN_OUT: usize = 2;
    if depth == 0 {
        greenhub::yield_now();
        return 1;
    }
    let children: Vec<_> = (0..FAN_OUT)
        .map(|_| spawn(move || tree(depth - 1)))
        .collect();
    1 + children.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
}

#[test]
fn a_tree_of_green_threads() {
    let nodes = run(|| with_timeout(Duration::from_secs(30), || tree(10)).unwrap()).unwrap();
    assert_eq!(nodes, (1 << 11) - 1);
}

#[test]
fn a_chain_of_nested_joins() {
    fn link(n: u32, live: Rc<Cell<u32>>, peak: Rc<Cell<u32>>) -> u32 {
        live.set(live.get() + 1);
        peak.set(peak.get().max(live.get()));
        let r = if n == 0 {
            sleep(Duration::from_millis(1));
            0
        } else {
            let (l, p) = (live.clone(), peak.clone());
            spawn(move || link(n - 1, l, p)).join().unwrap() + 1
        };
        live.set(live.get() - 1);
        r
    }
    let (depth, peak) = run(|| {
        let (live, peak) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let p = peak.clone();
        let depth = with_timeout(Duration::from_secs(30), move || link(1000, live, p)).unwrap();
        (depth, peak.get())
    })
    .unwrap();
    assert_eq!(depth, 1000);
    assert_eq!(peak, 1001, "all links alive at once");
}
