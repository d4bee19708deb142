//! `Queue`, `LifoQueue` and `PriorityQueue`: order, bounded puts, FIFO
//! service of blocked getters and putters, close, kills and timeouts around
//! waits (nothing swallowed), task_done/join, and traffic between green
//! threads, plain OS threads and other hubs.
//!
//! Every wait that another OS thread must end is bounded (`with_timeout` in
//! green threads, `*_timeout` in plain ones): with other OS threads around,
//! greenhub cannot call such a wait a deadlock, so a lost wake-up would
//! otherwise hang the test.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use greenhub::sync::{
    Closed, GetTimeoutError, LifoQueue, PriorityQueue, PutTimeoutError, Queue, TryGetError,
    TryPutError,
};
use greenhub::{run, sleep, spawn, with_timeout, yield_now, JoinError, JoinHandle};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const LONG: Duration = Duration::from_secs(10);
/// Generous upper bound for "promptly" on a loaded machine.
const BOUND: Duration = Duration::from_secs(10);

/// Joins `h`, failing the test if that takes longer than `BOUND`.
fn join_bounded<T>(h: JoinHandle<T>) -> Result<T, JoinError> {
    with_timeout(BOUND, || h.join()).expect("join did not finish in time")
}

/// Adds one to its counter when dropped.
struct DropCount(Rc<Cell<usize>>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// `<T as NotSend<_>>::check()` compiles only if `T` is not `Send` (the
/// trick behind `static_assertions::assert_not_impl_any!`).
trait NotSend<A> {
    fn check() {}
}
impl<T: ?Sized> NotSend<()> for T {}
impl<T: ?Sized + Send> NotSend<u8> for T {}

#[test]
fn queues_are_send_and_sync_when_their_items_are_send() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Queue<String>>();
    is_send_sync::<LifoQueue<String>>();
    is_send_sync::<PriorityQueue<String>>();
    is_send_sync::<Closed<String>>();
    is_send_sync::<TryPutError<String>>();
    // Items that must stay on their OS thread keep the queue there too.
    <Queue<Rc<u8>> as NotSend<_>>::check();
    <PriorityQueue<Rc<u8>> as NotSend<_>>::check();
}

#[test]
fn items_come_out_in_the_order_they_went_in() {
    let q = Queue::new();
    for i in 0..100 {
        q.put(i).unwrap();
    }
    assert_eq!(q.len(), 100);
    assert_eq!(q.capacity(), None);
    assert!(!q.is_full());
    let out: Vec<i32> = (0..100).map(|_| q.try_get().unwrap()).collect();
    assert_eq!(out, (0..100).collect::<Vec<_>>());
    assert!(q.is_empty());
    assert_eq!(q.try_get(), Err(TryGetError::Empty));
}

#[test]
fn lifo_and_priority_order() {
    let lifo = LifoQueue::new();
    let prio = PriorityQueue::new();
    let min_first = PriorityQueue::new();
    for i in [3, 1, 4, 1, 5, 9, 2, 6] {
        lifo.put(i).unwrap();
        prio.put(i).unwrap();
        min_first.put(Reverse(i)).unwrap();
    }
    let drain = |f: &dyn Fn() -> Option<i32>| std::iter::from_fn(f).collect::<Vec<_>>();
    assert_eq!(drain(&|| lifo.try_get().ok()), [6, 2, 9, 5, 1, 4, 1, 3]);
    assert_eq!(drain(&|| prio.try_get().ok()), [9, 6, 5, 4, 3, 2, 1, 1]);
    assert_eq!(
        drain(&|| min_first.try_get().ok().map(|r| r.0)),
        [1, 1, 2, 3, 4, 5, 6, 9]
    );
}

