//! `Mutex<T>`: parks the green thread (never the OS thread), first come first
//! served with hand-off, no permit lost to a killed or timed-out waiter, no
//! poisoning, and exact between green threads, hubs and plain OS threads.
//!
//! Waits that another OS thread must end are bounded with `with_timeout`.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenhub::sync::{Mutex, MutexGuard};
use greenhub::{run, sleep, spawn, with_timeout, yield_now, JoinError, JoinHandle};

const BOUND: Duration = Duration::from_secs(5);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn join_bounded<T>(h: JoinHandle<T>) -> Result<T, JoinError> {
    with_timeout(BOUND, || h.join()).expect("join did not finish in time")
}

fn is_send<T: Send>() {}
fn is_sync<T: Sync>() {}

/// `<T as NotSend<_>>::check()` compiles only if `T` is not `Send` (the
/// trick of `static_assertions::assert_not_impl_any!`, as in send_sync.rs).
trait NotSend<A> {
    fn check() {}
}
impl<T: ?Sized> NotSend<()> for T {}
impl<T: ?Sized + Send> NotSend<u8> for T {}

/// `<T as NotSync<_>>::check()` compiles only if `T` is not `Sync`.
trait NotSync<A> {
    fn check() {}
}
impl<T: ?Sized> NotSync<()> for T {}
impl<T: ?Sized + Sync> NotSync<u8> for T {}

#[test]
fn send_and_sync_like_std() {
    is_send::<Mutex<Vec<u8>>>();
    is_sync::<Mutex<Vec<u8>>>();
    // `T: Send` is enough for both, as for std's Mutex.
    is_sync::<Mutex<Cell<u8>>>();
    is_sync::<MutexGuard<'static, Vec<u8>>>();
    <Mutex<Rc<u8>> as NotSend<_>>::check();
    <Mutex<Rc<u8>> as NotSync<_>>::check();
    <MutexGuard<'static, u8> as NotSend<_>>::check();
    <MutexGuard<'static, Cell<u8>> as NotSync<_>>::check();
}

#[test]
fn lock_try_lock_into_inner_get_mut() {
    run(|| {
        let mut m = Mutex::new(vec![1]);
        m.get_mut().push(2);
        {
            let mut g = m.lock();
            assert!(m.is_locked());
            assert!(m.try_lock().is_none());
            assert!(m.lock_timeout(ms(1)).is_none());
            g.push(3);
            assert_eq!(format!("{m:?}"), "Mutex { data: <locked>, .. }");
        }
        assert!(!m.is_locked());
        assert_eq!(*m.try_lock().unwrap(), [1, 2, 3]);
        assert_eq!(format!("{m:?}"), "Mutex { data: [1, 2, 3], .. }");
        assert_eq!(m.into_inner(), [1, 2, 3]);
        let unsized_: &Mutex<[u8]> = &Mutex::new([1u8, 2]);
        assert_eq!(unsized_.lock().len(), 2);
    })
    .unwrap();
}

/// Waiters get the mutex in the order they asked for it, and a newcomer does
/// not barge in while they wait.
#[test]
fn waiters_get_the_mutex_in_arrival_order() {
    run(|| {
        let m = Rc::new(Mutex::new(Vec::new()));
        let guard = m.lock();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let m = m.clone();
                let h = spawn(move || m.lock().push(i));
                yield_now(); // it queues before the next one comes
                h
            })
            .collect();
        drop(guard); // handed to the first waiter
        assert!(m.is_locked(), "handed over, not unlocked");
        assert!(m.try_lock().is_none(), "a newcomer barged past the queue");
        for h in handles {
            join_bounded(h).unwrap();
        }
        assert_eq!(*m.lock(), (0..8).collect::<Vec<_>>());
    })
    .unwrap();
}

/// gevent issue #1487 for locks: unlock-then-lock at once must not starve a
/// waiter; with hand-off two contenders strictly alternate.
#[test]
fn unlock_then_lock_does_not_starve_a_waiter() {
    run(|| {
        let m = Rc::new(Mutex::new(Vec::new()));
        let worker = |name: char| {
            let m = m.clone();
            spawn(move || {
                let mut g = m.lock();
                for _ in 0..50 {
                    g.push(name);
                    yield_now(); // the other one queues meanwhile
                    drop(g);
                    g = m.lock(); // at once: queues behind the other
                }
            })
        };
        let (a, b) = (worker('a'), worker('b'));
        join_bounded(a).unwrap();
        join_bounded(b).unwrap();
        let holders = m.lock();
        assert_eq!(holders.len(), 100);
        for pair in holders.windows(2) {
            assert_ne!(pair[0], pair[1], "a waiter was passed over: {holders:?}");
        }
    })
    .unwrap();
}

