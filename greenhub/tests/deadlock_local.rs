//! Join cycles under libtest's harness, i.e. in a process with several OS
//! threads, where a wait on an `Event` or `AsyncResult` is never called a
//! deadlock (another thread might set it).
//!
//! A deadlock that `run` can report here would need the main green thread to
//! wait, through joins only, on a green thread that never finishes. That
//! cannot be built: each `JoinHandle` has one owner and `join` consumes it, so
//! the green threads of a join cycle own each other's handles and main can
//! hold none of them; a chain of joins from main must end at a green thread
//! that runs, sleeps or waits on a shared primitive. The cycle itself is
//! therefore harmless to `run`: these tests pin what happens to it. The
//! reported deadlocks are in tests/deadlock.rs, which runs single-threaded.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use greenhub::sync::Event;
use greenhub::{run, yield_now, GreenThread, JoinError, JoinHandle};

/// Adds one to its counter when dropped.
struct DropCount(Rc<Cell<usize>>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

type Slot = Rc<RefCell<Option<JoinHandle<Result<(), JoinError>>>>>;

/// Spawns green threads "a" and "b" that join each other; returns their
/// `GreenThread`s once both are parked in `join`. Each logs what its join
/// returned and counts its drop.
fn join_cycle(
    log: &Rc<RefCell<Vec<String>>>,
    drops: &Rc<Cell<usize>>,
) -> (GreenThread, GreenThread) {
    let (slot_a, slot_b): (Slot, Slot) = (Rc::default(), Rc::default());
    let member = |name: &'static str, other: Slot| {
        let (log, g) = (log.clone(), DropCount(drops.clone()));
        greenhub::Builder::new()
            .name(name)
            .spawn(move || {
                let _g = g;
                let other = other.borrow_mut().take().expect("the other's handle");
                let r = other.join();
                log.borrow_mut().push(format!("{name}: {r:?}"));
                r.map(|_| ())
            })
            .unwrap()
    };
    let a = member("a", slot_b.clone());
    let b = member("b", slot_a.clone());
    let threads = (a.thread(), b.thread());
    *slot_a.borrow_mut() = Some(a);
    *slot_b.borrow_mut() = Some(b);
    yield_now(); // both take the other's handle and park in join
    assert!(slot_a.borrow().is_none() && slot_b.borrow().is_none());
    threads
}

#[test]
fn a_join_cycle_left_when_main_returns_is_unwound() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let drops = Rc::new(Cell::new(0));
    let (l, d) = (log.clone(), drops.clone());
    let r = run(move || {
        join_cycle(&l, &d);
        "main done"
    });
    assert_eq!(r.unwrap(), "main done");
    assert_eq!(drops.get(), 2, "both members were unwound at shutdown");
    assert!(log.borrow().is_empty(), "neither join returned: {log:?}");
}

#[test]
fn killing_one_member_breaks_a_join_cycle() {
    run(|| {
        let log = Rc::new(RefCell::new(Vec::new()));
        let drops = Rc::new(Cell::new(0));
        let (a, _b) = join_cycle(&log, &drops);
        a.kill();
        // b's join returns Killed, b finishes, and with it a's handle to b.
        for _ in 0..100 {
            if drops.get() == 2 {
                break;
            }
            yield_now();
        }
        assert_eq!(drops.get(), 2, "both finished");
        assert_eq!(*log.borrow(), ["b: Err(Killed)"]);
    })
    .unwrap();
}

/// With other OS threads present, a wait that only another thread can end is
/// not a deadlock, however long it takes: here longer than the hub's 250 ms
/// recheck of whether other threads exist. The hub has no timer meanwhile, so
/// it goes through that recheck.
#[test]
fn a_long_wait_on_another_os_thread_is_not_a_deadlock() {
    let ev = Arc::new(Event::new());
    let e = ev.clone();
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        e.set();
    });
    // If the wake were lost, a plain-thread watchdog ends the wait (a green
    // one would give the hub a timer and skip the path under test).
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let e = ev.clone();
    let watchdog = std::thread::spawn(move || {
        let fired = done_rx.recv_timeout(Duration::from_secs(10)).is_err();
        if fired {
            e.set();
        }
        fired
    });
    let r = run(move || ev.wait());
    done_tx.send(()).unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert!(
        !watchdog.join().unwrap(),
        "woken by the watchdog, not the setter"
    );
    setter.join().unwrap();
}
