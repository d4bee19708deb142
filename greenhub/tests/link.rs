//! Links (gevent's `Greenlet.link`): callbacks on a `JoinHandle` that run when
//! the green thread finishes, with a reference to its result, in the order
//! they were added — whether it returned, panicked or was killed.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Once;
use std::time::Duration;

use greenhub::{run, sleep, spawn, with_timeout, yield_now, JoinError, JoinHandle};

const BOUND: Duration = Duration::from_secs(5);

/// Adds one to its counter when dropped.
struct DropCount(Rc<Cell<usize>>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// Prints panics without a backtrace (a backtrace can overflow a green
/// thread's small stack when RUST_BACKTRACE is set).
fn plain_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
}

fn join_bounded<T>(h: JoinHandle<T>) -> Result<T, JoinError> {
    with_timeout(BOUND, || h.join()).expect("join did not finish in time")
}

/// What a link saw, as text.
fn outcome(result: &Result<u32, JoinError>) -> String {
    match result {
        Ok(v) => format!("value {v}"),
        Err(JoinError::Killed) => "killed".to_string(),
        Err(e) => format!("panic {}", e.panic_message().unwrap_or("?")),
    }
}

#[test]
fn links_run_in_order_with_the_value_before_join_returns() {
    run(|| {
        let log = Rc::new(RefCell::new(Vec::new()));
        let h = spawn(|| {
            sleep(Duration::from_millis(5));
            7u32
        });
        for n in 1..=3 {
            let log = log.clone();
            h.link(move |result| log.borrow_mut().push(format!("{n}: {}", outcome(result))));
        }
        assert!(log.borrow().is_empty(), "links wait for the end");
        assert_eq!(join_bounded(h).unwrap(), 7, "join still gets the value");
        assert_eq!(*log.borrow(), ["1: value 7", "2: value 7", "3: value 7"]);
    })
    .unwrap();
}

#[test]
fn links_see_a_panic_and_join_still_gets_it() {
    plain_panic_hook();
    run(|| {
        let seen = Rc::new(RefCell::new(String::new()));
        let h = spawn(|| -> u32 { panic!("boom") });
        let s = seen.clone();
        h.link(move |result| *s.borrow_mut() = outcome(result));
        let err = join_bounded(h).unwrap_err();
        assert_eq!(err.panic_message(), Some("boom"));
        assert_eq!(*seen.borrow(), "panic boom");
    })
    .unwrap();
}

#[test]
fn links_see_a_kill_after_the_destructors_ran() {
    run(|| {
        let drops = Rc::new(Cell::new(0));
        let seen = Rc::new(RefCell::new(Vec::new()));
        let d = drops.clone();
        let h = spawn(move || -> u32 {
            let _guard = DropCount(d);
            sleep(Duration::from_secs(60));
            0
        });
        let (s, d) = (seen.clone(), drops.clone());
        h.link(move |result| s.borrow_mut().push((outcome(result), d.get())));
        yield_now();
        h.kill();
        assert!(matches!(join_bounded(h), Err(JoinError::Killed)));
        assert_eq!(
            *seen.borrow(),
            [("killed".to_string(), 1)],
            "the link ran once, after the guard was dropped"
        );
    })
    .unwrap();
}

#[test]
fn links_of_a_green_thread_killed_before_it_started() {
    run(|| {
        let seen = Rc::new(RefCell::new(String::new()));
        let h = spawn(|| 1u32);
        let s = seen.clone();
        h.link(move |result| *s.borrow_mut() = outcome(result));
        h.kill();
        assert!(matches!(join_bounded(h), Err(JoinError::Killed)));
        assert_eq!(*seen.borrow(), "killed");
    })
    .unwrap();
}

#[test]
fn a_link_added_after_the_end_runs_at_once() {
    run(|| {
        let h = spawn(|| 5u32);
        h.wait();
        let seen = Rc::new(RefCell::new(String::new()));
        let s = seen.clone();
        h.link(move |result| *s.borrow_mut() = outcome(result));
        assert_eq!(
            *seen.borrow(),
            "value 5",
            "ran in the caller, before link returned"
        );
        assert_eq!(h.join().unwrap(), 5, "the result is still there for join");
    })
    .unwrap();
}

