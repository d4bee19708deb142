//! `Event` and `AsyncResult` between green threads, plain OS threads and the
//! green threads of other hubs.
//!
//! Waits that another OS thread must end are bounded with `with_timeout` (in
//! green threads) or `recv_timeout` (in plain threads): with other OS threads
//! around, greenhub cannot call such a wait a deadlock, so a lost wake-up
//! would otherwise hang the test.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use greenhub::sync::{AsyncResult, Event};
use greenhub::{run, sleep, spawn, with_timeout, yield_now};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const BOUND: Duration = Duration::from_secs(5);

#[test]
fn set_clear_is_set_and_wait_between_green_threads() {
    run(|| {
        let ev = Rc::new(Event::new());
        assert!(!ev.is_set());
        let woken = Rc::new(Cell::new(0));
        let waiter = || {
            let (e, w) = (ev.clone(), woken.clone());
            spawn(move || {
                e.wait();
                w.set(w.get() + 1);
            })
        };
        let (a, b) = (waiter(), waiter());
        yield_now();
        assert_eq!(woken.get(), 0, "parked until set");
        ev.set();
        assert!(ev.is_set());
        with_timeout(BOUND, || (a.join().unwrap(), b.join().unwrap())).unwrap();
        assert_eq!(woken.get(), 2);

        // Set stays set: wait returns at once, without letting others run.
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let other = spawn(move || r.set(true));
        ev.wait();
        assert!(!ran.get(), "wait on a set event does not yield");
        other.join().unwrap();

        // Cleared: waiters park again until the next set.
        ev.clear();
        assert!(!ev.is_set());
        let c = waiter();
        yield_now();
        assert_eq!(woken.get(), 2);
        ev.set();
        with_timeout(BOUND, || c.join().unwrap()).unwrap();
        assert_eq!(woken.get(), 3);
    })
    .unwrap();
}

/// Python's `threading.Event` and gevent's `Event` release the waiters that
/// are waiting when `set` is called, even if `clear` follows at once (a
/// "pulse"); greenhub's waiters re-check the flag when they run, find it
/// cleared, and park again.
#[test]
fn set_then_clear_releases_the_waiters_already_waiting() {
    run(|| {
        let ev = Rc::new(Event::new());
        let e = ev.clone();
        let waiter = spawn(move || e.wait());
        yield_now();
        ev.set();
        ev.clear();
        assert!(
            with_timeout(BOUND, || waiter.join()).is_ok(),
            "the waiter was not released"
        );
    })
    .unwrap();
}

#[test]
fn event_set_by_a_plain_os_thread_wakes_a_green_thread() {
    let ev = Arc::new(Event::new());
    let e = ev.clone();
    // The setter starts its 20 ms once the green thread is about to wait
    // (not when the test starts: the hub may take longer than that to start
    // on a loaded machine).
    let (ready, go) = mpsc::channel();
    let setter = std::thread::spawn(move || {
        go.recv().unwrap();
        std::thread::sleep(ms(20));
        e.set();
    });
    let waited = run(move || {
        let start = Instant::now();
        ready.send(()).unwrap();
        with_timeout(BOUND, || ev.wait()).expect("woken by the other OS thread");
        start.elapsed()
    })
    .unwrap();
    assert!(waited >= ms(20), "{waited:?}");
    setter.join().unwrap();
}

#[test]
fn async_result_set_by_a_plain_os_thread_wakes_a_green_thread() {
    let result = Arc::new(AsyncResult::new());
    let r = result.clone();
    let (ready, go) = mpsc::channel();
    let setter = std::thread::spawn(move || {
        go.recv().unwrap();
        std::thread::sleep(ms(20));
        r.set(String::from("from a plain thread"));
    });
    let value = run(move || {
        assert_eq!(result.try_get(), None);
        ready.send(()).unwrap();
        with_timeout(BOUND, || result.get()).expect("woken by the other OS thread")
    })
    .unwrap();
    assert_eq!(value, "from a plain thread");
    setter.join().unwrap();
}

#[test]
fn a_plain_os_thread_waits_on_an_event_set_by_a_green_thread() {
    let ev = Arc::new(Event::new());
    let result = Arc::new(AsyncResult::new());
    let (tx, rx) = mpsc::channel();
    let (e, r) = (ev.clone(), result.clone());
    let waiter = std::thread::spawn(move || {
        e.wait();
        let value = r.get();
        tx.send(value).unwrap();
    });
    run(move || {
        spawn(move || {
            sleep(ms(20));
            ev.set();
            sleep(ms(10));
            result.set(99u32);
        })
        .join()
        .unwrap();
    })
    .unwrap();
    assert_eq!(rx.recv_timeout(BOUND), Ok(99), "the plain thread was woken");
    waiter.join().unwrap();
}

