//! `Semaphore` and `BoundedSemaphore`: first come, first served (gevent issue
//! #1487), no permit lost to a killed or timed-out waiter, and shared between
//! green threads, hubs and plain OS threads.
//!
//! Waits that another OS thread must end are bounded with `with_timeout`,
//! since greenhub cannot call them deadlocks: a lost wake-up fails the test
//! instead of hanging it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenhub::sync::{BoundedSemaphore, Semaphore};
use greenhub::{run, sleep, spawn, with_timeout, yield_now, JoinError, JoinHandle};

const BOUND: Duration = Duration::from_secs(5);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn join_bounded<T>(h: JoinHandle<T>) -> Result<T, JoinError> {
    with_timeout(BOUND, || h.join()).expect("join did not finish in time")
}

fn is_send_sync<T: Send + Sync>() {}

#[test]
fn shared_between_threads() {
    is_send_sync::<Semaphore>();
    is_send_sync::<BoundedSemaphore>();
    // A permit belongs to no one in particular: its guard may move.
    is_send_sync::<greenhub::sync::SemaphoreGuard<'static>>();
    is_send_sync::<greenhub::sync::ReleaseError>();
}

#[test]
fn permits_count_down_and_up() {
    run(|| {
        let sem = Semaphore::new(2);
        assert_eq!(sem.available_permits(), 2);
        assert!(sem.try_acquire());
        sem.acquire(); // available: does not park
        assert_eq!(sem.available_permits(), 0);
        assert!(!sem.try_acquire());
        assert!(sem.try_acquire_guard().is_none());
        sem.release();
        sem.release();
        sem.release(); // an unbounded semaphore may grow
        assert_eq!(sem.available_permits(), 3);
        {
            let _a = sem.acquire_guard();
            let _b = sem.try_acquire_guard().unwrap();
            assert_eq!(sem.available_permits(), 1);
        }
        assert_eq!(sem.available_permits(), 3);
        sem.try_acquire_guard().unwrap().forget();
        assert_eq!(sem.available_permits(), 2);
    })
    .unwrap();
}

/// Waiters get the permit in the order they asked for it.
#[test]
fn waiters_are_served_in_arrival_order() {
    run(|| {
        let sem = Rc::new(Semaphore::new(1));
        let order = Rc::new(RefCell::new(Vec::new()));
        sem.acquire();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (s, o) = (sem.clone(), order.clone());
                let h = spawn(move || {
                    s.acquire();
                    o.borrow_mut().push(i);
                    yield_now();
                    s.release();
                });
                yield_now(); // it queues before the next one is spawned
                h
            })
            .collect();
        assert!(order.borrow().is_empty());
        // A newcomer does not jump the queue even with a permit released.
        sem.release();
        assert!(!sem.try_acquire(), "a permit was taken past the queue");
        for h in handles {
            join_bounded(h).unwrap();
        }
        assert_eq!(*order.borrow(), (0..8).collect::<Vec<_>>());
        assert_eq!(sem.available_permits(), 1);
    })
    .unwrap();
}

/// gevent issue #1487: with an unfair semaphore, a green thread that
/// releases and re-acquires at once takes the permit back before the waiter
/// it woke can run, for ever. With hand-off the two strictly alternate.
#[test]
fn issue_1487_release_then_acquire_does_not_starve_a_waiter() {
    run(|| {
        let sem = Rc::new(Semaphore::new(1));
        let holders = Rc::new(RefCell::new(Vec::new()));
        let worker = |name: char| {
            let (s, h) = (sem.clone(), holders.clone());
            spawn(move || {
                s.acquire();
                for _ in 0..50 {
                    h.borrow_mut().push(name);
                    yield_now(); // the other one queues meanwhile
                    s.release();
                    s.acquire(); // at once: must queue behind the other
                }
                s.release();
            })
        };
        let (a, b) = (worker('a'), worker('b'));
        join_bounded(a).unwrap();
        join_bounded(b).unwrap();
        let holders = holders.borrow();
        assert_eq!(holders.len(), 100);
        for pair in holders.windows(2) {
            assert_ne!(pair[0], pair[1], "a waiter was passed over: {holders:?}");
        }
    })
    .unwrap();
}

