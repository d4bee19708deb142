//! Time: `with_timeout` (and how timeouts nest), timed waits, `sleep` and
//! `spawn_later`. Nothing here relies on timing finer than tens of
//! milliseconds: "never early" is checked exactly, "not too late" only against
//! generous bounds.

use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenhub::sync::{AsyncResult, Event};
use greenhub::{
    run, sleep, sleep_until, spawn, spawn_later, with_timeout, yield_now, Elapsed, JoinError,
};

/// Adds one to its counter when dropped.
struct DropCount(Rc<Cell<usize>>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const LONG: Duration = Duration::from_secs(10);
/// Generous upper bound for "promptly" on a loaded machine.
const BOUND: Duration = Duration::from_secs(5);

/// Spins without parking for `d`.
fn busy_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        black_box(());
    }
}

#[test]
fn with_timeout_returns_ok_when_the_body_finishes_in_time() {
    run(|| {
        assert_eq!(with_timeout(BOUND, || 3), Ok(3));
        assert_eq!(
            with_timeout(BOUND, || {
                sleep(ms(5));
                4
            }),
            Ok(4)
        );
        // The expired-and-cancelled timer does not disturb what follows.
        let start = Instant::now();
        sleep(ms(20));
        assert!(start.elapsed() >= ms(20));
    })
    .unwrap();
}

#[test]
fn with_timeout_cuts_a_long_sleep_short() {
    run(|| {
        let drops = Rc::new(Cell::new(0));
        let after = Rc::new(Cell::new(false));
        let start = Instant::now();
        let r = with_timeout(ms(20), || {
            let _g = DropCount(drops.clone());
            sleep(LONG);
            after.set(true);
        });
        let took = start.elapsed();
        assert!(r.is_err());
        assert!(took >= ms(20), "early: {took:?}");
        assert!(took < BOUND, "late: {took:?}");
        assert_eq!(drops.get(), 1, "destructors inside ran");
        assert!(!after.get());
        let err: Elapsed = r.unwrap_err();
        assert_eq!(err.to_string(), "deadline has elapsed");
    })
    .unwrap();
}

#[test]
fn inner_timeout_fires_and_the_outer_goes_on() {
    run(|| {
        let inner_seen = Rc::new(Cell::new(false));
        let outer = with_timeout(BOUND, || {
            let inner = with_timeout(ms(10), || sleep(LONG));
            inner_seen.set(inner.is_err());
            sleep(ms(5)); // still inside the outer scope: not cut short
            7
        });
        assert!(inner_seen.get(), "inner returned Err(Elapsed)");
        assert_eq!(outer, Ok(7));
    })
    .unwrap();
}

#[test]
fn outer_timeout_fires_inside_the_inner_and_the_inner_never_returns() {
    run(|| {
        let log = Rc::new(RefCell::new(Vec::new()));
        let start = Instant::now();
        let outer = with_timeout(ms(20), || {
            let inner = with_timeout(LONG, || {
                log.borrow_mut().push("inner body");
                sleep(LONG);
                log.borrow_mut().push("after sleep");
            });
            log.borrow_mut().push(if inner.is_ok() {
                "inner Ok"
            } else {
                "inner Err"
            });
        });
        assert!(outer.is_err());
        assert!(start.elapsed() < BOUND);
        assert_eq!(*log.borrow(), ["inner body"]);
    })
    .unwrap();
}

#[test]
fn outer_timeout_still_fires_after_an_inner_one_was_handled() {
    run(|| {
        let start = Instant::now();
        let outer = with_timeout(ms(40), || {
            assert!(with_timeout(ms(5), || sleep(LONG)).is_err());
            sleep(LONG);
        });
        assert!(outer.is_err());
        let took = start.elapsed();
        assert!(took >= ms(40) && took < BOUND, "{took:?}");
    })
    .unwrap();
}

