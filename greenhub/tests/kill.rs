//! Killing green threads: the target unwinds from the call it is blocked in,
//! its destructors run, and `join` reports `JoinError::Killed`.
//!
//! Every wait for a killed green thread is wrapped in `with_timeout`, so a kill
//! that fails to land fails the test instead of hanging it.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use greenhub::sync::Event;
use greenhub::{
    current, join_all, kill_all, run, sleep, spawn, with_timeout, yield_now, Error, JoinError,
    JoinHandle,
};

/// Adds one to its counter when dropped.
struct DropCount(Rc<Cell<usize>>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

const LONG: Duration = Duration::from_secs(10);
const BOUND: Duration = Duration::from_secs(5);

/// Joins `h`, failing the test if that takes longer than `BOUND`.
fn join_bounded<T>(h: JoinHandle<T>) -> Result<T, JoinError> {
    with_timeout(BOUND, || h.join()).expect("join did not finish in time")
}

#[test]
fn kill_a_sleeping_green_thread() {
    run(|| {
        let drops = Rc::new(Cell::new(0));
        let after = Rc::new(Cell::new(false));
        let (g, d, a) = (DropCount(drops.clone()), drops.clone(), after.clone());
        let h = spawn(move || {
            let _capture = g;
            let _local = DropCount(d);
            sleep(LONG);
            a.set(true);
        });
        yield_now(); // it runs and parks in sleep
        assert!(!h.is_finished());
        h.kill();
        assert!(matches!(join_bounded(h), Err(JoinError::Killed)));
        assert_eq!(drops.get(), 2, "the capture and the local on its stack");
        assert!(!after.get(), "code after the sleep never ran");
    })
    .unwrap();
}

#[test]
fn kill_before_it_ever_ran() {
    run(|| {
        let drops = Rc::new(Cell::new(0));
        let ran = Rc::new(Cell::new(false));
        let (g, r) = (DropCount(drops.clone()), ran.clone());
        let h = spawn(move || {
            let _g = g;
            r.set(true);
        });
        h.kill();
        assert!(matches!(join_bounded(h), Err(JoinError::Killed)));
        assert!(!ran.get(), "the body never ran");
        assert_eq!(drops.get(), 1, "its captures were dropped");
    })
    .unwrap();
}

#[test]
fn kill_of_a_finished_green_thread_is_a_no_op() {
    run(|| {
        let h = spawn(|| 7);
        for _ in 0..10 {
            if h.is_finished() {
                break;
            }
            yield_now();
        }
        assert!(h.is_finished());
        h.kill();
        h.kill();
        h.thread().kill();
        assert_eq!(h.join().unwrap(), 7);
    })
    .unwrap();
}

#[test]
fn kill_all_of_a_hundred_sleepers() {
    run(|| {
        let drops = Rc::new(Cell::new(0));
        let mut handles: Vec<JoinHandle<u32>> = (0..100)
            .map(|_| {
                let g = DropCount(drops.clone());
                spawn(move || {
                    let _g = g;
                    sleep(LONG);
                    0
                })
            })
            .collect();
        handles.push(spawn(|| 1)); // finishes before the kill
        yield_now();
        with_timeout(BOUND, || kill_all(&handles)).expect("kill_all did not return");
        assert!(handles.iter().all(|h| h.is_finished()));
        assert_eq!(drops.get(), 100);
        let results = join_all(handles);
        assert!(results[..100]
            .iter()
            .all(|r| matches!(r, Err(JoinError::Killed))));
        assert_eq!(
            results[100].as_ref().ok(),
            Some(&1),
            "finished first: keeps its value"
        );
    })
    .unwrap();
}

#[test]
fn kill_is_sticky_even_when_the_unwind_is_caught() {
    run(|| {
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        let h = spawn(move || {
            let ev = Event::new();
            // Each blocking call after the kill unwinds at once, no matter
            // how often the unwind is caught.
            let caught = catch_unwind(AssertUnwindSafe(|| sleep(LONG)));
            l.borrow_mut()
                .push(format!("sleep unwound: {}", caught.is_err()));
            let caught = catch_unwind(AssertUnwindSafe(yield_now));
            l.borrow_mut()
                .push(format!("yield unwound: {}", caught.is_err()));
            let caught = catch_unwind(AssertUnwindSafe(|| ev.wait()));
            l.borrow_mut()
                .push(format!("wait unwound: {}", caught.is_err()));
            sleep(LONG);
            l.borrow_mut().push("after the last sleep".to_string());
        });
        // Another green thread keeps working throughout.
        let ticks = Rc::new(Cell::new(0));
        let t = ticks.clone();
        let ticker = spawn(move || {
            for _ in 0..5 {
                sleep(Duration::from_millis(1));
                t.set(t.get() + 1);
            }
        });
        yield_now();
        h.kill();
        assert!(matches!(join_bounded(h), Err(JoinError::Killed)));
        assert_eq!(
            *log.borrow(),
            [
                "sleep unwound: true",
                "yield unwound: true",
                "wait unwound: true"
            ]
        );
        join_bounded(ticker).unwrap();
        assert_eq!(ticks.get(), 5);
        // The hub is healthy: new green threads run, sleep and finish.
        let h = spawn(|| {
            sleep(Duration::from_millis(1));
            5
        });
        assert_eq!(join_bounded(h).unwrap(), 5);
    })
    .unwrap();
}

#[test]
fn kill_a_green_thread_parked_in_event_wait() {
    run(|| {
        let ev = Rc::new(Event::new());
        let drops = Rc::new(Cell::new(0));
        let after = Rc::new(Cell::new(false));
        let (e, g, a) = (ev.clone(), DropCount(drops.clone()), after.clone());
        let h = spawn(move || {
            let _g = g;
            e.wait();
            a.set(true);
        });
        yield_now();
        h.kill();
        assert!(matches!(join_bounded(h), Err(JoinError::Killed)));
        assert_eq!(drops.get(), 1);
        assert!(!after.get());
        ev.set(); // nobody left to wake: harmless
        assert!(ev.is_set());
    })
    .unwrap();
}

#[test]
fn kill_a_green_thread_parked_in_join() {
    run(|| {
        let target_drops = Rc::new(Cell::new(0));
        let g = DropCount(target_drops.clone());
        let target = spawn(move || {
            let _g = g;
            sleep(LONG);
        });
        let target_thread = target.thread();
        let after = Rc::new(Cell::new(false));
        let a = after.clone();
        let joiner = spawn(move || {
            let r = target.join();
            a.set(true);
            r.is_ok()
        });
        yield_now();
        joiner.kill();
        assert!(matches!(join_bounded(joiner), Err(JoinError::Killed)));
        assert!(!after.get(), "join did not return");
        // The target lives on, detached: its handle died with the joiner.
        assert_eq!(target_drops.get(), 0);
        target_thread.kill();
        for _ in 0..100 {
            if target_drops.get() == 1 {
                break;
            }
            yield_now();
        }
        assert_eq!(target_drops.get(), 1, "killed through its GreenThread");
    })
    .unwrap();
}

#[test]
fn killing_the_current_green_thread_takes_effect_at_its_next_blocking_call() {
    run(|| {
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        let h = spawn(move || {
            l.borrow_mut().push("before");
            current().kill();
            l.borrow_mut().push("still running");
            yield_now();
            l.borrow_mut().push("after yield");
        });
        assert!(matches!(join_bounded(h), Err(JoinError::Killed)));
        assert_eq!(*log.borrow(), ["before", "still running"]);
    })
    .unwrap();
}

#[test]
fn a_self_kill_without_a_later_blocking_call_has_no_effect() {
    run(|| {
        let h = spawn(|| {
            current().kill();
            "returned"
        });
        assert_eq!(join_bounded(h).unwrap(), "returned");
    })
    .unwrap();
}

#[test]
fn a_killed_event_waiter_does_not_stop_the_others_being_woken() {
    run(|| {
        let ev = Rc::new(Event::new());
        let woken = Rc::new(RefCell::new(Vec::new()));
        let waiter = |n: u32| {
            let (e, w) = (ev.clone(), woken.clone());
            spawn(move || {
                e.wait();
                w.borrow_mut().push(n);
            })
        };
        let w1 = waiter(1);
        let w2 = waiter(2);
        let w3 = waiter(3);
        yield_now(); // all three park
        w2.kill();
        let w4 = waiter(4); // starts waiting after the kill
        yield_now();
        assert!(woken.borrow().is_empty());
        ev.set();
        assert!(matches!(join_bounded(w2), Err(JoinError::Killed)));
        for h in [w1, w3, w4] {
            join_bounded(h).unwrap();
        }
        let mut woken = woken.borrow().clone();
        woken.sort_unstable();
        assert_eq!(woken, [1, 3, 4]);
    })
    .unwrap();
}

#[test]
fn killing_main_makes_run_return_main_killed() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let result = run(move || {
        let _g = DropCount(d);
        let main = current();
        spawn(move || main.kill());
        sleep(LONG);
        "not reached"
    });
    assert!(matches!(result, Err(Error::MainKilled)), "{result:?}");
    assert_eq!(drops.get(), 1, "main's stack was unwound");
}

#[test]
fn a_kill_passes_through_with_timeout() {
    run(|| {
        let h = spawn(|| with_timeout(LONG, || sleep(LONG)).is_ok());
        yield_now();
        h.kill();
        assert!(matches!(join_bounded(h), Err(JoinError::Killed)));
    })
    .unwrap();
}