/// The same starvation across OS threads: a plain thread spinning
/// release/acquire must not keep a green thread out.
#[test]
fn issue_1487_a_spinning_os_thread_does_not_starve_a_green_thread() {
    let sem = Arc::new(Semaphore::new(1));
    let got_it = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    sem.acquire();
    let (s, g, r) = (sem.clone(), got_it.clone(), rounds.clone());
    let spinner = std::thread::spawn(move || {
        let start = Instant::now();
        while !g.load(Ordering::SeqCst) && start.elapsed() < BOUND {
            s.release();
            s.acquire();
            r.fetch_add(1, Ordering::SeqCst);
            // Hold it a while (as real work would): longer than it takes to
            // wake a parked green thread, so an unfair semaphore's waiter
            // always wakes to find the permit taken again.
            let held = Instant::now();
            while held.elapsed() < Duration::from_micros(50) {
                std::hint::spin_loop();
            }
        }
        s.release();
    });
    let r = rounds.clone();
    let passed_over = run(move || {
        // Let the spinner get going.
        while r.load(Ordering::SeqCst) < 10 {
            greenhub::sleep(ms(1));
        }
        let before = r.load(Ordering::SeqCst);
        assert!(
            with_timeout(BOUND, || sem.acquire()).is_ok(),
            "starved by the spinning thread"
        );
        let after = r.load(Ordering::SeqCst);
        got_it.store(true, Ordering::SeqCst);
        sem.release();
        after - before
    })
    .unwrap();
    spinner.join().unwrap();
    // Queued, the green thread gets the very next release (allow for a
    // round or two made before it had queued).
    assert!(
        passed_over <= 3,
        "the spinner re-acquired {passed_over} times"
    );
}

#[test]
fn bounded_semaphore_refuses_a_release_too_many() {
    run(|| {
        let sem = BoundedSemaphore::new(2);
        assert_eq!(sem.max_permits(), 2);
        let err = sem.release().unwrap_err();
        assert_eq!(
            err.to_string(),
            "semaphore released more times than it was acquired"
        );
        assert_eq!(
            sem.available_permits(),
            2,
            "a failed release changes nothing"
        );
        sem.acquire();
        sem.acquire();
        assert!(sem.release().is_ok());
        assert!(sem.release().is_ok());
        assert!(sem.release().is_err());
        assert_eq!(sem.available_permits(), 2);

        let none = BoundedSemaphore::new(0);
        assert!(none.release().is_err());
        assert!(!none.try_acquire());

        // A release with a waiter queued hands the permit over: fine.
        let sem = Rc::new(BoundedSemaphore::new(1));
        sem.acquire();
        let s = sem.clone();
        let waiter = spawn(move || {
            let _permit = s.acquire_guard();
        });
        yield_now();
        assert!(sem.release().is_ok());
        join_bounded(waiter).unwrap();
        assert_eq!(sem.available_permits(), 1);
        assert!(sem.release().is_err());
    })
    .unwrap();
}

/// A permit released to a waiter that is killed before it runs goes to the
/// next waiter; nothing is lost or duplicated.
#[test]
fn a_killed_waiter_passes_its_permit_on() {
    run(|| {
        let sem = Rc::new(Semaphore::new(1));
        let got = Rc::new(RefCell::new(Vec::new()));
        sem.acquire();
        let waiter = |name: &'static str| {
            let (s, g) = (sem.clone(), got.clone());
            let h = spawn(move || {
                let _permit = s.acquire_guard();
                g.borrow_mut().push(name);
            });
            yield_now();
            h
        };
        let (a, b) = (waiter("a"), waiter("b"));
        sem.release(); // handed to `a`...
        a.kill(); // ...which dies before it runs
        assert!(matches!(join_bounded(a), Err(JoinError::Killed)));
        join_bounded(b).unwrap();
        assert_eq!(*got.borrow(), ["b"]);
        assert_eq!(sem.available_permits(), 1);

        // Killed while queued (handed nothing): the queue just shrinks.
        sem.acquire();
        let c = waiter("c");
        c.kill();
        assert!(matches!(join_bounded(c), Err(JoinError::Killed)));
        sem.release();
        assert_eq!(sem.available_permits(), 1);
        assert!(sem.try_acquire(), "no stale waiter holds the permit");
    })
    .unwrap();
}