#[test]
fn lifo_and_priority_queues_block_and_close_like_queue() {
    run(|| {
        let lifo = Rc::new(LifoQueue::bounded(1));
        let prio = Rc::new(PriorityQueue::bounded(1));
        lifo.put(1).unwrap();
        prio.put(1).unwrap();
        assert_eq!(lifo.try_put(2), Err(TryPutError::Full(2)));
        assert_eq!(
            prio.put_timeout(2, ms(10)),
            Err(PutTimeoutError::Timeout(2))
        );
        let (l, p) = (lifo.clone(), prio.clone());
        let getter = spawn(move || {
            let a = (l.get().unwrap(), l.get().unwrap());
            let b = (p.get().unwrap(), p.get().unwrap());
            (a, b)
        });
        lifo.put(2).unwrap(); // parks until the getter frees the slot
        prio.put(0).unwrap();
        assert_eq!(join_bounded(getter).unwrap(), ((1, 2), (1, 0)));
        lifo.close();
        prio.close();
        assert_eq!(lifo.get(), Err(Closed(())));
        assert_eq!(prio.get_timeout(LONG), Err(GetTimeoutError::Closed));
    })
    .unwrap();
}

#[test]
fn peek_shows_the_next_item_without_taking_it() {
    let q = Queue::new();
    assert_eq!(q.peek(), None);
    q.put("a").unwrap();
    q.put("b").unwrap();
    assert_eq!(q.peek(), Some("a"));
    assert_eq!(q.len(), 2);
    assert_eq!(q.try_get(), Ok("a"));
    assert_eq!(q.peek(), Some("b"));
    let lifo = LifoQueue::new();
    lifo.put(1).unwrap();
    lifo.put(2).unwrap();
    assert_eq!(lifo.peek(), Some(2));
    let prio = PriorityQueue::new();
    prio.put(1).unwrap();
    prio.put(7).unwrap();
    prio.put(3).unwrap();
    assert_eq!(prio.peek(), Some(7));
}

#[test]
fn a_bounded_put_parks_while_full_and_resumes_when_a_getter_frees_a_slot() {
    run(|| {
        let q = Rc::new(Queue::bounded(2));
        assert_eq!(q.capacity(), Some(2));
        q.put(1).unwrap();
        q.put(2).unwrap();
        assert!(q.is_full());
        assert_eq!(q.try_put(3), Err(TryPutError::Full(3)));
        let done = Rc::new(Cell::new(false));
        let (q2, d) = (q.clone(), done.clone());
        let putter = spawn(move || {
            q2.put(3).unwrap();
            d.set(true);
        });
        yield_now();
        yield_now();
        assert!(!done.get(), "the putter parks while the queue is full");
        assert_eq!(q.len(), 2);
        // Freeing a slot moves the blocked putter's item in at once.
        assert_eq!(q.get(), Ok(1));
        assert_eq!(q.len(), 2);
        join_bounded(putter).unwrap();
        assert!(done.get());
        assert_eq!((q.get(), q.get()), (Ok(2), Ok(3)));
    })
    .unwrap();
}

#[test]
fn blocked_getters_are_served_first_come_first_served() {
    run(|| {
        let q = Rc::new(Queue::new());
        let got = Rc::new(RefCell::new(Vec::new()));
        let getters: Vec<_> = (0..5)
            .map(|g| {
                let (q, got) = (q.clone(), got.clone());
                spawn(move || {
                    let item = q.get().unwrap();
                    got.borrow_mut().push((g, item));
                })
            })
            .collect();
        yield_now(); // all five park, in order
        for item in 100..105 {
            q.put(item).unwrap();
        }
        // A newcomer cannot barge past the woken getters.
        assert_eq!(q.try_get(), Err(TryGetError::Empty));
        for h in getters {
            join_bounded(h).unwrap();
        }
        let mut got = got.borrow().clone();
        got.sort();
        assert_eq!(got, [(0, 100), (1, 101), (2, 102), (3, 103), (4, 104)]);
    })
    .unwrap();
}

#[test]
fn blocked_putters_are_served_first_come_first_served() {
    run(|| {
        let q = Rc::new(Queue::bounded(1));
        q.put(0).unwrap();
        let putters: Vec<_> = (1..=5)
            .map(|i| {
                let q = q.clone();
                spawn(move || q.put(i).unwrap())
            })
            .collect();
        yield_now(); // all five park, in order
                     // A newcomer cannot barge past them, even once a slot frees.
        let out: Vec<i32> = (0..6)
            .map(|_| {
                let item = q.get().unwrap();
                if item < 5 {
                    // The freed slot went to the next blocked putter.
                    assert_eq!(q.try_put(99), Err(TryPutError::Full(99)));
                }
                item
            })
            .collect();
        assert_eq!(out, [0, 1, 2, 3, 4, 5]);
        for h in putters {
            join_bounded(h).unwrap();
        }
        assert!(q.is_empty());
    })
    .unwrap();
}

