//! `Pool(size)`: a group that runs at most `size` members at a time; spawns
//! park while it is full and are served first come, first served (ported
//! from gevent's `test__pool.py` pool scenarios).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use greenhub::sync::{Event, Pool};
use greenhub::{run, sleep, spawn, with_timeout, yield_now, JoinError};

const BOUND: Duration = Duration::from_secs(5);
const LONG: Duration = Duration::from_secs(60);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn bounded<T>(f: impl FnOnce() -> T) -> T {
    with_timeout(BOUND, f).expect("did not finish in time")
}

/// How many run now, and the most that ever ran at once.
#[derive(Clone, Default)]
struct Concurrency {
    now: Rc<Cell<usize>>,
    most: Rc<Cell<usize>>,
}

impl Concurrency {
    /// Counts the caller as running until the guard drops.
    fn enter(&self) -> impl Drop {
        struct Leave(Rc<Cell<usize>>);
        impl Drop for Leave {
            fn drop(&mut self) {
                self.0.set(self.0.get() - 1);
            }
        }
        self.now.set(self.now.get() + 1);
        self.most.set(self.most.get().max(self.now.get()));
        Leave(self.now.clone())
    }
}

#[test]
fn a_pool_never_runs_more_than_its_size() {
    run(|| {
        let pool = Pool::new(3);
        let c = Concurrency::default();
        for i in 0..30u64 {
            let c = c.clone();
            pool.spawn(move || {
                let _running = c.enter();
                sleep(ms(1 + i % 4));
            });
            assert!(pool.len() <= 3);
        }
        bounded(|| pool.join());
        assert_eq!(c.most.get(), 3);
        assert_eq!(pool.free_count(), 3);
    })
    .unwrap();
}

#[test]
fn free_count_is_full_and_len() {
    run(|| {
        let pool = Pool::new(2);
        assert_eq!((pool.size(), pool.free_count(), pool.len()), (2, 2, 0));
        let go = Rc::new(Event::new());
        let g = go.clone();
        pool.spawn(move || g.wait());
        assert_eq!(
            (pool.free_count(), pool.len(), pool.is_full()),
            (1, 1, false)
        );
        let g = go.clone();
        pool.spawn(move || g.wait());
        assert_eq!(
            (pool.free_count(), pool.len(), pool.is_full()),
            (0, 2, true)
        );
        go.set();
        bounded(|| pool.join());
        assert_eq!(
            (pool.free_count(), pool.len(), pool.is_full()),
            (2, 0, false)
        );
    })
    .unwrap();
}

#[test]
fn spawn_parks_while_full_and_spawners_resume_in_fifo_order() {
    run(|| {
        let pool = Rc::new(Pool::new(1));
        let release = Rc::new(Event::new());
        let r = release.clone();
        pool.spawn(move || r.wait());
        let order = Rc::new(RefCell::new(Vec::new()));
        let spawners: Vec<_> = (0..4)
            .map(|i| {
                let (pool, order, release) = (pool.clone(), order.clone(), release.clone());
                spawn(move || {
                    pool.spawn(move || release.wait());
                    order.borrow_mut().push(i);
                })
            })
            .collect();
        for _ in 0..3 {
            yield_now();
        }
        assert!(
            order.borrow().is_empty(),
            "every spawner parks: the pool is full"
        );
        release.set();
        for s in spawners {
            bounded(|| s.join()).unwrap();
        }
        assert_eq!(*order.borrow(), [0, 1, 2, 3]);
        bounded(|| pool.join());
    })
    .unwrap();
}

#[test]
fn a_killed_spawner_does_not_swallow_the_slot() {
    run(|| {
        let pool = Rc::new(Pool::new(1));
        let release = Rc::new(Event::new());
        let r = release.clone();
        pool.spawn(move || r.wait());
        let spawner = |tag: &'static str| {
            let pool = pool.clone();
            spawn(move || pool.spawn(move || tag))
        };
        let first = spawner("first");
        let second = spawner("second");
        yield_now();
        // The slot freed below goes to `first`, which is killed before it
        // can use it: it must pass on to `second`.
        release.set();
        first.kill();
        assert!(matches!(bounded(|| first.join()), Err(JoinError::Killed)));
        let member = bounded(|| second.join()).unwrap();
        assert_eq!(bounded(|| member.join()).unwrap(), "second");
        bounded(|| pool.join());
        assert_eq!(pool.free_count(), 1, "no slot was lost");
    })
    .unwrap();
}