/// Scheduling is cooperative: a body that never parks cannot be interrupted,
/// and `with_timeout` returns its value even though the deadline has passed.
#[test]
fn a_body_that_never_parks_is_not_interrupted() {
    run(|| {
        let start = Instant::now();
        let r = with_timeout(ms(10), || {
            busy_for(ms(50));
            9
        });
        assert_eq!(r, Ok(9));
        assert!(start.elapsed() >= ms(50));
        // The expiry left no trace: the next sleep is not cut short.
        let start = Instant::now();
        sleep(ms(20));
        assert!(start.elapsed() >= ms(20));
    })
    .unwrap();
}

/// Once past its deadline, a busy body that yields is unwound at a yield: the
/// hub looks at its timers at least every 61 turns.
#[test]
fn a_busy_body_past_its_deadline_is_unwound_at_a_yield() {
    run(|| {
        let yields = Rc::new(Cell::new(0u32));
        let r = with_timeout(ms(10), || {
            busy_for(ms(30));
            for _ in 0..10_000 {
                yield_now();
                yields.set(yields.get() + 1);
            }
        });
        assert!(r.is_err(), "not unwound after {} yields", yields.get());
        assert!(yields.get() < 10_000);
    })
    .unwrap();
}

#[test]
fn with_timeout_around_event_wait() {
    run(|| {
        let ev = Rc::new(Event::new());
        let start = Instant::now();
        assert!(with_timeout(ms(20), || ev.wait()).is_err());
        assert!(start.elapsed() >= ms(20));

        // Set in time by another green thread.
        let e = ev.clone();
        spawn(move || {
            sleep(ms(10));
            e.set();
        });
        assert_eq!(with_timeout(BOUND, || ev.wait()), Ok(()));
    })
    .unwrap();
}

#[test]
fn with_timeout_around_join() {
    run(|| {
        let quick = spawn(|| {
            sleep(ms(5));
            1
        });
        assert_eq!(with_timeout(BOUND, || quick.join().unwrap()), Ok(1));

        // The timed-out join consumed the handle: the green thread is detached
        // and runs to its end.
        let done = Rc::new(Event::new());
        let d = done.clone();
        let slow = spawn(move || {
            sleep(ms(50));
            d.set();
        });
        assert!(with_timeout(ms(10), || slow.join()).is_err());
        assert!(!done.is_set());
        assert_eq!(with_timeout(BOUND, || done.wait()), Ok(()));
    })
    .unwrap();
}

#[test]
fn a_panic_passes_through_with_timeout_unchanged() {
    run(|| {
        let payload = catch_unwind(AssertUnwindSafe(|| {
            with_timeout(BOUND, || -> () { panic!("inner panic") })
        }))
        .unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"inner panic"));
    })
    .unwrap();
}

#[test]
fn a_killed_green_thread_inside_with_timeout_reports_killed() {
    run(|| {
        let h = spawn(|| with_timeout(LONG, || sleep(LONG)).is_ok());
        yield_now();
        h.kill();
        let r = with_timeout(BOUND, || h.join()).unwrap();
        assert!(matches!(r, Err(JoinError::Killed)));
    })
    .unwrap();
}

#[test]
fn event_wait_timeout_is_false_after_the_time_and_never_early() {
    run(|| {
        let ev = Event::new();
        for d in [ms(1), ms(10), ms(30)] {
            let start = Instant::now();
            assert!(!ev.wait_timeout(d));
            let took = start.elapsed();
            assert!(took >= d, "early: {took:?} < {d:?}");
            assert!(took < BOUND);
        }
        ev.set();
        assert!(ev.wait_timeout(Duration::ZERO));
        assert!(ev.wait_timeout(LONG), "already set: at once");
    })
    .unwrap();
}

#[test]
fn event_wait_timeout_is_true_when_set_in_time() {
    run(|| {
        let ev = Rc::new(Event::new());
        let e = ev.clone();
        spawn(move || {
            sleep(ms(10));
            e.set();
        });
        let start = Instant::now();
        assert!(ev.wait_timeout(BOUND));
        assert!(start.elapsed() >= ms(10));
    })
    .unwrap();
}