#[test]
fn close_lets_getters_drain_then_reports_closed() {
    run(|| {
        let q = Rc::new(Queue::new());
        q.put(1).unwrap();
        q.put(2).unwrap();
        q.close();
        assert!(q.is_closed());
        assert!(q.is_readable());
        assert_eq!(q.put(3), Err(Closed(3)));
        assert_eq!(q.try_put(3), Err(TryPutError::Closed(3)));
        assert_eq!(q.put_timeout(3, LONG), Err(PutTimeoutError::Closed(3)));
        assert_eq!(q.get(), Ok(1));
        assert_eq!(q.get_timeout(LONG), Ok(2));
        assert_eq!(q.get(), Err(Closed(())));
        assert_eq!(q.try_get(), Err(TryGetError::Closed));
        assert_eq!(q.get_timeout(LONG), Err(GetTimeoutError::Closed));
        q.close(); // again: nothing happens
    })
    .unwrap();
}

#[test]
fn close_wakes_blocked_getters_and_gives_blocked_putters_their_items_back() {
    run(|| {
        let empty = Rc::new(Queue::<u32>::new());
        let getters: Vec<_> = (0..3)
            .map(|_| {
                let q = empty.clone();
                spawn(move || q.get())
            })
            .collect();
        let full = Rc::new(Queue::bounded(1));
        full.put(String::from("in")).unwrap();
        let putters: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|s| {
                let q = full.clone();
                spawn(move || q.put(s.to_string()))
            })
            .collect();
        yield_now();
        empty.close();
        full.close();
        for h in getters {
            assert_eq!(join_bounded(h).unwrap(), Err(Closed(())));
        }
        let back: Vec<_> = putters
            .into_iter()
            .map(|h| join_bounded(h).unwrap().unwrap_err().into_inner())
            .collect();
        assert_eq!(back, ["a", "b"]);
        // What was in the queue is still drained.
        assert_eq!(full.get().as_deref(), Ok("in"));
        assert_eq!(full.get(), Err(Closed(())));
    })
    .unwrap();
}

#[test]
fn iter_yields_items_until_closed_and_drained() {
    run(|| {
        let q = Rc::new(Queue::bounded(3));
        let q2 = q.clone();
        let consumer = spawn(move || {
            let mut seen = Vec::new();
            for item in &*q2 {
                seen.push(item);
            }
            seen
        });
        for i in 0..20 {
            q.put(i).unwrap();
        }
        q.close();
        assert_eq!(join_bounded(consumer).unwrap(), (0..20).collect::<Vec<_>>());
    })
    .unwrap();
}

#[test]
fn timeouts_return_the_item_and_take_nothing() {
    run(|| {
        let q = Queue::bounded(1);
        let start = Instant::now();
        assert_eq!(q.get_timeout(ms(20)), Err(GetTimeoutError::Timeout));
        assert!(start.elapsed() >= ms(20));
        q.put(1).unwrap();
        let start = Instant::now();
        assert_eq!(q.put_timeout(2, ms(20)), Err(PutTimeoutError::Timeout(2)));
        assert!(start.elapsed() >= ms(20));
        assert_eq!(
            q.put_timeout(2, Duration::ZERO),
            Err(PutTimeoutError::Timeout(2))
        );
        // Neither left anything behind: the queue holds exactly the one item.
        assert_eq!(q.len(), 1);
        assert_eq!(q.get_timeout(Duration::ZERO), Ok(1));
        assert_eq!(q.put_timeout(3, ms(20)), Ok(()));
        assert_eq!(q.try_get(), Ok(3));
    })
    .unwrap();
}

