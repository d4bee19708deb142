//! `Condvar` with greenhub's `Mutex`: no lost wake-up, `notify_one` wakes one
//! and `notify_all` all, timeouts, kills (the mutex ends unlocked and the
//! wake-up goes to the next waiter), and plain OS threads on either side.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenhub::sync::{Condvar, Mutex};
use greenhub::{run, sleep, spawn, with_timeout, yield_now, JoinError, JoinHandle};

const BOUND: Duration = Duration::from_secs(5);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn join_bounded<T>(h: JoinHandle<T>) -> Result<T, JoinError> {
    with_timeout(BOUND, || h.join()).expect("join did not finish in time")
}

#[test]
fn condvar_is_send_and_sync() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Condvar>();
}

/// A bounded buffer: a mutex and two condition variables.
struct Buffer {
    items: Mutex<VecDeque<u32>>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
}

impl Buffer {
    fn new(capacity: usize) -> Buffer {
        Buffer {
            items: Mutex::new(VecDeque::new()),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity,
        }
    }

    fn put(&self, item: u32) {
        let mut items = self
            .not_full
            .wait_while(self.items.lock(), |items| items.len() == self.capacity);
        items.push_back(item);
        assert!(items.len() <= self.capacity);
        drop(items);
        self.not_empty.notify_one();
    }

    /// `None` once the producers' end marker arrives.
    fn get(&self) -> Option<u32> {
        let mut items = self
            .not_empty
            .wait_while(self.items.lock(), |items| items.is_empty());
        let item = items.pop_front().unwrap();
        drop(items);
        self.not_full.notify_one();
        (item != u32::MAX).then_some(item)
    }
}

#[test]
fn producers_and_consumers_over_a_bounded_buffer() {
    run(|| {
        let buf = Rc::new(Buffer::new(3));
        let consumers: Vec<_> = (0..3)
            .map(|_| {
                let buf = buf.clone();
                spawn(move || {
                    let (mut n, mut sum) = (0u64, 0u64);
                    while let Some(item) = buf.get() {
                        n += 1;
                        sum += u64::from(item);
                        if n % 7 == 0 {
                            yield_now();
                        }
                    }
                    (n, sum)
                })
            })
            .collect();
        let producers: Vec<_> = (0..2)
            .map(|p| {
                let buf = buf.clone();
                spawn(move || {
                    for i in 0..1_000 {
                        buf.put(p * 1_000 + i);
                    }
                })
            })
            .collect();
        for p in producers {
            join_bounded(p).unwrap();
        }
        for _ in 0..3 {
            buf.put(u32::MAX); // one end marker per consumer
        }
        let (mut n, mut sum) = (0, 0);
        for c in consumers {
            let (cn, csum) = join_bounded(c).unwrap();
            n += cn;
            sum += csum;
        }
        assert_eq!(n, 2_000);
        assert_eq!(sum, (0..2_000u64).sum::<u64>());
    })
    .unwrap();
}

/// Three waiters: `notify_one` wakes exactly one, in arrival order;
/// `notify_all` wakes the rest.
#[test]
fn notify_one_wakes_one_notify_all_wakes_all() {
    run(|| {
        let pair = Rc::new((Mutex::new(Vec::new()), Condvar::new()));
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let pair = pair.clone();
                let h = spawn(move || {
                    let (woken, cv) = &*pair;
                    let mut g = cv.wait(woken.lock());
                    g.push(i);
                });
                yield_now();
                h
            })
            .collect();
        let (woken, cv) = &*pair;
        cv.notify_one();
        for _ in 0..5 {
            yield_now();
        }
        assert_eq!(*woken.lock(), [0], "exactly one, the first");
        cv.notify_all();
        for h in handles {
            join_bounded(h).unwrap();
        }
        assert_eq!(*woken.lock(), [0, 1, 2]);
        // Nobody waits now: a notify is lost, not stored for later.
        cv.notify_one();
        let (_, timed_out) = cv.wait_timeout(woken.lock(), ms(10));
        assert!(timed_out, "a notify with nobody waiting was kept");
    })
    .unwrap();
}