/// The guard releases while unwinding from a kill.
#[test]
fn a_guard_releases_when_its_holder_is_killed() {
    run(|| {
        let sem = Rc::new(Semaphore::new(1));
        let s = sem.clone();
        let holder = spawn(move || {
            let _permit = s.acquire_guard();
            sleep(Duration::from_secs(10));
        });
        yield_now();
        assert_eq!(sem.available_permits(), 0);
        holder.kill();
        assert!(matches!(join_bounded(holder), Err(JoinError::Killed)));
        assert_eq!(sem.available_permits(), 1);
    })
    .unwrap();
}

#[test]
fn with_timeout_around_acquire_and_nested_timeouts() {
    run(|| {
        let sem = Semaphore::new(0);
        assert!(with_timeout(ms(20), || sem.acquire()).is_err());
        // Inner expires first: the inner one reports it.
        let r = with_timeout(BOUND, || with_timeout(ms(20), || sem.acquire()));
        assert!(matches!(r, Ok(Err(_))));
        // Outer expires first: it passes through the inner one.
        let r = with_timeout(ms(20), || with_timeout(BOUND, || sem.acquire()));
        assert!(r.is_err());
        // None of those waiters is left behind to swallow a permit.
        sem.release();
        assert_eq!(sem.available_permits(), 1);
        assert!(sem.try_acquire());
    })
    .unwrap();
}

/// A waiter whose timeout fires in the same instant as it is handed the
/// permit either takes it or passes it on: the permit survives.
#[test]
fn a_permit_handed_as_the_timeout_fires_is_not_lost() {
    run(|| {
        for _ in 0..5 {
            let sem = Rc::new(Semaphore::new(0));
            let s = sem.clone();
            let waiter = spawn(move || {
                let _ = with_timeout(ms(10), || {
                    s.acquire();
                    s.release();
                });
            });
            yield_now();
            // Block the hub past the deadline, then release: the timer and
            // the hand-off are both pending when the waiter next runs.
            std::thread::sleep(ms(20));
            sem.release();
            join_bounded(waiter).unwrap();
            assert_eq!(sem.available_permits(), 1);
        }
    })
    .unwrap();
}

#[test]
fn acquire_timeout_gives_up_after_the_time_never_before() {
    run(|| {
        let sem = Rc::new(Semaphore::new(0));
        let start = Instant::now();
        assert!(!sem.acquire_timeout(ms(50)));
        assert!(start.elapsed() >= ms(50), "{:?}", start.elapsed());
        assert!(sem.acquire_guard_timeout(ms(1)).is_none());

        let s = sem.clone();
        let releaser = spawn(move || {
            sleep(ms(20));
            s.release();
        });
        assert!(sem.acquire_timeout(BOUND));
        join_bounded(releaser).unwrap();
        assert_eq!(sem.available_permits(), 0);
    })
    .unwrap();
    // And from a plain OS thread.
    let sem = Semaphore::new(0);
    let start = Instant::now();
    assert!(!sem.acquire_timeout(ms(30)));
    assert!(start.elapsed() >= ms(30));
}