#[test]
fn async_result_get_timeout_is_none_after_the_time_and_never_early() {
    run(|| {
        let r: Rc<AsyncResult<u32>> = Rc::new(AsyncResult::new());
        for d in [ms(1), ms(10), ms(30)] {
            let start = Instant::now();
            assert_eq!(r.get_timeout(d), None);
            let took = start.elapsed();
            assert!(took >= d, "early: {took:?} < {d:?}");
            assert!(took < BOUND);
        }
        let r2 = r.clone();
        spawn(move || {
            sleep(ms(10));
            r2.set(5);
        });
        assert_eq!(r.get_timeout(BOUND), Some(5));
        assert_eq!(r.get_timeout(Duration::ZERO), Some(5));
    })
    .unwrap();
}

#[test]
fn sleep_never_returns_early() {
    run(|| {
        for d in [0, 1, 2, 5, 10, 25].map(ms) {
            let start = Instant::now();
            sleep(d);
            let took = start.elapsed();
            assert!(took >= d, "early: {took:?} < {d:?}");
        }
        let deadline = Instant::now() + ms(15);
        sleep_until(deadline);
        assert!(Instant::now() >= deadline);
        // Many at once, with sub-millisecond durations.
        let handles: Vec<_> = (0..200u64)
            .map(|i| {
                spawn(move || {
                    let d = Duration::from_micros(i * 97 % 5000);
                    let start = Instant::now();
                    sleep(d);
                    start.elapsed() >= d
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().unwrap(), "a sleeper woke early");
        }
    })
    .unwrap();
}

#[test]
fn spawn_later_runs_after_the_delay() {
    run(|| {
        let start = Instant::now();
        let h = spawn_later(ms(30), move || start.elapsed());
        let ran_after = with_timeout(BOUND, || h.join()).unwrap().unwrap();
        assert!(ran_after >= ms(30), "{ran_after:?}");
    })
    .unwrap();
}

#[test]
fn spawn_later_killed_before_the_delay_never_runs() {
    run(|| {
        let ran = Rc::new(Cell::new(0));
        let drops = Rc::new(Cell::new(0));
        // Killed while waiting for its delay...
        let (r, g) = (ran.clone(), DropCount(drops.clone()));
        let waiting = spawn_later(ms(50), move || {
            let _g = g;
            r.set(r.get() + 1);
        });
        yield_now();
        // ...and killed before even starting.
        let (r, g) = (ran.clone(), DropCount(drops.clone()));
        let unstarted = spawn_later(ms(50), move || {
            let _g = g;
            r.set(r.get() + 1);
        });
        waiting.kill();
        unstarted.kill();
        for h in [waiting, unstarted] {
            let r = with_timeout(BOUND, || h.join()).unwrap();
            assert!(matches!(r, Err(JoinError::Killed)));
        }
        sleep(ms(60)); // past the delay
        assert_eq!(ran.get(), 0, "the bodies never ran");
        assert_eq!(drops.get(), 2, "their captures were dropped");
    })
    .unwrap();
}

#[test]
fn sleep_for_ever_can_be_killed() {
    run(|| {
        let h = spawn(|| sleep(Duration::MAX));
        yield_now();
        h.kill();
        let r = with_timeout(BOUND, || h.join()).unwrap();
        assert!(matches!(r, Err(JoinError::Killed)), "{r:?}");
    })
    .unwrap();
}

#[test]
fn with_timeout_of_duration_max_means_no_timeout() {
    let r = run(|| with_timeout(Duration::MAX, || 5)).unwrap();
    assert_eq!(r, Ok(5));
}

#[test]
fn event_wait_timeout_of_duration_max_waits_for_the_set() {
    run(|| {
        let ev = Rc::new(Event::new());
        let e = ev.clone();
        spawn(move || e.set());
        assert!(ev.wait_timeout(Duration::MAX));
    })
    .unwrap();
}