#[test]
fn try_spawn_hands_the_closure_back_when_full() {
    run(|| {
        let pool = Pool::new(1);
        let a = pool.try_spawn(|| 1).ok().expect("a free slot");
        let rejected = pool.try_spawn(|| 2).expect_err("the pool is full");
        assert_eq!(rejected(), 2, "the closure came back");
        assert_eq!(bounded(|| a.join()).unwrap(), 1);
        bounded(|| pool.join());
        assert!(pool.try_spawn(|| 3).is_ok());
    })
    .unwrap();
}

#[test]
fn wait_available_parks_until_a_slot_frees() {
    run(|| {
        let pool = Pool::new(1);
        pool.wait_available(); // free: returns at once
        let go = Rc::new(Event::new());
        let g = go.clone();
        let member = pool.spawn(move || g.wait());
        assert!(!pool.wait_available_timeout(ms(1)), "full");
        let g = go.clone();
        let _release = spawn(move || g.set());
        bounded(|| pool.wait_available());
        assert!(member.is_finished());
        assert_eq!(pool.free_count(), 1);
    })
    .unwrap();
}

#[test]
fn kill_and_discard_free_the_slots() {
    run(|| {
        let pool = Pool::new(2);
        let a = pool.spawn(|| sleep(LONG));
        let b = pool.spawn(|| sleep(LONG));
        assert!(pool.is_full());
        assert!(pool.discard(b.id()));
        assert_eq!(
            pool.free_count(),
            1,
            "discarding gives the slot back at once"
        );
        yield_now();
        bounded(|| pool.kill());
        assert!(a.is_finished());
        assert_eq!(pool.free_count(), 2);
        assert!(!b.is_finished(), "discarded: not the pool's to kill");
        b.kill();
        assert!(bounded(|| b.join()).unwrap_err().is_killed());
        assert_eq!(pool.free_count(), 2, "no slot given back twice");
    })
    .unwrap();
}

#[test]
fn map_keeps_order_and_runs_at_most_size_at_once() {
    run(|| {
        let pool = Pool::new(3);
        let c = Concurrency::default();
        let c2 = c.clone();
        let results = bounded(|| {
            pool.map(0..12u64, move |i| {
                let _running = c2.enter();
                sleep(ms(12 - i)); // later items are quicker
                i * i
            })
        });
        assert_eq!(results, (0..12u64).map(|i| i * i).collect::<Vec<_>>());
        assert_eq!(c.most.get(), 3);
    })
    .unwrap();
}

#[test]
fn imap_keeps_at_most_size_items_in_flight() {
    run(|| {
        let pool = Pool::new(2);
        let taken = Rc::new(Cell::new(0usize));
        let t = taken.clone();
        let items = (0..8u64).inspect(move |_| t.set(t.get() + 1));
        let mut results = pool.imap(items, |i| {
            sleep(ms(2));
            i
        });
        let mut yielded = 0;
        while let Some(i) = bounded(|| results.next()) {
            assert_eq!(i, yielded, "in item order");
            yielded += 1;
            // Taken from the input but not yet yielded: at most the size.
            assert!(taken.get() - yielded as usize <= 2);
        }
        assert_eq!(yielded, 8);
    })
    .unwrap();
}

#[test]
fn imap_unordered_runs_at_most_size_and_yields_as_they_finish() {
    run(|| {
        let pool = Pool::new(2);
        let started: Rc<Vec<Event>> = Rc::new((0..4).map(|_| Event::new()).collect());
        let release: Rc<Vec<Event>> = Rc::new((0..4).map(|_| Event::new()).collect());
        let (s, r) = (started.clone(), release.clone());
        // Item 0 runs longest; 1, 2, 3 are released one after the other,
        // each once it has started (it can start only when a slot frees).
        let conductor = spawn(move || {
            for i in 1..4 {
                s[i].wait();
                r[i].set();
            }
            r[0].set();
        });
        let c = Concurrency::default();
        let (c2, s, r) = (c.clone(), started.clone(), release.clone());
        let results: Vec<usize> = bounded(|| {
            pool.imap_unordered(0..4usize, move |i| {
                let _running = c2.enter();
                s[i].set();
                r[i].wait();
                i
            })
            .collect()
        });
        assert_eq!(results, [1, 2, 3, 0]);
        assert_eq!(c.most.get(), 2);
        conductor.join().unwrap();
    })
    .unwrap();
}

#[test]
fn apply_from_a_member_of_a_full_pool_does_not_deadlock() {
    run(|| {
        let pool = Rc::new(Pool::new(1));
        let p = pool.clone();
        let member = pool.spawn(move || p.apply(|| 5) + 1);
        assert_eq!(bounded(|| member.join()).unwrap(), 6);
        assert_eq!(bounded(|| pool.apply(|| 7)), 7);
    })
    .unwrap();
}

#[test]
#[should_panic(expected = "at least 1")]
fn a_pool_of_size_zero_is_refused() {
    let _ = Pool::new(0);
}