/// A getter is handed an item and killed before it runs: the item goes to
/// the next waiting getter.
#[test]
fn a_killed_getter_passes_its_item_to_the_next_getter() {
    run(|| {
        let q = Rc::new(Queue::new());
        let (qa, qb) = (q.clone(), q.clone());
        let a = spawn(move || qa.get());
        let b = spawn(move || qb.get());
        yield_now(); // both park: a first
        q.put("x").unwrap(); // handed to a
        a.kill(); // before a runs
        assert!(matches!(join_bounded(a), Err(JoinError::Killed)));
        assert_eq!(join_bounded(b).unwrap(), Ok("x"));
        assert!(q.is_empty());
    })
    .unwrap();
}

/// The same with no other getter: the item goes back to the front, ahead of
/// items put after it.
#[test]
fn a_killed_getter_returns_its_item_to_the_front_of_the_queue() {
    run(|| {
        let q = Rc::new(Queue::new());
        let qa = q.clone();
        let a = spawn(move || qa.get());
        yield_now();
        q.put(1).unwrap(); // handed to a
        a.kill();
        q.put(2).unwrap(); // a has not run: this one is buffered
        assert!(matches!(join_bounded(a), Err(JoinError::Killed)));
        assert_eq!(q.len(), 2);
        assert_eq!((q.try_get(), q.try_get()), (Ok(1), Ok(2)));
    })
    .unwrap();
}

/// A getter parked with nothing handed is killed: it leaves the line, and a
/// later item goes to the getter behind it, or stays in the queue.
#[test]
fn a_killed_waiting_getter_never_swallows_a_later_item() {
    run(|| {
        let q = Rc::new(Queue::new());
        let (qa, qb) = (q.clone(), q.clone());
        let a = spawn(move || qa.get());
        let b = spawn(move || qb.get());
        yield_now();
        a.kill();
        assert!(matches!(join_bounded(a), Err(JoinError::Killed)));
        q.put(1).unwrap();
        assert_eq!(join_bounded(b).unwrap(), Ok(1));
        let qc = q.clone();
        let c = spawn(move || qc.get());
        yield_now();
        c.kill();
        assert!(matches!(join_bounded(c), Err(JoinError::Killed)));
        q.put(2).unwrap();
        assert_eq!(q.try_get(), Ok(2));
    })
    .unwrap();
}

/// `with_timeout` around `get`: the getter's time runs out in the same turn
/// of the hub as an item is handed to it; the item is not lost.
#[test]
fn a_timed_out_getter_never_swallows_an_item() {
    run(|| {
        let q = Rc::new(Queue::new());
        let (qa, qp) = (q.clone(), q.clone());
        let a = spawn(move || with_timeout(ms(30), || qa.get()));
        let p = spawn(move || {
            sleep(ms(20));
            qp.put("x").unwrap();
        });
        yield_now(); // a parks in get, p in sleep
                     // Hold the hub past both deadlines: they fire in one turn, the
                     // putter's first, so the item is handed to a just as it times out.
        let start = Instant::now();
        while start.elapsed() < ms(60) {
            std::hint::spin_loop();
        }
        join_bounded(p).unwrap();
        let got = join_bounded(a).unwrap();
        let left = q.try_get().ok();
        match got {
            Err(_elapsed) => assert_eq!(left, Some("x"), "the item went back"),
            Ok(item) => assert_eq!((item, left), (Ok("x"), None)),
        }
        // Either way, later items go to the next getter, not to a ghost.
        let qb = q.clone();
        let b = spawn(move || qb.get());
        yield_now();
        q.put("y").unwrap();
        assert_eq!(join_bounded(b).unwrap(), Ok("y"));
    })
    .unwrap();
}

