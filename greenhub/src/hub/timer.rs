//! Hierarchical timing wheel for the hub's sleepers and timeouts.
//!
//! Time is counted in whole *ticks* of 1 ms since the wheel's origin. The wheel
//! has 6 levels of 64 slots; a slot at level `L` spans `64^L` ticks, so the whole
//! wheel covers `64^6` ms (about 2.2 years). An entry is filed at the level of
//! the highest 6-bit digit in which its deadline differs from the wheel's current
//! tick (`elapsed`): near deadlines land in fine slots, far ones in coarse slots.
//! This keeps `insert` and `cancel` O(1) no matter how far away the deadline is.
//!
//! Each level keeps a `u64` bitmap of non-empty slots, so the next slot that needs
//! work is found with one `trailing_zeros` per level instead of stepping through
//! time. That is what lets `expire` jump over idle stretches (the hub was blocked
//! for 10 s) at a cost proportional to the number of occupied slots, not to the
//! number of elapsed milliseconds.
//!
//! When the wheel reaches a coarse slot, its entries are *cascaded*: re-filed
//! relative to the new current tick, which puts them on a finer level. Only
//! level-0 slots fire. Deadlines outside the wheel's current 2^36-tick span go to
//! an overflow list that is re-filed when the wheel reaches that span.
//!
//! Never early: a deadline is rounded UP to a whole tick, and a tick's entries fire
//! only once `now >= origin + tick`, i.e. `now` is rounded DOWN. Rounding the
//! other way would let a timer fire up to 1 ms before its deadline.
//!
//! Entries live in a slab (`Vec` plus free list) and each slot is an intrusive
//! doubly linked list of slab indices, so linking and unlinking never allocate.
//! Every slab node carries a generation that is bumped when the node is freed, so
//! a key to a timer that already fired or was cancelled is recognised as stale
//! even after the node has been reused.

use std::num::NonZeroU32;

use super::ahead::AheadVec;
use std::time::{Duration, Instant};

/// log2 of the number of slots per level.
const SLOT_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << SLOT_BITS;
/// Number of levels.
const LEVELS: usize = 6;
/// Bits of tick covered by the whole wheel (64^6 ticks).
const WHEEL_BITS: u32 = SLOT_BITS * LEVELS as u32;
/// Null link.
const NIL: u32 = u32::MAX;
/// List id of entries that were already due when inserted.
const DUE: usize = LEVELS * SLOTS;
/// List id of entries beyond the wheel's current span.
const OVERFLOW: usize = DUE + 1;
/// Total number of lists (wheel slots + due + overflow).
const NUM_LISTS: usize = OVERFLOW + 1;
/// Ticks are clamped here (~146 million years) so tick arithmetic cannot overflow.
const MAX_TICK: u64 = 1 << 62;

/// Handle to a pending timer; stale keys are harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerKey {
    /// The node's index plus one: never zero, so that an `Option<TimerKey>`
    /// is one word (every green thread's slab entry holds one).
    slot: NonZeroU32,
    generation: u32,
}

/// One slab node. `value` is `None` while the node is on the free list.
struct Node<T> {
    value: Option<T>,
    /// Deadline in ticks (rounded up).
    when: u64,
    prev: u32,
    /// Next in the slot list, or next free node while free.
    next: u32,
    generation: u32,
    /// Which list the node is linked into.
    list: u16,
}

/// Head and tail of an intrusive list.
#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

/// An empty list.
const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

/// Hierarchical timing wheel mapping deadlines to values of type `T`.
pub(crate) struct TimerWheel<T> {
    origin: Instant,
    /// Every tick `< elapsed` has been processed; every entry in a wheel slot or in
    /// the overflow list has `when >= elapsed`, every entry in `DUE` has `when < elapsed`.
    elapsed: u64,
    nodes: AheadVec<Node<T>>,
    free: u32,
    len: usize,
    lists: Vec<List>,
    /// Bit `s` of `occupied[l]` is set iff slot `s` of level `l` is non-empty.
    occupied: [u64; LEVELS],
    /// Lower bound on `when` in the due list (may be stale-low after cancels).
    due_min: u64,
    /// Lower bound on `when` in the overflow list (may be stale-low after cancels).
    overflow_min: u64,
}