#[test]
fn wait_timeout_times_out_after_the_time_or_returns_when_notified() {
    run(|| {
        let pair = Rc::new((Mutex::new(0), Condvar::new()));
        let (m, cv) = &*pair;
        let start = Instant::now();
        let (g, timed_out) = cv.wait_timeout(m.lock(), ms(40));
        assert!(timed_out);
        assert!(start.elapsed() >= ms(40), "{:?}", start.elapsed());
        drop(g);

        let p = pair.clone();
        let notifier = spawn(move || {
            sleep(ms(10));
            *p.0.lock() = 1;
            p.1.notify_one();
        });
        let (g, timed_out) = cv.wait_timeout(m.lock(), BOUND);
        assert!(!timed_out);
        assert_eq!(*g, 1, "the mutex is locked again, with the new value");
        drop(g);
        join_bounded(notifier).unwrap();

        let (g, timed_out) = cv.wait_timeout_while(m.lock(), ms(20), |v| *v == 1);
        assert!(timed_out);
        assert_eq!(*g, 1);
        let (g, timed_out) = cv.wait_timeout_while(g, ms(20), |v| *v == 0);
        assert!(!timed_out, "the condition was already false");
        drop(g);
    })
    .unwrap();
}

/// A waiter killed in `wait`, or cut short by `with_timeout`, unwinds without
/// the guard: the mutex ends unlocked. A wake-up handed to a waiter that is
/// killed before it runs goes to the next waiter.
#[test]
fn killed_or_timed_out_waiters_leave_the_mutex_unlocked() {
    run(|| {
        let pair = Rc::new((Mutex::new(0), Condvar::new()));
        let (m, cv) = &*pair;
        assert!(with_timeout(ms(20), || drop(cv.wait(m.lock()))).is_err());
        assert!(!m.is_locked());

        let waiter = |name: u32| {
            let pair = pair.clone();
            let h = spawn(move || {
                let (m, cv) = &*pair;
                let mut g = cv.wait(m.lock());
                *g = name;
            });
            yield_now();
            h
        };
        let (a, b) = (waiter(1), waiter(2));
        cv.notify_one(); // handed to `a`...
        a.kill(); // ...which dies before it runs
        assert!(matches!(join_bounded(a), Err(JoinError::Killed)));
        join_bounded(b).unwrap();
        assert_eq!(*m.lock(), 2, "the wake-up went to the next waiter");

        // Killed while re-locking the mutex after the wake-up.
        let c = waiter(3);
        let held = m.lock();
        cv.notify_one();
        yield_now(); // `c` wakes and queues for the mutex
        c.kill();
        drop(held);
        assert!(matches!(join_bounded(c), Err(JoinError::Killed)));
        assert!(!m.is_locked());
        assert_eq!(*m.lock(), 2);
    })
    .unwrap();
}

/// A notify sent right after the waiter released the mutex (before it could
/// park) is not lost: ping-pong many rounds between a green thread and a
/// plain OS thread, each waiting for its turn.
#[test]
fn no_lost_wake_up_between_a_green_thread_and_an_os_thread() {
    const ROUNDS: u32 = 5_000;
    let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
    let p = pair.clone();
    let thread = std::thread::spawn(move || {
        let (m, cv) = &*p;
        for i in 0..ROUNDS {
            let (mut g, timed_out) = cv.wait_timeout_while(m.lock(), BOUND, |v| *v != 2 * i + 1);
            assert!(!timed_out, "the OS thread missed a wake-up at {i}");
            *g += 1;
            drop(g);
            cv.notify_one();
        }
    });
    run(move || {
        let (m, cv) = &*pair;
        for i in 0..ROUNDS {
            let (mut g, timed_out) = cv.wait_timeout_while(m.lock(), BOUND, |v| *v != 2 * i);
            assert!(!timed_out, "the green thread missed a wake-up at {i}");
            *g += 1;
            drop(g);
            cv.notify_one();
        }
        let g = cv.wait_while(m.lock(), |v| *v != 2 * ROUNDS);
        assert_eq!(*g, 2 * ROUNDS);
    })
    .unwrap();
    thread.join().unwrap();
}