/// The mutex handed to a waiter that is killed before it runs goes to the
/// next waiter; the mutex ends unlocked.
#[test]
fn a_killed_waiter_passes_the_mutex_on() {
    run(|| {
        let m = Rc::new(Mutex::new(Vec::new()));
        let guard = m.lock();
        let waiter = |name: &'static str| {
            let m = m.clone();
            let h = spawn(move || m.lock().push(name));
            yield_now();
            h
        };
        let (a, b) = (waiter("a"), waiter("b"));
        drop(guard); // handed to `a`...
        a.kill(); // ...which dies before it runs
        assert!(matches!(join_bounded(a), Err(JoinError::Killed)));
        join_bounded(b).unwrap();
        assert_eq!(*m.lock(), ["b"]);
        assert!(!m.is_locked());

        // Killed while queued: it just leaves the queue.
        let guard = m.lock();
        let c = waiter("c");
        c.kill();
        assert!(matches!(join_bounded(c), Err(JoinError::Killed)));
        drop(guard);
        assert!(!m.is_locked());
        assert!(m.try_lock().is_some());
    })
    .unwrap();
}

/// Killed while holding the guard: it unlocks while unwinding. A panic while
/// holding it does not poison it.
#[test]
fn unwinding_unlocks_and_does_not_poison() {
    run(|| {
        let m = Rc::new(Mutex::new(0));
        let m2 = m.clone();
        let holder = spawn(move || {
            let mut g = m2.lock();
            *g = 1;
            sleep(Duration::from_secs(10));
            *g = 2;
        });
        yield_now();
        assert!(m.is_locked());
        holder.kill();
        assert!(matches!(join_bounded(holder), Err(JoinError::Killed)));
        assert!(!m.is_locked());
        assert_eq!(*m.lock(), 1);

        let r = catch_unwind(AssertUnwindSafe(|| {
            let _g = m.lock();
            panic!("inside the critical section");
        }));
        assert!(r.is_err());
        assert!(!m.is_locked());
        *m.lock() += 1; // no poisoning
        assert_eq!(*m.lock(), 2);
    })
    .unwrap();
}

#[test]
fn with_timeout_around_lock_and_nested_timeouts() {
    run(|| {
        let m = Mutex::new(());
        let _held = m.lock();
        assert!(with_timeout(ms(20), || drop(m.lock())).is_err());
        let r = with_timeout(BOUND, || with_timeout(ms(20), || drop(m.lock())));
        assert!(matches!(r, Ok(Err(_))), "the inner timeout fired");
        let r = with_timeout(ms(20), || with_timeout(BOUND, || drop(m.lock())));
        assert!(r.is_err(), "the outer timeout fired");
        drop(_held);
        assert!(!m.is_locked(), "no timed-out waiter was handed the mutex");
    })
    .unwrap();
}

#[test]
fn lock_timeout_gives_up_after_the_time_never_before() {
    run(|| {
        let m = Rc::new(Mutex::new(0));
        let g = m.lock();
        let start = Instant::now();
        assert!(m.lock_timeout(ms(50)).is_none());
        assert!(start.elapsed() >= ms(50), "{:?}", start.elapsed());
        let m2 = m.clone();
        let waiter = spawn(move || m2.lock_timeout(BOUND).map(|mut g| *g += 1).is_some());
        sleep(ms(20));
        drop(g);
        assert!(join_bounded(waiter).unwrap());
        assert_eq!(*m.lock(), 1);
    })
    .unwrap();
}

/// A waiter whose timeout fires as it is handed the mutex takes it or passes
/// it on: the mutex never stays locked by nobody.
#[test]
fn a_mutex_handed_as_the_timeout_fires_is_not_lost() {
    run(|| {
        for _ in 0..5 {
            let m = Rc::new(Mutex::new(0));
            let g = m.lock();
            let m2 = m.clone();
            let waiter = spawn(move || {
                let _ = with_timeout(ms(10), || *m2.lock() += 1);
            });
            yield_now();
            std::thread::sleep(ms(20)); // the hub is blocked past the deadline
            drop(g);
            join_bounded(waiter).unwrap();
            assert!(!m.is_locked());
        }
    })
    .unwrap();
}