#[test]
fn a_plain_os_thread_wait_timeout_returns_false_after_the_time() {
    let ev = Event::new();
    let start = Instant::now();
    assert!(!ev.wait_timeout(ms(20)));
    assert!(start.elapsed() >= ms(20));
    let r: AsyncResult<u8> = AsyncResult::new();
    let start = Instant::now();
    assert_eq!(r.get_timeout(ms(20)), None);
    assert!(start.elapsed() >= ms(20));
}

/// Two hubs on two OS threads hand values to each other through AsyncResults.
#[test]
fn async_result_between_the_green_threads_of_two_hubs() {
    let ping = Arc::new(AsyncResult::new());
    let pong = Arc::new(AsyncResult::new());
    let (ping2, pong2) = (ping.clone(), pong.clone());
    let other_hub = std::thread::spawn(move || {
        run(move || {
            let h = spawn(move || {
                sleep(ms(20));
                ping2.set(7u64);
                pong2.get_timeout(BOUND)
            });
            h.join().unwrap()
        })
        .unwrap()
    });
    let got = run(move || {
        assert_eq!(ping.try_get(), None);
        assert_eq!(ping.get_timeout(ms(1)), None);
        let got = spawn(move || with_timeout(BOUND, || ping.get()))
            .join()
            .unwrap()
            .expect("woken by the other hub");
        assert!(!pong.ready());
        pong.set(got + 1);
        assert_eq!(pong.try_get(), Some(8));
        got
    })
    .unwrap();
    assert_eq!(got, 7);
    assert_eq!(
        other_hub.join().unwrap(),
        Some(8),
        "the other hub saw our value"
    );
}

#[test]
fn a_thousand_waiters_are_woken_by_one_set() {
    run(|| {
        let ev = Rc::new(Event::new());
        let woken = Rc::new(Cell::new(0u32));
        let handles: Vec<_> = (0..1000)
            .map(|_| {
                let (e, w) = (ev.clone(), woken.clone());
                spawn(move || {
                    e.wait();
                    w.set(w.get() + 1);
                })
            })
            .collect();
        yield_now();
        assert_eq!(woken.get(), 0);
        ev.set();
        with_timeout(BOUND, || {
            for h in handles {
                h.join().unwrap();
            }
        })
        .expect("all woken");
        assert_eq!(woken.get(), 1000);
    })
    .unwrap();
}

#[test]
fn a_thousand_waiters_from_another_os_thread() {
    let ev = Arc::new(Event::new());
    let e = ev.clone();
    let setter = std::thread::spawn(move || {
        std::thread::sleep(ms(20));
        e.set();
    });
    let woken = run(move || {
        let woken = Rc::new(Cell::new(0u32));
        let handles: Vec<_> = (0..1000)
            .map(|_| {
                let (e, w) = (ev.clone(), woken.clone());
                spawn(move || {
                    with_timeout(BOUND, || e.wait()).expect("woken in time");
                    w.set(w.get() + 1);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        woken.get()
    })
    .unwrap();
    assert_eq!(woken, 1000);
    setter.join().unwrap();
}

#[test]
fn async_result_set_again_replaces_and_take_empties() {
    run(|| {
        let r = Rc::new(AsyncResult::new());
        assert!(!r.ready());
        r.set(1);
        assert!(r.ready());
        assert_eq!(r.get(), 1);
        r.set(2);
        assert_eq!(r.get(), 2, "the second set replaces the value");
        assert_eq!(r.take(), Some(2));
        assert!(!r.ready());
        assert_eq!(r.try_get(), None);
        // After take, getters park again until the next set.
        let got = Rc::new(RefCell::new(None));
        let (r2, g) = (r.clone(), got.clone());
        let h = spawn(move || *g.borrow_mut() = Some(r2.get()));
        yield_now();
        assert_eq!(*got.borrow(), None);
        r.set(3);
        with_timeout(BOUND, || h.join().unwrap()).unwrap();
        assert_eq!(*got.borrow(), Some(3));
    })
    .unwrap();
}

/// A set that races with a green thread going to sleep on the event is never
/// lost (the waiter registers before it re-checks the flag).
#[test]
fn no_lost_wake_ups_from_another_os_thread() {
    let events: Arc<Vec<Event>> = Arc::new((0..200).map(|_| Event::new()).collect());
    let ev2 = events.clone();
    let setter = std::thread::spawn(move || {
        for e in ev2.iter() {
            e.set();
            std::thread::yield_now();
        }
    });
    let missed = run(move || {
        let mut missed = 0;
        for e in events.iter() {
            if with_timeout(BOUND, || e.wait()).is_err() {
                missed += 1;
            }
        }
        missed
    })
    .unwrap();
    assert_eq!(missed, 0);
    setter.join().unwrap();
}