/// gevent's scenario: queue waits inside nested timeouts. The outer one
/// firing first unwinds through the inner; the inner one firing leaves the
/// outer running; no expired waiter stays in line.
#[test]
fn nested_timeouts_around_queue_waits() {
    run(|| {
        let q = Queue::<u32>::new();
        // Outer fires first, through an inner with_timeout and a get_timeout.
        let r = with_timeout(ms(20), || {
            with_timeout(LONG, || q.get_timeout(LONG)).expect("the inner did not fire")
        });
        assert!(r.is_err(), "the outer timeout fired");
        // Inner fires first; the outer body goes on and waits again.
        let r = with_timeout(BOUND, || {
            let inner = with_timeout(ms(10), || q.get());
            assert!(inner.is_err(), "the inner timeout fired");
            let timed = q.get_timeout(ms(10));
            assert_eq!(timed, Err(GetTimeoutError::Timeout));
            "outer body finished"
        });
        assert_eq!(r, Ok("outer body finished"));
        // None of the expired getters is still in line: the item stays.
        q.put(5).unwrap();
        assert_eq!(q.len(), 1);
        // And a bounded put inside nested timeouts.
        let full = Queue::bounded(1);
        full.put(1).unwrap();
        let r = with_timeout(ms(20), || with_timeout(LONG, || full.put(2)));
        assert!(r.is_err());
        assert_eq!(full.len(), 1);
        assert_eq!(full.try_get(), Ok(1));
        assert_eq!(
            full.try_get(),
            Err(TryGetError::Empty),
            "the put never landed"
        );
    })
    .unwrap();
}

/// A putter killed while blocked takes its item with it (dropped as it
/// unwinds); the queue never delivers it.
#[test]
fn a_killed_putter_drops_its_item_and_leaves_the_line() {
    run(|| {
        let drops = Rc::new(Cell::new(0));
        let q = Rc::new(Queue::bounded(1));
        q.put(DropCount(drops.clone())).unwrap();
        let (qa, qb) = (q.clone(), q.clone());
        let (da, db) = (drops.clone(), drops.clone());
        let a = spawn(move || qa.put(DropCount(da)).is_ok());
        let b = spawn(move || qb.put(DropCount(db)).is_ok());
        yield_now(); // both park, a first
        a.kill();
        assert!(matches!(join_bounded(a), Err(JoinError::Killed)));
        assert_eq!(drops.get(), 1, "a's item was dropped as it unwound");
        drop(q.get().unwrap()); // frees the slot: b's item moves in, not a's
        assert_eq!(drops.get(), 2);
        assert!(join_bounded(b).unwrap());
        assert_eq!(q.len(), 1);
        drop(q.try_get().unwrap());
        assert_eq!(drops.get(), 3);
        assert!(q.is_empty());
    })
    .unwrap();
}

#[test]
fn dropping_a_queue_drops_its_items() {
    let drops = Rc::new(Cell::new(0));
    let q = Queue::new();
    for _ in 0..3 {
        q.put(DropCount(drops.clone())).unwrap();
    }
    drop(q);
    assert_eq!(drops.get(), 3);
}

#[test]
fn task_done_and_join() {
    run(|| {
        let q = Rc::new(Queue::new());
        let processed = Rc::new(Cell::new(0));
        for i in 0..10 {
            q.put(i).unwrap();
        }
        assert_eq!(q.unfinished_tasks(), 10);
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let (q, p) = (q.clone(), processed.clone());
                spawn(move || {
                    for _item in &*q {
                        sleep(ms(1));
                        p.set(p.get() + 1);
                        q.task_done().unwrap();
                    }
                })
            })
            .collect();
        assert!(!q.join_timeout(Duration::ZERO));
        assert!(with_timeout(BOUND, || q.join()).is_ok());
        assert_eq!(processed.get(), 10, "join returned after every task_done");
        assert_eq!(q.unfinished_tasks(), 0);
        assert!(
            q.join_timeout(Duration::ZERO),
            "nothing unfinished: at once"
        );
        // More task_done calls than items put is an error.
        assert!(q.task_done().is_err());
        q.close();
        for h in workers {
            join_bounded(h).unwrap();
        }
    })
    .unwrap();
}

#[test]
fn join_times_out_while_items_are_unfinished() {
    let q = Queue::new();
    q.put(1).unwrap();
    let start = Instant::now();
    assert!(!q.join_timeout(ms(20)));
    assert!(start.elapsed() >= ms(20));
    q.try_get().unwrap();
    assert!(!q.join_timeout(ms(1)), "got but not marked done");
    q.task_done().unwrap();
    assert!(q.join_timeout(ms(1)));
}