/// A plain OS thread and a green thread each add 1 ten thousand times.
#[test]
fn a_plain_os_thread_and_a_green_thread_contend_exactly() {
    let m = Arc::new(Mutex::new(0i64));
    let m2 = m.clone();
    let thread = std::thread::spawn(move || {
        for _ in 0..10_000 {
            *m2.lock() += 1;
        }
    });
    let m3 = m.clone();
    run(move || {
        let h = spawn(move || {
            for i in 0..10_000 {
                let mut g = m3.lock();
                let v = *g;
                if i % 100 == 0 {
                    yield_now(); // holding it: the OS thread blocks meanwhile
                }
                *g = v + 1;
            }
        });
        join_bounded(h).unwrap();
    })
    .unwrap();
    thread.join().unwrap();
    assert_eq!(*m.lock(), 20_000);
}

/// Two hubs on two OS threads, four green threads each.
#[test]
fn two_hubs_contend_exactly() {
    let m = Arc::new(Mutex::new(0u64));
    let hub = |m: Arc<Mutex<u64>>| {
        std::thread::spawn(move || {
            run(move || {
                let handles: Vec<_> = (0..4)
                    .map(|_| {
                        let m = m.clone();
                        spawn(move || {
                            for i in 0..2_000 {
                                let mut g = m.lock();
                                let v = *g;
                                if i % 7 == 0 {
                                    yield_now();
                                }
                                *g = v + 1;
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
    let (a, b) = (hub(m.clone()), hub(m.clone()));
    a.join().unwrap();
    b.join().unwrap();
    assert_eq!(*m.lock(), 16_000);
}

/// A Vec protected by the mutex under heavy switching inside the critical
/// section: each green thread's two pushes stay adjacent.
#[test]
fn a_vec_keeps_its_invariant_under_heavy_switching() {
    run(|| {
        let m = Rc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..20)
            .map(|id| {
                let m = m.clone();
                spawn(move || {
                    for round in 0..20 {
                        let mut g = m.lock();
                        g.push((id, round));
                        yield_now();
                        yield_now();
                        g.push((id, round));
                    }
                })
            })
            .collect();
        for h in handles {
            join_bounded(h).unwrap();
        }
        let v = m.lock();
        assert_eq!(v.len(), 800);
        for pair in v.chunks(2) {
            assert_eq!(pair[0], pair[1], "a critical section was interleaved");
        }
    })
    .unwrap();
}

/// While a green thread waits for the mutex, the other green threads of its
/// hub keep running: the OS thread is not blocked.
#[test]
fn waiting_parks_the_green_thread_not_the_os_thread() {
    let m = Arc::new(Mutex::new(()));
    let held = Arc::new(AtomicBool::new(false));
    let (m2, h2) = (m.clone(), held.clone());
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _g = m2.lock();
        h2.store(true, Ordering::SeqCst);
        let _ = rx.recv_timeout(BOUND); // hold until told
    });
    run(move || {
        while !held.load(Ordering::SeqCst) {
            sleep(ms(1));
        }
        let m3 = m.clone();
        let waiter = spawn(move || drop(m3.lock()));
        let ticks = Rc::new(Cell::new(0));
        let t = ticks.clone();
        let ticker = spawn(move || {
            for _ in 0..5 {
                sleep(ms(2));
                t.set(t.get() + 1);
            }
        });
        join_bounded(ticker).unwrap();
        assert_eq!(ticks.get(), 5, "the hub ran other green threads meanwhile");
        assert!(!waiter.is_finished());
        tx.send(()).unwrap();
        join_bounded(waiter).unwrap();
    })
    .unwrap();
    holder.join().unwrap();
}

/// A storm of timed-out waiters leaves nothing behind: the mutex is
/// uncontended again afterwards.
#[test]
fn timed_out_waiters_leave_no_trace() {
    run(|| {
        let m = Rc::new(Mutex::new(0));
        let g = m.lock();
        let handles: Vec<_> = (0..10)
            .map(|_| {
                let m = m.clone();
                spawn(move || m.lock_timeout(ms(5)).is_none())
            })
            .collect();
        for h in handles {
            assert!(join_bounded(h).unwrap(), "it timed out");
        }
        drop(g);
        assert!(!m.is_locked(), "nobody was handed the mutex");
        assert!(m.try_lock().is_some());
    })
    .unwrap();
}