#[test]
fn link_value_and_link_error_pick_their_outcome() {
    plain_panic_hook();
    run(|| {
        let log = Rc::new(RefCell::new(Vec::new()));
        let ok = spawn(|| 3u32);
        let bad = spawn(|| -> u32 { panic!("bad") });
        for h in [&ok, &bad] {
            let (l1, l2) = (log.clone(), log.clone());
            h.link_value(move |v| l1.borrow_mut().push(format!("value {v}")));
            h.link_error(move |e| {
                l2.borrow_mut()
                    .push(format!("error {}", e.panic_message().unwrap_or("?")))
            });
        }
        join_bounded(ok).unwrap();
        join_bounded(bad).unwrap_err();
        assert_eq!(*log.borrow(), ["value 3", "error bad"]);
    })
    .unwrap();
}

#[test]
fn a_panicking_link_does_not_stop_the_others() {
    plain_panic_hook();
    run(|| {
        let ran = Rc::new(Cell::new(0));
        let h = spawn(|| 1u32);
        let r = ran.clone();
        h.link(move |_| r.set(r.get() + 1));
        h.link(|_| panic!("a bad link"));
        let r = ran.clone();
        h.link(move |_| r.set(r.get() + 1));
        assert_eq!(join_bounded(h).unwrap(), 1);
        assert_eq!(ran.get(), 2);
    })
    .unwrap();
}

#[test]
fn links_of_a_detached_green_thread_still_run() {
    run(|| {
        let seen = Rc::new(RefCell::new(String::new()));
        let done = Rc::new(greenhub::sync::Event::new());
        let h = spawn(|| {
            sleep(Duration::from_millis(5));
            9u32
        });
        let (s, d) = (seen.clone(), done.clone());
        h.link(move |result| {
            *s.borrow_mut() = outcome(result);
            d.set();
        });
        drop(h);
        assert!(done.wait_timeout(BOUND));
        assert_eq!(*seen.borrow(), "value 9");
    })
    .unwrap();
}

#[test]
fn a_link_can_hand_blocking_work_to_a_new_green_thread() {
    run(|| {
        let log = Rc::new(RefCell::new(Vec::new()));
        let spawned = Rc::new(RefCell::new(None));
        let h = spawn(|| 2u32);
        let (l, sp) = (log.clone(), spawned.clone());
        h.link(move |result| {
            let v = *result.as_ref().unwrap();
            let l = l.clone();
            *sp.borrow_mut() = Some(spawn(move || {
                sleep(Duration::from_millis(5)); // blocking is fine here
                l.borrow_mut().push(v * 10);
            }));
        });
        join_bounded(h).unwrap();
        let follow_up = spawned.borrow_mut().take().expect("the link spawned");
        join_bounded(follow_up).unwrap();
        assert_eq!(*log.borrow(), [20]);
    })
    .unwrap();
}

/// A link added after the end runs at once in the caller, and its panic is
/// the caller's; the result stays for `join` all the same (it is out of the
/// packet while the link runs).
#[test]
fn a_panicking_late_link_leaves_the_result_for_join() {
    plain_panic_hook();
    run(|| {
        let h = spawn(|| 42);
        yield_now();
        assert!(h.is_finished());
        let linked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            h.link(|_| panic!("a late link panics (expected by the test)"))
        }));
        assert!(linked.is_err());
        assert_eq!(join_bounded(h).unwrap(), 42);
    })
    .unwrap();
}

/// The end of a green thread may park (a green-local value's destructor
/// sleeps): `join` meanwhile waits for the result instead of finding none,
/// and a link added meanwhile still runs, with the result.
#[test]
fn join_and_link_while_the_end_parks() {
    struct SlowDrop;
    impl Drop for SlowDrop {
        fn drop(&mut self) {
            sleep(Duration::from_millis(20));
        }
    }
    greenhub::green_local! {
        static SLOW: SlowDrop = SlowDrop;
    }
    run(|| {
        let h = spawn(|| SLOW.with(|_| 7));
        while !h.is_finished() {
            yield_now();
        }
        // Finished (its links ran), but the end is still dropping SLOW.
        let seen = Rc::new(Cell::new(0));
        let s = seen.clone();
        h.link(move |result| s.set(*result.as_ref().unwrap()));
        assert_eq!(join_bounded(h).unwrap(), 7);
        assert_eq!(seen.get(), 7, "the link added while the end parked ran");
    })
    .unwrap();
}