/// The narrowest window: a plain OS thread spins on `try_lock`, so it takes
/// the mutex the instant `wait` unlocks it and notifies at once, while the
/// green thread is still on its way to parking. The notify must not be lost.
#[test]
fn no_lost_wake_up_with_a_notifier_spinning_on_the_mutex() {
    const ROUNDS: u32 = 10_000;
    let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
    let p = pair.clone();
    let thread = std::thread::spawn(move || {
        let (m, cv) = &*p;
        let start = Instant::now();
        let mut i = 0;
        while i < ROUNDS && start.elapsed() < BOUND {
            if let Some(mut g) = m.try_lock() {
                if *g == 2 * i + 1 {
                    *g += 1;
                    drop(g);
                    cv.notify_one();
                    i += 1;
                }
            }
            std::hint::spin_loop();
        }
    });
    run(move || {
        let (m, cv) = &*pair;
        for i in 0..ROUNDS {
            let mut g = m.lock();
            *g += 1; // 2i + 1: the spinner's turn
            let (g, timed_out) = cv.wait_timeout_while(g, BOUND, |v| *v != 2 * i + 2);
            assert!(!timed_out, "a wake-up was lost in round {i}");
            drop(g);
        }
    })
    .unwrap();
    thread.join().unwrap();
}

/// Green threads on two hubs wait; a plain OS thread notifies all of them.
#[test]
fn notify_all_from_a_plain_thread_wakes_green_threads_of_two_hubs() {
    let pair = Arc::new((Mutex::new((false, 0u32)), Condvar::new()));
    let hub = |pair: Arc<(Mutex<(bool, u32)>, Condvar)>| {
        std::thread::spawn(move || {
            run(move || {
                let handles: Vec<_> = (0..3)
                    .map(|_| {
                        let pair = pair.clone();
                        spawn(move || {
                            let (m, cv) = &*pair;
                            let (mut g, timed_out) =
                                cv.wait_timeout_while(m.lock(), BOUND, |s| !s.0);
                            assert!(!timed_out);
                            g.1 += 1;
                        })
                    })
                    .collect();
                for h in handles {
                    join_bounded(h).unwrap();
                }
            })
            .unwrap();
        })
    };
    let (a, b) = (hub(pair.clone()), hub(pair.clone()));
    std::thread::sleep(ms(20)); // most of them are waiting by now
    pair.0.lock().0 = true;
    pair.1.notify_all();
    a.join().unwrap();
    b.join().unwrap();
    assert_eq!(pair.0.lock().1, 6);
}

/// `wait_while` re-checks after every wake-up: notifications that leave the
/// condition true do not release the waiter.
#[test]
fn wait_while_waits_until_the_condition_is_false() {
    run(|| {
        let pair = Rc::new((Mutex::new(0), Condvar::new()));
        let wakes = Rc::new(Cell::new(0));
        let (p, w) = (pair.clone(), wakes.clone());
        let waiter = spawn(move || {
            let (m, cv) = &*p;
            let g = cv.wait_while(m.lock(), |v| {
                w.set(w.get() + 1);
                *v < 3
            });
            *g
        });
        let (m, cv) = &*pair;
        for _ in 0..3 {
            yield_now();
            *m.lock() += 1;
            cv.notify_all();
        }
        assert_eq!(join_bounded(waiter).unwrap(), 3);
        assert_eq!(wakes.get(), 4, "checked once, then after each notify");
    })
    .unwrap();
}