impl<T> TimerWheel<T> {
    /// Creates an empty wheel; `origin` is time zero of the wheel (tick 0).
    pub(crate) fn new(origin: Instant) -> Self {
        TimerWheel {
            origin,
            elapsed: 0,
            nodes: AheadVec::new(),
            free: NIL,
            len: 0,
            lists: vec![EMPTY; NUM_LISTS],
            occupied: [0; LEVELS],
            due_min: u64::MAX,
            overflow_min: u64::MAX,
        }
    }

    /// Registers `value` to fire at `deadline`. O(1). A deadline in the past fires on
    /// the next `expire` call.
    pub(crate) fn insert(&mut self, deadline: Instant, value: T) -> TimerKey {
        let when = self.ceil_tick(deadline);
        let index = if self.free != NIL {
            let index = self.free;
            let node = &mut self.nodes[index as usize];
            self.free = node.next;
            node.value = Some(value);
            node.when = when;
            index
        } else {
            let index = u32::try_from(self.nodes.len())
                .ok()
                .filter(|&i| i != NIL)
                .expect("too many timers");
            self.nodes.push(Node {
                value: Some(value),
                when,
                prev: NIL,
                next: NIL,
                generation: 0,
                list: 0,
            });
            index
        };
        self.len += 1;
        self.place(index);
        TimerKey {
            slot: NonZeroU32::new(index + 1).expect("index < NIL"),
            generation: self.nodes[index as usize].generation,
        }
    }

    /// Whether a timer is still pending (not fired, not cancelled). O(1).
    pub(crate) fn is_pending(&self, key: TimerKey) -> bool {
        let index = key.slot.get() - 1;
        self.nodes
            .get(index as usize)
            .is_some_and(|node| node.generation == key.generation && node.value.is_some())
    }