/// Waiters that time out in the middle of the queue leave the others' order
/// intact.
#[test]
fn timed_out_waiters_leave_the_queue_in_order() {
    run(|| {
        let sem = Rc::new(Semaphore::new(0));
        let order = Rc::new(RefCell::new(Vec::new()));
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let (s, o) = (sem.clone(), order.clone());
                let h = spawn(move || {
                    // Odd ones give up early.
                    let limit = if i % 2 == 1 { ms(10) } else { BOUND };
                    if s.acquire_timeout(limit) {
                        o.borrow_mut().push(i);
                        s.release();
                    }
                });
                yield_now();
                h
            })
            .collect();
        sleep(ms(30));
        sem.release();
        for h in handles {
            join_bounded(h).unwrap();
        }
        assert_eq!(*order.borrow(), [0, 2, 4]);
        assert_eq!(sem.available_permits(), 1);
    })
    .unwrap();
}

/// A semaphore of one as a lock between a plain OS thread and green threads:
/// never two inside at once.
#[test]
fn a_plain_os_thread_and_green_threads_share_a_semaphore() {
    let sem = Arc::new(Semaphore::new(1));
    let inside = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let critical = {
        let (inside, total) = (inside.clone(), total.clone());
        move || {
            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two inside");
            total.fetch_add(1, Ordering::SeqCst);
            inside.fetch_sub(1, Ordering::SeqCst);
        }
    };
    let (s, c) = (sem.clone(), critical.clone());
    let thread = std::thread::spawn(move || {
        for _ in 0..2_000 {
            let _permit = s.acquire_guard();
            c();
        }
    });
    run(move || {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (s, c) = (sem.clone(), critical.clone());
                spawn(move || {
                    for i in 0..500 {
                        let _permit = s.acquire_guard();
                        c();
                        if i % 3 == 0 {
                            yield_now(); // holding it: the others queue
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            join_bounded(h).unwrap();
        }
    })
    .unwrap();
    thread.join().unwrap();
    assert_eq!(total.load(Ordering::SeqCst), 4_000);
}

/// Two hubs on two OS threads, several green threads each, three permits:
/// never more than three inside.
#[test]
fn two_hubs_contend_for_permits() {
    let sem = Arc::new(Semaphore::new(3));
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let hub = |sem: Arc<Semaphore>, inside: Arc<AtomicUsize>, most: Arc<AtomicUsize>| {
        std::thread::spawn(move || {
            run(move || {
                let handles: Vec<_> = (0..5)
                    .map(|_| {
                        let (s, i, m) = (sem.clone(), inside.clone(), most.clone());
                        spawn(move || {
                            for _ in 0..300 {
                                let _permit = s.acquire_guard();
                                let now = i.fetch_add(1, Ordering::SeqCst) + 1;
                                m.fetch_max(now, Ordering::SeqCst);
                                yield_now();
                                i.fetch_sub(1, Ordering::SeqCst);
                            }
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
    let a = hub(sem.clone(), inside.clone(), most.clone());
    let b = hub(sem.clone(), inside.clone(), most.clone());
    a.join().unwrap();
    b.join().unwrap();
    assert!(most.load(Ordering::SeqCst) <= 3);
    assert_eq!(sem.available_permits(), 3);
}

/// Many permits, many waiters: the count ends where it started.
#[test]
fn no_permit_is_lost_under_churn_with_kills_and_timeouts() {
    run(|| {
        let sem = Rc::new(Semaphore::new(2));
        let handles: Vec<_> = (0..40)
            .map(|i| {
                let s = sem.clone();
                spawn(move || {
                    for _ in 0..20 {
                        if i % 3 == 0 {
                            if s.acquire_timeout(ms(1)) {
                                yield_now();
                                s.release();
                            }
                        } else {
                            let _p = s.acquire_guard();
                            yield_now();
                        }
                    }
                })
            })
            .collect();
        // Kill every fifth green thread mid-way.
        for _ in 0..10 {
            yield_now();
        }
        let killed = Cell::new(0);
        for h in handles.iter().step_by(5) {
            h.kill();
            killed.set(killed.get() + 1);
        }
        for h in handles {
            let _ = join_bounded(h);
        }
        assert_eq!(sem.available_permits(), 2);
        assert!(killed.get() > 0);
    })
    .unwrap();
}