#[test]
fn a_plain_os_thread_puts_and_a_green_thread_gets() {
    let q = Arc::new(Queue::bounded(4));
    let q2 = q.clone();
    let putter = std::thread::spawn(move || {
        for i in 0..1000u32 {
            q2.put(i).unwrap(); // blocks the OS thread while full
        }
        q2.close();
    });
    let got =
        run(move || with_timeout(BOUND, || q.iter().collect::<Vec<_>>()).expect("the items came"))
            .unwrap();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    putter.join().unwrap();
}

#[test]
fn a_green_thread_puts_and_a_plain_os_thread_gets() {
    let q = Arc::new(Queue::bounded(4));
    let q2 = q.clone();
    let (tx, rx) = mpsc::channel();
    let getter = std::thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            match q2.get_timeout(BOUND) {
                Ok(item) => got.push(item),
                Err(GetTimeoutError::Closed) => break,
                Err(GetTimeoutError::Timeout) => panic!("lost wake-up"),
            }
        }
        tx.send(got).unwrap();
    });
    run(move || {
        let putter = spawn(move || {
            for i in 0..1000u32 {
                q.put(i).unwrap(); // parks the green thread while full
            }
            q.close();
        });
        join_bounded(putter).unwrap();
    })
    .unwrap();
    assert_eq!(
        rx.recv_timeout(BOUND).unwrap(),
        (0..1000).collect::<Vec<_>>()
    );
    getter.join().unwrap();
}

#[test]
fn plain_os_threads_block_in_put_and_get() {
    let q = Arc::new(Queue::bounded(1));
    q.put(0).unwrap();
    let q2 = q.clone();
    let putter = std::thread::spawn(move || q2.put_timeout(1, BOUND));
    std::thread::sleep(ms(20));
    assert_eq!(q.get_timeout(BOUND), Ok(0));
    assert_eq!(putter.join().unwrap(), Ok(()));
    assert_eq!(q.get_timeout(BOUND), Ok(1));
    // A plain thread blocked in put gets its item back on close.
    q.put(2).unwrap();
    let q3 = q.clone();
    let putter = std::thread::spawn(move || q3.put(3));
    std::thread::sleep(ms(20));
    q.close();
    assert_eq!(putter.join().unwrap(), Err(Closed(3)));
}

/// Two hubs on two OS threads: producers on one, consumers on the other, in
/// both directions at once.
#[test]
fn queues_between_the_green_threads_of_two_hubs() {
    let there = Arc::new(Queue::bounded(8));
    let back = Arc::new(Queue::bounded(8));
    let (t2, b2) = (there.clone(), back.clone());
    let other_hub = std::thread::spawn(move || {
        run(move || {
            // Echo every item back, doubled.
            let echo = spawn(move || {
                for item in &*t2 {
                    b2.put(item * 2).unwrap();
                }
                b2.close();
            });
            join_bounded(echo).unwrap();
        })
        .unwrap()
    });
    let sum = run(move || {
        let t = there.clone();
        let producer = spawn(move || {
            for i in 1..=2000u64 {
                t.put(i).unwrap();
            }
            t.close();
        });
        let consumer = spawn(move || back.iter().sum::<u64>());
        join_bounded(producer).unwrap();
        join_bounded(consumer).unwrap()
    })
    .unwrap();
    assert_eq!(sum, 2 * 2000 * 2001 / 2);
    other_hub.join().unwrap();
}