    /// Cancels a timer. O(1). Returns the value if the timer was still pending; `None`
    /// for stale keys (already fired or cancelled, even if the node was reused).
    pub(crate) fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let index = key.slot.get() - 1;
        let node = self.nodes.get(index as usize)?;
        if node.generation != key.generation || node.value.is_none() {
            return None;
        }
        self.unlink(index);
        Some(self.release(index))
    }

    /// The instant at which the earliest pending timer may need processing, or `None`
    /// if there are no timers.
    ///
    /// It may be earlier than the earliest deadline (an entry in a coarse slot must be
    /// cascaded first) but never later than the earliest deadline rounded up to its
    /// tick, which is the first instant at which `expire` would fire anything. After
    /// `expire(now)` it is always later than `now` unless a past deadline has been
    /// inserted since, so waiting for it never spins. Cost: one bitmap scan per level.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut best = self.next_expiration().map(|(_, tick)| tick);
        if self.lists[DUE].head != NIL {
            best = Some(best.map_or(self.due_min, |b| b.min(self.due_min)));
        }
        best.map(|tick| {
            // A tick never exceeds a representable deadline by more than one ms.
            self.origin
                .checked_add(Duration::from_millis(tick))
                .or_else(|| {
                    self.origin
                        .checked_add(Duration::from_millis(tick.saturating_sub(1)))
                })
                .unwrap_or(self.origin)
        })
    }

    /// Calls `f` with the value of every timer whose (rounded-up) deadline is
    /// `<= now`, removes them, and cascades coarse slots that have become due into
    /// finer levels. Timers fire in tick order, FIFO within a tick where the
    /// entries were filed into the same slot list. Idle time is skipped via the
    /// bitmaps, so a large jump of `now` costs O(occupied slots), not O(elapsed ms).
    pub(crate) fn expire(&mut self, now: Instant, mut f: impl FnMut(T)) {
        let Some(since) = now.checked_duration_since(self.origin) else {
            return;
        };
        let part = u64::from(since.subsec_millis());
        let now_tick = since
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(part)
            .min(MAX_TICK);

        // Entries inserted with a deadline already behind `elapsed`.
        while let Some(index) = self.pop_front(DUE) {
            f(self.release(index));
        }

        while let Some((list, tick)) = self.next_expiration() {
            if tick > now_tick {
                break;
            }
            debug_assert!(tick >= self.elapsed);
            self.elapsed = tick;
            if list < SLOTS {
                // Level 0: one slot is exactly one tick; fire its entries in order.
                while let Some(index) = self.pop_front(list) {
                    debug_assert!(self.nodes[index as usize].when <= now_tick);
                    f(self.release(index));
                }
            } else {
                // Cascade: detach the whole list, then re-file every entry relative
                // to the new `elapsed` (the overflow list may refile into itself).
                let mut index = self.lists[list].head;
                self.lists[list] = EMPTY;
                if list == OVERFLOW {
                    self.overflow_min = u64::MAX;
                } else {
                    self.occupied[list / SLOTS] &= !(1u64 << (list % SLOTS));
                }
                while index != NIL {
                    let next = self.nodes[index as usize].next;
                    self.place(index);
                    index = next;
                }
            }
        }

        if now_tick >= self.elapsed {
            // All ticks up to `now_tick` are processed; nothing pending is that early.
            self.elapsed = now_tick + 1;
        }
    }

    #[cfg(test)]
    /// Number of pending timers.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// True if no timer is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Deadline rounded UP to a whole tick (never early).
    fn ceil_tick(&self, deadline: Instant) -> u64 {
        // u64 arithmetic on purpose: a u128 division costs more than the whole insert.
        let d = deadline.saturating_duration_since(self.origin);
        let part = u64::from(d.subsec_nanos().div_ceil(1_000_000));
        d.as_secs()
            .saturating_mul(1000)
            .saturating_add(part)
            .min(MAX_TICK)
    }

    /// The earliest list that needs processing and the tick at which it does.
    /// Ties go to the coarser level so cascaded entries join level 0 before it fires.
    fn next_expiration(&self) -> Option<(usize, u64)> {
        let mut best = None;
        if self.lists[OVERFLOW].head != NIL {
            let span_start = self.overflow_min & !((1u64 << WHEEL_BITS) - 1);
            best = Some((OVERFLOW, span_start.max(self.elapsed)));
        }
        for level in (0..LEVELS).rev() {
            let occupied = self.occupied[level];
            if occupied == 0 {
                continue;
            }
            // Every entry on this level shares `elapsed`'s digits above the level and
            // is not earlier than it, so no occupied slot lies "behind" the current one.
            let slot = u64::from(occupied.trailing_zeros());
            let shift = level as u32 * SLOT_BITS;
            let above = !((1u64 << (shift + SLOT_BITS)) - 1);
            let start = (self.elapsed & above) | (slot << shift);
            // A slot that already contains `elapsed` must be cascaded right away.
            let tick = start.max(self.elapsed);
            let earlier = match best {
                Some((_, b)) => tick < b,
                None => true,
            };
            if earlier {
                best = Some((level * SLOTS + slot as usize, tick));
            }
        }
        best
    }

    /// Files an allocated, unlinked node into the list its deadline belongs to.
    fn place(&mut self, index: u32) {
        let when = self.nodes[index as usize].when;
        let list = if when < self.elapsed {
            self.due_min = self.due_min.min(when);
            DUE
        } else {
            // Highest 6-bit digit where `when` differs from `elapsed` picks the level.
            let diff = (self.elapsed ^ when) | (SLOTS as u64 - 1);
            if diff >> WHEEL_BITS != 0 {
                self.overflow_min = self.overflow_min.min(when);
                OVERFLOW
            } else {
                let level = ((63 - diff.leading_zeros()) / SLOT_BITS) as usize;
                let slot = (when >> (level as u32 * SLOT_BITS)) as usize & (SLOTS - 1);
                level * SLOTS + slot
            }
        };
        let tail = self.lists[list].tail;
        let node = &mut self.nodes[index as usize];
        node.prev = tail;
        node.next = NIL;
        node.list = list as u16;
        if tail == NIL {
            self.lists[list].head = index;
            if list < DUE {
                self.occupied[list / SLOTS] |= 1u64 << (list % SLOTS);
            }
        } else {
            self.nodes[tail as usize].next = index;
        }
        self.lists[list].tail = index;
    }

    /// Removes a linked node from its list, keeping bitmaps and minima consistent.
    fn unlink(&mut self, index: u32) {
        let node = &self.nodes[index as usize];
        let (list, prev, next) = (node.list as usize, node.prev, node.next);
        if prev == NIL {
            self.lists[list].head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.lists[list].tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
        if self.lists[list].head == NIL {
            match list {
                DUE => self.due_min = u64::MAX,
                OVERFLOW => self.overflow_min = u64::MAX,
                _ => self.occupied[list / SLOTS] &= !(1u64 << (list % SLOTS)),
            }
        }
    }

    /// Unlinks and returns the first node of `list`.
    fn pop_front(&mut self, list: usize) -> Option<u32> {
        let head = self.lists[list].head;
        if head == NIL {
            return None;
        }
        self.unlink(head);
        Some(head)
    }

    /// Frees an unlinked node, invalidating its keys, and returns its value.
    fn release(&mut self, index: u32) -> T {
        let node = &mut self.nodes[index as usize];
        let value = node.value.take().expect("released a free timer node");
        node.generation = node.generation.wrapping_add(1);
        node.next = self.free;
        self.free = index;
        self.len -= 1;
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;
    const YEAR: u64 = 365 * DAY;

    /// The instant from which a timer may fire: its deadline rounded up to a whole ms.
    fn fire_at(origin: Instant, deadline: Instant) -> Instant {
        let d = deadline.saturating_duration_since(origin);
        let extra = u64::from(d.subsec_nanos() % 1_000_000 != 0);
        origin + ms(d.as_millis() as u64 + extra)
    }

    fn drain<T>(w: &mut TimerWheel<T>, now: Instant) -> Vec<T> {
        let mut fired = Vec::new();
        w.expire(now, |v| fired.push(v));
        fired
    }

    #[test]
    fn never_early_randomised() {
        let origin = Instant::now();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let ranges_ns = [
            2_000_000,
            300_000_000,
            20_000_000_000,
            3 * HOUR * 1_000_000,
            5 * YEAR * 1_000_000,
        ];
        let mut w = TimerWheel::new(origin);
        // model[id] = Some(fire_at) while pending.
        let mut model: Vec<Option<Instant>> = Vec::new();
        let mut keys = Vec::new();
        let mut now = origin;
        for _ in 0..600 {
            for _ in 0..rng.below(12) {
                let range = ranges_ns[rng.below(5) as usize];
                let base = if rng.below(8) == 0 { origin } else { now };
                let deadline = base + Duration::from_nanos(rng.below(range));
                let id = model.len();
                keys.push(w.insert(deadline, id));
                model.push(Some(fire_at(origin, deadline)));
            }
            if rng.below(2) == 0 && !model.is_empty() {
                let id = rng.below(model.len() as u64) as usize;
                let expect = model[id].take().map(|_| id);
                assert_eq!(w.cancel(keys[id]), expect, "stale keys must be ignored");
            }
            let earliest = model.iter().flatten().min().copied();
            match (w.next_deadline(), earliest) {
                (None, None) => {}
                (Some(next), Some(e)) => assert!(next <= e, "next_deadline later than pending"),
                other => panic!("next_deadline mismatch: {other:?}"),
            }
            let step = match (rng.below(5), earliest) {
                (0, Some(e)) if e > now => e - now,
                (1, Some(e)) if e > now => e - now - Duration::from_nanos(1),
                (2, _) => {
                    let range = ranges_ns[rng.below(5) as usize];
                    Duration::from_nanos(rng.below(range))
                }
                (3, _) if rng.below(15) == 0 => ms(rng.below(30 * DAY)),
                (4, _) if rng.below(40) == 0 => ms(rng.below(3 * YEAR)),
                _ => Duration::from_nanos(rng.below(3_000_000)),
            };
            now += step;
            for id in drain(&mut w, now) {
                let at = model[id].take().expect("fired twice or after cancel");
                assert!(at <= now, "fired early");
            }
            // Everything that was due has fired in this very call.
            assert!(model.iter().flatten().all(|&at| at > now), "fired late");
            assert_eq!(w.len(), model.iter().flatten().count());
            if let Some(next) = w.next_deadline() {
                assert!(next > now, "next_deadline not in the future after expire");
            }
        }
        assert!(model.len() > 2000);
    }

    #[test]
    fn rounding_and_past_deadlines() {
        let origin = Instant::now();
        let mut w = TimerWheel::new(origin);
        w.insert(origin + Duration::from_micros(1500), 'a');
        w.insert(origin + ms(2), 'b');
        w.insert(origin, 'z');
        assert_eq!(w.next_deadline(), Some(origin));
        assert_eq!(drain(&mut w, origin), ['z']);
        assert!(drain(&mut w, origin + Duration::from_micros(1999)).is_empty());
        assert_eq!(w.next_deadline(), Some(origin + ms(2)));
        assert_eq!(drain(&mut w, origin + ms(2)), ['a', 'b']);
        assert_eq!(w.next_deadline(), None);
        // Deadlines behind the wheel's position fire on the next call.
        assert!(drain(&mut w, origin + ms(1000)).is_empty());
        w.insert(origin + ms(1), 'p');
        w.insert(origin + ms(1000), 'q');
        w.insert(origin + ms(1001), 'r');
        assert!(w.next_deadline().unwrap() <= origin + ms(1));
        assert_eq!(drain(&mut w, origin + ms(1000)), ['p', 'q']);
        assert_eq!(w.next_deadline(), Some(origin + ms(1001)));
    }

    #[test]
    fn cancel_stale_keys_and_generations() {
        let origin = Instant::now();
        let mut w = TimerWheel::new(origin);
        let a = w.insert(origin + ms(10), "a");
        let b = w.insert(origin + ms(10), "b");
        let c = w.insert(origin + ms(5000), "c");
        assert_eq!(w.cancel(a), Some("a"));
        assert_eq!(w.cancel(a), None);
        let d = w.insert(origin + ms(10), "d");
        assert_eq!(d.slot, a.slot, "node reused");
        assert_eq!(w.cancel(a), None, "stale generation");
        assert_eq!(w.len(), 3);
        assert_eq!(drain(&mut w, origin + ms(10)), ["b", "d"]);
        assert_eq!(w.cancel(b), None, "fired keys are stale");
        let e = w.insert(origin + ms(20), "e");
        assert!(e != b && e != d && (e.slot == b.slot || e.slot == d.slot));
        assert_eq!(
            [w.cancel(b), w.cancel(d), w.cancel(c)],
            [None, None, Some("c")]
        );
        assert_eq!([w.cancel(e), w.cancel(e)], [Some("e"), None]);
        assert!(w.is_empty() && w.next_deadline().is_none());
        assert!(drain(&mut w, origin + ms(100_000)).is_empty());
    }

    #[test]
    fn far_future_deadlines() {
        let origin = Instant::now();
        let mut w = TimerWheel::new(origin);
        let offsets = [
            3 * DAY,
            400 * DAY,
            3 * YEAR,
            10 * YEAR,
            100 * YEAR,
            1000 * YEAR,
        ];
        for (i, &off) in offsets.iter().enumerate().rev() {
            w.insert(origin + ms(off) + Duration::from_nanos(1), i);
        }
        for (i, &off) in offsets.iter().enumerate() {
            let at = origin + ms(off + 1);
            assert!(w.next_deadline().unwrap() <= at);
            assert!(drain(&mut w, at - Duration::from_nanos(1)).is_empty());
            assert_eq!(drain(&mut w, at), vec![i]);
            assert_eq!(w.len(), offsets.len() - i - 1);
        }
        assert!(w.is_empty());
    }

    #[test]
    fn big_time_jumps_fire_in_tick_order() {
        let origin = Instant::now();
        let mut rng = Rng(12345);
        let mut w = TimerWheel::new(origin);
        let mut expected = Vec::new();
        for id in 0..10_000u64 {
            let tick = rng.below(10_000) / 7 * 7; // many collisions per tick
            w.insert(origin + ms(tick), (tick, id));
            expected.push((tick, id));
        }
        w.insert(origin + ms(20_000), (20_000, 0));
        w.insert(origin + ms(HOUR), (HOUR, 0));
        let fired = drain(&mut w, origin + ms(10_000));
        expected.sort(); // by tick, then insertion order (FIFO)
        assert_eq!(fired, expected);
        assert!(w.next_deadline().unwrap() <= origin + ms(20_000));
        let late = drain(&mut w, origin + ms(2 * HOUR));
        assert_eq!(late, [(20_000, 0), (HOUR, 0)]);
        w.insert(origin + ms(2 * HOUR + 5), (0, 1));
        assert_eq!(drain(&mut w, origin + ms(50 * YEAR)), vec![(0, 1)]);
    }

    #[test]
    fn many_timers_mostly_cancelled() {
        let origin = Instant::now();
        let mut w = TimerWheel::new(origin);
        let keys: Vec<_> = (0..100_000u64)
            .map(|i| w.insert(origin + ms(200 + i % 100), i))
            .collect();
        for (i, &key) in keys.iter().enumerate() {
            if i % 10 != 0 {
                assert_eq!(w.cancel(key), Some(i as u64));
            }
        }
        assert_eq!(w.len(), 10_000);
        assert!(w.next_deadline().unwrap() <= origin + ms(200));
        let mut fired = drain(&mut w, origin + ms(299));
        assert!(w.is_empty());
        fired.sort_unstable();
        assert_eq!(fired, (0..100_000).step_by(10).collect::<Vec<_>>());
    }

    /// Timings; run with `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_million() {
        const N: u64 = 1_000_000;
        let origin = Instant::now();
        let spread = |i: u64| origin + ms(200) + Duration::from_nanos(i * 100);
        let (mut w, t, mut n) = (TimerWheel::new(origin), Instant::now(), 0);
        let keys: Vec<_> = (0..N).map(|i| w.insert(spread(i), i)).collect();
        let ins = t.elapsed();
        w.expire(origin + ms(301), |_| n += 1);
        println!("(a) insert 1M {ins:?}, expire all {:?}", t.elapsed() - ins);
        assert!(keys.iter().all(|&k| w.cancel(k).is_none()));
        // (b) reuses the slab grown by (a), as the hub would.
        let t = Instant::now();
        let keys: Vec<_> = (0..N).map(|i| w.insert(spread(i), i)).collect();
        let ins = t.elapsed();
        for &key in keys.iter().filter(|k| (k.slot.get() - 1) % 10 != 0) {
            w.cancel(key);
        }
        let can = t.elapsed() - ins;
        w.expire(origin + ms(301), |_| n += 1);
        let exp = t.elapsed() - ins - can;
        println!("(b) insert 1M {ins:?}, cancel 900K {can:?}, expire rest {exp:?}");
        assert_eq!(n, N + N / 10);
        // (c) hub-like: 1M inserted over 100 ms of simulated time, expire every ms.
        let (mut w, t, mut n) = (TimerWheel::new(origin), Instant::now(), 0);
        for now in (0..=400).map(|m| origin + ms(m)) {
            for i in 0..if now < origin + ms(100) { N / 100 } else { 0 } {
                w.insert(now + ms(200 + i % 50), i);
            }
            w.expire(now, |_| n += 1);
        }
        println!("(c) 1M over 100 ms, expire every ms: {:?}", t.elapsed());
        assert_eq!(n, N);
    }
}