/// 10,000 items through a bounded(16) queue between 4 producers and 4
/// consumers: every item arrives exactly once. Once on one hub, once spread
/// over two hubs and two plain OS threads.
#[test]
fn ten_thousand_items_four_producers_four_consumers() {
    const N: u32 = 10_000;
    let check = |mut got: Vec<u32>| {
        got.sort_unstable();
        assert_eq!(got, (0..N).collect::<Vec<_>>());
    };

    // One hub.
    let got = run(|| {
        let q = Rc::new(Queue::bounded(16));
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let q = q.clone();
                spawn(move || {
                    for i in (p..N).step_by(4) {
                        q.put(i).unwrap();
                        if i % 7 == 0 {
                            yield_now();
                        }
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                spawn(move || q.iter().collect::<Vec<_>>())
            })
            .collect();
        for h in producers {
            join_bounded(h).unwrap();
        }
        q.close();
        consumers
            .into_iter()
            .flat_map(|h| join_bounded(h).unwrap())
            .collect::<Vec<_>>()
    })
    .unwrap();
    check(got);

    // Two hubs (one producer and one consumer green thread each) and two
    // plain OS threads (one producer, one consumer), sharing the queue.
    let q = Arc::new(Queue::bounded(16));
    let hub = |p: u32| {
        let q = q.clone();
        std::thread::spawn(move || {
            run(move || {
                let qp = q.clone();
                let producer = spawn(move || {
                    for i in (p..N).step_by(4) {
                        qp.put(i).unwrap();
                    }
                });
                let consumer = spawn(move || {
                    let mut got = Vec::new();
                    loop {
                        match q.get_timeout(BOUND) {
                            Ok(i) => got.push(i),
                            Err(GetTimeoutError::Closed) => return got,
                            Err(GetTimeoutError::Timeout) => panic!("lost wake-up"),
                        }
                    }
                });
                join_bounded(producer).unwrap();
                join_bounded(consumer).unwrap()
            })
            .unwrap()
        })
    };
    let plain = |p: u32| {
        let q = q.clone();
        std::thread::spawn(move || {
            let qp = q.clone();
            let producer = std::thread::spawn(move || {
                for i in (p..N).step_by(4) {
                    qp.put_timeout(i, BOUND).unwrap();
                }
            });
            let mut got = Vec::new();
            loop {
                match q.get_timeout(BOUND) {
                    Ok(i) => got.push(i),
                    Err(GetTimeoutError::Closed) => break,
                    Err(GetTimeoutError::Timeout) => panic!("lost wake-up"),
                }
            }
            producer.join().unwrap();
            got
        })
    };
    // Producers 0 and 1 on hubs, 2 and 3 on plain threads; close once all
    // four have put everything (each thread's producer finishes before its
    // consumer can see the close).
    let (tx, rx) = mpsc::channel::<()>();
    let closer = {
        let q = q.clone();
        std::thread::spawn(move || {
            // Wait until the queue has taken all N items, then close.
            let start = Instant::now();
            while q.unfinished_tasks() < N as usize {
                assert!(start.elapsed() < BOUND, "producers stalled");
                std::thread::sleep(ms(1));
            }
            q.close();
            tx.send(()).unwrap();
        })
    };
    let threads = [hub(0), hub(1), plain(2), plain(3)];
    let got: Vec<u32> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    rx.recv_timeout(BOUND).unwrap();
    closer.join().unwrap();
    check(got);
}

#[test]
fn errors_display_and_give_the_item_back() {
    assert_eq!(Closed("x").to_string(), "the queue is closed");
    assert_eq!(Closed("x").into_inner(), "x");
    assert_eq!(format!("{:?}", Closed(vec![1])), "Closed(..)");
    let full = TryPutError::Full(1);
    assert!(full.is_full() && !full.is_closed());
    assert_eq!(full.to_string(), "the queue is full");
    assert_eq!(full.into_inner(), 1);
    let timeout = PutTimeoutError::Timeout(2);
    assert!(timeout.is_timeout());
    assert_eq!(timeout.into_inner(), 2);
    assert_eq!(TryGetError::Empty.to_string(), "the queue is empty");
    assert_eq!(
        GetTimeoutError::Timeout.to_string(),
        "timed out waiting for an item"
    );
    let q = Queue::bounded(1);
    q.put(1).unwrap();
    assert!(q.task_done().is_ok());
    let e = q.task_done().unwrap_err();
    assert!(e.to_string().contains("task_done"));
    let _: &dyn std::error::Error = &e;
    assert_eq!(
        format!("{q:?}"),
        "Queue { len: 1, capacity: 1, closed: false, .. }"
    );
}

#[test]
#[should_panic(expected = "use Channel")]
fn a_bounded_queue_of_capacity_zero_is_refused() {
    let _ = Queue::<u8>::bounded(0);
}
